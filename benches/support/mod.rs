//! What every benchmark needs from the test bed (testbed/): a control plane of its own without the
//! controller manager (over 10,000 namespaces its controllers would load the apiserver being
//! measured), a client, child processes stopped with the benchmark, memory figures.

pub use testbed::control_plane::client;
pub use testbed::process::{Guard, memory_mib};

use scoped_secrets::certs;
use std::path::{Path, PathBuf};
use testbed::control_plane::{ControlPlane, Options};
use testbed::registration;

/// Runs `bench` until it ends or the benchmark is told to stop (SIGINT, SIGTERM). Stopped, `bench`
/// is dropped and with it every process it started (each one's guard stops it), instead of leaving
/// a control plane and servers running on their ports after the benchmark's process is gone.
pub async fn until_stopped<T>(bench: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let stopped_by = tokio::select! {
        outcome = bench => return outcome,
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    anyhow::bail!("stopped by {stopped_by}; the processes the benchmark started are stopped too")
}

/// The repository (the benchmarks are the root package's).
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// `target/<name>` of the repository, emptied, for a benchmark's control planes and certificates.
pub fn fresh_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = Path::new(REPO).join("target").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The control plane the product serves, in `dir` (see [`start_control_plane`]), with the
/// product's prerequisites applied, and an admin client of it.
pub async fn start_product_plane(dir: &Path) -> anyhow::Result<(ControlPlane, kube::Client)> {
    let (control_plane, kubeconfig) = start_control_plane(dir).await?;
    registration::apply_prerequisites(Path::new(REPO), &kubeconfig)?;
    let client = client(&kubeconfig).await?;
    Ok((control_plane, client))
}

/// A count from the environment variable `name`, or `default` when it is not set.
#[allow(
    dead_code,
    reason = "the clusters and reconciler benchmarks read counts, not every one"
)]
pub fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value:?} is not a count")),
        Err(_) => Ok(default),
    }
}

/// Issues (or, with the CA kept, re-issues) a serving certificate for 127.0.0.1 in `certs_dir`.
pub fn issue_certificate(certs_dir: &Path) -> anyhow::Result<()> {
    certs::write_serving_set(
        certs_dir,
        &["localhost".into()],
        &["127.0.0.1".parse()?],
        1,
        1,
    )?;
    Ok(())
}

/// A control plane in `dir`, stopped when the guard is dropped or this process exits, and its admin
/// kubeconfig.
pub async fn start_control_plane(dir: &Path) -> anyhow::Result<(ControlPlane, PathBuf)> {
    let control_plane =
        ControlPlane::start(&Options::new(dir).without_controller_manager()).await?;
    let kubeconfig = control_plane.kubeconfig.clone();
    Ok((control_plane, kubeconfig))
}
