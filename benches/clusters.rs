//! Many-clusters benchmark (issue #11): originals in a management cluster, copies written by the
//! release `scoped-secrets serve` (its own process, as the product's service account in the
//! management cluster) into `CLUSTERS` downstream clusters × `NAMESPACES_PER_CLUSTER` namespaces
//! (10 × 100 by default). Every cluster is a real etcd + kube-apiserver of its own on 127.0.0.1,
//! without a controller manager, started one after another; each downstream cluster is registered
//! with a Secret holding its admin kubeconfig. Each figure is the median of `REPEATS` (5) rounds, the
//! single-cluster and the many-clusters one alternating, as the machine's load drifts. Prints:
//! - the single-cluster fan-out of the same number of copies, in the same run with the same server:
//!   a new original to a project of `CLUSTERS × NAMESPACES_PER_CLUSTER` namespaces in the management
//!   cluster;
//! - the many-clusters fan-out: one original per cluster's project (a project lives in one cluster,
//!   so one original cannot reach two), all created at once; the time until the last copy is
//!   visible in every cluster, the ratio to the single-cluster time (target <= 1.5), the secret
//!   writes every apiserver served per copy, the server's RSS;
//! - with the last cluster's kube-apiserver stopped (SIGSTOP, just before the first change, so the
//!   server has not noticed yet): the time for the other clusters' copies to carry a change of
//!   their originals, against the same change in the single-cluster project; how long the server
//!   took to report the stopped one down, and to converge it once it answers again (SIGCONT).
//!
//! `make bench-clusters` (or `cargo bench --bench clusters`).

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use futures::future::try_join_all;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use scoped_secrets::keys;
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testbed::apiserver::Served;
use testbed::clusters;
use testbed::control_plane::ControlPlane;
use testbed::process::Paused;

mod projects;
mod support;

use projects::{BenchProject, create_namespaces, original, project, project_in, wait_copies};
use support::{
    Guard, client, env_count, fresh_dir, issue_certificate, memory_mib, start_control_plane,
    start_product_plane,
};

const ADMIN: &str = "127.0.0.1:19082";
const WEBHOOK: &str = "127.0.0.1:19445";
/// The issue's figures: 10 downstream clusters × 100 namespaces.
const ISSUE_CLUSTERS: usize = 10;
const ISSUE_NAMESPACES: usize = 100;
/// Every wait of the benchmark is bounded by this.
const WAIT: Duration = Duration::from_secs(300);

