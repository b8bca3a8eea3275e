//! `make run` end to end: `local-control-plane --serve` brings up etcd, the apiserver, the controller
//! manager and `scoped-secrets serve` with deploy/'s webhooks registered; a dry-run request reaches
//! the webhook; and an interrupt (Ctrl-C) leaves no process behind.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testbed::kubectl::{fails, kubectl_line_with, ok};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn run_serves_and_ctrl_c_leaves_no_process_behind() {
    let product =
        Path::new(env!("CARGO_BIN_EXE_local-control-plane")).with_file_name("scoped-secrets");
    assert!(
        product.is_file(),
        "{} is not built: run this test with the workspace's (`make test`)",
        product.display()
    );
    let dir = Path::new(testbed::env::REPO).join(format!("target/run-test/{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_text = dir.display().to_string();
    let mut run = Command::new(env!("CARGO_BIN_EXE_local-control-plane"))
        .arg("--serve")
        .arg(format!("--dir={dir_text}/control-plane"))
        .arg(format!("--certs-dir={dir_text}/certs"))
        .arg(format!("--webhook-addr=127.0.0.1:{}", free_port()))
        .arg(format!("--admin-addr=127.0.0.1:{}", free_port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("local-control-plane starts");
    let stdout = run.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .and_then(Result::ok)
        .unwrap_or_default();
    let kubeconfig = line
        .strip_prefix("ready kubeconfig=")
        .unwrap_or_else(|| panic!("not ready: {line:?}"))
        .to_owned();
    // The supervisor, etcd, the apiserver, the controller manager and the product all run from this
    // test's directory.
    assert_eq!(
        processes_mentioning(&dir_text).len(),
        5,
        "supervisor, etcd, kube-apiserver, kube-controller-manager, product"
    );

    let kubectl = |line: &str| kubectl_line_with(Path::new(&kubeconfig), line);
    ok(kubectl("create namespace team-a"));
    ok(kubectl(
        "create secret generic db -n team-a --from-literal=k=v",
    ));
    let refused = fails(kubectl(
        "create secret generic db -n team-a --from-literal=k=w --dry-run=server",
    ));
    assert!(
        refused.contains(r#"admission webhook "secret-names.scoped-secrets.io" denied the request: a secret (Opaque) named "db" already exists in namespace "team-a""#),
        "{refused}"
    );
    ok(kubectl("get projects -A"));

    // Ctrl-C: the terminal sends SIGINT to the foreground process group; the supervisor stops the rest.
    let status = Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "local-control-plane did not stop"
        );
        std::thread::park_timeout(Duration::from_millis(50));
    }
    assert!(
        processes_mentioning(&dir_text).is_empty(),
        "processes were left behind"
    );
}
