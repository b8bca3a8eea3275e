//! Copies that must not outlive their project, and copies that cannot land: a deleted Project takes
//! the copies of its originals with it (deleted while no replica ran, too); a copy the apiserver refuses, or whose name is held by a
//! secret waiting for its finalizers, raises an Event on the original and backs off instead of
//! retrying on every round. The refusal that admission can already make (annotations too long for a
//! copy) is made there.

use crate::reconciler::{assert_copy_kept, delete_original};
use scoped_secrets::keys;
use scoped_secrets::policy::OverwritePolicy;
use serde_json::Value;
use testbed::harness::*;
use testbed::prelude::*;

/// The apiserver's total for a secret's annotation keys and values.
const ANNOTATIONS_LIMIT: usize = 262_144;
/// The annotation that fills an original up to the limit.
const FILLER_KEY: &str = "example.com/filler";

/// Wakes the reconciler with a change that concerns no secret (a namespace annotation), `times`
/// times, each time until it has planned a round after it: in every one of those rounds, an action
/// that does not back off would be attempted again.
fn wake_rounds(running: &Running, namespace: &str, times: usize) {
    for i in 0..times {
        let rounds = running.rounds();
        ok(kubectl(&[
            "annotate",
            "namespace",
            namespace,
            &format!("example.com/poke={i}"),
            "--overwrite",
        ]));
        eventually("a round after the poke", WAIT, || {
            (running.rounds() > rounds).then_some(())
        });
    }
}

/// The copy markers' share of a copy's annotations, as `plan::copy_of` writes them (a uid is 36
/// characters).
fn marker_bytes(backing: &str, name: &str) -> usize {
    [
        (keys::COPY_ANNOTATION, keys::TRUE.len()),
        (keys::USER_SECRET_ANNOTATION, keys::TRUE.len()),
        (
            keys::ORIGIN_ANNOTATION,
            keys::origin_value(backing, name).len(),
        ),
        (keys::ORIGIN_UID_ANNOTATION, 36),
    ]
    .iter()
    .map(|(key, value)| key.len() + value)
    .sum()
}

/// An original whose annotations come to `copy_size` bytes once the copy markers are added.
fn original_with_copy_annotations_of(
    project: &TestProject,
    name: &str,
    copy_size: usize,
) -> String {
    let filler = copy_size - marker_bytes(&project.backing, name) - FILLER_KEY.len();
    let annotations = format!("{FILLER_KEY}: {}", "x".repeat(filler));
    original_yaml(project, name, "k: dg==", &annotations)
}

/// Two projects, `doomed` and `other`, each with original `db` copied into a namespace of its own
/// (`a` and `b`) by a reconciler that is still running.
struct TwoProjects {
    doomed: TestProject,
    other: TestProject,
    a: String,
    b: String,
    running: Running,
}

fn two_projects_copied(prefix: &str) -> TwoProjects {
    let doomed = project(prefix);
    let other = project(&format!("{prefix}-kept"));
    let a = namespace_in(&doomed, &format!("{prefix}-a"));
    let b = namespace_in(&other, &format!("{prefix}-b"));
    let running = start(OverwritePolicy::Warn);
    apply_original(&doomed, "db", "k: dg==", "");
    apply_original(&other, "db", "k: dg==", "");
    copy_where(
        &a,
        &doomed.backing,
        "db",
        "the doomed project's copy",
        |_| true,
    );
    copy_where(&b, &other.backing, "db", "the other project's copy", |_| {
        true
    });
    TwoProjects {
        doomed,
        other,
        a,
        b,
        running,
    }
}

impl TwoProjects {
    fn delete_the_doomed_project(&self) {
        ok(kubectl(&[
            "delete",
            "project",
            &self.doomed.name,
            "-n",
            "local",
        ]));
    }

    /// The doomed project's copy goes; the other project's stays.
    fn assert_only_the_doomed_copy_goes(&self) {
        gone(&self.a, "db");
        assert_copy_kept(
            &self.b,
            &self.other.backing,
            "db",
            "an unrelated project keeps its copy",
        );
    }
}

#[test]
fn deleting_a_project_removes_its_copies_and_keeps_the_originals() {
    let _turn = serial();
    let world = two_projects_copied("rev");
    world.delete_the_doomed_project();
    world.assert_only_the_doomed_copy_goes();
    assert!(
        get_secret(&world.doomed.backing, "db").is_some(),
        "the original was removed with the project"
    );
}

/// A Project deleted while no replica runs leaves no Delete event for a watch to see, and the next
/// replica starts from an empty index. A missing Project alone proves nothing (a CRD re-installed
/// and Projects not restored yet look the same): its copies stay while its backing namespace is
/// there. Once that is gone too (as Rancher deletes it with the Project), the copies go, after a
/// fresh read proves the project gone, and nothing else does.
#[test]
fn a_project_deleted_while_no_replica_ran_loses_its_copies_once_its_namespace_is_gone() {
    let _turn = serial();
    let mut world = two_projects_copied("unseen");
    world.running.halt();
    world.delete_the_doomed_project();
    world.running = start(OverwritePolicy::Warn);
    wake_rounds(&world.running, &world.b, 2);
    assert_copy_kept(
        &world.a,
        &world.doomed.backing,
        "db",
        "a copy whose backing namespace is still there",
    );

    ok(kubectl(&[
        "delete",
        "namespace",
        &world.doomed.backing,
        "--wait=false",
    ]));
    world.assert_only_the_doomed_copy_goes();
}

