//! Certificates for the webhook (and the local control plane): an ECDSA P-256 CA and serving
//! certificates signed by it. An existing CA is reused, so issuing again rotates only the serving
//! certificate and the `caBundle` registered with the apiserver stays valid.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// File names inside a certificate directory, as a Kubernetes TLS secret would mount them.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// Why certificates could not be made, loaded or written; file errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("renaming to {}", path.display())]
    Rename {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the CA key {}", path.display())]
    ParseCaKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("parsing the CA certificate {}", path.display())]
    ParseCaCert {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid DNS name for a certificate")]
    InvalidName(#[source] rcgen::Error),
    /// Key generation or signing failed in the crypto provider.
    #[error("{step}")]
    Crypto {
        step: &'static str,
        #[source]
        source: rcgen::Error,
    },
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn crypto(step: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |source| Error::Crypto { step, source }
}

/// A CA able to sign serving certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A serving certificate and its key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Authority {
    /// A new self-signed CA.
    pub fn generate(common_name: &str, valid_days: i64) -> Result<Self> {
        let key = KeyPair::generate().map_err(crypto("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, valid_days);
        let cert = params
            .self_signed(&key)
            .map_err(crypto("self-signing the CA"))?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
            key_pem,
        })
    }

    /// The CA stored in `dir`, if both of its files are there.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if !cert_path.exists() || !key_path.exists() {
            return Ok(None);
        }
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| Error::ParseCaKey {
            path: key_path.clone(),
            source,
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| Error::ParseCaCert {
                path: cert_path.clone(),
                source,
            })?;
        Ok(Some(Self {
            issuer,
            cert_pem,
            key_pem,
        }))
    }

    /// Signs a certificate for the given DNS names and IPs; `client` adds client authentication
    /// (with the first DNS name as the common name), for the local control plane's admin user.
    pub fn issue(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        valid_days: i64,
        client: bool,
    ) -> Result<Issued> {
        let key = KeyPair::generate().map_err(crypto("generating a serving key"))?;
        let mut params = CertificateParams::new(dns_names.to_vec()).map_err(Error::InvalidName)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let common_name = dns_names
            .first()
            .map(String::as_str)
            .unwrap_or("scoped-secrets");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        set_validity(&mut params, valid_days);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(crypto("signing the serving certificate"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn set_validity(params: &mut CertificateParams, valid_days: i64) {
    // Backdated a little so that a clock skewed by a few minutes still accepts a fresh certificate.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(valid_days);
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// What `scoped-secrets certs` writes.
pub struct Written {
    pub dir: PathBuf,
    pub created_ca: bool,
    pub ca_bundle_base64: String,
}

/// Writes a serving certificate for `dns_names`/`ips` into `dir`, creating the CA there first unless
/// one exists. Keys are written with mode 0600.
pub fn write_serving_set(
    dir: &Path,
    dns_names: &[String],
    ips: &[IpAddr],
    ca_days: i64,
    serving_days: i64,
) -> Result<Written> {
    std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let (ca, created_ca) = match Authority::load(dir)? {
        Some(ca) => (ca, false),
        None => (Authority::generate("scoped-secrets CA", ca_days)?, true),
    };
    if created_ca {
        write_file(&dir.join(CA_CERT), &ca.cert_pem, false)?;
        write_file(&dir.join(CA_KEY), &ca.key_pem, true)?;
    }
    let issued = ca.issue(dns_names, ips, serving_days, false)?;
    // Key first, then certificate: a reloader that sees the new certificate finds its key already there.
    write_file(&dir.join(TLS_KEY), &issued.key_pem, true)?;
    write_file(&dir.join(TLS_CERT), &issued.cert_pem, false)?;
    Ok(Written {
        dir: dir.to_owned(),
        created_ca,
        ca_bundle_base64: base64_encode(ca.cert_pem.as_bytes()),
    })
}

/// Writes through a temporary file and a rename, so readers never see half a file. The temporary
/// file is named after its target (`tls.key.tmp`) and made anew: a stale one left by an
/// interrupted run is removed first, so a secret is never written into a file that someone else
/// made or that has wider permissions than `0600`.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write_error = |source| Error::Write {
        path: tmp.clone(),
        source,
    };
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(write_error(e)),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    });
    written.map_err(write_error)?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Rename {
        path: path.to_owned(),
        source,
    })
}

/// Standard base64 with padding, as the `caBundle` field and kubeconfig `*-data` fields expect.
pub fn base64_encode(bytes: &[u8]) -> String {
    use k8s_openapi::ByteString;
    // ByteString serializes as standard base64; reuse it instead of another dependency.
    serde_json::to_value(ByteString(bytes.to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_a_serving_certificate_under_a_reused_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["webhook.example.svc".to_owned()];
        let ips = vec![IpAddr::from([127, 0, 0, 1])];
        let first = write_serving_set(dir.path(), &names, &ips, 3650, 365).expect("first");
        assert!(first.created_ca);
        let ca_before = std::fs::read_to_string(dir.path().join(CA_CERT)).expect("ca");
        let cert_before = std::fs::read_to_string(dir.path().join(TLS_CERT)).expect("cert");
        let second = write_serving_set(dir.path(), &names, &ips, 3650, 365).expect("second");
        assert!(!second.created_ca, "an existing CA is reused");
        assert_eq!(first.ca_bundle_base64, second.ca_bundle_base64);
        assert_eq!(
            ca_before,
            std::fs::read_to_string(dir.path().join(CA_CERT)).expect("ca")
        );
        assert_ne!(
            cert_before,
            std::fs::read_to_string(dir.path().join(TLS_CERT)).expect("cert")
        );
        assert!(
            first.ca_bundle_base64.starts_with("LS0tLS1CRUdJTi"),
            "base64 of a PEM"
        );
    }

    #[test]
    fn a_key_is_never_written_into_a_stale_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join(TLS_KEY);
        // Left by an interrupted run, or planted, readable by everyone.
        let stale = dir.path().join(format!("{TLS_KEY}.tmp"));
        std::fs::write(&stale, "stale").expect("write");
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_file(&key, "PRIVATE KEY", true).expect("written");
        let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        assert_eq!(std::fs::read_to_string(&key).expect("read"), "PRIVATE KEY");
        assert!(!stale.exists(), "the temporary file was renamed into place");
    }

    #[test]
    fn lifetimes_outside_a_hundred_years_are_refused_by_the_command_line() {
        use clap::Parser;
        for days in ["0", "-1", "4000000"] {
            for flag in ["--days", "--ca-days"] {
                let parsed =
                    crate::cli::Cli::try_parse_from(["scoped-secrets", "certs", flag, days]);
                assert!(parsed.is_err(), "{flag} {days} was taken");
            }
        }
        let longest = crate::cli::MAX_CERT_DAYS.to_string();
        assert!(
            crate::cli::Cli::try_parse_from(["scoped-secrets", "certs", "--days", &longest])
                .is_ok()
        );
        // The longest lifetime allowed still makes a certificate (no overflow).
        let dir = tempfile::tempdir().expect("tempdir");
        let most = crate::cli::MAX_CERT_DAYS;
        write_serving_set(dir.path(), &[], &[], most, most).expect("a hundred years");
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").expect("write");
        let under_a_file = file.join("certs");
        assert!(matches!(
            write_serving_set(&under_a_file, &[], &[], 1, 1),
            Err(Error::CreateDir { path, .. }) if path == under_a_file
        ));
    }
}
