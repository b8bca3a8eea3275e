//! A real etcd, kube-apiserver and kube-controller-manager on free loopback ports, the way
//! controller-runtime's envtest runs the first two, for the tests and for `make run`. The controller
//! manager runs only the controllers that finish lifecycles (namespace deletion, garbage collection,
//! service accounts, their tokens and the root CA ConfigMap), so a deleted namespace really goes away.
//! It stays in the foreground and supervises all of them: on Ctrl-C, SIGTERM, the exit of any child,
//! or the exit of the process named by `--watch-pid` (a test binary that panicked or was killed), it
//! stops them all, so no process is left behind.
//!
//! When all are up it writes `<dir>/kubeconfig` (admin, `system:masters`, by token) and
//! `<dir>/kubeconfig-service-account` (the product's service-account username, no permissions until
//! `deploy/`'s RBAC is applied), and prints one line `ready kubeconfig=<path>` on stdout, which callers
//! wait for.

use anyhow::{Context, Result, bail};
use clap::Parser;
use scoped_secrets::certs::{self, Authority};
use scoped_secrets::registration;
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    about = "Run a local etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 until interrupted"
)]
struct Args {
    /// State directory (etcd data, certificates, kubeconfig, logs); emptied at start.
    #[arg(
        long,
        env = "SCOPED_SECRETS_CONTROL_PLANE_DIR",
        default_value = ".local/control-plane"
    )]
    dir: PathBuf,
    /// Stop when this process exits (used by the test support).
    #[arg(long)]
    watch_pid: Option<u32>,
    /// The kube-controller-manager's controllers (its `--controllers`, full names as its `--help`
    /// lists them); empty: no controller manager.
    #[arg(
        long,
        env = "SCOPED_SECRETS_CONTROL_PLANE_CONTROLLERS",
        value_delimiter = ',',
        default_value = LIFECYCLE_CONTROLLERS
    )]
    controllers: Vec<String>,
    /// How long to wait for the apiserver and the controller manager to become ready.
    #[arg(long, default_value = "120")]
    ready_timeout_secs: u64,
    /// Also run `scoped-secrets serve` against it (as the product's service account, with deploy/'s
    /// CRD and RBAC applied and its webhooks registered at 127.0.0.1), like `make run`.
    #[arg(long)]
    serve: bool,
    /// Webhook address of the served product (with --serve).
    #[arg(long, default_value = "127.0.0.1:8443")]
    webhook_addr: std::net::SocketAddr,
    /// Admin address of the served product (with --serve).
    #[arg(long, default_value = "127.0.0.1:8080")]
    admin_addr: std::net::SocketAddr,
    /// Where the served product's development certificates go (with --serve).
    #[arg(long, default_value = "certs")]
    certs_dir: PathBuf,
    /// The apiserver's address (bind and advertise; in its certificate and the kubeconfigs). Any
    /// other than loopback turns on the default endpoint reconciler, so pods reach the apiserver
    /// through the `kubernetes` Service (10.0.0.1, also in the certificate): that is how the test
    /// node (hack/node/) runs it, on an interface of its own network namespace.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
}

/// The admin token of the throwaway local control plane (it only listens on 127.0.0.1).
const ADMIN_TOKEN: &str = "scoped-secrets-local-admin";
/// A token for the product's own service-account identity, so that the server under test runs with
/// exactly the RBAC of `deploy/` and the webhook's reconciler-identity rules see the real username.
const SERVICE_ACCOUNT_TOKEN: &str = "scoped-secrets-local-service-account";
const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:scoped-secrets-system:scoped-secrets";
const SERVICE_ACCOUNT_GROUPS: &str =
    "system:serviceaccounts,system:serviceaccounts:scoped-secrets-system,system:authenticated";

