//! Reconciler benchmark against a real local control plane and the release `scoped-secrets serve`
//! (its own process, as the product's service account). Prints:
//! - the time for one original to reach 1,000 namespaces, and the API writes it took;
//! - the writes a full resync of the converged state makes (a restarted server planning from scratch);
//! - the server's RSS with 10,000 copies;
//! - the time for a new namespace to receive a project's 20 originals, p50/p99 over 50 namespaces.
//!
//! `make bench-reconciler` (or `cargo bench --bench reconciler`).

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, PostParams};
use scoped_secrets::certs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testbed::registration;

mod projects;
mod support;

use projects::{create_namespaces, member_namespace, original, project, wait_copies};
use support::{Guard, client, memory_mib, start_control_plane};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const ADMIN: &str = "127.0.0.1:19080";

#[tokio::main]
async fn main() -> Result<()> {
    let dir = Path::new(REPO).join("target/bench-reconciler");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (_control_plane, kubeconfig) = start_control_plane(&dir.join("control-plane")).await?;
    registration::apply_prerequisites(Path::new(REPO), &kubeconfig)?;
    let client = client(&kubeconfig).await?;
    let certs_dir = dir.join("certs");
    certs::write_serving_set(
        &certs_dir,
        &["localhost".into()],
        &["127.0.0.1".parse()?],
        1,
        1,
    )?;

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
    Ok(())
}

fn start_server(dir: &Path, certs_dir: &Path) -> Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_scoped-secrets"))
        .env(
            "KUBECONFIG",
            dir.join("control-plane/kubeconfig-service-account"),
        )
        .env("RUST_LOG", "warn")
        .args([
            "serve",
            "--webhook-addr",
            "127.0.0.1:19443",
            "--admin-addr",
            ADMIN,
        ])
        .arg(format!(
            "--tls-cert={}",
            certs_dir.join(certs::TLS_CERT).display()
        ))
        .arg(format!(
            "--tls-key={}",
            certs_dir.join(certs::TLS_KEY).display()
        ))
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("server.log"))?,
        )
        .spawn()?)
}

async fn metrics() -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(ADMIN).await?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
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

/// Waits until a reconcile round has run and planned nothing.
async fn wait_settled() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
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
