//! Webhook clients authenticated by certificate (`--client-ca-file`, `--allowed-client-names`), end
//! to end: a control plane of its own whose apiserver presents a client certificate to webhooks
//! (its `--admission-control-config-file`), and the product requiring one. The apiserver's reviews
//! are answered; a client on the webhook port without a certificate, with one of another CA, or
//! with one of the CA under a name not allowed gets no answer, and each refusal is counted by
//! reason; a CA rotated under a running server holds without a restart. A test binary of its own:
//! the apiserver's flags are its own.

use scoped_secrets::certs::{self, Authority};
use scoped_secrets::{endpoints, keys};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use testbed::control_plane::{ControlPlane, Options};
use testbed::env::{ExtraServer, REPO, serve_args, start_server};
use testbed::kubectl::{fails, kubectl_stdin, kubectl_with, ok};
use testbed::registration;
use testbed::wait::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The common name of the certificate the apiserver presents to webhooks.
const APISERVER_CLIENT: &str = "kube-apiserver-webhook-client";
const GUARD: &str = "secret-guard.scoped-secrets.io";

struct Bed {
    _control_plane: ControlPlane,
    server: ExtraServer,
    kubeconfig: PathBuf,
    /// The product's own credentials, for servers a test starts.
    sa_kubeconfig: PathBuf,
    dir: PathBuf,
    /// The CA of the webhook's serving certificate (PEM).
    serving_ca: String,
    /// The CA of the webhook's clients.
    client_ca: Authority,
}

fn bed() -> &'static Bed {
    static BED: OnceLock<Bed> = OnceLock::new();
    BED.get_or_init(|| start().unwrap_or_else(|e| panic!("starting the test bed: {e:#}")))
}

fn start() -> anyhow::Result<Bed> {
    let dir = Path::new(REPO).join(format!("target/e2e/client-auth-{}", std::process::id()));
    let clients_dir = dir.join("clients");
    std::fs::create_dir_all(&clients_dir)?;
    let client_ca = Authority::generate("webhook clients CA", 1)?;
    let client_ca_file = clients_dir.join("ca.crt");
    certs::write_file(&client_ca_file, &client_ca.cert_pem, false)?;
    let apiserver = client_ca.issue(&[APISERVER_CLIENT.to_owned()], &[], 1, true)?;
    let (cert_file, key_file) = (
        clients_dir.join("client.crt"),
        clients_dir.join("client.key"),
    );
    certs::write_file(&cert_file, &apiserver.cert_pem, false)?;
    certs::write_file(&key_file, &apiserver.key_pem, true)?;

    // The apiserver's credentials for webhooks: `*` matches every webhook's host.
    let webhook_kubeconfig = clients_dir.join("webhook-kubeconfig");
    certs::write_file(
        &webhook_kubeconfig,
        &format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: '*'\n  user:\n    client-certificate: {}\n    client-key: {}\n",
            cert_file.display(),
            key_file.display()
        ),
        true,
    )?;
    let plugin = |name: &str| {
        format!(
            "- name: {name}\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            webhook_kubeconfig.display()
        )
    };
    let admission_config = clients_dir.join("admission.yaml");
    certs::write_file(
        &admission_config,
        &format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{}{}",
            plugin("ValidatingAdmissionWebhook"),
            plugin("MutatingAdmissionWebhook")
        ),
        false,
    )?;

    let mut options = Options::new(dir.join("control-plane")).without_controller_manager();
    options.apiserver_args = vec![format!(
        "--admission-control-config-file={}",
        admission_config.display()
    )];
    let control_plane = ControlPlane::start_blocking(&options)?;
    let kubeconfig = control_plane.kubeconfig.clone();
    registration::apply_prerequisites(Path::new(REPO), &kubeconfig)?;

    let serving_dir = dir.join("certs");
    let written = certs::write_serving_set(
        &serving_dir,
        &["localhost".to_owned()],
        &["127.0.0.1".parse()?],
        1,
        1,
    )?;
    let mut args = serve_args(&serving_dir);
    args.client_ca_file = Some(client_ca_file);
    args.allowed_client_names = vec![APISERVER_CLIENT.to_owned()];
    let server = start_server(args, control_plane.sa_kubeconfig.clone())?;
    let manifests = registration::render_kustomization(&Path::new(REPO).join("deploy/base"))?;
    let configurations = registration::local_webhook_configurations(
        &manifests,
        &format!("https://{}", server.webhook_addr),
        &written.ca_bundle_base64,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = testbed::control_plane::client(&kubeconfig).await?;
        registration::apply(&client, &configurations).await
    })?;
    Ok(Bed {
        sa_kubeconfig: control_plane.sa_kubeconfig.clone(),
        _control_plane: control_plane,
        server,
        kubeconfig,
        dir,
        serving_ca: std::fs::read_to_string(serving_dir.join(certs::CA_CERT))?,
        client_ca,
    })
}

