//! `scoped-secrets serve`: the watches, the webhook, the admin port (and the reconciler), started
//! together and stopped together.

use crate::admin::{self, AdminState};
use crate::cli::ServeArgs;
use crate::index::Index;
use crate::metrics::{IndexMetrics, WebhookMetrics};
use crate::policy::Config;
use crate::webhook::client_auth::ClientAuth;
use crate::webhook::handler::{self, AppState};
use crate::webhook::limits::ReviewLimits;
use crate::webhook::runtime::{self, ReviewRuntime};
use crate::webhook::server::{Limits, Server};
use crate::webhook::tls::{self, ReloadingCert};
use crate::world::World;
use anyhow::{Context, Result};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch as signal;
use tokio::task::JoinSet;

/// A running server, for `main` and for tests that run it in-process.
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub index: Arc<Index>,
    pub metrics: WebhookMetrics,
    stop: signal::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Begins a graceful shutdown and waits for it: not-ready first, then the webhook drains.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Resolves when a task ends on its own, which none should before shutdown: the caller then
    /// shuts the rest down and exits with an error, so Kubernetes restarts the pod.
    pub async fn wait(&mut self) -> anyhow::Error {
        match self.tasks.join_next().await {
            Some(Err(e)) => anyhow::anyhow!("a server task failed: {e}"),
            Some(Ok(())) => {
                anyhow::anyhow!("a server task stopped unexpectedly (see the log above)")
            }
            None => anyhow::anyhow!("no server task is running"),
        }
    }
}

/// What a webhook in a downstream cluster (`--cluster-id`) reads besides its own cluster.
struct Downstream {
    cluster: String,
    management: kube::Client,
}

/// The downstream mode's flags, checked: both or neither, webhook only, a usable cluster id, and a
/// management kubeconfig that passes the checks of a registration.
async fn downstream(args: &ServeArgs) -> Result<Option<Downstream>> {
    let (cluster, kubeconfig) = match (&args.cluster_id, &args.management_kubeconfig) {
        (None, None) => return Ok(None),
        (Some(cluster), Some(kubeconfig)) => (cluster, kubeconfig),
        _ => anyhow::bail!(
            "--cluster-id and --management-kubeconfig go together: give both or neither"
        ),
    };
    if args.reconciler {
        anyhow::bail!(
            "--cluster-id serves the webhook only (the copies of a downstream cluster are written \
             by the product in the management cluster): set --reconciler=false"
        );
    }
    crate::clusters::credentials::check_cluster_id(cluster)
        .map_err(|refusal| anyhow::anyhow!("--cluster-id {cluster:?}: {refusal}"))?;
    let management = crate::clusters::management::client(kubeconfig).await?;
    Ok(Some(Downstream {
        cluster: cluster.clone(),
        management,
    }))
}

/// The indexes the webhook decides from: this cluster's; or in a downstream cluster, its own
/// composed with the management cluster's, and its own alone.
struct Indexes {
    decided: Arc<Index>,
    own_cluster: Option<Arc<Index>>,
}

/// Starts the watches that feed the [`Indexes`], in `tasks`.
fn spawn_index(
    client: &kube::Client,
    downstream: Option<Downstream>,
    manage_backing_namespaces: bool,
    tasks: &mut JoinSet<()>,
    stopped: &signal::Receiver<bool>,
) -> Indexes {
    let mut keep = |watches: JoinSet<()>| {
        tasks.spawn(until_stopped(stopped.clone(), async move {
            // Keeps the watches alive; dropping the set stops them.
            let mut watches = watches;
            while watches.join_next().await.is_some() {}
        }));
    };
    // Where backing namespaces are managed, only marked ones count: the management cluster's
    // reconciler reads them so, and a downstream webhook must judge its Projects alike.
    let projects_world = || World::for_backing(manage_backing_namespaces);
    let Some(Downstream {
        cluster,
        management,
    }) = downstream
    else {
        let index = Arc::new(Index::new(projects_world()));
        keep(crate::index::spawn(client.clone(), index.clone()));
        return Indexes {
            decided: index,
            own_cluster: None,
        };
    };
    tracing::info!(%cluster, "downstream: Projects and originals from the management cluster");
    let management_index = Arc::new(Index::new(projects_world()));
    let own = Arc::new(Index::default());
    keep(crate::index::spawn(management, management_index.clone()));
    keep(crate::index::spawn_downstream(client.clone(), own.clone()));
    // Not one of `tasks`: each of those runs until shutdown, and one that ends stops the server.
    tokio::spawn(until_stopped(
        stopped.clone(),
        warn_of_unmarked_backing_namespaces(management_index.clone(), cluster.clone()),
    ));
    let (composed, composing) =
        crate::index::compose::spawn(management_index, own.clone(), cluster);
    let abort = composing.abort_handle();
    let stopped = stopped.clone();
    tasks.spawn(async move {
        until_stopped(stopped, async move {
            let _ = composing.await;
        })
        .await;
        abort.abort();
    });
    Indexes {
        decided: composed,
        own_cluster: Some(own),
    }
}

