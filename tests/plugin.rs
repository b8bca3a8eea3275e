//! The binary is also a kubectl plugin: installed as `kubectl-scoped_secrets` on PATH, the machine's
//! real `kubectl` finds it, and `kubectl scoped-secrets plan` works like `scoped-secrets plan`.

use std::path::Path;
use std::process::Command;

fn kubectl_plugin(dir: &Path, args: &[&str]) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let out = Command::new("kubectl")
        .arg("scoped-secrets")
        .args(args)
        .env("PATH", std::env::join_paths(paths).expect("a PATH"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl scoped-secrets {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_finds_the_plugin_and_plans_rancher_example_offline() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::copy(
        env!("CARGO_BIN_EXE_scoped-secrets"),
        dir.path().join("kubectl-scoped_secrets"),
    )
    .expect("installing the plugin");

    let version = kubectl_plugin(dir.path(), &["--version"]);
    assert!(
        version.starts_with(&format!(
            "scoped-secrets {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );

    // examples/rancher, with the backing namespace the reconciler would record in the status.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rancher");
    let mut manifest = String::new();
    for file in [
        "01-project.yaml",
        "02-namespaces.yaml",
        "03-test-secret.yaml",
    ] {
        let text = std::fs::read_to_string(examples.join(file)).expect("an example");
        manifest.push_str(&text);
        manifest.push_str("\n---\n");
    }
    manifest = manifest.replace(
        "  displayName: Example project\n",
        "  displayName: Example project\nstatus:\n  backingNamespace: local-p-vwxyz\n",
    );
    manifest.push_str("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: local-p-vwxyz\n");
    let file = dir.path().join("example.yaml");
    std::fs::write(&file, manifest).expect("writing the manifest");
    let plan = kubectl_plugin(
        dir.path(),
        &[
            "plan",
            "--offline",
            // Rancher's example: its backing namespace carries none of the product's marks.
            "--manage-backing-namespaces=false",
            "-f",
            file.to_str().expect("a UTF-8 path"),
        ],
    );
    let creates = plan
        .split("\n\n")
        .find(|section| section.starts_with("Copies to create"))
        .unwrap_or_else(|| panic!("no copies to create:\n{plan}"));
    for ns in ["team-a", "team-b"] {
        let line = format!("  {ns}/test-secret (from local-p-vwxyz/test-secret)");
        assert!(
            creates.lines().any(|l| l == line),
            "{line:?} not planned:\n{plan}"
        );
    }
}
