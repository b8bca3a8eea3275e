//! Kubernetes Events on the original for what happened to its copies. Notes name namespaces and
//! reasons, never data.

use super::CONTROLLER_NAME;
use crate::keys;
use crate::message;
use crate::plan::{Action, ConflictReason};
use crate::world;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

/// Publishes Events as the reconciler.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    /// The downstream cluster the copies are in, said first in every note; `None` for the
    /// management cluster's own copies.
    cluster: Option<String>,
}

impl Events {
    pub fn new(client: Client, identity: &str) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_owned(),
            instance: Some(identity.to_owned()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            cluster: None,
        }
    }

    /// Events about copies in downstream cluster `cluster` (still published on the originals, in
    /// the management cluster `self`'s client reaches).
    pub fn in_cluster(mut self, cluster: &str) -> Self {
        self.cluster = Some(cluster.to_owned());
        self
    }

    /// Publishes a round's Events: one per original and reason, listing the namespaces ("copied to
    /// 1000 namespaces: a, b, c and 997 more"), so a thousand copies cost one Event and not a
    /// thousand API writes. Failures are only logged.
    pub async fn announce(&self, mut tally: Tally) {
        // Downstream, a write on no original is on an object of that cluster, which this client
        // (the management cluster's) does not reach: an Event here would land on a management
        // object of the same name. Those failures are logged and counted only.
        if self.cluster.is_some() {
            tally.unowned.clear();
        }
        self.publish(tally.events()).await;
    }

    async fn publish(&self, events: Vec<(ObjectReference, Event)>) {
        for (reference, mut event) in events {
            if let (Some(cluster), Some(note)) = (&self.cluster, event.note.as_mut()) {
                *note = format!("in cluster {cluster}: {note}");
            }
            if let Err(error) = self.recorder.publish(&event, &reference).await {
                tracing::warn!(%error, reason = %event.reason, "could not publish an event");
            }
        }
    }
}

/// Why a copy action did not go through this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// The apiserver refused the write for good (400, 403, 413, 422): reason `CopyFailed`.
    Refused {
        code: u16,
        reason: String,
        message: String,
    },
    /// The target is being deleted and finalizers hold it: reason `WaitingForDeletion`.
    Waiting { finalizers: Vec<String> },
    /// The apiserver stored the copy other than written (a mutating webhook or policy): reason
    /// `CopyAltered`.
    Altered { what: &'static str },
}

impl Trouble {
    fn reason(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "CopyFailed",
            Self::Waiting { .. } => "WaitingForDeletion",
            Self::Altered { .. } => "CopyAltered",
        }
    }

    /// The reason of a Warning about an action on no original: it wrote no copy.
    fn unowned_reason(&self) -> &'static str {
        match self {
            Self::Refused { .. } | Self::Altered { .. } => "WriteFailed",
            other => other.reason(),
        }
    }

    /// What stands in the way of an action on no original (a label repair, a backing namespace).
    fn unowned_detail(&self, name: &str) -> String {
        match self {
            Self::Altered { what } => format!(
                "the apiserver stored it with other {what} than written: a mutating admission \
                 webhook or policy changes them"
            ),
            other => other.detail(name),
        }
    }

    /// What stands in the way of secret `name`, for a note (the apiserver's message is cut short).
    fn detail(&self, name: &str) -> String {
        match self {
            Self::Refused {
                code,
                reason,
                message,
            } => format!(
                "the apiserver refused it ({code} {reason}: {})",
                message::fit(message, MESSAGE_LIMIT)
            ),
            Self::Waiting { finalizers } => format!(
                "secret {name:?} there is waiting for its deletion, held by finalizers {}",
                finalizers.join(", ")
            ),
            Self::Altered { what } => format!(
                "the apiserver stored it with other {what} than written: a mutating admission \
                 webhook or policy changes copies (exempt secrets annotated {})",
                crate::keys::ORIGIN_ANNOTATION
            ),
        }
    }
}

/// How much of an apiserver message an Event quotes.
const MESSAGE_LIMIT: usize = 400;

