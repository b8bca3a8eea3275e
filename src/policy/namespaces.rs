//! Rules N1–N3: namespaces joining and leaving projects.

use super::message::{self, count, warning_list};
use super::secrets::consents;
use super::{Config, Denial, Facts, Findings, Needs, OverwritePolicy, Subject};
use crate::keys::{self, ProjectId, ProjectIdError};
use crate::plan::{self, IgnoreList};
use crate::world::{NamespaceState, Original, World, annotation};
use k8s_openapi::api::core::v1::Namespace;

/// The projectId annotation before and after the request.
struct Change<'a> {
    old: Option<&'a str>,
    new: Option<&'a str>,
}

impl<'a> Change<'a> {
    fn of(s: &'a Subject<Namespace>) -> Self {
        let value = |ns: &'a Option<Namespace>| {
            ns.as_ref()
                .and_then(|n| annotation(&n.metadata, keys::PROJECT_ID_KEY))
        };
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

pub(super) fn needs(s: &Subject<Namespace>, world: &World) -> Needs {
    if s.new.is_none() {
        return Needs::default();
    }
    // A project that does not exist is refused (N2) before anyone's permission matters.
    let access_review = Change::of(s)
        .joined()
        .ok()
        .flatten()
        .filter(|p| !world.projects_installed || world.project(p).is_some());
    Needs {
        access_review,
        ..Needs::default()
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
    let change = Change::of(s);
    match change.joined() {
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
        Ok(Some(project)) => {
            if world.projects_installed && world.project(&project).is_none() {
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
            may_join(s, &project, facts, out);
            joining(ns, new, &project, world, cfg, out);
        }
        Ok(None) => {}
    }
    if let Some(project) = change.left() {
        leaving(ns, &project, world, out);
    }
}

/// N1: moving a namespace into a project needs `manage-namespaces` on it (Rancher's rule), or anyone
/// who can edit a namespace could pull the project's secrets into it. When the access review could
/// not be made (`None`), the request is denied: failing open here would hand out secrets.
fn may_join(s: &Subject<Namespace>, project: &ProjectId, facts: &Facts, out: &mut Findings) {
    let ns = s.display_name();
    let permission = format!(
        "verb {} on {}.{} {:?} in namespace {:?}",
        keys::MANAGE_NAMESPACES_VERB,
        keys::PROJECT_PLURAL,
        keys::PROJECT_GROUP,
        project.project,
        project.cluster
    );
    match facts.may_manage_namespaces {
        Some(true) => {}
        Some(false) => out.deny(Denial::forbidden(
            "ProjectAccessDenied",
            format!(
                "user {:?} may not move namespace {ns:?} into project {project}: that needs \
                 {permission}",
                s.user
            ),
        )),
        None => out.deny(Denial::forbidden(
            "ProjectAccessUnverified",
            format!(
                "could not verify that user {:?} may move namespace {ns:?} into project {project} \
                 ({permission}); try again",
                s.user
            ),
        )),
    }
}

/// The originals of `project` that want a copy in namespace `ns` in state `state`.
fn wanting<'w>(
    world: &'w World,
    project: &'w ProjectId,
    ns: &'w str,
    terminating: bool,
) -> impl Iterator<Item = Original<'w>> + 'w {
    world.originals().filter(move |o| {
        o.project == project
            && plan::wants_copy(
                ns,
                terminating,
                o.namespace(),
                &IgnoreList::of(&o.secret.metadata),
            )
    })
}

/// N3: a joining namespace's secrets that the project's originals would overwrite are announced
/// (or, under `--overwrite-policy=deny`, refused unless every such original consents).
fn joining(
    ns: &str,
    new: &Namespace,
    project: &ProjectId,
    world: &World,
    cfg: &Config,
    out: &mut Findings,
) {
    let terminating = NamespaceState::from_namespace(new).terminating;
    let overwritten: Vec<Original<'_>> = wanting(world, project, ns, terminating)
        .filter(|o| {
            world
                .secret_meta(ns, o.name())
                .is_some_and(|m| !m.is_copy())
        })
        .collect();
    if overwritten.is_empty() {
        return;
    }
    let head = format!(
        "namespace {ns:?} joins project {project}; its project-scoped secrets will overwrite {} here",
        count(overwritten.len(), "secret", "secrets")
    );
    let refused: Vec<&str> = overwritten
        .iter()
        .filter(|o| !consents(&o.secret.metadata))
        .map(Original::name)
        .collect();
    if cfg.overwrite_policy == OverwritePolicy::Deny && !refused.is_empty() {
        let head = format!(
            "{head}, without consent (annotation {}=\"true\" on the original) for",
            keys::ALLOW_OVERWRITE_ANNOTATION
        );
        out.deny(Denial::forbidden(
            "WouldOverwrite",
            message::denial_list(&head, &refused),
        ));
    } else {
        let names: Vec<&str> = overwritten.iter().map(Original::name).collect();
        out.warn(warning_list(&head, &names));
    }
}

/// N3: a leaving namespace loses its copies of the project's originals.
fn leaving(ns: &str, project: &ProjectId, world: &World, out: &mut Findings) {
    let removed = wanting(world, project, ns, false)
        .filter(|o| world.secret_meta(ns, o.name()).is_some_and(|m| m.is_copy()))
        .count();
    if removed > 0 {
        out.warn(format!(
            "namespace {ns:?} leaves project {project}; {} of its project-scoped secrets will be removed",
            count(removed, "copy", "copies")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Expect::Allow, *};
    use super::super::{Facts, Needs};
    use super::*;
    use serde_json::{Value, json};

    fn allowed() -> Facts {
        Facts {
            may_manage_namespaces: Some(true),
            ..Facts::default()
        }
    }
    fn refused() -> Facts {
        Facts {
            may_manage_namespaces: Some(false),
            ..Facts::default()
        }
    }
    fn bare(name: &str) -> Value {
        namespace_json(name, Value::Null, Value::Null)
    }

    #[test]
    fn n1_joining_needs_permission() {
        let join = || {
            request(
                "UPDATE",
                Some(namespace_in_json("other", "local:p-vwxyz")),
                Some(bare("other")),
            )
        };
        run(vec![
            Case::new("granted", join(), Allow).with_facts(allowed()),
            Case::new(
                "refused",
                join(),
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
            Case::new("unverified", join(), deny(403, "could not verify")),
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
            .access_review,
            Some(project_id())
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
        let mut cases: Vec<Case> = ["p-vwxyz", ":p-vwxyz", "local:", "a:b:c", ""]
            .into_iter()
            .map(|bad| {
                Case::new(
                    "malformed",
                    create(bad),
                    deny(403, format!("annotation {}", keys::PROJECT_ID_KEY)),
                )
            })
            .collect();
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
        let join_newcomer = || {
            request(
                "UPDATE",
                Some(namespace_in_json("newcomer", "local:p-vwxyz")),
                Some(bare("newcomer")),
            )
        };
        run(vec![
            Case::new(
                "joining overwrites",
                join_newcomer(),
                warn(
                    "namespace \"newcomer\" joins project local:p-vwxyz; its project-scoped secrets \
                     will overwrite 2 secrets here: cache, db",
                ),
            )
            .with_facts(allowed()),
            Case::new(
                "joining is refused under the deny policy",
                join_newcomer(),
                deny(403, "without consent"),
            )
            .with_cfg(deny_overwrites())
            .with_facts(allowed()),
            Case::new(
                "leaving removes copies",
                request(
                    "UPDATE",
                    Some(bare("team-a")),
                    Some(namespace_in_json("team-a", "local:p-vwxyz")),
                ),
                warn("namespace \"team-a\" leaves project local:p-vwxyz; 2 copies"),
            ),
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
                    let mut req = join_newcomer();
                    req["userInfo"]["username"] = json!(RECONCILER);
                    req
                },
                Allow,
            ),
            Case::new(
                "a status update that joins is reviewed like any other",
                {
                    let mut req = join_newcomer();
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
                .map(|s| (**s).clone())
                .expect("fixture original");
            original
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(
                    keys::ALLOW_OVERWRITE_ANNOTATION.to_owned(),
                    keys::TRUE.to_owned(),
                );
            world.upsert_scoped(std::sync::Arc::new(original));
        }
        let req = request(
            "UPDATE",
            Some(namespace_in_json("newcomer", "local:p-vwxyz")),
            Some(bare("newcomer")),
        );
        let decision =
            super::super::validate(&admission(req), &world, &deny_overwrites(), &allowed());
        check(
            "consented",
            &decision,
            &warn("will overwrite 2 secrets here"),
        );
    }
}
