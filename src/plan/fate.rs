//! One original and one namespace: whether a copy is wanted there, and what making it exact takes.
//! Every reader asks here: [`super::actions`] for the reconciler and `plan`, the webhook for S1, S2,
//! S5, S7 and N3. Nothing else decides which copies exist.

use super::copy::copy_fits;
use super::{ConflictReason, IgnoreList, OverwritePolicy, Settings, consents_to_overwrite};
use crate::keys;
use crate::world::{CopyMeta, Original, Scoped, World};

/// Whether a service-account token: never copied (S6; the webhook refuses one, and one written
/// while the webhook was down must not spread a token).
fn is_copyable(original: &Original<'_>) -> bool {
    original.secret.type_.as_deref() != Some(keys::SERVICE_ACCOUNT_TOKEN_TYPE)
}

/// Whether `original` wants a copy in `namespace`, a namespace of its project in the given state:
/// one it [`reaches`], not ignored, and no reason to hold its copies back ([`held_back`]). Also
/// answers "what if this namespace joined" for the webhook.
pub fn wants_copy(
    original: &Original<'_>,
    ignore: &IgnoreList,
    namespace: &str,
    terminating: bool,
    settings: &Settings,
) -> bool {
    reaches(original, namespace, terminating, settings)
        && !ignore.matches(namespace)
        && copy_fits(original)
}

/// Whether `original` could have a copy in `namespace`, a namespace of its project in the given
/// state, whatever its ignore list says: not the backing namespace itself, not terminating, not
/// protected, and never a service-account token.
pub fn reaches(
    original: &Original<'_>,
    namespace: &str,
    terminating: bool,
    settings: &Settings,
) -> bool {
    is_copyable(original)
        && namespace != original.namespace()
        && !terminating
        && !settings.protected.contains(namespace)
}

/// Why no copy of `original` is written anywhere while its copies that exist are kept as they
/// are: its ignore list cannot be read (which namespaces it excludes is unknown), or its copies
/// would carry more labels or annotations than the webhook reads (written, they could never be
/// reviewed again). Both come only past the webhook, which refuses them (S6).
pub fn held_back(original: &Original<'_>, ignore: &IgnoreList) -> Option<ConflictReason> {
    if ignore.is_unreadable() {
        Some(ConflictReason::UnreadableIgnoreList)
    } else if !copy_fits(original) {
        Some(ConflictReason::CopyMetadataTooLarge)
    } else {
        None
    }
}

/// The namespaces of the original's project that want a copy of it, sorted by name.
pub fn wanted_namespaces<'w>(
    world: &'w World,
    original: Original<'w>,
    settings: &'w Settings,
) -> impl Iterator<Item = &'w str> + 'w {
    namespaces_where(world, original, settings, wants_copy)
}

/// Whether `namespace` is one of [`wanted_namespaces`] (one look-up, not a walk of every namespace).
pub fn wanted_in(
    world: &World,
    original: &Original<'_>,
    namespace: &str,
    settings: &Settings,
) -> bool {
    is_one_where(world, original, namespace, settings, wants_copy)
}

/// [`wants_copy`] or [`keeps_copy`]: one original, one namespace of its project in a state.
type CopyTest = fn(&Original<'_>, &IgnoreList, &str, bool, &Settings) -> bool;

/// The namespaces of the original's project that pass `test`, sorted by name.
fn namespaces_where<'w>(
    world: &'w World,
    original: Original<'w>,
    settings: &'w Settings,
    test: CopyTest,
) -> impl Iterator<Item = &'w str> + 'w {
    let ignore = IgnoreList::of(&original.secret.metadata);
    world
        .project_namespaces(original.project)
        .filter(move |m| test(&original, &ignore, m.name, m.terminating, settings))
        .map(|m| m.name)
}

