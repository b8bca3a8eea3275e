//! deploy/ against a real kube-apiserver of its own (the checks register webhook configurations
//! for real, so they cannot share the e2e binary's cluster): every kustomization passes
//! `kubectl apply --dry-run=server`, and the webhook entries' selectors and match conditions send
//! exactly the intended requests to each entry, with the RBAC the reconciler needs.

use std::path::Path;
use std::process::Command;
use testbed::prelude::*;

fn run_check(script: &str, args: &[&str], kubeconfig: &Path) {
    let out = Command::new("bash")
        .arg(Path::new(REPO).join("hack").join(script))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok"), "{script} printed no check: {stdout}");
}

#[test]
fn every_manifest_applies_and_every_webhook_entry_sees_exactly_its_requests() {
    let dir = Path::new(REPO).join(format!("target/manifests/{}", std::process::id()));
    let control_plane = start_control_plane(&dir).expect("control plane");
    let kubeconfig = &control_plane.kubeconfig;
    // One after the other: the scope checks register webhook configurations of the same names.
    run_check("check-manifests.sh", &[], kubeconfig);
    run_check("check-webhook-scope.sh", &["base"], kubeconfig);
    run_check("check-webhook-scope.sh", &["beside-rancher"], kubeconfig);
}
