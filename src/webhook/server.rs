//! The TLS listener: HTTP/1.1 over tokio-rustls with handshake and header-read timeouts, client
//! certificates checked when configured ([`super::client_auth`]), and a graceful shutdown: for a
//! drain window every answer closes its connection, then the listener stops accepting, in-flight
//! reviews finish within a deadline and the idle keep-alive connections left are closed.

use super::client_auth::ClientAuth;
use super::connection::{self, Connection};
use super::established::{Established, Newcomer};
use super::handshake_rate::{DEFAULT_HANDSHAKES_PER_SECOND, HandshakeRate};
use super::handshakes::Handshakes;
use super::header_deadline::{HeaderDeadline, Watched};
use super::peers::PeerSlots;
use crate::metrics::WebhookMetrics;
use axum::Router;
use futures::future::Either;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// Limits on a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake_timeout: Duration,
    /// How long a request head may take from the connection's opening or its first byte.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may send nothing after an answer.
    pub idle_timeout: Duration,
    /// How long, once shutdown begins, connections are still accepted and served, each answer
    /// closing its connection (`Connection: close`), before the idle ones left are closed.
    pub drain_window: Duration,
    /// How long in-flight reviews may take to finish after the drain window.
    pub drain_timeout: Duration,
    /// Open connections at once (TLS handshakes included); past it a new one closes one that holds
    /// a slot without using it, or has a busy one close after its answer, of a busier address (see
    /// [`Established::slot`]), or is closed at once.
    pub max_connections: usize,
    /// Open connections from one address at once, so that one client cannot take the slots the
    /// apiserver needs; past it a new one from that address is closed at once.
    pub max_connections_per_address: usize,
    /// Connections in their TLS handshake at once; past it the oldest of the address with the most
    /// under way is closed to make room.
    pub max_pending_handshakes: usize,
    /// TLS handshakes one address may begin a second, after a burst of
    /// `handshake_burst_per_address` (0: no limit); past it a new connection from that address is
    /// closed before its handshake.
    pub handshakes_per_second_per_address: u32,
    /// Handshakes one address may begin at once before its rate applies: by default as many as
    /// it may hold connections, so that an apiserver re-opening its whole pool is never slowed.
    pub handshake_burst_per_address: usize,
}

/// Default idle timeout of a keep-alive connection: longer than the apiserver's own (Go's
/// `IdleConnTimeout`, 90 s), so that the apiserver closes an idle connection first. Closing it
/// first races the apiserver's next review on it, which then fails with EOF (Go does not resend a
/// POST) and falls to the entry's failure policy.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Default drain window. Closing an idle keep-alive connection races the apiserver's next review
/// on it, which then fails (Go does not resend a POST) and falls to the entry's failure policy; a
/// connection whose answer says `Connection: close` is closed by the apiserver itself, between
/// reviews. The window lets the connections in use go that way: under steady traffic each is used
/// within it.
pub const DEFAULT_DRAIN_WINDOW: Duration = Duration::from_secs(5);

/// Default cap on open connections: the apiserver keeps a pool of keep-alive connections per
/// replica, far fewer than this.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Default cap on open connections from one address: half the connection cap, twice the reviews
/// served at once (more connections than that from one apiserver would only be answered 429).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = DEFAULT_MAX_CONNECTIONS / 2;

/// Default cap on connections in their handshake: half the connection cap. An apiserver's
/// handshake takes milliseconds, and the address with the most under way makes room first.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = DEFAULT_MAX_CONNECTIONS / 2;

impl Limits {
    /// The defaults, with `max_connections` open connections at once and `per_address` from one
    /// address (by default half of them, as are the handshakes under way).
    pub fn with_max_connections(max_connections: usize, per_address: Option<usize>) -> Self {
        let half = (max_connections / 2).max(1);
        Self {
            max_connections,
            max_connections_per_address: per_address.unwrap_or(half),
            handshake_burst_per_address: per_address.unwrap_or(half),
            max_pending_handshakes: half,
            ..Self::default()
        }
    }
}

/// The most a connection buffers of what it reads, and so the largest request head it takes (a
/// larger one is answered 431): the apiserver's heads are well under 1 KiB, and body bytes are
/// handed on in pieces of at most this. hyper's default (~408 KiB) let connections each holding an
/// unfinished head of that size take 100 MiB at the connection cap.
pub const MAX_READ_BUFFER: usize = 32 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            drain_window: DEFAULT_DRAIN_WINDOW,
            drain_timeout: Duration::from_secs(15),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            handshakes_per_second_per_address: DEFAULT_HANDSHAKES_PER_SECOND,
            handshake_burst_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        }
    }
}

/// Why the webhook listener could not be set up; a caller can tell a taken port from the rest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the webhook to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the webhook's local address")]
    LocalAddr(#[source] std::io::Error),
}

/// A bound webhook listener.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    /// The names a client certificate must carry, when the TLS configuration requires one.
    clients: Option<Arc<ClientAuth>>,
    /// Where refused connections are counted.
    metrics: Option<WebhookMetrics>,
}

