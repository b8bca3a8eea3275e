//! Every label and annotation key the product reads or writes, the project-ID format, and the naming
//! of backing namespaces. No other module spells one of these strings.

use sha2::{Digest, Sha256};
use std::fmt;

/// Label on a project-scoped secret (original and copies); its value is the project's name.
pub const PROJECT_SCOPED_LABEL: &str = "management.cattle.io/project-scoped-secret";
/// Label the mutator adds to originals: the cluster part of the project ID.
pub const PROJECT_SCOPED_CLUSTER_LABEL: &str = "management.cattle.io/project-scoped-secret-cluster";
/// Annotation on an original: comma-separated namespace names or anchored patterns to skip.
pub const IGNORE_NAMESPACES_ANNOTATION: &str =
    "management.cattle.io/project-scoped-secret-ignore-namespaces";
/// Rancher's copy marker.
pub const COPY_ANNOTATION: &str = "management.cattle.io/project-scoped-secret-copy";
/// Rancher's second copy marker (user secret).
pub const USER_SECRET_ANNOTATION: &str = "secret.user.cattle.io/secret";
/// Our copy origin: `<backingNamespace>/<name>` of the original.
pub const ORIGIN_ANNOTATION: &str = "scoped-secrets.io/origin";
/// Our copy origin: the original's uid.
pub const ORIGIN_UID_ANNOTATION: &str = "scoped-secrets.io/origin-uid";
/// On a copy that replaced the namespace's own secret (an overwrite): that secret is gone for good,
/// and leaving the project removes the copy too; the leave warning names such copies.
pub const REPLACED_ANNOTATION: &str = "scoped-secrets.io/replaced";
/// Consent on an original to overwrite non-copy secrets under `--overwrite-policy=deny`.
pub const ALLOW_OVERWRITE_ANNOTATION: &str = "scoped-secrets.io/allow-overwrite";
/// Namespace annotation (`<cluster>:<project>`, the truth) and label (`<project>`, a mirror).
pub const PROJECT_ID_KEY: &str = "field.cattle.io/projectId";
/// Namespace annotation written by the reconciler when it creates a backing namespace: the project
/// (`<cluster>:<project>`) it belongs to. An existing namespace is only ever adopted as a backing
/// namespace when it carries this annotation naming that very project.
pub const BACKING_NAMESPACE_OF_ANNOTATION: &str = "scoped-secrets.io/backing-namespace-of";
/// Beside [`BACKING_NAMESPACE_OF_ANNOTATION`]: the uid of the Project the namespace was created for.
/// A project re-created under a deleted one's name has another uid, so it never inherits the
/// deleted project's namespace and the originals left in it.
pub const BACKING_NAMESPACE_UID_ANNOTATION: &str = "scoped-secrets.io/backing-namespace-uid";
/// Both ownership marks; only the reconciler (or whoever may update the named Project's status)
/// writes them.
pub const BACKING_NAMESPACE_MARKS: [&str; 2] = [
    BACKING_NAMESPACE_OF_ANNOTATION,
    BACKING_NAMESPACE_UID_ANNOTATION,
];

/// The condition on a Project's status (ours, never Rancher's) saying whether every copy of its
/// originals is in place in the cluster its namespaces are in; its reasons are
/// [`crate::clusters::condition::Reason`].
pub const COPIES_IN_PLACE_CONDITION: &str = "CopiesInPlace";

/// The condition on a Project's status (ours, never Rancher's) saying whether it owns a backing
/// namespace, and its reasons.
pub const BACKING_NAMESPACE_READY_CONDITION: &str = "BackingNamespaceReady";
/// The project owns its backing namespace.
pub const BACKING_NAMESPACE_ASSIGNED: &str = "BackingNamespaceAssigned";
/// Another project claims the same namespace: neither gets it.
pub const BACKING_NAMESPACE_CLAIMED: &str = "BackingNamespaceClaimed";
/// The namespace the project would get exists and is not marked for it.
pub const BACKING_NAMESPACE_TAKEN: &str = "BackingNamespaceTaken";
/// The project's name cannot form a namespace name.
pub const INVALID_PROJECT_NAME: &str = "InvalidProjectName";
/// The recorded backing namespace does not exist, and is not a name the reconciler gives.
pub const BACKING_NAMESPACE_MISSING: &str = "BackingNamespaceMissing";

