//! Rules S1–S8: what may happen to secrets, originals and copies.

use super::message::{self, count, warning_list};
use super::{Config, Denial, Facts, Findings, Needs, Subject, Worlds};
use crate::keys;
use crate::plan::{self, ConflictReason, Fate, IgnoreList, OverwritePolicy, Settings};
use crate::scoped;
use crate::world::{self, Original, World, annotation, label};
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::core::admission::Operation;
use std::collections::HashSet;

pub(super) fn needs(s: &Subject<Secret>, world: &World) -> Needs {
    let taken = s.op == Operation::Create
        && s.name.as_deref().is_some_and(|name| {
            world.secret_meta(&s.namespace, name).is_some()
                && known_type(world, &s.namespace, name).is_none()
        });
    Needs {
        secret_type_of: taken
            .then(|| s.name.clone().map(|name| (s.namespace.clone(), name)))
            .flatten(),
        ..Needs::default()
    }
}

/// S1, S2 and S7: names and what an original does to other namespaces. Advisory and best-effort
/// (the world may lag the cluster), so their webhook entry may fail open. S1 reads the request's
/// own cluster; S2 and S7 the world the copies go to.
pub(super) fn validate_names(
    s: &Subject<Secret>,
    worlds: Worlds<'_>,
    cfg: &Config,
    facts: &Facts,
    out: &mut Findings,
) {
    if s.op == Operation::Create {
        unique_name(s, worlds.here, cfg, facts, out);
    }
    for world in std::iter::once(worlds.copies).chain(worlds.also) {
        if let Some(original) = s.new.as_ref().and_then(|new| world.as_original(new)) {
            overwrites(&original, world, cfg, out);
        }
        removals(s, world, cfg, out);
    }
}

/// S3–S6 and S8: where the label may be, who writes markers and copies, what can be
/// project-scoped, and how much a project's originals take in memory.
pub(super) fn validate_guard(s: &Subject<Secret>, world: &World, cfg: &Config, out: &mut Findings) {
    if let Some(new) = &s.new {
        label_placement(s, new, world, out);
        forged_markers(s, new, out);
        if let Some(original) = world.as_original(new) {
            what_can_be_scoped(s, &original, out);
            project_size(s, &original, world, cfg, out);
        }
    }
    copies_are_read_only(s, world, cfg, out);
}

/// S1: one set of names per namespace, including names reserved by a project's originals.
/// Best-effort: the apiserver remains the final arbiter of uniqueness. A name that is taken is
/// answered 409 `AlreadyExists`, as the apiserver would (docs/SPEC.md §2; 403 would break
/// clients that create and, on `AlreadyExists`, update); a reserved name is a policy denial (403).
fn unique_name(
    s: &Subject<Secret>,
    world: &World,
    cfg: &Config,
    facts: &Facts,
    out: &mut Findings,
) {
    // generateName: the apiserver picks a free name.
    let Some(name) = s.name.as_deref() else {
        return;
    };
    let ns = &s.namespace;
    if world.secret_meta(ns, name).is_some() {
        let ty = known_type(world, ns, name).or(facts.existing_secret_type.as_deref());
        out.deny(Denial::already_exists(format!(
            "{} named {name:?} already exists in namespace {ns:?}; certificates, registry \
                 credentials and secrets share one set of names per namespace",
            describe_type(ty)
        )));
    } else if let Some(original) = reserving_original(world, &cfg.copies, ns, name) {
        out.deny(Denial::forbidden(
            "NameReserved",
            format!(
                "secret name {name:?} in namespace {ns:?} is reserved by project-scoped secret \
                 {:?} of project {}",
                origin(&original),
                original.project.project
            ),
        ));
    }
}

/// The type of a secret the world holds in full (project-scoped ones only).
fn known_type<'a>(world: &'a World, ns: &str, name: &str) -> Option<&'a str> {
    world.scoped(ns, name)?.type_()
}

/// `a certificate (kubernetes.io/tls)`, `a registry credential (…)`, `a secret (Opaque)`.
fn describe_type(ty: Option<&str>) -> String {
    match ty {
        None | Some("") => "a secret".to_owned(),
        Some(t) if t == keys::TLS_TYPE => format!("a certificate ({t})"),
        Some(t) if t == keys::DOCKER_CONFIG_JSON_TYPE || t == keys::DOCKER_CFG_TYPE => {
            format!("a registry credential ({t})")
        }
        Some(t) => format!("a secret ({t})"),
    }
}

/// The original of the namespace's project that wants a copy named `name` in `ns`.
fn reserving_original<'a>(
    world: &'a World,
    settings: &Settings,
    ns: &str,
    name: &str,
) -> Option<Original<'a>> {
    let state = world.namespace(ns)?;
    let project = state.project()?;
    let original = world.original_of(&project, name)?;
    let ignored = IgnoreList::of(&original.secret.metadata);
    plan::wants_copy(&original, &ignored, ns, state.terminating, settings).then_some(original)
}

fn origin(original: &Original<'_>) -> String {
    keys::origin_value(original.namespace(), original.name())
}

