//! The re-list phase (issue #10 §3): reviews at a fixed rate while the server's watches re-list the
//! whole cluster and its reconciler plans the whole world. Index reads never wait: the figure is
//! p99.9 of the reviews scheduled between the first expired watch and the end of the first full plan
//! after the re-list (target <= 5 ms).
//!
//! The re-list is real: a second server (reconciler on) reaches the cluster through a kube-apiserver
//! of its own on the benchmark's etcd. That apiserver is SIGKILLed, the cluster changes meanwhile,
//! and a new one starts on the same port: its watch cache begins at the current revision, so the
//! server's watches resume from a resourceVersion it no longer holds, are answered 410 Gone and
//! re-list (projects, 10,000+ namespaces, the metadata of every secret, the scoped secrets). The
//! re-listed world wakes the reconciler, which plans it whole. The server logs each list and each
//! plan; the phase reads those lines as they come to place the window.
//!
//! Then a second re-list with the reviews sent to the bare echo server of `limit/` while the product
//! re-lists and plans: the p99.9 this machine allows a server that only parses and echoes, in a
//! window of the same kind.
//!
//! Both rounds run twice: first with the control plane (etcd and the apiservers) sharing the two
//! cores with the webhook and the load at the same priority, then with it yielding (its threads at
//! nice 19, as if on nodes of its own: it still gets every cycle the reviews leave, so the re-list
//! takes as long).

use crate::load::{Outcome, Target, free_port, wait_ready};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testbed::control_plane::ControlPlane;

/// What the phase needs from the benchmark: its directory (holding `certs/`), its control plane,
/// the admin kubeconfig and client, and the load's shape.
pub struct Setup<'a> {
    pub dir: &'a Path,
    pub control_plane: &'a ControlPlane,
    pub kubeconfig: &'a Path,
    pub client: &'a kube::Client,
    pub target_namespaces: u64,
    pub connections: u64,
    pub rate: u64,
    pub members: u64,
    pub seconds: u64,
}

const PROJECT: &str = "relist";
const BACKING: &str = "local-relist";

/// Runs the phase and prints its figures.
pub async fn phase(setup: &Setup<'_>) -> Result<()> {
    let mut apiserver = SecondApiserver::start(setup)?;
    fan_out_project(setup)?;
    let log_path = setup.dir.join("relist-server.log");
    let (webhook, admin) = (free_port()?, free_port()?);
    let certs = setup.dir.join("certs");
    let server = Command::new(env!("CARGO_BIN_EXE_scoped-secrets"))
        .env("KUBECONFIG", &apiserver.sa_kubeconfig)
        // The lists and the plans are logged at debug: the phase places its window by them.
        .env(
            "RUST_LOG",
            "warn,scoped_secrets::index=debug,scoped_secrets::reconciler::controller=debug",
        )
        .args(["serve", "--webhook-addr", &webhook, "--admin-addr", &admin])
        .arg(format!(
            "--tls-cert={}",
            certs.join(scoped_secrets::certs::TLS_CERT).display()
        ))
        .arg(format!(
            "--tls-key={}",
            certs.join(scoped_secrets::certs::TLS_KEY).display()
        ))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let _server = testbed::process::Guard(server);
    wait_ready(admin.parse()?).await?;
    wait_for_copies(setup.client, setup.members).await?;
    let product = Target {
        addr: webhook.parse()?,
        tls: crate::load::tls_connector(&std::fs::read(
            certs.join(scoped_secrets::certs::CA_CERT),
        )?)?,
        namespaces: setup.target_namespaces,
        echoes_uid: true,
    };
    let (_echo, echo_addr) = crate::limit::spawn("echo", &certs).await?;
    let echo = Target {
        addr: echo_addr,
        ..product.clone()
    };
    for (round, cores) in [CoreShare::Sharing, CoreShare::Yielding]
        .into_iter()
        .enumerate()
    {
        if cores == CoreShare::Yielding {
            apiserver.niceness = YIELDING_NICENESS;
            yield_cores(setup.control_plane)?;
        }
        let how = cores.describe();
        let (reviews, started, marks) = relist_under_load(
            &mut apiserver,
            &log_path,
            setup,
            &product,
            &format!("product-{round}"),
        )
        .await?;
        if let Some(window) = report("the product", how, &reviews, started, &marks, setup) {
            let p999 = window.percentile(0.999);
            let met = p999 <= 5.0 && window.errors() == 0;
            println!(
                "re-list phase, {how}: p99.9 during re-list + plan {p999:.3} ms (target <= 5 ms, no errors): {}",
                if met { "MET" } else { "NOT MET" }
            );
        }
        // The same with the reviews sent to the bare echo server (`limit/`) while the product
        // re-lists and plans again: what this machine allows a server that only parses and
        // echoes, in a window of the same kind. (It runs second, and the product then serves no
        // reviews while it re-lists: if anything, the comparison favours the echo server.)
        let (reviews, started, marks) = relist_under_load(
            &mut apiserver,
            &log_path,
            setup,
            &echo,
            &format!("echo-{round}"),
        )
        .await?;
        if let Some(window) = report(
            "the bare echo server",
            how,
            &reviews,
            started,
            &marks,
            setup,
        ) {
            println!(
                "re-list phase, {how}: p99.9 of the bare echo server during its re-list + plan {:.3} ms (for comparison)",
                window.percentile(0.999)
            );
        }
    }
    Ok(())
}

