//! The admission target: bytes → `parse_request` (the lean decoder) → every entry's policy
//! (`Review` for each `Rules`, `mutate`, `projects::review`) → `respond`, or `error_review` /
//! `error_body` for a body that does not decode.
//!
//! Inputs are arbitrary bytes, the seed corpus (`corpus/`) with byte edits, and structured edits
//! of AdmissionReviews (the corpus, or ones made from the shapes of `src/policy/testing.rs`): kinds,
//! operations, the product's label and annotation keys with odd values, huge and nested fields,
//! missing fields and wrong types, so that most inputs get past decoding.
//!
//! Secret data in inputs always carries the marker `S3CR3T` (or is the number 7331337133), so an
//! answer that contains one has leaked it.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use scoped_secrets::keys;
use scoped_secrets::plan::{OverwritePolicy, ProtectedNamespaces, Settings};
use scoped_secrets::policy::{self, Config, Decision, Facts, Mode, Review, Rules};
use scoped_secrets::webhook::{lean, review};
use scoped_secrets::world::World;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const CORPUS: [&str; 5] = [
    include_str!("corpus/secret-create-original.json"),
    include_str!("corpus/secret-update-copy.json"),
    include_str!("corpus/secret-delete-original.json"),
    include_str!("corpus/namespace-update-join.json"),
    include_str!("corpus/project-create.json"),
];

const MARKER: &str = "S3CR3T";
const NUMBER_MARKER: u64 = 7_331_337_133;
const RECONCILER: &str = "system:serviceaccount:scoped-secrets:scoped-secrets";

/// Strings the rules care about, and odd ones.
const STRINGS: &[&str] = &[
    "",
    "p-vwxyz",
    "local:p-vwxyz",
    "local-p-vwxyz",
    "local:p-other",
    "true",
    "false",
    "Secret",
    "Namespace",
    "Project",
    "ConfigMap",
    "v1",
    "management.cattle.io",
    "CREATE",
    "UPDATE",
    "DELETE",
    "CONNECT",
    "admission.k8s.io/v1",
    "admission.k8s.io/v1beta1",
    "AdmissionReview",
    "team-a",
    "team-b",
    "dying",
    "newcomer",
    "other",
    "kube-system",
    "db",
    "cache",
    "api",
    "local",
    "status",
    RECONCILER,
    "line\nbreak\r\ttab\u{7}bell\u{0}nul",
    "ünïcødé ✓ 🚀 \u{202e}rtl",
    "a:b:c",
    ":",
    "local:",
    ":p-vwxyz",
    "local-p-vwxyz/db",
    "/",
    "^team-.*$",
    "(",
    "team-a, team-b ,,",
    "kubernetes.io/service-account-token",
    "2024-01-01T00:00:00Z",
    "not-a-time",
    "\"quoted\"",
    "\\",
    "Terminating",
    "uid-p-vwxyz",
];

const KEYS: &[&str] = &[
    keys::PROJECT_SCOPED_LABEL,
    keys::PROJECT_SCOPED_CLUSTER_LABEL,
    keys::IGNORE_NAMESPACES_ANNOTATION,
    keys::COPY_ANNOTATION,
    keys::USER_SECRET_ANNOTATION,
    keys::ORIGIN_ANNOTATION,
    keys::ORIGIN_UID_ANNOTATION,
    keys::REPLACED_ANNOTATION,
    keys::ALLOW_OVERWRITE_ANNOTATION,
    keys::PROJECT_ID_KEY,
    keys::BACKING_NAMESPACE_OF_ANNOTATION,
    keys::BACKING_NAMESPACE_UID_ANNOTATION,
    "kubectl.kubernetes.io/last-applied-configuration",
    "meta.helm.sh/release-name",
    "kubernetes.io/metadata.name",
    "app",
    "weird key\n",
];

