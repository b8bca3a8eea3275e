//! Reconciler benchmark against a real local control plane and the release `scoped-secrets serve`
//! (its own process, as the product's service account). Prints:
//! - the time for one original to reach 1,000 namespaces, and the API writes it took;
//! - the writes a full resync of the converged state makes (a restarted server planning from scratch);
//! - the server's RSS with 10,000 copies;
//! - the time for a new namespace to receive a project's 20 originals, p50/p99 over 50 namespaces;
//! - the scale phase (see [`scale`]): `SCALE_NAMESPACES` × `SCALE_ORIGINALS` copies (10,000 × 10 by
//!   default; 0 skips it; `SCALE_ONLY=1` runs it alone) against the same number of raw creates,
//!   writes per copy and memory.
//!
//! `make bench-reconciler` (or `cargo bench --bench reconciler`).

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use scoped_secrets::keys;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};
use testbed::apiserver::Served;

mod projects;
mod support;

use projects::{BenchProject, create_namespaces, member_namespace, original, project, wait_copies};
use support::{
    Guard, client, env_count, fresh_dir, issue_certificate, memory_mib, start_product_plane,
};

const ADMIN: &str = "127.0.0.1:19080";

#[tokio::main]
async fn main() -> Result<()> {
    support::until_stopped(bench()).await
}