/// How the control plane shares the machine's cores with the webhook and the load during a round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CoreShare {
    /// At the same priority as everything else, as the test bed runs it.
    Sharing,
    /// Its threads at [`YIELDING_NICENESS`].
    Yielding,
}

impl CoreShare {
    fn describe(self) -> &'static str {
        match self {
            Self::Sharing => "control plane sharing the cores",
            Self::Yielding => "control plane yielding the cores",
        }
    }
}

/// The niceness of the control plane's threads when it yields: the lowest there is.
const YIELDING_NICENESS: i32 = 19;

/// Lowers every thread of the benchmark's etcd and first kube-apiserver to [`YIELDING_NICENESS`]
/// (threads they start later inherit it); the second apiserver is restarted at it from now on.
fn yield_cores(control_plane: &ControlPlane) -> Result<()> {
    for program in ["etcd", "kube-apiserver"] {
        let pid = control_plane
            .pid(program)
            .with_context(|| format!("the control plane's {program}"))?;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let Ok(tid) = task?.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            // A thread that ended meanwhile is skipped.
            if let Some(tid) = rustix::process::Pid::from_raw(tid) {
                let _ = rustix::process::setpriority_process(Some(tid), YIELDING_NICENESS);
            }
        }
    }
    Ok(())
}

/// Restarts the second apiserver so that the server's watches expire and re-list, and sends
/// reviews to `target` at the fixed rate meanwhile; returns them, when the load began, and when
/// the server's re-list and plan happened.
async fn relist_under_load(
    apiserver: &mut SecondApiserver,
    log_path: &Path,
    setup: &Setup<'_>,
    target: &Target,
    round: &str,
) -> Result<(Outcome, Instant, Marks)> {
    let log = LogWatch::from_now(log_path)?;
    apiserver.kill();
    // The cluster moves on while the apiserver is down: the server's resourceVersions fall behind
    // the new apiserver's watch cache.
    touch_cluster(setup.client, round).await?;
    apiserver.spawn()?;
    let started = Instant::now();
    let (connections, rate, seconds) = (setup.connections, setup.rate, setup.seconds);
    let target = target.clone();
    let load = tokio::spawn(async move {
        crate::load::load(
            &target,
            connections,
            Duration::from_secs(seconds),
            Some(rate),
        )
        .await
    });
    let marks = log
        .follow(started, Duration::from_secs(setup.seconds))
        .await?;
    let reviews = load.await??;
    apiserver.ready()?;
    Ok((reviews, started, marks))
}