/// Where structured edits land.
const PATHS: &[&str] = &[
    "/apiVersion",
    "/kind",
    "/request",
    "/request/uid",
    "/request/kind",
    "/request/kind/kind",
    "/request/kind/group",
    "/request/kind/version",
    "/request/resource",
    "/request/subResource",
    "/request/requestKind",
    "/request/name",
    "/request/namespace",
    "/request/operation",
    "/request/userInfo",
    "/request/userInfo/username",
    "/request/userInfo/groups",
    "/request/userInfo/extra",
    "/request/object",
    "/request/oldObject",
    "/request/object/apiVersion",
    "/request/object/kind",
    "/request/object/metadata",
    "/request/object/metadata/name",
    "/request/object/metadata/namespace",
    "/request/object/metadata/uid",
    "/request/object/metadata/labels",
    "/request/object/metadata/annotations",
    "/request/object/metadata/finalizers",
    "/request/object/metadata/ownerReferences",
    "/request/object/metadata/deletionTimestamp",
    "/request/object/metadata/creationTimestamp",
    "/request/object/metadata/generateName",
    "/request/object/metadata/managedFields",
    "/request/object/type",
    "/request/object/immutable",
    "/request/object/spec",
    "/request/object/spec/clusterName",
    "/request/object/status",
    "/request/object/status/phase",
    "/request/object/status/backingNamespace",
    "/request/oldObject/metadata/name",
    "/request/oldObject/metadata/labels",
    "/request/oldObject/metadata/annotations",
    "/request/oldObject/type",
    "/request/oldObject/spec/clusterName",
    "/request/oldObject/status/backingNamespace",
    "/request/dryRun",
    "/request/options",
    "/response",
];

/// A value put where a field was.
#[derive(Debug, Clone)]
pub enum Odd {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Index),
    Huge(usize),
    Nested(usize),
    BigArray(usize),
    BigObject(usize),
    Object(Vec<(Index, Index)>),
    Array(Vec<Index>),
}

fn odd() -> impl Strategy<Value = Odd> {
    prop_oneof![
        4 => Just(Odd::Null),
        2 => any::<bool>().prop_map(Odd::Bool),
        2 => any::<i64>().prop_map(Odd::Int),
        1 => any::<f64>().prop_map(Odd::Float),
        16 => any::<Index>().prop_map(Odd::Str),
        1 => (1usize..100_000).prop_map(Odd::Huge),
        2 => (1usize..80).prop_map(Odd::Nested),
        1 => (1usize..10_000).prop_map(Odd::BigArray),
        1 => (1usize..2_000).prop_map(Odd::BigObject),
        8 => prop::collection::vec((any::<Index>(), any::<Index>()), 0..6).prop_map(Odd::Object),
        4 => prop::collection::vec(any::<Index>(), 0..6).prop_map(Odd::Array),
    ]
}

impl Odd {
    fn value(&self) -> Value {
        let s = |i: &Index| Value::from(*i.get(STRINGS));
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => json!(b),
            Self::Int(i) => json!(i),
            Self::Float(f) => json!(f),
            Self::Str(i) => s(i),
            Self::Huge(n) => Value::from("x".repeat(*n)),
            Self::Nested(depth) => (0..*depth).fold(json!("deep"), |inner, d| {
                if d % 2 == 0 {
                    json!([inner])
                } else {
                    json!({ "k": inner })
                }
            }),
            Self::BigArray(n) => Value::Array(vec![json!("a"); *n]),
            Self::BigObject(n) => {
                Value::Object((0..*n).map(|i| (format!("k{i}"), json!("v"))).collect())
            }
            Self::Object(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k.get(KEYS)).to_owned(), s(v)))
                    .collect(),
            ),
            Self::Array(items) => Value::Array(items.iter().map(s).collect()),
        }
    }
}

/// Secret data, in the shape a field holds it (always marked).
#[derive(Debug, Clone)]
pub enum Data {
    Map(usize),
    Str,
    Number,
    Array,
    Nested,
    Mixed,
}

impl Data {
    fn value(&self, seed: usize) -> Value {
        let secret = |i: usize| Value::from(format!("{MARKER}-{seed}-{i}-c2VjcmV0"));
        match self {
            Self::Map(n) => {
                Value::Object((0..*n).map(|i| (format!("key{i}"), secret(i))).collect())
            }
            Self::Str => secret(0),
            Self::Number => json!(NUMBER_MARKER),
            Self::Array => json!([secret(0), secret(1)]),
            Self::Nested => json!({ "password": { "inner": secret(0) } }),
            Self::Mixed => {
                json!({ "a": secret(0), "b": NUMBER_MARKER, "c": null, "d": [secret(1)] })
            }
        }
    }
}

fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        6 => (0usize..5).prop_map(Data::Map),
        1 => Just(Data::Str),
        1 => Just(Data::Number),
        1 => Just(Data::Array),
        1 => Just(Data::Nested),
        1 => Just(Data::Mixed),
    ]
}

