//! The real local control plane and the server under test, shared by every test of one test binary.
//!
//! The first test to ask starts a [`ControlPlane`] (a real etcd, kube-apiserver and
//! kube-controller-manager on 127.0.0.1; stopped when this process exits, however it exits), applies `deploy/`'s Project CRD,
//! namespace and RBAC, runs `scoped-secrets serve` in-process on its own runtime **as the product's
//! service account** (so the RBAC of `deploy/` is what it has), and registers `deploy/`'s webhook
//! configurations pointed at it. `SCOPED_SECRETS_TEST_KUBECONFIG` + `..._SA_KUBECONFIG` reuse a running
//! control plane instead.

pub use crate::control_plane::client;
use crate::control_plane::{ControlPlane, Options};
use crate::registration;
use scoped_secrets::cli::{CopyArgs, HomeArgs, ModeArg, OverwritePolicyArg, ServeArgs};
use scoped_secrets::index::Index;
use scoped_secrets::metrics::WebhookMetrics;
use scoped_secrets::telemetry::LogFormat;
use scoped_secrets::{certs, serve};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The repository (the product crate's directory): `deploy/`, `hack/`, `examples/` and `target/`.
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

pub struct Env {
    pub kubeconfig: PathBuf,
    pub sa_kubeconfig: PathBuf,
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub index: Arc<Index>,
    pub metrics: WebhookMetrics,
    pub state_dir: PathBuf,
    /// The test CA, base64-encoded as a webhook configuration's `caBundle` takes it.
    pub ca_bundle: String,
    /// The control plane this process started; `None` when it reuses a running one.
    pub control_plane: Option<ControlPlane>,
}

impl Env {
    /// The pid of a process of this binary's own control plane (`etcd`, `kube-apiserver`, ...).
    pub fn control_plane_pid(&self, name: &str) -> u32 {
        self.control_plane
            .as_ref()
            .and_then(|c| c.pid(name))
            .unwrap_or_else(|| panic!("no {name} of this test binary's own control plane"))
    }
}

static ENV: OnceLock<Env> = OnceLock::new();

/// The shared environment, started on first use.
pub fn env() -> &'static Env {
    ENV.get_or_init(|| start().unwrap_or_else(|e| panic!("starting the test environment: {e:#}")))
}

fn start() -> anyhow::Result<Env> {
    let state_dir = Path::new(REPO).join(format!("target/e2e/{}", std::process::id()));
    std::fs::create_dir_all(&state_dir)?;
    let (kubeconfig, sa_kubeconfig, control_plane) = match (
        std::env::var_os("SCOPED_SECRETS_TEST_KUBECONFIG"),
        std::env::var_os("SCOPED_SECRETS_TEST_SA_KUBECONFIG"),
    ) {
        (Some(admin), Some(sa)) => (PathBuf::from(admin), PathBuf::from(sa), None),
        _ => {
            let started = start_control_plane(&state_dir.join("control-plane"))?;
            (
                started.kubeconfig.clone(),
                started.sa_kubeconfig.clone(),
                Some(started),
            )
        }
    };
    registration::apply_prerequisites(Path::new(REPO), &kubeconfig)?;

    let cert_dir = state_dir.join("certs");
    let written = certs::write_serving_set(
        &cert_dir,
        &["localhost".to_owned()],
        &["127.0.0.1".parse()?],
        1,
        1,
    )?;
    let args = serve_args(&cert_dir);
    let ca_bundle = written.ca_bundle_base64.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let (admin_kubeconfig, sa) = (kubeconfig.clone(), sa_kubeconfig.clone());
    std::thread::Builder::new()
        .name("server-under-test".into())
        .spawn(move || {
            let runtime = match runtime(2) {
                Ok(rt) => rt,
                Err(e) => return drop(tx.send(Err(anyhow::anyhow!(e)))),
            };
            runtime.block_on(async move {
                match run_server(&args, &sa, &admin_kubeconfig, &written.ca_bundle_base64).await {
                    Ok((started, _running)) => {
                        let _ = tx.send(Ok(started));
                        // Serve until the test process exits.
                        std::future::pending::<()>().await;
                    }
                    Err(e) => drop(tx.send(Err(e))),
                }
            });
        })?;
    let started = rx.recv_timeout(Duration::from_secs(120))??;
    Ok(Env {
        kubeconfig,
        sa_kubeconfig,
        webhook_addr: started.webhook_addr,
        admin_addr: started.admin_addr,
        index: started.index,
        metrics: started.metrics,
        state_dir,
        ca_bundle,
        control_plane,
    })
}

