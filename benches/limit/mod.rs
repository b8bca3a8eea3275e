//! The limit the webhook is measured against: a bare tokio-rustls + hyper server with none of the
//! product's layers (no router, caps, metrics, logs, index or policy), in a process of its own
//! like the product (this bench binary started again with [`SERVE`] set), with the same allocator,
//! TLS versions, provider and certificate. Two variants: one answers every review with a canned
//! AdmissionReview, one parses the whole body as JSON and echoes its uid. [`compare`] drives them
//! and the product with the same client in the same run, in alternating rounds, and prints the
//! product's throughput as a fraction of each.

use crate::load::{self, Target};
use crate::support::Guard;
use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, header};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set (to `canned` or `echo`) in the environment of the bench binary started as a limit server;
/// `BENCH_LIMIT_ADDR`, `BENCH_LIMIT_CERT` and `BENCH_LIMIT_KEY` say where and with what.
pub const SERVE: &str = "BENCH_LIMIT_SERVE";

/// What every review gets from the canned variant: allowed, with a uid of its own.
const CANNED: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Canned,
    Echo,
}

/// In a process started by [`spawn`]: serves until killed and returns its error, if any. In any
/// other process: `None`.
pub async fn serve_if_asked() -> Option<Result<()>> {
    let variant = match std::env::var(SERVE).ok()?.as_str() {
        "canned" => Variant::Canned,
        "echo" => Variant::Echo,
        other => return Some(Err(anyhow::anyhow!("{SERVE}={other}: canned or echo"))),
    };
    Some(serve(variant).await)
}

async fn serve(variant: Variant) -> Result<()> {
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let addr: SocketAddr = var("BENCH_LIMIT_ADDR")?.parse()?;
    let chain =
        CertificateDer::pem_file_iter(var("BENCH_LIMIT_CERT")?)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(var("BENCH_LIMIT_KEY")?)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |r| answer(variant, r));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn answer(
    variant: Variant,
    request: Request<Incoming>,
) -> hyper::Result<Response<Full<Bytes>>> {
    let body = request.into_body().collect().await?.to_bytes();
    let review = match variant {
        Variant::Canned => Bytes::from_static(CANNED),
        Variant::Echo => {
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let uid = parsed["request"]["uid"].as_str().unwrap_or_default();
            let answer = serde_json::json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": uid, "allowed": true},
            });
            Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
        }
    };
    let mut response = Response::new(Full::new(review));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Starts this binary again as a limit server of `variant` on a free port, with the webhook's
/// certificate; returns it once it accepts connections.
pub async fn spawn(variant: &str, certs_dir: &Path) -> Result<(Guard, SocketAddr)> {
    let addr: SocketAddr = load::free_port()?.parse()?;
    let child = Command::new(std::env::current_exe()?)
        .env(SERVE, variant)
        .env("BENCH_LIMIT_ADDR", addr.to_string())
        .env(
            "BENCH_LIMIT_CERT",
            certs_dir.join(scoped_secrets::certs::TLS_CERT),
        )
        .env(
            "BENCH_LIMIT_KEY",
            certs_dir.join(scoped_secrets::certs::TLS_KEY),
        )
        .stdout(Stdio::null())
        .spawn()?;
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("the {variant} limit server did not listen on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((guard, addr))
}

/// The product against both limit servers at saturation: `rounds` rounds of `seconds` each per
/// server, in turn (so that load from elsewhere on the machine falls on all three alike). Prints
/// each server's correct reviews/s and the product's ratio to each, and each server's CPU time
/// per review (user + system, from `/proc`), which other load on the machine hardly changes.
pub async fn compare(
    product: &Target,
    product_pid: u32,
    certs_dir: &Path,
    connections: u64,
    rounds: u64,
    seconds: u64,
) -> Result<()> {
    let (canned, canned_addr) = spawn("canned", certs_dir).await?;
    let (echo, echo_addr) = spawn("echo", certs_dir).await?;
    let servers = [
        (
            "canned",
            canned.pid(),
            Target {
                addr: canned_addr,
                echoes_uid: false,
                ..product.clone()
            },
        ),
        (
            "echo",
            echo.pid(),
            Target {
                addr: echo_addr,
                ..product.clone()
            },
        ),
        ("product", product_pid, product.clone()),
    ];
    let mut reviews = [0.0f64; 3];
    let mut elapsed = [0.0f64; 3];
    let mut cpu = [0.0f64; 3];
    // The client shares the cores: what it spends per review of each server counts too.
    let mut client_cpu = [0.0f64; 3];
    // Kernel time goes mostly to wake-ups: a server that wakes its threads more per review shows here.
    let mut switches = [0u64; 3];
    let client = std::process::id();
    let duration = Duration::from_secs(seconds);
    for _ in 0..rounds {
        for (i, (label, pid, target)) in servers.iter().enumerate() {
            let cpu_before = cpu_seconds(*pid)?;
            let client_before = cpu_seconds(client)?;
            let switches_before = context_switches(*pid)?;
            let outcome = load::load(target, connections, duration, None).await?;
            cpu[i] += cpu_seconds(*pid)? - cpu_before;
            client_cpu[i] += cpu_seconds(client)? - client_before;
            switches[i] += context_switches(*pid)?.saturating_sub(switches_before);
            if outcome.errors() > 0 {
                outcome.print(label);
                bail!("the {label} server answered wrongly");
            }
            reviews[i] += outcome.samples.len() as f64;
            elapsed[i] += outcome.elapsed.as_secs_f64();
        }
    }
    let rate = |i: usize| reviews[i] / elapsed[i];
    let cpu_us = |i: usize| cpu[i] / reviews[i] * 1e6;
    let client_us = |i: usize| client_cpu[i] / reviews[i] * 1e6;
    let per_review = |i: usize| switches[i] as f64 / reviews[i];
    println!(
        "limit, {connections} connections, {rounds} alternating rounds of {seconds} s: canned {:.0}/s ({:.0} us CPU/review), echo {:.0}/s ({:.0} us), product {:.0}/s ({:.0} us); product at {:.2}x canned, {:.2}x echo (target >= 0.8x); the client's CPU per review of each: {:.0}, {:.0} and {:.0} us; each server's context switches per review: {:.2}, {:.2} and {:.2}",
        rate(0),
        cpu_us(0),
        rate(1),
        cpu_us(1),
        rate(2),
        cpu_us(2),
        rate(2) / rate(0),
        rate(2) / rate(1),
        client_us(0),
        client_us(1),
        client_us(2),
        per_review(0),
        per_review(1),
        per_review(2)
    );
    Ok(())
}

/// Context switches (voluntary and not) of all of a process's threads so far; a thread that ended
/// meanwhile takes its count with it, which no server here does during a round.
fn context_switches(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(count) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += count.trim().parse::<u64>()?;
            }
        }
    }
    Ok(total)
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses: state is the first,
    // utime and stime the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed /proc/<pid>/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
