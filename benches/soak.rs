//! Soak: the real `scoped-secrets serve` (release build, its own process, reconciler on) against a
//! real local control plane for SOAK_SECONDS (60) at SOAK_RATE (5,000) reviews/s from
//! SOAK_CONNECTIONS (16) TLS keep-alive connections, while, all at once:
//! - its serving certificate is re-issued SOAK_ROTATIONS (3) times (each checked to be served);
//! - hostile clients ([`load::hostile`]) send crafted 7 MiB bodies, slow headers, slow bodies and
//!   connection floods;
//! - the reconciler fans originals out: a project of SOAK_NAMESPACES (100) namespaces gains
//!   SOAK_ORIGINALS (10) originals and SOAK_JOINS (10) new member namespaces during the run.
//!
//! Prints the failed legitimate reviews (target 0), their p99 from the schedule (target <= 5 ms),
//! the server's peak RSS (target <= 128 MiB), its open file descriptors before and after (target:
//! back to the baseline), and that every copy arrived.
//!
//! `make bench-soak` (or `cargo bench --bench soak`).

use anyhow::{Context, Result, bail};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use scoped_secrets::certs;
use std::path::Path;
use std::time::{Duration, Instant};

mod load;
mod projects;
mod support;
mod webhook;

use load::Target;
use load::hostile::{self, Hostile};
use projects::BenchProject;
use support::{fresh_dir, memory_mib, start_product_plane};
use webhook::setting;

#[tokio::main]
async fn main() -> Result<()> {
    support::until_stopped(bench()).await
}

async fn bench() -> Result<()> {
    let seconds = setting("SOAK_SECONDS", 60);
    let rate = setting("SOAK_RATE", 5_000);
    let connections = setting("SOAK_CONNECTIONS", 16);
    let rotations = setting("SOAK_ROTATIONS", 3);
    let namespaces = setting("SOAK_NAMESPACES", 100);
    let originals = setting("SOAK_ORIGINALS", 10);
    let joins = setting("SOAK_JOINS", 10);
    let mix = hostile::Mix {
        big_bodies: setting("SOAK_HOSTILE_SENDERS", 2) as usize,
        slow_headers: setting("SOAK_SLOW_HEADERS", 16) as usize,
        slow_bodies: setting("SOAK_SLOW_BODIES", 16) as usize,
        flood: setting("SOAK_FLOOD", 64) as usize,
    };

    let dir = fresh_dir("bench-soak")?;
    let (mut control_plane, client) = start_product_plane(&dir.join("control-plane")).await?;

    // The reviews go to the project's member namespaces, `bench-0` … (see `load::review_body`).
    let project = projects::project(&client, "soak").await?;
    projects::create_namespaces(&client, &project, "bench", namespaces as usize).await?;
    let webhook = webhook::start(&dir, namespaces, &[]).await?;
    let pid = webhook.process.pid();
    // A first original fanned out before the baseline, so that the server's connections to the
    // apiserver (the reconciler's writes) are open when its descriptors are counted.
    projects::original(&client, &project, "warm-up").await?;
    projects::wait_copies(&client, &project.project, namespaces as usize).await?;
    let fds_before = open_fds(pid)?;
    println!(
        "server ready after {:.1} s; {namespaces} namespaces hold the first original's copies; {fds_before} open file descriptors",
        webhook.ready_after.as_secs_f64()
    );

    let duration = Duration::from_secs(seconds);
    let hostile = Hostile::start(&webhook.target, mix);
    let (legit, rotated, fanned) = tokio::join!(
        load::load(&webhook.target, connections, duration, Some(rate)),
        rotate(&webhook.target, &webhook.certs_dir, rotations, duration),
        fan_out(&client, &project, originals, joins, duration),
    );
    let tally = hostile.stop().await?;
    let (legit, rotated) = (legit?, rotated?);
    fanned?;

    legit.print(&format!(
        "soak, legitimate reviews at {rate}/s from {connections} connections for {seconds} s"
    ));
    println!(
        "failed legitimate reviews: {} (target 0); p99 {:.3} ms (target <= 5 ms)",
        legit.errors(),
        legit.percentile(0.99)
    );
    // A soak's trend: p99 per slice of the run, so that a slow leak shows as a rising tail.
    let slice = Duration::from_secs(10).min(duration);
    let slices: Vec<String> = (0..duration.as_secs().div_ceil(slice.as_secs().max(1)))
        .map(|i| {
            let from = legit.began + slice * i as u32;
            let p99 = legit.scheduled_within(from, from + slice).percentile(0.99);
            format!("{p99:.3}")
        })
        .collect();
    println!(
        "p99 per {} s of the run, ms: {}",
        slice.as_secs(),
        slices.join(", ")
    );
    println!(
        "certificate rotations: {} of {rotations} served, after {:?}",
        rotated.len(),
        rotated
            .iter()
            .map(|d| format!("{} ms", d.as_millis()))
            .collect::<Vec<_>>()
    );
    println!(
        "hostile clients {mix:?}: 7 MiB bodies answered by HTTP status {:?}, {} not sent; slow clients cut off {} times; {} flood connections opened",
        tally.answered, tally.failed, tally.slow_cut_off, tally.flooded
    );

    let started = Instant::now();
    let copies = (originals + 1) * (namespaces + joins);
    projects::wait_copies(&client, &project.project, copies as usize).await?;
    println!(
        "fan-out: {copies} copies ({} originals in {} namespaces) all present {:.1} s after the run",
        originals + 1,
        namespaces + joins,
        started.elapsed().as_secs_f64()
    );
    println!(
        "server peak RSS {:.1} MiB (target <= 128 MiB)",
        memory_mib(pid, "VmHWM")?
    );
    let (fds_after, settled) = fds_settle(pid, fds_before).await?;
    println!(
        "server open file descriptors: {fds_before} before, {fds_after} after ({:.1} s after the hostile clients stopped; target: back to {fds_before})",
        settled.as_secs_f64()
    );
    control_plane.stop();
    Ok(())
}

