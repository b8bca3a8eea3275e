//! What both benchmarks need: a local control plane of their own, a client from a kubeconfig, child
//! processes that are stopped with the benchmark, and the memory of a process.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A child process, stopped with SIGTERM (so it drains, or stops what it supervises) by
/// [`Guard::stop`] or when dropped.
pub struct Guard(pub Child);

impl Guard {
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    /// SIGTERM, never SIGKILL: a killed `local-control-plane` could not stop its etcd and apiserver.
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// Starts `local-control-plane` in `dir` (stopped when this process exits) and returns it with the
/// admin kubeconfig.
pub fn start_control_plane(dir: &Path) -> Result<(Guard, PathBuf)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-control-plane"))
        .arg("--dir")
        .arg(dir)
        .arg("--watch-pid")
        .arg(std::process::id().to_string())
        // No controller manager: over 10,000 namespaces its ServiceAccounts, root-CA ConfigMaps and
        // garbage collector (watching every secret) would load the apiserver being measured.
        .arg("--controllers=")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .transpose()?
        .unwrap_or_default();
    let Some(path) = line.strip_prefix("ready kubeconfig=") else {
        let _ = child.kill();
        bail!("control plane did not start: {line}");
    };
    Ok((Guard(child), PathBuf::from(path)))
}

pub async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let options = kube::config::KubeConfigOptions::default();
    Ok(kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(config, &options).await?,
    )?)
}

/// A memory figure of a process in MiB: `VmRSS` (now) or `VmHWM` (peak).
pub fn memory_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .with_context(|| format!("no {field} for process {pid}"))
}
