//! Who may call the webhook. Anyone who can reach its port can post a forged review and learn from
//! the answer which secret names exist in any namespace, which namespaces belong to which project,
//! and make it send SubjectAccessReviews. With `--client-ca-file`, a client must present a
//! certificate issued by that CA to finish the TLS handshake (the apiserver presents one when its
//! `--admission-control-config-file` names a kubeconfig holding it); with `--allowed-client-names`
//! too, the certificate's common name must be one of them, the way the apiserver's own
//! `--requestheader-allowed-names` narrows a CA shared with other clients.

use super::file_watch;
use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the client CA cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ClientCaError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds a certificate that cannot be a trust anchor", path.display())]
    Unusable {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("building the client certificate verifier from {}", path.display())]
    Verifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

/// A client that finished the handshake with a certificate of the CA whose common name is not
/// allowed (or that cannot be read).
#[derive(Debug, thiserror::Error)]
#[error("client certificate with common name {common_name:?} is not one of --allowed-client-names")]
pub struct NameNotAllowed {
    /// The certificate's common name(s), as presented (`""` if it has none or cannot be read).
    pub common_name: String,
}

/// The webhook's client authentication: the verifier the TLS configuration takes (itself: it
/// hands each handshake to the CA file as last read), and the names checked once a handshake has
/// finished. The CA file is re-read when it changes ([`ClientAuth::watch`]), so a CA rotated under a
/// running server (a bundle with the new CA added, then the old one removed) takes effect for new
/// connections without a restart.
#[derive(Debug)]
pub struct ClientAuth {
    ca_file: PathBuf,
    current: ArcSwap<Trust>,
    allowed_names: Vec<String>,
}

/// The CA file as last read.
#[derive(Debug)]
struct Trust {
    verifier: Arc<dyn ClientCertVerifier>,
    /// The file's digest, to tell whether a re-read changes anything.
    fingerprint: [u8; 32],
}

impl ClientAuth {
    /// Trusts the certificates in `ca_file` (PEM, one or more) as issuers of client certificates;
    /// `allowed_names` empty allows any common name they issue.
    pub fn load(ca_file: &Path, allowed_names: Vec<String>) -> Result<Self, ClientCaError> {
        Ok(Self {
            ca_file: ca_file.to_owned(),
            current: ArcSwap::from_pointee(read(ca_file)?),
            allowed_names: allowed_names
                .into_iter()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
                .collect(),
        })
    }

    /// Re-reads the CA file; keeps the CA as it was if the file is unchanged or cannot be used (a
    /// file half-written during rotation is read again on the next event or poll). Whether the
    /// trusted CA changed.
    pub fn reload(&self) -> bool {
        match read(&self.ca_file) {
            Ok(fresh) if fresh.fingerprint != self.current.load().fingerprint => {
                self.current.store(Arc::new(fresh));
                tracing::info!(ca = %self.ca_file.display(), "client CA reloaded");
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(
                    error = format!("{:#}", anyhow::Error::new(e)),
                    "client CA not reloaded; keeping the current one"
                );
                false
            }
        }
    }

    /// Watches the CA file's directory and polls; runs until the task is dropped.
    pub async fn watch(self: Arc<Self>) {
        let files = [self.ca_file.clone()];
        file_watch::watch(&files, "client CA", || {
            self.reload();
        })
        .await;
    }

    /// The allowed common names (empty: any).
    pub fn allowed_names(&self) -> &[String] {
        &self.allowed_names
    }

    /// Whether the client whose verified chain is `peer` may post reviews.
    pub fn permits(&self, peer: Option<&[CertificateDer<'_>]>) -> Result<(), NameNotAllowed> {
        if self.allowed_names.is_empty() {
            return Ok(());
        }
        let names = peer
            .and_then(<[_]>::first)
            .map(common_names)
            .unwrap_or_default();
        // Exactly one common name: a subject may repeat the attribute, and readers disagree on
        // which one counts (Go, and so Kubernetes, takes the last): a certificate approved for
        // `CN=me` must not pass because it also says `CN=kube-apiserver`.
        if let [name] = names.as_slice()
            && self.allowed_names.contains(name)
        {
            return Ok(());
        }
        Err(NameNotAllowed {
            common_name: names.join(", "),
        })
    }
}

/// Reads `ca_file` into a verifier requiring a client certificate issued by one of its CAs.
fn read(ca_file: &Path) -> Result<Trust, ClientCaError> {
    let read = |source| ClientCaError::Read {
        path: ca_file.to_owned(),
        source,
    };
    let pem = std::fs::read(ca_file).map_err(|e| read(rustls_pki_types::pem::Error::Io(e)))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certificates.is_empty() {
        return Err(ClientCaError::NoCertificate {
            path: ca_file.to_owned(),
        });
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|source| ClientCaError::Unusable {
                path: ca_file.to_owned(),
                source,
            })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|source| ClientCaError::Verifier {
            path: ca_file.to_owned(),
            source,
        })?;
    Ok(Trust {
        verifier,
        fingerprint: file_watch::fingerprint([pem.as_slice()]),
    })
}

