//! Writes that another policy stands in the way of.
//!
//! A copy that a mutating admission webhook (a policy engine stamping every secret) changes on
//! write can never be exact: each write is stored changed, its watch event starts the next round,
//! and that round writes it again. The reconciler must see that the apiserver stored something
//! other than it sent, say so in an Event, and back off, not write it on every round.
//!
//! A write on no original (a namespace's label repair) that a policy refuses must be as visible
//! as a copy's: a Warning on the object it writes, and a backoff.

use axum::Json;
use axum::routing::post;
use scoped_secrets::certs;
use scoped_secrets::plan::OverwritePolicy;
use scoped_secrets::webhook::server::{Limits, Server};
use scoped_secrets::webhook::tls::{ReloadingCert, server_config};
use serde_json::{Value, json};
use std::net::SocketAddr;
use testbed::harness::*;
use testbed::prelude::*;

/// The label the stamping webhook adds to every secret written in the namespaces it selects.
const STAMP: &str = "policy.example.com/stamped";

/// A mutating webhook, served on 127.0.0.1 and registered for secrets in namespaces labelled
/// `scoped-secrets-test/stamp=<id>`, that adds [`STAMP`] (path `/stamp`) or makes every secret
/// immutable (`/immutable`); or for namespaces so labelled, that sets their project label back to
/// [`STALE_PROJECT`] (`/stale-project`). Unregistered and stopped when dropped.
struct Stamper {
    configuration: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stamper {
    fn start(id: &str, path: &str) -> Self {
        Self::start_for(id, path, "secrets", "namespaceSelector")
    }

    /// Registered for `resource`, selected by `selector` (`namespaceSelector`, `objectSelector`).
    fn start_for(id: &str, path: &str, resource: &str, selector: &str) -> Self {
        let certs_dir = env().state_dir.join("certs");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let dir = certs_dir.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(async move {
                let cert =
                    ReloadingCert::load(&dir.join(certs::TLS_CERT), &dir.join(certs::TLS_KEY))
                        .expect("the test bed's serving certificate");
                let tls = server_config(cert, None).expect("TLS");
                let server = Server::bind(
                    "127.0.0.1:0".parse().expect("address"),
                    tls,
                    Limits::default(),
                )
                .await
                .expect("bound");
                addr_tx
                    .send(server.local_addr().expect("address"))
                    .expect("sent");
                let router = axum::Router::new()
                    .route("/stamp", post(stamp))
                    .route("/immutable", post(immutable))
                    .route("/stale-project", post(stale_project));
                server
                    .serve(router, async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().expect("the stamper listens");
        let ca = std::fs::read(certs_dir.join(certs::CA_CERT)).expect("the test bed's CA");
        let configuration = unique("stamper");
        ok(kubectl_apply(
            &format!(
                "apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: {configuration}}}
webhooks:
  - name: stamp.example.com
    clientConfig:
      url: https://{addr}{path}
      caBundle: {bundle}
    rules:
      - apiGroups: [\"\"]
        apiVersions: [\"v1\"]
        resources: [\"{resource}\"]
        operations: [\"CREATE\", \"UPDATE\"]
    {selector}:
      matchLabels: {{scoped-secrets-test/stamp: {id}}}
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [\"v1\"]
    timeoutSeconds: 5
",
                bundle = certs::base64_encode(&ca),
            ),
            &[],
        ));
        Self {
            configuration,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Stamper {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "mutatingwebhookconfiguration",
            &self.configuration,
            "--ignore-not-found",
        ]);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A namespace of `project` (named from `prefix`) whose secrets the [`Stamper`] at `path`
/// changes on write; the namespace, and the stamper to keep while it should.
fn under_policy(project: &TestProject, prefix: &str, path: &str) -> (String, Stamper) {
    let namespace = namespace_in(project, prefix);
    let id = unique(prefix);
    ok(kubectl(&[
        "label",
        "namespace",
        &namespace,
        &format!("scoped-secrets-test/stamp={id}"),
    ]));
    (namespace, Stamper::start(&id, path))
}

/// The CopyAltered Event on the project's original `db`, once it is there.
fn altered_note(project: &TestProject) -> String {
    eventually("a CopyAltered Event on the original", WAIT, || {
        let messages = event_messages(&project.backing, "db", "CopyAltered");
        (!messages.is_empty()).then_some(messages)
    })
}

/// Admits every review with a patch that adds [`STAMP`] (copies always carry labels).
async fn stamp(Json(review): Json<Value>) -> Json<Value> {
    let label = STAMP.replace('/', "~1");
    patched(
        &review,
        json!([{"op": "add", "path": format!("/metadata/labels/{label}"), "value": "yes"}]),
    )
}

/// The project label [`stale_project`] sets on every namespace it reviews.
const STALE_PROJECT: &str = "p-stale";

/// Admits every review with a patch that sets the namespace's project label to [`STALE_PROJECT`].
async fn stale_project(Json(review): Json<Value>) -> Json<Value> {
    let label = scoped_secrets::keys::PROJECT_ID_KEY.replace('/', "~1");
    patched(
        &review,
        json!([{"op": "add", "path": format!("/metadata/labels/{label}"), "value": STALE_PROJECT}]),
    )
}

/// Admits every review with a patch that makes the secret immutable.
async fn immutable(Json(review): Json<Value>) -> Json<Value> {
    patched(
        &review,
        json!([{"op": "add", "path": "/immutable", "value": true}]),
    )
}

fn patched(review: &Value, patch: Value) -> Json<Value> {
    let uid = review["request"]["uid"].clone();
    let patch = certs::base64_encode(patch.to_string().as_bytes());
    Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch},
    }))
}

#[test]
fn a_copy_a_mutating_webhook_changes_on_write_raises_an_event_and_backs_off() {
    let _turn = serial();
    let project = project("alt");
    let (stamped, _stamper) = under_policy(&project, "alt", "/stamp");
    let running = start(OverwritePolicy::Warn);
    apply_original(&project, "db", "k: dg==", "");
    eventually("the copy, stamped", WAIT, || {
        get_secret(&stamped, "db").filter(|copy| copy["metadata"]["labels"][STAMP] == "yes")
    });
    let note = altered_note(&project);
    assert!(note.contains("labels or annotations"), "{note}");
    assert!(note.contains(&stamped), "{note}");
    assert!(!note.contains("dg=="), "no data in an Event: {note}");

    // Rounds go on (each poke is one), and the copy still differs from its original, but it is
    // backing off: no write. Before, every round rewrote it, and each write started another. The
    // copy's uid and resourceVersion tell (the apiserver's request counters also count the
    // clean-up of other tests' leftovers).
    let before = get_secret(&stamped, "db").expect("the copy");
    for _ in 0..3 {
        running.another_round(&stamped);
    }
    let after = get_secret(&stamped, "db").expect("the copy is still there");
    assert_eq!(
        after["metadata"]["uid"], before["metadata"]["uid"],
        "the copy was recreated"
    );
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "the copy was rewritten"
    );
    assert!(
        running.errors() >= 1.0,
        "the altered write counts as failed"
    );
}

#[test]
fn a_copy_a_policy_makes_immutable_is_not_recreated_every_round() {
    let _turn = serial();
    let project = project("imm");
    let (frozen, _policy) = under_policy(&project, "imm", "/immutable");
    let running = start(OverwritePolicy::Warn);
    apply_original(&project, "db", "k: dg==", "");
    let first = eventually("the copy, made immutable", WAIT, || {
        get_secret(&frozen, "db").filter(|copy| copy["immutable"] == true)
    });
    // A copy whose immutability differs from its original's is recreated: once, then it backs off.
    eventually("the copy, recreated once", WAIT, || {
        get_secret(&frozen, "db").filter(|copy| copy["metadata"]["uid"] != first["metadata"]["uid"])
    });
    let note = altered_note(&project);
    assert!(note.contains("type or immutability"), "{note}");
    // A round that began after the recreate was seen: the recreate's own round, and its backoff,
    // are behind it.
    running.another_round(&frozen);
    let recreated = get_secret(&frozen, "db").expect("the copy");
    // Each recreate gives the copy a new uid; before, that made each round's recreate a new
    // action, due at once: the copy was deleted and created again on every round. Its uid tells
    // (the apiserver's request counters also count the clean-up of other tests' leftovers).
    for _ in 0..3 {
        running.another_round(&frozen);
    }
    let now = get_secret(&frozen, "db").expect("the copy is still there");
    assert_eq!(
        now["metadata"]["uid"], recreated["metadata"]["uid"],
        "the copy was recreated while backing off"
    );
}

#[test]
fn a_label_repair_a_policy_refuses_warns_on_the_namespace_and_backs_off() {
    let _turn = serial();
    let project = project("frz");
    let frozen = namespace_in(&project, "frz");
    let id = unique("freeze");
    // A stale label, as if written while the webhook was down (the reconciler's identity skips
    // it), and the label the freezing policy selects the namespace by.
    behind_the_webhook(&[
        "label",
        "namespace",
        &frozen,
        &format!("{}=p-stale", scoped_secrets::keys::PROJECT_ID_KEY),
        &format!("scoped-secrets-test/frozen={id}"),
        "--overwrite",
    ]);
    // A ValidatingAdmissionPolicy that refuses every update of the namespace.
    ok(kubectl_apply(
        &format!(
            "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {id}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [\"\"]
        apiVersions: [\"v1\"]
        operations: [\"UPDATE\"]
        resources: [\"namespaces\"]
  validations:
    - expression: \"false\"
      message: namespaces are frozen by policy {id}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {id}}}
spec:
  policyName: {id}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{scoped-secrets-test/frozen: {id}}}
"
        ),
        &[],
    ));
    let _unfreeze = Unfreeze(id.clone());
    eventually("the policy in force", WAIT, || {
        let probe = kubectl(&[
            "annotate",
            "namespace",
            &frozen,
            "probe=1",
            "--dry-run=server",
        ]);
        (!probe.status.success()).then_some(())
    });

    let running = start(OverwritePolicy::Warn);
    let note = eventually("a WriteFailed Event on the namespace", WAIT, || {
        let messages = event_messages("default", &frozen, "WriteFailed");
        (!messages.is_empty()).then_some(messages)
    });
    assert!(note.contains("projectId label"), "{note}");
    assert!(note.contains(&format!("frozen by policy {id}")), "{note}");
    let errors = running.errors();
    assert!(errors >= 1.0, "the refused repair counts as failed");
    // Backing off: more rounds, no new attempt (each would count another error).
    for _ in 0..3 {
        running.another_round(&project.backing);
    }
    assert_eq!(running.errors(), errors, "the repair was retried at once");
}

#[test]
fn a_label_repair_a_policy_rewrites_warns_on_the_namespace_and_backs_off() {
    let _turn = serial();
    let project = project("rwr");
    let rewritten = namespace_in(&project, "rwr");
    let id = unique("rewrite");
    // A stale label (the reconciler's identity skips the webhook), and the label the rewriting
    // policy selects the namespace by: every update of it is stored with the stale label again.
    behind_the_webhook(&[
        "label",
        "namespace",
        &rewritten,
        &format!("{}={STALE_PROJECT}", scoped_secrets::keys::PROJECT_ID_KEY),
        &format!("scoped-secrets-test/stamp={id}"),
        "--overwrite",
    ]);
    let _policy = Stamper::start_for(&id, "/stale-project", "namespaces", "objectSelector");

    let running = start(OverwritePolicy::Warn);
    let note = eventually("a WriteFailed Event on the namespace", WAIT, || {
        let messages = event_messages("default", &rewritten, "WriteFailed");
        (!messages.is_empty()).then_some(messages)
    });
    assert!(note.contains("projectId label"), "{note}");
    assert!(note.contains("other labels than written"), "{note}");
    let errors = running.errors();
    assert!(errors >= 1.0, "the rewritten repair counts as failed");
    // Backing off: more rounds, no new attempt (each would count another error). Before, every
    // round repaired it again, and each repair's watch event started the next round.
    for _ in 0..3 {
        running.another_round(&project.backing);
    }
    assert_eq!(running.errors(), errors, "the repair was retried at once");
}

/// Removes the freezing policy and its binding when dropped.
struct Unfreeze(String);

impl Drop for Unfreeze {
    fn drop(&mut self) {
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            let _ = kubectl(&["delete", kind, &self.0, "--ignore-not-found"]);
        }
    }
}