/// Label on a Secret in the product's namespace registering a downstream cluster; its value is the
/// cluster id (the cluster part of project IDs).
pub const CLUSTER_REGISTRATION_LABEL: &str = "scoped-secrets.io/cluster";
/// Key of a registration Secret's data holding the kubeconfig (the Cluster API and Rancher shape).
pub const KUBECONFIG_KEY: &str = "value";

/// Value of the boolean marker annotations.
pub const TRUE: &str = "true";

/// Every annotation whose presence marks a secret as a copy; only the reconciler may write them.
pub const COPY_MARKERS: [&str; 4] = [
    COPY_ANNOTATION,
    USER_SECRET_ANNOTATION,
    ORIGIN_ANNOTATION,
    ORIGIN_UID_ANNOTATION,
];

/// Metadata of an original that is not carried to its copies: it would make other tools believe they
/// own the copy (kubectl apply, Helm, Argo CD, Flux), or it is ours and only means something on the original.
const NOT_COPIED_EXACT: [&str; 8] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "argocd.argoproj.io/tracking-id",
    "argocd.argoproj.io/instance",
    // Argo CD's tracking label before 3.0 (`application.instanceLabelKey`): a copy carrying it is an
    // orphan of that application, which Argo CD would show out of sync and try to prune.
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    ALLOW_OVERWRITE_ANNOTATION,
    IGNORE_NAMESPACES_ANNOTATION,
    // Written by the reconciler on the copies that overwrote a secret, never carried over: an
    // original carrying it would make every copy claim it replaced something.
    REPLACED_ANNOTATION,
];
const NOT_COPIED_PREFIXES: [&str; 4] = [
    "meta.helm.sh/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "fluxcd.controlplane.io/",
];

/// Whether an original's label or annotation key is left off its copies.
pub fn is_not_copied(key: &str) -> bool {
    NOT_COPIED_EXACT.contains(&key) || NOT_COPIED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The most labels, and the most annotations, of an object the webhook decodes (each costs ~100
/// bytes decoded for as little as 4 bytes of body); a review of an object with more is refused. An
/// original whose copies would carry more is refused (S6): their reviews, deletes included, could
/// not be decoded, and a namespace holding one could never finish terminating.
pub const MAX_METADATA_ENTRIES: usize = 1024;

/// The Project custom resource: group, version, kind and plural.
pub const PROJECT_GROUP: &str = "management.cattle.io";
pub const PROJECT_VERSION: &str = "v3";
pub const PROJECT_KIND: &str = "Project";
pub const PROJECT_PLURAL: &str = "projects";
/// The SubjectAccessReview verb that lets a user move namespaces into a project (Rancher's rule).
pub const MANAGE_NAMESPACES_VERB: &str = "manage-namespaces";

/// Secret type that may never be project-scoped.
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// Secret types that admission messages name by what they hold (S1).
pub const TLS_TYPE: &str = "kubernetes.io/tls";
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CFG_TYPE: &str = "kubernetes.io/dockercfg";

/// A project's identity: `<cluster>:<project>` in annotation form, `<project>` in label form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId {
    pub cluster: String,
    pub project: String,
}

/// Why a projectId annotation is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectIdError {
    #[error("project ID {0:?} is not of the form <cluster>:<project>")]
    NoSeparator(String),
    #[error("project ID {0:?} has an empty cluster or project part")]
    EmptyPart(String),
}