/// Each handshake is verified against the CA as last read.
impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// None: rustls asks for the hints by reference, and the CA they would name may be replaced
    /// while the server runs. An empty list is allowed (RFC 8446 4.2.4, RFC 5246 7.4.4) and tells
    /// the client that any certificate may do; the apiserver sends the one its kubeconfig names.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let trust = self.current.load();
        trust
            .verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let trust = self.current.load();
        trust.verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let trust = self.current.load();
        trust.verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().verifier.supported_verify_schemes()
    }
}

/// The subject's common names of a DER certificate; none if it cannot be parsed (the handshake
/// verified it, so that does not happen in practice).
fn common_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    certificate
        .subject()
        .iter_common_name()
        .filter_map(|attribute| attribute.as_str().ok())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::Authority;

    fn client_cert(ca: &Authority, name: &str) -> CertificateDer<'static> {
        let issued = ca.issue(&[name.to_owned()], &[], 1, true).expect("issued");
        CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("PEM")
    }

    fn ca_file(dir: &Path, ca: &Authority) -> PathBuf {
        let path = dir.join("client-ca.crt");
        std::fs::write(&path, &ca.cert_pem).expect("written");
        path
    }

    #[test]
    fn only_the_allowed_common_names_are_permitted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::generate("client CA", 1).expect("CA");
        let auth = ClientAuth::load(
            &ca_file(dir.path(), &ca),
            vec!["kube-apiserver".into(), " ".into()],
        )
        .expect("loads");
        assert_eq!(auth.allowed_names(), ["kube-apiserver"]);
        let apiserver = client_cert(&ca, "kube-apiserver");
        let other = client_cert(&ca, "kubelet");
        assert!(auth.permits(Some(std::slice::from_ref(&apiserver))).is_ok());
        let refused = auth
            .permits(Some(std::slice::from_ref(&other)))
            .expect_err("another name is refused");
        assert_eq!(refused.common_name, "kubelet");
        assert!(auth.permits(None).is_err(), "no certificate, no name");
    }

    #[test]
    fn a_certificate_with_two_common_names_is_refused_even_if_one_is_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::generate("client CA", 1).expect("CA");
        let auth = ClientAuth::load(&ca_file(dir.path(), &ca), vec!["kube-apiserver".into()])
            .expect("loads");
        // Only the subject is read here (the handshake checks the signature): self-signed will do.
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "me");
        // The same attribute type again (rcgen keys its map by type, so the OID is given raw).
        params.distinguished_name.push(
            rcgen::DnType::CustomDnType(vec![2, 5, 4, 3]),
            "kube-apiserver",
        );
        let key = rcgen::KeyPair::generate().expect("key");
        let two = params.self_signed(&key).expect("signed").der().clone();
        assert_eq!(common_names(&two).len(), 2, "the subject carries both");
        let refused = auth
            .permits(Some(std::slice::from_ref(&two)))
            .expect_err("two names are refused");
        assert!(
            refused.common_name.contains("kube-apiserver"),
            "{}",
            refused.common_name
        );
    }

    #[test]
    fn without_allowed_names_any_certificate_of_the_ca_is_permitted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::generate("client CA", 1).expect("CA");
        let auth = ClientAuth::load(&ca_file(dir.path(), &ca), Vec::new()).expect("loads");
        let kubelet = client_cert(&ca, "kubelet");
        assert!(auth.permits(Some(std::slice::from_ref(&kubelet))).is_ok());
    }

    #[test]
    fn a_rotated_ca_file_is_trusted_once_reloaded_and_a_broken_one_never() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, new) = (
            Authority::generate("old client CA", 1).expect("CA"),
            Authority::generate("new client CA", 1).expect("CA"),
        );
        let path = ca_file(dir.path(), &old);
        let auth = ClientAuth::load(&path, Vec::new()).expect("loads");
        let (old_client, new_client) = (
            client_cert(&old, "kube-apiserver"),
            client_cert(&new, "kube-apiserver"),
        );
        let trusted = |client: &CertificateDer<'_>| {
            auth.verify_client_cert(client, &[], UnixTime::now())
                .is_ok()
        };
        assert!(trusted(&old_client) && !trusted(&new_client));
        assert!(
            !auth.reload(),
            "reading the same file again changes nothing"
        );

        // The new CA added to the bundle: both trusted.
        std::fs::write(&path, format!("{}{}", old.cert_pem, new.cert_pem)).expect("written");
        assert!(auth.reload());
        assert!(trusted(&old_client) && trusted(&new_client));
        // A file caught half-written keeps what was trusted.
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nMIIB").expect("written");
        assert!(!auth.reload());
        assert!(trusted(&old_client) && trusted(&new_client));
        // The old CA removed: its clients are refused.
        std::fs::write(&path, &new.cert_pem).expect("written");
        assert!(auth.reload());
        assert!(!trusted(&old_client) && trusted(&new_client));
    }

    #[test]
    fn a_ca_file_that_cannot_serve_names_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.crt");
        assert!(matches!(
            ClientAuth::load(&missing, Vec::new()),
            Err(ClientCaError::Read { path, .. }) if path == missing
        ));
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not PEM at all\n").expect("written");
        assert!(matches!(
            ClientAuth::load(&empty, Vec::new()),
            Err(ClientCaError::NoCertificate { path }) if path == empty
        ));
    }
}
