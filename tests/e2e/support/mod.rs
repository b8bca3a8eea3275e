//! The real local control plane and the server under test, shared by every test of this binary.
//!
//! The first test to ask starts `local-control-plane` (a real etcd and kube-apiserver on 127.0.0.1;
//! it stops them when this process exits, however it exits), applies `deploy/`'s Project CRD,
//! namespace and RBAC, runs `scoped-secrets serve` in-process on its own runtime **as the product's
//! service account** (so the RBAC of `deploy/` is what it has), and registers `deploy/`'s webhook
//! configurations pointed at it. `SCOPED_SECRETS_TEST_KUBECONFIG` + `..._SA_KUBECONFIG` reuse a running
//! control plane instead.

#![allow(dead_code)]

use scoped_secrets::cli::{CopyArgs, ModeArg, OverwritePolicyArg, ServeArgs};
use scoped_secrets::index::Index;
use scoped_secrets::metrics::WebhookMetrics;
use scoped_secrets::telemetry::LogFormat;
use scoped_secrets::{certs, registration, serve};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
pub struct Env {
    pub kubeconfig: PathBuf,
    pub sa_kubeconfig: PathBuf,
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub index: Arc<Index>,
    pub metrics: WebhookMetrics,
    pub state_dir: PathBuf,
}

static ENV: OnceLock<Env> = OnceLock::new();

/// The shared environment, started on first use.
pub fn env() -> &'static Env {
    ENV.get_or_init(|| start().unwrap_or_else(|e| panic!("starting the test environment: {e:#}")))
}

fn start() -> anyhow::Result<Env> {
    let state_dir = Path::new(REPO).join(format!("target/e2e/{}", std::process::id()));
    std::fs::create_dir_all(&state_dir)?;
    let (kubeconfig, sa_kubeconfig) = match (
        std::env::var_os("SCOPED_SECRETS_TEST_KUBECONFIG"),
        std::env::var_os("SCOPED_SECRETS_TEST_SA_KUBECONFIG"),
    ) {
        (Some(admin), Some(sa)) => (PathBuf::from(admin), PathBuf::from(sa)),
        _ => start_control_plane(&state_dir.join("control-plane"))?,
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
    let (tx, rx) = std::sync::mpsc::channel();
    let (admin_kubeconfig, sa) = (kubeconfig.clone(), sa_kubeconfig.clone());
    std::thread::Builder::new()
        .name("server-under-test".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
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
    })
}

pub fn serve_args(cert_dir: &Path) -> ServeArgs {
    ServeArgs {
        webhook_addr: "127.0.0.1:0".parse().expect("literal address"),
        admin_addr: "127.0.0.1:0".parse().expect("literal address"),
        tls_cert: cert_dir.join(certs::TLS_CERT),
        tls_key: cert_dir.join(certs::TLS_KEY),
        mode: ModeArg::Enforce,
        copies: CopyArgs {
            overwrite_policy: OverwritePolicyArg::Warn,
            protected_namespaces: scoped_secrets::plan::DEFAULT_PROTECTED_NAMESPACES
                .map(str::to_owned)
                .to_vec(),
        },
        protect_copies: true,
        reconciler: false,
        manage_backing_namespaces: true,
        reconciler_users: vec![
            "system:serviceaccount:scoped-secrets-system:scoped-secrets".to_owned(),
        ],
        lease_namespace: "scoped-secrets-system".to_owned(),
        local_cluster_id: "local".to_owned(),
        max_reviews_in_flight: scoped_secrets::webhook::limits::DEFAULT_MAX_IN_FLIGHT,
        max_large_body_bytes: scoped_secrets::webhook::limits::DEFAULT_LARGE_BODY_BUDGET,
        max_connections: scoped_secrets::webhook::server::DEFAULT_MAX_CONNECTIONS,
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

pub async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

pub fn start_control_plane(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-control-plane"))
        .arg("--dir")
        .arg(dir)
        .arg("--watch-pid")
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    // The supervisor prints exactly one line when ready, or exits with an error.
    match lines.next() {
        Some(Ok(line)) if line.starts_with("ready kubeconfig=") => {
            // Keep the child handle (and its pipe) for the life of the process.
            std::mem::forget(child);
            let kubeconfig = PathBuf::from(line.trim_start_matches("ready kubeconfig="));
            let sa = kubeconfig.with_file_name("kubeconfig-service-account");
            Ok((kubeconfig, sa))
        }
        other => {
            let _ = child.kill();
            anyhow::bail!("local-control-plane did not become ready: {other:?}")
        }
    }
}

/// `kubectl` as the admin.
pub fn kubectl(args: &[&str]) -> Output {
    kubectl_with(&env().kubeconfig, args)
}

/// `kubectl` as the admin, given one command line as a person types it, without the `kubectl`:
/// `kubectl_line("get secret db -n team-a -o json")`. Split on whitespace, no shell and no quoting:
/// arguments that contain spaces take the slice form, [`kubectl`].
pub fn kubectl_line(line: &str) -> Output {
    kubectl(&line.split_whitespace().collect::<Vec<_>>())
}

pub fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// `kubectl` as the admin, with `input` on standard input.
pub fn kubectl_apply(input: &str, extra: &[&str]) -> Output {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    kubectl_stdin(&env().kubeconfig, &args, input)
}

pub fn kubectl_stdin(kubeconfig: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .expect("writing kubectl's input");
    }
    child.wait_with_output().expect("kubectl finishes")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "kubectl failed: {}", stderr(&out));
    stdout(&out)
}

