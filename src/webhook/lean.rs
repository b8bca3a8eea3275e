//! The lean AdmissionReview decoder: reads only what the rules read and skips the rest without
//! building a tree, so a review's memory does not depend on the body's shape.
//!
//! Decoding a body into `AdmissionReview<DynamicObject>` builds a `serde_json::Value` for every field
//! of the object and for `request.options`: a 6.5 MiB body of a few million small array elements
//! costs ~250 MB. Here, every object keeps its `apiVersion`, `kind` and metadata (without
//! `managedFields`), and of its other fields only those a rule reads (see `Object`); everything
//! else is skipped by serde's `IgnoredAny`, which allocates nothing. The collections that are kept are
//! capped ([`MAX_ENTRIES`]), and nesting is refused past [`MAX_DEPTH`] before decoding starts.
//!
//! The result is the `AdmissionRequest<DynamicObject>` the policy takes, so the rules do not change;
//! its objects never hold secret data (`data` and `stringData` are checked to be maps of strings
//! or nulls, and skipped: only the bytes they would take in the index are counted, for S8, under
//! [`crate::policy::PAYLOAD_BYTES_FIELD`]).

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::core::admission::{AdmissionRequest, Operation};
use kube::core::{DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// The deepest nesting of arrays and objects a review may have. An AdmissionReview of a Secret,
/// Namespace or Project is about 10 deep (managedFields' fieldsV1 included).
pub const MAX_DEPTH: usize = 64;

/// The most entries a kept list or map (labels, annotations, finalizers, ownerReferences, the
/// user's groups) may have: each costs ~100 bytes decoded for as little as 4 bytes of body.
pub const MAX_ENTRIES: usize = crate::keys::MAX_METADATA_ENTRIES;

/// The most keys, and values per key, of the user's `extra`.
const MAX_EXTRA: usize = 64;

/// The first array or object nested deeper than `limit`, as a byte offset; `None` if there is none.
/// A byte scan: it allocates nothing and runs before any decoding.
pub fn too_deep(body: &[u8], limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut offset = 0;
    while let Some(&byte) = body.get(offset) {
        match byte {
            // A string is skipped to its closing quote in SIMD-sized steps (memchr): most of a
            // review's bytes are in strings (base64 data), and a byte-at-a-time scan was ~5% of
            // a review's CPU.
            b'"' => {
                offset += 1;
                loop {
                    let rest = body.get(offset..)?;
                    match memchr::memchr2(b'"', b'\\', rest) {
                        // An unterminated string: nothing after it nests.
                        None => return None,
                        Some(i) if rest[i] == b'\\' => offset += i + 2,
                        Some(i) => {
                            offset += i + 1;
                            break;
                        }
                    }
                }
                continue;
            }
            _ => {
                if nests_too_deep(&mut depth, byte, limit) {
                    return Some(offset);
                }
            }
        }
        offset += 1;
    }
    None
}

/// One byte outside strings: a bracket opens or closes a level of nesting. True when it opens one
/// past `limit`.
fn nests_too_deep(depth: &mut usize, byte: u8, limit: usize) -> bool {
    match byte {
        b'[' | b'{' => {
            *depth += 1;
            *depth > limit
        }
        b']' | b'}' => {
            *depth = depth.saturating_sub(1);
            false
        }
        _ => false,
    }
}

/// An AdmissionReview as it arrives; unknown fields (`response`, anything new) are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub request: Option<Request>,
}

/// Only the request's uid: read to answer a body that does not decode, at no cost beyond a skip.
#[derive(Deserialize)]
pub struct UidOnly {
    pub request: UidRequest,
}

#[derive(Deserialize)]
pub struct UidRequest {
    pub uid: String,
}

/// `request` of an AdmissionReview; `options` and unknown fields are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    request_kind: Option<GroupVersionKind>,
    #[serde(default)]
    request_resource: Option<GroupVersionResource>,
    #[serde(default)]
    request_sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    user_info: User,
    #[serde(default)]
    object: Option<Box<Object>>,
    #[serde(default)]
    old_object: Option<Box<Object>>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
