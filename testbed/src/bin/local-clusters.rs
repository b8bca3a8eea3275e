//! `make run-clusters`: Rancher's layout on one machine. A management control plane (etcd,
//! kube-apiserver, the lifecycle controllers) running `scoped-secrets serve` with its reconciler, as
//! `make run` does, and two downstream control planes, `c-abc123` and `c-def456`, each with
//! `deploy/downstream-access` applied and registered in the management cluster by a Secret holding a
//! kubeconfig with a bound token of its copier (`testbed::downstream`). Each downstream cluster runs
//! the downstream webhook (`serve --cluster-id`) too, reading the management cluster through a
//! read-only identity of its own.
//!
//! Stays in the foreground supervising everything: Ctrl-C, SIGTERM, the exit of any process, or of
//! `--watch-pid`, stops all. When all are up it prints one line on stdout,
//! `ready kubeconfig=<management> c-abc123=<kubeconfig> c-def456=<kubeconfig>`, then on stderr the
//! commands that reproduce Rancher's documented example across the clusters.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testbed::control_plane::{ControlPlane, Options, SERVICE_ACCOUNT_USER};
use testbed::downstream::{COPIER_USER, Downstream, NAMESPACE};
use testbed::registration;
use testbed::serving::{self, Product};

/// The downstream clusters: Rancher's example cluster and one with a project of the same name.
const CLUSTERS: [&str; 2] = ["c-abc123", "c-def456"];
/// The identity downstream webhooks read the management cluster as (its read-only RBAC is
/// `deploy/overlays/management-reader`).
const MANAGEMENT_READER: &str = "scoped-secrets-downstream-reader";

#[derive(Parser, Debug)]
#[command(
    about = "Run a management and two downstream control planes on 127.0.0.1 with scoped-secrets, until interrupted"
)]
struct Args {
    /// State directory: one subdirectory per cluster (etcd data, certificates, kubeconfig, logs),
    /// each emptied at start.
    #[arg(long, default_value = ".local/clusters")]
    dir: PathBuf,
    /// Stop when this process exits (used by the test support).
    #[arg(long)]
    watch_pid: Option<u32>,
    /// How long to wait for every control plane, product and connection to become ready.
    #[arg(long, default_value = "180")]
    ready_timeout_secs: u64,
}

