//! Rules N1–N3: namespaces joining and leaving projects.

use super::message::{self, count, warning_list};
use super::secrets::Fates;
use super::{Config, Denial, Facts, Findings, Needs, Subject};
use crate::keys::{self, ProjectId, ProjectIdError};
use crate::plan::{self, IgnoreList};
use crate::world::{NamespaceState, Original, Scoped, World, annotation, project_annotation};
use k8s_openapi::api::core::v1::Namespace;

/// The projectId annotation before and after the request.
struct Change<'a> {
    old: Option<&'a str>,
    new: Option<&'a str>,
}

impl<'a> Change<'a> {
    fn of(s: &'a Subject<Namespace>) -> Self {
        let value =
            |ns: &'a Option<Namespace>| ns.as_ref().and_then(|n| project_annotation(&n.metadata));
        Self {
            old: value(&s.old),
            new: value(&s.new),
        }
    }

    fn old_project(&self) -> Option<ProjectId> {
        self.old.and_then(|v| ProjectId::parse(v).ok())
    }

    /// The project the annotation now names, when it was set or changed to name another project.
    /// `Err` when a set or changed value is malformed.
    fn joined(&self) -> Result<Option<ProjectId>, ProjectIdError> {
        match self.new {
            Some(value) if self.new != self.old => {
                let project = ProjectId::parse(value)?;
                Ok((self.old_project() != Some(project.clone())).then_some(project))
            }
            _ => Ok(None),
        }
    }

    /// The project the namespace no longer belongs to.
    fn left(&self) -> Option<ProjectId> {
        let old = self.old_project()?;
        let new = self.new.and_then(|v| ProjectId::parse(v).ok());
        (new.as_ref() != Some(&old)).then_some(old)
    }
}

/// The projects whose `manage-namespaces` permission this change needs: the one joined and the one
/// left (both for a move). None for a protected namespace joining (refused whatever the user may do)
/// or leaving (it never held copies), nor for a project that does not exist (N2 refuses joining it;
/// leaving it cuts nothing off).
fn projects_to_check(s: &Subject<Namespace>, world: &World, cfg: &Config) -> Vec<ProjectId> {
    if s.new.is_none() || cfg.copies.protected.contains(s.display_name()) {
        return Vec::new();
    }
    let exists = |p: &ProjectId| !world.projects_installed || world.project(p).is_some();
    let change = Change::of(s);
    let joined = change.joined().ok().flatten().filter(exists);
    let left = change.left().filter(exists);
    joined.into_iter().chain(left).collect()
}

pub(super) fn needs(s: &Subject<Namespace>, world: &World, cfg: &Config) -> Needs {
    Needs {
        access_reviews: projects_to_check(s, world, cfg),
        status_reviews: mark_change(s)
            .map(|c| c.projects().unwrap_or_default())
            .unwrap_or_default(),
        ..Needs::default()
    }
}

/// A namespace's backing-namespace marks (project, uid) before and after the request, when they
/// differ.
struct MarkChange<'a> {
    old: [Option<&'a str>; 2],
    new: [Option<&'a str>; 2],
}

fn marks(ns: &Option<Namespace>) -> [Option<&str>; 2] {
    keys::BACKING_NAMESPACE_MARKS.map(|key| ns.as_ref().and_then(|n| annotation(&n.metadata, key)))
}

fn mark_change(s: &Subject<Namespace>) -> Option<MarkChange<'_>> {
    let (old, new) = (marks(&s.old), marks(&s.new));
    (s.new.is_some() && old != new).then_some(MarkChange { old, new })
}

impl MarkChange<'_> {
    /// The projects the change concerns: the one it hands the namespace to, and the one it takes
    /// it from (a mark moved from one project to another takes the namespace, and its originals,
    /// from the first: as for removing the mark, that project's rights are needed too). A mark
    /// that named nothing well-formed is not a project; a new one that is malformed is an error.
    fn projects(&self) -> Result<Vec<ProjectId>, ProjectIdError> {
        let new = self.new[0].map(ProjectId::parse).transpose()?;
        let old = self.old[0].and_then(|old| ProjectId::parse(old).ok());
        let mut projects: Vec<ProjectId> = new.into_iter().collect();
        projects.extend(old.filter(|old| !projects.contains(old)));
        Ok(projects)
    }
}