async fn bench() -> Result<()> {
    let dir = fresh_dir("bench-reconciler")?;
    let (_control_plane, client) = start_product_plane(&dir.join("control-plane")).await?;
    let certs_dir = dir.join("certs");
    issue_certificate(&certs_dir)?;

    // `SCALE_ONLY=1` runs the scale phase alone.
    if std::env::var_os("SCALE_ONLY").is_some() {
        return scale(&client, &dir, &certs_dir).await;
    }

    // A project with 1,000 namespaces, before the server starts.
    let big = project(&client, "bench").await?;
    create_namespaces(&client, &big, "bench-ns", 1_000).await?;
    let mut server = Guard(start_server(&dir, &certs_dir)?);
    wait_leading().await?;

    // One original to 1,000 namespaces.
    let writes_before = writes().await?;
    let copy_writes_before = copy_writes().await?;
    let started = Instant::now();
    original(&client, &big, "db-0").await?;
    wait_copies(&client, &big.project, 1_000).await?;
    let elapsed = started.elapsed();
    wait_settled().await?;
    let written = writes().await? - writes_before;
    let copy_writes = copy_writes().await? - copy_writes_before;
    println!(
        "one original to 1,000 namespaces: {:.2} s, {written} API writes, {copy_writes} of them copy writes ({:.3} per copy)",
        elapsed.as_secs_f64(),
        copy_writes as f64 / 1000.0
    );

    // 10,000 copies: nine more originals.
    for i in 1..10 {
        original(&client, &big, &format!("db-{i}")).await?;
    }
    wait_copies(&client, &big.project, 10_000).await?;
    wait_settled().await?;
    println!(
        "server RSS with 10,000 copies: {:.1} MiB",
        memory_mib(server.pid(), "VmRSS")?
    );

    // A full resync of the converged state: a fresh server lists everything and plans from scratch.
    server.stop();
    let mut server = Guard(start_server(&dir, &certs_dir)?);
    wait_leading().await?;
    wait_settled().await?;
    println!(
        "full resync of the converged state (10,000 copies): {} API writes",
        writes().await?
    );

    // New namespaces joining a project with 20 originals.
    let small = project(&client, "join").await?;
    for i in 0..20 {
        original(&client, &small, &format!("cfg-{i}")).await?;
    }
    wait_settled().await?;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let mut latencies = Vec::new();
    for i in 0..50 {
        let name = format!("join-{i}");
        let started = Instant::now();
        ns_api
            .create(&PostParams::default(), &member_namespace(&small, &name))
            .await?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &name);
        let deadline = started + Duration::from_secs(30);
        loop {
            let copies = secrets.list(&ListParams::default()).await?.items.len();
            if copies >= 20 {
                break;
            }
            if Instant::now() > deadline {
                bail!("namespace {name} got only {copies} of 20 copies");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "new namespace receiving 20 originals (50 namespaces): p50 {:.0} ms, p99 {:.0} ms",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "server peak RSS: {:.1} MiB",
        memory_mib(server.pid(), "VmHWM")?
    );
    server.stop();
    scale(&client, &dir, &certs_dir).await
}

/// How many copies the reconciler writes at once (`reconciler::Config::concurrency`'s default): the
/// raw creates it is compared with run at the same concurrency.
const CONCURRENCY: usize = 16;

/// The scale phase: `SCALE_NAMESPACES` namespaces of one project, `SCALE_ORIGINALS` originals.
///
/// 1. The limit: the product's service account creates as many secrets of a copy's shape with the
///    same client and concurrency, while no server runs; they are then removed (not timed), so the
///    server never indexes them.
/// 2. A fresh server, synced and idle; the originals are created at once and the clock stops when
///    the server has created every copy (its counter, polled; a LIST then checks they all exist).
/// 3. Once a round that started after that has planned nothing: writes per copy counted by the
///    apiserver (`apiserver_request_total`), the server's RSS now and at its peak.
/// 4. A full resync: a fresh server lists the converged world and plans it: writes (0) and round time.
async fn scale(admin: &kube::Client, dir: &Path, certs_dir: &Path) -> Result<()> {
    let namespaces = env_count("SCALE_NAMESPACES", 10_000)?;
    let originals = env_count("SCALE_ORIGINALS", 10)?;
    if namespaces == 0 || originals == 0 {
        println!(
            "scale phase skipped (SCALE_NAMESPACES={namespaces}, SCALE_ORIGINALS={originals})"
        );
        return Ok(());
    }
    let copies = namespaces * originals;
    println!("scale phase: {namespaces} namespaces x {originals} originals = {copies} copies");
    let project = project(admin, "scale").await?;
    let started = Instant::now();
    create_namespaces(admin, &project, "scale-ns", namespaces).await?;
    println!(
        "  {namespaces} namespaces created in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let sa = client(&dir.join("control-plane/kubeconfig-service-account")).await?;
    let started = Instant::now();
    raw_creates(&sa, &project, namespaces, originals).await?;
    let raw = started.elapsed();
    println!(
        "  raw creates: {copies} secrets in {:.1} s ({:.0}/s) from {CONCURRENCY} concurrent requests, as the server's service account",
        raw.as_secs_f64(),
        copies as f64 / raw.as_secs_f64()
    );
    remove_raw(admin, namespaces).await?;

    let mut server = Guard(start_server(dir, certs_dir)?);
    wait_leading().await?;
    wait_settled().await?;
    let server_before = copy_writes().await?;
    let served_before = apiserver_secret_writes(admin).await?;
    let started = Instant::now();
    // Most originals first, the rest once their fan-out is under way: the second round then
    // plans its copies from an index that already holds the first round's, the worst case for
    // memory (a round's snapshot against an index that moves on), every run rather than whenever
    // the debounce happened to split the originals.
    let first = (originals * 6).div_ceil(10);
    for i in 0..first {
        original(admin, &project, &format!("scale-{i}")).await?;
    }
    while copy_writes().await? == server_before && started.elapsed() < raw * 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in first..originals {
        original(admin, &project, &format!("scale-{i}")).await?;
    }
    let deadline = started + Duration::from_secs(60) + raw * 4;
    while copy_writes().await? - server_before < copies as u64 {
        if Instant::now() > deadline {
            bail!(
                "the server wrote only {} of {copies} copies",
                copy_writes().await? - server_before
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let converged = started.elapsed();
    let listed = count_copies(admin, &project.project).await?;
    if listed != copies {
        bail!("{listed} copies exist, {copies} wanted");
    }
    println!(
        "  converged: {copies} copies in {:.1} s ({:.0}/s), {:.2}x the raw creates (target <= 1.25x)",
        converged.as_secs_f64(),
        copies as f64 / converged.as_secs_f64(),
        converged.as_secs_f64() / raw.as_secs_f64()
    );
    // A change after convergence wakes one more round; once one has started after it and planned
    // nothing, every write the convergence took has been made.
    let rounds = sum(
        &metrics().await?,
        "scoped_secrets_reconciler_reconciles_total",
    );
    poke(admin, &project).await?;
    wait_round_after(rounds).await?;
    let served = apiserver_secret_writes(admin).await? - served_before;
    println!(
        "  writes at the apiserver: {} successful ({:.3} per copy, target 1.0), {} refused (409); the server counted {} copy writes",
        served.ok - originals as u64,
        (served.ok - originals as u64) as f64 / copies as f64,
        served.conflicts,
        copy_writes().await? - server_before
    );
    println!(
        "  server RSS with {copies} copies: {:.1} MiB now, {:.1} MiB peak (target <= 128 MiB)",
        memory_mib(server.pid(), "VmRSS")?,
        memory_mib(server.pid(), "VmHWM")?
    );
    server.stop();

    // A full resync: a fresh server lists the converged world and plans it.
    let served_before = apiserver_secret_writes(admin).await?;
    let started = Instant::now();
    let mut server = Guard(start_server(dir, certs_dir)?);
    wait_leading().await?;
    wait_settled().await?;
    let synced = started.elapsed();
    let rounds = sum(
        &metrics().await?,
        "scoped_secrets_reconciler_reconciles_total",
    );
    let served = apiserver_secret_writes(admin).await? - served_before;
    // The round-duration metric starts after the plan, so the plan is timed here from outside:
    // start, watches listed, lease taken and the first plan made, together.
    println!(
        "  full resync of the converged world: {} writes at the apiserver ({} refused), {rounds} round(s), settled {:.1} s after start (list, lease and plan of every copy), peak RSS {:.1} MiB",
        served.ok,
        served.conflicts,
        synced.as_secs_f64(),
        memory_mib(server.pid(), "VmHWM")?
    );
    server.stop();
    Ok(())
}

/// What a copy of `name` looks like (labels, markers, data), for the raw creates.
fn copy_shaped(project: &BenchProject, namespace: &str, name: &str) -> Secret {
    let origin = keys::origin_value(&project.backing, name);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (
                    keys::PROJECT_SCOPED_LABEL.to_owned(),
                    project.project.clone(),
                ),
                (
                    keys::PROJECT_SCOPED_CLUSTER_LABEL.to_owned(),
                    "local".to_owned(),
                ),
            ])),
            annotations: Some(BTreeMap::from([
                (keys::COPY_ANNOTATION.to_owned(), keys::TRUE.to_owned()),
                (
                    keys::USER_SECRET_ANNOTATION.to_owned(),
                    keys::TRUE.to_owned(),
                ),
                (keys::ORIGIN_ANNOTATION.to_owned(), origin),
                (keys::ORIGIN_UID_ANNOTATION.to_owned(), "0".repeat(36)),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_owned(),
            k8s_openapi::ByteString(format!("value of {name}").into_bytes()),
        )])),
        ..Secret::default()
    }
}

