//! Kubernetes Events on the original for what happened to its copies. Notes name namespaces and
//! reasons, never data.

use super::CONTROLLER_NAME;
use crate::keys;
use crate::plan::Action;
use crate::world;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Publishes Events as the reconciler.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, identity: &str) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_owned(),
            instance: Some(identity.to_owned()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes the Event for an executed (or refused) action; failures are only logged.
    pub async fn announce(&self, action: &Action) {
        let Some((reference, event)) = event_for(action) else {
            return;
        };
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason = %event.reason, "could not publish an event");
        }
    }
}

/// The Event an action earns, and the original it is about; `None` for actions on no original.
pub fn event_for(action: &Action) -> Option<(ObjectReference, Event)> {
    let (origin_namespace, origin_name) = keys::parse_origin(action.origin()?)?;
    let ns = action.namespace();
    let (type_, reason, note) = match action {
        Action::Create { .. } => (
            EventType::Normal,
            "Copied",
            format!("copied to namespace {ns}"),
        ),
        Action::Update { .. } => (
            EventType::Normal,
            "Copied",
            format!("updated the copy in namespace {ns}"),
        ),
        Action::Overwrite { .. } => (
            EventType::Normal,
            "Overwrote",
            format!(
                "overwrote secret {:?} in namespace {ns}, which was not a copy",
                action.name()
            ),
        ),
        Action::Recreate { .. } => (
            EventType::Normal,
            "Recreated",
            format!("recreated the copy in namespace {ns} (its type or immutability changed)"),
        ),
        Action::Delete { .. } => (
            EventType::Normal,
            "Removed",
            format!("removed the copy in namespace {ns}"),
        ),
        Action::Conflict { reason, .. } => (
            EventType::Warning,
            "Conflict",
            format!("not copied to namespace {ns}: {reason}"),
        ),
        Action::SetBackingNamespace { .. }
        | Action::FixNamespaceLabel { .. }
        | Action::AddClusterLabel { .. } => {
            return None;
        }
    };
    let reference = ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Secret".to_owned()),
        namespace: Some(origin_namespace.to_owned()),
        name: Some(origin_name.to_owned()),
        uid: origin_uid(action),
        ..ObjectReference::default()
    };
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action_name(action).to_owned(),
        secondary: None,
    };
    Some((reference, event))
}

fn origin_uid(action: &Action) -> Option<String> {
    match action {
        Action::Create { copy }
        | Action::Update { copy, .. }
        | Action::Overwrite { copy, .. }
        | Action::Recreate { copy, .. } => {
            world::annotation(&copy.metadata, keys::ORIGIN_UID_ANNOTATION)
                .filter(|uid| !uid.is_empty())
                .map(str::to_owned)
        }
        _ => None,
    }
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Create { .. } => "CreateCopy",
        Action::Update { .. } => "UpdateCopy",
        Action::Overwrite { .. } => "OverwriteSecret",
        Action::Recreate { .. } => "RecreateCopy",
        Action::Delete { .. } => "DeleteCopy",
        _ => "Reconcile",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ConflictReason;

    fn delete(origin: Option<&str>) -> Action {
        Action::Delete {
            namespace: "team-a".to_owned(),
            name: "db".to_owned(),
            uid: "u".to_owned(),
            origin: origin.map(str::to_owned),
        }
    }

    #[test]
    fn events_land_on_the_original() {
        let (reference, event) = event_for(&delete(Some("local-p/db"))).expect("an event");
        assert_eq!(reference.namespace.as_deref(), Some("local-p"));
        assert_eq!(reference.name.as_deref(), Some("db"));
        assert_eq!(reference.kind.as_deref(), Some("Secret"));
        assert_eq!(event.reason, "Removed");
        assert_eq!(
            event.note.as_deref(),
            Some("removed the copy in namespace team-a")
        );
    }

    #[test]
    fn conflicts_warn_and_unattributed_actions_are_silent() {
        let conflict = Action::Conflict {
            namespace: "team-a".to_owned(),
            name: "db".to_owned(),
            origin: "local-p/db".to_owned(),
            reason: ConflictReason::NoConsent,
        };
        let (_, event) = event_for(&conflict).expect("an event");
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "Conflict");
        assert!(event_for(&delete(None)).is_none());
        let label = Action::FixNamespaceLabel {
            namespace: "x".to_owned(),
            label: None,
        };
        assert!(event_for(&label).is_none());
    }
}
