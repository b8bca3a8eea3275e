//! The admin port (plain HTTP): `/livez`, `/readyz` (ready once every watch has synced, and not while
//! shutting down) and `/metrics`; served with a connection cap and a header-read deadline
//! ([`serve`]), since any pod may reach it.

use crate::index::Index;
use crate::metrics::IndexMetrics;
use crate::webhook::established::{Established, Newcomer};
use crate::webhook::header_deadline::HeaderDeadline;
use crate::webhook::peers::PeerSlots;
use crate::webhook::server::{Closing, MAX_READ_BUFFER, marking_requests};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct AdminState {
    pub index: Arc<Index>,
    pub registry: Arc<Registry>,
    pub index_metrics: IndexMetrics,
    /// Set when shutdown begins, so load balancers stop sending reviews before the listener closes.
    pub stopping: Arc<AtomicBool>,
}

/// Open admin connections at once. Probes and scrapes use a handful; past the cap a connection is
/// closed at once, so a client opening thousands cannot take the process's file descriptors.
pub const MAX_CONNECTIONS: usize = 256;
/// Open admin connections from one address at once. The kubelet's probes and a scraper each need
/// one or two; without it, one client holding every slot would fail the liveness probe and have
/// the pod restarted.
pub const MAX_CONNECTIONS_PER_PEER: usize = 8;
/// How long a connection may wait for a request head, from its opening or its previous answer:
/// an idle or trickling client lets go of its slot.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the requests in flight may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` resolves, with the webhook port's bounds: a
/// connection cap and a header-read deadline (hyper keeps none without a timer, and `axum::serve`
/// sets none), then drains.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    serve_bounded(listener, app, shutdown, Bounds::default()).await;
}