/// The controllers that finish what a deletion or a new namespace starts. With these, a deleted
/// namespace's content is removed and the namespace disappears, owner references are collected, and
/// every namespace gets its `default` ServiceAccount and `kube-root-ca.crt` ConfigMap.
const LIFECYCLE_CONTROLLERS: &str = "namespace-controller,garbage-collector-controller,\
serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller";
/// The controller manager's identity. With `--use-service-account-credentials=false` every controller
/// acts as this one user, and the namespace controller must delete every kind of object; the
/// bootstrap role `system:kube-controller-manager` grants only what the one-identity-per-controller
/// mode needs (it cannot even delete a ConfigMap), hence `system:masters`.
const CONTROLLER_MANAGER_TOKEN: &str = "scoped-secrets-local-controller-manager";
const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let controllers: Vec<String> = args
        .controllers
        .iter()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    let binaries = binaries()?;
    let dir = std::path::absolute(&args.dir)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("etcd"))?;

    let [
        etcd_client,
        etcd_peer,
        apiserver_port,
        controller_manager_port,
    ] = free_ports()?;
    let pki = write_pki(&dir, args.address)?;
    let mut children = Children::default();
    children.start(
        "etcd",
        Command::new(&binaries.etcd).args([
            "--name=default",
            &format!("--data-dir={}", dir.join("etcd").display()),
            &format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
            &format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
            &format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            &format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            &format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]),
        &dir,
    )?;
    children.start(
        "kube-apiserver",
        Command::new(&binaries.apiserver).args([
            &format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            &format!("--bind-address={}", args.address),
            &format!("--advertise-address={}", args.address),
            &format!("--secure-port={apiserver_port}"),
            &format!("--tls-cert-file={}", pki.serving_cert.display()),
            &format!("--tls-private-key-file={}", pki.serving_key.display()),
            &format!("--token-auth-file={}", pki.tokens.display()),
            "--authorization-mode=RBAC",
            "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            &format!("--service-account-key-file={}", pki.sa_pub.display()),
            &format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ),
            &format!(
                "--endpoint-reconciler-type={}",
                if args.address.is_loopback() {
                    "none"
                } else {
                    "lease"
                }
            ),
            "--allow-privileged=true",
            "--profiling=false",
            "--v=0",
        ]),
        &dir,
    )?;

    let kubeconfig = dir.join("kubeconfig");
    let apiserver = std::net::SocketAddr::new(args.address, apiserver_port);
    write_kubeconfig(&kubeconfig, apiserver, &pki.ca_pem, ADMIN_TOKEN)?;
    let sa_kubeconfig = dir.join("kubeconfig-service-account");
    write_kubeconfig(
        &sa_kubeconfig,
        apiserver,
        &pki.ca_pem,
        SERVICE_ACCOUNT_TOKEN,
    )?;
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout_secs);
    wait_ready(&kubeconfig, &mut children, deadline).await?;
    if !controllers.is_empty() {
        // Started once the apiserver is ready: it gives up when the apiserver is not healthy
        // within 10 s, which a loaded machine can take.
        let controller_manager = ControllerManager {
            binary: &binaries.controller_manager,
            port: controller_manager_port,
            controllers: &controllers,
        };
        controller_manager.start(&dir, apiserver, &pki, &mut children)?;
        controller_manager
            .wait_ready(&pki.ca_pem, &mut children, deadline)
            .await?;
    }
    if args.serve {
        serve_product(
            &args,
            &dir,
            &kubeconfig,
            &sa_kubeconfig,
            &mut children,
            deadline,
        )
        .await?;
    }
    println!("ready kubeconfig={}", kubeconfig.display());
    if args.serve {
        print_try_it(&kubeconfig);
    }

    let reason = supervise(&mut children, args.watch_pid).await;
    eprintln!("local-control-plane: stopping ({reason})");
    children.stop_all();
    Ok(())
}

