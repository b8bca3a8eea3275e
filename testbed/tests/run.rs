//! `make run` end to end: `local-control-plane --serve` brings up etcd, the apiserver, the controller
//! manager and `scoped-secrets serve` with deploy/'s webhooks registered; the walkthrough it prints
//! (Rancher's example) runs as printed and the copies appear; a dry-run request reaches the webhook;
//! and an interrupt (Ctrl-C) leaves no process behind.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use testbed::kubectl::{fails, kubectl_line_with, ok};
use testbed::walkthrough::{self, Supervisor, processes_mentioning};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn run_serves_and_ctrl_c_leaves_no_process_behind() {
    let supervisor = Path::new(env!("CARGO_BIN_EXE_local-control-plane"));
    walkthrough::assert_product_beside(supervisor);
    let dir = Path::new(testbed::env::REPO).join(format!("target/run-test/{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_text = dir.display().to_string();
    let run = Supervisor::start(
        Command::new(supervisor)
            .arg("--serve")
            .arg(format!("--dir={dir_text}/control-plane"))
            .arg(format!("--certs-dir={dir_text}/certs"))
            .arg(format!("--webhook-addr=127.0.0.1:{}", free_port()))
            .arg(format!("--admin-addr=127.0.0.1:{}", free_port())),
    );
    let kubeconfig = run
        .ready
        .strip_prefix("ready kubeconfig=")
        .unwrap_or_else(|| panic!("not ready: {:?}", run.ready))
        .to_owned();
    // The supervisor, etcd, the apiserver, the controller manager and the product all run from this
    // test's directory.
    assert_eq!(
        processes_mentioning(&dir_text).len(),
        5,
        "supervisor, etcd, kube-apiserver, kube-controller-manager, product"
    );

    // A person pastes the printed commands into a shell: run exactly those, as one script.
    let printed_text = run.walkthrough();
    let script = walkthrough::commands(&printed_text, "scoped-secrets is serving.");
    assert!(
        script.contains("kubectl apply -f examples/rancher/03-test-secret.yaml")
            && script.contains(&format!("export KUBECONFIG={kubeconfig}")),
        "the walkthrough lacks Rancher's example: {printed_text}"
    );
    let walked_out = walkthrough::walk(&script);
    // Its first plan announced the two copies before the secret existed, the copy holds the
    // original's data, and the last plan found nothing left to do.
    for expected in [
        "Copies to create (2):",
        "team-a/test-secret (from local-p-vwxyz/test-secret)",
        "team-b/test-secret (from local-p-vwxyz/test-secret)",
        "\ndog\n",
        "No changes: every copy is in place.",
    ] {
        assert!(
            walked_out.contains(expected),
            "{expected:?} in {walked_out}"
        );
    }

    let kubectl = |line: &str| kubectl_line_with(Path::new(&kubeconfig), line);
    for ns in ["team-a", "team-b"] {
        let copy = ok(kubectl(&format!(
            "get secret test-secret -n {ns} -o jsonpath={{.data.key}}"
        )));
        assert_eq!(copy, "ZG9n", "the copy in {ns}");
    }

    ok(kubectl("create namespace scratch"));
    ok(kubectl(
        "create secret generic db -n scratch --from-literal=k=v",
    ));
    let refused = fails(kubectl(
        "create secret generic db -n scratch --from-literal=k=w --dry-run=server",
    ));
    assert!(
        refused.contains(r#"admission webhook "secret-names.scoped-secrets.io" denied the request: a secret (Opaque) named "db" already exists in namespace "scratch""#),
        "{refused}"
    );
    ok(kubectl("get projects -A"));

    run.interrupt(Duration::from_secs(30));
    assert!(
        processes_mentioning(&dir_text).is_empty(),
        "processes were left behind"
    );
}