/// One project, `members` namespaces in it and one original: the reconciler fans it out before
/// the phase, so the plan after the re-list checks every copy.
fn fan_out_project(setup: &Setup<'_>) -> Result<()> {
    let project = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: local}}\n---\n\
         apiVersion: management.cattle.io/v3\nkind: Project\n\
         metadata: {{name: {PROJECT}, namespace: local}}\n\
         spec: {{clusterName: local, displayName: {PROJECT}}}\n"
    );
    kubectl(setup.kubeconfig, &["apply", "-f", "-"], &project)?;
    let uid = project_uid(setup.kubeconfig)?;
    // The backing namespace marked for the Project, as the reconciler makes one: only a marked
    // one is the project's where the reconciler manages them.
    let mut yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {BACKING}\n  \
         annotations: {{{of}: \"local:{PROJECT}\", {uid_key}: \"{uid}\"}}\n---\n\
         apiVersion: v1\nkind: Secret\n\
         metadata: {{name: shared, namespace: {BACKING}, labels: {{{label}: {PROJECT}}}}}\n\
         data: {{key: ZG9n}}\n",
        of = scoped_secrets::keys::BACKING_NAMESPACE_OF_ANNOTATION,
        uid_key = scoped_secrets::keys::BACKING_NAMESPACE_UID_ANNOTATION,
        label = scoped_secrets::keys::PROJECT_SCOPED_LABEL,
    );
    for i in 0..setup.members {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: relist-member-{i}\n  \
             annotations: {{field.cattle.io/projectId: \"local:{PROJECT}\"}}\n"
        ));
    }
    kubectl(setup.kubeconfig, &["apply", "-f", "-"], &yaml)?;
    let status = format!(r#"{{"status":{{"backingNamespace":"{BACKING}"}}}}"#);
    kubectl(
        setup.kubeconfig,
        &[
            "patch",
            "project",
            PROJECT,
            "-n",
            "local",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ],
        "",
    )?;
    Ok(())
}

/// The bench Project's `metadata.uid`.
fn project_uid(kubeconfig: &Path) -> Result<String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "get",
            "project",
            PROJECT,
            "-n",
            "local",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .output()?;
    let uid = String::from_utf8(out.stdout)?.trim().to_owned();
    if !out.status.success() || uid.is_empty() {
        anyhow::bail!(
            "reading the uid of Project {PROJECT}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(uid)
}

fn kubectl(kubeconfig: &Path, args: &[&str], input: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Waits until every member namespace holds its copy (original + `members` copies carry the label).
async fn wait_for_copies(client: &kube::Client, members: u64) -> Result<()> {
    let secrets: Api<Secret> = Api::all(client.clone());
    let selector = format!("{}={PROJECT}", scoped_secrets::keys::PROJECT_SCOPED_LABEL);
    let started = Instant::now();
    loop {
        let listed = secrets
            .list_metadata(&ListParams::default().labels(&selector))
            .await?;
        if listed.items.len() as u64 > members {
            println!(
                "re-list phase: {members} copies fanned out in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("{} of {members} copies after 300 s", listed.items.len());
        }
        // Polling the apiserver for a condition, with the deadline above.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A namespace and a secret written while the apiserver is down (through the first one).
async fn touch_cluster(client: &kube::Client, round: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let name = format!("relist-moved-{round}-{}", std::process::id());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("moved".to_owned()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), &name)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

/// When (from the restart) the watches expired, re-listed, and the first full plan after that ended.
#[derive(Debug, Default)]
struct Marks {
    expired: Option<Duration>,
    namespaces_listed: Option<Duration>,
    secrets_listed: Option<Duration>,
    planned: Option<Duration>,
    plan_ms: Option<String>,
    planned_namespaces: Option<String>,
}

/// Follows the server's log from a byte offset.
struct LogWatch {
    path: PathBuf,
    offset: u64,
}

impl LogWatch {
    fn from_now(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            offset: std::fs::metadata(path)?.len(),
        })
    }

    /// Reads new lines every 10 ms until the plan after the re-list is seen, or `limit` passes.
    async fn follow(self, started: Instant, limit: Duration) -> Result<Marks> {
        use std::io::{Read, Seek, SeekFrom};
        let mut marks = Marks::default();
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut pending = String::new();
        while started.elapsed() < limit && marks.planned.is_none() {
            let mut chunk = String::new();
            file.read_to_string(&mut chunk)?;
            pending.push_str(&chunk);
            let at = started.elapsed();
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                marks.see(&line, at);
            }
            // Polling a log file as it grows.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(marks)
    }
}

impl Marks {
    /// One line of the server's log (JSON, one event a line).
    fn see(&mut self, line: &str, at: Duration) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
        match text("message").as_str() {
            "watch failed; retrying" if text("error").contains("too old resource version") => {
                self.expired.get_or_insert(at);
            }
            "listed" if text("watch") == "namespaces" => {
                self.namespaces_listed.get_or_insert(at);
            }
            "listed" if text("watch") == "secret-names" => {
                self.secrets_listed.get_or_insert(at);
            }
            "reconciler: planned"
                if self.namespaces_listed.is_some()
                    && self.secrets_listed.is_some()
                    && self.planned.is_none() =>
            {
                self.planned = Some(at);
                self.plan_ms = Some(event["plan_ms"].to_string());
                self.planned_namespaces = Some(event["namespaces"].to_string());
            }
            _ => {}
        }
    }
}

/// The reviews scheduled between the first expired watch (or the first re-list) and the end of the
/// first full plan after it; `None` when those did not both happen.
fn window_of(reviews: &Outcome, started: Instant, marks: &Marks) -> Option<Outcome> {
    let from = marks.expired.or(marks.namespaces_listed)?;
    let to = marks.planned?;
    Some(reviews.scheduled_within(started + from, started + to))
}

/// Prints when the watches expired, re-listed and the plan ended, and the reviews `server`
/// answered in that window and over the whole run; returns the window's reviews, `None` when the
/// re-list and plan were not both seen.
fn report(
    server: &str,
    how: &str,
    reviews: &Outcome,
    started: Instant,
    marks: &Marks,
    setup: &Setup<'_>,
) -> Option<Outcome> {
    let seconds = |d: Option<Duration>| {
        d.map(|d| format!("{:.2} s", d.as_secs_f64()))
            .unwrap_or_else(|| "never".to_owned())
    };
    println!(
        "re-list phase, {how}, reviews to {server}: after the apiserver restart, watches expired at {}, namespaces re-listed at {}, secrets at {}, full plan ({} namespaces) done at {} taking {} ms",
        seconds(marks.expired),
        seconds(marks.namespaces_listed),
        seconds(marks.secrets_listed),
        marks.planned_namespaces.as_deref().unwrap_or("?"),
        seconds(marks.planned),
        marks.plan_ms.as_deref().unwrap_or("?"),
    );
    let Some(window) = window_of(reviews, started, marks) else {
        println!(
            "re-list phase, {how}, reviews to {server}: the re-list and plan did not both happen within {} s (NOT checked)",
            setup.seconds
        );
        return None;
    };
    window.print(&format!(
        "re-list phase, {how}, {}/s from {} connections to {server}, during re-list + full plan",
        setup.rate, setup.connections,
    ));
    reviews.print(&format!(
        "re-list phase, {how}, reviews to {server}, whole run ({} s)",
        setup.seconds
    ));
    Some(window)
}

/// A second kube-apiserver on the benchmark's etcd (the first one's flags, a port of its own), and
/// the service account's kubeconfig for it.
struct SecondApiserver {
    child: Option<Child>,
    /// The niceness it is started at (0: as the first one runs).
    niceness: i32,
    args: Vec<String>,
    log: PathBuf,
    sa_kubeconfig: PathBuf,
}

impl SecondApiserver {
    fn start(setup: &Setup<'_>) -> Result<Self> {
        let (dir, control_plane) = (setup.dir, setup.control_plane);
        let pid = control_plane
            .pid("kube-apiserver")
            .context("the control plane's kube-apiserver")?;
        let mut args: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))?
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let port = free_port()?;
        let port = port.rsplit(':').next().unwrap_or_default().to_owned();
        let mut first_port = None;
        for arg in &mut args {
            if let Some(p) = arg.strip_prefix("--secure-port=") {
                first_port = Some(p.to_owned());
                *arg = format!("--secure-port={port}");
            }
        }
        let first_port = first_port.context("the apiserver's --secure-port")?;
        let text = std::fs::read_to_string(control_plane.dir.join("kubeconfig-service-account"))?;
        let sa_kubeconfig = dir.join("kubeconfig-sa-second-apiserver");
        std::fs::write(
            &sa_kubeconfig,
            text.replace(
                &format!("127.0.0.1:{first_port}"),
                &format!("127.0.0.1:{port}"),
            ),
        )?;
        let mut second = Self {
            child: None,
            niceness: 0,
            args,
            log: dir.join("second-apiserver.log"),
            sa_kubeconfig,
        };
        second.spawn()?;
        second.ready()?;
        Ok(second)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        self.child = Some(
            Command::new("nice")
                .arg(format!("--adjustment={}", self.niceness))
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        );
        Ok(())
    }

    /// Waits (up to 120 s) until it answers /readyz.
    fn ready(&self) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            let ok = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&self.sa_kubeconfig)
                .args(["get", "--raw", "/readyz"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok {
                return Ok(());
            }
            // Polling its readiness, with the deadline above.
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("the second apiserver did not become ready in 120 s")
    }

    /// SIGKILL: its watch cache is gone with it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SecondApiserver {
    fn drop(&mut self) {
        self.kill();
    }
}
