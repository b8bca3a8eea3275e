//! The copy diff: which copies the world wants, what makes each exact, and which copies nobody
//! wants any more. One pure diff, executed by the reconciler and printed by the `plan` command.
//!
//! Which copies are ours to delete: a copy carrying our origin annotation (we wrote it, or adopted
//! it), or a Rancher copy (marker, no origin) whose label names a project we know, so that the
//! decision is an informed one. A Rancher copy naming an unknown project is left alone: with the
//! Project CRD missing or unreadable, deleting it would wipe out copies nobody asked us to manage.

use super::copy::{Drift, copy_of, drift_of};
use super::fate::{Fate, fate, held_back, keeps_copy, wants_copy};
use super::repairs::label_repairs;
use super::{Action, ConflictReason, IgnoreList, PlacedCopy, Settings};
use crate::keys;
use crate::scoped::{self, Digest, Shape};
use crate::world::{self, Member, Original, World};
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use std::cell::OnceCell;
use std::collections::HashSet;
use std::sync::Arc;

/// Whether an original consents to overwriting non-copy secrets under `--overwrite-policy=deny`.
pub fn consents_to_overwrite(meta: &ObjectMeta) -> bool {
    world::annotation(meta, keys::ALLOW_OVERWRITE_ANNOTATION) == Some(keys::TRUE)
}

/// Every copy write, copy removal, conflict and label repair the world needs; empty when converged.
/// Label repairs come first, then copy writes by original, then deletions.
///
/// Which copies are wanted and what each takes come from [`super::fate`], as for the webhook; here
/// for the whole world at once. Each original walks its project's namespaces only
/// ([`World::project_namespaces`]).
pub fn actions(world: &World, settings: &Settings) -> Vec<Action> {
    let mut out = label_repairs(world);
    let mut wanted: HashSet<(&str, &str)> = HashSet::new();
    for original in world.originals() {
        let namespaces = world.project_namespaces(original.project);
        let ignore = IgnoreList::of(&original.secret.metadata);
        let name = original.secret.metadata.name.as_deref().unwrap_or_default();
        if let Some(reason) = held_back(&original, &ignore) {
            out.extend(held_back_copies(
                world,
                &original,
                &ignore,
                namespaces,
                settings,
                reason,
                &mut wanted,
            ));
            continue;
        }
        // Every copy of an original is the same but for its namespace: build it (and digest it)
        // once.
        let mut template = None;
        for Member {
            name: namespace,
            terminating,
        } in namespaces
        {
            if wants_copy(&original, &ignore, namespace, terminating, settings)
                && wanted.insert((namespace, name))
            {
                let template = template.get_or_insert_with(|| Template::of(&original));
                out.extend(copy_action(world, &original, template, namespace, settings));
            }
        }
    }
    out.extend(removals(world, &wanted));
    out
}

/// An original whose copies are held back ([`held_back`]): nothing is written where it could
/// reach, and its copies there stay as they are until it is fixed; a Conflict in each such
/// namespace says why. What else holds its name there is planned as if it wanted no copy (a copy
/// of another original goes).
fn held_back_copies<'w>(
    world: &'w World,
    original: &Original<'w>,
    ignore: &IgnoreList,
    namespaces: impl Iterator<Item = Member<'w>>,
    settings: &Settings,
    reason: ConflictReason,
    wanted: &mut HashSet<(&'w str, &'w str)>,
) -> Vec<Action> {
    let name = original.name();
    let origin = keys::origin_value(original.namespace(), name);
    let its_copy = |namespace: &str| {
        world
            .scoped(namespace, name)
            .and_then(|secret| secret.copy())
            .is_some_and(|copy| copy.origin.as_deref() == Some(origin.as_str()))
    };
    namespaces
        // Where it keeps its copies (as the webhook's S5 and S7 ask it): where it reaches.
        .filter(|m| keeps_copy(original, ignore, m.name, m.terminating, settings))
        .map(
            |Member {
                 name: namespace, ..
             }| {
                if its_copy(namespace) {
                    wanted.insert((namespace, name));
                }
                conflict(original, namespace, reason)
            },
        )
        .collect()
}

/// An original's copy, placed nowhere yet, with the digests a stored copy is compared by; and the
/// same for a copy that replaced its namespace's own secret (it says so, see REPLACED_ANNOTATION),
/// made when first needed.
struct Template {
    copy: Arc<Secret>,
    metadata: Digest,
    data: Digest,
    replacing: OnceCell<(Arc<Secret>, Digest)>,
}

