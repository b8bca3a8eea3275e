//! `scoped-secrets serve` as a supervised process of a local control plane, with a kustomization's
//! webhook configurations registered at 127.0.0.1, and the foreground supervision of such control
//! planes: what `make run` (`bin/local-control-plane.rs`) and `make run-clusters`
//! (`bin/local-clusters.rs`) share.

use crate::control_plane::{self, ControlPlane};
use crate::registration;
use anyhow::{Result, bail};
use scoped_secrets::certs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The product's binary, built beside the test bed's binaries (`cargo build --workspace --bins`).
pub fn product_binary() -> Result<PathBuf> {
    let binary = std::env::current_exe()?.with_file_name("scoped-secrets");
    if !binary.is_file() {
        bail!(
            "{} is not built: `cargo build --workspace --bins` builds it beside this binary",
            binary.display()
        );
    }
    Ok(binary)
}

/// One `scoped-secrets serve` to run against a control plane.
pub struct Product<'a> {
    /// The kubeconfig it runs as (its identity in the cluster it serves).
    pub identity: &'a Path,
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Where its development certificates are written.
    pub certs_dir: &'a Path,
    /// The kustomization whose webhook configurations are registered, pointed at `webhook_addr`.
    pub webhooks_from: &'a Path,
    /// `serve` flags beyond the addresses, certificates and log format.
    pub args: Vec<String>,
}

/// Writes development certificates, starts `scoped-secrets serve` as a process supervised by the
/// control plane (named `scoped-secrets`, its log beside the others), waits for its `/readyz` and
/// registers the webhook configurations of `product.webhooks_from` pointed at it.
pub async fn serve(
    control_plane: &mut ControlPlane,
    product: &Product<'_>,
    deadline: Instant,
) -> Result<()> {
    let written = certs::write_serving_set(
        product.certs_dir,
        &["localhost".to_owned()],
        &[IpAddr::from([127, 0, 0, 1])],
        365,
        30,
    )?;
    let binary = product_binary()?;
    control_plane.supervise(
        "scoped-secrets",
        Command::new(&binary)
            .env("KUBECONFIG", product.identity)
            .arg("serve")
            .arg(format!("--webhook-addr={}", product.webhook_addr))
            .arg(format!("--admin-addr={}", product.admin_addr))
            .arg(format!(
                "--tls-cert={}",
                product.certs_dir.join(certs::TLS_CERT).display()
            ))
            .arg(format!(
                "--tls-key={}",
                product.certs_dir.join(certs::TLS_KEY).display()
            ))
            .arg("--log-format=text")
            .args(&product.args),
    )?;
    wait_admin_ready(product.admin_addr, control_plane, deadline).await?;
    let manifests = registration::render_kustomization(product.webhooks_from)?;
    let configurations = registration::local_webhook_configurations(
        &manifests,
        &format!("https://{}", product.webhook_addr),
        &written.ca_bundle_base64,
    )?;
    registration::apply(
        &control_plane::client(&control_plane.kubeconfig).await?,
        &configurations,
    )
    .await?;
    Ok(())
}

/// The body of a plain-HTTP GET of `path` on the product's admin port, if it answered 200.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    if !answer.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(answer.split_once("\r\n\r\n")?.1.to_owned())
}

/// Polls the product's `/readyz` (plain HTTP on the admin port) until it answers 200.
async fn wait_admin_ready(
    addr: SocketAddr,
    control_plane: &mut ControlPlane,
    deadline: Instant,
) -> Result<()> {
    loop {
        if admin_get(addr, "/readyz").await.is_some() {
            return Ok(());
        }
        if let Some(exited) = control_plane.exited() {
            bail!("{exited} exited before it became ready; see its log in the state directory");
        }
        if Instant::now() > deadline {
            bail!("scoped-secrets did not become ready in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until something asks the control planes to stop (Ctrl-C, SIGTERM, the exit of any of
/// their processes, or of the process `watch_pid`), and says what.
pub async fn supervise(control_planes: &mut [&mut ControlPlane], watch_pid: Option<u32>) -> String {
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => return format!("cannot listen for SIGTERM: {e}"),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return "interrupted".into(),
            _ = sigterm.recv() => return "terminated".into(),
            _ = tick.tick() => {
                for control_plane in control_planes.iter_mut() {
                    if let Some(exited) = control_plane.exited() {
                        return format!("{exited} of {} exited", control_plane.dir.display());
                    }
                }
                if let Some(pid) = watch_pid && !Path::new(&format!("/proc/{pid}")).exists() {
                    return format!("watched process {pid} is gone");
                }
            }
        }
    }
}