/// Downstream, once the management cluster is listed (once: a one-off look at start-up): says when
/// Projects of this cluster name a backing namespace that is not marked as theirs while only
/// marked ones count here. Either the product in the management cluster runs with
/// `--manage-backing-namespaces=false` (beside Rancher) and this one with `true`, and then neither
/// reserved names (S1) nor read-only copies (S5) hold downstream until the setting matches; or the
/// namespace was made again unmarked, which the management cluster refuses too.
async fn warn_of_unmarked_backing_namespaces(management: Arc<Index>, cluster: String) {
    management.wait_synced().await;
    let world = management.read();
    let unmarked: Vec<String> = world
        .unmarked_backing_namespaces()
        .filter(|id| id.cluster == cluster)
        .map(ToString::to_string)
        .collect();
    if !unmarked.is_empty() {
        tracing::warn!(
            count = unmarked.len(),
            first = %unmarked[0],
            "Projects of this cluster record backing namespaces not marked as theirs, and only \
             marked ones count here (--manage-backing-namespaces=true): their originals are not \
             seen and their copies here not protected. If the management cluster's instance runs \
             with false (beside Rancher), set it alike here; else those namespaces were made again \
             unmarked, and the management cluster refuses them too (BackingNamespaceTaken)"
        );
    }
}