/// Applies deploy/'s prerequisites, starts `scoped-secrets serve` with development certificates and
/// registers deploy/'s webhook configurations pointed at it.
async fn serve_product(
    args: &Args,
    dir: &Path,
    kubeconfig: &Path,
    sa_kubeconfig: &Path,
    children: &mut Children,
    deadline: Instant,
) -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    registration::apply_prerequisites(repo, kubeconfig)?;
    let written = certs::write_serving_set(
        &args.certs_dir,
        &["localhost".to_owned()],
        &[IpAddr::from([127, 0, 0, 1])],
        365,
        30,
    )?;
    let binary = std::env::current_exe()?.with_file_name("scoped-secrets");
    children.start(
        "scoped-secrets",
        Command::new(&binary)
            .env("KUBECONFIG", sa_kubeconfig)
            .arg("serve")
            .arg(format!("--webhook-addr={}", args.webhook_addr))
            .arg(format!("--admin-addr={}", args.admin_addr))
            .arg(format!(
                "--tls-cert={}",
                args.certs_dir.join(certs::TLS_CERT).display()
            ))
            .arg(format!(
                "--tls-key={}",
                args.certs_dir.join(certs::TLS_KEY).display()
            ))
            .arg("--log-format=text"),
        dir,
    )?;
    wait_admin_ready(args.admin_addr, children, deadline).await?;
    let manifests = registration::render_kustomization(&repo.join("deploy/base"))?;
    let configurations = registration::local_webhook_configurations(
        &manifests,
        &format!("https://{}", args.webhook_addr),
        &written.ca_bundle_base64,
    )?;
    registration::apply(&client(kubeconfig).await?, &configurations).await?;
    Ok(())
}

/// Polls the product's `/readyz` (plain HTTP on the admin port) until it answers 200.
async fn wait_admin_ready(
    addr: std::net::SocketAddr,
    children: &mut Children,
    deadline: Instant,
) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let request = format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut answer = String::new();
            if stream.write_all(request.as_bytes()).await.is_ok()
                && stream.read_to_string(&mut answer).await.is_ok()
                && answer.starts_with("HTTP/1.0 200")
            {
                return Ok(());
            }
        }
        if let Some(exited) = children.exited() {
            bail!("{exited} exited before it became ready; see its log in the state directory");
        }
        if Instant::now() > deadline {
            bail!("scoped-secrets did not become ready in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_try_it(kubeconfig: &Path) {
    let k = kubeconfig.display();
    eprintln!(
        "
scoped-secrets is serving. In another terminal:

  export KUBECONFIG={k}
  kubectl create namespace team-a && kubectl create secret generic db -n team-a --from-literal=password=s3cret
  kubectl create secret generic db -n team-a --from-literal=password=other --dry-run=server
  kubectl get projects -A

Logs are in {dir}. Ctrl-C stops everything.",
        dir = kubeconfig.parent().map(|d| d.display().to_string()).unwrap_or_default()
    );
}

async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let options = kube::config::KubeConfigOptions::default();
    Ok(kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(config, &options).await?,
    )?)
}

struct Binaries {
    etcd: PathBuf,
    apiserver: PathBuf,
    controller_manager: PathBuf,
}

/// Where the binaries are: TEST_ASSET_* files, then KUBEBUILDER_ASSETS, then the cached build
/// (envtest's asset bundles hold no kube-controller-manager, so that one usually comes from the build).
fn binaries() -> Result<Binaries> {
    let assets = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
    let provided = |var: &str, name: &str| {
        std::env::var_os(var).map(PathBuf::from).or_else(|| {
            let path = assets.as_ref()?.join(name);
            path.is_file().then_some(path)
        })
    };
    let etcd = provided("TEST_ASSET_ETCD", "etcd");
    let apiserver = provided("TEST_ASSET_KUBE_APISERVER", "kube-apiserver");
    let controller_manager = provided(
        "TEST_ASSET_KUBE_CONTROLLER_MANAGER",
        "kube-controller-manager",
    );
    if let (Some(etcd), Some(apiserver), Some(controller_manager)) =
        (&etcd, &apiserver, &controller_manager)
    {
        return Ok(Binaries {
            etcd: etcd.clone(),
            apiserver: apiserver.clone(),
            controller_manager: controller_manager.clone(),
        });
    }
    // The script builds only what is neither cached nor provided.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/controlplane/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed; see its output above", script.display());
    }
    let cache = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(Binaries {
        etcd: etcd.unwrap_or_else(|| cache.join("etcd")),
        apiserver: apiserver.unwrap_or_else(|| cache.join("kube-apiserver")),
        controller_manager: controller_manager
            .unwrap_or_else(|| cache.join("kube-controller-manager")),
    })
}