impl ProjectId {
    pub fn new(cluster: impl Into<String>, project: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            project: project.into(),
        }
    }

    /// Parses the annotation form `<cluster>:<project>`; both parts must be non-empty and the project
    /// part may not contain another colon.
    pub fn parse(value: &str) -> Result<Self, ProjectIdError> {
        let (cluster, project) = value
            .split_once(':')
            .ok_or_else(|| ProjectIdError::NoSeparator(value.to_owned()))?;
        if cluster.is_empty() || project.is_empty() || project.contains(':') {
            return Err(ProjectIdError::EmptyPart(value.to_owned()));
        }
        Ok(Self::new(cluster, project))
    }

    /// The legacy backing namespace (the project's name) used when `status.backingNamespace` is empty.
    pub fn legacy_backing_namespace(&self) -> &str {
        &self.project
    }

    /// The backing namespace we create for a project without one.
    ///
    /// Different (cluster, project) pairs must never get the same name, or one project could take
    /// over another's backing namespace (`local:p-vwxyz` and `local-p:vwxyz` both gave
    /// `local-p-vwxyz` once). So the name is an injective encoding: every `-` of the cluster is
    /// doubled, then one `-` separates it from the project (`local:p-vwxyz` -> `local-p-vwxyz`,
    /// `local-p:vwxyz` -> `local--p-vwxyz`). Cluster and project names start and end with a letter or
    /// digit, so the first dash run of odd length is the separator and always exactly one dash long:
    /// the pair can be read back.
    ///
    /// Past 63 characters the name is shortened: a prefix of the encoded cluster, `---` (a first odd
    /// dash run of three, which no full encoding has, so a shortened name never equals anyone's full
    /// one), a prefix of the project, and 16 hex digits (64 bits) of SHA-256 over the pair. Finding
    /// another pair with the same shortened name takes a second preimage of 64 bits.
    ///
    /// Only meaningful for project names that are valid namespace names ([`is_namespace_name`]);
    /// the webhook refuses other names and the reconciler skips them.
    pub fn generated_backing_namespace(&self) -> String {
        let cluster = self.cluster.replace('-', "--");
        let full = format!("{cluster}-{}", self.project);
        if full.len() <= MAX_NAMESPACE_LEN {
            return full;
        }
        let digest = Sha256::digest(format!("{}:{}", self.cluster, self.project).as_bytes());
        let hash: String = digest
            .iter()
            .take(HASH_BYTES)
            .map(|b| format!("{b:02x}"))
            .collect();
        // Cutting inside a doubled dash leaves a lone one: trimming the end keeps every dash run of
        // the cluster part even.
        let cluster = prefix(&cluster, CLUSTER_PREFIX_LEN).trim_end_matches('-');
        let room = MAX_NAMESPACE_LEN - cluster.len() - SHORTENED_SEPARATOR.len() - hash.len() - 1;
        let project = prefix(&self.project, room).trim_end_matches('-');
        if project.is_empty() {
            format!("{cluster}{SHORTENED_SEPARATOR}{hash}")
        } else {
            format!("{cluster}{SHORTENED_SEPARATOR}{project}-{hash}")
        }
    }
}

/// The first `len` bytes of an ASCII name (namespace and project names are ASCII once validated;
/// anything else is cut at a character boundary below `len`).
fn prefix(name: &str, len: usize) -> &str {
    let mut end = len.min(name.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// How much of the encoded cluster a shortened backing namespace keeps.
const CLUSTER_PREFIX_LEN: usize = 20;
/// Separates cluster and project in a shortened backing namespace (see
/// [`ProjectId::generated_backing_namespace`]).
const SHORTENED_SEPARATOR: &str = "---";
/// Bytes of SHA-256 in a shortened backing namespace (16 hex digits).
const HASH_BYTES: usize = 8;

/// Whether a name can be a namespace's (an RFC 1123 label): at most 63 lowercase letters, digits and
/// `-`, starting and ending with a letter or digit.
pub fn is_namespace_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    name.len() <= MAX_NAMESPACE_LEN
        && edge(bytes.first())
        && edge(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.cluster, self.project)
    }
}

const MAX_NAMESPACE_LEN: usize = 63;

