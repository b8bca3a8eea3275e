//! The webhook stopped: failurePolicy, observed through kubectl.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use std::time::Duration;
use testbed::prelude::*;

#[test]
fn a_stopped_webhook_fails_closed_only_for_the_guarded_objects() {
    let project = project("down");
    let selector_value = unique("down");
    let selector_key = "scoped-secrets.io/e2e-outage";
    ok(kubectl(&[
        "label",
        "namespace",
        &project.backing,
        &format!("{selector_key}={selector_value}"),
    ]));

    // A namespace of the project, in the selector too (labelled before the outage: an outage
    // refuses updates of project namespaces).
    let member = namespace_in(&project, "down");
    ok(kubectl(&[
        "label",
        "namespace",
        &member,
        &format!("{selector_key}={selector_value}"),
    ]));

    // deploy/'s configurations, renamed and pointed at a port where nothing listens, for the
    // labelled namespaces only.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("an address").port()
    };
    let registered = register_deploy_webhooks(
        "scoped-secrets-outage",
        &format!("127.0.0.1:{closed_port}"),
        serde_json::json!({"matchLabels": {selector_key: selector_value}}),
        None,
    );

    // Fail: a project-scoped secret cannot be written while the guard is unreachable.
    let scoped = original_yaml(&project, "blocked", "");
    let failed_call = format!("failed calling webhook \"{GUARD}\"");
    let err = eventually(
        "the apiserver to call the stopped webhook",
        Duration::from_secs(30),
        || {
            let out = kubectl_apply(&scoped, &["--dry-run=server"]);
            let err = stderr(&out);
            (!out.status.success() && err.contains(&failed_call)).then_some(err)
        },
    );
    assert!(
        err.contains(&format!(
            "127.0.0.1:{closed_port}{}",
            scoped_secrets::endpoints::SECRET_GUARD
        )),
        "{err}"
    );
    let err = fails(kubectl_apply(&scoped, &[]));
    assert!(err.contains(&failed_call), "{err}");
    fails(kubectl_line(&format!(
        "get secret blocked -n {}",
        project.backing
    )));

    // Ignore: a plain secret in the same namespace is written (names check and mutator fail open).
    let out = ok(kubectl_line(&format!(
        "create secret generic plain -n {} --from-literal=key=value",
        project.backing
    )));
    assert!(out.contains("secret/plain created"), "{out}");

    // Fail: the namespace guard too, for a namespace in the selector that joins a project.
    let err = fails(kubectl(&[
        "annotate",
        "namespace",
        &project.backing,
        &format!("{}={}", keys::PROJECT_ID_KEY, project.id()),
        "--dry-run=server",
    ]));
    assert!(
        err.contains(&format!("failed calling webhook \"{NAMESPACE_GUARD}\"")),
        "{err}"
    );

    // No rule is about deleting a namespace: deleting one of a project is never held up by an
    // outage (the namespace guard is not called for DELETE).
    let out = ok(kubectl_line(&format!(
        "delete namespace {member} --dry-run=server"
    )));
    assert!(
        out.contains(&format!("namespace \"{member}\" deleted (server dry run)")),
        "{out}"
    );

    // The way out: delete the configurations; the same write then succeeds.
    drop(registered);
    eventually(
        "the apiserver to forget the stopped webhook",
        Duration::from_secs(30),
        || {
            kubectl_apply(&scoped, &["--dry-run=server"])
                .status
                .success()
                .then_some(())
        },
    );
}