struct User {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    groups: Option<Capped<Vec<String>, MAX_ENTRIES>>,
    #[serde(default)]
    extra: Option<Capped<BTreeMap<String, Capped<Vec<String>, MAX_EXTRA>>, MAX_EXTRA>>,
}

/// An object (`object`, `oldObject`): what any rule may read of a Secret, Namespace or Project.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Meta,
    /// Secrets.
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    immutable: Option<bool>,
    /// Checked and dropped: the policy never holds secret data, only its size (S8).
    #[serde(default)]
    data: Option<StringMap<Base64>>,
    #[serde(default)]
    string_data: Option<StringMap<Plain>>,
    /// Projects.
    #[serde(default)]
    spec: Option<Spec>,
    /// Namespaces (`phase`) and Projects (`backingNamespace`).
    #[serde(default)]
    status: Option<ObjectStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    backing_namespace: Option<String>,
}

/// `ObjectMeta` without `managedFields`, its collections capped.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    annotations: Option<Capped<BTreeMap<String, String>, MAX_ENTRIES>>,
    #[serde(default)]
    creation_timestamp: Option<Time>,
    #[serde(default)]
    deletion_grace_period_seconds: Option<i64>,
    #[serde(default)]
    deletion_timestamp: Option<Time>,
    #[serde(default)]
    finalizers: Option<Capped<Vec<String>, MAX_ENTRIES>>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    generation: Option<i64>,
    #[serde(default)]
    labels: Option<Capped<BTreeMap<String, String>, MAX_ENTRIES>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    owner_references: Option<Capped<Vec<OwnerReference>, MAX_ENTRIES>>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    self_link: Option<String>,
    #[serde(default)]
    uid: Option<String>,
}

impl From<Meta> for ObjectMeta {
    fn from(m: Meta) -> Self {
        ObjectMeta {
            annotations: m.annotations.map(Capped::into_inner),
            creation_timestamp: m.creation_timestamp,
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers.map(Capped::into_inner),
            generate_name: m.generate_name,
            generation: m.generation,
            labels: m.labels.map(Capped::into_inner),
            managed_fields: None,
            name: m.name,
            namespace: m.namespace,
            owner_references: m.owner_references.map(Capped::into_inner),
            resource_version: m.resource_version,
            self_link: m.self_link,
            uid: m.uid,
        }
    }
}

impl From<Object> for DynamicObject {
    fn from(o: Object) -> Self {
        let types = match (o.api_version, o.kind) {
            (Some(api_version), Some(kind)) => Some(TypeMeta { api_version, kind }),
            _ => None,
        };
        let mut fields = serde_json::Map::new();
        if let Some(type_) = o.type_ {
            fields.insert("type".into(), type_.into());
        }
        if let Some(immutable) = o.immutable {
            fields.insert("immutable".into(), immutable.into());
        }
        if o.data.is_some() || o.string_data.is_some() {
            let bytes = [o.data.map(|d| d.bytes), o.string_data.map(|d| d.bytes)]
                .into_iter()
                .flatten()
                .fold(0u64, u64::saturating_add);
            fields.insert(crate::policy::PAYLOAD_BYTES_FIELD.into(), bytes.into());
        }
        let mut spec = serde_json::Map::new();
        if let Some(s) = o.spec {
            insert_some(&mut spec, "clusterName", s.cluster_name);
            insert_some(&mut spec, "displayName", s.display_name);
            fields.insert("spec".into(), spec.into());
        }
        if let Some(s) = o.status {
            let mut status = serde_json::Map::new();
            insert_some(&mut status, "phase", s.phase);
            insert_some(&mut status, "backingNamespace", s.backing_namespace);
            fields.insert("status".into(), status.into());
        }
        DynamicObject {
            types,
            metadata: o.metadata.into(),
            data: fields.into(),
        }
    }
}

