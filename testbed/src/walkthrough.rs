//! What the tests of `make run` and `make run-clusters` share: the walkthrough those print, run as
//! the reader would, and the processes left behind.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Panics unless the product's binary was built beside `supervisor` (the binary under test).
pub fn assert_product_beside(supervisor: &Path) {
    let product = supervisor.with_file_name("scoped-secrets");
    assert!(
        product.is_file(),
        "{} is not built: run this test with the workspace's (`make test`)",
        product.display()
    );
}

/// A supervisor (`local-control-plane --serve`, `local-clusters`) a test started, once it is ready.
pub struct Supervisor {
    child: Child,
    /// Its first line of standard output: `ready ...`.
    pub ready: String,
    /// Standard error so far, each time more of it has come.
    printed: Receiver<String>,
}

impl Supervisor {
    /// Starts `command` with its outputs piped and waits for its ready line.
    pub fn start(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the supervisor starts");
        // The walkthrough goes to stderr, after the ready line; collect it as it comes.
        let mut stderr = child.stderr.take().expect("stderr");
        let (printed_tx, printed) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                text.push_str(&String::from_utf8_lossy(&chunk[..n]));
                let _ = printed_tx.send(text.clone());
            }
        });
        let ready = BufReader::new(child.stdout.take().expect("stdout"))
            .lines()
            .next()
            .and_then(Result::ok)
            .unwrap_or_default();
        Self {
            child,
            ready,
            printed,
        }
    }

    /// The walkthrough printed on standard error, once it is whole (its last line says how to stop),
    /// within 30 s.
    pub fn walkthrough(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self
                .printed
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no walkthrough printed"));
            if text.contains("Ctrl-C stops everything") {
                return text;
            }
        }
    }

    /// Ctrl-C: the terminal sends SIGINT to the foreground process group, and the supervisor stops
    /// the rest; panics unless it has ended within `within`.
    pub fn interrupt(mut self, within: Duration) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + within;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "the supervisor did not stop");
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }
}

/// The commands of a printed walkthrough: its indented lines after the line starting with `after`.
pub fn commands(printed: &str, after: &str) -> String {
    printed
        .lines()
        .skip_while(|l| !l.starts_with(after))
        .skip_while(|l| !l.starts_with("  "))
        .take_while(|l| l.starts_with("  ") || l.is_empty())
        .filter(|l| !l.is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect()
}

/// Runs `script` with bash (`set -euo pipefail`, no inherited KUBECONFIG) and returns its standard
/// output; panics with the script and both outputs when it fails.
pub fn walk(script: &str) -> String {
    let walked = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("bash");
    let out = String::from_utf8_lossy(&walked.stdout).into_owned();
    assert!(
        walked.status.success(),
        "the walkthrough failed:\n{script}\n{out}\n{}",
        String::from_utf8_lossy(&walked.stderr)
    );
    out
}

/// Pids of live processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
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