fn free_ports<const N: usize>() -> Result<[u16; N]> {
    // Hold all listeners at once so the kernel hands out different ports.
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

struct Pki {
    ca_pem: String,
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
    tokens: PathBuf,
}

fn write_pki(dir: &Path, address: IpAddr) -> Result<Pki> {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki)?;
    let ca = Authority::generate("local-control-plane CA", 30)?;
    let serving = ca.issue(
        &["localhost".to_owned(), "kubernetes.default.svc".to_owned()],
        // 10.0.0.1: the `kubernetes` Service's address in --service-cluster-ip-range.
        &[
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 1]),
            address,
        ],
        30,
        false,
    )?;
    let sa_key = rcgen::KeyPair::generate()?;
    let out = Pki {
        ca_pem: ca.cert_pem.clone(),
        ca_cert: pki.join("ca.crt"),
        serving_cert: pki.join("apiserver.crt"),
        serving_key: pki.join("apiserver.key"),
        sa_key: pki.join("service-account.key"),
        sa_pub: pki.join("service-account.pub"),
        tokens: pki.join("tokens.csv"),
    };
    certs::write_file(&out.ca_cert, &ca.cert_pem, false)?;
    certs::write_file(&out.serving_cert, &serving.cert_pem, false)?;
    certs::write_file(&out.serving_key, &serving.key_pem, true)?;
    certs::write_file(&out.sa_key, &sa_key.serialize_pem(), true)?;
    certs::write_file(&out.sa_pub, &sa_key.public_key_pem(), false)?;
    certs::write_file(
        &out.tokens,
        &format!(
            "{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n\
             {SERVICE_ACCOUNT_TOKEN},{SERVICE_ACCOUNT_USER},sa-uid,\"{SERVICE_ACCOUNT_GROUPS}\"\n\
             {CONTROLLER_MANAGER_TOKEN},{CONTROLLER_MANAGER_USER},kcm-uid,\"system:masters\"\n"
        ),
        true,
    )?;
    Ok(out)
}

fn write_kubeconfig(
    path: &Path,
    server: std::net::SocketAddr,
    ca_pem: &str,
    token: &str,
) -> Result<()> {
    Ok(certs::write_file(
        path,
        &kubeconfig_yaml(server, ca_pem, Some(token)),
        true,
    )?)
}

/// A kubeconfig for `https://<server>` trusting the local CA, with a token or anonymous.
fn kubeconfig_yaml(server: std::net::SocketAddr, ca_pem: &str, token: Option<&str>) -> String {
    let ca = certs::base64_encode(ca_pem.as_bytes());
    let user = token.map_or_else(|| "{}".to_owned(), |t| format!("{{token: {t}}}"));
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://{server}
    certificate-authority-data: {ca}
users:
- name: user
  user: {user}
contexts:
- name: local
  context:
    cluster: local
    user: user
    namespace: default
current-context: local
"
    )
}

/// The kube-controller-manager, started once the apiserver is ready.
struct ControllerManager<'a> {
    binary: &'a Path,
    port: u16,
    controllers: &'a [String],
}

