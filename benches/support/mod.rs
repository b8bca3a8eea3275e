//! What every benchmark needs from the test bed (testbed/): a control plane of its own without the
//! controller manager (over 10,000 namespaces its controllers would load the apiserver being
//! measured), a client, child processes stopped with the benchmark, memory figures.

pub use testbed::control_plane::client;
pub use testbed::process::{Guard, memory_mib};

use std::path::{Path, PathBuf};
use testbed::control_plane::{ControlPlane, Options};

/// A control plane in `dir`, stopped when the guard is dropped or this process exits, and its admin
/// kubeconfig.
pub async fn start_control_plane(dir: &Path) -> anyhow::Result<(ControlPlane, PathBuf)> {
    let control_plane =
        ControlPlane::start(&Options::new(dir).without_controller_manager()).await?;
    let kubeconfig = control_plane.kubeconfig.clone();
    Ok((control_plane, kubeconfig))
}
