//! Admission benchmark: the real `scoped-secrets serve` (release build, its own process) against a
//! real local control plane holding 100,000 secrets in 10,000 namespaces, driven over TLS keep-alive
//! connections by the load generator below. Prints the server's RSS with the index synced,
//! throughput at saturation, latency percentiles at a fixed 2,000 reviews/s, and the server's peak RSS.
//! Every answer is parsed (uid and `allowed` checked); errors are counted, printed and included in
//! the percentiles. Then the hostile phase: 64 senders of crafted 7 MiB bodies (on a runtime and
//! thread of their own) while legitimate reviews go on at 200/s; it prints the server's peak RSS
//! during the phase and the legitimate reviews' errors. Last the re-list phase (`relist/`): p99.9 at
//! the fixed rate while a second server's watches re-list everything and its reconciler plans the
//! whole world.
//!
//! `make bench-admission` (or `cargo bench --bench admission`). Sizes can be changed with
//! BENCH_NAMESPACES, BENCH_SECRETS, BENCH_CONNECTIONS, BENCH_SECONDS, BENCH_RATE,
//! BENCH_HOSTILE_SENDERS, BENCH_HOSTILE_RATE, BENCH_RELIST_MEMBERS, BENCH_RELIST_SECONDS.

use anyhow::{Result, bail};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use scoped_secrets::{certs, endpoints};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod relist;

use testbed::control_plane::{ControlPlane, Options, client};
use testbed::process::{Guard, memory_mib};
use testbed::registration;

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
    let mut control_plane =
        ControlPlane::start(&Options::new(dir.join("control-plane")).without_controller_manager())
            .await?;
    let kubeconfig = control_plane.kubeconfig.clone();
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
    // Free ports, not fixed ones: another server on a fixed port would answer in this one's place.
    let (webhook, admin) = (free_port()?, free_port()?);
    let (webhook, admin) = (webhook.as_str(), admin.as_str());
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

    let senders = setting("BENCH_HOSTILE_SENDERS", 64) as usize;
    let hostile_rate = setting("BENCH_HOSTILE_RATE", 200);
    let (legit, tally, peak) = hostile_phase(
        &target,
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

/// `127.0.0.1:<port>` of a port that is free now (the server binds it a moment later).
fn free_port() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
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

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    namespaces: u64,
}

/// A realistic review: a new secret (about 1 KiB of data) in one of the seeded namespaces. Its
/// name is free, so the expected answer is `allowed: true`.
fn review_body(n: u64, namespaces: u64) -> Expected {
    let ns = format!("bench-{}", n % namespaces);
    let name = format!("new-{n}");
    let uid = format!("00000000-0000-0000-0000-{n:012}");
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
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
    Expected {
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        uid,
        allowed: true,
    }
}

/// A request and the answer it must get.
#[derive(Clone)]
struct Expected {
    body: Bytes,
    uid: String,
    allowed: bool,
}

/// Distinct reviews each connection cycles through (distinct names and namespaces).
const BODIES_PER_CONNECTION: u64 = 512;

/// What one review came to. Every answer is parsed: an HTTP 200 whose review has another uid or
/// the wrong `allowed` is an error, not throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    Send,
    Status(u16),
    Body,
    WrongAnswer,
}

struct Outcome {
    /// Every review's latency from its scheduled send, failures included.
    latencies: Vec<Duration>,
    failures: std::collections::BTreeMap<Failure, u64>,
    elapsed: Duration,
}

impl Outcome {
    fn errors(&self) -> u64 {
        self.failures.values().sum()
    }

    fn print(&self, label: &str) {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let pick = |q: f64| {
            sorted
                .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(f64::NAN)
        };
        let ok = sorted.len() as u64 - self.errors();
        println!(
            "{label}: {:.0} correct reviews/s over {:.1} s ({} reviews, {} errors{}); latency (errors included) p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
            ok as f64 / self.elapsed.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            sorted.len(),
            self.errors(),
            if self.failures.is_empty() {
                String::new()
            } else {
                format!(": {:?}", self.failures)
            },
            pick(0.50),
            pick(0.99),
            pick(0.999)
        );
    }
}

/// Sends one review and checks its answer: HTTP 200, an AdmissionReview with the request's uid and
/// the expected `allowed`.
async fn review_once(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    expected: &Expected,
) -> Result<(), Failure> {
    let request = hyper::Request::post(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(expected.body.clone()))
        .map_err(|_| Failure::Send)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|_| Failure::Send)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| Failure::Body)?
        .to_bytes();
    if status != 200 {
        return Err(Failure::Status(status));
    }
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|_| Failure::Body)?;
    let response = &answer["response"];
    if response["uid"] != expected.uid.as_str() || response["allowed"] != expected.allowed {
        return Err(Failure::WrongAnswer);
    }
    Ok(())
}