/// S3: the project-scoped label belongs on originals in a backing namespace, naming its project.
fn label_placement(s: &Subject<Secret>, new: &Secret, world: &World, out: &mut Findings) {
    let Some(value) = label(&new.metadata, keys::PROJECT_SCOPED_LABEL) else {
        return;
    };
    let (ns, name) = (&s.namespace, s.display_name());
    let key = keys::PROJECT_SCOPED_LABEL;
    match world.backing_project(ns) {
        None => {
            // A copy edited under --protect-copies=false keeps the label it already had, and so
            // does an original whose project is gone.
            let kept = s
                .old
                .as_ref()
                .filter(|old| label(&old.metadata, key) == Some(value));
            let Some(old) = kept else {
                out.deny(Denial::forbidden(
                    "LabelOutsideBackingNamespace",
                    format!(
                        "label {key} is only allowed on secrets in a project's backing namespace, and \
                         namespace {ns:?} is not one; create the secret in the project's backing \
                         namespace and the reconciler will copy it here"
                    ),
                ));
                return;
            };
            // A copy stripped of its markers that keeps the label would become a secret of its
            // own held whole: a copy, held by digest, could grow first and then be stripped.
            if world::is_copy(&old.metadata) && !world::is_copy(&new.metadata) {
                out.deny(Denial::forbidden(
                    "CopyMarkersRemoved",
                    format!(
                        "secret {name:?} in namespace {ns:?} is a copy: removing its copy markers \
                         while it keeps label {key} would make it a secret of its own outside every \
                         backing namespace; remove the label too"
                    ),
                ));
                return;
            }
            // Every replica keeps a labelled secret that is not a copy whole, data included; S8
            // counts only originals, so one that is neither may not grow (or users who can write
            // it could grow every replica's memory without bound).
            let size = |data: u64, meta| data.saturating_add(scoped::metadata_bytes(meta));
            let grows = size(s.new_data_bytes, &new.metadata) > size(s.old_data_bytes, &old.metadata);
            if !world::is_copy(&new.metadata) && grows {
                out.deny(Denial::forbidden(
                    "LabelledSecretGrows",
                    format!(
                        "secret {name:?} in namespace {ns:?} carries label {key} but is neither an \
                         original (the namespace backs no project) nor a copy: it may not grow while \
                         it keeps the label, which every replica of the reconciler holds whole; \
                         remove the label first"
                    ),
                ));
            }
        }
        Some(project) if value.is_empty() => out.deny(Denial::forbidden(
            "ProjectLabelEmpty",
            format!(
                "label {key} on secret {name:?} in namespace {ns:?} is empty; set it to {}",
                project.project
            ),
        )),
        Some(project) if value != project.project => out.deny(Denial::forbidden(
            "ProjectLabelMismatch",
            format!(
                "label {key} on secret {name:?} is {value:?}, but namespace {ns:?} backs project {}; \
                 set it to {}",
                project, project.project
            ),
        )),
        Some(project) => {
            // The cluster label travels to every copy: it must name the project's cluster.
            let cluster_key = keys::PROJECT_SCOPED_CLUSTER_LABEL;
            match label(&new.metadata, cluster_key) {
                Some(cluster) if cluster != project.cluster => out.deny(Denial::forbidden(
                    "ProjectClusterLabelMismatch",
                    format!(
                        "label {cluster_key} on secret {name:?} is {cluster:?}, but namespace \
                         {ns:?} backs project {project}; set it to {} or remove it",
                        project.cluster
                    ),
                )),
                _ => {}
            }
        }
    }
}

/// S4: only the reconciler creates copy markers or changes their values.
fn forged_markers(s: &Subject<Secret>, new: &Secret, out: &mut Findings) {
    let old = s.old.as_ref().map(|o| &o.metadata);
    let forged: Vec<&str> = keys::COPY_MARKERS
        .iter()
        .copied()
        .filter(|key| {
            let value = annotation(&new.metadata, key);
            value.is_some() && value != old.and_then(|o| annotation(o, key))
        })
        .collect();
    if !forged.is_empty() {
        out.deny(Denial::forbidden(
            "ForgedCopyMarker",
            format!(
                "only the scoped-secrets reconciler may set copy markers; remove annotation {} from \
                 secret {:?} in namespace {:?}",
                forged.join(", "),
                s.display_name(),
                s.namespace
            ),
        ));
    }
}

/// S6: service-account tokens cannot be project-scoped; ignore patterns must parse.
fn what_can_be_scoped(s: &Subject<Secret>, original: &Original<'_>, out: &mut Findings) {
    if original.secret.type_.as_deref() == Some(keys::SERVICE_ACCOUNT_TOKEN_TYPE) {
        out.deny(Denial::forbidden(
            "ServiceAccountTokenNotScoped",
            format!(
                "secret {:?} in namespace {:?} is of type {}, which cannot be project-scoped; \
                 remove label {}",
                s.display_name(),
                s.namespace,
                keys::SERVICE_ACCOUNT_TOKEN_TYPE,
                keys::PROJECT_SCOPED_LABEL
            ),
        ));
    }
    let ignore = annotation(
        &original.secret.metadata,
        keys::IGNORE_NAMESPACES_ANNOTATION,
    );
    if let Some(Err(e)) = ignore.map(IgnoreList::parse) {
        // A list this update leaves as it was, on what was an original already, was written past
        // the webhook or under an earlier version's looser limits: refusing every update of the
        // original would lock out its other writers (a certificate's renewal among them). The
        // reconciler holds its copies back until it is fixed; the warning says so.
        let unchanged = s.old.as_ref().is_some_and(|old| {
            label(&old.metadata, keys::PROJECT_SCOPED_LABEL).is_some()
                && annotation(&old.metadata, keys::IGNORE_NAMESPACES_ANNOTATION) == ignore
        });
        if unchanged {
            out.warn(format!(
                "the ignore-namespaces list cannot be read, so no copy of this secret is written, \
                 updated or removed until it is fixed: {e}"
            ));
        } else {
            out.deny(Denial::forbidden(
                "InvalidIgnorePattern",
                format!("annotation {}: {e}", keys::IGNORE_NAMESPACES_ANNOTATION),
            ));
        }
    }
    // A copy carries the original's annotations plus the copy markers. The apiserver refuses a
    // secret whose annotation keys and values add up to more than 256 KiB, so such an original would
    // be admitted and then never copied anywhere: refuse it here, where the user sees why.
    const ANNOTATIONS_LIMIT: usize = 256 * 1024;
    /// The length of a uid (a UUID), which validating admission may not see yet.
    const UID_LEN: usize = 36;
    let copy = plan::copy_of(original, &s.namespace);
    let missing_uid = original
        .secret
        .metadata
        .uid
        .as_deref()
        .is_none_or(str::is_empty);
    let size = copy
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(key, value)| key.len() + value.len())
        .sum::<usize>()
        + if missing_uid { UID_LEN } else { 0 }
        // A copy that overwrites a secret also says so (see keys::REPLACED_ANNOTATION).
        + keys::REPLACED_ANNOTATION.len()
        + keys::TRUE.len();
    if size > ANNOTATIONS_LIMIT {
        out.deny(Denial::forbidden(
            "CopyAnnotationsTooLong",
            format!(
                "secret {:?} in namespace {:?} cannot be project-scoped: its copies would carry {size} \
                 bytes of annotations (its own plus the copy markers), more than the apiserver's limit \
                 of {ANNOTATIONS_LIMIT} bytes (256 KiB); remove at least {} of annotations",
                s.display_name(),
                s.namespace,
                count(size - ANNOTATIONS_LIMIT, "byte", "bytes")
            ),
        ));
    }
    // Counted as the reconciler counts, which holds such an original's copies back.
    let (annotations, labels) = plan::copy_metadata_entries(original);
    for (what, entries) in [("annotations", annotations), ("labels", labels)] {
        if entries > keys::MAX_METADATA_ENTRIES {
            out.deny(Denial::forbidden(
                "CopyMetadataTooLarge",
                format!(
                    "secret {:?} in namespace {:?} cannot be project-scoped: its copies would carry \
                     {entries} {what} (its own plus those every copy adds), more than the {} this \
                     webhook reads of an object; remove at least {}",
                    s.display_name(),
                    s.namespace,
                    keys::MAX_METADATA_ENTRIES,
                    count(entries - keys::MAX_METADATA_ENTRIES, "entry", "entries")
                ),
            ));
        }
    }
}

