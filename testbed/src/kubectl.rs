//! `kubectl`, the machine's, as the admin of the shared environment or with a kubeconfig given, and
//! the two verdicts a test asserts: it succeeded ([`ok`]) or it was refused ([`fails`]).

use crate::env::env;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `kubectl` as the admin.
pub fn kubectl(args: &[&str]) -> Output {
    kubectl_with(&env().kubeconfig, args)
}

/// `kubectl` as the admin, given one command line as a person types it, without the `kubectl`:
/// `kubectl_line("get secret db -n team-a -o json")`. Split on whitespace, no shell and no quoting:
/// arguments that contain spaces take the slice form, [`kubectl`].
pub fn kubectl_line(line: &str) -> Output {
    kubectl_line_with(&env().kubeconfig, line)
}

/// What `kubectl auth can-i <request> --as=<user>` answers, as the admin asks it: `yes` or `no`.
/// `can_i("alice", "create namespaces")`.
pub fn can_i(user: &str, request: &str) -> String {
    stdout(&kubectl_line(&format!("auth can-i {request} --as={user}")))
        .trim()
        .to_owned()
}

/// [`kubectl_line`] with the given kubeconfig.
pub fn kubectl_line_with(kubeconfig: &Path, line: &str) -> Output {
    kubectl_with(kubeconfig, &line.split_whitespace().collect::<Vec<_>>())
}

/// `kubectl` with the given kubeconfig.
pub fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// `kubectl` as the admin, with `input` on standard input.
pub fn kubectl_apply(input: &str, extra: &[&str]) -> Output {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    kubectl_stdin(&env().kubeconfig, &args, input)
}

pub fn kubectl_stdin(kubeconfig: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .expect("writing kubectl's input");
    }
    child.wait_with_output().expect("kubectl finishes")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "kubectl failed: {}", stderr(&out));
    stdout(&out)
}

/// Asserts failure and returns stderr.
#[track_caller]
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "kubectl unexpectedly succeeded: {}",
        stdout(&out)
    );
    stderr(&out)
}

/// The machine's `kubectl` with `kubeconfig`, `input` on standard input; its standard output, or an
/// error with its standard error.
pub fn try_kubectl(
    kubeconfig: &Path,
    args: &[&str],
    input: Option<&str>,
) -> anyhow::Result<String> {
    let mut child = std::process::Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("running kubectl: {e}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