fn insert_some(map: &mut serde_json::Map<String, serde_json::Value>, key: &str, v: Option<String>) {
    if let Some(v) = v {
        map.insert(key.to_owned(), v.into());
    }
}

impl From<Request> for AdmissionRequest<DynamicObject> {
    fn from(r: Request) -> Self {
        AdmissionRequest {
            types: TypeMeta {
                api_version: kube::core::admission::META_API_VERSION_V1.to_owned(),
                kind: kube::core::admission::META_KIND.to_owned(),
            },
            uid: r.uid,
            kind: r.kind,
            resource: r.resource,
            sub_resource: r.sub_resource,
            request_kind: r.request_kind,
            request_resource: r.request_resource,
            request_sub_resource: r.request_sub_resource,
            name: r.name,
            namespace: r.namespace,
            operation: r.operation,
            user_info: UserInfo {
                username: r.user_info.username,
                uid: r.user_info.uid,
                groups: r.user_info.groups.map(Capped::into_inner),
                extra: r.user_info.extra.map(|extra| {
                    extra
                        .into_inner()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_inner()))
                        .collect()
                }),
            },
            object: r.object.map(|o| (*o).into()),
            old_object: r.old_object.map(|o| (*o).into()),
            dry_run: r.dry_run,
            options: None,
        }
    }
}

/// A list or map of at most `N` entries; more is a decoding error that says the cap.
pub struct Capped<C, const N: usize>(C);

impl<C, const N: usize> Capped<C, N> {
    fn into_inner(self) -> C {
        self.0
    }
}

fn too_many<E: de::Error>(n: usize) -> E {
    E::custom(format_args!("more than {n} entries"))
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<Vec<T>, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Seq<T, N> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of at most {N} entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if items.len() == N {
                        return Err(too_many(N));
                    }
                    items.push(item);
                }
                Ok(items)
            }
        }
        d.deserialize_seq(Seq::<T, N>(PhantomData)).map(Capped)
    }
}

impl<'de, V: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<BTreeMap<String, V>, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map<V, const N: usize>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>, const N: usize> Visitor<'de> for Map<V, N> {
            type Value = BTreeMap<String, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a map of at most {N} entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = BTreeMap::new();
                let mut seen = 0;
                while let Some((key, value)) = map.next_entry()? {
                    seen += 1;
                    if seen > N {
                        return Err(too_many(N));
                    }
                    entries.insert(key, value);
                }
                Ok(entries)
            }
        }
        d.deserialize_map(Map::<V, N>(PhantomData)).map(Capped)
    }
}

/// A payload value of the wrong type is refused by its type alone: serde's default message would
/// show the value (`invalid type: integer `1234``), and a payload value is secret data.
macro_rules! not_shown {
    ($value:ty) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Err(E::invalid_type(de::Unexpected::Other("a boolean"), &self))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Err(E::invalid_type(de::Unexpected::Other("an integer"), &self))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
            Err(E::invalid_type(de::Unexpected::Other("an integer"), &self))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Err(E::invalid_type(de::Unexpected::Other("a number"), &self))
        }
        fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<$value, E> {
            Err(E::invalid_type(de::Unexpected::Other("bytes"), &self))
        }
    };
}

/// A map whose values must all be strings (a Secret's `data`, `stringData`), skipped as it is read;
/// only what it would take in the index is kept: its keys, its values as `C` counts them, and
/// [`crate::scoped::ENTRY_BYTES`] an entry.
struct StringMap<C> {
    bytes: u64,
    encoding: PhantomData<C>,
}

/// How a payload map's values count: the bytes they stand for.
trait Encoding {
    fn bytes(value: &str) -> u64;
}

/// `data`: base64, counted as the bytes it decodes to (what the stored secret holds).
struct Base64;

impl Encoding for Base64 {
    fn bytes(value: &str) -> u64 {
        crate::scoped::base64_decoded_len(value)
    }
}

/// `stringData`: counted as written.
struct Plain;

impl Encoding for Plain {
    fn bytes(value: &str) -> u64 {
        value.len() as u64
    }
}

