//! Hostile clients, on a runtime and thread of their own (on the main runtime their work would
//! delay the legitimate generator, and that delay would be counted against the server):
//! - senders of crafted 7 MiB reviews, back to back;
//! - slow headers: a request line and then one header line a second, never finishing;
//! - slow bodies: complete headers declaring 1 KiB, then one byte of body a second;
//! - connection floods: bursts of TCP connections that never start TLS, held for a second.
//!
//! Slow clients count the times the server cut them off (its header and body deadlines).
//!
//! They come from an address of their own ([`HOSTILE_ADDRESS`]), as another pod's would: the
//! webhook caps the connections of one address, and the legitimate clients keep theirs.

use super::{Target, connect_from, review_body, tcp_from, tls_stream_from};
use anyhow::Result;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The loopback address the hostile clients connect from (the legitimate ones use 127.0.0.1).
pub const HOSTILE_ADDRESS: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// How many hostile clients of each kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mix {
    pub big_bodies: usize,
    pub slow_headers: usize,
    pub slow_bodies: usize,
    /// Connections opened per burst (one burst a second).
    pub flood: usize,
}

/// What the hostile clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Crafted 7 MiB bodies answered, by HTTP status.
    pub answered: BTreeMap<u16, u64>,
    /// Crafted bodies that could not be sent (connection refused or closed).
    pub failed: u64,
    /// Slow clients the server cut off.
    pub slow_cut_off: u64,
    /// Flood connections opened.
    pub flooded: u64,
}

/// Hostile clients running until [`Hostile::stop`].
pub struct Hostile {
    running: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Tally>>,
}

impl Hostile {
    pub fn start(target: &Target, mix: Mix) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let (target, flag) = (target.clone(), running.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(run(target, mix, flag))
        });
        Self { running, thread }
    }

    /// Stops every hostile client (their connections close) and returns what they saw.
    pub async fn stop(self) -> Result<Tally> {
        self.running.store(false, Ordering::Relaxed);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("a hostile client panicked"))?
    }
}

async fn run(target: Target, mix: Mix, running: Arc<AtomicBool>) -> Result<Tally> {
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..4).map(hostile_body).collect());
    let cut_off = Arc::new(AtomicU64::new(0));
    let flooded = Arc::new(AtomicU64::new(0));
    let mut big = Vec::new();
    let mut others = Vec::new();
    for s in 0..mix.big_bodies {
        let (target, bodies, running) = (target.clone(), bodies.clone(), running.clone());
        big.push(tokio::spawn(big_bodies(s, target, bodies, running)));
    }
    for (count, kind) in [
        (mix.slow_headers, Slow::Headers),
        (mix.slow_bodies, Slow::Body),
    ] {
        for _ in 0..count {
            let (target, running, cut_off) = (target.clone(), running.clone(), cut_off.clone());
            others.push(tokio::spawn(slow(kind, target, running, cut_off)));
        }
    }
    if mix.flood > 0 {
        let (target, running, flooded) = (target.clone(), running.clone(), flooded.clone());
        others.push(tokio::spawn(flood(target, mix.flood, running, flooded)));
    }
    let mut tally = Tally::default();
    for task in big {
        let one = task.await?;
        for (status, count) in one.answered {
            *tally.answered.entry(status).or_insert(0) += count;
        }
        tally.failed += one.failed;
    }
    for task in others {
        task.await?;
    }
    tally.slow_cut_off = cut_off.load(Ordering::Relaxed);
    tally.flooded = flooded.load(Ordering::Relaxed);
    Ok(tally)
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

#[derive(Default)]
struct BigBodies {
    answered: BTreeMap<u16, u64>,
    failed: u64,
}

/// One sender of crafted 7 MiB bodies, back to back, reconnecting whenever the server closes.
async fn big_bodies(
    s: usize,
    target: Target,
    bodies: Arc<Vec<Bytes>>,
    running: Arc<AtomicBool>,
) -> BigBodies {
    let mut tally = BigBodies::default();
    let mut n = s;
    let mut sender = None;
    while running.load(Ordering::Relaxed) {
        if sender
            .as_ref()
            .is_none_or(|s: &hyper::client::conn::http1::SendRequest<_>| s.is_closed())
        {
            sender = connect_from(&target, Some(HOSTILE_ADDRESS)).await.ok();
        }
        let Some(open) = sender.as_mut() else {
            tally.failed += 1;
            // Refused (the connection cap, during a flood): try again, without spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
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

#[derive(Debug, Clone, Copy)]
enum Slow {
    Headers,
    Body,
}

/// A slow client: starts a request and sends one more byte a second, reconnecting whenever the
/// server cuts it off.
async fn slow(kind: Slow, target: Target, running: Arc<AtomicBool>, cut_off: Arc<AtomicU64>) {
    let start: &[u8] = match kind {
        Slow::Headers => b"POST /validate/secret-names HTTP/1.1\r\nhost: 127.0.0.1\r\n",
        Slow::Body => b"POST /validate/secret-names HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 1024\r\n\r\n{",
    };
    let drip: &[u8] = match kind {
        Slow::Headers => b"x: y\r\n",
        Slow::Body => b" ",
    };
    while running.load(Ordering::Relaxed) {
        let Ok(stream) = tls_stream_from(&target, Some(HOSTILE_ADDRESS)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut reader, mut writer) = tokio::io::split(stream);
        if writer.write_all(start).await.is_err() {
            continue;
        }
        let mut answer = [0u8; 512];
        while running.load(Ordering::Relaxed) {
            tokio::select! {
                // Any answer (a 408) or the end of the stream: the server cut this client off.
                _ = reader.read(&mut answer) => {
                    cut_off.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if writer.write_all(drip).await.is_err() {
                        cut_off.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

/// Bursts of `size` TCP connections that never start TLS, one burst a second, each held until the
/// next.
async fn flood(target: Target, size: usize, running: Arc<AtomicBool>, flooded: Arc<AtomicU64>) {
    while running.load(Ordering::Relaxed) {
        let mut held = Vec::with_capacity(size);
        for _ in 0..size {
            if let Ok(tcp) = tcp_from(&target, Some(HOSTILE_ADDRESS)).await {
                held.push(tcp);
            }
        }
        flooded.fetch_add(held.len() as u64, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