/// N5: the backing-namespace marks hand a namespace to a project as its backing namespace (the
/// reconciler adopts a namespace marked for a project, with its originals and secrets): only the
/// reconciler writes them, or a user who may update that Project's status, as Rancher does when it
/// records `status.backingNamespace`. Anyone else could pre-claim a future project's namespace.
fn marks_are_the_reconcilers(s: &Subject<Namespace>, facts: &Facts, out: &mut Findings) {
    let Some(change) = mark_change(s) else {
        return;
    };
    let ns = s.display_name();
    let key = keys::BACKING_NAMESPACE_OF_ANNOTATION;
    let projects = match change.projects() {
        Err(e) => {
            out.deny(Denial::forbidden(
                "MalformedBackingNamespaceMark",
                format!("annotation {key} on namespace {ns:?}: {e}; remove it"),
            ));
            return;
        }
        Ok(projects) => projects,
    };
    let marked_for = change.new[0].and_then(|new| ProjectId::parse(new).ok());
    for project in projects {
        let permission = format!(
            "verb update on {}.{}/status {:?} in namespace {:?}",
            keys::PROJECT_PLURAL,
            keys::PROJECT_GROUP,
            project.project,
            project.cluster
        );
        // The project the marks named before: changing them takes the namespace from it.
        let taken = if marked_for.as_ref() == Some(&project) {
            ""
        } else {
            "; changing them takes it from that project"
        };
        let what = format!(
            "the annotations {key} and {} on namespace {ns:?} make it project {project}'s backing \
             namespace{taken}",
            keys::BACKING_NAMESPACE_UID_ANNOTATION
        );
        match facts.may_update_project_status.get(&project) {
            Some(true) => {}
            Some(false) => {
                return out.deny(Denial::forbidden(
                    "BackingNamespaceMarkDenied",
                    format!(
                        "user {:?} may not change them: {what}, which needs {permission}; the \
                         reconciler writes them when it creates the namespace",
                        s.user
                    ),
                ));
            }
            None => {
                return out.deny(Denial::forbidden(
                    "BackingNamespaceMarkUnverified",
                    format!(
                        "could not verify that user {:?} may change them: {what} ({permission}); \
                         try again",
                        s.user
                    ),
                ));
            }
        }
    }
}

pub(super) fn validate(
    s: &Subject<Namespace>,
    world: &World,
    cfg: &Config,
    facts: &Facts,
    out: &mut Findings,
) {
    let Some(new) = &s.new else {
        // Deleting a namespace deletes its copies with it: nothing to say.
        return;
    };
    let ns = s.display_name();
    marks_are_the_reconcilers(s, facts, out);
    let change = Change::of(s);
    let joined = match change.joined() {
        Err(e) => {
            out.deny(Denial::forbidden(
                "MalformedProjectId",
                format!(
                    "annotation {} on namespace {ns:?}: {e}; both parts must be non-empty, e.g. \
                     local:p-vwxyz",
                    keys::PROJECT_ID_KEY
                ),
            ));
            return;
        }
        Ok(joined) => joined,
    };
    if let Some(project) = &joined {
        if cfg.copies.protected.contains(ns) {
            let protected: Vec<&str> = cfg.copies.protected.names().collect();
            out.deny(Denial::forbidden(
                "ProtectedNamespace",
                format!(
                    "namespace {ns:?} is protected ({}): it never receives project-scoped secrets, \
                     so it cannot join project {project}; remove annotation {}",
                    protected.join(", "),
                    keys::PROJECT_ID_KEY
                ),
            ));
            return;
        }
        if world.projects_installed && world.project(project).is_none() {
            out.deny(Denial::forbidden(
                "ProjectNotFound",
                format!(
                    "namespace {ns:?} names project {project} in annotation {}, but no such \
                     project exists",
                    keys::PROJECT_ID_KEY
                ),
            ));
            return;
        }
    }
    for project in projects_to_check(s, world, cfg) {
        let direction = if joined.as_ref() == Some(&project) {
            "into"
        } else {
            "out of"
        };
        may_manage(s, &project, direction, facts, out);
    }
    if let Some(project) = &joined {
        joining(ns, new, project, world, cfg, out);
    }
    if let Some(project) = change.left() {
        leaving(ns, &project, world, cfg, out);
    }
}