/// Where one `scoped-secrets serve` listens.
struct Served {
    webhook_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Served {
    fn on_free_ports() -> Result<Self> {
        let (webhook, admin) = (
            TcpListener::bind("127.0.0.1:0")?,
            TcpListener::bind("127.0.0.1:0")?,
        );
        Ok(Self {
            webhook_addr: webhook.local_addr()?,
            admin_addr: admin.local_addr()?,
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let repo = Path::new(testbed::env::REPO);
    let dir = std::path::absolute(&args.dir)?;
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout_secs);
    let binary = serving::product_binary()?;

    // The management cluster first: on a fresh machine its start builds the control plane binaries,
    // which the downstream ones then share.
    let mut options = Options::new(dir.join("management"));
    options.ready_timeout = Duration::from_secs(args.ready_timeout_secs);
    let mut management = ControlPlane::start(&options).await?;
    registration::apply_prerequisites(repo, &management.kubeconfig)?;
    let product = Served::on_free_ports()?;
    let identity = management.sa_kubeconfig.clone();
    let certs = dir.join("management/certs");
    serving::serve(
        &mut management,
        &Product {
            identity: &identity,
            webhook_addr: product.webhook_addr,
            admin_addr: product.admin_addr,
            certs_dir: &certs,
            webhooks_from: &repo.join("deploy/base"),
            // Backing namespaces are made as Rancher makes them (`c-abc123-p-vwxyz`, named in the
            // Project's status); the product would generate `c--abc123-p-vwxyz` (docs/SPEC.md §3).
            args: vec!["--manage-backing-namespaces=false".into()],
        },
        deadline,
    )
    .await?;

    let (abc, def) = tokio::try_join!(
        Downstream::start_async(CLUSTERS[0], dir.join(CLUSTERS[0])),
        Downstream::start_async(CLUSTERS[1], dir.join(CLUSTERS[1])),
    )?;
    let mut downstreams = [abc, def];
    for downstream in &downstreams {
        downstream.register(&management.kubeconfig)?;
    }
    for downstream in &downstreams {
        wait_connected(
            product.admin_addr,
            &downstream.id,
            &mut management,
            deadline,
        )
        .await?;
    }

    let mut webhooks = Vec::new();
    for downstream in &mut downstreams {
        webhooks
            .push(serve_downstream_webhook(repo, &dir, &management, downstream, deadline).await?);
    }

    println!(
        "ready kubeconfig={}{}",
        management.kubeconfig.display(),
        downstreams
            .iter()
            .map(|d| format!(" {}={}", d.id, d.kubeconfig().display()))
            .collect::<String>()
    );
    eprintln!(
        "{}",
        walkthrough(
            &management,
            &downstreams,
            &product,
            &webhooks,
            repo,
            &binary
        )
    );

    let mut control_planes: Vec<&mut ControlPlane> = std::iter::once(&mut management)
        .chain(downstreams.iter_mut().map(|d| &mut d.control_plane))
        .collect();
    let reason = serving::supervise(&mut control_planes, args.watch_pid).await;
    eprintln!("local-clusters: stopping ({reason})");
    for downstream in &mut downstreams {
        downstream.control_plane.stop();
    }
    management.stop();
    Ok(())
}

/// Waits until the product in the management cluster reports `cluster` connected
/// (`scoped_secrets_cluster_connected{cluster}` = 1 on its admin port).
async fn wait_connected(
    admin: SocketAddr,
    cluster: &str,
    management: &mut ControlPlane,
    deadline: Instant,
) -> Result<()> {
    let series = format!("scoped_secrets_cluster_connected{{cluster=\"{cluster}\"}} 1");
    loop {
        if let Some(metrics) = serving::admin_get(admin, "/metrics").await
            && metrics.lines().any(|line| line == series)
        {
            return Ok(());
        }
        if let Some(exited) = management.exited() {
            bail!("{exited} of the management cluster exited; see its log");
        }
        if Instant::now() > deadline {
            bail!(
                "the management cluster's scoped-secrets did not connect to {cluster} in time; \
                 see the Events on its registration Secret"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `serve --cluster-id <id>` in `downstream` (webhook only, as the downstream cluster's own
/// service account with `deploy/overlays/downstream`'s RBAC and webhook configurations), reading the
/// management cluster through a token of [`MANAGEMENT_READER`].
async fn serve_downstream_webhook(
    repo: &Path,
    dir: &Path,
    management: &ControlPlane,
    downstream: &mut Downstream,
    deadline: Instant,
) -> Result<Served> {
    let reader =
        registration::render_kustomization(&repo.join("deploy/overlays/management-reader"))?;
    kubectl(
        &management.kubeconfig,
        &["apply", "--server-side", "-f", "-"],
        &reader,
    )?;
    let token = kubectl(
        &management.kubeconfig,
        &[
            "create",
            "token",
            MANAGEMENT_READER,
            "-n",
            NAMESPACE,
            "--duration=48h",
        ],
        "",
    )?;
    let management_kubeconfig = dir.join(&downstream.id).join("management-kubeconfig");
    scoped_secrets::certs::write_file(
        &management_kubeconfig,
        &management.kubeconfig_with_token(token.trim()),
        true,
    )?;

    let overlay = repo.join("deploy/overlays/downstream");
    let prerequisites =
        registration::prerequisites(&registration::render_kustomization(&overlay)?)?;
    kubectl(
        downstream.kubeconfig(),
        &["apply", "--server-side", "-f", "-"],
        &prerequisites,
    )?;
    let served = Served::on_free_ports()?;
    let identity = downstream.control_plane.sa_kubeconfig.clone();
    let certs = dir.join(&downstream.id).join("certs");
    serving::serve(
        &mut downstream.control_plane,
        &Product {
            identity: &identity,
            webhook_addr: served.webhook_addr,
            admin_addr: served.admin_addr,
            certs_dir: &certs,
            webhooks_from: &overlay,
            args: vec![
                format!("--cluster-id={}", downstream.id),
                format!(
                    "--management-kubeconfig={}",
                    management_kubeconfig.display()
                ),
                "--reconciler=false".into(),
                "--manage-backing-namespaces=false".into(),
                format!("--reconciler-users={SERVICE_ACCOUNT_USER},{COPIER_USER}"),
            ],
        },
        deadline,
    )
    .await
    .with_context(|| format!("the downstream webhook of {}", downstream.id))?;
    Ok(served)
}

/// The machine's `kubectl` with `kubeconfig` and `input` on standard input; its standard output.
fn kubectl(kubeconfig: &Path, args: &[&str], input: &str) -> Result<String> {
    testbed::kubectl::try_kubectl(kubeconfig, args, Some(input))
}

/// Rancher's documented example across clusters (examples/rancher-clusters/) as commands to paste
/// into another terminal. Every line between the first and the last indented one is a shell command
/// or a comment, in order: testbed/tests/run_clusters.rs runs them as one script.
fn walkthrough(
    management: &ControlPlane,
    downstreams: &[Downstream],
    product: &Served,
    webhooks: &[Served],
    repo: &Path,
    binary: &Path,
) -> String {
    let [abc, def] = downstreams else {
        return String::new();
    };
    let (repo, bin) = (repo.display(), binary.display());
    let (m, a, d) = (
        management.kubeconfig.display(),
        abc.kubeconfig().display(),
        def.kubeconfig().display(),
    );
    let mut text = format!(
        "
scoped-secrets is serving the management cluster; c-abc123 and c-def456 are registered. Rancher's \
example across clusters, in another terminal:

  cd {repo}
  export MANAGEMENT={m} C_ABC123={a} C_DEF456={d}
  # The registrations: a Secret per downstream cluster, with a kubeconfig holding a token of its copier
  kubectl --kubeconfig=$MANAGEMENT get secrets -n scoped-secrets-system -L scoped-secrets.io/cluster -l scoped-secrets.io/cluster
  # Management cluster, as Rancher makes it: project p-vwxyz of cluster c-abc123, its backing namespace c-abc123-p-vwxyz named in its status
  kubectl --kubeconfig=$MANAGEMENT apply -f examples/rancher-clusters/01-project-c-abc123.yaml
  kubectl --kubeconfig=$MANAGEMENT patch project p-vwxyz -n c-abc123 --subresource=status --type=merge -p '{{\"status\":{{\"backingNamespace\":\"c-abc123-p-vwxyz\"}}}}'
  # A project of the same name of cluster c-def456: another project, c-def456:p-vwxyz
  kubectl --kubeconfig=$MANAGEMENT apply -f examples/rancher-clusters/01-project-c-def456.yaml
  kubectl --kubeconfig=$MANAGEMENT patch project p-vwxyz -n c-def456 --subresource=status --type=merge -p '{{\"status\":{{\"backingNamespace\":\"c-def456-p-vwxyz\"}}}}'
  # Downstream cluster c-abc123: namespaces team-a and team-b join project c-abc123:p-vwxyz
  kubectl --kubeconfig=$C_ABC123 apply -f examples/rancher-clusters/02-namespaces-c-abc123.yaml
  # Downstream cluster c-def456: its own team-a joins its own p-vwxyz
  kubectl --kubeconfig=$C_DEF456 apply -f examples/rancher-clusters/02-namespaces-c-def456.yaml
  # What the project-scoped secret will do, before it exists: copies in cluster c-abc123 (planned as
  # the product here runs, beside Rancher's kind of backing namespaces)
  KUBECONFIG=$MANAGEMENT {bin} plan --manage-backing-namespaces=false -f examples/rancher-clusters/03-test-secret.yaml
  # The secret of Rancher's documentation, verbatim, on the management cluster
  kubectl --kubeconfig=$MANAGEMENT apply -f examples/rancher-clusters/03-test-secret.yaml
  # Its copies appear in every namespace of the project, in cluster c-abc123
  kubectl --kubeconfig=$C_ABC123 wait secret/test-secret -n team-a --for=create --timeout=30s
  kubectl --kubeconfig=$C_ABC123 wait secret/test-secret -n team-b --for=create --timeout=30s
  kubectl --kubeconfig=$C_ABC123 get secrets -A --field-selector metadata.name=test-secret
  kubectl --kubeconfig=$C_ABC123 get secret test-secret -n team-b -o jsonpath='{{.data.key}}' | base64 -d; echo
  # None in c-def456: its p-vwxyz is another project
  kubectl --kubeconfig=$C_DEF456 get secrets -A --field-selector metadata.name=test-secret
  # Nothing is left to do
  KUBECONFIG=$MANAGEMENT {bin} plan --manage-backing-namespaces=false
"
    );
    let metrics = format!("http://{}/metrics", product.admin_addr);
    let _ = write!(
        text,
        "
Connections: scoped_secrets_cluster_connected{{cluster}} at {metrics}; Events on the registration \
Secrets (kubectl --kubeconfig=$MANAGEMENT get events -n scoped-secrets-system).
"
    );
    let _ = writeln!(
        text,
        "The downstream webhook serves in each downstream cluster ({}): a copy there is read-only, \
         try kubectl --kubeconfig=$C_ABC123 delete secret test-secret -n team-a.",
        webhooks
            .iter()
            .zip(downstreams)
            .map(|(s, d)| format!("{} on {}", d.id, s.webhook_addr))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let logs = management
        .dir
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let _ = write!(
        text,
        "Logs are in {logs}/<cluster>/. Ctrl-C stops everything."
    );
    text
}
