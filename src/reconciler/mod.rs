//! The embedded reconciler (docs/SPEC.md §3): copies every project-scoped secret into every namespace of its
//! project, keeps the copies exact, removes unwanted ones, and repairs labels, all from
//! [`crate::plan::actions`] over the shared index. Only the holder of the Lease writes.
//!
//! - [`controller`]: the level-triggered loop (change notification, debounce, periodic resync).
//! - [`apply`]: executes one action, re-checking ownership against the apiserver first.
//! - [`backoff`]: per-action backoff for writes that fail or wait.
//! - [`revocation`]: proves a Project deleted before the copies of its originals are removed.
//! - [`lease`]: leader election on a `coordination.k8s.io/v1` Lease.
//! - [`events`]: Kubernetes Events on the original.
//! - [`metrics`]: Prometheus metrics under `scoped_secrets_reconciler_`.

pub mod apply;
pub mod backoff;
pub mod controller;
pub mod error;
pub mod events;
pub mod lease;
pub mod metrics;
pub mod revocation;

pub use controller::run;
pub use error::Error;
pub use metrics::ReconcilerMetrics;

use crate::plan::Settings;
use std::time::Duration;

/// Resolves once `shutdown` turns true (or its sender is gone). Yields `()`, not the channel's guard,
/// so that a `select!` over it stays `Send` across awaits in its other branches.
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Name of the Lease, and of the controller in Events.
pub const CONTROLLER_NAME: &str = "scoped-secrets";

/// This instance's identity for the Lease and Events: `POD_NAME` (set it from the downward API), else
/// `HOSTNAME` (a pod's hostname is its name), else a name made from the process id.
pub fn default_identity() -> String {
    ["POD_NAME", "HOSTNAME"]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| format!("{CONTROLLER_NAME}-{}", std::process::id()))
}

/// The reconciler's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Which copies are wanted and what may be overwritten: the webhook's settings too.
    pub copies: Settings,
    /// Set `status.backingNamespace` and create the namespace for Projects without one.
    pub manage_backing_namespaces: bool,
    pub lease: lease::LeaseConfig,
    /// How long to let a burst of watch events settle before planning.
    pub debounce: Duration,
    /// Plan from scratch this often even without changes (a safety net, not the mechanism).
    pub resync_every: Duration,
    /// How soon an action put off (stale cache, conflict) is tried again (doubling while it lasts).
    pub requeue_after: Duration,
    /// How long an action waits after its first failure (doubling with every further one).
    pub error_backoff: Duration,
    /// The longest an action ever waits between two attempts.
    pub max_backoff: Duration,
    /// How many writes run at once.
    pub concurrency: usize,
    /// The registered downstream clusters' connections.
    pub clusters: crate::clusters::connections::ConnectionsConfig,
    /// Which replica writes which downstream cluster.
    pub ownership: crate::clusters::ownership::OwnershipConfig,
    /// Which projects are served where, shared with the webhook (which names the downstream
    /// namespaces a new original's copies would overwrite).
    pub placement: std::sync::Arc<crate::clusters::placement::Placement>,
}

impl Config {
    /// The settings `serve` was given (identity from [`default_identity`]).
    pub fn from_args(args: &crate::cli::ServeArgs) -> Self {
        Self::new(
            args.copies.settings(&args.home.lease_namespace),
            args.manage_backing_namespaces,
            args.home.lease_namespace.clone(),
            default_identity(),
        )
        .with_local_cluster_id(&args.home.local_cluster_id)
    }

    /// The management cluster's id (`local` unless told otherwise).
    pub fn with_local_cluster_id(mut self, id: &str) -> Self {
        self.clusters.local_cluster_id = id.to_owned();
        self
    }

    /// Defaults for everything but what the command line decides.
    pub fn new(
        copies: Settings,
        manage_backing_namespaces: bool,
        lease_namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        let (lease_namespace, identity) = (lease_namespace.into(), identity.into());
        Self {
            clusters: crate::clusters::connections::ConnectionsConfig::new(
                lease_namespace.clone(),
                "local",
                identity.clone(),
            ),
            copies,
            manage_backing_namespaces,
            ownership: crate::clusters::ownership::OwnershipConfig::new(
                lease_namespace.clone(),
                identity.clone(),
            ),
            lease: lease::LeaseConfig::new(lease_namespace, identity),
            debounce: Duration::from_millis(75),
            resync_every: Duration::from_secs(300),
            requeue_after: Duration::from_secs(1),
            error_backoff: controller::ERROR_BACKOFF,
            max_backoff: controller::MAX_BACKOFF,
            concurrency: 16,
            placement: crate::clusters::placement::Placement::new(),
        }
    }
}
