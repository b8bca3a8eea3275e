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

/// One review: when it was scheduled (since the load began), its latency from then, and what
/// went wrong, if anything.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub scheduled: Duration,
    pub latency: Duration,
    pub failure: Option<Failure>,
}

pub struct Outcome {
    /// When the schedule began.
    pub began: Instant,
    /// Every review, failures included.
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn errors(&self) -> u64 {
        self.samples.iter().filter(|s| s.failure.is_some()).count() as u64
    }

    pub fn failures(&self) -> std::collections::BTreeMap<Failure, u64> {
        let mut failures = std::collections::BTreeMap::new();
        for failure in self.samples.iter().filter_map(|s| s.failure) {
            *failures.entry(failure).or_insert(0) += 1;
        }
        failures
    }

    /// The reviews scheduled from `from` to `to` (instants), as an outcome of their own.
    pub fn scheduled_within(&self, from: Instant, to: Instant) -> Outcome {
        let samples = self
            .samples
            .iter()
            .filter(|s| (from..=to).contains(&(self.began + s.scheduled)))
            .copied()
            .collect();
        Outcome {
            began: self.began,
            samples,
            elapsed: to.saturating_duration_since(from),
        }
    }

    /// The `q` quantile of the latencies, in milliseconds (NaN when there were no reviews).
    pub fn percentile(&self, q: f64) -> f64 {
        let mut sorted: Vec<Duration> = self.samples.iter().map(|s| s.latency).collect();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    }

    pub fn print(&self, label: &str) {
        let pick = |q: f64| self.percentile(q);
        let ok = self.samples.len() as u64 - self.errors();
        let failures = self.failures();
        println!(
            "{label}: {:.0} correct reviews/s over {:.1} s ({} reviews, {} errors{}); latency (errors included) p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
            ok as f64 / self.elapsed.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.samples.len(),
            self.errors(),
            if failures.is_empty() {
                String::new()
            } else {
                format!(": {failures:?}")
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

/// A TLS connection to the target from `local` (a loopback address), or from the default address.
pub async fn tls_stream_from(
    target: &Target,
    local: Option<std::net::IpAddr>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tcp_from(target, local).await?;
    tcp.set_nodelay(true)?;
    Ok(target
        .tls
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await?)
}

/// A TCP connection to the target from `local`, or from the default address.
pub async fn tcp_from(
    target: &Target,
    local: Option<std::net::IpAddr>,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(local) = local else {
        return tokio::net::TcpStream::connect(target.addr).await;
    };
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((local, 0).into())?;
    socket.connect(target.addr).await
}

/// An HTTP/1.1 keep-alive connection to the target.
pub async fn connect(
    target: &Target,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    connect_from(target, None).await
}

/// An HTTP/1.1 keep-alive connection to the target from `local`, or from the default address.
pub async fn connect_from(
    target: &Target,
    local: Option<std::net::IpAddr>,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let tls = tls_stream_from(target, local).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends reviews from `connections` keep-alive connections for `duration`, as fast as possible or
/// at `rate` per second in total. At a fixed rate each review's latency counts from its scheduled
/// send time, also when the generator had to wait for the schedule, so neither a stalled server
/// (coordinated omission) nor a late timer is hidden. The schedule is kept by a thread of its own
/// ([`pace`]), not by tokio's timer, whose millisecond ticks would add up to a millisecond of the
/// generator's own to every review. A connection that fails is reopened.
pub async fn load(
    target: &Target,
    connections: u64,
    duration: Duration,
    rate: Option<u64>,
) -> Result<Outcome> {
    let mut tasks = Vec::new();
    let mut schedules = Vec::new();
    // Connections and bodies are made before the clock starts, so the generator spends its time
    // on sending.
    let mut prepared = Vec::new();
    for c in 0..connections {
        let bodies: Vec<Expected> = (0..BODIES_PER_CONNECTION)
            .map(|i| review_body(c + i * connections, target.namespaces))
            .collect();
        prepared.push((connect(target).await?, bodies));
    }
    let began = Instant::now();
    for (c, (mut sender, bodies)) in (0..connections).zip(prepared) {
        let mut schedule = match rate {
            Some(_) => {
                let (send, receive) = tokio::sync::mpsc::unbounded_channel();
                schedules.push(send);
                Some(receive)
            }
            None => None,
        };
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = c;
            loop {
                let scheduled = match &mut schedule {
                    Some(schedule) => match schedule.recv().await {
                        Some(scheduled) => scheduled,
                        None => break,
                    },
                    None if began.elapsed() < duration => Instant::now(),
                    None => break,
                };
                let expected = &bodies[(n / connections) as usize % bodies.len()];
                let result = review_once(
                    &mut sender,
                    endpoints::SECRET_NAMES,
                    expected,
                    target.echoes_uid,
                )
                .await;
                samples.push(Sample {
                    scheduled: scheduled.saturating_duration_since(began),
                    latency: scheduled.elapsed(),
                    failure: result.err(),
                });
                if let Err(failure) = result
                    && (failure == Failure::Send || sender.is_closed())
                    && let Ok(fresh) = connect(&target).await
                {
                    sender = fresh;
                }
                n += connections;
            }
            samples
        }));
    }
    if let Some(rate) = rate {
        let pacer = std::thread::spawn(move || pace(began, duration, rate, &schedules));
        tokio::task::spawn_blocking(move || pacer.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await?);
    }
    Ok(Outcome {
        began,
        samples,
        elapsed: began.elapsed(),
    })
}

/// Hands each scheduled send time, `rate` per second from `started` for `duration`, to the
/// connections in turn, sleeping on the thread until it is due (the kernel's timers are precise to
/// tens of microseconds). A connection still busy with its last review finds the next one waiting,
/// and its latency counts from this schedule. Returning drops the senders: the connections end.
fn pace(
    started: Instant,
    duration: Duration,
    rate: u64,
    schedules: &[tokio::sync::mpsc::UnboundedSender<Instant>],
) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut next = started;
    for connection in (0..schedules.len()).cycle() {
        if next.duration_since(started) >= duration {
            return;
        }
        // Pacing the generator to its schedule, not synchronisation.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let _ = schedules[connection].send(next);
        next += interval;
    }
}
