//! deploy/ against a real kube-apiserver of its own (the check writes for real, so it cannot share
//! the e2e binary's cluster): every kustomization passes `kubectl apply --dry-run=server`. Which
//! requests reach which webhook entry is `tests/webhook_scope.rs`.

use std::path::Path;
use std::process::Command;
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
