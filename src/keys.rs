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
/// Consent on an original to overwrite non-copy secrets under `--overwrite-policy=deny`.
pub const ALLOW_OVERWRITE_ANNOTATION: &str = "scoped-secrets.io/allow-overwrite";
/// Namespace annotation (`<cluster>:<project>`, the truth) and label (`<project>`, a mirror).
pub const PROJECT_ID_KEY: &str = "field.cattle.io/projectId";

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
const NOT_COPIED_EXACT: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "argocd.argoproj.io/tracking-id",
    "argocd.argoproj.io/instance",
    "app.kubernetes.io/managed-by",
    ALLOW_OVERWRITE_ANNOTATION,
    IGNORE_NAMESPACES_ANNOTATION,
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

    /// The backing namespace we create for a project without one: `<cluster>-<project>`, shortened
    /// with a hash suffix when it would exceed a namespace name's 63 characters.
    pub fn generated_backing_namespace(&self) -> String {
        let full = format!("{}-{}", self.cluster, self.project);
        if full.len() <= MAX_NAMESPACE_LEN {
            return full;
        }
        let digest = Sha256::digest(full.as_bytes());
        let suffix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let keep = MAX_NAMESPACE_LEN - suffix.len() - 1;
        let head = full[..keep].trim_end_matches('-');
        format!("{head}-{suffix}")
    }
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
        assert_ne!(
            name,
            ProjectId::new("c".repeat(40), "q".repeat(40)).generated_backing_namespace()
        );
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
        assert!(is_not_copied(ALLOW_OVERWRITE_ANNOTATION));
        assert!(!is_not_copied("team"));
    }
}
