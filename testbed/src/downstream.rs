//! A downstream cluster, as Rancher's `c-abc123` is one: a control plane of its own (etcd and
//! kube-apiserver on loopback, no controller manager) with `deploy/downstream-access` applied, so the
//! copier's identity (ServiceAccount `scoped-secrets-copier`) exists there with exactly its rights.
//!
//! It is registered in a management cluster the way an operator does it (README "Downstream
//! clusters"): a Secret `cluster-<id>` in `scoped-secrets-system`, labelled
//! `scoped-secrets.io/cluster: <id>`, holding under `value` a kubeconfig with the apiserver's CA inline
//! and a bound token of the copier (`kubectl create token`, served by the apiserver itself). Revoking
//! deletes the ServiceAccount, so every token bound to it is refused (401); restoring re-creates it
//! and registers a fresh token. Used by the tests of many clusters and by `make run-clusters`.

use crate::control_plane::{ControlPlane, Options};
use crate::registration;
use anyhow::{Context, Result, bail};
use scoped_secrets::{certs, keys};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The product's namespace, in the management cluster (registrations) and downstream (the copier).
pub const NAMESPACE: &str = "scoped-secrets-system";
/// The copier's ServiceAccount in a downstream cluster (`deploy/downstream-access`).
pub const COPIER: &str = "scoped-secrets-copier";
/// The copier's username as a downstream apiserver sees it.
pub const COPIER_USER: &str = "system:serviceaccount:scoped-secrets-system:scoped-secrets-copier";
/// How long a registration's token is valid: longer than any test or `make run-clusters` session.
const TOKEN_DURATION: &str = "48h";

/// A running downstream cluster; dropping it stops its processes.
pub struct Downstream {
    /// The cluster id (`c-abc123`): the cluster part of its namespaces' project IDs.
    pub id: String,
    pub control_plane: ControlPlane,
    /// The management cluster it was last registered in, for [`Downstream::restore`].
    registered_in: Mutex<Option<PathBuf>>,
}