impl Template {
    fn of(original: &Original<'_>) -> Self {
        let copy = copy_of(original, "");
        Self {
            metadata: scoped::metadata_digest(&copy),
            data: scoped::data_digest(copy.data.as_ref()),
            copy: Arc::new(copy),
            replacing: OnceCell::new(),
        }
    }

    /// The copy marked as having replaced a secret, and its metadata digest.
    fn replacing(&self) -> &(Arc<Secret>, Digest) {
        self.replacing.get_or_init(|| {
            let mut copy = (*self.copy).clone();
            copy.metadata
                .annotations
                .get_or_insert_default()
                .insert(keys::REPLACED_ANNOTATION.to_owned(), keys::TRUE.to_owned());
            let digest = scoped::metadata_digest(&copy);
            (Arc::new(copy), digest)
        })
    }

    /// What the copy should be, as a stored copy is compared.
    fn shape(&self, replaced: bool) -> Shape<'_> {
        let mut shape = Shape::of_secret_with(&self.copy, self.metadata, self.data);
        if replaced {
            shape.metadata = self.replacing().1;
        }
        shape
    }
}

/// The write that makes `namespace`'s copy of `original` (`template`, placed there) exact, if any.
fn copy_action(
    world: &World,
    original: &Original<'_>,
    template: &Template,
    namespace: &str,
    settings: &Settings,
) -> Option<Action> {
    let placed = |copy: &Arc<Secret>| PlacedCopy::new(namespace, copy.clone());
    // A copy that replaced the namespace's own secret keeps saying so (see REPLACED_ANNOTATION).
    let copy = || placed(&template.copy);
    let replacing = || placed(&template.replacing().0);
    match fate(world, original, namespace, settings.overwrite_policy) {
        Fate::Create => Some(Action::Create { copy: copy() }),
        Fate::Copy(existing) => {
            let exact = || {
                if existing.replaced {
                    replacing()
                } else {
                    copy()
                }
            };
            let wanted = template.shape(existing.replaced);
            match drift_of(&Shape::of_copy(existing), &wanted) {
                Drift::None => None,
                Drift::Changed => Some(Action::Update {
                    copy: exact(),
                    resource_version: existing.resource_version.clone(),
                }),
                Drift::Replace => Some(Action::Recreate {
                    copy: exact(),
                    existing_uid: existing.uid.clone(),
                }),
            }
        }
        Fate::StrayCopy { uid } => Some(Action::Overwrite {
            copy: copy(),
            existing_uid: uid.to_owned(),
            label: None,
        }),
        Fate::Overwrite { uid, label } => Some(Action::Overwrite {
            copy: replacing(),
            existing_uid: uid.to_owned(),
            label: label.map(str::to_owned),
        }),
        Fate::Conflict(reason) => Some(conflict(original, namespace, reason)),
    }
}

fn conflict(original: &Original<'_>, namespace: &str, reason: ConflictReason) -> Action {
    Action::Conflict {
        namespace: namespace.to_owned(),
        name: original.name().to_owned(),
        origin: keys::origin_value(original.namespace(), original.name()),
        reason,
    }
}

