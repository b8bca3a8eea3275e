//! The writes a plan consists of ([`Action`]), what kind each is, and why a write is refused
//! ([`ConflictReason`], [`BackingRefusal`]). Shown by name only: a copy's data never reaches a log.

use crate::keys::{self, ProjectId};
use crate::world;
use k8s_openapi::api::core::v1::Secret;
use std::fmt;
use std::sync::Arc;

/// A copy to write into one namespace: the original's copy, shared by every namespace it goes to
/// (100,000 copies planned at once would otherwise each hold their own labels, annotations and
/// data), and the namespace.
#[derive(Clone, PartialEq)]
pub struct PlacedCopy {
    pub namespace: String,
    /// The copy, without a namespace.
    pub secret: Arc<Secret>,
}

impl PlacedCopy {
    pub fn new(namespace: &str, secret: Arc<Secret>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            secret,
        }
    }

    /// The copy as it is written: placed in its namespace.
    pub fn placed(&self) -> Secret {
        let mut copy = (*self.secret).clone();
        copy.metadata.namespace = Some(self.namespace.clone());
        copy
    }
}

/// One write (or, for [`Action::Conflict`], one refusal to write).
#[derive(Clone, PartialEq)]
pub enum Action {
    /// No secret of that name exists: create the copy.
    Create { copy: PlacedCopy },
    /// A secret that is not a copy holds the name: replace it (Warn policy, or consent).
    Overwrite {
        copy: PlacedCopy,
        existing_uid: String,
        /// The project-scoped label it carried when planned (`None`: none): one labelled since, or
        /// labelled otherwise, may have become another project's original, and is planned again
        /// rather than replaced.
        label: Option<String>,
    },
    /// The copy exists and differs: replace it in place, conditional on the version the index holds.
    Update {
        copy: PlacedCopy,
        resource_version: String,
    },
    /// The copy's type or immutability differs: delete it, then create it again.
    Recreate {
        copy: PlacedCopy,
        existing_uid: String,
    },
    /// A copy nobody wants any more.
    Delete {
        namespace: String,
        name: String,
        uid: String,
        /// The copy's origin (`<namespace>/<name>`), when it names one.
        origin: Option<String>,
    },
    /// A copy is wanted where another secret holds the name, and overwriting it is not allowed.
    Conflict {
        namespace: String,
        name: String,
        origin: String,
        reason: ConflictReason,
    },
    /// A project has no `status.backingNamespace`: set it, and create the namespace (marked as the
    /// project's) if missing. With a `refusal`, the project cannot have `backing_namespace`: only
    /// its BackingNamespaceReady condition is set (and an Event raised). Without one and with the
    /// status already set, the condition is turned back to ready.
    SetBackingNamespace {
        project: ProjectId,
        backing_namespace: String,
        create_namespace: bool,
        refusal: Option<BackingRefusal>,
    },
    /// A namespace's projectId label disagrees with its annotation: set it (or remove it).
    FixNamespaceLabel {
        namespace: String,
        label: Option<String>,
    },
    /// An original lacks the cluster label the mutator would have added.
    AddClusterLabel {
        namespace: String,
        name: String,
        cluster: String,
    },
}

/// Why a wanted copy cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictReason {
    /// `--overwrite-policy=deny` and the original does not carry the consent annotation.
    NoConsent,
    /// The name is held by an original of another project (its backing namespace is in this one).
    HeldByOriginal,
    /// The original's ignore-namespaces list cannot be read (written past the webhook, or valid
    /// under an older version's limits): which namespaces it excludes is unknown, so no copy is
    /// written and none removed until it is fixed.
    UnreadableIgnoreList,
    /// The original's copies would carry more labels or annotations than the webhook reads of an
    /// object (S6; written past the webhook): such a copy could never be reviewed again, so never
    /// changed or deleted, and its namespace never finish terminating.
    CopyMetadataTooLarge,
}

impl fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoConsent => write!(
                f,
                "a secret that is not a copy holds the name and the original lacks {}=\"true\"",
                keys::ALLOW_OVERWRITE_ANNOTATION
            ),
            Self::HeldByOriginal => write!(
                f,
                "the name is held by a project-scoped original, which is never overwritten"
            ),
            Self::UnreadableIgnoreList => write!(
                f,
                "the original's {} annotation cannot be read, so which namespaces it excludes is \
                 unknown; fix it (the webhook says what is wrong with it)",
                keys::IGNORE_NAMESPACES_ANNOTATION
            ),
            Self::CopyMetadataTooLarge => write!(
                f,
                "the original's copies would carry more than {} labels or annotations (its own plus \
                 those every copy adds), which the webhook could never review again; remove some",
                keys::MAX_METADATA_ENTRIES
            ),
        }
    }
}

/// Why a project cannot have a backing namespace (`--manage-backing-namespaces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackingRefusal {
    /// Other projects claim the same namespace: neither gets it.
    Claimed { rivals: Vec<ProjectId> },
    /// The namespace it would get exists and is not marked as the project's.
    Taken,
    /// The project's name cannot form a namespace name.
    InvalidName,
    /// The recorded namespace does not exist, and another name than the one the reconciler gives.
    Missing,
}