#[derive(Debug, Clone)]
pub enum Edit {
    Set(Index, Odd),
    Remove(Index),
    /// A label (or, when the flag is set, an annotation) on object (or oldObject).
    Meta {
        old: bool,
        annotation: bool,
        key: Index,
        value: Odd,
    },
    /// `data` (or `stringData`) of object (or oldObject).
    Payload {
        old: bool,
        string_data: bool,
        data: Data,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<Index>(), odd()).prop_map(|(p, v)| Edit::Set(p, v)),
        2 => any::<Index>().prop_map(Edit::Remove),
        6 => (any::<bool>(), any::<bool>(), any::<Index>(), odd()).prop_map(
            |(old, annotation, key, value)| Edit::Meta { old, annotation, key, value }
        ),
        2 => (any::<bool>(), any::<bool>(), data()).prop_map(
            |(old, string_data, data)| Edit::Payload { old, string_data, data }
        ),
    ]
}

#[derive(Debug, Clone)]
pub enum ByteEdit {
    Truncate(Index),
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<Index>()).prop_map(ByteEdit::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        (
            any::<Index>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                prop::sample::select(vec![
                    b"{".to_vec(),
                    b"}".to_vec(),
                    b"[".to_vec(),
                    b"\"".to_vec(),
                    b",".to_vec(),
                    b"\\u0000".to_vec(),
                    b"\\ud800".to_vec(),
                    b"null".to_vec(),
                    br#""uid":"dup","#.to_vec(),
                ]),
            ]
        )
            .prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
    ]
}

/// The request a recipe starts from.
#[derive(Debug, Clone)]
pub enum Base {
    Corpus(Index),
    /// From the shapes of `src/policy/testing.rs`: kind, operation, namespace and name.
    Made {
        kind: Index,
        op: Index,
        namespace: Index,
        name: Index,
        new: bool,
        old: bool,
    },
}

fn base() -> impl Strategy<Value = Base> {
    prop_oneof![
        any::<Index>().prop_map(Base::Corpus),
        (
            any::<Index>(),
            any::<Index>(),
            any::<Index>(),
            any::<Index>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(kind, op, namespace, name, new, old)| Base::Made {
                kind,
                op,
                namespace,
                name,
                new,
                old
            }),
    ]
}

/// One input of the admission target.
#[derive(Debug, Clone)]
pub enum Input {
    Bytes(Vec<u8>),
    Review {
        base: Base,
        edits: Vec<Edit>,
        bytes: Vec<ByteEdit>,
    },
}

/// Under which settings the policy runs, and what the cluster answers to its look-ups.
#[derive(Debug, Clone)]
pub struct Setup {
    audit: bool,
    deny_overwrites: bool,
    protect_copies: bool,
    facts: u64,
}

pub fn bytes_strategy() -> impl Strategy<Value = (Input, Setup)> {
    let raw = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (any::<Index>(), prop::collection::vec(byte_edit(), 1..6)).prop_map(|(i, edits)| {
            let mut body = i.get(&CORPUS[..]).as_bytes().to_vec();
            for e in &edits {
                apply_bytes(&mut body, e);
            }
            body
        }),
    ];
    (raw.prop_map(Input::Bytes), setup())
}

pub fn review_strategy() -> impl Strategy<Value = (Input, Setup)> {
    let review = (
        base(),
        prop::collection::vec(edit(), 0..8),
        prop::collection::vec(byte_edit(), 0..2),
    )
        .prop_map(|(base, edits, bytes)| Input::Review { base, edits, bytes });
    (review, setup())
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.8),
        any::<u64>(),
    )
        .prop_map(|(audit, deny_overwrites, protect_copies, facts)| Setup {
            audit,
            deny_overwrites,
            protect_copies,
            facts,
        })
}

fn apply_bytes(body: &mut Vec<u8>, edit: &ByteEdit) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
    match edit {
        ByteEdit::Truncate(i) => body.truncate(at(i, body.len())),
        ByteEdit::Flip(i, b) => {
            if !body.is_empty() {
                let i = i.index(body.len());
                body[i] ^= b | 1;
            }
        }
        ByteEdit::Insert(i, bytes) => {
            let i = at(i, body.len());
            body.splice(i..i, bytes.iter().copied());
        }
        ByteEdit::Delete(i, n) => {
            let i = at(i, body.len());
            let end = (i + n).min(body.len());
            body.drain(i..end);
        }
    }
}