/// S8: every original is held whole in the memory of every replica (its data is what the copies
/// carry), so the originals of one project take at most `--max-project-original-bytes` together,
/// counted as the index holds them (`scoped::held_bytes`: data and metadata, keys included, and a
/// cost per entry): a project member could otherwise get every replica killed for memory, and the
/// guards, which fail closed, would then refuse every write they review. An update that does not
/// grow what was an original already is admitted, so an original written before the limit (or
/// under a larger one) can still be changed and shrunk. Best-effort, as S1: it reads the index,
/// so creates made at once all see the same total.
fn project_size(
    s: &Subject<Secret>,
    original: &Original<'_>,
    world: &World,
    cfg: &Config,
    out: &mut Findings,
) {
    let limit = cfg.max_project_original_bytes;
    let size = s
        .new_data_bytes
        .saturating_add(scoped::metadata_bytes(&original.secret.metadata));
    let was = s
        .old
        .as_ref()
        .filter(|old| world.as_original(old).is_some());
    if let Some(old) = was {
        let before = s
            .old_data_bytes
            .saturating_add(scoped::metadata_bytes(&old.metadata));
        if size <= before {
            return;
        }
    }
    let others = world
        .originals_of(original.project)
        .filter(|other| Some(other.name()) != s.name.as_deref() || other.namespace() != s.namespace)
        .map(|other| scoped::held_bytes(other.secret))
        .fold(0, u64::saturating_add);
    let total = others.saturating_add(size);
    if total > limit {
        out.deny(Denial::forbidden(
            "ProjectOriginalsTooLarge",
            format!(
                "secret {:?} in namespace {:?} cannot be project-scoped: the originals of project \
                 {} would take {total} bytes together (this one {size}: data and metadata, {} \
                 bytes an entry besides), more than the {limit} bytes \
                 --max-project-original-bytes allows (every original is held whole in the \
                 webhook's memory); make it smaller or remove another original of the project",
                s.display_name(),
                s.namespace,
                original.project,
                scoped::ENTRY_BYTES,
            ),
        ));
    }
}

/// S2: an original whose copies would overwrite non-copy secrets is announced (or, under
/// `--overwrite-policy=deny`, refused unless it consents); copies that cannot land because another
/// project's original holds the name are announced too. The fates are the reconciler's own.
fn overwrites(original: &Original<'_>, world: &World, cfg: &Config, out: &mut Findings) {
    // An invalid ignore list is refused by S6; what it would overwrite is moot.
    let ignore = annotation(
        &original.secret.metadata,
        keys::IGNORE_NAMESPACES_ANNOTATION,
    );
    if ignore.is_some_and(|v| IgnoreList::parse(v).is_err()) {
        return;
    }
    let fates = Fates::of(
        world,
        original,
        plan::wanted_namespaces(world, original.clone(), &cfg.copies),
        cfg.copies.overwrite_policy,
    );
    // Named as where they are: `cluster/namespace` when the copies go to a downstream cluster.
    let qualified = |namespaces: &[&str]| -> Vec<String> {
        namespaces
            .iter()
            .map(|ns| world.qualified(ns).into_owned())
            .collect()
    };
    let head = |n: usize| {
        format!(
            "project-scoped secret {:?} will overwrite the secret of that name in {}",
            origin(original),
            count(n, "namespace", "namespaces")
        )
    };
    if !fates.refused.is_empty() {
        let head = format!(
            "{} (set annotation {}=\"true\" to allow it)",
            head(fates.refused.len()),
            keys::ALLOW_OVERWRITE_ANNOTATION
        );
        out.deny(Denial::forbidden(
            "WouldOverwrite",
            message::denial_list(&head, &qualified(&fates.refused)),
        ));
    }
    if !fates.overwritten.is_empty() {
        out.announce(warning_list(
            &head(fates.overwritten.len()),
            &qualified(&fates.overwritten),
        ));
    }
    if !fates.held.is_empty() {
        let head = format!(
            "project-scoped secret {:?} cannot be copied to {}, where another project's original \
             holds the name",
            origin(original),
            count(fates.held.len(), "namespace", "namespaces")
        );
        out.announce(warning_list(&head, &qualified(&fates.held)));
    }
}

/// Where the copies of one original would replace something, grouped as the messages name them.
#[derive(Debug, Default)]
pub(super) struct Fates<'a> {
    /// A secret that is not a copy is overwritten.
    pub overwritten: Vec<&'a str>,
    /// Overwriting is refused: `--overwrite-policy=deny` and no consent.
    pub refused: Vec<&'a str>,
    /// Another project's original holds the name: never overwritten, the copy does not land.
    pub held: Vec<&'a str>,
}