/// A multi-thread runtime of `workers` threads, for a server on a thread of its own.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

pub fn serve_args(cert_dir: &Path) -> ServeArgs {
    ServeArgs {
        webhook_addr: "127.0.0.1:0".parse().expect("literal address"),
        admin_addr: "127.0.0.1:0".parse().expect("literal address"),
        tls_cert: cert_dir.join(certs::TLS_CERT),
        tls_key: cert_dir.join(certs::TLS_KEY),
        client_ca_file: None,
        allowed_client_names: Vec::new(),
        mode: ModeArg::Enforce,
        copies: CopyArgs {
            overwrite_policy: OverwritePolicyArg::Warn,
            protected_namespaces: scoped_secrets::plan::DEFAULT_PROTECTED_NAMESPACES
                .map(str::to_owned)
                .to_vec(),
        },
        protect_copies: true,
        max_project_original_bytes: scoped_secrets::policy::DEFAULT_MAX_PROJECT_ORIGINAL_BYTES,
        reconciler: false,
        manage_backing_namespaces: true,
        reconciler_users: vec![
            "system:serviceaccount:scoped-secrets-system:scoped-secrets".to_owned(),
        ],
        home: HomeArgs {
            lease_namespace: "scoped-secrets-system".to_owned(),
            local_cluster_id: "local".to_owned(),
        },
        cluster_id: None,
        management_kubeconfig: None,
        max_reviews_in_flight: scoped_secrets::webhook::limits::DEFAULT_MAX_IN_FLIGHT,
        max_large_body_bytes: scoped_secrets::webhook::limits::DEFAULT_LARGE_BODY_BUDGET,
        large_body_bytes_per_second: scoped_secrets::webhook::limits::DEFAULT_LARGE_BODY_RATE,
        max_connections: scoped_secrets::webhook::server::DEFAULT_MAX_CONNECTIONS,
        max_connections_per_address: None,
        handshakes_per_second_per_address:
            scoped_secrets::webhook::handshake_rate::DEFAULT_HANDSHAKES_PER_SECOND,
        // The apiserver keeps its connections to a registered extra server open: a short window
        // keeps the tests' shutdowns short.
        drain_window_seconds: 1,
        log_format: LogFormat::Text,
    }
}

struct Started {
    webhook_addr: SocketAddr,
    admin_addr: SocketAddr,
    index: Arc<Index>,
    metrics: WebhookMetrics,
}

async fn run_server(
    args: &ServeArgs,
    sa_kubeconfig: &Path,
    admin_kubeconfig: &Path,
    ca_bundle: &str,
) -> anyhow::Result<(Started, serve::Running)> {
    scoped_secrets::telemetry::init(LogFormat::Text);
    let running = serve::start(args, client(sa_kubeconfig).await?).await?;
    tokio::time::timeout(Duration::from_secs(60), running.index.wait_synced()).await?;
    let manifests = registration::render_kustomization(&Path::new(REPO).join("deploy/base"))?;
    let configurations = registration::local_webhook_configurations(
        &manifests,
        &format!("https://{}", running.webhook_addr),
        ca_bundle,
    )?;
    registration::apply(&client(admin_kubeconfig).await?, &configurations).await?;
    let started = Started {
        webhook_addr: running.webhook_addr,
        admin_addr: running.admin_addr,
        index: running.index.clone(),
        metrics: running.metrics.clone(),
    };
    Ok((started, running))
}

