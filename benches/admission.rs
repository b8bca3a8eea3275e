//! Admission benchmark: the real `scoped-secrets serve` (release build, its own process) against a
//! real local control plane holding 100,000 secrets in 10,000 namespaces, driven over TLS keep-alive
//! connections by the load generator below. Prints the server's RSS with the index synced,
//! throughput at saturation, latency percentiles at a fixed 2,000 reviews/s, and the server's peak RSS.
//!
//! `make bench-admission` (or `cargo bench --bench admission`). Sizes can be changed with
//! BENCH_NAMESPACES, BENCH_SECRETS, BENCH_CONNECTIONS, BENCH_SECONDS, BENCH_RATE.

use anyhow::{Result, bail};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use scoped_secrets::{certs, registration};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{Guard, client, memory_mib, start_control_plane};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<()> {
    let namespaces = setting("BENCH_NAMESPACES", 10_000);
    let secrets = setting("BENCH_SECRETS", 100_000);
    let connections = setting("BENCH_CONNECTIONS", 16);
    let seconds = setting("BENCH_SECONDS", 10);
    let rate = setting("BENCH_RATE", 2_000);

    let dir = Path::new(REPO).join("target/bench-admission");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (mut control_plane, kubeconfig) = start_control_plane(&dir.join("control-plane"))?;
    registration::apply_prerequisites(Path::new(REPO), &kubeconfig)?;
    let client = client(&kubeconfig).await?;

    let started = Instant::now();
    seed(&client, namespaces, secrets).await?;
    println!(
        "seeded {secrets} secrets in {namespaces} namespaces in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let certs_dir = dir.join("certs");
    certs::write_serving_set(
        &certs_dir,
        &["localhost".into()],
        &["127.0.0.1".parse()?],
        1,
        1,
    )?;
    let (webhook, admin) = ("127.0.0.1:18443", "127.0.0.1:18080");
    let server = Command::new(env!("CARGO_BIN_EXE_scoped-secrets"))
        .env(
            "KUBECONFIG",
            dir.join("control-plane/kubeconfig-service-account"),
        )
        .env("RUST_LOG", "warn")
        .args([
            "serve",
            "--webhook-addr",
            webhook,
            "--admin-addr",
            admin,
            "--reconciler=false",
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
        .stderr(std::fs::File::create(dir.join("server.log"))?)
        .spawn()?;
    let server = Guard(server);
    let pid = server.pid();
    let synced_in = wait_ready(admin.parse()?).await?;
    println!(
        "server ready (index synced) after {:.1} s; RSS {:.1} MiB with {} secrets indexed",
        synced_in.as_secs_f64(),
        memory_mib(pid, "VmRSS")?,
        secrets
    );

    let ca = std::fs::read(certs_dir.join(certs::CA_CERT))?;
    let target = Target {
        addr: webhook.parse()?,
        tls: tls_connector(&ca)?,
        namespaces,
    };
    let saturated = load(&target, connections, Duration::from_secs(seconds), None).await?;
    saturated.print(&format!("saturation, {connections} connections"));
    let paced = load(
        &target,
        connections,
        Duration::from_secs(seconds),
        Some(rate),
    )
    .await?;
    paced.print(&format!("fixed rate {rate}/s, {connections} connections"));
    println!("server peak RSS {:.1} MiB", memory_mib(pid, "VmHWM")?);
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

async fn wait_ready(admin: SocketAddr) -> Result<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(admin).await {
            let mut answer = String::new();
            s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await?;
            s.read_to_string(&mut answer).await?;
            if answer.starts_with("HTTP/1.0 200") {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the server did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tls_connector(ca_pem: &[u8]) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

struct Target {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    namespaces: u64,
}

/// A realistic review: a new secret (about 1 KiB of data) in one of the seeded namespaces.
fn review_body(n: u64, namespaces: u64) -> Bytes {
    let ns = format!("bench-{}", n % namespaces);
    let name = format!("new-{n}");
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{n:012}"),
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "requestKind": {"group": "", "version": "v1", "kind": "Secret"},
            "requestResource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": name, "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:ci:deployer", "uid": "b7f1c0de", "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"]},
            "object": {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": "web", "tier": "backend"},
                             "annotations": {"owner": "team-a"}, "creationTimestamp": null},
                "type": "Opaque",
                "data": {"password": "c2VjcmV0".repeat(100), "username": "YWRtaW4="}
            },
            "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kubectl-create"}
        }
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Distinct reviews each connection cycles through (distinct names and namespaces).
const BODIES_PER_CONNECTION: u64 = 512;

struct Outcome {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Outcome {
    fn print(&self, label: &str) {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let pick = |q: f64| {
            sorted
                .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(f64::NAN)
        };
        println!(
            "{label}: {:.0} reviews/s over {:.1} s ({} reviews, {} errors); latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
            sorted.len() as f64 / self.elapsed.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            sorted.len(),
            self.errors,
            pick(0.50),
            pick(0.99),
            pick(0.999)
        );
    }
}

/// Sends reviews from `connections` keep-alive connections for `duration`, as fast as possible or
/// at `rate` per second in total (each connection sends on its own schedule; latency is measured from
/// the scheduled send time, so a stalled server is not hidden by coordinated omission).
async fn load(
    target: &Target,
    connections: u64,
    duration: Duration,
    rate: Option<u64>,
) -> Result<Outcome> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let tcp = tokio::net::TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = target
            .tls
            .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
            .await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        // Bodies are made before the clock starts, so the generator spends its CPU on sending.
        let bodies: Vec<Bytes> = (0..BODIES_PER_CONNECTION)
            .map(|i| review_body(c + i * connections, target.namespaces))
            .collect();
        let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r as f64));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = c;
            let mut next = Instant::now();
            while started.elapsed() < duration {
                // Latency counts from the scheduled send time when the server made us late (no
                // coordinated omission), and from the actual send when we waited for the schedule
                // (the timer wakes up to a millisecond late, which is the generator's, not the server's).
                let scheduled = match interval {
                    Some(_) if Instant::now() < next => {
                        // Pacing the generator to its schedule, not synchronisation.
                        tokio::time::sleep_until(next.into()).await;
                        Instant::now()
                    }
                    Some(_) => next,
                    None => Instant::now(),
                };
                let request = hyper::Request::post("/validate/secret-names")
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .body(Full::new(
                        bodies[(n / connections) as usize % bodies.len()].clone(),
                    ));
                let ok = match request {
                    Ok(request) => match sender.send_request(request).await {
                        Ok(response) => {
                            let status = response.status();
                            response.into_body().collect().await.is_ok() && status == 200
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                if ok {
                    latencies.push(scheduled.elapsed());
                } else {
                    errors += 1;
                }
                n += connections;
                if let Some(interval) = interval {
                    next += interval;
                }
            }
            (latencies, errors)
        }));
    }
    let mut outcome = Outcome {
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (latencies, errors) = task.await?;
        outcome.latencies.extend(latencies);
        outcome.errors += errors;
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}