/// The AdmissionReview a `Made` base describes, like `testing::request`.
fn made(kind: &Index, op: &Index, namespace: &Index, name: &Index, new: bool, old: bool) -> Value {
    let (kind, group, version, api_version) = *kind.get(&[
        ("Secret", "", "v1", "v1"),
        ("Namespace", "", "v1", "v1"),
        (
            "Project",
            "management.cattle.io",
            "v3",
            "management.cattle.io/v3",
        ),
        ("ConfigMap", "", "v1", "v1"),
        ("Secret", "example.com", "v1", "example.com/v1"),
    ]);
    let op = *op.get(&["CREATE", "UPDATE", "DELETE", "CONNECT"]);
    let namespace = *namespace.get(&[
        "local-p-vwxyz",
        "team-a",
        "team-b",
        "dying",
        "other",
        "newcomer",
        "kube-system",
        "local",
        "",
    ]);
    let name = *name.get(&[
        "db", "cache", "api", "web", "p-vwxyz", "team-a", "fresh", "",
    ]);
    let object = |data: bool| {
        let mut object = json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}")},
        });
        if kind == "Secret" {
            object["type"] = json!("Opaque");
            if data {
                object["data"] = json!({"password": format!("{MARKER}-aHVudGVyMg==")});
            }
        }
        if kind == "Project" {
            object["spec"] = json!({"clusterName": namespace});
        }
        object
    };
    let (new, old) = match op {
        "CREATE" => (true, old),
        "UPDATE" => (new || !old, true),
        "DELETE" => (new, true),
        _ => (new, old),
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
            "name": name,
            "namespace": if kind == "Namespace" { name } else { namespace },
            "operation": op,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": if new { object(true) } else { Value::Null },
            "oldObject": if old { object(true) } else { Value::Null },
            "dryRun": false,
        }
    })
}

/// Sets the value at a JSON pointer, making the objects on the way.
fn set(root: &mut Value, pointer: &str, value: Value) {
    let mut at = root;
    let tokens: Vec<&str> = pointer.split('/').skip(1).collect();
    for (i, token) in tokens.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        let Some(map) = at.as_object_mut() else {
            return;
        };
        if i + 1 == tokens.len() {
            map.insert((*token).to_owned(), value);
            return;
        }
        at = map.entry(*token).or_insert_with(|| json!({}));
    }
}

fn remove(root: &mut Value, pointer: &str) {
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return;
    };
    if let Some(map) = root.pointer_mut(parent).and_then(Value::as_object_mut) {
        map.remove(key);
    }
}

fn object_path(old: bool) -> &'static str {
    if old {
        "/request/oldObject"
    } else {
        "/request/object"
    }
}

pub fn body(input: &Input) -> Vec<u8> {
    match input {
        Input::Bytes(bytes) => bytes.clone(),
        Input::Review { base, edits, bytes } => {
            let mut review = match base {
                Base::Corpus(i) => {
                    serde_json::from_str(i.get::<&str>(&CORPUS)).expect("the corpus is JSON")
                }
                Base::Made {
                    kind,
                    op,
                    namespace,
                    name,
                    new,
                    old,
                } => made(kind, op, namespace, name, *new, *old),
            };
            for (seed, edit) in edits.iter().enumerate() {
                match edit {
                    Edit::Set(path, odd) => set(&mut review, path.get::<&str>(PATHS), odd.value()),
                    Edit::Remove(path) => remove(&mut review, path.get::<&str>(PATHS)),
                    Edit::Meta {
                        old,
                        annotation,
                        key,
                        value,
                    } => {
                        let field = if *annotation { "annotations" } else { "labels" };
                        let key = key.get(KEYS).replace('~', "~0").replace('/', "~1");
                        let pointer = format!("{}/metadata/{field}/{key}", object_path(*old));
                        set(&mut review, &pointer, value.value());
                    }
                    Edit::Payload {
                        old,
                        string_data,
                        data,
                    } => {
                        let field = if *string_data { "stringData" } else { "data" };
                        let pointer = format!("{}/{field}", object_path(*old));
                        set(&mut review, &pointer, data.value(seed));
                    }
                }
            }
            let mut body = serde_json::to_vec(&review).expect("serializable");
            for e in bytes {
                apply_bytes(&mut body, e);
            }
            body
        }
    }
}