async fn connect(target: &Target) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let tls = target
        .tls
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends reviews from `connections` keep-alive connections for `duration`, as fast as possible or
/// at `rate` per second in total. At a fixed rate each review's latency counts from its scheduled
/// send time, also when the generator had to wait for the schedule, so neither a stalled server
/// (coordinated omission) nor a late timer is hidden. A connection that fails is reopened.
async fn load(
    target: &Target,
    connections: u64,
    duration: Duration,
    rate: Option<u64>,
) -> Result<Outcome> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let mut sender = connect(target).await?;
        // Bodies are made before the clock starts, so the generator spends its CPU on sending.
        let bodies: Vec<Expected> = (0..BODIES_PER_CONNECTION)
            .map(|i| review_body(c + i * connections, target.namespaces))
            .collect();
        let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r as f64));
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = std::collections::BTreeMap::new();
            let mut n = c;
            let mut next = Instant::now();
            while started.elapsed() < duration {
                let scheduled = match interval {
                    Some(_) => {
                        // Pacing the generator to its schedule, not synchronisation.
                        tokio::time::sleep_until(next.into()).await;
                        next
                    }
                    None => Instant::now(),
                };
                let expected = &bodies[(n / connections) as usize % bodies.len()];
                let result = review_once(&mut sender, endpoints::SECRET_NAMES, expected).await;
                latencies.push(scheduled.elapsed());
                if let Err(failure) = result {
                    *failures.entry(failure).or_insert(0) += 1;
                    if (failure == Failure::Send || sender.is_closed())
                        && let Ok(fresh) = connect(&target).await
                    {
                        sender = fresh;
                    }
                }
                n += connections;
                if let Some(interval) = interval {
                    next += interval;
                }
            }
            (latencies, failures)
        }));
    }
    let mut outcome = Outcome {
        latencies: Vec::new(),
        failures: std::collections::BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (latencies, failures) = task.await?;
        outcome.latencies.extend(latencies);
        for (failure, count) in failures {
            *outcome.failures.entry(failure).or_insert(0) += count;
        }
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// A 7 MiB review crafted to cost the most once decoded: millions of tiny array elements (in an
/// unknown field, in `managedFields[].fieldsV1`, in `request.options`) or a map of hundreds of
/// thousands of tiny strings in `data`. Decoded into a JSON tree, one cost ~250 MB.
fn hostile_body(shape: usize) -> Bytes {
    let room = 7 * 1024 * 1024 - 64 * 1024;
    let mut review = review_body(u64::MAX / 2 + shape as u64, 1);
    let mut value: serde_json::Value = serde_json::from_slice(&review.body).unwrap_or_default();
    let marker = json!("HOSTILE");
    let request = &mut value["request"];
    match shape % 4 {
        0 => request["object"]["padding"] = marker,
        1 => {
            request["object"]["metadata"]["managedFields"] = json!([{
                "manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:padding": marker}
            }])
        }
        2 => request["options"]["padding"] = marker,
        _ => request["object"]["data"] = marker,
    }
    let text = value.to_string();
    let filling = if shape % 4 == 3 {
        let mut entries = String::with_capacity(room);
        let mut i = 0u64;
        while entries.len() + 16 < room {
            entries.push_str(&format!("\"{i:x}\":\"\","));
            i += 1;
        }
        format!("{{{entries}\"end\":\"\"}}")
    } else {
        format!("[{}0]", "0,".repeat(room / 2 - 1))
    };
    review.body = Bytes::from(text.replacen("\"HOSTILE\"", &filling, 1));
    review.body
}

/// How the hostile senders' requests were answered.
#[derive(Default, Debug)]
struct HostileTally {
    answered: std::collections::BTreeMap<u16, u64>,
    failed: u64,
}

/// One hostile sender: crafted bodies back to back, reconnecting whenever the server closes.
async fn hostile_sender(
    s: usize,
    target: Target,
    bodies: Arc<Vec<Bytes>>,
    running: Arc<std::sync::atomic::AtomicBool>,
) -> HostileTally {
    let mut tally = HostileTally::default();
    let mut n = s;
    let mut sender = None;
    while running.load(std::sync::atomic::Ordering::Relaxed) {
        if sender
            .as_ref()
            .is_none_or(|s: &hyper::client::conn::http1::SendRequest<_>| s.is_closed())
        {
            sender = connect(&target).await.ok();
        }
        let Some(open) = sender.as_mut() else {
            tally.failed += 1;
            continue;
        };
        let request = hyper::Request::post("/validate/secret-guard")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(bodies[n % bodies.len()].clone()));
        n += 1;
        let Ok(request) = request else { continue };
        match open.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await;
                *tally.answered.entry(status).or_insert(0) += 1;
            }
            Err(_) => {
                tally.failed += 1;
                sender = None;
            }
        }
    }
    tally
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
) -> Result<(Outcome, HostileTally, f64)> {
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..4).map(hostile_body).collect());
    // The server's peak RSS is reset to its current RSS, so VmHWM afterwards is this phase's peak.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    // The hostile senders get a runtime (and OS thread) of their own: on the main runtime their
    // encryption of 7 MiB bodies would delay the legitimate generator's tasks, and that delay would
    // be counted against the server.
    let hostile = {
        let (target, running) = (target.clone(), running.clone());
        std::thread::spawn(move || -> Result<HostileTally> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for s in 0..senders {
                    let (target, bodies, running) =
                        (target.clone(), bodies.clone(), running.clone());
                    tasks.push(tokio::spawn(hostile_sender(s, target, bodies, running)));
                }
                let mut tally = HostileTally::default();
                for task in tasks {
                    let one = task.await?;
                    for (status, count) in one.answered {
                        *tally.answered.entry(status).or_insert(0) += count;
                    }
                    tally.failed += one.failed;
                }
                Ok(tally)
            })
        })
    };
    let legit = load(target, connections, duration, Some(rate)).await?;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let tally = tokio::task::spawn_blocking(move || hostile.join())
        .await?
        .map_err(|_| anyhow::anyhow!("a hostile sender panicked"))??;
    Ok((legit, tally, memory_mib(pid, "VmHWM")?))
}