#[test]
fn the_apiservers_reviews_are_answered_over_mutual_tls() {
    let bed = bed();
    let ns = "mutual-tls";
    ok(kubectl_with(&bed.kubeconfig, &["create", "namespace", ns]));
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: forged\n  namespace: {ns}\n  annotations: {{{}: \"true\"}}\n",
        keys::COPY_ANNOTATION
    );
    // The webhook's own denial: the apiserver reached it with its client certificate.
    let err = fails(kubectl_stdin(
        &bed.kubeconfig,
        &["apply", "--dry-run=server", "-f", "-"],
        &yaml,
    ));
    assert!(
        err.contains(&format!(
            "admission webhook \"{GUARD}\" denied the request: only the scoped-secrets reconciler \
             may set copy markers"
        )),
        "{err}"
    );
    // And an ordinary secret is admitted (the mutating entry is called too).
    ok(kubectl_with(
        &bed.kubeconfig,
        &[
            "create",
            "secret",
            "generic",
            "plain",
            "-n",
            ns,
            "--from-literal=key=dog",
        ],
    ));
}

#[test]
fn clients_without_an_allowed_certificate_get_no_answer_and_are_counted() {
    let bed = bed();
    let metrics = &bed.server.metrics;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let post = |identity: Option<&certs::Issued>| {
        runtime.block_on(post_review(
            bed.server.webhook_addr,
            &bed.serving_ca,
            identity,
        ))
    };

    // The allowed certificate is answered, so what follows is refused for its certificate alone.
    let allowed = bed
        .client_ca
        .issue(&[APISERVER_CLIENT.to_owned()], &[], 1, true)
        .expect("issued");
    let answer = post(Some(&allowed)).expect("the allowed client is answered");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"uid\":\"direct\""),
        "{answer}"
    );

    let certificate_refusals = metrics.connections_refused("client_certificate");
    let err = post(None).expect_err("a client without a certificate gets no answer");
    assert!(err.contains("CertificateRequired"), "{err}");
    wait_counted(metrics, "client_certificate", certificate_refusals + 1);

    let stranger = Authority::generate("another CA", 1).expect("CA");
    let foreign = stranger
        .issue(&[APISERVER_CLIENT.to_owned()], &[], 1, true)
        .expect("issued");
    let err = post(Some(&foreign)).expect_err("a certificate of another CA gets no answer");
    assert!(!err.starts_with("HTTP"), "{err}");
    wait_counted(metrics, "client_certificate", certificate_refusals + 2);

    let name_refusals = metrics.connections_refused("client_name");
    let kubelet = bed
        .client_ca
        .issue(&["kubelet".to_owned()], &[], 1, true)
        .expect("issued");
    let err = post(Some(&kubelet)).expect_err("a name not allowed gets no answer");
    assert!(!err.starts_with("HTTP"), "{err}");
    wait_counted(metrics, "client_name", name_refusals + 1);

    // The server is unharmed.
    post(Some(&allowed)).expect("the allowed client is still answered");
}

