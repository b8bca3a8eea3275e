//! Records the commit the binary is built from, for `scoped-secrets --version`. Outside a git
//! checkout (a container build's context leaves .git out) it is `SCOPED_SECRETS_COMMIT` if set,
//! else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SCOPED_SECRETS_COMMIT");
    let commit = std::env::var("SCOPED_SECRETS_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        // A commit or checkout moves HEAD's log: rebuild then, not on every file change.
        println!("cargo:rerun-if-changed={dir}/logs/HEAD");
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    println!("cargo:rustc-env=SCOPED_SECRETS_COMMIT={commit}");
}
