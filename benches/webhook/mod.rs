//! The product's webhook as the admission benchmarks run it: `scoped-secrets serve` (release build,
//! its own process, as the product's service account) on free ports, with a serving certificate
//! of its own, and the client side's view of it.

use crate::load::{self, Target};
use crate::support::Guard;
use anyhow::Result;
use scoped_secrets::certs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A benchmark setting from the environment, or its default.
pub fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A running webhook server.
pub struct Webhook {
    pub process: Guard,
    pub certs_dir: PathBuf,
    /// How long it took to become ready (its index synced).
    pub ready_after: Duration,
    /// Reviews of secrets in `namespaces` namespaces (`bench-0`, `bench-1`, …) sent to it.
    pub target: Target,
}

/// Starts the server with a fresh certificate under `dir` (its control plane's service-account
/// kubeconfig in `dir/control-plane`, its log in `dir/server.log`) and waits until it is ready.
pub async fn start(dir: &Path, namespaces: u64, extra_args: &[&str]) -> Result<Webhook> {
    let certs_dir = dir.join("certs");
    crate::support::issue_certificate(&certs_dir)?;
    // Free ports, not fixed ones: another server on a fixed port would answer in this one's place.
    let (webhook, admin) = (load::free_port()?, load::free_port()?);
    let process = Command::new(env!("CARGO_BIN_EXE_scoped-secrets"))
        .env(
            "KUBECONFIG",
            dir.join("control-plane/kubeconfig-service-account"),
        )
        .env("RUST_LOG", "warn")
        .args(["serve", "--webhook-addr", &webhook, "--admin-addr", &admin])
        .args(extra_args)
        .arg(format!(
            "--tls-cert={}",
            certs_dir.join(certs::TLS_CERT).display()
        ))
        .arg(format!(
            "--tls-key={}",
            certs_dir.join(certs::TLS_KEY).display()
        ))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log"))?)
        .spawn()?;
    let process = Guard(process);
    let ready_after = load::wait_ready(admin.parse()?).await?;
    let ca = std::fs::read(certs_dir.join(certs::CA_CERT))?;
    let target = Target {
        addr: webhook.parse()?,
        tls: load::tls_connector(&ca)?,
        namespaces,
        echoes_uid: true,
    };
    Ok(Webhook {
        process,
        certs_dir,
        ready_after,
        target,
    })
}