/// N1: moving a namespace into or out of a project needs `manage-namespaces` on it (Rancher's
/// rule), or anyone who can edit a namespace could pull the project's secrets into it, or cut a
/// namespace off its copies. When the access review could not be made, the request is denied:
/// failing open here would hand out secrets.
fn may_manage(
    s: &Subject<Namespace>,
    project: &ProjectId,
    direction: &str,
    facts: &Facts,
    out: &mut Findings,
) {
    let ns = s.display_name();
    let permission = format!(
        "verb {} on {}.{} {:?} in namespace {:?}",
        keys::MANAGE_NAMESPACES_VERB,
        keys::PROJECT_PLURAL,
        keys::PROJECT_GROUP,
        project.project,
        project.cluster
    );
    match facts.may_manage_namespaces.get(project) {
        Some(true) => {}
        Some(false) => out.deny(Denial::forbidden(
            "ProjectAccessDenied",
            format!(
                "user {:?} may not move namespace {ns:?} {direction} project {project}: that needs \
                 {permission}",
                s.user
            ),
        )),
        None => out.deny(Denial::forbidden(
            "ProjectAccessUnverified",
            format!(
                "could not verify that user {:?} may move namespace {ns:?} {direction} project \
                 {project} ({permission}); try again",
                s.user
            ),
        )),
    }
}

/// The originals of `project` that want a copy in namespace `ns` in state `terminating`.
fn wanting<'w>(
    world: &'w World,
    project: &'w ProjectId,
    ns: &'w str,
    terminating: bool,
    cfg: &'w Config,
) -> impl Iterator<Item = Original<'w>> + 'w {
    world.originals_of(project).filter(move |o| {
        plan::wants_copy(
            o,
            &IgnoreList::of(&o.secret.metadata),
            ns,
            terminating,
            &cfg.copies,
        )
    })
}

/// N3: a joining namespace's secrets that the project's originals would overwrite are announced
/// (or, under `--overwrite-policy=deny`, refused unless every such original consents), and so are
/// copies that cannot land because another project's original holds the name. The fates are the
/// reconciler's own.
fn joining(
    ns: &str,
    new: &Namespace,
    project: &ProjectId,
    world: &World,
    cfg: &Config,
    out: &mut Findings,
) {
    let terminating = NamespaceState::from_namespace(new).terminating;
    let fates = join_fates(world, ns, terminating, project, cfg);
    if !fates.refused.is_empty() {
        let head = format!(
            "namespace {ns:?} joins project {project}; its project-scoped secrets would overwrite {} \
             here without consent (annotation {}=\"true\" on the original) for",
            count(fates.refused.len(), "secret", "secrets"),
            keys::ALLOW_OVERWRITE_ANNOTATION
        );
        out.deny(Denial::forbidden(
            "WouldOverwrite",
            message::denial_list(&head, &fates.refused),
        ));
    }
    if !fates.overwritten.is_empty() {
        let head = format!(
            "namespace {ns:?} joins project {project}; its project-scoped secrets will overwrite {} \
             here",
            count(fates.overwritten.len(), "secret", "secrets")
        );
        out.announce(warning_list(&head, &fates.overwritten));
        out.announce(format!(
            "the overwritten secrets are gone for good: leaving project {project} later does not \
             bring them back"
        ));
    }
    if !fates.held.is_empty() {
        let head = format!(
            "{} of project {project} not copied into {ns:?}: another project's original holds \
             the name",
            count(fates.held.len(), "secret", "secrets")
        );
        out.announce(warning_list(&head, &fates.held));
    }
}

