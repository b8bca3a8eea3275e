//! A real etcd, kube-apiserver and kube-controller-manager on free loopback ports, the way
//! controller-runtime's envtest runs the first two, for the tests, the benchmarks and `make run`. The
//! controller manager runs only the controllers that finish lifecycles (namespace deletion, garbage
//! collection, service accounts, their tokens and the root CA ConfigMap), so a deleted namespace
//! really goes away.
//!
//! [`ControlPlane::start`] spawns them as child processes of the caller and returns once the
//! apiserver is ready and the controller manager's `/healthz` lists every controller. The returned
//! guard stops them all when dropped; and since a test binary keeps its control plane in a static
//! (never dropped) and may be killed, each child also has a watchdog that stops it once the process
//! that started it is gone, however that process ended. [`ControlPlane::pid`] names the processes,
//! so fault tests can pause and kill them.
//!
//! The state directory holds `kubeconfig` (admin, `system:masters`, by token),
//! `kubeconfig-service-account` (the product's service-account username, no permissions until
//! `deploy/`'s RBAC is applied), the certificates, etcd's data and one log per process.

use anyhow::{Context, Result, bail};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod children;
mod pki;

use children::Children;
pub use pki::SERVICE_ACCOUNT_USER;
use pki::{
    ADMIN_TOKEN, CONTROLLER_MANAGER_TOKEN, Pki, SERVICE_ACCOUNT_TOKEN, kubeconfig_yaml,
    write_kubeconfig, write_pki,
};

/// The controllers that finish what a deletion or a new namespace starts. With these, a deleted
/// namespace's content is removed and the namespace disappears, owner references are collected, and
/// every namespace gets its `default` ServiceAccount and `kube-root-ca.crt` ConfigMap.
pub const LIFECYCLE_CONTROLLERS: &str = "namespace-controller,garbage-collector-controller,\
serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller";
/// How to start a control plane.
#[derive(Clone, Debug)]
pub struct Options {
    /// State directory (etcd data, certificates, kubeconfigs, logs); emptied at start.
    pub dir: PathBuf,
    /// The kube-controller-manager's controllers (its `--controllers`, full names as its `--help`
    /// lists them); empty: no controller manager.
    pub controllers: Vec<String>,
    /// How long the apiserver and the controller manager may take to become ready.
    pub ready_timeout: Duration,
    /// The apiserver's address (bind and advertise; in its certificate and the kubeconfigs). Any
    /// other than loopback turns on the default endpoint reconciler, so pods reach the apiserver
    /// through the `kubernetes` Service (10.0.0.1, also in the certificate): that is how the test
    /// node (hack/node/) runs it, on an interface of its own network namespace.
    pub address: IpAddr,
    /// More kube-apiserver flags (an admission configuration, say); files they name must lie
    /// outside `dir`, which is emptied at start.
    pub apiserver_args: Vec<String>,
}

impl Options {
    /// [`LIFECYCLE_CONTROLLERS`], and two minutes to become ready.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            controllers: LIFECYCLE_CONTROLLERS
                .split(',')
                .map(str::to_owned)
                .collect(),
            ready_timeout: Duration::from_secs(120),
            address: IpAddr::from([127, 0, 0, 1]),
            apiserver_args: Vec::new(),
        }
    }

    /// No controller manager: over 10,000 namespaces its ServiceAccounts, root-CA ConfigMaps and
    /// garbage collector (watching every secret) would load an apiserver being measured.
    pub fn without_controller_manager(mut self) -> Self {
        self.controllers.clear();
        self
    }
}

/// A running control plane; dropping it stops every process it started.
pub struct ControlPlane {
    /// The state directory.
    pub dir: PathBuf,
    /// Admin (`system:masters`, by token), so `kubectl --as=<user>` impersonation works.
    pub kubeconfig: PathBuf,
    /// `system:serviceaccount:scoped-secrets-system:scoped-secrets`, the product's own identity.
    pub sa_kubeconfig: PathBuf,
    /// The apiserver's address (`https://<server>`).
    pub server: SocketAddr,
    /// The throwaway CA the apiserver's serving certificate is issued by (PEM).
    ca_pem: String,
    children: Children,
}

impl ControlPlane {
    /// Starts etcd, the apiserver and (unless no controllers are asked for) the controller manager,
    /// and returns once all are ready.
    pub async fn start(options: &Options) -> Result<Self> {
        let controllers: Vec<String> = options
            .controllers
            .iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        let binaries = binaries()?;
        let dir = std::path::absolute(&options.dir)?;
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
        let pki = write_pki(&dir, options.address)?;
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
                &format!("--bind-address={}", options.address),
                &format!("--advertise-address={}", options.address),
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
                    if options.address.is_loopback() {
                        "none"
                    } else {
                        "lease"
                    }
                ),
                "--allow-privileged=true",
                "--profiling=false",
                "--v=0",
            ])
            .args(&options.apiserver_args),
            &dir,
        )?;

        let kubeconfig = dir.join("kubeconfig");
        let apiserver = SocketAddr::new(options.address, apiserver_port);
        write_kubeconfig(&kubeconfig, apiserver, &pki.ca_pem, ADMIN_TOKEN)?;
        let sa_kubeconfig = dir.join("kubeconfig-service-account");
        write_kubeconfig(
            &sa_kubeconfig,
            apiserver,
            &pki.ca_pem,
            SERVICE_ACCOUNT_TOKEN,
        )?;
        let deadline = Instant::now() + options.ready_timeout;
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
        Ok(Self {
            dir,
            kubeconfig,
            sa_kubeconfig,
            server: apiserver,
            ca_pem: pki.ca_pem.clone(),
            children,
        })
    }

    /// [`ControlPlane::start`] for callers without a runtime (a test's shared environment).
    pub fn start_blocking(options: &Options) -> Result<Self> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(Self::start(options))
    }

    /// A kubeconfig for this apiserver, trusting its CA inline (`certificate-authority-data`) and
    /// authenticating with `token`: the shape a downstream cluster's registration takes.
    pub fn kubeconfig_with_token(&self, token: &str) -> String {
        kubeconfig_yaml(self.server, &self.ca_pem, Some(token))
    }

    /// The pid of one of its processes: `etcd`, `kube-apiserver`, `kube-controller-manager`, or a
    /// process added with [`ControlPlane::supervise`].
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .0
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.child.id())
    }

    /// Starts one more process (its log beside the others) that is stopped with the control plane,
    /// before it.
    pub fn supervise(&mut self, name: &'static str, command: &mut Command) -> Result<()> {
        self.children.start(name, command, &self.dir)
    }

    /// The name of a process that has exited, if any has.
    pub fn exited(&mut self) -> Option<&'static str> {
        self.children.exited()
    }

    /// Stops every process, the last started first (see [`Drop`]).
    pub fn stop(&mut self) {
        self.children.stop_all();
    }
}

/// A client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client> {
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
    let script = Path::new(crate::env::REPO).join("hack/controlplane/build.sh");
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
        apiserver: SocketAddr,
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
            SocketAddr::from(([127, 0, 0, 1], self.port)),
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
