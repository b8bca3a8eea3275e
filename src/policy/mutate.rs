//! Mutations M1 and M2: labels only, as JSON Patch operations, and none when nothing must change.

use super::Subject;
use crate::keys::{self, ProjectId};
use crate::world::{World, is_copy, label, project_annotation};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use std::collections::BTreeMap;

/// M1: the namespace's projectId label mirrors its annotation's project part; without the
/// annotation (or with an empty one, which names no project) there is no label. A malformed annotation is left to validation (N2). A label the
/// request set to something else is reset, and the warning says so: otherwise kubectl prints
/// "labeled" and the label silently is not what the user asked for.
pub(super) fn namespace(s: &Subject<Namespace>) -> (Vec<PatchOperation>, Vec<String>) {
    let Some(meta) = s.new.as_ref().map(|n| &n.metadata) else {
        return (Vec::new(), Vec::new());
    };
    let wanted = match project_annotation(meta).map(ProjectId::parse) {
        None => None,
        Some(Ok(project)) => Some(project.project),
        Some(Err(_)) => return (Vec::new(), Vec::new()),
    };
    let asked = label(meta, keys::PROJECT_ID_KEY);
    let before = s
        .old
        .as_ref()
        .and_then(|o| label(&o.metadata, keys::PROJECT_ID_KEY));
    let mut warnings = Vec::new();
    if asked.is_some() && asked != before && asked != wanted.as_deref() {
        let key = keys::PROJECT_ID_KEY;
        warnings.push(match &wanted {
            Some(project) => format!(
                "label {key} was reset to {project}: it mirrors the annotation; change the \
                 annotation to move"
            ),
            None => format!(
                "label {key} was removed: it mirrors the annotation; set the annotation to join a \
                 project"
            ),
        });
    }
    let ops = label_ops(meta.labels.as_ref(), &[(keys::PROJECT_ID_KEY, wanted)]);
    (ops, warnings)
}

/// M2: an original's empty project-scoped label gets the owning project's name, and a missing
/// cluster label is added. Anything else (wrong project, copies, other namespaces) is left alone.
pub(super) fn secret(s: &Subject<Secret>, world: &World) -> Vec<PatchOperation> {
    let Some(meta) = s.new.as_ref().map(|n| &n.metadata) else {
        return Vec::new();
    };
    let Some(project) = world.backing_project(&s.namespace) else {
        return Vec::new();
    };
    let Some(value) = label(meta, keys::PROJECT_SCOPED_LABEL) else {
        return Vec::new();
    };
    if is_copy(meta) || !(value.is_empty() || value == project.project) {
        return Vec::new();
    }
    let mut changes = Vec::new();
    if value.is_empty() {
        changes.push((keys::PROJECT_SCOPED_LABEL, Some(project.project.clone())));
    }
    if label(meta, keys::PROJECT_SCOPED_CLUSTER_LABEL).is_none() {
        changes.push((
            keys::PROJECT_SCOPED_CLUSTER_LABEL,
            Some(project.cluster.clone()),
        ));
    }
    label_ops(meta.labels.as_ref(), &changes)
}