/// A downstream cluster: its control plane, an admin client, its project in the management cluster.
struct Downstream {
    id: String,
    plane: ControlPlane,
    client: kube::Client,
    project: BenchProject,
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = fresh_dir("bench-clusters")?;
    support::until_stopped(run(&dir)).await?;
    // Eleven etcd data directories (~700 MiB), kept only when the run failed, for its logs.
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The benchmark; its control planes and server are stopped when it returns.
async fn run(dir: &Path) -> Result<()> {
    let bench_started = Instant::now();
    let count = env_count("CLUSTERS", ISSUE_CLUSTERS)?;
    let per_cluster = env_count("NAMESPACES_PER_CLUSTER", ISSUE_NAMESPACES)?;
    if count < 2 || per_cluster == 0 {
        bail!("CLUSTERS must be at least 2 and NAMESPACES_PER_CLUSTER at least 1");
    }
    let copies = count * per_cluster;
    println!(
        "{count} downstream clusters x {per_cluster} namespaces = {copies} copies; single-cluster baseline: one project of {copies} namespaces in the management cluster"
    );
    if (count, per_cluster) != (ISSUE_CLUSTERS, ISSUE_NAMESPACES) {
        println!(
            "NOTE: measured with {count} x {per_cluster}, not issue #11's {ISSUE_CLUSTERS} x {ISSUE_NAMESPACES}"
        );
    }

    let started = Instant::now();
    let (management_plane, management) = start_product_plane(&dir.join("management")).await?;
    let certs_dir = dir.join("certs");
    issue_certificate(&certs_dir)?;
    let local = project(&management, "bench").await?;
    create_namespaces(&management, &local, "bench-ns", copies).await?;

    // One control plane after another: starting several at once on a small machine makes each
    // miss its readiness deadline.
    let mut downstream = Vec::new();
    for i in 1..=count {
        let id = format!("c-bench{i:02}");
        let (plane, kubeconfig) = start_control_plane(&dir.join(&id)).await?;
        let client = client(&kubeconfig).await?;
        let project = project_in(&management, &id, "p-bench").await?;
        create_namespaces(&client, &project, "team", per_cluster).await?;
        clusters::register(&management, &id, &kubeconfig).await?;
        downstream.push(Downstream {
            id,
            plane,
            client,
            project,
        });
    }
    println!(
        "set-up: 1 management + {count} downstream control planes started one after another, {copies} + {copies} namespaces, in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let mut server = Guard(start_server(dir, &management_plane)?);
    wait_leading().await?;
    for cluster in &downstream {
        wait_metric(&format!("{} connected", cluster.id), || async {
            let m = metrics().await?;
            Ok(
                labelled(&m, "scoped_secrets_cluster_connected", &cluster.id) == Some(1.0)
                    && labelled(
                        &m,
                        "scoped_secrets_cluster_last_sync_timestamp_seconds",
                        &cluster.id,
                    )
                    .is_some_and(|t| t > 0.0),
            )
        })
        .await?;
    }

    // The fan-outs, alternating (the machine's load drifts): a new original each round, in the
    // management cluster's project, then in every downstream cluster's project at once.
    let repeats = env_count("REPEATS", 5)?.max(1);
    let served_before = downstream_writes(&downstream).await?;
    let management_before = secret_writes(&management).await?;
    let stamps_before = stamps().await?;
    let (mut single, mut many) = (Vec::new(), Vec::new());
    for round in 0..repeats {
        let name = format!("db-{round}");
        let started = Instant::now();
        original(&management, &local, &name).await?;
        wait_copies(&management, &local.project, (round + 1) * copies).await?;
        single.push(started.elapsed());

        let started = Instant::now();
        try_join_all(
            downstream
                .iter()
                .map(|c| original(&management, &c.project, &name)),
        )
        .await?;
        try_join_all(
            downstream
                .iter()
                .map(|c| wait_copies(&c.client, &c.project.project, (round + 1) * per_cluster)),
        )
        .await?;
        many.push(started.elapsed());
    }
    // Every write the fan-outs took has been made once each cluster has finished a round that
    // started after a change made now (all its copies were visible before, so nothing is pending).
    let poked = poke(&management, &downstream).await?;
    for cluster in &downstream {
        wait_synced_after(&cluster.id, poked).await?;
    }
    let served = downstream_writes(&downstream).await? - served_before;
    // The management cluster's less the originals this benchmark created there.
    let mut here = secret_writes(&management).await? - management_before;
    here.ok -= (repeats * (count + 1)) as u64;
    // The server stamps every original with its cluster label (Rancher's), once.
    let stamped = stamps().await? - stamps_before;
    let (single, many) = (median(&single), median(&many));
    println!(
        "single cluster: one original to {copies} namespaces of the management cluster, last copy visible after {} ({repeats} rounds)",
        single.1
    );
    println!(
        "{count} clusters: one original per cluster's project to {per_cluster} namespaces each, last of {copies} copies visible after {} ({repeats} rounds)",
        many.1
    );
    println!(
        "  ratio of the medians: {:.2}x the single cluster (target <= 1.5x)",
        many.0 / single.0
    );
    let made = (repeats * copies) as f64;
    println!(
        "  secret writes at the management apiserver for the single cluster's copies: {} successful for {} copies, less {stamped} cluster labels stamped on the originals ({:.3} per copy), {} refused (409)",
        here.ok,
        repeats * copies,
        here.ok.saturating_sub(stamped) as f64 / made,
        here.conflicts
    );
    println!(
        "  secret writes at the downstream apiservers: {} successful for {} copies ({:.3} per copy, target 1.0), {} refused (409)",
        served.ok,
        repeats * copies,
        served.ok as f64 / made,
        served.conflicts
    );
    println!(
        "  server RSS: {:.1} MiB now, {:.1} MiB peak ({count} clusters connected, {n} copies downstream and {n} in the management cluster)",
        memory_mib(server.pid(), "VmRSS")?,
        memory_mib(server.pid(), "VmHWM")?,
        n = repeats * copies,
    );

    // A change of the originals `db-0`, alternating again: in the single cluster, then across the
    // clusters, with the last cluster's apiserver stopped just before the first change.
    let (stopped, answering) = downstream.split_last().context("no downstream cluster")?;
    let apiserver = stopped
        .plane
        .pid("kube-apiserver")
        .context("the stopped cluster's apiserver")?;
    let paused = Paused::new(apiserver)?;
    let stopped_at = Instant::now();
    let (mut single_change, mut converged) = (Vec::new(), Vec::new());
    let mut value = String::new();
    for round in 0..repeats {
        value = format!("changed-{round}");
        let started = Instant::now();
        change_original(&management, &local, "db-0", &value).await?;
        wait_holding(&management, &local.project, copies, &value).await?;
        single_change.push(started.elapsed());

        let started = Instant::now();
        try_join_all(
            downstream
                .iter()
                .map(|c| change_original(&management, &c.project, "db-0", &value)),
        )
        .await?;
        try_join_all(
            answering
                .iter()
                .map(|c| wait_holding(&c.client, &c.project.project, per_cluster, &value)),
        )
        .await?;
        converged.push(started.elapsed());
    }
    let (single_change, converged) = (median(&single_change), median(&converged));
    println!(
        "single cluster: a change of the original in all {copies} copies after {} ({repeats} rounds)",
        single_change.1
    );
    println!(
        "{} stopped (SIGSTOP of its kube-apiserver just before the first change): the other {} clusters' {} copies carry a change of their originals after {} ({repeats} rounds)",
        stopped.id,
        answering.len(),
        answering.len() * per_cluster,
        converged.1
    );
    println!(
        "  ratio of the medians: {:.2}x the single cluster's change (target <= 1.5x)",
        converged.0 / single_change.0
    );
    wait_metric(&format!("{} reported down", stopped.id), || async {
        Ok(labelled(
            &metrics().await?,
            "scoped_secrets_cluster_connected",
            &stopped.id,
        ) == Some(0.0))
    })
    .await?;
    println!(
        "  the server reported {} down {:.1} s after it stopped",
        stopped.id,
        stopped_at.elapsed().as_secs_f64()
    );
    drop(paused);
    let resumed = Instant::now();
    wait_holding(
        &stopped.client,
        &stopped.project.project,
        per_cluster,
        &value,
    )
    .await?;
    println!(
        "  {} converged {:.1} s after it answered again (SIGCONT)",
        stopped.id,
        resumed.elapsed().as_secs_f64()
    );
    println!(
        "server peak RSS: {:.1} MiB; benchmark took {:.0} s",
        memory_mib(server.pid(), "VmHWM")?,
        bench_started.elapsed().as_secs_f64()
    );
    server.stop();
    Ok(())
}

/// The median of `times` in seconds, and a line "median X s (a, b, c)".
fn median(times: &[Duration]) -> (f64, String) {
    let mut sorted: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let each: Vec<String> = times
        .iter()
        .map(|t| format!("{:.2}", t.as_secs_f64()))
        .collect();
    (
        median,
        format!("median {median:.2} s ({} s)", each.join(", ")),
    )
}

/// Sets the original's data to `value` (what its copies must then hold).
async fn change_original(
    client: &kube::Client,
    project: &BenchProject,
    name: &str,
    value: &str,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &project.backing);
    let patch = json!({"stringData": {"password": value}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Waits until `n` copies of the project hold `password: value`, following a watch.
async fn wait_holding(client: &kube::Client, project: &str, n: usize, value: &str) -> Result<()> {
    use kube::runtime::watcher::{self, Event};
    let api: Api<Secret> = Api::all(client.clone());
    let selector = format!("{}={project}", keys::PROJECT_SCOPED_LABEL);
    let holds = |s: &Secret| {
        let is_copy = s
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(keys::ORIGIN_ANNOTATION));
        is_copy
            && s.data
                .as_ref()
                .and_then(|d| d.get("password"))
                .is_some_and(|v| v.0 == value.as_bytes())
    };
    let key = |s: &Secret| (s.metadata.namespace.clone(), s.metadata.name.clone());
    let mut holding = HashSet::new();
    let stream = watcher::watcher(api, watcher::Config::default().labels(&selector));
    let mut stream = std::pin::pin!(stream);
    let deadline = tokio::time::Instant::now() + WAIT;
    while holding.len() < n {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .with_context(|| {
                format!(
                    "only {} of {n} copies of {project} hold the change after {} s",
                    holding.len(),
                    WAIT.as_secs()
                )
            })?;
        match event.context("watch ended")?? {
            Event::Apply(s) | Event::InitApply(s) => {
                if holds(&s) {
                    holding.insert(key(&s));
                } else {
                    holding.remove(&key(&s));
                }
            }
            Event::Delete(s) => {
                holding.remove(&key(&s));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Changes each project's backing namespace in the management cluster (a label nothing reads),
/// which wakes a round of every cluster's worker. Returns the time (Unix seconds) before it.
async fn poke(management: &kube::Client, downstream: &[Downstream]) -> Result<f64> {
    let at = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let namespaces: Api<Namespace> = Api::all(management.clone());
    let patch = json!({"metadata": {"labels": {"bench.scoped-secrets.io/poke": at.as_nanos().to_string()}}});
    for cluster in downstream {
        namespaces
            .patch(
                &cluster.project.backing,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(at.as_secs_f64())
}

/// Waits until `cluster` has finished a round without errors after `at` (Unix seconds).
async fn wait_synced_after(cluster: &str, at: f64) -> Result<()> {
    wait_metric(&format!("a round of {cluster} after the poke"), || async {
        Ok(labelled(
            &metrics().await?,
            "scoped_secrets_cluster_last_sync_timestamp_seconds",
            cluster,
        )
        .is_some_and(|t| t > at))
    })
    .await
}

async fn downstream_writes(downstream: &[Downstream]) -> Result<Served> {
    let mut total = Served::default();
    for cluster in downstream {
        let served = secret_writes(&cluster.client).await?;
        total.ok += served.ok;
        total.conflicts += served.conflicts;
    }
    Ok(total)
}

async fn secret_writes(client: &kube::Client) -> Result<Served> {
    testbed::apiserver::secret_writes(client).await
}

/// The release server, as the product's service account of the management cluster, with the
/// default settings (`deploy/`'s).
fn start_server(dir: &Path, management: &ControlPlane) -> Result<Child> {
    testbed::process::serve(
        Path::new(env!("CARGO_BIN_EXE_scoped-secrets")),
        &management.sa_kubeconfig,
        &dir.join("certs"),
        (WEBHOOK, ADMIN),
        dir,
    )
}

async fn metrics() -> Result<String> {
    testbed::process::admin_metrics(ADMIN).await
}

/// The value of `name{cluster="<cluster>"}`, if the series exists.
fn labelled(metrics: &str, name: &str, cluster: &str) -> Option<f64> {
    let prefix = format!("{name}{{cluster=\"{cluster}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

/// The cluster labels the server has stamped on originals.
async fn stamps() -> Result<u64> {
    let prefix = "scoped_secrets_reconciler_writes_total{kind=\"add_cluster_label\"} ";
    Ok(metrics()
        .await?
        .lines()
        .find_map(|l| l.strip_prefix(prefix)?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

async fn wait_leading() -> Result<()> {
    wait_metric("the server leading", || async {
        let m = metrics().await?;
        Ok(m.lines()
            .any(|l| l.trim() == "scoped_secrets_reconciler_leader 1"))
    })
    .await
}

/// Polls `check` every 50 ms until it holds, at most [`WAIT`]; a failed check (the server not
/// answering yet) is tried again.
async fn wait_metric<F, Fut>(what: &str, check: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(true) = check().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("waited {} s for {what}", WAIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