/// The marked secret data of a body that parses: the strings (and the marker number) under the
/// objects' `data` and `stringData` that appear nowhere else in it.
fn secrets_of(parsed: &Value) -> Vec<String> {
    let mut secrets = BTreeSet::new();
    let mut rest = parsed.clone();
    for object in ["object", "oldObject"] {
        for field in ["data", "stringData"] {
            if let Some(payload) = parsed.pointer(&format!("/request/{object}/{field}")) {
                leaves(payload, &mut secrets);
            }
            if let Some(o) = rest
                .pointer_mut(&format!("/request/{object}"))
                .and_then(Value::as_object_mut)
            {
                o.remove(field);
            }
        }
    }
    let mut elsewhere = BTreeSet::new();
    leaves(&rest, &mut elsewhere);
    let elsewhere: Vec<String> = elsewhere.into_iter().collect();
    secrets
        .into_iter()
        .filter(|s| s.contains(MARKER) || s.contains(&NUMBER_MARKER.to_string()))
        .filter(|s| !elsewhere.iter().any(|e| e.contains(s.as_str())))
        .collect()
}

fn leaves(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => {
            out.insert(s.clone());
        }
        Value::Number(n) => {
            out.insert(n.to_string());
        }
        Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.insert(k.clone());
                leaves(v, out);
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// Whether the body is JSON without a repeated key in any object (serde's derived decoders refuse
/// those; `Value` would keep the last).
fn json_without_duplicates(body: &[u8]) -> bool {
    struct Unique;
    impl<'de> serde::Deserialize<'de> for Unique {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(UniqueVisitor)
        }
    }
    struct UniqueVisitor;
    impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
        type Value = Unique;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_unit<E>(self) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
            while seq.next_element::<Unique>()?.is_some() {}
            Ok(Unique)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
            let mut seen = BTreeSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key) {
                    return Err(serde::de::Error::custom("duplicate key"));
                }
                map.next_value::<Unique>()?;
            }
            Ok(Unique)
        }
    }
    serde_json::from_slice::<Unique>(body).is_ok()
}

/// The uid an answer must echo: that of a v1 AdmissionReview which is plain JSON within the
/// nesting limit, whatever else is wrong with it.
fn readable_uid(body: &[u8], parsed: Option<&Value>) -> Option<String> {
    let parsed = parsed?;
    if lean::too_deep(body, lean::MAX_DEPTH).is_some() || !json_without_duplicates(body) {
        return None;
    }
    if parsed["apiVersion"] != "admission.k8s.io/v1" || parsed["kind"] != "AdmissionReview" {
        return None;
    }
    parsed["request"]["uid"].as_str().map(str::to_owned)
}

fn configs(setup: &Setup) -> Config {
    Config {
        mode: if setup.audit {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        copies: Settings {
            overwrite_policy: if setup.deny_overwrites {
                OverwritePolicy::Deny
            } else {
                OverwritePolicy::Warn
            },
            protected: ProtectedNamespaces::new(&["kube-system"], "scoped-secrets"),
        },
        protect_copies: setup.protect_copies,
        reconciler_users: vec![RECONCILER.to_owned()],
        // Small enough for generated originals to cross it (S8).
        max_project_original_bytes: 64,
    }
}

/// The cluster's answers to what a review needs, drawn from `bits`.
fn facts(needs: &policy::Needs, bits: u64) -> Facts {
    let bit = |i: usize| bits >> (i % 64) & 1 == 1;
    Facts {
        may_manage_namespaces: needs
            .access_reviews
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), bit(i)))
            .collect(),
        may_update_project_status: needs
            .status_reviews
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), bit(10 + 3 * i)))
            .collect(),
        existing_secret_type: needs.secret_type_of.as_ref().and_then(|_| {
            bit(11).then(|| {
                if bit(12) {
                    "kubernetes.io/tls".to_owned()
                } else {
                    "line\nbreak".to_owned()
                }
            })
        }),
        may_update_namespaces: needs
            .namespace_update_reviews
            .iter()
            .enumerate()
            .map(|(i, ns)| (ns.clone(), bit(20 + i)))
            .collect(),
    }
}

/// What the checks of one answer need to know.
struct Expect<'a> {
    uid: &'a str,
    secrets: &'a [String],
    mutating: bool,
}