/// Whether `namespace` is one of [`namespaces_where`] `test` holds.
fn is_one_where(
    world: &World,
    original: &Original<'_>,
    namespace: &str,
    settings: &Settings,
    test: CopyTest,
) -> bool {
    world.namespace(namespace).is_some_and(|state| {
        world.is_member_of(state, original.project)
            && test(
                original,
                &IgnoreList::of(&original.secret.metadata),
                namespace,
                state.terminating,
                settings,
            )
    })
}

/// Whether a copy of `original` that is in `namespace`, a namespace of its project in the given
/// state, stays there: it is wanted, or the original is [`held_back`] and reaches it (the plan
/// keeps such copies as they are until the original is fixed).
pub fn keeps_copy(
    original: &Original<'_>,
    ignore: &IgnoreList,
    namespace: &str,
    terminating: bool,
    settings: &Settings,
) -> bool {
    if held_back(original, ignore).is_some() {
        return reaches(original, namespace, terminating, settings);
    }
    wants_copy(original, ignore, namespace, terminating, settings)
}

/// The namespaces of the original's project where a copy of it stays ([`keeps_copy`]): what is
/// removed when it goes, and what S5 protects. The same as [`wanted_namespaces`] unless the
/// original is held back.
pub fn kept_namespaces<'w>(
    world: &'w World,
    original: Original<'w>,
    settings: &'w Settings,
) -> impl Iterator<Item = &'w str> + 'w {
    namespaces_where(world, original, settings, keeps_copy)
}

/// Whether `namespace` is one of [`kept_namespaces`] (one look-up).
pub fn kept_in(
    world: &World,
    original: &Original<'_>,
    namespace: &str,
    settings: &Settings,
) -> bool {
    is_one_where(world, original, namespace, settings, keeps_copy)
}

/// What making `original`'s copy in `namespace` exact takes, given what holds its name there now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate<'w> {
    /// No secret holds the name: the copy is created.
    Create,
    /// A labelled copy holds the name: it is kept exact (see [`super::drift`]).
    Copy(&'w CopyMeta),
    /// A copy whose label was removed holds the name. Marked as a copy, it holds nobody's data, so
    /// it is replaced without consent (the name index has no full object to compare).
    StrayCopy { uid: &'w str },
    /// A secret that is not a copy holds the name, and the policy or the original's consent lets
    /// the copy replace it: that secret is lost. `label`: the project-scoped label it carries (a
    /// labelled secret that is not an original), if any.
    Overwrite {
        uid: &'w str,
        label: Option<&'w str>,
    },
    /// The copy cannot be written.
    Conflict(ConflictReason),
}

/// The fate of `original`'s copy in `namespace` under `policy`.
pub fn fate<'w>(
    world: &'w World,
    original: &Original<'_>,
    namespace: &str,
    policy: OverwritePolicy,
) -> Fate<'w> {
    let name = original.name();
    match world.scoped(namespace, name) {
        Some(Scoped::Copy(copy)) => return Fate::Copy(copy),
        Some(Scoped::Whole(existing)) => {
            if world.as_original(existing).is_some() {
                return Fate::Conflict(ConflictReason::HeldByOriginal);
            }
            let uid = existing.metadata.uid.as_deref().unwrap_or_default();
            let label = crate::world::label(&existing.metadata, keys::PROJECT_SCOPED_LABEL);
            return overwrite_or_conflict(original, uid, label, policy);
        }
        None => {}
    }
    match world.secret_meta(namespace, name) {
        None => Fate::Create,
        Some(existing) if existing.is_copy() => Fate::StrayCopy { uid: &existing.uid },
        Some(existing) => overwrite_or_conflict(original, &existing.uid, None, policy),
    }
}

