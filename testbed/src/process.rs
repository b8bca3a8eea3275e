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

/// `binary serve` (the built product) as the identity of `kubeconfig`, serving the webhook on
/// `webhook` with the serving certificate in `certs_dir` and the admin port on `admin`, with the
/// default settings otherwise; its log goes to `dir/server.log`. For benchmarks, which measure the
/// product as it ships (its own process, its own RSS).
pub fn serve(
    binary: &std::path::Path,
    kubeconfig: &std::path::Path,
    certs_dir: &std::path::Path,
    (webhook, admin): (&str, &str),
    dir: &std::path::Path,
) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))?;
    Ok(Command::new(binary)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .args(["serve", "--webhook-addr", webhook, "--admin-addr", admin])
        .arg(format!(
            "--tls-cert={}",
            certs_dir.join(scoped_secrets::certs::TLS_CERT).display()
        ))
        .arg(format!(
            "--tls-key={}",
            certs_dir.join(scoped_secrets::certs::TLS_KEY).display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// The Prometheus text of the admin port at `admin` (plain HTTP/1.0, no client library needed).
pub async fn admin_metrics(admin: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}