impl ControllerManager<'_> {
    fn start(
        &self,
        dir: &Path,
        apiserver: std::net::SocketAddr,
        pki: &Pki,
        children: &mut Children,
    ) -> Result<()> {
        let kubeconfig = dir.join("kubeconfig-controller-manager");
        write_kubeconfig(
            &kubeconfig,
            apiserver,
            &pki.ca_pem,
            CONTROLLER_MANAGER_TOKEN,
        )?;
        children.start(
            "kube-controller-manager",
            Command::new(self.binary).args([
                &format!("--kubeconfig={}", kubeconfig.display()),
                &format!("--controllers={}", self.controllers.join(",")),
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", self.port),
                // The apiserver's serving certificate names 127.0.0.1 too, so readiness is checked
                // against the local CA.
                &format!("--tls-cert-file={}", pki.serving_cert.display()),
                &format!("--tls-private-key-file={}", pki.serving_key.display()),
                &format!(
                    "--service-account-private-key-file={}",
                    pki.sa_key.display()
                ),
                &format!("--root-ca-file={}", pki.ca_cert.display()),
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--profiling=false",
                "--v=0",
            ]),
            dir,
        )
    }

    /// Ready once `/healthz?verbose` (always allowed anonymously) passes and lists every requested
    /// controller: the controller manager adds their checks only after it has started them all.
    async fn wait_ready(
        &self,
        ca_pem: &str,
        children: &mut Children,
        deadline: Instant,
    ) -> Result<()> {
        let config = kube::config::Kubeconfig::from_yaml(&kubeconfig_yaml(
            std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            ca_pem,
            None,
        ))?;
        let options = kube::config::KubeConfigOptions::default();
        let client =
            kube::Client::try_from(kube::Config::from_custom_kubeconfig(config, &options).await?)?;
        let mut missing = self.controllers.to_vec();
        loop {
            let request = http::Request::get("/healthz?verbose").body(Vec::new())?;
            if let Ok(text) = client.request_text(request).await {
                missing.retain(|c| !text.contains(&format!("[+]{c} ok")));
                if missing.is_empty() {
                    return Ok(());
                }
            }
            if let Some(exited) = children.exited() {
                bail!(
                    "{exited} exited before the controller manager became ready; see its log in the state directory"
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the controller manager did not become ready in time: its /healthz never \
                     listed {} (controllers are named in full, as `kube-controller-manager --help` \
                     lists them)",
                    missing.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn wait_ready(kubeconfig: &Path, children: &mut Children, deadline: Instant) -> Result<()> {
    let client = client(kubeconfig).await?;
    loop {
        let request = http::Request::get("/readyz").body(Vec::new())?;
        if let Ok(text) = client.request_text(request).await
            && text.trim() == "ok"
        {
            return Ok(());
        }
        if let Some(exited) = children.exited() {
            bail!(
                "{exited} exited before the apiserver became ready; see its log in the state directory"
            );
        }
        if Instant::now() > deadline {
            bail!("the apiserver did not become ready in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until something asks the control plane to stop, and says what.
async fn supervise(children: &mut Children, watch_pid: Option<u32>) -> String {
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
                if let Some(exited) = children.exited() {
                    return format!("{exited} exited");
                }
                if let Some(pid) = watch_pid && !Path::new(&format!("/proc/{pid}")).exists() {
                    return format!("watched process {pid} is gone");
                }
            }
        }
    }
}

const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Children(Vec<(&'static str, Child)>);

impl Children {
    fn start(&mut self, name: &'static str, command: &mut Command, dir: &Path) -> Result<()> {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.0.push((name, child));
        Ok(())
    }

    fn exited(&mut self) -> Option<&'static str> {
        self.0
            .iter_mut()
            .find_map(|(name, child)| (!matches!(child.try_wait(), Ok(None))).then_some(*name))
    }

    /// In reverse order of start (the product, the controller manager, the apiserver, then etcd): SIGTERM first, so the
    /// product drains and releases its lease, then SIGKILL for whatever is still there after a
    /// grace period.
    fn stop_all(&mut self) {
        for (_, child) in self.0.iter_mut().rev() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + STOP_GRACE;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::park_timeout(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}