impl BackingRefusal {
    /// The condition's and the Event's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Claimed { .. } => keys::BACKING_NAMESPACE_CLAIMED,
            Self::Taken => keys::BACKING_NAMESPACE_TAKEN,
            Self::InvalidName => keys::INVALID_PROJECT_NAME,
            Self::Missing => keys::BACKING_NAMESPACE_MISSING,
        }
    }

    /// What conflicts, why, and how to fix it, for the condition and the Event.
    pub fn message(&self, project: &ProjectId, namespace: &str) -> String {
        match self {
            Self::Claimed { rivals } => format!(
                "namespace {namespace:?} is claimed as a backing namespace by project {project} and \
                 also by {}; a backing namespace belongs to exactly one project, so none of them gets \
                 it and no secret is copied from it or removed because of it; remove the claim \
                 (status.backingNamespace) from every project it does not belong to",
                list(rivals)
            ),
            Self::Taken => format!(
                "namespace {namespace:?}, project {project}'s backing namespace, exists and is not \
                 marked as its ({of}={project}, {uid}=<the Project's metadata.uid>); a namespace \
                 not marked for the project is never adopted, so that nobody's namespace is taken \
                 over, nor anyone's namespace made one; if it is meant to be this project's, \
                 annotate it with both, else remove it or give the project another name or \
                 status.backingNamespace",
                of = keys::BACKING_NAMESPACE_OF_ANNOTATION,
                uid = keys::BACKING_NAMESPACE_UID_ANNOTATION,
            ),
            Self::InvalidName => format!(
                "project name {:?} cannot form a namespace name (at most 63 lowercase letters, digits \
                 and '-', starting and ending with a letter or digit), so project {project} gets no \
                 backing namespace; create the project again under such a name",
                project.project
            ),
            Self::Missing => format!(
                "namespace {namespace:?}, recorded as project {project}'s backing namespace \
                 (status.backingNamespace), does not exist; the reconciler makes again only the name \
                 it gives ({}), so that it never takes a name someone else chose; create it with \
                 {}={project} and {}=<the Project's metadata.uid>, or clear the status",
                project.generated_backing_namespace(),
                keys::BACKING_NAMESPACE_OF_ANNOTATION,
                keys::BACKING_NAMESPACE_UID_ANNOTATION,
            ),
        }
    }
}

fn list(projects: &[ProjectId]) -> String {
    let names: Vec<String> = projects.iter().map(ToString::to_string).collect();
    names.join(", ")
}

/// The kind of an action, for metrics, events and the plan report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    Create,
    Overwrite,
    Update,
    Recreate,
    Delete,
    Conflict,
    SetBackingNamespace,
    FixNamespaceLabel,
    AddClusterLabel,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Overwrite => "overwrite",
            Self::Update => "update",
            Self::Recreate => "recreate",
            Self::Delete => "delete",
            Self::Conflict => "conflict",
            Self::SetBackingNamespace => "set_backing_namespace",
            Self::FixNamespaceLabel => "fix_namespace_label",
            Self::AddClusterLabel => "add_cluster_label",
        }
    }
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Self::Create { .. } => ActionKind::Create,
            Self::Overwrite { .. } => ActionKind::Overwrite,
            Self::Update { .. } => ActionKind::Update,
            Self::Recreate { .. } => ActionKind::Recreate,
            Self::Delete { .. } => ActionKind::Delete,
            Self::Conflict { .. } => ActionKind::Conflict,
            Self::SetBackingNamespace { .. } => ActionKind::SetBackingNamespace,
            Self::FixNamespaceLabel { .. } => ActionKind::FixNamespaceLabel,
            Self::AddClusterLabel { .. } => ActionKind::AddClusterLabel,
        }
    }

    /// The copy a write of a copy writes.
    pub fn copy(&self) -> Option<&PlacedCopy> {
        match self {
            Self::Create { copy }
            | Self::Overwrite { copy, .. }
            | Self::Update { copy, .. }
            | Self::Recreate { copy, .. } => Some(copy),
            _ => None,
        }
    }

    /// The namespace of the object written (empty for cluster-scoped namespace writes).
    pub fn namespace(&self) -> &str {
        match self {
            Self::Create { copy }
            | Self::Overwrite { copy, .. }
            | Self::Update { copy, .. }
            | Self::Recreate { copy, .. } => &copy.namespace,
            Self::Delete { namespace, .. }
            | Self::Conflict { namespace, .. }
            | Self::AddClusterLabel { namespace, .. } => namespace,
            Self::SetBackingNamespace { project, .. } => &project.cluster,
            Self::FixNamespaceLabel { .. } => "",
        }
    }

    /// The name of the object written.
    pub fn name(&self) -> &str {
        match self {
            Self::Create { copy }
            | Self::Overwrite { copy, .. }
            | Self::Update { copy, .. }
            | Self::Recreate { copy, .. } => {
                copy.secret.metadata.name.as_deref().unwrap_or_default()
            }
            Self::Delete { name, .. }
            | Self::Conflict { name, .. }
            | Self::AddClusterLabel { name, .. } => name,
            Self::SetBackingNamespace { project, .. } => &project.project,
            Self::FixNamespaceLabel { namespace, .. } => namespace,
        }
    }

    /// The original (`<namespace>/<name>`) a copy action is about.
    pub fn origin(&self) -> Option<&str> {
        if let Some(copy) = self.copy() {
            return world::annotation(&copy.secret.metadata, keys::ORIGIN_ANNOTATION);
        }
        match self {
            Self::Delete { origin, .. } => origin.as_deref(),
            Self::Conflict { origin, .. } => Some(origin),
            // The writes of copies are answered above; the repairs are about no original.
            _ => None,
        }
    }
}

/// Names and kinds only: an action's copy holds secret data, which must never reach a log.
impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.kind().as_str(),
            self.namespace(),
            self.name()
        )?;
        if let Some(origin) = self.origin() {
            write!(f, " (origin {origin})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::fixtures::*;

    #[test]
    fn debug_never_shows_data() {
        let world = base();
        let shown = format!("{:?}", actions(&world, WARN));
        assert!(!shown.contains("dog") && !shown.contains("ZG9n"), "{shown}");
    }
}
