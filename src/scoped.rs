//! A secret carrying the project-scoped label, as the index keeps it: non-copies whole, copies by
//! metadata and digests.
//!
//! Originals are few and their data is what the copies carry (and strays may become originals when a
//! backing namespace changes hands), so they are kept whole; S8 bounds what a project's originals
//! take ([`held_bytes`]). In a downstream cluster nothing becomes an original, so a labelled secret
//! that is not a copy is kept without its data ([`Scoped::downstream`]). Copies are many (every original times
//! every namespace of its project) and only ever compared with what they should be: the index keeps
//! what the plan and the webhook read of them, and a SHA-256 digest of their labels and annotations
//! and one of their data, taken when the watch delivers them. The digest is of what the copy holds,
//! not of what we wrote, so a copy edited behind our back (a cluster-admin passes the webhook) is
//! seen as different and repaired, without any read of its content.

use crate::keys;
use crate::world::{annotation, is_copy, label};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// A labelled secret in the index.
#[derive(Debug, Clone)]
pub enum Scoped {
    /// Not a copy (an original, or a labelled secret outside any backing namespace): whole.
    Whole(Arc<Secret>),
    /// A copy: what is read of it, its content by digest.
    Copy(CopyMeta),
}

/// What the index keeps of a copy (never its data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyMeta {
    pub uid: String,
    /// The precondition of the copy's next update (see `reconciler/apply.rs`).
    pub resource_version: String,
    pub type_: Option<String>,
    pub immutable: bool,
    /// Our origin annotation (`<namespace>/<name>` of the original); absent on a Rancher copy.
    pub origin: Option<String>,
    /// The project-scoped label's value.
    pub project_label: String,
    /// Whether the copy replaced its namespace's own secret (see [`keys::REPLACED_ANNOTATION`]).
    pub replaced: bool,
    /// The copy's content, as [`Shape`] compares it.
    pub metadata_digest: Digest,
    pub data_digest: Digest,
}

impl Scoped {
    /// A downstream cluster's labelled secret: a copy by metadata and digests, as anywhere;
    /// anything else without its data. Originals live in the management cluster only, so such a
    /// secret never becomes one; the plan and the rules look at it only by name, uid and metadata
    /// (a secret a copy would overwrite). Held whole, labelled secrets that any user of a cluster
    /// without our webhook may create would grow the memory of every replica without bound.
    pub fn downstream(mut secret: Secret) -> Self {
        if !is_copy(&secret.metadata) {
            secret.data = None;
            secret.string_data = None;
        }
        Self::new(secret)
    }

    /// Keeps a copy by metadata and digests, anything else whole.
    pub fn new(secret: Secret) -> Self {
        if !is_copy(&secret.metadata) {
            return Self::Whole(Arc::new(secret));
        }
        let meta = &secret.metadata;
        Self::Copy(CopyMeta {
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            type_: secret.type_.clone(),
            immutable: secret.immutable.unwrap_or(false),
            origin: annotation(meta, keys::ORIGIN_ANNOTATION).map(str::to_owned),
            project_label: label(meta, keys::PROJECT_SCOPED_LABEL)
                .unwrap_or_default()
                .to_owned(),
            replaced: annotation(meta, keys::REPLACED_ANNOTATION) == Some(keys::TRUE),
            metadata_digest: metadata_digest(&secret),
            data_digest: data_digest(secret.data.as_ref()),
        })
    }

    /// The secret, when kept whole (it is not a copy).
    pub fn whole(&self) -> Option<&Secret> {
        match self {
            Self::Whole(secret) => Some(secret),
            Self::Copy(_) => None,
        }
    }

    /// The copy, when it is one.
    pub fn copy(&self) -> Option<&CopyMeta> {
        match self {
            Self::Whole(_) => None,
            Self::Copy(copy) => Some(copy),
        }
    }

    pub fn type_(&self) -> Option<&str> {
        match self {
            Self::Whole(secret) => secret.type_.as_deref(),
            Self::Copy(copy) => copy.type_.as_deref(),
        }
    }

    pub fn uid(&self) -> Option<&str> {
        match self {
            Self::Whole(secret) => secret.metadata.uid.as_deref(),
            Self::Copy(copy) => Some(&copy.uid),
        }
    }

    pub fn resource_version(&self) -> Option<&str> {
        match self {
            Self::Whole(secret) => secret.metadata.resource_version.as_deref(),
            Self::Copy(copy) => Some(&copy.resource_version),
        }
    }

    /// Whether a copy that replaced its namespace's own secret.
    pub fn replaced(&self) -> bool {
        self.copy().is_some_and(|c| c.replaced)
    }
}

/// What decides whether a copy is exact: its type and immutability, and digests of its labels and
/// annotations and of its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape<'a> {
    pub type_: &'a str,
    pub immutable: bool,
    pub metadata: Digest,
    pub data: Digest,
}