/// The client CA rotated under a running server, as an operator does it: the new CA added to the
/// bundle, clients moved to it, the old CA removed. Each step holds for new connections within
/// seconds and without a restart. A server of its own, so that the apiserver's client (of the bed's
/// CA) is never refused meanwhile.
#[test]
fn a_rotated_client_ca_is_trusted_and_the_removed_one_refused_without_a_restart() {
    let bed = bed();
    let dir = bed.dir.join("rotation");
    let (old, new) = (
        Authority::generate("old clients CA", 1).expect("CA"),
        Authority::generate("new clients CA", 1).expect("CA"),
    );
    let ca_file = dir.join("clients/ca.crt");
    std::fs::create_dir_all(dir.join("clients")).expect("directory");
    certs::write_file(&ca_file, &old.cert_pem, false).expect("written");
    let serving_dir = dir.join("certs");
    certs::write_serving_set(
        &serving_dir,
        &["localhost".to_owned()],
        &["127.0.0.1".parse().expect("address")],
        1,
        1,
    )
    .expect("serving certificate");
    let mut args = serve_args(&serving_dir);
    args.client_ca_file = Some(ca_file.clone());
    let server = start_server(args, bed.sa_kubeconfig.clone()).expect("server");
    let serving_ca = std::fs::read_to_string(serving_dir.join(certs::CA_CERT)).expect("serving CA");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let answered = |client: &certs::Issued| {
        runtime
            .block_on(post_review(server.webhook_addr, &serving_ca, Some(client)))
            .is_ok_and(|answer| answer.starts_with("HTTP/1.1 200"))
    };
    let issue = |ca: &Authority| {
        ca.issue(&[APISERVER_CLIENT.to_owned()], &[], 1, true)
            .expect("issued")
    };
    let (old_client, new_client) = (issue(&old), issue(&new));
    assert!(
        answered(&old_client),
        "the old CA's client before the rotation"
    );
    assert!(
        !answered(&new_client),
        "the new CA's client before the rotation"
    );

    let bundle = format!("{}{}", old.cert_pem, new.cert_pem);
    certs::write_file(&ca_file, &bundle, false).expect("written");
    // Past the poll interval: the file watch should see it at once, the poll at the latest.
    let within = Duration::from_secs(15);
    eventually("the new CA's client answered", within, || {
        answered(&new_client).then_some(())
    });
    assert!(answered(&old_client), "the old CA is still in the bundle");

    certs::write_file(&ca_file, &new.cert_pem, false).expect("written");
    eventually("the old CA's client refused", within, || {
        (!answered(&old_client)).then_some(())
    });
    assert!(
        answered(&new_client),
        "the new CA's client after the rotation"
    );
}

/// Waits (up to 10 s) until `reason` has been counted `expected` times; the count is written by
/// the connection's task, which may end after the client has seen the connection close.
fn wait_counted(
    metrics: &scoped_secrets::metrics::WebhookMetrics,
    reason: &'static str,
    expected: u64,
) {
    eventually(
        &format!("{expected} {reason} refusals"),
        Duration::from_secs(10),
        || (metrics.connections_refused(reason) >= expected).then_some(()),
    );
    assert_eq!(metrics.connections_refused(reason), expected, "{reason}");
}

/// Posts a review straight to the webhook as a client presenting `identity` (none: no
/// certificate); the HTTP response, or why there was none.
async fn post_review(
    addr: SocketAddr,
    serving_ca: &str,
    identity: Option<&certs::Issued>,
) -> Result<String, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(serving_ca.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("a root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match identity {
        Some(issued) => {
            let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("certificate PEM");
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "direct",
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": "probe",
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "mallory"},
            "object": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "probe"}},
            "dryRun": true
        }
    })
    .to_string();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e:?}"))?;
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            endpoints::SECRET_NAMES,
            body.len()
        );
        // With TLS 1.3 the client's handshake ends before the server has checked its
        // certificate: a refusal shows on the write or the read.
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e:?}"))?;
        let mut answer = Vec::new();
        let read = tls.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer).into_owned();
        match read {
            Ok(_) if text.starts_with("HTTP/") => Ok(text),
            Ok(_) => Err(format!("closed without an answer: {text:?}")),
            Err(e) => Err(format!("read: {e:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}