/// The value of [`ORIGIN_ANNOTATION`] for an original.
pub fn origin_value(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The `(namespace, name)` of an [`ORIGIN_ANNOTATION`] value; `None` when it is not of that form.
pub fn parse_origin(value: &str) -> Option<(&str, &str)> {
    value
        .split_once('/')
        .filter(|(namespace, name)| !namespace.is_empty() && !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_project_ids() {
        let id = ProjectId::parse("local:p-vwxyz").expect("valid id");
        assert_eq!(id, ProjectId::new("local", "p-vwxyz"));
        assert_eq!(id.to_string(), "local:p-vwxyz");
    }

    #[test]
    fn rejects_malformed_project_ids() {
        for bad in ["p-vwxyz", ":p", "local:", ":", "a:b:c", ""] {
            assert!(ProjectId::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn backing_namespace_fits_63_characters() {
        let short = ProjectId::new("local", "p-vwxyz");
        assert_eq!(short.generated_backing_namespace(), "local-p-vwxyz");
        let long = ProjectId::new("c".repeat(40), "p".repeat(40));
        let name = long.generated_backing_namespace();
        assert_eq!(name.len(), 63);
        assert!(name.starts_with("cccc"));
        assert!(is_namespace_name(&name), "{name}");
        assert_ne!(
            name,
            ProjectId::new("c".repeat(40), "q".repeat(40)).generated_backing_namespace()
        );
    }

    #[test]
    fn generated_names_of_different_projects_never_collide() {
        // The hijack of issue 9: both of these once gave `local-p-vwxyz`.
        assert_eq!(
            ProjectId::new("local", "p-vwxyz").generated_backing_namespace(),
            "local-p-vwxyz"
        );
        assert_eq!(
            ProjectId::new("local-p", "vwxyz").generated_backing_namespace(),
            "local--p-vwxyz"
        );
        // Every split of a dashed string into cluster and project, short and past 63 characters,
        // and the shortened names against the full ones.
        let mut seen = std::collections::HashMap::new();
        for text in [
            "a-b-c-d",
            "x--y-z",
            &format!("{}-{}", "c-".repeat(15), "p-q".repeat(12)),
        ] {
            for (at, _) in text.match_indices('-') {
                let (cluster, project) = (&text[..at], &text[at + 1..]);
                if !is_namespace_name(cluster) || !is_namespace_name(project) {
                    continue;
                }
                let id = ProjectId::new(cluster, project);
                let name = id.generated_backing_namespace();
                assert!(is_namespace_name(&name), "{id} gave {name:?}");
                if let Some(other) = seen.insert(name.clone(), id.clone()) {
                    panic!("{id} and {other} both give {name:?}");
                }
            }
        }
        assert!(seen.len() > 10, "too few pairs tried: {seen:?}");
    }

    #[test]
    fn a_shortened_name_is_never_a_full_encoding() {
        let long = ProjectId::new("c-d".repeat(10), "p".repeat(50)).generated_backing_namespace();
        assert_eq!(long.len(), 63);
        // The first dash run of odd length is `---`: no (cluster, project) encodes to that.
        let first_odd_run = long
            .split(|c: char| c != '-')
            .find(|run| run.len() % 2 == 1)
            .map(str::len);
        assert_eq!(first_odd_run, Some(3), "{long}");
    }

    #[test]
    fn namespace_names_are_rfc_1123_labels() {
        for good in ["a", "p-vwxyz", "0abc", &"a".repeat(63)] {
            assert!(is_namespace_name(good), "{good:?}");
        }
        for bad in ["", "p.dotted", "-a", "a-", "A", "a_b", &"a".repeat(64), "é"] {
            assert!(!is_namespace_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn origins_round_trip() {
        assert_eq!(parse_origin(&origin_value("ns", "db")), Some(("ns", "db")));
        for bad in ["db", "/db", "ns/", ""] {
            assert_eq!(parse_origin(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tracking_keys_are_not_copied() {
        assert!(is_not_copied(
            "kubectl.kubernetes.io/last-applied-configuration"
        ));
        assert!(is_not_copied("meta.helm.sh/release-name"));
        assert!(is_not_copied("app.kubernetes.io/instance"));
        assert!(!is_not_copied("app.kubernetes.io/name"));
        assert!(is_not_copied(ALLOW_OVERWRITE_ANNOTATION));
        assert!(!is_not_copied("team"));
    }
}
