//! deploy/ against a real kube-apiserver of its own (the check writes for real, so it cannot share
//! the e2e binary's cluster): every kustomization passes `kubectl apply --dry-run=server`. Which
//! requests reach which webhook entry is `tests/webhook_scope.rs`. `deploy/downstream-access` is also
//! applied for real to a downstream cluster of its own, and its rights checked both ways.

use std::path::Path;
use std::process::Command;
use testbed::downstream::{COPIER_USER, Downstream};
use testbed::prelude::*;

#[test]
fn every_manifest_applies() {
    let dir = Path::new(REPO).join(format!("target/manifests/{}", std::process::id()));
    let control_plane = start_control_plane(&dir).expect("control plane");
    let out = Command::new("bash")
        .arg(Path::new(REPO).join("hack/check-manifests.sh"))
        .env("KUBECONFIG", &control_plane.kubeconfig)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check-manifests.sh failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ok"),
        "check-manifests.sh printed no check: {stdout}"
    );
}

/// `deploy/downstream-access` in a downstream cluster of its own: the copier's identity may make
/// exactly the calls the copier makes there (namespaces read and label repairs, copies written) and
/// nothing else (no other resource, no impersonation, no RBAC of its own). Checked by `kubectl auth
/// can-i` as that identity, then with a real token of it; revoking refuses the token (401),
/// restoring issues one that works while the revoked one stays refused.
#[test]
fn downstream_access_gives_the_copier_exactly_its_calls() {
    let dir = Path::new(REPO).join(format!(
        "target/manifests/{}-downstream",
        std::process::id()
    ));
    let downstream = Downstream::start("c-rights", &dir).expect("a downstream cluster");
    let admin = downstream.kubeconfig();
    let can = |line: &str| {
        let out = kubectl_line_with(admin, &format!("auth can-i {line} --as={COPIER_USER}"));
        stdout(&out).trim().to_owned()
    };
    let mut wrong = Vec::new();
    let mut expect = |line: &str, want: &str| {
        let got = can(line);
        if got != want {
            wrong.push(format!("can-i {line}: want {want}, got {got:?}"));
        }
    };
    for verb in ["get", "list", "watch", "patch"] {
        expect(&format!("{verb} namespaces"), "yes");
    }
    for verb in ["get", "list", "watch", "create", "update", "delete"] {
        expect(&format!("{verb} secrets -A"), "yes");
    }
    for line in [
        "create namespaces",
        "update namespaces",
        "delete namespaces",
        "patch secrets -A",
        "deletecollection secrets -A",
        "get configmaps -A",
        "list pods -A",
        "create serviceaccounts/token -n scoped-secrets-system",
        "create events -A",
        "create events.events.k8s.io -A",
        "create subjectaccessreviews.authorization.k8s.io",
        "get leases.coordination.k8s.io -n scoped-secrets-system",
        "impersonate users",
        "impersonate groups",
        "impersonate serviceaccounts -A",
        "bind clusterroles",
        "escalate clusterroles",
        "create clusterrolebindings",
        "* *",
    ] {
        expect(line, "no");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A real token of the copier, as a registration holds it.
    let registration = dir.join("registration-kubeconfig");
    let write = |kubeconfig: String| std::fs::write(&registration, kubeconfig).expect("written");
    write(downstream.registration_kubeconfig().expect("a token"));
    let whoami = ok(kubectl_line_with(
        &registration,
        "auth whoami -o jsonpath={.status.userInfo.username}",
    ));
    assert_eq!(whoami, COPIER_USER);
    ok(kubectl_line_with(&registration, "get secrets -A"));
    let refused = fails(kubectl_line_with(&registration, "get configmaps -A"));
    assert!(refused.contains("Forbidden"), "{refused}");

    downstream.revoke().expect("revoked");
    let refused = fails(kubectl_line_with(&registration, "get secrets -A"));
    assert!(refused.contains("Unauthorized"), "{refused}");
    let revoked = std::fs::read_to_string(&registration).expect("read");
    downstream.restore().expect("restored");
    fails(kubectl_line_with(&registration, "get secrets -A"));
    write(downstream.registration_kubeconfig().expect("a fresh token"));
    ok(kubectl_line_with(&registration, "get namespaces"));
    assert_ne!(
        revoked,
        std::fs::read_to_string(&registration).expect("read"),
        "a fresh token"
    );
}
