//! Structured logs through `tracing`. Nothing the product logs carries secret data: handlers log
//! names, codes and reasons, never objects.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// What is logged unless `RUST_LOG` says otherwise: `info`, but only errors from the TLS stack.
/// rustls logs at warn level what a client sends in its handshake (an illegal SNI name of up to
/// 64 KiB, alerts, unexpected messages), before any client certificate is checked: anyone who
/// reaches the webhook port could write such lines at any rate. Failed handshakes are counted in
/// `scoped_secrets_webhook_connections_refused_total` and logged at debug level by the server.
pub const DEFAULT_FILTER: &str = "info,rustls=error,tokio_rustls=error,hyper_rustls=error";

/// Installs the global subscriber; `RUST_LOG` overrides [`DEFAULT_FILTER`].
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests start several servers in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// What was logged, for tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex, PoisonError};
    use tracing_subscriber::EnvFilter;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `log` logs on this thread, in the text format, through `filter` (none: everything at
    /// info level and above).
    pub fn logged(filter: Option<EnvFilter>, log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false);
        match filter {
            Some(filter) => {
                tracing::subscriber::with_default(builder.with_env_filter(filter).finish(), log)
            }
            None => tracing::subscriber::with_default(builder.finish(), log),
        }
        let bytes = captured.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_stacks_warnings_are_not_logged_by_default_and_ours_are() {
        let logged = testing::logged(Some(EnvFilter::new(DEFAULT_FILTER)), || {
            // The targets rustls's `log` records get (tracing-log keeps the module path).
            tracing::warn!(target: "rustls::msgs::handshake", "Illegal SNI hostname received");
            tracing::warn!(target: "tokio_rustls", "from the TLS stack");
            tracing::error!(target: "rustls::conn", "a TLS error");
            tracing::warn!(target: "scoped_secrets::webhook::pipeline", "our warning");
            tracing::info!(target: "scoped_secrets::serve", "our info");
        });
        assert!(!logged.contains("Illegal SNI"), "{logged}");
        assert!(!logged.contains("from the TLS stack"), "{logged}");
        assert!(logged.contains("a TLS error"), "{logged}");
        assert!(logged.contains("our warning"), "{logged}");
        assert!(logged.contains("our info"), "{logged}");
    }
}