/// What joining `project` does to namespace `ns`, by the names of the project's originals.
pub(super) fn join_fates<'w>(
    world: &'w World,
    ns: &'w str,
    terminating: bool,
    project: &'w ProjectId,
    cfg: &'w Config,
) -> Fates<'w> {
    let mut fates = Fates::default();
    for original in wanting(world, project, ns, terminating, cfg) {
        let one = Fates::of(
            world,
            &original,
            std::iter::once(ns),
            cfg.copies.overwrite_policy,
        );
        let name = original.name();
        for (all, this) in [
            (&mut fates.overwritten, one.overwritten),
            (&mut fates.refused, one.refused),
            (&mut fates.held, one.held),
        ] {
            all.extend(this.iter().map(|_| name));
        }
    }
    fates
}

/// N3: a leaving namespace loses its copies of the project's originals.
fn leaving(ns: &str, project: &ProjectId, world: &World, cfg: &Config, out: &mut Findings) {
    let removed: Vec<&str> = wanting(world, project, ns, false, cfg)
        .filter(|o| world.secret_meta(ns, o.name()).is_some_and(|m| m.is_copy()))
        .map(|o| o.name())
        .collect();
    if !removed.is_empty() {
        let head = format!(
            "namespace {ns:?} leaves project {project}; {} of its project-scoped secrets will be \
             removed",
            count(removed.len(), "copy", "copies")
        );
        out.announce(warning_list(&head, &removed));
    }
    let lost: Vec<&str> = removed
        .into_iter()
        .filter(|name| world.scoped(ns, name).is_some_and(Scoped::replaced))
        .collect();
    if !lost.is_empty() {
        let head = format!(
            "{} had replaced namespace {ns:?}'s own secrets, which do not come back",
            count(lost.len(), "removed copy", "removed copies")
        );
        out.announce(warning_list(&head, &lost));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Expect::Allow, *};
    use super::super::{Facts, Needs};
    use super::*;
    use serde_json::{Value, json};

    /// alice may manage namespaces of every project of the fixture world.
    fn allowed() -> Facts {
        answered(true)
    }
    fn refused() -> Facts {
        answered(false)
    }
    fn answered(allowed: bool) -> Facts {
        Facts {
            may_manage_namespaces: ["p-vwxyz", "p-other", "p-nope"]
                .map(|p| ProjectId::new("local", p))
                .into_iter()
                .map(|p| (p, allowed))
                .collect(),
            ..Facts::default()
        }
    }
    fn bare(name: &str) -> Value {
        namespace_json(name, Value::Null, Value::Null)
    }

    /// An UPDATE in which namespace `name` joins project `local:p-vwxyz`.
    fn joining(name: &str) -> Value {
        request(
            "UPDATE",
            Some(namespace_in_json(name, "local:p-vwxyz")),
            Some(bare(name)),
        )
    }

    /// An UPDATE in which namespace `name` leaves project `local:p-vwxyz`.
    fn leaving(name: &str) -> Value {
        request(
            "UPDATE",
            Some(bare(name)),
            Some(namespace_in_json(name, "local:p-vwxyz")),
        )
    }

    #[test]
    fn n1_joining_needs_permission() {
        run(vec![
            Case::new("granted", joining("other"), Allow).with_facts(allowed()),
            Case::new(
                "refused",
                joining("other"),
                deny(
                    403,
                    format!(
                        "user \"alice\" may not move namespace \"other\" into project \
                         local:p-vwxyz: that needs verb manage-namespaces on {}.{} \"p-vwxyz\" in \
                         namespace \"local\"",
                        keys::PROJECT_PLURAL,
                        keys::PROJECT_GROUP
                    ),
                ),
            )
            .with_facts(refused()),
            Case::new(
                "unverified",
                joining("other"),
                deny(403, "could not verify"),
            ),
            Case::new(
                "creating a namespace in a project",
                request(
                    "CREATE",
                    Some(namespace_in_json("fresh", "local:p-vwxyz")),
                    None,
                ),
                deny(403, "may not move namespace \"fresh\""),
            )
            .with_facts(refused()),
            Case::new(
                "unchanged annotation needs nothing",
                request(
                    "UPDATE",
                    Some(namespace_in_json("team-a", "local:p-vwxyz")),
                    Some(namespace_in_json("team-a", "local:p-vwxyz")),
                ),
                Allow,
            ),
        ]);
    }

    #[test]
    fn n1_asks_for_an_access_review_only_when_joining() {
        let world = world();
        let need = |req| super::super::needs(&admission(req), &world, &config());
        assert_eq!(
            need(request(
                "CREATE",
                Some(namespace_in_json("fresh", "local:p-vwxyz")),
                None
            ))
            .access_reviews,
            [project_id()]
        );
        let unchanged = namespace_in_json("team-a", "local:p-vwxyz");
        assert_eq!(
            need(request("UPDATE", Some(unchanged.clone()), Some(unchanged))),
            Needs::default()
        );
        assert_eq!(
            need(request(
                "CREATE",
                Some(namespace_in_json("x", "nonsense")),
                None
            )),
            Needs::default()
        );
    }

    #[test]
    fn n2_well_formed_ids_of_existing_projects() {
        let create = |value: &str| request("CREATE", Some(namespace_in_json("fresh", value)), None);
        let mut cases: Vec<Case> = ["p-vwxyz", ":p-vwxyz", "local:", "a:b:c"]
            .into_iter()
            .map(|bad| {
                Case::new(
                    "malformed",
                    create(bad),
                    deny(403, format!("annotation {}", keys::PROJECT_ID_KEY)),
                )
            })
            .collect();
        // An empty annotation names no project, as in Rancher (and the entry's match condition
        // reads it like none): nothing to check.
        cases.push(Case::new("empty", create(""), Expect::Allow));
        cases.push(
            Case::new(
                "missing project",
                create("local:p-nope"),
                deny(403, "project local:p-nope"),
            )
            .with_facts(allowed()),
        );
        run(cases);
    }

    #[test]
    fn n2_without_the_project_crd_existence_is_not_checked() {
        let mut world = world();
        world.projects_installed = false;
        let req = request(
            "CREATE",
            Some(namespace_in_json("fresh", "local:p-nope")),
            None,
        );
        let decision = super::super::validate(&admission(req), &world, &config(), &allowed());
        check("no CRD", &decision, &Allow);
    }

    #[test]
    fn n3_join_and_leave_are_announced() {
        // (also: the overwritten secrets are gone for good, said in plain words)
        run(vec![
            Case::new(
                "joining overwrites",
                joining("newcomer"),
                warn(
                    "namespace \"newcomer\" joins project local:p-vwxyz; its project-scoped secrets \
                     will overwrite 2 secrets here: cache, db",
                ),
            )
            .with_facts(allowed()),
            Case::new(
                "joining is refused under the deny policy",
                joining("newcomer"),
                deny(403, "without consent"),
            )
            .with_cfg(deny_overwrites())
            .with_facts(allowed()),
            Case::new(
                "leaving removes copies",
                leaving("team-a"),
                warn(
                    "namespace \"team-a\" leaves project local:p-vwxyz; 2 copies of its \
                     project-scoped secrets will be removed: cache, db",
                ),
            )
            .with_facts(allowed()),
            Case::new(
                "a label alone never joins",
                request(
                    "UPDATE",
                    Some(namespace_json(
                        "newcomer",
                        json!({keys::PROJECT_ID_KEY: "p-vwxyz"}),
                        Value::Null,
                    )),
                    Some(bare("newcomer")),
                ),
                Allow,
            ),
            Case::new(
                "the reconciler skips the rules",
                {
                    let mut req = joining("newcomer");
                    req["userInfo"]["username"] = json!(RECONCILER);
                    req
                },
                Allow,
            ),
            Case::new(
                "a status update that joins is reviewed like any other",
                {
                    let mut req = joining("newcomer");
                    req["subResource"] = json!("status");
                    req
                },
                deny(403, "could not verify"),
            ),
        ]);
    }

    #[test]
    fn n3_deny_policy_respects_consent() {
        let mut world = world();
        for name in ["db", "cache"] {
            let mut original = world
                .scoped(BACKING, name)
                .and_then(|s| s.whole().cloned())
                .expect("fixture original");
            original
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(
                    keys::ALLOW_OVERWRITE_ANNOTATION.to_owned(),
                    keys::TRUE.to_owned(),
                );
            world.upsert_scoped(original);
        }
        let req = joining("newcomer");
        let decision =
            super::super::validate(&admission(req), &world, &deny_overwrites(), &allowed());
        check(
            "consented",
            &decision,
            &warn("will overwrite 2 secrets here"),
        );
    }

    fn only_for(project: &str) -> Facts {
        Facts {
            may_manage_namespaces: [
                (ProjectId::new("local", "p-vwxyz"), project == "p-vwxyz"),
                (ProjectId::new("local", "p-other"), project == "p-other"),
            ]
            .into(),
            ..Facts::default()
        }
    }

    fn world_with_other_project() -> World {
        let mut world = world();
        crate::world::fixtures::project(&mut world, "local", "p-other", "local-p-other");
        world
    }

    #[test]
    fn n1_leaving_and_moving_need_permission_on_every_project_involved() {
        let world = world_with_other_project();
        let cfg = config();
        let decide =
            |req, facts: &Facts| super::super::validate(&admission(req), &world, &cfg, facts);
        let moving = || {
            request(
                "UPDATE",
                Some(namespace_in_json("team-a", "local:p-other")),
                Some(namespace_in_json("team-a", "local:p-vwxyz")),
            )
        };
        check(
            "leaving without permission",
            &decide(leaving("team-a"), &only_for("p-other")),
            &deny(
                403,
                "user \"alice\" may not move namespace \"team-a\" out of project local:p-vwxyz",
            ),
        );
        check(
            "leaving, unverified",
            &decide(leaving("team-a"), &Facts::default()),
            &deny(403, "could not verify"),
        );
        check(
            "leaving with permission",
            &decide(leaving("team-a"), &only_for("p-vwxyz")),
            &warn("leaves project local:p-vwxyz"),
        );
        // An annotation emptied names no project: that is leaving, not a malformed ID.
        let emptying = || {
            request(
                "UPDATE",
                Some(namespace_in_json("team-a", "")),
                Some(namespace_in_json("team-a", "local:p-vwxyz")),
            )
        };
        check(
            "leaving by emptying the annotation, without permission",
            &decide(emptying(), &only_for("p-other")),
            &deny(403, "out of project local:p-vwxyz"),
        );
        check(
            "leaving by emptying the annotation, with permission",
            &decide(emptying(), &only_for("p-vwxyz")),
            &warn("leaves project local:p-vwxyz"),
        );
        check(
            "moving with permission on the target only",
            &decide(moving(), &only_for("p-other")),
            &deny(403, "out of project local:p-vwxyz"),
        );
        check(
            "moving with permission on the source only",
            &decide(moving(), &only_for("p-vwxyz")),
            &deny(403, "into project local:p-other"),
        );
        check(
            "moving with permission on both",
            &decide(moving(), &allowed()),
            &warn("leaves project local:p-vwxyz"),
        );
        let need = super::super::needs(&admission(moving()), &world, &cfg);
        assert_eq!(
            need.access_reviews,
            [ProjectId::new("local", "p-other"), project_id()]
        );
    }

    #[test]
    fn n1_leaving_a_deleted_project_needs_nothing() {
        let mut world = world();
        world.remove_project(&project_id());
        let req = leaving("team-a");
        let decision =
            super::super::validate(&admission(req), &world, &config(), &Facts::default());
        assert_eq!(decision.denial, None);
    }

    #[test]
    fn protected_namespaces_never_join() {
        let join = |ns: &str| {
            request(
                "UPDATE",
                Some(namespace_in_json(ns, "local:p-vwxyz")),
                Some(bare(ns)),
            )
        };
        run(vec![
            Case::new(
                "kube-system",
                join("kube-system"),
                deny(
                    403,
                    "namespace \"kube-system\" is protected (kube-node-lease, kube-public, \
                     kube-system, scoped-secrets-system): it never receives project-scoped \
                     secrets, so it cannot join project local:p-vwxyz; remove annotation \
                     field.cattle.io/projectId",
                ),
            )
            .with_facts(allowed()),
            Case::new(
                "the product's own namespace",
                join("scoped-secrets-system"),
                deny(403, "is protected"),
            )
            .with_facts(allowed()),
            Case::new(
                "leaving a protected namespace needs nothing",
                leaving("kube-public"),
                Allow,
            ),
        ]);
        let need = super::super::needs(&admission(join("kube-system")), &world(), &config());
        assert_eq!(need, Needs::default());
    }

    /// The issue that made the fates one truth: a namespace holding another project's original of the
    /// same name (that project's backing namespace) joins. The reconciler reports a conflict there and
    /// never overwrites an original, so the webhook must not say "will overwrite", nor refuse the
    /// join under the deny policy.
    #[test]
    fn n3_a_name_held_by_another_projects_original_is_a_conflict_not_an_overwrite() {
        let mut world = world_with_other_project();
        let other = [(keys::PROJECT_SCOPED_LABEL, "p-other")];
        crate::world::fixtures::add_secret(
            &mut world,
            crate::world::fixtures::secret("local-p-other", "db", &other, &[]),
        );
        for cfg in [config(), deny_overwrites()] {
            let decision = super::super::validate(
                &admission(joining("local-p-other")),
                &world,
                &cfg,
                &allowed(),
            );
            check(
                "held by an original",
                &decision,
                &warn(
                    "1 secret of project local:p-vwxyz not copied into \"local-p-other\": another \
                     project's original holds the name: db",
                ),
            );
            assert!(
                !decision.warnings.iter().any(|w| w.contains("overwrite")),
                "{:?}",
                decision.warnings
            );
        }
    }

    #[test]
    fn n3_announcements_are_dropped_when_the_join_is_refused() {
        let req = joining("newcomer");
        let decision = super::super::validate(&admission(req), &world(), &config(), &refused());
        assert!(decision.denial.is_some());
        assert!(decision.warnings.is_empty(), "{:?}", decision.warnings);
    }

    /// Under the warn policy a copy that overwrote the namespace's own secret is marked; leaving
    /// the project says which removed copies had done so.
    #[test]
    fn n3_leaving_names_the_copies_that_had_replaced_own_secrets() {
        let mut world = world();
        // The fixture's copy, saying it replaced the namespace's own secret.
        let origin = keys::origin_value(BACKING, "db");
        let copy = crate::world::fixtures::secret(
            "team-a",
            "db",
            &[(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")],
            &[
                (keys::COPY_ANNOTATION, keys::TRUE),
                (keys::ORIGIN_ANNOTATION, origin.as_str()),
                (keys::REPLACED_ANNOTATION, keys::TRUE),
            ],
        );
        crate::world::fixtures::add_secret(&mut world, copy);
        let req = leaving("team-a");
        let decision = super::super::validate(&admission(req), &world, &config(), &allowed());
        check(
            "leaving",
            &decision,
            &warn(
                "1 removed copy had replaced namespace \"team-a\"'s own secrets, which do not come back: db",
            ),
        );
    }

    /// N5: the backing-namespace marks hand a namespace to a project; only whoever may update that
    /// project's status may write them (the reconciler skips the rules).
    #[test]
    fn n5_backing_namespace_marks_need_the_projects_status_rights() {
        let marked = |name: &str, of: &str| {
            namespace_json(
                name,
                Value::Null,
                json!({keys::BACKING_NAMESPACE_OF_ANNOTATION: of, keys::BACKING_NAMESPACE_UID_ANNOTATION: "u1"}),
            )
        };
        let billing = || ProjectId::new("local", "billing");
        let payroll = || ProjectId::new("local", "payroll");
        let status = |allowed: bool| Facts {
            may_update_project_status: [(billing(), allowed)].into(),
            ..Facts::default()
        };
        // A mark moved from project payroll to project billing.
        let moved = || {
            request(
                "UPDATE",
                Some(marked("shared", "local:billing")),
                Some(marked("shared", "local:payroll")),
            )
        };
        let both = |billing_allowed: bool, payroll_allowed: bool| Facts {
            may_update_project_status: [(billing(), billing_allowed), (payroll(), payroll_allowed)]
                .into(),
            ..Facts::default()
        };
        run(vec![
            Case::new(
                "a namespace editor pre-claims a future project's namespace",
                request("UPDATE", Some(marked("billing", "local:billing")), Some(bare("billing"))),
                deny(
                    403,
                    "user \"alice\" may not change them: the annotations \
                     scoped-secrets.io/backing-namespace-of and scoped-secrets.io/backing-namespace-uid \
                     on namespace \"billing\" make it project local:billing's backing namespace, \
                     which needs verb update on projects.management.cattle.io/status \"billing\" in \
                     namespace \"local\"",
                ),
            )
            .with_facts(status(false)),
            Case::new(
                "created marked",
                request("CREATE", Some(marked("fresh", "local:billing")), None),
                deny(403, "may not change them"),
            )
            .with_facts(status(false)),
            Case::new(
                "removing a mark",
                request("UPDATE", Some(bare("old")), Some(marked("old", "local:billing"))),
                deny(403, "could not verify"),
            ),
            Case::new(
                "with the project's status rights",
                request("UPDATE", Some(marked("billing", "local:billing")), Some(bare("billing"))),
                Allow,
            )
            .with_facts(status(true)),
            Case::new(
                "a malformed mark",
                request("UPDATE", Some(marked("billing", "nonsense")), Some(bare("billing"))),
                deny(403, "annotation scoped-secrets.io/backing-namespace-of on namespace"),
            ),
            Case::new(
                "a mark moved from another project needs that project's rights too",
                moved(),
                deny(
                    403,
                    "user \"alice\" may not change them: the annotations \
                     scoped-secrets.io/backing-namespace-of and scoped-secrets.io/backing-namespace-uid \
                     on namespace \"shared\" make it project local:payroll's backing namespace; \
                     changing them takes it from that project, which needs verb update on \
                     projects.management.cattle.io/status \"payroll\" in namespace \"local\"",
                ),
            )
            .with_facts(both(true, false)),
            Case::new(
                "a mark moved with both projects' rights",
                moved(),
                Allow,
            )
            .with_facts(both(true, true)),
            Case::new(
                "unchanged marks need nothing",
                request(
                    "UPDATE",
                    Some(marked("billing", "local:billing")),
                    Some(marked("billing", "local:billing")),
                ),
                Allow,
            ),
        ]);
        let need = super::super::needs(
            &admission(request(
                "UPDATE",
                Some(marked("billing", "local:billing")),
                Some(bare("billing")),
            )),
            &world(),
            &config(),
        );
        assert_eq!(need.status_reviews, [billing()]);
        let need = super::super::needs(&admission(moved()), &world(), &config());
        assert_eq!(need.status_reviews, [billing(), payroll()]);
    }
}