async fn raw_creates(
    client: &kube::Client,
    project: &BenchProject,
    namespaces: usize,
    originals: usize,
) -> Result<()> {
    let results: Vec<_> = futures::stream::iter(0..namespaces * originals)
        .map(|i| {
            let namespace = format!("scale-ns-{}", i % namespaces);
            let secret = copy_shaped(project, &namespace, &format!("raw-{}", i / namespaces));
            let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            async move { api.create(&PostParams::default(), &secret).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(())
}

/// Removes the raw secrets again (one delete-collection per namespace).
async fn remove_raw(client: &kube::Client, namespaces: usize) -> Result<()> {
    let results: Vec<_> = futures::stream::iter(0..namespaces)
        .map(|i| {
            let api: Api<Secret> = Api::namespaced(client.clone(), &format!("scale-ns-{i}"));
            async move {
                api.delete_collection(&Default::default(), &ListParams::default())
                    .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(())
}

/// How many copies of the project exist (a paginated LIST of metadata).
async fn count_copies(client: &kube::Client, project: &str) -> Result<usize> {
    let api: Api<kube::api::PartialObjectMeta<Secret>> = Api::all(client.clone());
    let selector = format!("{}={project}", keys::PROJECT_SCOPED_LABEL);
    let mut params = ListParams::default().labels(&selector).limit(5_000);
    let mut count = 0;
    loop {
        let page = api.list_metadata(&params).await?;
        count += page
            .items
            .iter()
            .filter(|s| {
                s.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(keys::ORIGIN_ANNOTATION))
            })
            .count();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(count),
        }
    }
}

async fn apiserver_secret_writes(client: &kube::Client) -> Result<Served> {
    testbed::apiserver::secret_writes(client).await
}

/// Changes the project's backing namespace (a label nothing reads), which wakes a round.
async fn poke(client: &kube::Client, project: &BenchProject) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let patch = json!({"metadata": {"labels": {"bench.scoped-secrets.io/poke": now.as_nanos().to_string()}}});
    namespaces
        .patch(
            &project.backing,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// Waits until a round that started after `rounds` rounds has planned nothing.
async fn wait_round_after(rounds: f64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let m = metrics().await?;
        if sum(&m, "scoped_secrets_reconciler_reconciles_total") > rounds
            && sum(&m, "scoped_secrets_reconciler_pending_actions") == 0.0
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the reconciler never settled");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_server(dir: &Path, certs_dir: &Path) -> Result<Child> {
    testbed::process::serve(
        Path::new(env!("CARGO_BIN_EXE_scoped-secrets")),
        &dir.join("control-plane/kubeconfig-service-account"),
        certs_dir,
        ("127.0.0.1:19443", ADMIN),
        dir,
    )
}

async fn metrics() -> Result<String> {
    testbed::process::admin_metrics(ADMIN).await
}

fn sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn writes() -> Result<u64> {
    Ok(sum(&metrics().await?, "scoped_secrets_reconciler_writes_total") as u64)
}

/// Writes of copies (create, overwrite, update, recreate), leaving out label repairs on originals.
async fn copy_writes() -> Result<u64> {
    let m = metrics().await?;
    let kinds = ["create", "overwrite", "update", "recreate"];
    Ok(kinds
        .iter()
        .map(|k| {
            sum(
                &m,
                &format!("scoped_secrets_reconciler_writes_total{{kind=\"{k}\"}}"),
            )
        })
        .sum::<f64>() as u64)
}

async fn wait_leading() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(m) = metrics().await
            && sum(&m, "scoped_secrets_reconciler_leader") >= 1.0
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the server never led");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a reconcile round has run and planned nothing (a fresh server's first list and plan of
/// 100,000 copies included).
async fn wait_settled() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let m = metrics().await?;
        if sum(&m, "scoped_secrets_reconciler_reconciles_total") >= 1.0
            && sum(&m, "scoped_secrets_reconciler_pending_actions") == 0.0
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the reconciler never settled");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