fn overwrite_or_conflict<'w>(
    original: &Original<'_>,
    uid: &'w str,
    label: Option<&'w str>,
    policy: OverwritePolicy,
) -> Fate<'w> {
    if policy == OverwritePolicy::Warn || consents_to_overwrite(&original.secret.metadata) {
        Fate::Overwrite { uid, label }
    } else {
        Fate::Conflict(ConflictReason::NoConsent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProtectedNamespaces;
    use crate::world::NamespaceState;
    use crate::world::fixtures::*;

    fn settings() -> Settings {
        Settings::default()
    }

    #[test]
    fn copies_are_wanted_outside_backing_terminating_ignored_and_protected_namespaces() {
        let mut world = World::default();
        let p = project(&mut world, "local", "p-vwxyz", "local-p-vwxyz");
        for ns in [
            "team-a",
            "team-b",
            "skip-me",
            "dying",
            "kube-system",
            "guarded",
        ] {
            namespace_in(&mut world, ns, &p);
        }
        edit_namespace(&mut world, "dying", |dying| dying.terminating = true);
        world.upsert_namespace(
            "label-only".to_owned(),
            NamespaceState {
                project_label: Some("p-vwxyz".to_owned()),
                ..NamespaceState::default()
            },
        );
        add_secret(
            &mut world,
            secret(
                "local-p-vwxyz",
                "db",
                &[(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")],
                &[(keys::IGNORE_NAMESPACES_ANNOTATION, "skip-.*")],
            ),
        );
        let settings = Settings {
            protected: ProtectedNamespaces::new(&["kube-system"], "guarded"),
            ..settings()
        };
        let original = world.originals().next().expect("one original");
        let got: Vec<_> = wanted_namespaces(&world, original, &settings).collect();
        assert_eq!(got, ["team-a", "team-b"]);
    }

    #[test]
    fn service_account_tokens_are_wanted_nowhere() {
        let mut world = World::default();
        let p = project(&mut world, "local", "p-vwxyz", "local-p-vwxyz");
        namespace_in(&mut world, "team-a", &p);
        let mut token = secret(
            "local-p-vwxyz",
            "sa",
            &[(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")],
            &[],
        );
        token.type_ = Some(keys::SERVICE_ACCOUNT_TOKEN_TYPE.to_owned());
        add_secret(&mut world, token);
        let settings = settings();
        let original = world.originals().next().expect("one original");
        assert_eq!(wanted_namespaces(&world, original, &settings).count(), 0);
    }

    #[test]
    fn fate_table() {
        let mut world = World::default();
        let p = project(&mut world, "local", "p-vwxyz", "local-p-vwxyz");
        let q = project(&mut world, "local", "p-other", "local-p-other");
        let label = [(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")];
        add_secret(&mut world, secret("local-p-vwxyz", "db", &label, &[]));
        let marker = [(keys::COPY_ANNOTATION, keys::TRUE)];
        add_secret(&mut world, secret("has-copy", "db", &label, &marker));
        add_secret(&mut world, secret("has-plain", "db", &[], &[]));
        add_secret(&mut world, secret("has-stray", "db", &[], &marker));
        let other = [(keys::PROJECT_SCOPED_LABEL, q.project.as_str())];
        add_secret(&mut world, secret("local-p-other", "db", &other, &[]));
        namespace_in(&mut world, "local-p-other", &p);
        let original = world.originals().find(|o| o.project == &p).expect("ours");
        let of = |ns: &str, policy| fate(&world, &original, ns, policy);
        use OverwritePolicy::{Deny, Warn};
        assert_eq!(of("empty", Warn), Fate::Create);
        assert!(matches!(of("has-copy", Deny), Fate::Copy(_)));
        assert_eq!(
            of("has-stray", Deny),
            Fate::StrayCopy {
                uid: "uid-has-stray-db"
            }
        );
        assert_eq!(
            of("has-plain", Warn),
            Fate::Overwrite {
                uid: "uid-has-plain-db",
                label: None,
            }
        );
        assert_eq!(
            of("has-plain", Deny),
            Fate::Conflict(ConflictReason::NoConsent)
        );
        assert_eq!(
            of("local-p-other", Warn),
            Fate::Conflict(ConflictReason::HeldByOriginal)
        );
    }
}