/// The secret type the apiserver fills in when none is given.
pub const DEFAULT_TYPE: &str = "Opaque";

impl<'a> Shape<'a> {
    pub fn of_secret(secret: &'a Secret) -> Self {
        Self::of_secret_with(
            secret,
            metadata_digest(secret),
            data_digest(secret.data.as_ref()),
        )
    }

    /// A secret's shape, with its digests already taken.
    pub fn of_secret_with(secret: &'a Secret, metadata: Digest, data: Digest) -> Self {
        Self {
            type_: secret.type_.as_deref().unwrap_or(DEFAULT_TYPE),
            immutable: secret.immutable.unwrap_or(false),
            metadata,
            data,
        }
    }

    pub fn of_copy(copy: &'a CopyMeta) -> Self {
        Self {
            type_: copy.type_.as_deref().unwrap_or(DEFAULT_TYPE),
            immutable: copy.immutable,
            metadata: copy.metadata_digest,
            data: copy.data_digest,
        }
    }
}

/// What the index spends on one entry of a map or list beside its text (the strings' headers and
/// their allocations' rounding, the map's node): a secret of many tiny keys takes far more memory
/// than its bytes say.
pub const ENTRY_BYTES: u64 = 96;

/// The bytes one entry of a secret's data takes in the index: its key, its value and
/// [`ENTRY_BYTES`].
pub fn data_entry_bytes(key: usize, value: u64) -> u64 {
    (key as u64)
        .saturating_add(value)
        .saturating_add(ENTRY_BYTES)
}

/// The bytes a base64 value (a secret's `data` in JSON) decodes to, without decoding it.
pub fn base64_decoded_len(value: &str) -> u64 {
    let padding = value.bytes().rev().take(2).filter(|&b| b == b'=').count();
    ((value.len() / 4 * 3 + value.len() % 4 * 3 / 4).saturating_sub(padding)) as u64
}

/// The bytes a secret's metadata takes in the index, as far as its writer decides it: its labels,
/// annotations, finalizers and owner references (their text and [`ENTRY_BYTES`] each).
pub fn metadata_bytes(meta: &ObjectMeta) -> u64 {
    let pairs = [&meta.labels, &meta.annotations]
        .into_iter()
        .flatten()
        .flatten()
        .map(|(k, v)| data_entry_bytes(k.len(), v.len() as u64));
    let finalizers = meta
        .finalizers
        .iter()
        .flatten()
        .map(|f| data_entry_bytes(f.len(), 0));
    let owners = meta.owner_references.iter().flatten().map(|o| {
        let text = o.api_version.len() + o.kind.len() + o.name.len() + o.uid.len();
        data_entry_bytes(text, 0)
    });
    pairs
        .chain(finalizers)
        .chain(owners)
        .fold(0, u64::saturating_add)
}

/// The bytes a secret held whole takes in the index (S8 counts an original by it): its data and
/// its metadata, as [`data_entry_bytes`] and [`metadata_bytes`] count them.
pub fn held_bytes(secret: &Secret) -> u64 {
    let data = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| data_entry_bytes(k.len(), v.0.len() as u64));
    let plain = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| data_entry_bytes(k.len(), v.len() as u64));
    data.chain(plain)
        .fold(metadata_bytes(&secret.metadata), u64::saturating_add)
}

/// The digest of a secret's labels and annotations (an absent map counts as an empty one).
pub fn metadata_digest(secret: &Secret) -> Digest {
    let mut hasher = Sha256::new();
    for map in [&secret.metadata.labels, &secret.metadata.annotations] {
        let empty = BTreeMap::new();
        let map = map.as_ref().unwrap_or(&empty);
        add_len(&mut hasher, map.len());
        for (key, value) in map {
            add_bytes(&mut hasher, key.as_bytes());
            add_bytes(&mut hasher, value.as_bytes());
        }
    }
    hasher.finalize().into()
}

/// The digest of a secret's data (absent counts as empty).
pub fn data_digest(data: Option<&BTreeMap<String, ByteString>>) -> Digest {
    let mut hasher = Sha256::new();
    let entries = data.map_or(0, BTreeMap::len);
    add_len(&mut hasher, entries);
    for (key, value) in data.into_iter().flatten() {
        add_bytes(&mut hasher, key.as_bytes());
        add_bytes(&mut hasher, &value.0);
    }
    hasher.finalize().into()
}

// Every field is length-prefixed, so no two different maps hash the same bytes.
fn add_len(hasher: &mut Sha256, len: usize) {
    hasher.update((len as u64).to_le_bytes());
}