#[test]
fn oversized_annotations_are_refused_at_admission() {
    let _turn = serial();
    let project = project("huge");
    // S6 counts what a copy may carry at most: the markers, and the replaced marker of a copy that
    // overwrites a secret. One byte more than that: refused, saying why and by how much.
    let replaced = keys::REPLACED_ANNOTATION.len() + keys::TRUE.len();
    let over = original_with_copy_annotations_of(&project, "db", ANNOTATIONS_LIMIT + 1 - replaced);
    let denied = fails(kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-"],
        &over,
    ));
    assert!(
        denied.contains(&format!(
            "secret \"db\" in namespace \"{}\" cannot be project-scoped: its copies would carry {} \
             bytes of annotations",
            project.backing,
            ANNOTATIONS_LIMIT + 1
        )),
        "{denied}"
    );
    assert!(
        denied.contains("limit of 262144 bytes (256 KiB); remove at least 1 byte of annotations"),
        "{denied}"
    );
    // Exactly at the limit: the copy fits, so the original is admitted.
    let fits = original_with_copy_annotations_of(&project, "db", ANNOTATIONS_LIMIT - replaced);
    ok(kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-"],
        &fits,
    ));
}

#[test]
fn a_copy_the_apiserver_refuses_raises_an_event_and_backs_off() {
    let _turn = serial();
    let project = project("big");
    let ns = namespace_in(&project, "big-a");
    // Written behind the webhook (which would refuse it): the original fits the apiserver's limit,
    // its copy (with the markers) does not, so every create of the copy is refused with 422.
    let oversized = original_with_copy_annotations_of(&project, "db", ANNOTATIONS_LIMIT + 100);
    ok(kubectl_stdin(
        &env().sa_kubeconfig,
        &["create", "-f", "-"],
        &oversized,
    ));
    let running = start(OverwritePolicy::Warn);
    let message = eventually("a CopyFailed event on the original", WAIT, || {
        let messages = event_messages(&project.backing, "db", "CopyFailed");
        messages.contains(ns.as_str()).then_some(messages)
    });
    assert!(message.contains("422 Invalid"), "{message}");
    assert!(message.contains("metadata.annotations"), "{message}");
    assert!(
        !message.contains("xxxx"),
        "annotation values in the event: {message}"
    );
    assert!(running.metric("scoped_secrets_reconciler_copy_failures_total") >= 1.0);

    // Every round from now on skips the failing create until its backoff has passed (10 s, then 20 s,
    // ...), however often something else wakes the reconciler.
    let refused = apiserver_requests("POST", Some("422"));
    wake_rounds(&running, &ns, 8);
    let attempts = apiserver_requests("POST", Some("422")) - refused;
    assert!(attempts <= 1.0, "{attempts} refused creates in 8 rounds");
    assert!(running.metric("scoped_secrets_reconciler_actions_in_backoff") >= 1.0);

    // Nothing else waits for it: another original of the project is copied at once.
    apply_original(&project, "small", "k: dg==", "");
    copy_where(&ns, &project.backing, "small", "the other copy", |_| true);
    assert!(get_secret(&ns, "db").is_none());
    running.stop();
    // Later tests' reconcilers need not trip over it.
    delete_original(&project, "db");
}

#[test]
fn a_name_held_by_finalizers_is_waited_for_not_hammered() {
    let _turn = serial();
    let project = project("fin");
    let ns = namespace_in(&project, "fin-a");
    // A secret of another type, held by a finalizer: deleting it leaves it in place, terminating.
    ok(kubectl_apply(
        &format!(
            "apiVersion: v1
kind: Secret
metadata: {{name: db, namespace: {ns}, finalizers: [example.com/hold]}}
type: example.com/held
data: {{mine: MQ==}}
"
        ),
        &[],
    ));
    let running = reconciling_db(&project);
    let message = eventually("a WaitingForDeletion event on the original", WAIT, || {
        let messages = event_messages(&project.backing, "db", "WaitingForDeletion");
        messages.contains(ns.as_str()).then_some(messages)
    });
    assert!(
        message.contains(
            "secret \"db\" there is waiting for its deletion, held by finalizers example.com/hold"
        ),
        "{message}"
    );

    // While it waits, rounds neither delete it again nor try to create over it.
    let writes = || apiserver_requests("DELETE", None) + apiserver_requests("POST", None);
    let before = writes();
    wake_rounds(&running, &ns, 8);
    let attempts = writes() - before;
    assert!(
        attempts <= 2.0,
        "{attempts} DELETE/POST requests in 8 rounds"
    );

    // Once its finalizer is removed the secret goes, and the copy takes its place at once.
    ok(kubectl_line(&format!(
        "patch secret db -n {ns} --type=merge -p {}",
        r#"{"metadata":{"finalizers":null}}"#
    )));
    copy_where(&ns, &project.backing, "db", "the copy", |s: &Value| {
        s["type"] == "Opaque"
    });
    running.stop();
}