impl Server {
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<ServerConfig>,
        limits: Limits,
    ) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(tls),
            limits,
            clients: None,
            metrics: None,
        })
    }

    /// Checks each client's certificate against `clients`' allowed names once its handshake
    /// has finished; the TLS configuration must require one (see [`super::tls::server_config`]).
    #[must_use]
    pub fn with_client_auth(mut self, clients: Arc<ClientAuth>) -> Self {
        self.clients = Some(clients);
        self
    }

    /// Counts refused connections in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: WebhookMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(Error::LocalAddr)
    }

    /// Serves until `shutdown` resolves, then drains: for the drain window every answer closes
    /// its connection, then no connection is accepted, and in-flight reviews are let finish.
    pub async fn serve(self, router: Router, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let closing = Closing::default();
        let window = self.limits.drain_window;
        // Each connection holds a receiver from its accept to its end: `closed()` says when none
        // is left open.
        let open_connections = watch::Sender::new(());
        let shutdown = async {
            shutdown.await;
            closing.begin();
            tracing::info!(
                window_seconds = window.as_secs_f64(),
                "shutting down: every answer now closes its connection"
            );
            // Over as soon as no connection is left to close.
            let _ = tokio::time::timeout(window, open_connections.closed()).await;
        };
        let connections = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        let peers = PeerSlots::new(self.limits.max_connections_per_address);
        let handshakes = Handshakes::new(self.limits.max_pending_handshakes);
        let handshake_rate = (self.limits.handshakes_per_second_per_address > 0).then(|| {
            let burst = u32::try_from(self.limits.handshake_burst_per_address).unwrap_or(u32::MAX);
            HandshakeRate::new(self.limits.handshakes_per_second_per_address, burst)
        });
        let established = Established::default();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Each connection costs TLS and HTTP buffers; past a cap, closing at once is the fast,
            // clear answer (the apiserver's call fails and its failurePolicy applies).
            let refused = Refused(self.metrics.clone());
            let Some(slot) = peers.take(peer.ip()) else {
                tracing::debug!(%peer, "connection refused: the address holds its share");
                refused.count("address_cap");
                drop(tcp);
                continue;
            };
            if let Some(rate) = &handshake_rate
                && !rate.allows(peer.ip())
            {
                tracing::debug!(%peer, "connection refused: the address began too many handshakes");
                refused.count("handshake_rate");
                drop(tcp);
                continue;
            }
            // At the cap, a connection that holds a slot without using it makes room, or a busy
            // one closes after its answer; either of an address over its share.
            let newcomer = Newcomer {
                address: peer.ip(),
                peers: &peers,
                handshakes: Some(&handshakes),
                capacity: self.limits.max_connections,
            };
            let Some(open) = established.slot(&connections, newcomer).await else {
                tracing::debug!(%peer, "connection refused: the connection cap is reached");
                refused.count("connection_cap");
                drop(tcp);
                continue;
            };
            // Reviews are small request/response pairs: without NODELAY each answer can wait on
            // Nagle's algorithm. A socket that refuses it still serves, only slower.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "TCP_NODELAY not set");
            }
            let acceptor = self.acceptor.clone();
            let limits = self.limits;
            // The header-read deadline is kept here, not by hyper (see `header_deadline`).
            let deadline = HeaderDeadline::new(limits.header_read_timeout, limits.idle_timeout);
            let service = marking_requests(
                router.clone(),
                Arc::clone(&deadline),
                closing.clone(),
                Some(peer.ip()),
            );
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.keep_alive(true)
                    .max_buf_size(MAX_READ_BUFFER)
                    .max_header_size(MAX_READ_BUFFER);
                b
            };
            let watcher = graceful.watcher();
            let clients = self.clients.clone();
            let established = established.clone();
            // Taken here, in the order connections arrive, so that the oldest is the first closed.
            let (turn, mut evicted) = handshakes.begin(peer.ip());
            let counted = open_connections.subscribe();
            tokio::spawn(async move {
                let _open = (open, slot, counted);
                let handshake =
                    tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
                let done = tokio::select! {
                    done = handshake => done,
                    Ok(()) = &mut evicted => {
                        tracing::debug!(%peer, "TLS handshake closed to make room for a newer one");
                        refused.count("handshake_evicted");
                        return;
                    }
                };
                drop(turn);
                let tls = match done {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        // Debug: anyone who can reach the port can fail handshakes; the counter
                        // says how many, and why.
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        refused.count(handshake_failure(&e));
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        refused.count("handshake_timeout");
                        return;
                    }
                };
                if let Some(clients) = clients
                    && let Err(e) = clients.permits(tls.get_ref().1.peer_certificates())
                {
                    // Only a holder of a certificate of the client CA gets here: worth a warning
                    // (a wrong --allowed-client-names refuses the apiserver itself).
                    tracing::warn!(%peer, error = %e, "webhook client refused");
                    refused.count("client_name");
                    return;
                }
                established.add(peer.ip(), &deadline);
                let watched = Watched::new(tls, Arc::clone(&deadline));
                let connection = builder.serve_connection(TokioIo::new(watched), service);
                tokio::select! {
                    biased;
                    served = watcher.watch(connection) => {
                        if let Err(e) = served {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    }
                    () = deadline.passed() => {
                        if deadline.was_evicted() {
                            tracing::debug!(%peer, "connection waiting for a request or stalled on its body closed to make room (the connection cap, or the large bodies' budget)");
                            refused.count("evicted");
                        } else if !deadline.retiring() {
                            tracing::debug!(%peer, "no request head within the header-read timeout; connection closed");
                        }
                    }
                }
                if deadline.retiring() && !deadline.was_evicted() {
                    tracing::debug!(%peer, "busy connection closed after its answer to make room at the connection cap");
                    refused.count("retired");
                }
            });
        }
        // Refused from now on, rather than left waiting in the backlog.
        drop(self.listener);
        tracing::info!("webhook stopped accepting; draining in-flight reviews");
        if tokio::time::timeout(self.limits.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain deadline passed; closing the remaining connections");
        }
    }
}