/// A round's Events, gathered while its outcomes arrive: one group per original and reason, each
/// keeping its first action, whether a later one differed, and the namespaces its note can show.
/// A round of 100,000 writes keeps a handful of groups, not 100,000 actions.
#[derive(Default)]
pub struct Tally {
    /// Actions that went through (or, for conflicts, were refused), by original and action.
    written: Groups<Option<ConflictReason>>,
    /// Copy actions that could not go through, by original and reason.
    troubles: Groups<Trouble>,
    /// Other actions that could not go through (a backing namespace, a label, a Rancher copy's
    /// removal), by the object they write and reason; at most [`UNOWNED_LIMIT`] a round.
    unowned: BTreeMap<(ObjectKey, &'static str), (Action, Trouble)>,
}

/// An object an Event is about: kind, namespace, name.
type ObjectKey = (String, String, String);

/// The most Warnings a round raises for actions on no original: each is on an object of its own,
/// so they cannot be grouped; the rest are in the logs and metrics.
const UNOWNED_LIMIT: usize = 50;

/// An original (namespace, name) and the action's name or the trouble's reason.
type GroupKey = (String, String, &'static str);

type Groups<D> = BTreeMap<GroupKey, Group<D>>;

/// The actions of one original and reason; `detail` is the first one's conflict reason or trouble.
struct Group<D> {
    first: Action,
    detail: D,
    /// A later action's detail differed from the first one's.
    mixed: bool,
    namespaces: Namespaces,
}

/// How many namespaces a group names, and the first ones in order: as many as a note can show
/// (each takes at least one character), never all of 100,000.
#[derive(Default)]
struct Namespaces {
    count: usize,
    first: BTreeSet<String>,
}

impl Namespaces {
    fn push(&mut self, namespace: &str) {
        self.count += 1;
        if self.first.len() < NOTE_LIMIT {
            self.first.insert(namespace.to_owned());
        } else if self
            .first
            .last()
            .is_some_and(|last| namespace < last.as_str())
            && self.first.insert(namespace.to_owned())
        {
            self.first.pop_last();
        }
    }

    /// `"{head}: a, b, c and 997 more"` within [`NOTE_LIMIT`].
    fn line(&self, head: &str) -> String {
        let first: Vec<&str> = self.first.iter().map(String::as_str).collect();
        message::list_line_of(head, &first, self.count, NOTE_LIMIT)
    }
}

impl Tally {
    /// Counts an action that went through, or a conflict refused.
    pub fn written(&mut self, action: &Action) {
        gather(
            &mut self.written,
            action,
            action_name(action),
            conflict_reason(action),
        );
    }

    /// Counts an action that could not go through: a copy action on its original, any other on
    /// the object it writes.
    pub fn trouble(&mut self, action: &Action, trouble: Trouble) {
        if action.origin().is_some() {
            gather(&mut self.troubles, action, trouble.reason(), trouble);
            return;
        }
        let Some(reference) = written_object(action) else {
            return;
        };
        if self.unowned.len() >= UNOWNED_LIMIT {
            return;
        }
        let key = (
            reference.kind.unwrap_or_default(),
            action.namespace().to_owned(),
            action.name().to_owned(),
        );
        self.unowned
            .entry((key, trouble.unowned_reason()))
            .or_insert((action.clone(), trouble));
    }

    /// The Events, in a stable order: what went through, then the Warnings for what did not.
    pub fn events(self) -> Vec<(ObjectReference, Event)> {
        let written = self.written.into_values().filter_map(|group| {
            let (reference, mut event) = event_for(&group.first)?;
            let namespaces = &group.namespaces;
            if namespaces.count > 1 {
                let count = message::count(namespaces.count, "namespace", "namespaces");
                let head = match group.detail {
                    // A conflict says why: each reason asks the operator for something else.
                    Some(reason) => {
                        let others = if group.mixed {
                            " (and other reasons)"
                        } else {
                            ""
                        };
                        format!("not copied to {count}: {reason}{others}")
                    }
                    None => format!("{} in {count}", group_phrase(&event.reason)),
                };
                event.note = Some(namespaces.line(&head));
            }
            Some((reference, event))
        });
        let troubles = self
            .troubles
            .into_iter()
            .map(|((namespace, name, reason), group)| {
                let (first, trouble) = (&group.first, &group.detail);
                let note = if group.namespaces.count == 1 {
                    message::fit(
                        &format!(
                            "could not {} in namespace {}: {}; retrying with backoff",
                            verb(first),
                            first.namespace(),
                            trouble.detail(first.name())
                        ),
                        NOTE_LIMIT,
                    )
                } else {
                    let others = if group.mixed {
                        " (and other errors)"
                    } else {
                        ""
                    };
                    let head = format!(
                        "could not write the copies in {}: {}{others}; retrying with backoff",
                        message::count(group.namespaces.count, "namespace", "namespaces"),
                        trouble.detail(first.name())
                    );
                    group.namespaces.line(&head)
                };
                let reference = original(&namespace, &name, first);
                let event = Event {
                    type_: EventType::Warning,
                    reason: reason.to_owned(),
                    note: Some(note),
                    action: action_name(first).to_owned(),
                    secondary: None,
                };
                (reference, event)
            });
        let unowned = self
            .unowned
            .into_iter()
            .filter_map(|((_, reason), (action, trouble))| {
                let reference = written_object(&action)?;
                let note = message::fit(
                    &format!(
                        "could not {}: {}; retrying with backoff",
                        verb(&action),
                        trouble.unowned_detail(action.name())
                    ),
                    NOTE_LIMIT,
                );
                let event = Event {
                    type_: EventType::Warning,
                    reason: reason.to_owned(),
                    note: Some(note),
                    action: action_name(&action).to_owned(),
                    secondary: None,
                };
                Some((reference, event))
            });
        written.chain(troubles).chain(unowned).collect()
    }
}

/// The object an action on no original writes, for its Event: the Project whose backing namespace
/// it sets, the namespace whose label it fixes, the original it labels, the Rancher copy it removes.
fn written_object(action: &Action) -> Option<ObjectReference> {
    let (api_version, kind, namespace) = match action {
        Action::SetBackingNamespace { project, .. } => (
            format!("{}/{}", keys::PROJECT_GROUP, keys::PROJECT_VERSION),
            keys::PROJECT_KIND,
            Some(project.cluster.clone()),
        ),
        Action::FixNamespaceLabel { .. } => ("v1".to_owned(), "Namespace", None),
        Action::AddClusterLabel { namespace, .. } | Action::Delete { namespace, .. } => {
            ("v1".to_owned(), "Secret", Some(namespace.clone()))
        }
        _ => return None,
    };
    Some(ObjectReference {
        api_version: Some(api_version),
        kind: Some(kind.to_owned()),
        namespace,
        name: Some(action.name().to_owned()),
        ..ObjectReference::default()
    })
}

/// Adds `action` to its original's group for `reason`. Actions on no original (backing
/// namespaces, labels) earn no Event here.
fn gather<D: PartialEq>(groups: &mut Groups<D>, action: &Action, reason: &'static str, detail: D) {
    let Some((namespace, name)) = action.origin().and_then(keys::parse_origin) else {
        return;
    };
    match groups.entry((namespace.to_owned(), name.to_owned(), reason)) {
        Entry::Occupied(mut entry) => {
            let group = entry.get_mut();
            group.mixed |= group.detail != detail;
            group.namespaces.push(action.namespace());
        }
        Entry::Vacant(entry) => {
            let mut namespaces = Namespaces::default();
            namespaces.push(action.namespace());
            entry.insert(Group {
                first: action.clone(),
                detail,
                mixed: false,
                namespaces,
            });
        }
    }
}

/// What a copy action was doing, for "could not ...".
fn verb(action: &Action) -> &'static str {
    match action {
        Action::Create { .. } => "create the copy",
        Action::Update { .. } => "update the copy",
        Action::Overwrite { .. } => "replace the existing secret with the copy",
        Action::Recreate { .. } => "recreate the copy",
        Action::Delete { .. } => "remove the copy",
        Action::SetBackingNamespace { .. } => "set the project's backing namespace",
        Action::FixNamespaceLabel { .. } => {
            "make the namespace's projectId label mirror its annotation"
        }
        Action::AddClusterLabel { .. } => "add the cluster label to the original",
        Action::Conflict { .. } => "write",
    }
}

/// Longest Event note we write (the API allows 1 KiB).
const NOTE_LIMIT: usize = 1000;

/// The Events a list of actions earns (see [`Tally`]).
pub fn summarise<'a>(actions: impl IntoIterator<Item = &'a Action>) -> Tally {
    let mut tally = Tally::default();
    for action in actions {
        tally.written(action);
    }
    tally
}

