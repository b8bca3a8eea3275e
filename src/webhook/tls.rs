//! The serving certificate, reloaded when its files change without a new listener: rustls asks
//! [`ReloadingCert`] for the certificate on every handshake, and a reload swaps it atomically.
//! Changes are noticed as [`super::file_watch`] says.

use super::client_auth::ClientAuth;
use super::file_watch;
use anyhow::Context;
use arc_swap::ArcSwap;
use prometheus_client::metrics::gauge::Gauge;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    #[error("{} holds a certificate whose validity cannot be read: {reason}", path.display())]
    Validity { path: PathBuf, reason: String },
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
    /// How often the files have been read, the first load included.
    reads: AtomicU64,
    /// When the certificate being served expires (Unix seconds): an expired one fails every
    /// review closed, and nothing else says so before it does.
    expiry: Gauge,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// Digests of the files, to tell whether a reload changes anything (never the key itself).
    fingerprint: [u8; 32],
    /// The first certificate's `notAfter`, in Unix seconds.
    not_after: i64,
}

/// A certificate this close to its end is logged as a warning when loaded.
const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

impl ReloadingCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, CertError> {
        let loaded = read(cert_path, key_path)?;
        let expiry = Gauge::default();
        expiry.set(loaded.not_after);
        warn_if_expiring(cert_path, loaded.not_after);
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: ArcSwap::from_pointee(loaded),
            reads: AtomicU64::new(1),
            expiry,
        }))
    }

    /// The served certificate's `notAfter` in Unix seconds, kept current across reloads; register
    /// it as `scoped_secrets_serving_certificate_expiry_timestamp_seconds`.
    pub fn expiry(&self) -> &Gauge {
        &self.expiry
    }

    /// How often the files have been read, the first load included.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Re-reads the files; keeps the current certificate if they are unchanged or invalid (a
    /// half-written pair during rotation is retried on the next event or poll).
    pub fn reload(&self) -> bool {
        self.reads.fetch_add(1, Ordering::Relaxed);
        match read(&self.cert_path, &self.key_path) {
            Ok(fresh) if fresh.fingerprint != self.current.load().fingerprint => {
                let not_after = fresh.not_after;
                self.current.store(Arc::new(fresh));
                self.expiry.set(not_after);
                tracing::info!(
                    cert = %self.cert_path.display(),
                    not_after = %unix_time(not_after),
                    "serving certificate reloaded"
                );
                warn_if_expiring(&self.cert_path, not_after);
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
        let files = [self.cert_path.clone(), self.key_path.clone()];
        file_watch::watch(&files, "certificate", || {
            self.reload();
        })
        .await;
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
    let not_after = x509_parser::parse_x509_certificate(&chain[0])
        .map(|(_, leaf)| leaf.validity().not_after.timestamp())
        .map_err(|e| CertError::Validity {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        CertifiedKey::from_der(chain, key, &provider).map_err(|source| CertError::KeyMismatch {
            key: key_path.to_owned(),
            cert: cert_path.to_owned(),
            source,
        })?;
    let fingerprint = file_watch::fingerprint([cert_pem.as_slice(), key_pem.as_slice()]);
    Ok(Loaded {
        key: Arc::new(certified),
        fingerprint,
        not_after,
    })
}

/// A warning when the certificate just loaded has expired or will within [`EXPIRY_WARNING`].
fn warn_if_expiring(cert_path: &Path, not_after: i64) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let left = not_after.saturating_sub(now);
    if left < EXPIRY_WARNING.as_secs().cast_signed() {
        tracing::warn!(
            cert = %cert_path.display(),
            not_after = %unix_time(not_after),
            "the serving certificate {}; the apiserver refuses it from then on and every review fails closed",
            if left <= 0 { "has expired" } else { "expires within 7 days" }
        );
    }
}

/// Unix seconds as RFC 3339, for the logs.
fn unix_time(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

/// A rustls server config for the webhook: TLS 1.2 and 1.3, HTTP/1.1 (what the apiserver speaks);
/// with `client_auth`, a client certificate of its CA is required.
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_auth: Option<Arc<ClientAuth>>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?;
    let authenticates = client_auth.is_some();
    let mut config = match client_auth {
        Some(clients) => builder.with_client_cert_verifier(clients),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if authenticates {
        // A resumed session brings back the client certificate it began with, unverified: a client
        // whose CA was since removed from the file, or whose certificate expired, would get in
        // for as long as it kept resuming. Every connection proves itself; the apiserver keeps
        // its connections alive, so full handshakes are rare.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;

    /// Handshakes with `server` as a client presenting `identity`, twice with one client
    /// configuration (which keeps sessions to resume); how the second handshake went.
    async fn second_handshake(
        server: Arc<ServerConfig>,
        serving_ca: &str,
        identity: &certs::Issued,
    ) -> rustls::HandshakeKind {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    // One byte after the handshake, so that the client reads the tickets too.
                    let _ = tls.write_all(b"!").await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(serving_ca.as_bytes()) {
            roots.add(cert.expect("PEM")).expect("root");
        }
        let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("PEM");
        let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("key");
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client certificate"),
        );
        let connector = tokio_rustls::TlsConnector::from(client);
        let mut kind = None;
        for _ in 0..2 {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = ServerName::try_from("localhost").expect("name");
            let mut tls = connector.connect(name, tcp).await.expect("handshake");
            let mut byte = Vec::new();
            tls.read_to_end(&mut byte).await.expect("read");
            kind = tls.get_ref().1.handshake_kind();
        }
        kind.expect("handshaken")
    }

    #[tokio::test]
    async fn with_client_certificates_every_connection_makes_a_full_handshake() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_path, key_path) = issued(dir.path());
        let serving_ca = std::fs::read_to_string(dir.path().join(certs::CA_CERT)).expect("CA");
        let clients_ca = certs::Authority::generate("clients CA", 1).expect("CA");
        let ca_file = dir.path().join("clients-ca.crt");
        std::fs::write(&ca_file, &clients_ca.cert_pem).expect("written");
        let identity = clients_ca
            .issue(&["kube-apiserver".to_owned()], &[], 1, true)
            .expect("issued");
        let cert = ReloadingCert::load(&cert_path, &key_path).expect("loads");
        let auth = ClientAuth::load(&ca_file, Vec::new()).expect("client CA");
        let authenticating = server_config(cert.clone(), Some(Arc::new(auth))).expect("config");
        assert_eq!(
            second_handshake(authenticating, &serving_ca, &identity).await,
            rustls::HandshakeKind::Full,
            "a resumed session would skip the client certificate's verification"
        );
        // Without client certificates, resuming is harmless and kept.
        let open = server_config(cert, None).expect("config");
        assert_eq!(
            second_handshake(open, &serving_ca, &identity).await,
            rustls::HandshakeKind::Resumed
        );
    }

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

    #[test]
    fn the_expiry_gauge_follows_the_certificate_being_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let days = |n: i64| n * 24 * 3600;
        let now = || time::OffsetDateTime::now_utc().unix_timestamp();
        let (cert_path, key_path) = issued(dir.path());
        let cert = ReloadingCert::load(&cert_path, &key_path).expect("loads");
        let until = cert.expiry().get() - now();
        assert!((days(1) - 60..=days(1)).contains(&until), "{until} s left");
        certs::write_serving_set(dir.path(), &["localhost".to_owned()], &[], 1, 30)
            .expect("rotated");
        assert!(cert.reload());
        let until = cert.expiry().get() - now();
        assert!(
            (days(30) - 60..=days(30)).contains(&until),
            "{until} s left"
        );
        // A pair that cannot be read keeps the served certificate, and its expiry.
        std::fs::write(&cert_path, "not a certificate").expect("write");
        assert!(!cert.reload());
        let until = cert.expiry().get() - now();
        assert!(
            (days(30) - 120..=days(30)).contains(&until),
            "{until} s left"
        );
    }

    #[tokio::test]
    async fn a_rotation_is_read_once_and_the_watch_then_rests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_path, key_path) = issued(dir.path());
        let cert = ReloadingCert::load(&cert_path, &key_path).expect("loads");
        let first = cert.current.load().fingerprint;
        let watch = tokio::spawn(cert.clone().watch());
        // The watch is set up before its first poll reads the files (at once, then every 10 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cert.reads() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the watch never read the files"
            );
            tokio::task::yield_now().await;
        }
        issued(dir.path());
        while cert.current.load().fingerprint == first {
            assert!(
                std::time::Instant::now() < deadline,
                "the rotation was never read"
            );
            tokio::task::yield_now().await;
        }
        // Reading the files raised access events; had they counted as changes, each read would
        // have triggered the next (one every debounce period of 100 ms). Ten periods pass, well
        // inside the 10 s poll: at most one more read is due, if the rotation's last writes came
        // after the first read.
        let after_rotation = cert.reads();
        let window = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < window {
            tokio::task::yield_now().await;
        }
        watch.abort();
        assert!(
            cert.reads() <= after_rotation + 1,
            "the files were read {} more times without any change",
            cert.reads() - after_rotation
        );
    }
}