/// A control plane of the caller's own in `dir`, with the lifecycle controllers; stopped when the
/// returned guard is dropped or this process exits.
pub fn start_control_plane(dir: &Path) -> anyhow::Result<ControlPlane> {
    ControlPlane::start_blocking(&Options::new(dir))
}

/// One more `scoped-secrets serve`, running on a thread of its own until this is dropped: then it
/// shuts down gracefully (not-ready, then the webhook drains) and the thread is joined.
#[must_use = "the extra server shuts down when this guard is dropped"]
pub struct ExtraServer {
    pub webhook_addr: SocketAddr,
    /// The index its webhook decides from.
    pub index: Arc<Index>,
    pub metrics: WebhookMetrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Why the server stopped on its own, as `serve` would exit (a task of it ended).
    died: Arc<std::sync::Mutex<Option<String>>>,
}

impl ExtraServer {
    /// Fails the test when the server stopped on its own: deployed, its pod would have exited.
    #[track_caller]
    pub fn assert_running(&self) {
        let died = self.died.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(why) = died {
            panic!("the server stopped on its own: {why}");
        }
    }
}

impl Drop for ExtraServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if !std::thread::panicking() {
            self.assert_running();
        }
    }
}

/// Starts one more `scoped-secrets serve` in-process (as the product's service account, with the
/// shared environment's serving certificate) with `configure` applied to the shared arguments, and
/// returns it once its index has synced. It is not registered anywhere: the test that starts it
/// registers what it needs. It serves until the returned guard is dropped.
pub fn start_extra_server(configure: impl FnOnce(&mut ServeArgs)) -> ExtraServer {
    let env = env();
    let mut args = serve_args(&env.state_dir.join("certs"));
    configure(&mut args);
    start_server(args, env.sa_kubeconfig.clone())
        .unwrap_or_else(|e| panic!("starting the extra server: {e:#}"))
}

/// Starts `scoped-secrets serve` in-process with `args`, as the identity of `kubeconfig` (the
/// cluster it serves, which need not be the shared environment's), and returns it once its index
/// has synced; or why it did not start. It serves until the returned guard is dropped.
pub fn start_server(args: ServeArgs, kubeconfig: PathBuf) -> anyhow::Result<ExtraServer> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let died = Arc::new(std::sync::Mutex::new(None));
    let record = died.clone();
    let thread = std::thread::Builder::new()
        .name("extra-server".into())
        .spawn(move || {
            let runtime = match runtime(1) {
                Ok(rt) => rt,
                Err(e) => return drop(tx.send(Err(anyhow::anyhow!(e)))),
            };
            runtime.block_on(async move {
                let started = async {
                    let running = serve::start(&args, client(&kubeconfig).await?).await?;
                    tokio::time::timeout(Duration::from_secs(60), running.index.wait_synced())
                        .await?;
                    anyhow::Ok(running)
                }
                .await;
                match started {
                    Ok(mut running) => {
                        let _ = tx.send(Ok((
                            running.webhook_addr,
                            running.index.clone(),
                            running.metrics.clone(),
                        )));
                        // Stopped by the test (a dropped guard, also when the test panics,
                        // closes the channel too), or on its own, as `serve` exits.
                        let died = tokio::select! {
                            _ = stopped => None,
                            error = running.wait() => Some(format!("{error:#}")),
                        };
                        if died.is_some() {
                            *record.lock().unwrap_or_else(|e| e.into_inner()) = died;
                        }
                        running.shutdown().await;
                    }
                    Err(e) => drop(tx.send(Err(e))),
                }
            });
        })?;
    let (webhook_addr, index, metrics) = rx.recv_timeout(Duration::from_secs(90))??;
    Ok(ExtraServer {
        webhook_addr,
        index,
        metrics,
        stop: Some(stop),
        thread: Some(thread),
        died,
    })
}