/// Copies no original wants in their namespace any more (see the module docs for which are ours).
///
/// Only copies whose project is known are ever removed: while the Project CRD is not served, or for
/// an origin outside every known backing namespace, nothing is deleted. A missing CRD, a re-installed
/// one, or a projects watch that briefly lists nothing must never wipe out copies that are still wanted.
/// The one exception is a project whose deletion a fresh read has proven (revocation): its backing
/// namespace still counts as known, so the copies of its originals go.
fn removals(world: &World, wanted: &HashSet<(&str, &str)>) -> Vec<Action> {
    if !world.projects_installed {
        return Vec::new();
    }
    let is_wanted = |ns: &str, name: &str| wanted.contains(&(ns, name));
    let origin_known = |origin: &str| {
        keys::parse_origin(origin).is_some_and(|(ns, _)| {
            world.backing_project(ns).is_some() || world.is_deleted_backing_namespace(ns)
        })
    };
    // Only projects owning their backing namespace: one whose namespace another project also
    // claims has no originals recognised, and its copies must not go for that.
    let known_projects: HashSet<&str> = world
        .backed_projects()
        .map(|id| id.project.as_str())
        .collect();
    let mut out: Vec<Action> = world
        .copies()
        .filter_map(|(ns, name, copy)| {
            let ours = match copy.origin.as_deref() {
                Some(origin) => origin_known(origin),
                None => {
                    let project = copy.project_label.as_str();
                    known_projects.contains(project) || world.is_deleted_project_name(project)
                }
            };
            (ours && !is_wanted(ns, name)).then(|| Action::Delete {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                uid: copy.uid.clone(),
                origin: copy.origin.clone(),
            })
        })
        .collect();
    // Copies whose label was removed are only in the name index; ours carry an origin there.
    let mut unlabelled: Vec<Action> = world
        .secret_metas()
        .filter(|(ns, name, meta)| {
            meta.copy_of.as_deref().is_some_and(origin_known)
                && world.scoped(ns, name).is_none()
                && !is_wanted(ns, name)
        })
        .map(|(ns, name, meta)| Action::Delete {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            uid: meta.uid.clone(),
            origin: meta.copy_of.clone(),
        })
        .collect();
    unlabelled.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    out.extend(unlabelled);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::*;
    // The plan under a policy, as every table here reads it (not the settings-taking original).
    use crate::plan::OverwritePolicy;
    use crate::plan::fixtures::actions;
    use crate::world::NamespaceState;
    use crate::world::fixtures::*;
    use k8s_openapi::ByteString;

    /// The original, written past the webhook with `extra` labels besides its own two: its copies
    /// would carry `extra + 2`.
    fn many_labels(world: &mut World, extra: usize) {
        let mut original = secret(BACKING, "db", &original_labels(), &[]);
        let labels = original.metadata.labels.get_or_insert_default();
        labels.extend((0..extra).map(|i| (format!("example.com/l{i}"), String::new())));
        add_secret(world, original);
    }

    #[test]
    fn copy_actions_table() {
        let cases: Vec<(&str, Setup, OverwritePolicy, Vec<&str>)> = vec![
            ("steady state writes nothing", |_| {}, WARN, vec![]),
            (
                "missing copies are created",
                |w| *w = base(),
                WARN,
                vec![
                    "create team-a/db (origin local-p-vwxyz/db)",
                    "create team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "changed data is updated",
                |w| edit_copy(w, "team-a", |c| c.data = None),
                WARN,
                vec!["update team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "an extra label is removed",
                |w| {
                    edit_copy(w, "team-b", |c| {
                        c.metadata
                            .labels
                            .get_or_insert_default()
                            .insert("x".to_owned(), "y".to_owned());
                    })
                },
                WARN,
                vec!["update team-b/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a type change is recreated",
                |w| edit_copy(w, "team-a", |c| c.type_ = Some(keys::TLS_TYPE.to_owned())),
                WARN,
                vec!["recreate team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a non-copy is overwritten under warn",
                |w| {
                    w.remove_scoped("team-a", "db");
                    plain(w, "team-a");
                },
                WARN,
                vec!["overwrite team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a non-copy is a conflict under deny",
                |w| {
                    w.remove_scoped("team-a", "db");
                    plain(w, "team-a");
                },
                DENY,
                vec!["conflict team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "consent allows the overwrite under deny",
                |w| {
                    let mut original = secret(BACKING, "db", &original_labels(), &[]);
                    original.metadata.annotations = Some(
                        [(
                            keys::ALLOW_OVERWRITE_ANNOTATION.to_owned(),
                            keys::TRUE.to_owned(),
                        )]
                        .into(),
                    );
                    add_secret(w, original);
                    put_copy(w, "team-b");
                    w.remove_scoped("team-a", "db");
                    plain(w, "team-a");
                },
                DENY,
                vec!["overwrite team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a labelled stray non-copy is overwritten under warn",
                |w| add_secret(w, secret("team-a", "db", &original_labels(), &[])),
                WARN,
                vec!["overwrite team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a copy that lost its label is replaced without consent",
                |w| {
                    let copy = stored_copy(w, "team-a");
                    w.remove_scoped("team-a", "db");
                    w.upsert_secret_meta(
                        "team-a",
                        "db",
                        crate::world::SecretMeta::from_meta(&copy.metadata),
                    );
                },
                DENY,
                vec!["overwrite team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "an original of another project is never overwritten",
                |w| {
                    project(w, "local", "p-other", "team-a");
                    let labels = [
                        (keys::PROJECT_SCOPED_LABEL, "p-other"),
                        (keys::PROJECT_SCOPED_CLUSTER_LABEL, "local"),
                    ];
                    add_secret(w, secret("team-a", "db", &labels, &[]));
                    edit_namespace(w, "team-a", |ns| {
                        ns.project_annotation = Some(p().to_string());
                        ns.project_label = Some(p().project);
                    });
                },
                WARN,
                vec!["conflict team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "an original at the webhook's entry cap is copied",
                |w| many_labels(w, keys::MAX_METADATA_ENTRIES - 2),
                WARN,
                vec![
                    "update team-a/db (origin local-p-vwxyz/db)",
                    "update team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "one past it writes nothing and keeps its copies",
                |w| many_labels(w, keys::MAX_METADATA_ENTRIES - 1),
                WARN,
                vec![
                    "conflict team-a/db (origin local-p-vwxyz/db)",
                    "conflict team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
        ];
        for (name, setup, policy, expected) in cases {
            let mut world = converged();
            setup(&mut world);
            assert_eq!(describe(&world, policy), expected, "{name}");
        }
    }

    #[test]
    fn removal_table() {
        let cases: Vec<(&str, Setup, Vec<&str>)> = vec![
            (
                "copies of a deleted original are deleted",
                remove_original,
                vec![
                    "delete team-a/db (origin local-p-vwxyz/db)",
                    "delete team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "an original that lost its label takes its copies with it",
                |w| {
                    w.remove_scoped(BACKING, "db");
                    add_secret(w, secret(BACKING, "db", &[], &[]));
                },
                vec![
                    "delete team-a/db (origin local-p-vwxyz/db)",
                    "delete team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "nothing is deleted while the Project CRD is not served",
                |w| {
                    remove_original(w);
                    w.projects_installed = false;
                },
                vec![],
            ),
            (
                "copies whose origin is in no known backing namespace are left alone",
                |w| w.replace_projects([]),
                vec![],
            ),
            (
                "copies of a project proven deleted are deleted, its originals are not",
                |w| {
                    w.remove_project(&p());
                    w.note_project_deleted(p(), BACKING.to_owned(), String::new());
                    w.confirm_project_deleted(&p());
                },
                vec![
                    "delete team-a/db (origin local-p-vwxyz/db)",
                    "delete team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "a deletion not yet proven by a fresh read deletes nothing",
                |w| {
                    w.remove_project(&p());
                    w.note_project_deleted(p(), BACKING.to_owned(), String::new());
                },
                vec![],
            ),
            (
                "a project re-created before the fresh read keeps its copies",
                |w| {
                    w.remove_project(&p());
                    w.note_project_deleted(p(), BACKING.to_owned(), String::new());
                    w.forget_deleted_project(&p(), "");
                    assert!(!w.confirm_project_deleted(&p()));
                    project(w, "local", "p-vwxyz", BACKING);
                },
                vec![],
            ),
            (
                "a proven deletion removes nothing while the Project CRD is not served",
                |w| {
                    w.remove_project(&p());
                    w.note_project_deleted(p(), BACKING.to_owned(), String::new());
                    w.confirm_project_deleted(&p());
                    w.projects_installed = false;
                },
                vec![],
            ),
            (
                "a Rancher copy of a project proven deleted is deleted",
                |w| {
                    let marker = [(keys::COPY_ANNOTATION, keys::TRUE)];
                    add_secret(w, secret("team-a", "old", &original_labels(), &marker));
                    w.remove_project(&p());
                    w.note_project_deleted(p(), BACKING.to_owned(), String::new());
                    w.confirm_project_deleted(&p());
                },
                vec![
                    "delete team-a/db (origin local-p-vwxyz/db)",
                    "delete team-a/old",
                    "delete team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "a namespace that left the project loses its copy",
                |w| w.upsert_namespace("team-a".to_owned(), NamespaceState::default()),
                vec!["delete team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a namespace whose annotation moved to another project loses its copy",
                |w| {
                    let q = project(w, "local", "p-other", "local-p-other");
                    namespace_in(w, "team-a", &q);
                },
                vec!["delete team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a label alone keeps no copy",
                |w| {
                    w.upsert_namespace(
                        "team-a".to_owned(),
                        NamespaceState {
                            project_label: Some("p-vwxyz".to_owned()),
                            ..NamespaceState::default()
                        },
                    )
                },
                vec![
                    "fix_namespace_label /team-a",
                    "delete team-a/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "an ignored namespace loses its copy",
                |w| {
                    let ignore = [(keys::IGNORE_NAMESPACES_ANNOTATION, "team-a")];
                    add_secret(w, secret(BACKING, "db", &original_labels(), &ignore));
                },
                vec!["delete team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "an unreadable ignore list keeps the copies as they are and writes none",
                |w| {
                    // Stale in team-a, missing in team-b: neither is written, nor team-a's removed.
                    w.remove_scoped("team-b", "db");
                    w.remove_secret_meta("team-b", "db");
                    let ignore = [(keys::IGNORE_NAMESPACES_ANNOTATION, "team-(")];
                    let mut original = secret(BACKING, "db", &original_labels(), &ignore);
                    original.data = None;
                    add_secret(w, original);
                },
                vec![
                    "conflict team-a/db (origin local-p-vwxyz/db)",
                    "conflict team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "a terminating namespace loses its copy",
                |w| {
                    edit_namespace(w, "team-b", |ns| ns.terminating = true);
                },
                vec!["delete team-b/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a service-account token is never copied",
                |w| {
                    let mut token = secret(BACKING, "db", &original_labels(), &[]);
                    token.type_ = Some(keys::SERVICE_ACCOUNT_TOKEN_TYPE.to_owned());
                    add_secret(w, token);
                },
                vec![
                    "delete team-a/db (origin local-p-vwxyz/db)",
                    "delete team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "a Rancher copy of a known project without an original is deleted",
                |w| {
                    let marker = [(keys::COPY_ANNOTATION, keys::TRUE)];
                    add_secret(w, secret("team-a", "old", &original_labels(), &marker));
                },
                vec!["delete team-a/old"],
            ),
            (
                "a Rancher copy of an unknown project is left alone",
                |w| {
                    let marker = [(keys::COPY_ANNOTATION, keys::TRUE)];
                    let label = [(keys::PROJECT_SCOPED_LABEL, "p-unknown")];
                    add_secret(w, secret("team-a", "old", &label, &marker));
                },
                vec![],
            ),
            (
                "an unlabelled copy of ours is deleted",
                |w| {
                    let origin = [(keys::ORIGIN_ANNOTATION, "local-p-vwxyz/gone")];
                    add_secret(w, secret("team-a", "gone", &[], &origin));
                },
                vec!["delete team-a/gone (origin local-p-vwxyz/gone)"],
            ),
            (
                "an unlabelled Rancher copy is left alone",
                |w| {
                    let marker = [(keys::COPY_ANNOTATION, keys::TRUE)];
                    add_secret(w, secret("team-a", "old", &[], &marker));
                },
                vec![],
            ),
        ];
        for (name, setup, expected) in cases {
            let mut world = converged();
            setup(&mut world);
            assert_eq!(describe(&world, WARN), expected, "{name}");
        }
    }

    #[test]
    fn actions_carry_what_the_writes_need() {
        let mut world = converged();
        edit_copy(&mut world, "team-a", |c| {
            c.data = Some([("old".to_owned(), ByteString(vec![1]))].into());
            c.metadata.resource_version = Some("42".to_owned());
        });
        edit_copy(&mut world, "team-b", |c| c.immutable = Some(true));
        let got = actions(&world, WARN);
        let Action::Update {
            copy,
            resource_version,
        } = &got[0]
        else {
            panic!("expected an update, got {got:?}");
        };
        assert_eq!(resource_version, "42");
        assert_eq!(copy.namespace, "team-a");
        assert_eq!(
            copy.secret.data,
            world
                .original_at(BACKING, "db")
                .expect("original")
                .secret
                .data
        );
        assert!(
            matches!(&got[1], Action::Recreate { existing_uid, .. } if existing_uid == "uid-team-b-db")
        );

        remove_original(&mut world);
        let deletes = actions(&world, WARN);
        assert!(deletes.iter().all(|a| matches!(
            a,
            Action::Delete { uid, origin: Some(o), .. } if uid.starts_with("uid-team-") && o == "local-p-vwxyz/db"
        )));

        let mut world = converged();
        world.remove_scoped("team-a", "db");
        plain(&mut world, "team-a");
        let overwrite = actions(&world, WARN);
        let Action::Overwrite {
            existing_uid, copy, ..
        } = &overwrite[0]
        else {
            panic!("expected an overwrite, got {overwrite:?}");
        };
        assert_eq!(existing_uid, "uid-team-a-db");
        // The copy says it replaced the namespace's own secret, and stays converged saying so.
        assert!(crate::plan::replaced(&copy.secret));
        let mut after = world.clone();
        let mut landed = copy.placed();
        landed.metadata.uid = Some("uid-landed".to_owned());
        add_secret(&mut after, landed);
        assert_eq!(actions(&after, WARN), vec![]);
        assert!(matches!(
            &actions(&world, DENY)[0],
            Action::Conflict {
                reason: ConflictReason::NoConsent,
                ..
            }
        ));
    }
}