impl<'a> Fates<'a> {
    pub fn of(
        world: &World,
        original: &Original<'_>,
        namespaces: impl Iterator<Item = &'a str>,
        policy: OverwritePolicy,
    ) -> Self {
        let mut fates = Self::default();
        for ns in namespaces {
            match plan::fate(world, original, ns, policy) {
                Fate::Overwrite { .. } => fates.overwritten.push(ns),
                Fate::Conflict(ConflictReason::NoConsent) => fates.refused.push(ns),
                Fate::Conflict(ConflictReason::HeldByOriginal) => fates.held.push(ns),
                // Not fates: such originals want no namespace (and S6 refuses them).
                Fate::Conflict(
                    ConflictReason::UnreadableIgnoreList | ConflictReason::CopyMetadataTooLarge,
                ) => {}
                Fate::Create | Fate::Copy(_) | Fate::StrayCopy { .. } => {}
            }
        }
        fates
    }
}

/// S5: copies change only through their original, except while their namespace is being deleted,
/// and except deleting a copy no original wants any more (debris the reconciler would delete too,
/// or that Rancher's copier left behind).
fn copies_are_read_only(s: &Subject<Secret>, world: &World, cfg: &Config, out: &mut Findings) {
    if !matches!(s.op, Operation::Update | Operation::Delete) {
        return;
    }
    let Some(old) = s.old.as_ref().filter(|o| world::is_copy(&o.metadata)) else {
        return;
    };
    let ns = &s.namespace;
    if world.namespace(ns).is_some_and(|n| n.terminating) {
        return;
    }
    let origin = copy_origin(world, ns, &old.metadata);
    if s.op == Operation::Delete
        && origin
            .as_deref()
            .is_some_and(|origin| !is_kept(world, &cfg.copies, ns, origin))
    {
        return;
    }
    let text = match origin {
        Some(origin) => format!(
            "secret {:?} in namespace {ns:?} is a copy of project-scoped secret {origin:?}; change \
             the original instead",
            s.display_name()
        ),
        None => format!(
            "secret {:?} in namespace {ns:?} is a copy of a project-scoped secret; change the \
             original instead",
            s.display_name()
        ),
    };
    if cfg.protect_copies {
        out.deny(Denial::forbidden("CopyIsReadOnly", text));
    } else {
        out.warn(text);
    }
}

/// Where a copy comes from: our origin annotation, or for a Rancher copy the backing namespace of
/// the project its label names. That label is a project's name, unique only within a cluster: the
/// project of the namespace the copy is in when it has that name, else the first of that name (by
/// cluster) that owns its backing namespace, else the first of that name (the copy was left behind
/// in a namespace that left the project, or its project owns no backing namespace: not wanted).
fn copy_origin(world: &World, ns: &str, meta: &ObjectMeta) -> Option<String> {
    if let Some(origin) = annotation(meta, keys::ORIGIN_ANNOTATION) {
        return Some(origin.to_owned());
    }
    let project = label(meta, keys::PROJECT_SCOPED_LABEL)?;
    let own = world
        .namespace(ns)
        .and_then(|n| world.member_project(n))
        .filter(|id| id.project == project);
    let namesakes = || world.projects().filter(|(id, _)| id.project == project);
    let id = own
        .or_else(|| {
            namesakes()
                .find(|(id, _)| world.owned_backing_namespace(id).is_some())
                .map(|(id, _)| id.clone())
        })
        .or_else(|| namesakes().next().map(|(id, _)| id.clone()))?;
    let backing = world.project(&id)?.backing_namespace.as_str();
    Some(keys::origin_value(backing, meta.name.as_deref()?))
}

/// Whether the original named by `origin` exists and keeps its copy in `ns` (wanted, or held
/// back: the plan keeps those copies, so a user may not delete them either).
fn is_kept(world: &World, settings: &Settings, ns: &str, origin: &str) -> bool {
    keys::parse_origin(origin)
        .and_then(|(origin_ns, name)| world.original_at(origin_ns, name))
        .is_some_and(|original| plan::kept_in(world, &original, ns, settings))
}