/// Binds the listeners and starts everything; returns once listening. With `--cluster-id` the
/// management cluster is read through `--management-kubeconfig`; `client` is this cluster's.
pub async fn start(args: &ServeArgs, client: kube::Client) -> Result<Running> {
    let downstream = downstream(args).await?;
    let mut registry = Registry::default();
    let metrics = WebhookMetrics::register(&mut registry);
    let index_metrics = IndexMetrics::register(&mut registry);
    let (stop, stopped) = signal::channel(false);
    let stopping = Arc::new(AtomicBool::new(false));

    let cert = ReloadingCert::load(&args.tls_cert, &args.tls_key)
        .context("loading the serving certificate")?;
    crate::metrics::registered_as(
        &mut registry,
        "scoped_secrets_serving_certificate_expiry_timestamp_seconds",
        "When the serving certificate expires (its notAfter, Unix seconds), kept current across reloads",
        cert.expiry().clone(),
    );
    // Bound on the webhook's runtime, so its connections are driven by the webhook's threads.
    let reviews = ReviewRuntime::start(runtime::default_threads())
        .context("starting the webhook's threads")?;
    let clients = client_auth(args)?;
    let tls = tls::server_config(cert.clone(), clients.clone())?;
    let limits = Limits {
        drain_window: Duration::from_secs(args.drain_window_seconds),
        handshakes_per_second_per_address: args.handshakes_per_second_per_address,
        ..Limits::with_max_connections(args.max_connections, args.max_connections_per_address)
    };
    let mut webhook = reviews
        .handle()
        .spawn(Server::bind(args.webhook_addr, tls, limits))
        .await
        .context("binding the webhook")??
        .with_metrics(metrics.clone());
    if let Some(clients) = &clients {
        webhook = webhook.with_client_auth(clients.clone());
    }
    let admin = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin port to {}", args.admin_addr))?;
    let (webhook_addr, admin_addr) = (webhook.local_addr()?, admin.local_addr()?);

    let mut tasks = JoinSet::new();
    let Indexes {
        decided: index,
        own_cluster,
    } = spawn_index(
        &client,
        downstream,
        args.manage_backing_namespaces,
        &mut tasks,
        &stopped,
    );
    tasks.spawn(until_stopped(stopped.clone(), cert.watch()));
    if let Some(clients) = clients {
        tasks.spawn(until_stopped(stopped.clone(), clients.watch()));
    }

    // The downstream clusters' worlds, kept by the reconciler's workers, read by the webhook.
    let mut placement = None;
    if args.reconciler {
        let reconciler_metrics = crate::reconciler::ReconcilerMetrics::register(&mut registry);
        let cfg = crate::reconciler::Config::from_args(args);
        placement = Some(cfg.placement.clone());
        let (client, index, stopped) = (client.clone(), index.clone(), stopped.clone());
        // Not wrapped in `until_stopped`: on shutdown the reconciler stops writing at once, lets the
        // round in flight end, then releases its lease.
        tasks.spawn(async move {
            if let Err(e) =
                crate::reconciler::run(client, index, cfg, reconciler_metrics, stopped).await
            {
                tracing::error!(error = format!("{e:#}"), "the reconciler failed");
            }
        });
    }

    let config = Config {
        mode: args.mode.into(),
        copies: args.copies.settings(&args.home.lease_namespace),
        protect_copies: args.protect_copies,
        reconciler_users: args.reconciler_users.clone(),
        max_project_original_bytes: args.max_project_original_bytes,
    };
    let app = handler::router(AppState {
        index: index.clone(),
        config: Arc::new(config),
        metrics: metrics.clone(),
        client: Some(client),
        limits: Arc::new(
            ReviewLimits::new(args.max_reviews_in_flight, args.max_large_body_bytes)
                .with_large_body_rate(args.large_body_bytes_per_second),
        ),
        placement,
        own_cluster,
    });
    let served = reviews
        .handle()
        .spawn(webhook.serve(app, stop_signal(stopped.clone(), stopping.clone())));
    tasks.spawn(async move {
        // The webhook's threads end when this task does (after the drain, or when aborted).
        let _reviews = reviews;
        if let Err(e) = served.await {
            tracing::error!(error = %e, "the webhook server failed");
        }
    });

    let admin_app = admin::router(AdminState {
        index: index.clone(),
        registry: Arc::new(registry),
        index_metrics,
        stopping: stopping.clone(),
    });
    let admin_stopped = stopped.clone();
    tasks.spawn(async move {
        admin::serve(admin, admin_app, async move {
            let mut rx = admin_stopped;
            let _ = rx.wait_for(|s| *s).await;
        })
        .await;
    });
    tracing::info!(%webhook_addr, %admin_addr, "serving");
    Ok(Running {
        webhook_addr,
        admin_addr,
        index,
        metrics,
        stop,
        tasks,
    })
}

/// Resolves when shutdown begins, after marking the server not-ready.
/// The webhook's client authentication, with `--client-ca-file`.
fn client_auth(args: &ServeArgs) -> Result<Option<Arc<ClientAuth>>> {
    let Some(ca_file) = &args.client_ca_file else {
        return Ok(None);
    };
    let clients = ClientAuth::load(ca_file, args.allowed_client_names.clone())
        .context("loading --client-ca-file")?;
    tracing::info!(
        ca = %ca_file.display(),
        allowed_names = ?clients.allowed_names(),
        "webhook clients must present a certificate of this CA"
    );
    Ok(Some(Arc::new(clients)))
}

async fn stop_signal(mut stopped: signal::Receiver<bool>, stopping: Arc<AtomicBool>) {
    let _ = stopped.wait_for(|s| *s).await;
    stopping.store(true, Ordering::Relaxed);
}

/// Runs `task` until shutdown begins.
async fn until_stopped(mut stopped: signal::Receiver<bool>, task: impl Future<Output = ()>) {
    tokio::select! {
        _ = stopped.wait_for(|s| *s) => {}
        () = task => {}
    }
}

/// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn run(args: ServeArgs) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let mut running = start(&args, client).await?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let failure = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = sigterm.recv() => None,
        failure = running.wait() => Some(failure),
    };
    match &failure {
        Some(e) => tracing::error!(error = format!("{e:#}"), "shutting down"),
        None => tracing::info!("signalled; shutting down"),
    }
    running.shutdown().await;
    failure.map_or(Ok(()), Err)
}