/// Operations that make `labels` hold each `(key, Some(value))` and lack each `(key, None)`.
/// A missing label map is added whole (a JSON Patch cannot add into a missing object); keys are
/// escaped by the pointer (`/` becomes `~1`).
fn label_ops(
    labels: Option<&BTreeMap<String, String>>,
    changes: &[(&str, Option<String>)],
) -> Vec<PatchOperation> {
    let Some(labels) = labels else {
        let added: serde_json::Map<String, serde_json::Value> = changes
            .iter()
            .filter_map(|(key, value)| Some(((*key).to_owned(), value.clone()?.into())))
            .collect();
        if added.is_empty() {
            return Vec::new();
        }
        return vec![PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "labels"]),
            value: added.into(),
        })];
    };
    changes
        .iter()
        .filter_map(|(key, wanted)| {
            let path = PointerBuf::from_tokens(["metadata", "labels", key]);
            match (labels.get(*key), wanted) {
                (Some(current), Some(value)) if current == value => None,
                (_, Some(value)) => Some(PatchOperation::Add(AddOperation {
                    path,
                    value: value.clone().into(),
                })),
                (Some(_), None) => Some(PatchOperation::Remove(RemoveOperation { path })),
                (None, None) => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::mutate as review;
    use super::super::testing::*;
    use crate::keys;
    use serde_json::{Value, json};

    /// The patch `mutate` returns for the request, as JSON, after checking that applying it to
    /// the object gives an object that needs no further patch (idempotence).
    fn patch_of(req: Value) -> Option<Value> {
        let world = world();
        let decision = review(&admission(req.clone()), &world);
        assert!(decision.allowed());
        let patch = decision.patch?;
        let mut object = req["object"].clone();
        json_patch::patch(&mut object, &patch.0).expect("patch applies");
        let mut again = req;
        again["object"] = object;
        assert_eq!(
            review(&admission(again), &world).patch,
            None,
            "not idempotent"
        );
        Some(serde_json::to_value(&patch).expect("serializable"))
    }

    /// The JSON pointer to a label, escaped by hand (RFC 6901: `~` as `~0`, `/` as `~1`).
    fn label_path(key: &str) -> String {
        format!(
            "/metadata/labels/{}",
            key.replace('~', "~0").replace('/', "~1")
        )
    }

    #[test]
    fn label_paths_escape_slashes() {
        let path = label_path(keys::PROJECT_ID_KEY);
        assert!(
            path.contains("~1") && path.matches('/').count() == 3,
            "{path}"
        );
    }

    fn ns_update(new: Value) -> Value {
        let old = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": new["metadata"]["name"]}});
        request("UPDATE", Some(new), Some(old))
    }

    #[test]
    fn m1_namespace_label_mirrors_the_annotation() {
        let ann = json!({keys::PROJECT_ID_KEY: "local:p-vwxyz"});
        let cases = [
            (
                "no labels at all: the map is added whole",
                namespace_json("a", Value::Null, ann.clone()),
                Some(
                    json!([{"op": "add", "path": "/metadata/labels", "value": {keys::PROJECT_ID_KEY: "p-vwxyz"}}]),
                ),
            ),
            (
                "other labels: the key is added, escaped",
                namespace_json("a", json!({"team": "x"}), ann.clone()),
                Some(
                    json!([{"op": "add", "path": label_path(keys::PROJECT_ID_KEY), "value": "p-vwxyz"}]),
                ),
            ),
            (
                "stale label is replaced",
                namespace_json("a", json!({keys::PROJECT_ID_KEY: "p-old"}), ann.clone()),
                Some(
                    json!([{"op": "add", "path": label_path(keys::PROJECT_ID_KEY), "value": "p-vwxyz"}]),
                ),
            ),
            (
                "label without annotation is removed",
                namespace_json(
                    "a",
                    json!({keys::PROJECT_ID_KEY: "p-vwxyz", "team": "x"}),
                    Value::Null,
                ),
                Some(json!([{"op": "remove", "path": label_path(keys::PROJECT_ID_KEY)}])),
            ),
            (
                "already right: no patch",
                namespace_json("a", json!({keys::PROJECT_ID_KEY: "p-vwxyz"}), ann),
                None,
            ),
            (
                "neither: no patch",
                namespace_json("a", Value::Null, Value::Null),
                None,
            ),
            (
                "an empty annotation names no project: its label is removed",
                namespace_json(
                    "a",
                    json!({keys::PROJECT_ID_KEY: "p-vwxyz"}),
                    json!({keys::PROJECT_ID_KEY: ""}),
                ),
                Some(json!([{"op": "remove", "path": label_path(keys::PROJECT_ID_KEY)}])),
            ),
            (
                "malformed annotation is left to validation",
                namespace_json("a", Value::Null, json!({keys::PROJECT_ID_KEY: "nonsense"})),
                None,
            ),
        ];
        for (name, object, expected) in cases {
            assert_eq!(
                patch_of(ns_update(object.clone())),
                expected,
                "{name} (update)"
            );
            assert_eq!(
                patch_of(request("CREATE", Some(object), None)),
                expected,
                "{name} (create)"
            );
        }
    }

    #[test]
    fn m2_originals_get_their_labels() {
        let cluster_path = label_path(keys::PROJECT_SCOPED_CLUSTER_LABEL);
        let cases = [
            (
                "empty label and no cluster label",
                original_json("db", "", Value::Null),
                Some(json!([
                    {"op": "add", "path": label_path(keys::PROJECT_SCOPED_LABEL), "value": "p-vwxyz"},
                    {"op": "add", "path": cluster_path, "value": "local"},
                ])),
            ),
            (
                "right label, no cluster label",
                original_json("db", "p-vwxyz", Value::Null),
                Some(json!([{"op": "add", "path": cluster_path, "value": "local"}])),
            ),
            (
                "complete: no patch",
                secret_json(
                    BACKING,
                    "db",
                    json!({keys::PROJECT_SCOPED_LABEL: "p-vwxyz", keys::PROJECT_SCOPED_CLUSTER_LABEL: "local"}),
                    Value::Null,
                ),
                None,
            ),
            (
                "wrong project is left to validation",
                original_json("db", "p-other", Value::Null),
                None,
            ),
            ("copies are left alone", copy_json("team-a", "db"), None),
            (
                "unlabelled secrets are left alone",
                secret_json(BACKING, "x", Value::Null, Value::Null),
                None,
            ),
            (
                "labelled secrets outside backing namespaces are left alone",
                secret_json(
                    "other",
                    "x",
                    json!({keys::PROJECT_SCOPED_LABEL: ""}),
                    Value::Null,
                ),
                None,
            ),
        ];
        for (name, object, expected) in cases {
            let patch = patch_of(request("CREATE", Some(object.clone()), None));
            assert_eq!(patch, expected, "{name}");
            if let Some(patch) = patch {
                assert!(!patch.to_string().contains("/data"), "{name}: touches data");
            }
        }
    }

    #[test]
    fn no_patch_on_delete_or_dry_run_difference() {
        let world = world();
        let del = request("DELETE", None, Some(original_json("db", "", Value::Null)));
        assert_eq!(review(&admission(del), &world).patch, None);
        let mut dry = request("CREATE", Some(original_json("db", "", Value::Null)), None);
        let real = review(&admission(dry.clone()), &world);
        dry["dryRun"] = json!(true);
        assert_eq!(review(&admission(dry), &world), real);
        assert!(real.patch.is_some());
    }

    #[test]
    fn malformed_objects_are_bad_requests() {
        let mut bad = original_json("db", "", Value::Null);
        bad["type"] = json!(42);
        let decision = review(&admission(request("CREATE", Some(bad), None)), &world());
        assert_eq!(decision.denial.map(|d| d.code), Some(400));
    }

    #[test]
    fn m1_a_label_set_against_the_annotation_is_reset_with_a_warning() {
        let world = world();
        let warnings = |old_label: Value, new_label: Value, ann: Value| {
            let old = namespace_json("a", old_label, ann.clone());
            let new = namespace_json("a", new_label, ann);
            review(&admission(request("UPDATE", Some(new), Some(old))), &world).warnings
        };
        let ann = json!({keys::PROJECT_ID_KEY: "local:p-vwxyz"});
        let mirrored = json!({keys::PROJECT_ID_KEY: "p-vwxyz"});
        assert_eq!(
            warnings(
                mirrored.clone(),
                json!({keys::PROJECT_ID_KEY: "p-other"}),
                ann.clone()
            ),
            [format!(
                "label {key} was reset to p-vwxyz: it mirrors the annotation; change the \
                 annotation to move",
                key = keys::PROJECT_ID_KEY
            )]
        );
        assert_eq!(
            warnings(Value::Null, mirrored.clone(), Value::Null),
            [format!(
                "label {key} was removed: it mirrors the annotation; set the annotation to join a \
                 project",
                key = keys::PROJECT_ID_KEY
            )]
        );
        // Nothing asked of the label: repaired silently.
        assert!(warnings(Value::Null, Value::Null, ann.clone()).is_empty());
        assert!(warnings(mirrored.clone(), mirrored, ann).is_empty());
    }
}