pub fn check(input: &Input, setup: &Setup, world: &World) -> Result<(), TestCaseError> {
    let body = body(input);
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let secrets = parsed.as_ref().map(secrets_of).unwrap_or_default();
    let must_echo = readable_uid(&body, parsed.as_ref());
    let request = match review::parse_request(&body) {
        Ok(request) => request,
        Err(err) => {
            let answer = match review::error_review(&err) {
                Some(answer) => {
                    let answer = to_value(&answer)?;
                    let uid = err.uid().unwrap_or_default();
                    prop_assert_eq!(&answer["response"]["allowed"], &json!(false));
                    prop_assert_eq!(&answer["response"]["status"]["code"], &json!(400));
                    check_answer(
                        &answer,
                        &Expect {
                            uid,
                            secrets: &secrets,
                            mutating: false,
                        },
                    )?;
                    answer
                }
                None => {
                    let status = review::error_body(&err);
                    prop_assert_eq!(&status["code"], &json!(400));
                    status
                }
            };
            if let Some(uid) = &must_echo {
                prop_assert_eq!(
                    &answer["response"]["uid"],
                    &json!(uid),
                    "the uid could be read but was not echoed: {}",
                    err
                );
            }
            return no_secrets(&answer, &secrets);
        }
    };
    if let Some(uid) = &must_echo {
        prop_assert_eq!(&request.uid, uid);
    }
    let cfg = configs(setup);
    let expect = |mutating| Expect {
        uid: &request.uid,
        secrets: &secrets,
        mutating,
    };
    for rules in [
        Rules::All,
        Rules::SecretGuard,
        Rules::SecretNames,
        Rules::NamespaceGuard,
    ] {
        let review = Review::new(rules, &request, &cfg);
        let facts = facts(&review.needs(world), setup.facts);
        let decision = review.decide(world, &facts);
        prop_assert!(decision.patch.is_none(), "{rules:?} returned a patch");
        answer(&request, decision, &expect(false))?;
    }
    let project_needs = policy::projects::needs(&request, world, &cfg, &Facts::default());
    let project_facts = facts(&project_needs, setup.facts);
    answer(
        &request,
        policy::projects::review(&request, world, &cfg, &project_facts),
        &expect(false),
    )?;
    answer(&request, policy::mutate(&request, world), &expect(true))
}

fn to_value<T: serde::Serialize>(answer: &T) -> Result<Value, TestCaseError> {
    let text = serde_json::to_vec(answer).map_err(|e| TestCaseError::fail(e.to_string()))?;
    serde_json::from_slice(&text).map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))
}

fn answer(
    request: &kube::core::admission::AdmissionRequest<kube::core::DynamicObject>,
    decision: Decision,
    expect: &Expect,
) -> Result<(), TestCaseError> {
    let answer = to_value(&review::respond(request, decision))?;
    check_answer(&answer, expect)
}

fn check_answer(answer: &Value, expect: &Expect) -> Result<(), TestCaseError> {
    prop_assert_eq!(&answer["apiVersion"], &json!("admission.k8s.io/v1"));
    prop_assert_eq!(&answer["kind"], &json!("AdmissionReview"));
    let response = &answer["response"];
    prop_assert_eq!(&response["uid"], &json!(expect.uid));
    prop_assert!(response["allowed"].is_boolean());
    for warning in response["warnings"].as_array().into_iter().flatten() {
        let warning = warning.as_str().unwrap_or_default();
        prop_assert!(warning.chars().count() <= 120, "too long: {warning:?}");
        prop_assert!(!warning.chars().any(char::is_control), "{warning:?}");
    }
    let message = response["status"]["message"].as_str().unwrap_or_default();
    prop_assert!(!message.chars().any(char::is_control), "{message:?}");
    let patched = response.get("patch").is_some();
    prop_assert_eq!(patched, response.get("patchType").is_some());
    if !expect.mutating {
        prop_assert!(!patched, "a validating answer carries a patch");
    }
    if patched {
        let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone())
            .map_err(|e| TestCaseError::fail(format!("patch bytes: {e}")))?;
        let ops: Value = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("patch is not JSON: {e}")))?;
        prop_assert!(ops.is_array());
        no_secrets(&ops, expect.secrets)?;
    }
    no_secrets(answer, expect.secrets)
}

fn no_secrets(answer: &Value, secrets: &[String]) -> Result<(), TestCaseError> {
    let mut said = BTreeSet::new();
    leaves(answer, &mut said);
    for secret in secrets {
        for text in &said {
            prop_assert!(
                !text.contains(secret.as_str()),
                "secret data {secret:?} in {text:?}"
            );
        }
    }
    Ok(())
}
