//! The lean AdmissionReview decoder: reads only what the rules read and skips the rest without
//! building a tree, so a review's memory does not depend on the body's shape.
//!
//! Decoding a body into `AdmissionReview<DynamicObject>` builds a `serde_json::Value` for every field
//! of the object and for `request.options`: a 6.5 MiB body of a few million small array elements
//! costs ~250 MB. Here, every object keeps its `apiVersion`, `kind` and metadata (without
//! `managedFields`), and of its other fields only those a rule reads ([`kept_fields`]); everything
//! else is skipped by serde's `IgnoredAny`, which allocates nothing. The collections that are kept are
//! capped ([`MAX_ENTRIES`]), and nesting is refused past [`MAX_DEPTH`] before decoding starts.
//!
//! The result is the `AdmissionRequest<DynamicObject>` the policy takes, so the rules do not change;
//! its objects never hold secret data (`data` and `stringData` are checked to be maps of strings,
//! and skipped).

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::core::admission::{AdmissionRequest, Operation};
use kube::core::{DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// The deepest nesting of arrays and objects a review may have. An AdmissionReview of a Secret,
/// Namespace or Project is about 10 deep (managedFields' fieldsV1 included).
pub const MAX_DEPTH: usize = 64;

/// The most entries a kept list or map (labels, annotations, finalizers, ownerReferences, the
/// user's groups) may have: each costs ~100 bytes decoded for as little as 4 bytes of body.
pub const MAX_ENTRIES: usize = 1024;

/// The most keys, and values per key, of the user's `extra`.
const MAX_EXTRA: usize = 64;

/// The first array or object nested deeper than `limit`, as a byte offset; `None` if there is none.
/// A byte scan: it allocates nothing and runs before any decoding.
pub fn too_deep(body: &[u8], limit: usize) -> Option<usize> {
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
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(offset);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
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
    object: Option<Object>,
    #[serde(default)]
    old_object: Option<Object>,
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
    /// Checked and dropped: the policy never holds secret data.
    #[serde(default, rename = "data")]
    _data: Option<StringMap>,
    #[serde(default, rename = "stringData")]
    _string_data: Option<StringMap>,
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
            object: r.object.map(Into::into),
            old_object: r.old_object.map(Into::into),
            dry_run: r.dry_run,
            options: None,
        }
    }
}

/// The names of the fields [`Object`] keeps beside `apiVersion`, `kind` and `metadata`.
pub fn kept_fields() -> [&'static str; 4] {
    ["type", "immutable", "spec", "status"]
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

/// A map whose values must all be strings (a Secret's `data`, `stringData`), skipped as it is read.
struct StringMap;

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map;
        impl<'de> Visitor<'de> for Map {
            type Value = StringMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringMap, A::Error> {
                while map.next_entry::<IgnoredAny, SkippedString>()?.is_some() {}
                Ok(StringMap)
            }
        }
        d.deserialize_map(Map)
    }
}

/// A string, checked and not kept (serde_json hands it over borrowed or in its scratch buffer).
struct SkippedString;

impl<'de> Deserialize<'de> for SkippedString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Str;
        impl Visitor<'_> for Str {
            type Value = SkippedString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SkippedString, E> {
                Ok(SkippedString)
            }
        }
        d.deserialize_str(Str)
    }
}
