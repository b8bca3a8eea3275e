//! Kubernetes Events on the original for what happened to its copies. Notes name namespaces and
//! reasons, never data.

use super::CONTROLLER_NAME;
use crate::keys;
use crate::plan::Action;
use crate::policy::message;
use crate::world;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::BTreeMap;

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

    /// Publishes the Events for the actions of one round: one per original and reason, listing the
    /// namespaces ("copied to 1000 namespaces: a, b, c and 997 more"), so a thousand copies cost one
    /// Event and not a thousand API writes. Failures are only logged.
    pub async fn announce(&self, actions: &[&Action]) {
        for (reference, event) in summarise(actions) {
            if let Err(error) = self.recorder.publish(&event, &reference).await {
                tracing::warn!(%error, reason = %event.reason, "could not publish an event");
            }
        }
    }
}

/// Longest Event note we write (the API allows 1 KiB).
const NOTE_LIMIT: usize = 1000;

/// An original (namespace, name) and the action's name.
type GroupKey = (String, String, &'static str);
/// One action's Event, its original, and the namespace it acted in.
type Grouped<'a> = (ObjectReference, Event, &'a str);

/// The Events for a round's actions, grouped by original and reason, in a stable order.
pub fn summarise(actions: &[&Action]) -> Vec<(ObjectReference, Event)> {
    let mut groups: BTreeMap<GroupKey, Vec<Grouped<'_>>> = BTreeMap::new();
    for action in actions {
        if let Some((reference, event)) = event_for(action) {
            let key = (
                reference.namespace.clone().unwrap_or_default(),
                reference.name.clone().unwrap_or_default(),
                action_name(action),
            );
            groups
                .entry(key)
                .or_default()
                .push((reference, event, action.namespace()));
        }
    }
    groups
        .into_values()
        .filter_map(|mut group| {
            if group.len() == 1 {
                return group.pop().map(|(reference, event, _)| (reference, event));
            }
            let mut namespaces: Vec<&str> = group.iter().map(|(_, _, ns)| *ns).collect();
            namespaces.sort_unstable();
            let (reference, mut event, _) = group.swap_remove(0);
            let head = format!(
                "{} in {}",
                group_phrase(&event.reason),
                message::count(namespaces.len(), "namespace", "namespaces")
            );
            event.note = Some(message::list_line(&head, &namespaces, NOTE_LIMIT));
            Some((reference, event))
        })
        .collect()
}

/// What a group of actions of one reason did, as the head of a namespace list.
fn group_phrase(reason: &str) -> &'static str {
    match reason {
        "Copied" => "copied or updated",
        "Overwrote" => "overwrote secrets that were not copies",
        "Recreated" => "recreated copies (type or immutability changed)",
        "Removed" => "removed copies",
        "Conflict" => "not copied (a secret that is not a copy holds the name)",
        _ => "changed copies",
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
    fn one_event_per_original_and_reason_lists_the_namespaces() {
        let removals: Vec<Action> = (0..40)
            .map(|i| Action::Delete {
                namespace: format!("team-{i:02}"),
                name: "db".to_owned(),
                uid: "u".to_owned(),
                origin: Some("local-p/db".to_owned()),
            })
            .collect();
        let other = delete(Some("local-p/other"));
        let mut all: Vec<&Action> = removals.iter().collect();
        all.push(&other);
        let events = summarise(&all);
        assert_eq!(events.len(), 2);
        let (reference, event) = &events[0];
        assert_eq!(reference.name.as_deref(), Some("db"));
        let note = event.note.as_deref().unwrap_or_default();
        assert!(
            note.starts_with("removed copies in 40 namespaces: team-00, team-01"),
            "{note}"
        );
        assert!(note.len() <= NOTE_LIMIT, "{note}");
        assert_eq!(
            events[1].1.note.as_deref(),
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
