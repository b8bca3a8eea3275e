//! The serving certificate, reloaded when its files change without a new listener: rustls asks
//! [`ReloadingCert`] for the certificate on every handshake, and a reload swaps it atomically.
//! Changes are noticed by watching the certificate's directory (Kubernetes updates a mounted secret by
//! swapping a symlink, which a watch on the file itself would miss) and by polling as a fallback.

use anyhow::Context;
use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the files are re-read even without a file-system event.
const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Why a certificate and key pair cannot serve; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} does not match {}", key.display(), cert.display())]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The current certificate, swapped in place on reload.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// Digests of the files, to tell whether a reload changes anything (never the key itself).
    fingerprint: [u8; 32],
}

impl ReloadingCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, CertError> {
        let loaded = read(cert_path, key_path)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: ArcSwap::from_pointee(loaded),
        }))
    }

    /// Re-reads the files; keeps the current certificate if they are unchanged or invalid (a
    /// half-written pair during rotation is retried on the next event or poll).
    pub fn reload(&self) -> bool {
        match read(&self.cert_path, &self.key_path) {
            Ok(fresh) if fresh.fingerprint != self.current.load().fingerprint => {
                self.current.store(Arc::new(fresh));
                tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(
                    // With its cause: "parsing tls.key: ...".
                    error = format!("{:#}", anyhow::Error::new(e)),
                    "serving certificate not reloaded; keeping the current one"
                );
                false
            }
        }
    }

    /// Watches the directories of both files and polls; runs until the task is dropped.
    pub async fn watch(self: Arc<Self>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |_event| {
            // A full channel already means "reload pending".
            let _ = tx.try_send(());
        });
        let _watcher = match watcher {
            Ok(mut w) => {
                for dir in self.directories() {
                    if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch certificate directory; polling only");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no file-system watcher; polling the certificate only");
                None
            }
        };
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        loop {
            tokio::select! {
                _ = rx.recv() => {
                    // Let a rotation that writes several files finish before reading them.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = poll.tick() => {}
            }
            self.reload();
        }
    }

    fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [&self.cert_path, &self.key_path]
            .iter()
            .map(|p| match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.dedup();
        dirs
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

fn read(cert_path: &Path, key_path: &Path) -> Result<Loaded, CertError> {
    let read_file = |path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read_file(cert_path)?;
    let key_pem = read_file(key_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Parse {
            path: cert_path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| CertError::Parse {
        path: key_path.to_owned(),
        source,
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        CertifiedKey::from_der(chain, key, &provider).map_err(|source| CertError::KeyMismatch {
            key: key_path.to_owned(),
            cert: cert_path.to_owned(),
            source,
        })?;
    let fingerprint = {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        digest.update(&cert_pem);
        digest.update(&key_pem);
        digest.finalize().into()
    };
    Ok(Loaded {
        key: Arc::new(certified),
        fingerprint,
    })
}

/// A rustls server config for the webhook: TLS 1.2 and 1.3, HTTP/1.1 (what the apiserver speaks).
pub fn server_config(cert: Arc<ReloadingCert>) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;

    fn issued(dir: &Path) -> (PathBuf, PathBuf) {
        certs::write_serving_set(dir, &["localhost".to_owned()], &[], 1, 1).expect("certificates");
        (dir.join(certs::TLS_CERT), dir.join(certs::TLS_KEY))
    }

    #[test]
    fn a_pair_that_cannot_serve_names_the_file_at_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = issued(dir.path());
        let missing = dir.path().join("missing.crt");
        assert!(matches!(
            ReloadingCert::load(&missing, &key),
            Err(CertError::Read { path, .. }) if path == missing
        ));

        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "").expect("write");
        assert!(matches!(
            ReloadingCert::load(&empty, &key),
            Err(CertError::NoCertificate { path }) if path == empty
        ));

        let other = tempfile::tempdir().expect("tempdir");
        let (_, other_key) = issued(other.path());
        assert!(matches!(
            ReloadingCert::load(&cert, &other_key),
            Err(CertError::KeyMismatch { key, .. }) if key == other_key
        ));

        assert!(ReloadingCert::load(&cert, &key).is_ok());
    }
}
