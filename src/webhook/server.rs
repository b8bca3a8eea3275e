//! The TLS listener: HTTP/1.1 over tokio-rustls with handshake and header-read timeouts, and a
//! graceful shutdown that stops accepting, lets in-flight reviews finish within a deadline and closes
//! idle keep-alive connections.

use anyhow::{Context, Result};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Limits on a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// How long in-flight reviews may take to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// Open connections at once (TLS handshakes included); past it a new one is closed at once.
    pub max_connections: usize,
}

/// Default cap on open connections: the apiserver keeps a pool of keep-alive connections per
/// replica, far fewer than this.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(15),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A bound webhook listener.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
}

impl Server {
    pub async fn bind(addr: SocketAddr, tls: Arc<ServerConfig>, limits: Limits) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the webhook to {addr}"))?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(tls),
            limits,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn serve(self, router: Router, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
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
            // Each connection costs TLS and HTTP buffers; past the cap, closing at once is the
            // fast, clear answer (the apiserver's call fails and its failurePolicy applies).
            let Ok(open) = connections.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "connection refused: the connection cap is reached");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let limits = self.limits;
            let service = TowerToHyperService::new(router.clone());
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .keep_alive(true);
                b
            };
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _open = open;
                let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let connection = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        tracing::info!("webhook stopped accepting; draining in-flight reviews");
        if tokio::time::timeout(self.limits.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain deadline passed; closing the remaining connections");
        }
    }
}
