//! Admission benchmark: the real `scoped-secrets serve` (release build, its own process) against a
//! real local control plane holding 100,000 secrets in 10,000 namespaces, driven over TLS keep-alive
//! connections by the load generator below. Prints the server's RSS with the index synced,
//! throughput at saturation, latency percentiles at a fixed 2,000 reviews/s, and the server's peak RSS.
//! Every answer is parsed (uid and `allowed` checked); errors are counted, printed and included in
//! the percentiles. Then the hostile phase: 64 senders of crafted 7 MiB bodies (on a runtime and
//! thread of their own) while legitimate reviews go on at 200/s; it prints the server's peak RSS
//! during the phase and the legitimate reviews' errors. Between the two, the limit (see `limit/`):
//! the same client against a bare tokio-rustls + hyper server, and the product's ratio to it. Last
//! the re-list phase (`relist/`): p99.9 at the fixed rate while a second server's watches re-list
//! everything and its reconciler plans the whole world.
//!
//! `make bench-admission` (or `cargo bench --bench admission`). Sizes can be changed with
//! BENCH_NAMESPACES, BENCH_SECRETS, BENCH_CONNECTIONS, BENCH_SECONDS, BENCH_RATE,
//! BENCH_HOSTILE_SENDERS, BENCH_HOSTILE_RATE, BENCH_LIMIT_ROUNDS, BENCH_LIMIT_SECONDS,
//! BENCH_RELIST_MEMBERS, BENCH_RELIST_SECONDS.

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::{Duration, Instant};

mod limit;
mod load;
mod relist;
mod support;
mod webhook;

use load::Outcome;
use load::Target;
use load::hostile::{self, Hostile};
use support::{fresh_dir, memory_mib, start_product_plane};
use webhook::setting;

// The product's allocator, so that the limit servers (this binary started again) run with it too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<()> {
    if let Some(served) = limit::serve_if_asked().await {
        return served;
    }
    support::until_stopped(bench()).await
}

async fn bench() -> Result<()> {
    let namespaces = setting("BENCH_NAMESPACES", 10_000);
    let secrets = setting("BENCH_SECRETS", 100_000);
    let connections = setting("BENCH_CONNECTIONS", 16);
    let seconds = setting("BENCH_SECONDS", 10);
    let rate = setting("BENCH_RATE", 2_000);

    let dir = fresh_dir("bench-admission")?;
    let (mut control_plane, client) = start_product_plane(&dir.join("control-plane")).await?;
    let kubeconfig = control_plane.kubeconfig.clone();

    let started = Instant::now();
    seed(&client, namespaces, secrets).await?;
    println!(
        "seeded {secrets} secrets in {namespaces} namespaces in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let webhook = webhook::start(&dir, namespaces, &["--reconciler=false"]).await?;
    let (pid, target, certs_dir) = (webhook.process.pid(), &webhook.target, &webhook.certs_dir);
    println!(
        "server ready (index synced) after {:.1} s; RSS {:.1} MiB with {} secrets indexed",
        webhook.ready_after.as_secs_f64(),
        memory_mib(pid, "VmRSS")?,
        secrets
    );

    let saturated = load::load(target, connections, Duration::from_secs(seconds), None).await?;
    saturated.print(&format!("saturation, {connections} connections"));
    let paced = load::load(
        target,
        connections,
        Duration::from_secs(seconds),
        Some(rate),
    )
    .await?;
    paced.print(&format!("fixed rate {rate}/s, {connections} connections"));
    println!("server peak RSS {:.1} MiB", memory_mib(pid, "VmHWM")?);

    let rounds = setting("BENCH_LIMIT_ROUNDS", 3);
    let round_seconds = setting("BENCH_LIMIT_SECONDS", 5);
    limit::compare(target, pid, certs_dir, connections, rounds, round_seconds).await?;

    let senders = setting("BENCH_HOSTILE_SENDERS", 64) as usize;
    let hostile_rate = setting("BENCH_HOSTILE_RATE", 200);
    let (legit, tally, peak) = hostile_phase(
        target,
        pid,
        senders,
        connections,
        hostile_rate,
        Duration::from_secs(seconds),
    )
    .await?;
    legit.print(&format!(
        "hostile phase, legitimate reviews at {hostile_rate}/s (target: 0 errors)"
    ));
    println!(
        "hostile phase, {senders} senders of crafted 7 MiB bodies: answered by HTTP status {:?}, {} failed to send; server peak RSS during the phase {peak:.1} MiB (target <= 128 MiB)",
        tally.answered, tally.failed
    );
    relist::phase(&relist::Setup {
        dir: &dir,
        control_plane: &control_plane,
        kubeconfig: &kubeconfig,
        client: &client,
        target_namespaces: namespaces,
        connections,
        rate,
        members: setting("BENCH_RELIST_MEMBERS", 500),
        seconds: setting("BENCH_RELIST_SECONDS", 40),
    })
    .await?;
    control_plane.stop();
    Ok(())
}

/// Creates the namespaces and spreads the secrets over them, 64 writes at a time.
async fn seed(client: &kube::Client, namespaces: u64, secrets: u64) -> Result<()> {
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let results: Vec<_> = futures::stream::iter(0..namespaces)
        .map(|i| {
            let api = ns_api.clone();
            async move {
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some(format!("bench-{i}")),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                };
                api.create(&PostParams::default(), &ns).await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let results: Vec<_> = futures::stream::iter(0..secrets)
        .map(|i| {
            let api: Api<Secret> =
                Api::namespaced(client.clone(), &format!("bench-{}", i % namespaces));
            async move {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(format!("secret-{i}")),
                        labels: Some([("app".to_owned(), "bench".to_owned())].into()),
                        ..ObjectMeta::default()
                    },
                    string_data: Some([("password".to_owned(), format!("value-{i}"))].into()),
                    ..Secret::default()
                };
                api.create(&PostParams::default(), &secret).await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(())
}

/// The hostile phase: `senders` concurrent clients send crafted 7 MiB bodies back to back while
/// legitimate reviews go on at `rate`; returns the legitimate outcome, the hostile tally and the
/// server's peak RSS during the phase.
async fn hostile_phase(
    target: &Target,
    pid: u32,
    senders: usize,
    connections: u64,
    rate: u64,
    duration: Duration,
) -> Result<(Outcome, hostile::Tally, f64)> {
    // The server's peak RSS is reset to its current RSS, so VmHWM afterwards is this phase's peak.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    let mix = hostile::Mix {
        big_bodies: senders,
        ..hostile::Mix::default()
    };
    let hostile = Hostile::start(target, mix);
    let legit = load::load(target, connections, duration, Some(rate)).await?;
    let tally = hostile.stop().await?;
    Ok((legit, tally, memory_mib(pid, "VmHWM")?))
}