fn add_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    add_len(hasher, bytes.len());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::fixtures::secret;

    fn copy() -> Secret {
        secret(
            "team-a",
            "db",
            &[(keys::PROJECT_SCOPED_LABEL, "p-x")],
            &[(keys::ORIGIN_ANNOTATION, "local-p-x/db")],
        )
    }

    #[test]
    fn copies_are_kept_without_their_data_and_everything_else_whole() {
        let Scoped::Copy(meta) = Scoped::new(copy()) else {
            panic!("a copy is kept by metadata");
        };
        assert_eq!(meta.uid, "uid-team-a-db");
        assert_eq!(meta.origin.as_deref(), Some("local-p-x/db"));
        assert_eq!(meta.project_label, "p-x");
        assert!(!meta.replaced);
        assert_eq!(Shape::of_copy(&meta), Shape::of_secret(&copy()));
        let original = secret(
            "local-p-x",
            "db",
            &[(keys::PROJECT_SCOPED_LABEL, "p-x")],
            &[],
        );
        let kept = Scoped::new(original.clone());
        assert_eq!(kept.whole().map(|s| &s.data), Some(&original.data));
    }

    #[test]
    fn a_downstream_clusters_labelled_secret_is_kept_without_its_data_unless_a_copy() {
        let Scoped::Copy(meta) = Scoped::downstream(copy()) else {
            panic!("a copy is kept by metadata");
        };
        assert_eq!(
            Shape::of_copy(&meta),
            Shape::of_secret(&copy()),
            "data digested"
        );
        let stray = secret("team-a", "web", &[(keys::PROJECT_SCOPED_LABEL, "p-x")], &[]);
        assert!(stray.data.is_some());
        let kept = Scoped::downstream(stray.clone());
        let kept = kept.whole().expect("a non-copy is kept as a secret");
        assert_eq!((&kept.data, &kept.string_data), (&None, &None));
        assert_eq!(kept.metadata, stray.metadata);
    }

    #[test]
    fn base64_values_count_as_the_bytes_they_decode_to() {
        for (value, bytes) in [
            ("", 0),
            ("YQ==", 1),
            ("aGk=", 2),
            ("aGk", 2),
            ("ZG9n", 3),
            ("aHVudGVyMg==", 7),
        ] {
            assert_eq!(base64_decoded_len(value), bytes, "{value}");
        }
    }

    #[test]
    fn held_bytes_count_keys_values_metadata_and_entries() {
        let mut s = secret("ns", "db", &[("app", "web")], &[("note", "ab")]);
        s.data = Some(BTreeMap::from([
            ("k".to_owned(), ByteString(b"dog".to_vec())),
            ("empty".to_owned(), ByteString(Vec::new())),
        ]));
        s.metadata.finalizers = Some(vec!["x/y".to_owned()]);
        let entries = 5 * ENTRY_BYTES;
        let text = (1 + 3) + 5 + (3 + 3) + (4 + 2) + 3;
        assert_eq!(held_bytes(&s), entries + text);
        assert_eq!(
            metadata_bytes(&s.metadata),
            3 * ENTRY_BYTES + 3 + 3 + 4 + 2 + 3
        );
    }

    #[test]
    fn digests_tell_every_difference_and_treat_absent_as_empty() {
        let base = copy();
        let edited = |f: &dyn Fn(&mut Secret)| {
            let mut s = base.clone();
            f(&mut s);
            let Shape {
                type_,
                immutable,
                metadata,
                data,
            } = Shape::of_secret(&s);
            (type_.to_owned(), immutable, metadata, data)
        };
        let shape = edited(&|_| {});
        assert_ne!(
            edited(&|s| s.data = Some([("key".to_owned(), ByteString(b"cat".to_vec()))].into())),
            shape
        );
        assert_ne!(
            edited(&|s| s.data = Some([("kez".to_owned(), ByteString(b"dog".to_vec()))].into())),
            shape
        );
        // A value moved between key and value is still different (length prefixes).
        assert_ne!(
            data_digest(Some(&[("ab".to_owned(), ByteString(b"c".to_vec()))].into())),
            data_digest(Some(&[("a".to_owned(), ByteString(b"bc".to_vec()))].into()))
        );
        // A label and an annotation with the same key and value are different.
        let mut labelled = base.clone();
        labelled.metadata.annotations = None;
        labelled.metadata.labels = Some([("k".to_owned(), "v".to_owned())].into());
        let mut annotated = base.clone();
        annotated.metadata.labels = None;
        annotated.metadata.annotations = Some([("k".to_owned(), "v".to_owned())].into());
        assert_ne!(metadata_digest(&labelled), metadata_digest(&annotated));
        assert_eq!(
            data_digest(None),
            data_digest(Some(&BTreeMap::new())),
            "absent data is empty data"
        );
        assert_eq!(edited(&|s| s.type_ = None).0, DEFAULT_TYPE);
    }
}