/// Set once shutdown begins: from then on every answer closes its connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Closing(Arc<AtomicBool>);

impl Closing {
    fn begin(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn begun(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The router as a hyper service that marks on `deadline` when each request's head has arrived
/// and when it is answered, that lets the handler know the connection (the client's `address`, if
/// given, and `deadline`: see [`connection`]), and that closes the connection after the answer to
/// a request that arrived once `closing` had begun (hyper closes a connection whose answer says so).
pub(crate) fn marking_requests(
    router: Router,
    deadline: Arc<HeaderDeadline>,
    closing: Closing,
    address: Option<IpAddr>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send,
> {
    let service = TowerToHyperService::new(router);
    hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        deadline.serving();
        let answer = service.call(request);
        let marking = Arc::clone(&deadline);
        // Read as the request arrives, not as it is answered: no reference count moves between
        // the cores per request. One answered without it after shutdown began leaves its
        // connection to the next review in the window, or to be closed idle after it.
        let close = closing.begun();
        let answer = async move {
            let mut response = answer.await;
            marking.answered();
            // A connection retired to make room at the cap closes after this answer too.
            if (close || marking.retiring())
                && let Ok(response) = response.as_mut()
            {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            response
        };
        match address {
            Some(address) => {
                let deadline = Arc::clone(&deadline);
                Either::Left(connection::serving(
                    Connection { address, deadline },
                    answer,
                ))
            }
            None => Either::Right(answer),
        }
    })
}

/// Counts refused connections, when there is somewhere to count them.
struct Refused(Option<WebhookMetrics>);

impl Refused {
    fn count(&self, reason: &'static str) {
        if let Some(metrics) = &self.0 {
            metrics.connection_refused(reason);
        }
    }
}

/// The reason label of a failed handshake: a client certificate missing or not of the client CA,
/// or anything else.
fn handshake_failure(error: &std::io::Error) -> &'static str {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)) => {
            "client_certificate"
        }
        _ => "handshake",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;
    use crate::webhook::tls::{self, ReloadingCert};

    #[test]
    fn one_address_and_the_handshakes_get_half_the_connections_unless_told() {
        let limits = Limits::with_max_connections(100, None);
        assert_eq!(limits.max_connections_per_address, 50);
        assert_eq!(limits.max_pending_handshakes, 50);
        let told = Limits::with_max_connections(100, Some(80));
        assert_eq!(told.max_connections_per_address, 80);
        assert_eq!(
            told.handshake_burst_per_address, 80,
            "a whole pool re-opened at once"
        );
        assert_eq!(
            Limits::with_max_connections(1, None).max_pending_handshakes,
            1
        );
        let default = Limits::default();
        let same = Limits::with_max_connections(DEFAULT_MAX_CONNECTIONS, None);
        assert_eq!(
            (
                default.max_connections_per_address,
                default.max_pending_handshakes
            ),
            (
                same.max_connections_per_address,
                same.max_pending_handshakes
            )
        );
    }

    #[tokio::test]
    async fn a_taken_port_is_a_bind_error_naming_the_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        certs::write_serving_set(dir.path(), &["localhost".to_owned()], &[], 1, 1)
            .expect("certificates");
        let cert = ReloadingCert::load(
            &dir.path().join(certs::TLS_CERT),
            &dir.path().join(certs::TLS_KEY),
        )
        .expect("certificate loads");
        let config = tls::server_config(cert, None).expect("tls");
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = taken.local_addr().expect("addr");
        match Server::bind(addr, config, Limits::default()).await {
            Err(Error::Bind {
                addr: named,
                source,
            }) => {
                assert_eq!(named, addr);
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            }
            Err(other) => panic!("expected a bind error, got {other}"),
            Ok(_) => panic!("bound a port that is taken"),
        }
    }
}
