//! Who may call the webhook. Anyone who can reach its port can post a forged review and learn from
//! the answer which secret names exist in any namespace, which namespaces belong to which project,
//! and make it send SubjectAccessReviews. With `--client-ca-file`, a client must present a
//! certificate issued by that CA to finish the TLS handshake (the apiserver presents one when its
//! `--admission-control-config-file` names a kubeconfig holding it); with `--allowed-client-names`
//! too, the certificate's common name must be one of them, the way the apiserver's own
//! `--requestheader-allowed-names` narrows a CA shared with other clients.

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
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

/// The webhook's client authentication: the verifier the TLS configuration takes, and the names
/// checked once a handshake has finished.
pub struct ClientAuth {
    verifier: Arc<dyn ClientCertVerifier>,
    allowed_names: Vec<String>,
}

impl ClientAuth {
    /// Trusts the certificates in `ca_file` (PEM, one or more) as issuers of client certificates;
    /// `allowed_names` empty allows any common name they issue.
    pub fn load(ca_file: &Path, allowed_names: Vec<String>) -> Result<Self, ClientCaError> {
        let read = |source| ClientCaError::Read {
            path: ca_file.to_owned(),
            source,
        };
        let certificates = CertificateDer::pem_file_iter(ca_file)
            .map_err(read)?
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
        Ok(Self {
            verifier,
            allowed_names: allowed_names
                .into_iter()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
                .collect(),
        })
    }

    /// For the TLS configuration: a client certificate of the CA is required.
    pub fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.verifier.clone()
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
        if names.iter().any(|name| self.allowed_names.contains(name)) {
            return Ok(());
        }
        Err(NameNotAllowed {
            common_name: names.join(", "),
        })
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
    fn without_allowed_names_any_certificate_of_the_ca_is_permitted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::generate("client CA", 1).expect("CA");
        let auth = ClientAuth::load(&ca_file(dir.path(), &ca), Vec::new()).expect("loads");
        let kubelet = client_cert(&ca, "kubelet");
        assert!(auth.permits(Some(std::slice::from_ref(&kubelet))).is_ok());
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