impl<'de, C: Encoding> Deserialize<'de> for StringMap<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map<C>(PhantomData<C>);
        impl<'de, C: Encoding> Visitor<'de> for Map<C> {
            type Value = StringMap<C>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringMap<C>, A::Error> {
                let mut bytes = 0u64;
                while let Some((key, value)) = map.next_entry::<KeyLen, SkippedString<C>>()? {
                    bytes =
                        bytes.saturating_add(crate::scoped::data_entry_bytes(key.0, value.bytes));
                }
                Ok(StringMap {
                    bytes,
                    encoding: PhantomData,
                })
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<StringMap<C>, E> {
                Err(E::invalid_type(de::Unexpected::Other("a string"), &self))
            }
            not_shown!(StringMap<C>);
        }
        // `deserialize_any`: serde_json's `deserialize_map` names the value it found in its error
        // (`invalid type: string "…"`), and this value is secret data.
        d.deserialize_any(Map::<C>(PhantomData))
    }
}

/// A map key, counted and not kept.
struct KeyLen(usize);

impl<'de> Deserialize<'de> for KeyLen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = KeyLen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<KeyLen, E> {
                Ok(KeyLen(key.len()))
            }
        }
        d.deserialize_str(Key)
    }
}

/// A string or `null`, checked and not kept (serde_json hands a string over borrowed or in its
/// scratch buffer): only its size is.
struct SkippedString<C> {
    bytes: u64,
    encoding: PhantomData<C>,
}