/// Asserts failure and returns stderr.
#[track_caller]
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "kubectl unexpectedly succeeded: {}",
        stdout(&out)
    );
    stderr(&out)
}

/// A unique name for this test process.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it returns `Some` or the deadline passes.
#[track_caller]
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Waits until the server's index has seen `condition` (the webhook reads the index, so a test that
/// just created an object waits for it to be indexed before asserting a decision that depends on it).
#[track_caller]
pub fn indexed(what: &str, condition: impl Fn(&scoped_secrets::world::World) -> bool) {
    eventually(what, Duration::from_secs(20), || {
        condition(&env().index.read()).then_some(())
    });
}

/// A project created for a test: `local:<name>`, with its backing namespace `local-<name>`.
pub struct TestProject {
    pub name: String,
    pub backing: String,
}

impl TestProject {
    pub fn id(&self) -> String {
        format!("local:{}", self.name)
    }
}

/// The namespace of cluster `local`'s projects, created once: tests start in parallel, and two
/// `kubectl apply`s creating the same object at once make one of them fail with AlreadyExists.
pub fn cluster_namespace() {
    static CREATED: OnceLock<()> = OnceLock::new();
    CREATED.get_or_init(|| {
        ok(kubectl_apply(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: local}\n",
            &[],
        ));
    });
}

/// Creates a Project in cluster `local` with `status.backingNamespace` set, and that namespace.
pub fn project(prefix: &str) -> TestProject {
    let name = unique(prefix);
    project_named(&name, &name)
}

/// Creates (or updates) Project `local:<name>` and its backing namespace `local-<name>`, sets its
/// `status.backingNamespace` as Rancher's controller does, and waits until the index holds it.
pub fn project_named(name: &str, display_name: &str) -> TestProject {
    let backing = format!("local-{name}");
    cluster_namespace();
    ok(kubectl_apply(
        &format!(
            "apiVersion: v1
kind: Namespace
metadata: {{name: {backing}}}
---
apiVersion: management.cattle.io/v3
kind: Project
metadata: {{name: {name}, namespace: local}}
spec: {{clusterName: local, displayName: {display_name}}}
"
        ),
        &[],
    ));
    ok(patch_backing_namespace("local", name, &backing));
    let id = scoped_secrets::keys::ProjectId::new("local", name);
    indexed("the project", |w| {
        w.project(&id)
            .is_some_and(|p| p.backing_namespace == backing)
    });
    TestProject {
        name: name.to_owned(),
        backing,
    }
}

/// Sets `status.backingNamespace` of Project `<cluster>/<project>` as the admin.
pub fn patch_backing_namespace(cluster: &str, project: &str, backing: &str) -> Output {
    let status = format!(r#"{{"status":{{"backingNamespace":"{backing}"}}}}"#);
    kubectl(&[
        "patch",
        "project",
        project,
        "-n",
        cluster,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ])
}

/// Creates a namespace in the project (annotation and label, as Rancher sets them).
pub fn namespace_in(project: &TestProject, prefix: &str) -> String {
    let ns = unique(prefix);
    ok(kubectl_apply(
        &format!(
            "apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  annotations: {{field.cattle.io/projectId: \"{id}\"}}
  labels: {{field.cattle.io/projectId: {p}}}
",
            id = project.id(),
            p = project.name
        ),
        &[],
    ));
    indexed("the namespace", |w| w.namespace(&ns).is_some());
    ns
}

/// One more `scoped-secrets serve`, running on a thread of its own until this is dropped: then it
/// shuts down gracefully (not-ready, then the webhook drains) and the thread is joined.
#[must_use = "the extra server shuts down when this guard is dropped"]
pub struct ExtraServer {
    pub webhook_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ExtraServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
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
    let sa = env.sa_kubeconfig.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("extra-server".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(tx.send(Err(anyhow::anyhow!(e)))),
            };
            runtime.block_on(async move {
                let started = async {
                    let running = serve::start(&args, client(&sa).await?).await?;
                    tokio::time::timeout(Duration::from_secs(60), running.index.wait_synced())
                        .await?;
                    anyhow::Ok(running)
                }
                .await;
                match started {
                    Ok(running) => {
                        let _ = tx.send(Ok(running.webhook_addr));
                        // A dropped guard (also when the test panics) closes the channel too.
                        let _ = stopped.await;
                        running.shutdown().await;
                    }
                    Err(e) => drop(tx.send(Err(e))),
                }
            });
        })
        .expect("spawning the extra server");
    let webhook_addr = rx
        .recv_timeout(Duration::from_secs(90))
        .expect("the extra server starts in time")
        .unwrap_or_else(|e| panic!("starting the extra server: {e:#}"));
    ExtraServer {
        webhook_addr,
        stop: Some(stop),
        thread: Some(thread),
    }
}