impl Downstream {
    /// Starts cluster `id` in state directory `dir` (emptied) and applies `deploy/downstream-access`.
    /// For callers without a runtime (tests); [`Downstream::start_async`] otherwise.
    pub fn start(id: &str, dir: impl Into<PathBuf>) -> Result<Self> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(Self::start_async(id, dir))
    }

    /// [`Downstream::start`] from within a runtime.
    pub async fn start_async(id: &str, dir: impl Into<PathBuf>) -> Result<Self> {
        scoped_secrets::clusters::credentials::check_cluster_id(id)
            .with_context(|| format!("cluster id {id:?}"))?;
        let control_plane =
            ControlPlane::start(&Options::new(dir).without_controller_manager()).await?;
        let downstream = Self {
            id: id.to_owned(),
            control_plane,
            registered_in: Mutex::new(None),
        };
        downstream.apply_access()?;
        Ok(downstream)
    }

    /// The admin kubeconfig (`system:masters`, so `kubectl --as=<user>` works).
    pub fn kubeconfig(&self) -> &Path {
        &self.control_plane.kubeconfig
    }

    /// Secret `name` in namespace `ns` of this cluster, as JSON, if it exists.
    pub fn secret(&self, ns: &str, name: &str) -> Option<serde_json::Value> {
        let out = crate::kubectl::kubectl_with(
            self.kubeconfig(),
            &["get", "secret", name, "-n", ns, "-o", "json"],
        );
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("kubectl prints JSON"))
    }

    /// The pid of one of its processes (`etcd`, `kube-apiserver`), to pause or kill it.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.control_plane.pid(name)
    }

    /// The name of its registration Secret in the management cluster.
    pub fn registration_name(&self) -> String {
        format!("cluster-{}", self.id)
    }

    /// A kubeconfig as a registration holds it: the apiserver's CA inline and a fresh bound token
    /// of the copier's ServiceAccount.
    pub fn registration_kubeconfig(&self) -> Result<String> {
        let token = crate::kubectl::try_kubectl(
            self.kubeconfig(),
            &[
                "create",
                "token",
                COPIER,
                "-n",
                NAMESPACE,
                &format!("--duration={TOKEN_DURATION}"),
            ],
            None,
        )?;
        let token = token.trim();
        if token.is_empty() {
            bail!("kubectl create token printed no token");
        }
        let kubeconfig = self.control_plane.kubeconfig_with_token(token);
        // Accepted once the apiserver's cache holds the ServiceAccount (at once, unless it was just
        // re-created).
        let path = self.control_plane.dir.join("kubeconfig-copier-check");
        certs::write_file(&path, &kubeconfig, true)?;
        let accepted =
            until(|| crate::kubectl::try_kubectl(&path, &["auth", "whoami"], None).is_ok());
        let _ = std::fs::remove_file(&path);
        if !accepted {
            bail!("a fresh token of {COPIER} was not accepted within 30 s");
        }
        Ok(kubeconfig)
    }

    /// Creates or replaces the registration Secret of this cluster in the management cluster, with
    /// a fresh token. Server-side apply: no last-applied annotation repeats the token.
    pub fn register(&self, management_kubeconfig: &Path) -> Result<()> {
        let kubeconfig = self.registration_kubeconfig()?;
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.registration_name(),
                "namespace": NAMESPACE,
                "labels": { keys::CLUSTER_REGISTRATION_LABEL: self.id },
            },
            "type": "Opaque",
            "data": { keys::KUBECONFIG_KEY: certs::base64_encode(kubeconfig.as_bytes()) },
        });
        crate::kubectl::try_kubectl(
            management_kubeconfig,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=testbed-downstream",
                "-f",
                "-",
            ],
            Some(&secret.to_string()),
        )?;
        *self.registered_in.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(management_kubeconfig.to_owned());
        Ok(())
    }

    /// Revokes the copier's credentials: deletes its ServiceAccount, so the apiserver refuses every
    /// token bound to it (401). The registration Secret is left as it is. Returns once a token
    /// issued before the deletion is refused: the apiserver looks ServiceAccounts up through its
    /// cache, which sees the deletion a moment later.
    pub fn revoke(&self) -> Result<()> {
        let probe = self.registration_kubeconfig()?;
        let probe_path = self.control_plane.dir.join("kubeconfig-revocation-probe");
        certs::write_file(&probe_path, &probe, true)?;
        crate::kubectl::try_kubectl(
            self.kubeconfig(),
            &["delete", "serviceaccount", COPIER, "-n", NAMESPACE],
            None,
        )?;
        let refused = until(|| {
            crate::kubectl::try_kubectl(&probe_path, &["auth", "whoami"], None)
                .is_err_and(|e| e.to_string().contains("Unauthorized"))
        });
        if !refused {
            bail!("a token of the deleted ServiceAccount {COPIER} was still accepted after 30 s");
        }
        let _ = std::fs::remove_file(&probe_path);
        Ok(())
    }

    /// Re-creates the copier's ServiceAccount (a new one: tokens of the old stay refused) and
    /// registers a fresh token in the management cluster it was last registered in, if any.
    pub fn restore(&self) -> Result<()> {
        self.apply_access()?;
        let management = self
            .registered_in
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match management {
            Some(management) => self.register(&management),
            None => Ok(()),
        }
    }

    /// Applies `deploy/downstream-access` (idempotent).
    fn apply_access(&self) -> Result<()> {
        let manifests = registration::render_kustomization(
            &Path::new(crate::env::REPO).join("deploy/downstream-access"),
        )?;
        crate::kubectl::try_kubectl(
            self.kubeconfig(),
            &["apply", "--server-side", "-f", "-"],
            Some(&manifests),
        )?;
        Ok(())
    }
}

/// Polls `check` every 200 ms for up to 30 s; whether it came true.
fn until(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