/// Re-issues the serving certificate `rotations` times, evenly over `duration`, and after each
/// waits until a new connection is served the new certificate; returns how long each took.
async fn rotate(
    target: &Target,
    certs_dir: &Path,
    rotations: u64,
    duration: Duration,
) -> Result<Vec<Duration>> {
    let mut taken = Vec::new();
    let started = Instant::now();
    for i in 1..=rotations {
        tokio::time::sleep_until((started + duration * i as u32 / (rotations as u32 + 1)).into())
            .await;
        let issued = Instant::now();
        support::issue_certificate(certs_dir)?;
        let pem = std::fs::read(certs_dir.join(certs::TLS_CERT))?;
        let new = CertificateDer::pem_slice_iter(&pem)
            .next()
            .context("no certificate issued")??;
        loop {
            // A refused connection (the flood can fill the cap) is tried again.
            if let Ok(stream) = load::tls_stream_from(target, None).await
                && stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    == Some(&new)
            {
                break;
            }
            if issued.elapsed() > Duration::from_secs(30) {
                bail!("rotation {i}: the new certificate was not served within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        taken.push(issued.elapsed());
    }
    Ok(taken)
}

/// During `duration`, evenly spread: `originals` new originals in the project and `joins` new
/// member namespaces (each of which the reconciler fills with every original).
async fn fan_out(
    client: &kube::Client,
    project: &BenchProject,
    originals: u64,
    joins: u64,
    duration: Duration,
) -> Result<()> {
    let started = Instant::now();
    let steps = originals.max(joins);
    for i in 0..steps {
        tokio::time::sleep_until((started + duration * i as u32 / steps as u32).into()).await;
        if i < originals {
            projects::original(client, project, &format!("soak-{i}")).await?;
        }
        if i < joins {
            projects::create_namespaces(client, project, &format!("join-{i}"), 1).await?;
        }
    }
    Ok(())
}

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Waits (up to 60 s) for the server's open descriptors to come back to `baseline`; returns the
/// count it settled at and when.
async fn fds_settle(pid: u32, baseline: usize) -> Result<(usize, Duration)> {
    let started = Instant::now();
    loop {
        let now = open_fds(pid)?;
        if now <= baseline || started.elapsed() > Duration::from_secs(60) {
            return Ok((now, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
