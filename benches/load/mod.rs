//! The admission load generator both benchmarks drive the webhook with (`admission`, `soak`): TLS
//! keep-alive connections sending realistic reviews, every answer parsed and checked, latencies
//! timed from the schedule; and the hostile senders of crafted 7 MiB bodies ([`hostile`]).

use anyhow::{Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use scoped_secrets::endpoints;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod hostile;

/// `127.0.0.1:<port>` of a port that is free now (the server binds it a moment later).
pub fn free_port() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

/// Waits (up to 300 s) for the server's admin port to answer `/readyz` with 200.
pub async fn wait_ready(admin: SocketAddr) -> Result<Duration> {
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

pub fn tls_connector(ca_pem: &[u8]) -> Result<tokio_rustls::TlsConnector> {
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
pub struct Target {
    pub addr: SocketAddr,
    pub tls: tokio_rustls::TlsConnector,
    pub namespaces: u64,
    /// `false` for a server that answers every review with the same canned one (the limit):
    /// its answer is still parsed and its `allowed` checked, but its uid is not the request's.
    pub echoes_uid: bool,
}

/// A realistic review: a new secret (about 1 KiB of data) in one of the seeded namespaces. Its
/// name is free, so the expected answer is `allowed: true`.
pub fn review_body(n: u64, namespaces: u64) -> Expected {
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
pub struct Expected {
    pub body: Bytes,
    pub uid: String,
    pub allowed: bool,
}

/// Distinct reviews each connection cycles through (distinct names and namespaces).
pub const BODIES_PER_CONNECTION: u64 = 512;

/// What one review came to. Every answer is parsed: an HTTP 200 whose review has another uid or
/// the wrong `allowed` is an error, not throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    Send,
    Status(u16),
    Body,
    WrongAnswer,
}

pub struct Outcome {
    /// Every review's latency from its scheduled send, failures included.
    pub latencies: Vec<Duration>,
    pub failures: std::collections::BTreeMap<Failure, u64>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn errors(&self) -> u64 {
        self.failures.values().sum()
    }

    /// The `q` quantile of the latencies, in milliseconds (NaN when there were no reviews).
    pub fn percentile(&self, q: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    }

    pub fn print(&self, label: &str) {
        let pick = |q: f64| self.percentile(q);
        let ok = self.latencies.len() as u64 - self.errors();
        println!(
            "{label}: {:.0} correct reviews/s over {:.1} s ({} reviews, {} errors{}); latency (errors included) p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
            ok as f64 / self.elapsed.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.latencies.len(),
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
/// the expected `allowed` (the request's uid only from a server that echoes it).
pub async fn review_once(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    expected: &Expected,
    echoes_uid: bool,
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
    let uid_ok = if echoes_uid {
        response["uid"] == expected.uid.as_str()
    } else {
        response["uid"].is_string()
    };
    if !uid_ok || response["allowed"] != expected.allowed {
        return Err(Failure::WrongAnswer);
    }
    Ok(())
}

/// A TLS connection to the target (no HTTP yet).
pub async fn tls_stream(
    target: &Target,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    Ok(target
        .tls
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await?)
}

/// An HTTP/1.1 keep-alive connection to the target.
pub async fn connect(
    target: &Target,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let tls = tls_stream(target).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends reviews from `connections` keep-alive connections for `duration`, as fast as possible or
/// at `rate` per second in total. At a fixed rate each review's latency counts from its scheduled
/// send time, also when the generator had to wait for the schedule, so neither a stalled server
/// (coordinated omission) nor a late timer is hidden. A connection that fails is reopened.
pub async fn load(
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
                let result = review_once(
                    &mut sender,
                    endpoints::SECRET_NAMES,
                    expected,
                    target.echoes_uid,
                )
                .await;
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
