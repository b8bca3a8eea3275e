//! Child processes of benchmarks and tests that are stopped with them, and the memory of a process.

use anyhow::{Context, Result};
use std::process::{Child, Command};

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
    /// SIGTERM, never SIGKILL: a killed server could not drain or release its Lease.
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.stop();
        }
    }
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

/// A process stopped (SIGSTOP) until this is dropped (SIGCONT), also when the caller fails: an
/// apiserver that neither answers nor closes its connections, as a hung or partitioned one.
pub struct Paused(u32);

impl Paused {
    pub fn new(pid: u32) -> Result<Self> {
        signal(pid, "STOP")?;
        Ok(Self(pid))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = signal(self.0, "CONT");
    }
}

fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}