/// Why a conflict's copy is not written; `None` for any other action.
fn conflict_reason(action: &Action) -> Option<ConflictReason> {
    match action {
        Action::Conflict { reason, .. } => Some(*reason),
        _ => None,
    }
}

/// What a group of actions of one reason did, as the head of a namespace list.
fn group_phrase(reason: &str) -> &'static str {
    match reason {
        "Copied" => "copied or updated",
        "Overwrote" => "overwrote secrets that were not copies",
        "Recreated" => "recreated copies (type or immutability changed)",
        "Removed" => "removed copies",
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
    let reference = original(origin_namespace, origin_name, action);
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
    let copy = action.copy()?;
    world::annotation(&copy.secret.metadata, keys::ORIGIN_UID_ANNOTATION)
        .filter(|uid| !uid.is_empty())
        .map(str::to_owned)
}

/// The original an Event is about.
fn original(namespace: &str, name: &str, action: &Action) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Secret".to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        uid: origin_uid(action),
        ..ObjectReference::default()
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
        let events = summarise(all).events();
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

    fn create_in(namespace: &str) -> Action {
        let mut copy = k8s_openapi::api::core::v1::Secret::default();
        copy.metadata.name = Some("db".to_owned());
        copy.metadata.annotations =
            Some([(keys::ORIGIN_ANNOTATION.to_owned(), "local-p/db".to_owned())].into());
        Action::Create {
            copy: crate::plan::PlacedCopy::new(namespace, std::sync::Arc::new(copy)),
        }
    }

    #[test]
    fn a_failing_write_on_no_original_warns_on_the_object_it_writes() {
        let refused = || Trouble::Refused {
            code: 403,
            reason: "Forbidden".to_owned(),
            message: "denied by policy freeze".to_owned(),
        };
        let label = Action::FixNamespaceLabel {
            namespace: "team-a".to_owned(),
            label: Some("p-vwxyz".to_owned()),
        };
        let backing = Action::SetBackingNamespace {
            project: crate::keys::ProjectId::new("local", "p-vwxyz"),
            backing_namespace: "local-p-vwxyz".to_owned(),
            create_namespace: true,
            refusal: None,
        };
        let mut tally = Tally::default();
        tally.trouble(&label, refused());
        tally.trouble(&label, refused());
        tally.trouble(&backing, refused());
        let events = tally.events();
        assert_eq!(events.len(), 2, "one per object and reason");
        let (namespace, event) = &events[0];
        assert_eq!(namespace.kind.as_deref(), Some("Namespace"));
        assert_eq!(namespace.name.as_deref(), Some("team-a"));
        assert_eq!(namespace.namespace, None);
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "WriteFailed");
        let note = event.note.as_deref().unwrap_or_default();
        assert!(note.contains("projectId label"), "{note}");
        assert!(
            note.contains("403 Forbidden: denied by policy freeze"),
            "{note}"
        );
        let (project, event) = &events[1];
        assert_eq!(project.kind.as_deref(), Some("Project"));
        assert_eq!(
            project.api_version.as_deref(),
            Some("management.cattle.io/v3")
        );
        assert_eq!(project.namespace.as_deref(), Some("local"));
        assert_eq!(project.name.as_deref(), Some("p-vwxyz"));
        assert!(
            event
                .note
                .as_deref()
                .is_some_and(|n| n.contains("backing namespace")),
            "{:?}",
            event.note
        );

        // Each is on an object of its own: a round raises a bounded number.
        let mut tally = Tally::default();
        for i in 0..UNOWNED_LIMIT + 10 {
            let label = Action::FixNamespaceLabel {
                namespace: format!("team-{i}"),
                label: None,
            };
            tally.trouble(&label, refused());
        }
        assert_eq!(tally.events().len(), UNOWNED_LIMIT);
    }

    #[test]
    fn failures_make_one_warning_per_original_and_reason() {
        let too_long = Trouble::Refused {
            code: 422,
            reason: "Invalid".to_owned(),
            message: "Secret \"db\" is invalid: metadata.annotations: Too long".to_owned(),
        };
        let held = Trouble::Waiting {
            finalizers: vec!["example.com/hold".to_owned()],
        };
        let (a, b, c) = (
            create_in("team-a"),
            create_in("team-b"),
            create_in("team-c"),
        );
        let mut tally = Tally::default();
        tally.trouble(&b, too_long.clone());
        tally.trouble(&a, too_long);
        tally.trouble(&c, held);
        let events = tally.events();
        assert_eq!(events.len(), 2);
        let (reference, failed) = &events[0];
        assert_eq!(reference.name.as_deref(), Some("db"));
        assert_eq!(reference.namespace.as_deref(), Some("local-p"));
        assert_eq!(failed.reason, "CopyFailed");
        assert_eq!(failed.type_, EventType::Warning);
        let note = failed.note.as_deref().unwrap_or_default();
        assert!(note.contains("422 Invalid"), "{note}");
        assert!(note.contains("Too long"), "{note}");
        assert!(note.ends_with("backoff: team-a, team-b"), "{note}");
        let waiting = events[1].1.note.as_deref().unwrap_or_default();
        assert_eq!(events[1].1.reason, "WaitingForDeletion");
        assert_eq!(
            waiting,
            "could not create the copy in namespace team-c: secret \"db\" there is waiting for its \
             deletion, held by finalizers example.com/hold; retrying with backoff"
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

    #[test]
    fn a_round_of_thousands_keeps_only_the_names_its_note_shows_and_says_the_same() {
        // Arriving last-first, so every name the note shows evicts one it will not.
        let removals: Vec<Action> = (0..5000)
            .rev()
            .map(|i| Action::Delete {
                namespace: format!("ns-{i:04}"),
                name: "db".to_owned(),
                uid: "u".to_owned(),
                origin: Some("local-p/db".to_owned()),
            })
            .collect();
        let tally = summarise(&removals);
        let kept: usize = tally
            .written
            .values()
            .map(|g| g.namespaces.first.len())
            .sum();
        assert_eq!(kept, NOTE_LIMIT);
        let mut all: Vec<&str> = removals.iter().map(Action::namespace).collect();
        all.sort_unstable();
        let head = format!(
            "removed copies in {}",
            message::count(5000, "namespace", "namespaces")
        );
        let whole = message::list_line(&head, &all, NOTE_LIMIT);
        assert!(
            whole.starts_with(&format!("{head}: ns-0000, ns-0001")),
            "{whole}"
        );
        let events = tally.events();
        assert_eq!(events[0].1.note.as_deref(), Some(whole.as_str()));
    }

    #[test]
    fn a_name_seen_twice_never_pushes_another_out() {
        let mut namespaces = Namespaces::default();
        for i in 0..NOTE_LIMIT {
            namespaces.push(&format!("ns-{i:04}"));
        }
        namespaces.push("ns-0000");
        assert_eq!(namespaces.first.len(), NOTE_LIMIT);
        let last = format!("ns-{:04}", NOTE_LIMIT - 1);
        assert_eq!(namespaces.first.last(), Some(&last));
        assert_eq!(namespaces.count, NOTE_LIMIT + 1);
    }

    #[test]
    fn grouped_conflicts_say_why() {
        let conflict = |namespace: &str, reason| Action::Conflict {
            namespace: namespace.to_owned(),
            name: "db".to_owned(),
            origin: "local-p/db".to_owned(),
            reason,
        };
        let unreadable = ConflictReason::UnreadableIgnoreList;
        let same = [
            conflict("team-a", unreadable),
            conflict("team-b", unreadable),
        ];
        let events = summarise(&same).events();
        assert_eq!(
            events[0].1.note.as_deref(),
            Some(format!("not copied to 2 namespaces: {unreadable}: team-a, team-b").as_str())
        );
        let mixed = [
            conflict("team-a", ConflictReason::NoConsent),
            conflict("team-b", ConflictReason::HeldByOriginal),
        ];
        let events = summarise(&mixed).events();
        let note = events[0].1.note.as_deref().unwrap_or_default();
        assert!(
            note.starts_with(&format!(
                "not copied to 2 namespaces: {} (and other reasons): team-a, team-b",
                ConflictReason::NoConsent
            )),
            "{note}"
        );
    }
}
