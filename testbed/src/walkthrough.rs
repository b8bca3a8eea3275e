//! What the tests of `make run` and `make run-clusters` share: the walkthrough those print, run as
//! the reader would, and the processes left behind.

use std::process::Command;

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
