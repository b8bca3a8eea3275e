//! The exact copy of an original in one namespace, and how an existing copy differs from it.

use crate::keys;
use crate::scoped::Shape;
use crate::world::Original;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

/// The copy of `original` that `namespace` should hold: the original's type, data and immutability;
/// its labels and annotations minus the tracking keys of other tools, plus the copy markers.
pub fn copy_of(original: &Original<'_>, namespace: &str) -> Secret {
    let meta = &original.secret.metadata;
    let mut labels = copied(meta.labels.as_ref());
    labels.insert(
        keys::PROJECT_SCOPED_LABEL.to_owned(),
        original.project.project.clone(),
    );
    // The cluster label the original carries once the mutator (or the reconciler's label repair) has
    // added it: copies made before that repair need no second write after it.
    labels
        .entry(keys::PROJECT_SCOPED_CLUSTER_LABEL.to_owned())
        .or_insert_with(|| original.project.cluster.clone());
    let mut annotations = copied(meta.annotations.as_ref());
    for (key, value) in [
        (keys::COPY_ANNOTATION, keys::TRUE.to_owned()),
        (keys::USER_SECRET_ANNOTATION, keys::TRUE.to_owned()),
        (
            keys::ORIGIN_ANNOTATION,
            keys::origin_value(original.namespace(), original.name()),
        ),
        (
            keys::ORIGIN_UID_ANNOTATION,
            meta.uid.clone().unwrap_or_default(),
        ),
    ] {
        annotations.insert(key.to_owned(), value);
    }
    Secret {
        metadata: ObjectMeta {
            namespace: Some(namespace.to_owned()),
            name: Some(original.name().to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: original.secret.type_.clone(),
        data: original.secret.data.clone(),
        immutable: original.secret.immutable,
        string_data: None,
    }
}

/// How many annotations and labels a copy of `original` carries at most: its own that are copied,
/// the copy markers, and the note of a copy that replaced a secret. Counted, not built.
pub fn copy_metadata_entries(original: &Original<'_>) -> (usize, usize) {
    let meta = &original.secret.metadata;
    let count = |map: Option<&BTreeMap<String, String>>, added: &[&str]| {
        let own = map
            .into_iter()
            .flatten()
            .filter(|(key, _)| !keys::is_not_copied(key) && !added.contains(&key.as_str()))
            .count();
        own + added.len()
    };
    let annotations = [
        keys::COPY_ANNOTATION,
        keys::USER_SECRET_ANNOTATION,
        keys::ORIGIN_ANNOTATION,
        keys::ORIGIN_UID_ANNOTATION,
        keys::REPLACED_ANNOTATION,
    ];
    let labels = [
        keys::PROJECT_SCOPED_LABEL,
        keys::PROJECT_SCOPED_CLUSTER_LABEL,
    ];
    (
        count(meta.annotations.as_ref(), &annotations),
        count(meta.labels.as_ref(), &labels),
    )
}

/// Whether `original`'s copies stay within the labels and annotations the webhook reads of an
/// object (S6 refuses an original whose copies would not; one can still arrive past the webhook).
pub fn copy_fits(original: &Original<'_>) -> bool {
    let meta = &original.secret.metadata;
    let most = keys::MAX_METADATA_ENTRIES;
    let len = |map: Option<&BTreeMap<String, String>>| map.map_or(0, BTreeMap::len);
    // Nearly every original is far below: the plan asks for each of its namespaces.
    if len(meta.annotations.as_ref()) + 5 <= most && len(meta.labels.as_ref()) + 2 <= most {
        return true;
    }
    let (annotations, labels) = copy_metadata_entries(original);
    annotations <= most && labels <= most
}

fn copied(map: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.into_iter()
        .flatten()
        .filter(|(key, _)| !keys::is_not_copied(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether a copy replaced its namespace's own secret when it was written.
pub fn replaced(copy: &Secret) -> bool {
    crate::world::annotation(&copy.metadata, keys::REPLACED_ANNOTATION) == Some(keys::TRUE)
}

/// How an existing copy differs from the one wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// Identical: nothing to write.
    None,
    /// Labels, annotations or data differ: replace in place.
    Changed,
    /// Type or immutability differ, or the data of an immutable copy: only delete + create can fix it.
    Replace,
}

/// Compares an existing copy with the wanted one, treating absent and empty (or defaulted) fields alike.
pub fn drift(existing: &Secret, wanted: &Secret) -> Drift {
    drift_of(&Shape::of_secret(existing), &Shape::of_secret(wanted))
}

/// [`drift`] by what decides it: what the index keeps of a copy compares the same way.
pub fn drift_of(existing: &Shape<'_>, wanted: &Shape<'_>) -> Drift {
    if existing.type_ != wanted.type_ || existing.immutable != wanted.immutable {
        return Drift::Replace;
    }
    let data_differs = existing.data != wanted.data;
    if data_differs && existing.immutable {
        return Drift::Replace;
    }
    if data_differs || existing.metadata != wanted.metadata {
        return Drift::Changed;
    }
    Drift::None
}

/// Whether `existing` can be replaced by `wanted` in place: a secret's type never changes, nor does
/// an immutable secret's content.
pub fn replaceable_in_place(existing: &Secret, wanted: &Secret) -> bool {
    let (existing, wanted) = (Shape::of_secret(existing), Shape::of_secret(wanted));
    existing.type_ == wanted.type_ && !existing.immutable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoped::DEFAULT_TYPE;
    use crate::world::World;
    use crate::world::fixtures::*;
    use k8s_openapi::ByteString;

    fn world_with(original: Secret) -> World {
        let mut world = World::default();
        project(&mut world, "local", "p-vwxyz", "local-p-vwxyz");
        add_secret(&mut world, original);
        world
    }

    fn original(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Secret {
        let mut labels = labels.to_vec();
        labels.push((keys::PROJECT_SCOPED_LABEL, ""));
        secret("local-p-vwxyz", "db", &labels, annotations)
    }

    fn only_copy(world: &World) -> Secret {
        let original = world.originals().next().expect("one original");
        copy_of(&original, "team-a")
    }

    #[test]
    fn copy_carries_type_data_immutability_and_markers() {
        let mut source = original(&[("team", "a")], &[("note", "x")]);
        source.type_ = Some(keys::TLS_TYPE.to_owned());
        source.immutable = Some(true);
        let world = world_with(source.clone());
        let copy = only_copy(&world);
        assert_eq!(copy.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(copy.metadata.name.as_deref(), Some("db"));
        assert_eq!(copy.type_, source.type_);
        assert_eq!(copy.data, source.data);
        assert_eq!(copy.immutable, Some(true));
        assert_eq!(copy.metadata.uid, None);
        let labels = copy.metadata.labels.expect("labels");
        assert_eq!(labels["team"], "a");
        assert_eq!(labels[keys::PROJECT_SCOPED_LABEL], "p-vwxyz");
        assert_eq!(labels[keys::PROJECT_SCOPED_CLUSTER_LABEL], "local");
        let annotations = copy.metadata.annotations.expect("annotations");
        assert_eq!(annotations["note"], "x");
        assert_eq!(annotations[keys::COPY_ANNOTATION], keys::TRUE);
        assert_eq!(annotations[keys::USER_SECRET_ANNOTATION], keys::TRUE);
        assert_eq!(annotations[keys::ORIGIN_ANNOTATION], "local-p-vwxyz/db");
        assert_eq!(
            annotations[keys::ORIGIN_UID_ANNOTATION],
            "uid-local-p-vwxyz-db"
        );
    }

    #[test]
    fn copy_leaves_out_tracking_keys() {
        let world = world_with(original(
            &[("meta.helm.sh/chart", "x")],
            &[
                ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
                (keys::ALLOW_OVERWRITE_ANNOTATION, keys::TRUE),
                (keys::IGNORE_NAMESPACES_ANNOTATION, "skip"),
                (keys::REPLACED_ANNOTATION, keys::TRUE),
            ],
        ));
        let copy = only_copy(&world);
        let labels = copy.metadata.labels.expect("labels");
        let annotations = copy.metadata.annotations.expect("annotations");
        assert!(labels.keys().all(|k| !keys::is_not_copied(k)));
        assert!(annotations.keys().all(|k| !keys::is_not_copied(k)));
        assert_eq!(annotations.len(), keys::COPY_MARKERS.len());
    }

    #[test]
    fn drift_table() {
        let world = world_with(original(&[], &[]));
        let wanted = only_copy(&world);
        let edit = |f: &dyn Fn(&mut Secret)| {
            let mut s = wanted.clone();
            f(&mut s);
            s
        };
        let cases: Vec<(&str, Secret, Drift)> = vec![
            ("identical", wanted.clone(), Drift::None),
            (
                "defaults spelled out",
                edit(&|s| {
                    s.type_ = Some(DEFAULT_TYPE.to_owned());
                    s.immutable = Some(false);
                    s.metadata.uid = Some("u".to_owned());
                    s.metadata.resource_version = Some("7".to_owned());
                }),
                Drift::None,
            ),
            (
                "extra data key",
                edit(&|s| {
                    s.data
                        .get_or_insert_default()
                        .insert("extra".to_owned(), ByteString(vec![1]));
                }),
                Drift::Changed,
            ),
            ("data removed", edit(&|s| s.data = None), Drift::Changed),
            (
                "label edited",
                edit(&|s| {
                    s.metadata
                        .labels
                        .get_or_insert_default()
                        .insert("x".to_owned(), "y".to_owned());
                }),
                Drift::Changed,
            ),
            (
                "marker removed",
                edit(&|s| {
                    s.metadata
                        .annotations
                        .get_or_insert_default()
                        .remove(keys::USER_SECRET_ANNOTATION);
                }),
                Drift::Changed,
            ),
            (
                "type changed",
                edit(&|s| s.type_ = Some(keys::TLS_TYPE.to_owned())),
                Drift::Replace,
            ),
            (
                "made immutable",
                edit(&|s| s.immutable = Some(true)),
                Drift::Replace,
            ),
        ];
        for (name, existing, expected) in cases {
            assert_eq!(drift(&existing, &wanted), expected, "{name}");
        }
    }

    #[test]
    fn only_same_type_mutable_secrets_are_replaced_in_place() {
        let world = world_with(original(&[], &[]));
        let wanted = only_copy(&world);
        let mut plain = wanted.clone();
        plain.type_ = None;
        assert!(replaceable_in_place(&plain, &wanted));
        let mut tls = wanted.clone();
        tls.type_ = Some(keys::TLS_TYPE.to_owned());
        assert!(!replaceable_in_place(&tls, &wanted));
        let mut frozen = wanted.clone();
        frozen.immutable = Some(true);
        assert!(!replaceable_in_place(&frozen, &wanted));
    }

    #[test]
    fn data_of_an_immutable_copy_is_replaced() {
        let mut source = original(&[], &[]);
        source.immutable = Some(true);
        let world = world_with(source);
        let wanted = only_copy(&world);
        let mut existing = wanted.clone();
        existing.data = None;
        assert_eq!(drift(&existing, &wanted), Drift::Replace);
        let mut relabelled = wanted.clone();
        relabelled.metadata.labels = None;
        assert_eq!(drift(&relabelled, &wanted), Drift::Changed);
    }
}