impl<'de, C: Encoding> Deserialize<'de> for SkippedString<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Str<C>(PhantomData<C>);
        impl<C: Encoding> Visitor<'_> for Str<C> {
            type Value = SkippedString<C>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<SkippedString<C>, E> {
                Ok(SkippedString {
                    bytes: C::bytes(value),
                    encoding: PhantomData,
                })
            }
            // A key written with no value (`data: {k: }`, or `null`) is an empty value: the
            // apiserver admits it, sends it to webhooks as `null` and stores `""`.
            fn visit_unit<E: de::Error>(self) -> Result<SkippedString<C>, E> {
                Ok(SkippedString {
                    bytes: 0,
                    encoding: PhantomData,
                })
            }
            not_shown!(SkippedString<C>);
        }
        d.deserialize_any(Str::<C>(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use crate::policy::testing::{
        BACKING, admission, config, copy_json, namespace_in_json, original_json, request,
        review_body, secret_json, world,
    };
    use crate::policy::{Facts, Rules, mutate, validate_only};
    use crate::webhook::review::{ReviewError, parse_request};
    use serde_json::{Value, json};

    fn lean(req: Value) -> AdmissionRequest<DynamicObject> {
        parse_request(&review_body(req)).expect("decodes leanly")
    }

    fn malformed(req: Value) -> String {
        match parse_request(&review_body(req)) {
            Err(e @ ReviewError::Malformed { .. }) => e.to_string(),
            other => panic!("expected a malformed review, got {other:?}"),
        }
    }

    /// A Secret with every kind of field a rule reads, and a lot that none does.
    fn busy_secret() -> Value {
        let mut secret = secret_json(
            BACKING,
            "db",
            json!({keys::PROJECT_SCOPED_LABEL: "p-vwxyz", "app": "web"}),
            json!({keys::IGNORE_NAMESPACES_ANNOTATION: "team-b", "note": "x"}),
        );
        secret["immutable"] = json!(true);
        secret["stringData"] = json!({"extra": "plain"});
        secret["metadata"]["finalizers"] = json!(["example.com/keep"]);
        secret["metadata"]["generateName"] = json!("db-");
        secret["metadata"]["uid"] = json!("4f1c");
        secret["metadata"]["resourceVersion"] = json!("42");
        secret["metadata"]["creationTimestamp"] = json!("2026-11-29T10:00:00Z");
        secret["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "9a"}]);
        secret["metadata"]["managedFields"] = json!([{
            "manager": "kubectl", "operation": "Update", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:password": {}}}
        }]);
        secret["unknownField"] = json!({"deep": [[1, 2], {"x": null}]});
        secret
    }

    #[test]
    fn keeps_every_field_the_rules_read() {
        let mut req = request("UPDATE", Some(busy_secret()), Some(busy_secret()));
        req["subResource"] = json!("status");
        req["requestKind"] = json!({"group": "", "version": "v1", "kind": "Secret"});
        req["userInfo"]["uid"] = json!("u-1");
        req["userInfo"]["extra"] = json!({"scopes": ["a", "b"]});
        req["dryRun"] = json!(true);
        req["options"] = json!({"kind": "UpdateOptions", "fieldManager": "kubectl"});
        let full = admission(req.clone());
        let lean = lean(req);
        assert_eq!(lean.uid, full.uid);
        assert_eq!(lean.kind, full.kind);
        assert_eq!(lean.resource, full.resource);
        assert_eq!(lean.sub_resource, full.sub_resource);
        assert_eq!(lean.request_kind, full.request_kind);
        assert_eq!(lean.name, full.name);
        assert_eq!(lean.namespace, full.namespace);
        assert_eq!(lean.operation, full.operation);
        assert_eq!(lean.user_info, full.user_info);
        assert_eq!(lean.dry_run, full.dry_run);
        assert_eq!(lean.options, None, "options are skipped");
        for (lean, full) in [
            (&lean.object, &full.object),
            (&lean.old_object, &full.old_object),
        ] {
            let (lean, full) = (
                lean.as_ref().expect("object"),
                full.as_ref().expect("object"),
            );
            assert_eq!(lean.types, full.types);
            let mut meta = full.metadata.clone();
            meta.managed_fields = None;
            assert_eq!(lean.metadata, meta, "metadata minus managedFields");
            // The payload's size is kept (`password`: 7 bytes decoded, `extra`: 5), never the
            // payload.
            let size =
                crate::scoped::data_entry_bytes(8, 7) + crate::scoped::data_entry_bytes(5, 5);
            assert_eq!(
                lean.data,
                json!({"type": "Opaque", "immutable": true, crate::policy::PAYLOAD_BYTES_FIELD: size})
            );
        }
    }

    #[test]
    fn keeps_namespace_phase_and_project_fields() {
        let mut ns = namespace_in_json("team-c", "local:p-vwxyz");
        ns["spec"] = json!({"finalizers": ["kubernetes"]});
        ns["status"] = json!({"phase": "Terminating", "conditions": [{"type": "x"}]});
        let object = lean(request("UPDATE", Some(ns.clone()), Some(ns)))
            .object
            .expect("object");
        assert_eq!(
            object.data,
            json!({"spec": {}, "status": {"phase": "Terminating"}})
        );

        let project = json!({
            "apiVersion": "management.cattle.io/v3", "kind": "Project",
            "metadata": {"name": "p-vwxyz", "namespace": "local"},
            "spec": {"clusterName": "local", "displayName": "Team", "resourceQuota": {"limit": {}}},
            "status": {"backingNamespace": BACKING, "conditions": []},
        });
        let mut req = request("CREATE", Some(project), None);
        req["kind"] = json!({"group": "management.cattle.io", "version": "v3", "kind": "Project"});
        let object = lean(req).object.expect("object");
        assert_eq!(object.types.expect("types").kind, "Project");
        assert_eq!(
            object.data,
            json!({"spec": {"clusterName": "local", "displayName": "Team"},
                   "status": {"backingNamespace": BACKING}})
        );
    }

    #[test]
    fn the_rules_decide_the_same_on_lean_and_full_reviews() {
        let requests = [
            request(
                "CREATE",
                Some(original_json("db", "p-vwxyz", Value::Null)),
                None,
            ),
            request("CREATE", Some(original_json("new", "", Value::Null)), None),
            request("DELETE", None, Some(copy_json("team-a", "db"))),
            request(
                "UPDATE",
                Some(busy_secret()),
                Some(copy_json("team-a", "db")),
            ),
            request(
                "CREATE",
                Some(secret_json("other", "web", Value::Null, Value::Null)),
                None,
            ),
            request(
                "CREATE",
                Some(namespace_in_json("fresh", "local:p-vwxyz")),
                None,
            ),
            request("CREATE", Some(namespace_in_json("fresh", "nonsense")), None),
        ];
        let (world, cfg) = (world(), config());
        for req in requests {
            let (full, lean) = (admission(req.clone()), lean(req));
            for rules in [
                Rules::SecretGuard,
                Rules::SecretNames,
                Rules::NamespaceGuard,
            ] {
                assert_eq!(
                    validate_only(rules, &lean, &world, &cfg, &Facts::default()),
                    validate_only(rules, &full, &world, &cfg, &Facts::default()),
                    "{rules:?} on {}",
                    full.name
                );
            }
            assert_eq!(
                mutate(&lean, &world),
                mutate(&full, &world),
                "{}",
                full.name
            );
        }
    }

    #[test]
    fn payloads_must_be_maps_of_strings_or_nulls_and_are_never_kept() {
        let mut bad = busy_secret();
        bad["data"] = json!("not a map");
        let message = malformed(request("CREATE", Some(bad), None));
        assert!(message.contains("request.object.data"), "{message}");
        assert!(message.contains("a map of strings"), "{message}");

        let mut bad = busy_secret();
        bad["stringData"] = json!({"n": 1});
        let message = malformed(request("CREATE", None, Some(bad)));
        assert!(
            message.contains("request.oldObject.stringData"),
            "{message}"
        );

        // A key with no value reaches webhooks as `null` (the apiserver stores `""`).
        let mut empty = busy_secret();
        empty["data"] = json!({"password": null, "user": "YWRtaW4="});
        assert!(lean(request("CREATE", Some(empty), None)).object.is_some());

        let object = lean(request("CREATE", Some(busy_secret()), None))
            .object
            .expect("object");
        let kept = serde_json::to_string(&object).expect("json");
        assert!(
            !kept.contains("aHVudGVyMg==") && !kept.contains("plain"),
            "{kept}"
        );
    }

    #[test]
    fn unknown_fields_are_skipped_at_every_level() {
        let mut req = request("CREATE", Some(busy_secret()), None);
        req["somethingNew"] = json!([[[]], {"a": [1, 2, 3]}]);
        req["userInfo"]["somethingNew"] = json!({"b": [true]});
        req["object"]["metadata"]["somethingNew"] = json!([null]);
        let mut body: Value = serde_json::from_slice(&review_body(req)).expect("json");
        body["response"] = json!({"uid": "x", "allowed": true});
        body["somethingNew"] = json!({"c": {}});
        let parsed = parse_request(&serde_json::to_vec(&body).expect("json")).expect("decodes");
        let object = parsed.object.expect("object");
        let size = crate::scoped::data_entry_bytes(8, 7) + crate::scoped::data_entry_bytes(5, 5);
        assert_eq!(
            object.data,
            json!({"type": "Opaque", "immutable": true, crate::policy::PAYLOAD_BYTES_FIELD: size})
        );
    }

    /// S8 compares what the decoder counts of a review's data with what the index holds of stored
    /// originals: both must count alike, keys, padding and empty values included.
    #[test]
    fn the_payload_is_counted_as_the_index_holds_it() {
        let mut secret = busy_secret();
        let mut data: serde_json::Map<String, Value> =
            (0..50).map(|i| (format!("k{i}"), json!(""))).collect();
        for (key, value) in [
            ("a", "YQ=="),
            ("hi", "aGk="),
            ("dog", "ZG9n"),
            ("long", "aHVudGVyMg=="),
        ] {
            data.insert(key.to_owned(), json!(value));
        }
        secret["data"] = Value::Object(data);
        let stored: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(secret.clone()).expect("a Secret");
        let expected =
            crate::scoped::held_bytes(&stored) - crate::scoped::metadata_bytes(&stored.metadata);
        let object = lean(request("CREATE", Some(secret), None))
            .object
            .expect("object");
        assert_eq!(
            object.data[crate::policy::PAYLOAD_BYTES_FIELD],
            json!(expected)
        );
    }

    #[test]
    fn kept_collections_are_capped() {
        let labels: serde_json::Map<String, Value> = (0..=MAX_ENTRIES)
            .map(|i| (format!("l{i}"), json!("")))
            .collect();
        let mut secret = busy_secret();
        secret["metadata"]["labels"] = Value::Object(labels);
        let message = malformed(request("CREATE", Some(secret), None));
        assert!(
            message.contains("request.object.metadata.labels"),
            "{message}"
        );
        assert!(
            message.contains(&format!("more than {MAX_ENTRIES} entries")),
            "{message}"
        );

        let mut req = request("CREATE", Some(busy_secret()), None);
        req["userInfo"]["groups"] = json!(vec!["g"; MAX_ENTRIES + 1]);
        let message = malformed(req);
        assert!(message.contains("request.userInfo.groups"), "{message}");
    }

    #[test]
    fn deep_nesting_is_refused_before_decoding() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(too_deep(deep.as_bytes(), MAX_DEPTH), Some(MAX_DEPTH));
        let shallow = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(too_deep(shallow.as_bytes(), MAX_DEPTH), None);
        // Brackets inside strings, escaped quotes included, are not nesting.
        let quoted = format!("[\"\\\"{}\"]", "[".repeat(MAX_DEPTH * 2));
        assert_eq!(too_deep(quoted.as_bytes(), MAX_DEPTH), None);
        let unterminated = format!("[\"{}", "[".repeat(MAX_DEPTH * 2));
        assert_eq!(too_deep(unterminated.as_bytes(), MAX_DEPTH), None);
        assert_eq!(
            too_deep(b"[\"\\", MAX_DEPTH),
            None,
            "an escape at the very end"
        );

        let mut req = request("CREATE", Some(busy_secret()), None);
        req["object"]["unknownField"] = json!("PLACE");
        let body = String::from_utf8(review_body(req))
            .expect("utf-8")
            .replacen("\"PLACE\"", &deep, 1);
        let err = parse_request(body.as_bytes()).expect_err("too deep");
        assert!(matches!(err, ReviewError::TooDeep { .. }), "{err}");
        assert!(err.to_string().contains("deeper than 64 levels"), "{err}");
    }

    #[test]
    fn other_versions_are_named() {
        for (version, kind) in [
            ("admission.k8s.io/v1beta1", "AdmissionReview"),
            ("v1", "Secret"),
        ] {
            let mut body: Value =
                serde_json::from_slice(&review_body(request("CREATE", Some(busy_secret()), None)))
                    .expect("json");
            body["apiVersion"] = json!(version);
            body["kind"] = json!(kind);
            let err =
                parse_request(&serde_json::to_vec(&body).expect("json")).expect_err("version");
            assert!(matches!(err, ReviewError::WrongVersion { .. }), "{err}");
            assert!(
                err.to_string().contains(&format!("{version}/{kind}")),
                "{err}"
            );
        }
    }

    /// The byte-at-a-time scan `too_deep` replaced (its string handling; the nesting step is shared):
    /// the two must agree on every input.
    fn too_deep_bytewise(body: &[u8], limit: usize) -> Option<usize> {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for (offset, &byte) in body.iter().enumerate() {
            if in_string {
                match (escaped, byte) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            if byte == b'"' {
                in_string = true;
            } else if nests_too_deep(&mut depth, byte, limit) {
                return Some(offset);
            }
        }
        None
    }

    proptest::proptest! {
        #[test]
        fn the_depth_scan_agrees_with_a_bytewise_scan(
            body in proptest::collection::vec(proptest::sample::select(b"[]{}\"\\a".to_vec()), 0..200),
            limit in 0usize..8,
        ) {
            proptest::prop_assert_eq!(too_deep(&body, limit), too_deep_bytewise(&body, limit));
        }
    }
}
