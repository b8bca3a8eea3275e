//! `make run` and the control plane on its own: starts the test bed's local control plane (see
//! `testbed::control_plane`), with `--serve` also `scoped-secrets serve` against it, and stays in the
//! foreground supervising all of them: on Ctrl-C, SIGTERM, the exit of any of them, or the exit of the
//! process named by `--watch-pid`, it stops them all, so no process is left behind.
//!
//! When all are up it prints one line `ready kubeconfig=<path>` on stdout, which callers wait for.

use anyhow::Result;
use clap::Parser;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testbed::control_plane::{ControlPlane, LIFECYCLE_CONTROLLERS, Options};
use testbed::registration;
use testbed::serving::{self, Product};

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
    /// How long to wait for the apiserver, the controller manager and the product to become ready.
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let options = Options {
        dir: args.dir.clone(),
        controllers: args.controllers.clone(),
        ready_timeout: Duration::from_secs(args.ready_timeout_secs),
        address: args.address,
        apiserver_args: Vec::new(),
    };
    let deadline = Instant::now() + options.ready_timeout;
    let mut control_plane = ControlPlane::start(&options).await?;
    if args.serve {
        serve_product(&args, &mut control_plane, deadline).await?;
    }
    println!("ready kubeconfig={}", control_plane.kubeconfig.display());
    if args.serve {
        let repo = Path::new(testbed::env::REPO);
        eprintln!(
            "{}",
            walkthrough(&control_plane.kubeconfig, repo, &serving::product_binary()?)
        );
    }

    let reason = serving::supervise(&mut [&mut control_plane], args.watch_pid).await;
    eprintln!("local-control-plane: stopping ({reason})");
    control_plane.stop();
    Ok(())
}

/// Applies deploy/'s prerequisites, starts `scoped-secrets serve` with development certificates and
/// registers deploy/'s webhook configurations pointed at it.
async fn serve_product(
    args: &Args,
    control_plane: &mut ControlPlane,
    deadline: Instant,
) -> Result<()> {
    let repo = Path::new(testbed::env::REPO);
    registration::apply_prerequisites(repo, &control_plane.kubeconfig)?;
    let identity = control_plane.sa_kubeconfig.clone();
    let product = Product {
        identity: &identity,
        webhook_addr: args.webhook_addr,
        admin_addr: args.admin_addr,
        certs_dir: &args.certs_dir,
        webhooks_from: &repo.join("deploy/base"),
        args: Vec::new(),
    };
    serving::serve(control_plane, &product, deadline).await
}

/// Rancher's documented example (examples/rancher/) as commands to paste into another terminal:
/// a Project, namespaces joined to it, the project-scoped `test-secret` and its copies. Every line
/// between the first and the last indented one is a shell command or a comment, in order:
/// testbed/tests/run.rs runs them as one script against this control plane.
fn walkthrough(kubeconfig: &Path, repo: &Path, binary: &Path) -> String {
    let (k, repo, bin) = (kubeconfig.display(), repo.display(), binary.display());
    let logs = kubeconfig
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    format!(
        "
scoped-secrets is serving. Rancher's example, in another terminal:

  export KUBECONFIG={k}
  cd {repo}
  # A Project of cluster \"local\"; the reconciler creates its backing namespace local-p-vwxyz
  kubectl apply -f examples/rancher/01-project.yaml
  kubectl wait project/p-vwxyz -n local --for=jsonpath='{{.status.backingNamespace}}'=local-p-vwxyz
  # Namespaces team-a and team-b join the project (annotation field.cattle.io/projectId)
  kubectl apply -f examples/rancher/02-namespaces.yaml
  # What the project-scoped secret will do, before it exists
  {bin} plan -f examples/rancher/03-test-secret.yaml
  # The secret of Rancher's documentation, in the backing namespace
  kubectl apply -f examples/rancher/03-test-secret.yaml
  # Its copies appear in every namespace of the project
  kubectl wait secret/test-secret -n team-a --for=create --timeout=30s
  kubectl wait secret/test-secret -n team-b --for=create --timeout=30s
  kubectl get secrets -A --field-selector metadata.name=test-secret
  kubectl get secret test-secret -n team-b -o jsonpath='{{.data.key}}' | base64 -d; echo
  # Nothing is left to do
  {bin} plan

Logs are in {logs}. Ctrl-C stops everything."
    )
}