/// S7: deleting an original, removing its label or narrowing its ignore list removes copies; say
/// how many (copies that exist now and will no longer be kept).
fn removals(s: &Subject<Secret>, world: &World, cfg: &Config, out: &mut Findings) {
    let Some(before) = s.old.as_ref().and_then(|old| world.as_original(old)) else {
        return;
    };
    // A set: an original's copies can go to every namespace of the cluster, and checking each
    // against a list made this quadratic (~0.1 s of CPU per review at 10,000 namespaces).
    let kept_after: HashSet<&str> = s
        .new
        .as_ref()
        .and_then(|new| world.as_original(new))
        .map(|after| plan::kept_namespaces(world, after, &cfg.copies).collect())
        .unwrap_or_default();
    let name = before.name();
    let removed: Vec<&str> = plan::kept_namespaces(world, before.clone(), &cfg.copies)
        .filter(|ns| !kept_after.contains(ns))
        .filter(|ns| world.secret_meta(ns, name).is_some_and(|m| m.is_copy()))
        .collect();
    if removed.is_empty() {
        return;
    }
    let head = format!(
        "{} of project-scoped secret {:?} will be removed from",
        count(removed.len(), "copy", "copies"),
        origin(&before)
    );
    out.announce(warning_list(&head, &removed));
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Expect::Allow, *};
    use super::super::{Facts, Mode};
    use super::*;
    use serde_json::{Value, json};

    fn create(obj: Value) -> Value {
        request("CREATE", Some(obj), None)
    }
    fn update(old: Value, new: Value) -> Value {
        request("UPDATE", Some(new), Some(old))
    }
    fn delete(old: Value) -> Value {
        request("DELETE", None, Some(old))
    }
    fn plain(ns: &str, name: &str) -> Value {
        secret_json(ns, name, Value::Null, Value::Null)
    }
    fn typed(ty: &str) -> Facts {
        Facts {
            existing_secret_type: Some(ty.to_owned()),
            ..Facts::default()
        }
    }
    fn as_user(mut req: Value, user: &str) -> Value {
        req["userInfo"]["username"] = json!(user);
        req
    }

    #[test]
    fn s1_unique_names() {
        let mut generated = plain("other", "");
        generated["metadata"]["name"] = Value::Null;
        generated["metadata"]["generateName"] = json!("web-");
        run(vec![
            Case::new("free name", create(plain("other", "fresh")), Allow),
            Case::new(
                "taken by a certificate",
                create(plain("other", "web")),
                deny(
                    409,
                    "a certificate (kubernetes.io/tls) named \"web\" already exists in namespace \
                     \"other\"; certificates, registry credentials and secrets share one set of names \
                     per namespace",
                ),
            )
            .with_facts(typed("kubernetes.io/tls")),
            Case::new(
                "taken by a registry credential",
                create(plain("other", "web")),
                deny(409, "a registry credential (kubernetes.io/dockercfg) named"),
            )
            .with_facts(typed("kubernetes.io/dockercfg")),
            Case::new(
                "taken, type unknown",
                create(plain("other", "web")),
                deny(409, "a secret named \"web\" already exists"),
            ),
            Case::new(
                "taken by a copy, type from the world",
                create(plain("team-a", "db")),
                deny(409, "a secret (Opaque) named \"db\""),
            ),
            Case::new(
                "reserved by an original whose copy has not landed",
                create(plain("team-b", "db")),
                deny(
                    403,
                    "secret name \"db\" in namespace \"team-b\" is reserved by project-scoped \
                     secret \"local-p-vwxyz/db\" of project p-vwxyz",
                ),
            ),
            Case::new(
                "not reserved where the original is ignored",
                create(plain("team-b", "cache")),
                Allow,
            ),
            Case::new(
                "not reserved in a terminating namespace",
                create(plain("dying", "other-name")),
                Allow,
            ),
            Case::new("generateName passes", create(generated), Allow),
            Case::new(
                "an original follows the same rule",
                create(original_json("db", "p-vwxyz", Value::Null)),
                deny(409, "named \"db\" already exists in namespace \"local-p-vwxyz\""),
            ),
            Case::new(
                "the reconciler skips the rules",
                as_user(create(copy_json("team-b", "db")), RECONCILER),
                Allow,
            ),
            Case::new(
                "updates are not creates",
                update(plain("other", "web"), plain("other", "web")),
                Allow,
            ),
        ]);
    }

    #[test]
    fn s1_asks_for_the_type_only_when_the_name_is_taken_and_unknown() {
        let world = world();
        let need = |req| super::super::needs(&admission(req), &world, &config());
        assert_eq!(
            need(create(plain("other", "web"))).secret_type_of,
            Some(("other".to_owned(), "web".to_owned()))
        );
        assert_eq!(need(create(plain("other", "fresh"))).secret_type_of, None);
        assert_eq!(need(create(plain("team-a", "db"))).secret_type_of, None);
        assert_eq!(
            need(as_user(create(plain("other", "web")), RECONCILER)),
            Needs::default()
        );
    }

    #[test]
    fn s2_overwrites() {
        let consent = json!({keys::ALLOW_OVERWRITE_ANNOTATION: "true"});
        run(vec![
            Case::new(
                "an original that overwrites is announced",
                create(original_json("api", "p-vwxyz", Value::Null)),
                warn(
                    "project-scoped secret \"local-p-vwxyz/api\" will overwrite the secret of that \
                     name in 1 namespace: team-b",
                ),
            ),
            Case::new(
                "an ignored namespace is not overwritten",
                create(original_json(
                    "api",
                    "p-vwxyz",
                    json!({keys::IGNORE_NAMESPACES_ANNOTATION: "team-.*"}),
                )),
                Allow,
            ),
            Case::new(
                "refused under the deny policy",
                create(original_json("api", "p-vwxyz", Value::Null)),
                deny(
                    403,
                    format!("{}=\"true\"", keys::ALLOW_OVERWRITE_ANNOTATION),
                ),
            )
            .with_cfg(deny_overwrites()),
            Case::new(
                "consent under the deny policy still warns",
                create(original_json("api", "p-vwxyz", consent)),
                warn("will overwrite"),
            )
            .with_cfg(deny_overwrites()),
            Case::new(
                "an update that un-ignores a namespace",
                update(
                    original_json(
                        "db",
                        "p-vwxyz",
                        json!({keys::IGNORE_NAMESPACES_ANNOTATION: "team-a"}),
                    ),
                    original_json("db", "p-vwxyz", Value::Null),
                ),
                Allow,
            ),
        ]);
    }

    #[test]
    fn s2_in_a_downstream_clusters_world_names_the_cluster_of_each_namespace() {
        // The project's namespaces are in its own cluster: team-b there holds a plain `api`.
        let mut own = World::default();
        crate::world::fixtures::namespace_in(&mut own, "team-b", &project_id());
        crate::world::fixtures::add_secret(
            &mut own,
            crate::world::fixtures::secret("team-b", "api", &[], &[]),
        );
        let downstream = World::for_cluster(&world(), &own, &project_id().cluster);
        let decision = crate::policy::validate(
            &admission(create(original_json("api", "p-vwxyz", Value::Null))),
            &downstream,
            &config(),
            &Facts::default(),
        );
        check(
            "the overwrite warning names cluster/namespace",
            &decision,
            &warn(
                "project-scoped secret \"local-p-vwxyz/api\" will overwrite the secret of that \
                 name in 1 namespace: local/team-b",
            ),
        );
    }

    /// A backing namespace of a project served downstream that is also a member of a management
    /// project: what the original's copies do is said from the downstream world, while the names
    /// and copies the management project keeps there are still its own (S1, S5).
    #[test]
    fn a_downstream_projects_backing_namespace_keeps_the_rules_of_its_management_project() {
        let downstream_backing = DOWNSTREAM_BACKING;
        let ServedDownstream {
            management,
            composed,
            ..
        } = served_downstream();
        let both = Worlds {
            here: &management,
            copies: &composed,
            also: None,
        };
        let decide = |req: Value, worlds: Worlds<'_>| {
            super::super::Review::new(super::super::Rules::All, &admission(req), &config())
                .decide(worlds, &Facts::default())
        };

        let delete_copy = delete(copy_json(downstream_backing, "db"));
        check(
            "the management project's copy stays read-only",
            &decide(delete_copy.clone(), both),
            &deny(
                403,
                "is a copy of project-scoped secret \"local-p-vwxyz/db\"",
            ),
        );
        assert!(
            decide(delete_copy, Worlds::from(&composed)).allowed(),
            "the downstream world alone knows no management project (why both are read)"
        );
        check(
            "a name the management project's original reserves there",
            &decide(create(plain(downstream_backing, "cache")), both),
            &deny(
                403,
                "is reserved by project-scoped secret \"local-p-vwxyz/cache\"",
            ),
        );
        let original = secret_json(
            downstream_backing,
            "api",
            json!({keys::PROJECT_SCOPED_LABEL: "p-down"}),
            Value::Null,
        );
        check(
            "what the downstream project's original overwrites is said from its cluster",
            &decide(create(original), both),
            &warn(
                "project-scoped secret \"c-1-p-down/api\" will overwrite the secret of that \
                 name in 1 namespace: c-1/team-d",
            ),
        );
    }

    #[test]
    fn s3_label_placement() {
        let labelled = |ns, value| {
            secret_json(
                ns,
                "x",
                json!({keys::PROJECT_SCOPED_LABEL: value}),
                Value::Null,
            )
        };
        run(vec![
            Case::new(
                "outside every backing namespace",
                create(labelled("other", "p-vwxyz")),
                deny(
                    403,
                    "only allowed on secrets in a project's backing namespace",
                ),
            ),
            Case::new(
                "wrong project",
                create(labelled(BACKING, "p-other")),
                deny(403, "set it to p-vwxyz"),
            ),
            Case::new(
                "still empty at validation",
                create(labelled(BACKING, "")),
                deny(403, "is empty; set it to p-vwxyz"),
            ),
            Case::new("right project", create(labelled(BACKING, "p-vwxyz")), Allow),
            Case::new(
                "a cluster label naming another cluster",
                create(secret_json(
                    BACKING,
                    "x",
                    json!({
                        keys::PROJECT_SCOPED_LABEL: "p-vwxyz",
                        keys::PROJECT_SCOPED_CLUSTER_LABEL: "other-cluster",
                    }),
                    Value::Null,
                )),
                deny(
                    403,
                    format!(
                        "label {} on secret \"x\" is \"other-cluster\", but namespace \
                         \"local-p-vwxyz\" backs project local:p-vwxyz; set it to local or remove it",
                        keys::PROJECT_SCOPED_CLUSTER_LABEL
                    ),
                ),
            ),
            Case::new(
                "added to an existing plain secret",
                update(plain("other", "web"), labelled("other", "p-vwxyz")),
                deny(403, "backing namespace"),
            ),
            Case::new(
                "kept on a stray that grows",
                update(
                    labelled("other", "p-vwxyz"),
                    with_data(labelled("other", "p-vwxyz")),
                ),
                deny(403, "it may not grow while it keeps the label"),
            ),
            Case::new(
                "kept on a stray that does not grow",
                update(
                    with_data(labelled("other", "p-vwxyz")),
                    with_data(labelled("other", "p-vwxyz")),
                ),
                Allow,
            ),
            Case::new(
                "kept on a copy stripped of its markers",
                update(copy_json("dying", "x"), labelled("dying", "p-vwxyz")),
                deny(403, "removing its copy markers while it keeps label"),
            ),
            Case::new(
                "removed from a stray that grows",
                update(labelled("other", "p-vwxyz"), with_data(plain("other", "x"))),
                Allow,
            ),
        ]);
    }

    /// `secret` holding a few bytes more of data.
    fn with_data(mut secret: Value) -> Value {
        secret["data"]["grown"] = json!("dmFsdWU=");
        secret
    }

    #[test]
    fn s4_forged_copies() {
        let forged = secret_json(
            "other",
            "x",
            Value::Null,
            json!({keys::ORIGIN_ANNOTATION: "local-p-vwxyz/db"}),
        );
        let marked = secret_json(
            "other",
            "web",
            Value::Null,
            json!({keys::USER_SECRET_ANNOTATION: "true"}),
        );
        let mut retargeted = copy_json("team-a", "db");
        retargeted["metadata"]["annotations"][keys::ORIGIN_ANNOTATION] = json!("elsewhere/db");
        run(vec![
            Case::new(
                "create with a marker",
                create(forged.clone()),
                deny(
                    403,
                    format!("remove annotation {} from", keys::ORIGIN_ANNOTATION),
                ),
            ),
            Case::new(
                "adding a marker",
                update(plain("other", "web"), marked),
                deny(403, keys::USER_SECRET_ANNOTATION),
            ),
            Case::new(
                "changing a marker",
                update(copy_json("team-a", "db"), retargeted),
                deny(403, keys::ORIGIN_ANNOTATION),
            )
            .with_cfg(Config {
                protect_copies: false,
                ..config()
            }),
            Case::new(
                "the reconciler writes markers",
                as_user(create(forged), RECONCILER),
                Allow,
            ),
        ]);
    }

    #[test]
    fn s5_copies_are_read_only() {
        let mut edited = copy_json("team-a", "db");
        edited["data"] = json!({"password": "c3dvcmRmaXNo"});
        let mut rancher_copy = copy_json("team-a", "db");
        rancher_copy["metadata"]["annotations"] = json!({keys::COPY_ANNOTATION: "true"});
        let message = "secret \"db\" in namespace \"team-a\" is a copy of project-scoped secret \
                       \"local-p-vwxyz/db\"; change the original instead";
        run(vec![
            Case::new(
                "update",
                update(copy_json("team-a", "db"), edited.clone()),
                deny(403, message),
            ),
            Case::new(
                "delete",
                delete(copy_json("team-a", "db")),
                deny(403, message),
            ),
            Case::new(
                "a Rancher copy names its origin through the project",
                delete(rancher_copy),
                deny(403, "copy of project-scoped secret \"local-p-vwxyz/db\""),
            ),
            Case::new(
                "terminating namespace",
                delete(copy_json("dying", "db")),
                Allow,
            ),
            Case::new(
                "protect-copies=false warns",
                update(copy_json("team-a", "db"), edited),
                warn("change the original instead"),
            )
            .with_cfg(Config {
                protect_copies: false,
                ..config()
            }),
            Case::new(
                "the reconciler maintains copies",
                as_user(delete(copy_json("team-a", "db")), RECONCILER),
                Allow,
            ),
            Case::new(
                "plain secrets are not copies",
                delete(plain("other", "web")),
                Allow,
            ),
            Case::new(
                "a copy whose original is gone may be deleted",
                delete(copy_json("team-a", "gone")),
                Allow,
            ),
            Case::new(
                "a copy left in a namespace outside the project may be deleted",
                delete(copy_json("other", "db")),
                Allow,
            ),
            Case::new(
                "but not changed",
                update(copy_json("other", "db"), copy_json("other", "db")),
                deny(
                    403,
                    "is a copy of project-scoped secret \"local-p-vwxyz/db\"",
                ),
            ),
        ]);
    }

    #[test]
    fn s5_a_rancher_copy_is_read_as_a_copy_of_its_own_namespaces_project() {
        // Project names are unique within a cluster only: a namesake in another cluster, sorted
        // first, without an original `db`, must not make the copy in team-a look unwanted.
        let mut world = world();
        crate::world::fixtures::project(&mut world, "c-1", "p-vwxyz", "c-1-p-vwxyz");
        crate::world::fixtures::namespace_in(
            &mut world,
            "c-1-team",
            &keys::ProjectId::new("c-1", "p-vwxyz"),
        );
        let mut rancher_copy = copy_json("team-a", "db");
        rancher_copy["metadata"]["annotations"] = json!({keys::COPY_ANNOTATION: "true"});
        let decision = super::super::validate(
            &admission(delete(rancher_copy)),
            &world,
            &config(),
            &Facts::default(),
        );
        check(
            "a wanted Rancher copy with a namesake project elsewhere",
            &decision,
            &deny(403, "copy of project-scoped secret \"local-p-vwxyz/db\""),
        );
    }

    #[test]
    fn s6_what_can_be_scoped() {
        let unreadable = |name: &str| {
            original_json(
                name,
                "p-vwxyz",
                json!({keys::IGNORE_NAMESPACES_ANNOTATION: "team-("}),
            )
        };
        let mut token = original_json("tok", "p-vwxyz", Value::Null);
        token["type"] = json!("kubernetes.io/service-account-token");
        // Copies add the cluster label to the original's labels, and four markers (the origin uid
        // among them, empty while admission has no uid) and `replaced` to its annotations.
        let crowded = |labels: usize, annotations: usize| {
            let mut original = original_json("crowded", "p-vwxyz", Value::Null);
            let metadata = &mut original["metadata"];
            for i in 1..labels {
                metadata["labels"][format!("l{i}")] = json!("");
            }
            for i in 0..annotations {
                metadata["annotations"][format!("a{i}")] = json!("");
            }
            original
        };
        let most = keys::MAX_METADATA_ENTRIES;
        run(vec![
            Case::new(
                "service-account token",
                create(token),
                deny(403, "cannot be project-scoped"),
            ),
            Case::new(
                "copies at the decoder's limit",
                create(crowded(most - 1, most - keys::COPY_MARKERS.len() - 1)),
                Allow,
            ),
            Case::new(
                "copies with a label too many",
                create(crowded(most, 0)),
                deny(403, "its copies would carry 1025 labels"),
            ),
            Case::new(
                "copies with an annotation too many",
                create(crowded(1, most - keys::COPY_MARKERS.len())),
                deny(403, "its copies would carry 1025 annotations"),
            ),
            Case::new(
                "invalid ignore pattern",
                create(original_json(
                    "new",
                    "p-vwxyz",
                    json!({keys::IGNORE_NAMESPACES_ANNOTATION: "team-("}),
                )),
                deny(403, "entry \"team-(\" is not a valid pattern"),
            ),
            Case::new(
                "an update that leaves an unreadable list as it was",
                update(unreadable("db"), {
                    let mut renewed = unreadable("db");
                    renewed["metadata"]["annotations"]["renewed"] = json!("now");
                    renewed
                }),
                warn(
                    "the ignore-namespaces list cannot be read, so no copy of this secret is written",
                ),
            ),
            Case::new(
                "an update that makes a list unreadable",
                update(
                    original_json("db", "p-vwxyz", Value::Null),
                    unreadable("db"),
                ),
                deny(403, "entry \"team-(\" is not a valid pattern"),
            ),
            Case::new(
                "labelling a secret whose list cannot be read",
                update(
                    secret_json(
                        BACKING,
                        "db",
                        Value::Null,
                        json!({keys::IGNORE_NAMESPACES_ANNOTATION: "team-("}),
                    ),
                    unreadable("db"),
                ),
                deny(403, "entry \"team-(\" is not a valid pattern"),
            ),
        ]);
    }

    #[test]
    fn s8_a_projects_originals_take_at_most_the_limit_together() {
        // Sizes as the index holds a secret: the rule's count of a review's object must agree.
        let held = |json: &Value| {
            crate::scoped::held_bytes(&serde_json::from_value(json.clone()).expect("a Secret"))
        };
        let world = world();
        let project = project_id();
        let held_by = |skip: &str| {
            world
                .originals_of(&project)
                .filter(|o| o.name() != skip)
                .map(|o| crate::scoped::held_bytes(o.secret))
                .sum::<u64>()
        };
        let limit = |bytes: u64| Config {
            max_project_original_bytes: bytes,
            ..config()
        };
        let data_of = |name: &str, data: Value| {
            let mut original = original_json(name, "p-vwxyz", Value::Null);
            original["data"] = data;
            original
        };
        let fresh = original_json("fresh", "p-vwxyz", Value::Null);
        let at_fresh = held_by("") + held(&fresh);
        let dog = data_of("db", json!({"password": "ZG9n"}));
        let hunter = original_json("db", "p-vwxyz", Value::Null);
        let at_hunter = held_by("db") + held(&hunter);
        let noted = original_json("db", "p-vwxyz", json!({"note": "x"}));
        let mut unlabelled = plain(BACKING, "loose");
        unlabelled["metadata"]["labels"] = Value::Null;
        let loose = original_json("loose", "p-vwxyz", Value::Null);
        // A hundred empty keys: no data, yet a hundred entries in the index.
        let keys: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("k{i}"), json!(""))).collect();
        let tiny = data_of("tiny", Value::Object(keys));
        let mut written = data_of("notes", json!({}));
        written["stringData"] = json!({"a": "12345"});
        run(vec![
            Case::new("at the limit", create(fresh.clone()), Allow).with_cfg(limit(at_fresh)),
            Case::new(
                "a byte past it",
                create(fresh.clone()),
                deny(
                    403,
                    format!(
                        "secret \"fresh\" in namespace \"local-p-vwxyz\" cannot be \
                         project-scoped: the originals of project local:p-vwxyz would take \
                         {at_fresh} bytes together (this one {}: data and metadata, 96 bytes an \
                         entry besides), more than the {} bytes --max-project-original-bytes \
                         allows (every original is held whole in the webhook's memory); make it \
                         smaller or remove another original of the project",
                        held(&fresh),
                        at_fresh - 1
                    ),
                ),
            )
            .with_cfg(limit(at_fresh - 1)),
            Case::new(
                "an original that grows counts once",
                update(dog.clone(), hunter.clone()),
                Allow,
            )
            .with_cfg(limit(at_hunter)),
            Case::new(
                "an original that grows past it",
                update(dog.clone(), hunter.clone()),
                deny(403, format!("would take {at_hunter} bytes together")),
            )
            .with_cfg(limit(at_hunter - 1)),
            Case::new(
                "past it, shrinking",
                update(hunter.clone(), dog.clone()),
                Allow,
            )
            .with_cfg(limit(1)),
            Case::new(
                "past it, unchanged",
                update(hunter.clone(), hunter.clone()),
                Allow,
            )
            .with_cfg(limit(1)),
            Case::new(
                "past it, gaining an annotation",
                update(hunter.clone(), noted.clone()),
                deny(403, format!("(this one {}:", held(&noted))),
            )
            .with_cfg(limit(1)),
            Case::new(
                "a secret becoming an original counts whole",
                update(unlabelled, loose.clone()),
                deny(403, format!("(this one {}:", held(&loose))),
            )
            .with_cfg(limit(held_by("") + held(&loose) - 1)),
            Case::new(
                "empty keys count as entries",
                create(tiny.clone()),
                deny(403, format!("(this one {}:", held(&tiny))),
            )
            .with_cfg(limit(held_by("") + 100 * crate::scoped::ENTRY_BYTES)),
            Case::new(
                "stringData counts as written",
                create(written.clone()),
                deny(403, format!("(this one {}:", held(&written))),
            )
            .with_cfg(limit(held_by("") + held(&written) - 1)),
            Case::new("not an original", create(plain("other", "big")), Allow).with_cfg(limit(0)),
        ]);
    }

    #[test]
    fn s7_removals_are_announced() {
        let db = || original_json("db", "p-vwxyz", Value::Null);
        run(vec![
            Case::new(
                "deleting an original",
                delete(db()),
                warn(
                    "1 copy of project-scoped secret \"local-p-vwxyz/db\" will be removed from: team-a",
                ),
            ),
            Case::new(
                "removing its label",
                update(db(), secret_json(BACKING, "db", Value::Null, Value::Null)),
                warn("1 copy of project-scoped secret"),
            ),
            Case::new(
                "narrowing its ignore list",
                update(
                    db(),
                    original_json(
                        "db",
                        "p-vwxyz",
                        json!({keys::IGNORE_NAMESPACES_ANNOTATION: "team-a"}),
                    ),
                ),
                warn("will be removed from: team-a"),
            ),
            Case::new("an unchanged update", update(db(), db()), Allow),
        ]);
    }

    #[test]
    fn a_held_back_originals_copies_are_kept_like_wanted_ones() {
        // An ignore list that cannot be read, written past the webhook: the plan neither writes
        // nor removes `db`'s copies (it cannot know which namespaces the list excludes), so S5
        // protects them and S7 counts them as it would a wanted copy.
        let unreadable = json!({keys::IGNORE_NAMESPACES_ANNOTATION: "team-("});
        let held = original_json("db", "p-vwxyz", unreadable);
        let mut world = world();
        crate::world::fixtures::add_secret(
            &mut world,
            serde_json::from_value(held.clone()).expect("a Secret"),
        );
        let cases = [
            (
                "deleting its copy",
                delete(copy_json("team-a", "db")),
                deny(
                    403,
                    "secret \"db\" in namespace \"team-a\" is a copy of project-scoped secret \
                     \"local-p-vwxyz/db\"; change the original instead",
                ),
            ),
            (
                "deleting it",
                delete(held),
                warn(
                    "1 copy of project-scoped secret \"local-p-vwxyz/db\" will be removed from: team-a",
                ),
            ),
        ];
        for (name, req, expected) in cases {
            let decision =
                super::super::validate(&admission(req), &world, &config(), &Facts::default());
            check(name, &decision, &expected);
        }
    }

    #[test]
    fn audit_mode_turns_denials_into_warnings() {
        let audit = Config {
            mode: Mode::Audit,
            ..config()
        };
        run(vec![
            Case::new(
                "would deny",
                delete(copy_json("team-a", "db")),
                warn("would deny: secret \"db\" in namespace \"team-a\" is a copy"),
            )
            .with_cfg(audit.clone()),
            Case::new(
                "long denials are cut to a warning",
                create(plain("other", "web")),
                warn("would deny: a secret named \"web\" already exists"),
            )
            .with_cfg(audit),
        ]);
    }

    #[test]
    fn malformed_objects_are_bad_requests() {
        let mut bad = plain("other", "x");
        bad["data"] = json!("not a map");
        let mut no_object = create(plain("other", "x"));
        no_object["object"] = Value::Null;
        run(vec![
            Case::new(
                "data is not a map",
                create(bad),
                deny(400, "object is not a valid Secret"),
            ),
            Case::new("no object", no_object, deny(400, "has no object")),
        ]);
    }
}