struct Bounds {
    connections: usize,
    per_peer: usize,
    header_read_timeout: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            connections: MAX_CONNECTIONS,
            per_peer: MAX_CONNECTIONS_PER_PEER,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

async fn serve_bounded(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    bounds: Bounds,
) {
    let header_read_timeout = bounds.header_read_timeout;
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(bounds.connections));
    let peers = PeerSlots::new(bounds.per_peer);
    let established = Established::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = peers.take(peer.ip()) else {
            tracing::debug!(%peer, "admin connection refused: the address holds its share");
            continue;
        };
        // At the cap, a connection waiting for a request (of a busier address) makes room, so
        // that clients holding connections from many addresses cannot fail the kubelet's probes.
        let newcomer = Newcomer {
            address: peer.ip(),
            peers: &peers,
            handshakes: None,
            capacity: bounds.connections,
        };
        let Some(open) = established.slot(&connections, newcomer).await else {
            tracing::debug!(%peer, "admin connection refused: the connection cap is reached");
            continue;
        };
        // Scrapes and probes are GETs, which a client resends on a connection closed under it.
        let deadline = HeaderDeadline::new(header_read_timeout, header_read_timeout);
        established.add(peer.ip(), &deadline);
        let service = marking_requests(
            app.clone(),
            Arc::clone(&deadline),
            Closing::default(),
            // No request body here needs a share of the webhook's large bodies' budget.
            None,
        );
        let connection = hyper::server::conn::http1::Builder::new()
            .max_buf_size(MAX_READ_BUFFER)
            .max_header_size(MAX_READ_BUFFER)
            .serve_connection(TokioIo::new(tcp), service);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _open = (open, slot);
            tokio::select! {
                biased;
                _ = watcher.watch(connection) => {}
                () = deadline.passed() => {}
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("admin drain deadline passed");
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.stopping.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if !state.index.is_synced() {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    state.index_metrics.observe(&state.index.read());
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::net::IpAddr;
    use tower::ServiceExt;

    async fn readyz_status(state: AdminState) -> StatusCode {
        let request = Request::get("/readyz")
            .body(Body::empty())
            .expect("request");
        router(state)
            .oneshot(request)
            .await
            .expect("response")
            .status()
    }

    fn state() -> AdminState {
        AdminState {
            index: Arc::new(Index::default()),
            registry: Arc::new(Registry::default()),
            index_metrics: IndexMetrics::default(),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    #[tokio::test]
    async fn not_ready_until_every_watch_synced_nor_while_stopping() {
        let state = state();
        assert_eq!(
            readyz_status(state.clone()).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.index.mark_all_synced_for_tests();
        assert_eq!(readyz_status(state.clone()).await, StatusCode::OK);
        state.stopping.store(true, Ordering::Relaxed);
        assert_eq!(readyz_status(state).await, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// An admin server on a free port within `bounds`; stopped (and checked to stop) by [`Running::stop`].
    struct Running {
        addr: std::net::SocketAddr,
        stop: tokio::sync::oneshot::Sender<()>,
        served: tokio::task::JoinHandle<()>,
    }

    impl Running {
        async fn start(bounds: Bounds) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let shutdown = async move {
                let _ = stopped.await;
            };
            let served = tokio::spawn(serve_bounded(listener, router(state()), shutdown, bounds));
            Self { addr, stop, served }
        }

        async fn stop(self) {
            let _ = self.stop.send(());
            tokio::time::timeout(Duration::from_secs(10), self.served)
                .await
                .expect("stops")
                .expect("ran");
        }
    }

    /// Reads until the peer closes the connection (or `limit` passes: a panic).
    async fn closed_within(conn: &mut tokio::net::TcpStream, limit: Duration) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut read = Vec::new();
        tokio::time::timeout(limit, conn.read_to_end(&mut read))
            .await
            .expect("the server closes the connection")
            .expect("read");
        read
    }

    #[tokio::test]
    async fn one_address_cannot_take_the_slots_the_probes_need() {
        use tokio::io::AsyncWriteExt;
        let server = Running::start(Bounds {
            connections: 10,
            per_peer: 2,
            header_read_timeout: Duration::from_secs(5),
        })
        .await;
        let addr = server.addr;
        let from = |ip: [u8; 4]| async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind((IpAddr::from(ip), 0).into())
                .expect("a loopback address");
            socket.connect(addr).await.expect("connects")
        };
        // 127.0.0.1 holds its two; its third is closed at once.
        let _held = [from([127, 0, 0, 1]).await, from([127, 0, 0, 1]).await];
        let mut third = from([127, 0, 0, 1]).await;
        assert!(
            closed_within(&mut third, Duration::from_secs(2))
                .await
                .is_empty()
        );
        // Another address (the kubelet's) still gets its probe answered.
        let mut probe = from([127, 0, 0, 2]).await;
        probe
            .write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let answer = closed_within(&mut probe, Duration::from_secs(5)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        server.stop().await;
    }

    #[tokio::test]
    async fn a_request_head_past_the_read_buffer_gets_431() {
        use tokio::io::AsyncWriteExt;
        let server = Running::start(Bounds::default()).await;
        let addr = server.addr;
        let mut conn = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let padding = "a".repeat(MAX_READ_BUFFER);
        let head = format!("GET /livez HTTP/1.1\r\nhost: x\r\nx-padding: {padding}\r\n\r\n");
        // The server may answer and close before it has read all of it.
        let _ = conn.write_all(head.as_bytes()).await;
        let answer = closed_within(&mut conn, Duration::from_secs(5)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        server.stop().await;
    }

    #[tokio::test]
    async fn idle_connections_make_room_at_the_cap_and_are_let_go_after_the_header_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let timeout = Duration::from_secs(2);
        let server = Running::start(Bounds {
            connections: 2,
            per_peer: 8,
            header_read_timeout: timeout,
        })
        .await;
        let addr = server.addr;
        let connect_from = |local: [u8; 4]| async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind((std::net::IpAddr::from(local), 0).into())
                .expect("a loopback address");
            socket.connect(addr).await
        };
        // Two idle clients of another address take the two slots; a probe makes room: one of
        // them is closed, unanswered, and the probe is answered (clients holding every slot from
        // many addresses cannot fail the kubelet's probes).
        let started = std::time::Instant::now();
        let mut idle = [
            connect_from([127, 0, 0, 2]).await.expect("first"),
            connect_from([127, 0, 0, 2]).await.expect("second"),
        ];
        // A connection may be evicted once it has waited 100 ms: the probe is tried until then
        // (a refused one is closed unanswered).
        let deadline = std::time::Instant::now() + timeout / 2;
        loop {
            let mut probe = connect_from([127, 0, 0, 1]).await.expect("probe connects");
            let _ = probe
                .write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await;
            let mut answer = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), probe.read_to_end(&mut answer));
            let _ = read.await.expect("the server answers or closes");
            if answer.starts_with(b"HTTP/1.1 200") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the probe never got a slot"
            );
        }
        let [first, second] = &mut idle;
        let (read, other) = tokio::select! {
            read = closed_within(first, timeout / 2) => (read, second),
            read = closed_within(second, timeout / 2) => (read, first),
        };
        assert!(
            read.is_empty(),
            "not closed by the header timeout: to make room, at once"
        );
        // The other idle one is let go once the header timeout passes.
        assert!(closed_within(other, timeout * 5).await.is_empty());
        assert!(started.elapsed() >= timeout - Duration::from_millis(100));
        server.stop().await;
    }
}
