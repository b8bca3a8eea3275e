//! The webhook server over real TLS, with certificates made in the test and the router on a world
//! built in the test (no cluster needed): limits, bad input, TLS, certificate rotation under traffic,
//! and graceful shutdown.

use scoped_secrets::certs;
use scoped_secrets::endpoints;
use scoped_secrets::index::Index;
use scoped_secrets::metrics::WebhookMetrics;
use scoped_secrets::policy::Config;
use scoped_secrets::webhook::handler::{self, AppState};
use scoped_secrets::webhook::header_deadline::EVICTABLE_AFTER;
use scoped_secrets::webhook::limits::{MAX_BODY_BYTES, ORDINARY_BODY_BYTES, ReviewLimits};
use scoped_secrets::webhook::server::{self, Limits, MAX_READ_BUFFER, Server};
use scoped_secrets::webhook::tls::{self, ReloadingCert};
use scoped_secrets::world::{NamespaceState, SecretMeta, World};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct TestServer {
    addr: SocketAddr,
    metrics: WebhookMetrics,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<()>,
}

impl TestServer {
    async fn start() -> Self {
        Self::start_with(ReviewLimits::default(), Limits::default()).await
    }

    async fn start_with(review_limits: ReviewLimits, limits: Limits) -> Self {
        Self::start_on(review_limits, limits, World::default(), None).await
    }

    /// A server with room for `n` connections at once, whatever address they come from (all the
    /// tests' come from one).
    async fn with_max_connections(n: usize) -> Self {
        let limits = Limits::with_max_connections(n, Some(usize::MAX));
        Self::start_with(ReviewLimits::default(), limits).await
    }

    /// A server deciding in `world`, with `client` for the look-ups reviews need.
    async fn start_on(
        review_limits: ReviewLimits,
        limits: Limits,
        world: World,
        client: Option<kube::Client>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        issue(dir.path());
        let cert = ReloadingCert::load(
            &dir.path().join(certs::TLS_CERT),
            &dir.path().join(certs::TLS_KEY),
        )
        .expect("certificate loads");
        tokio::spawn(cert.clone().watch());
        let limits = Limits {
            drain_timeout: Duration::from_secs(10),
            ..limits
        };
        let server = Server::bind(
            "127.0.0.1:0".parse().expect("addr"),
            tls::server_config(cert, None).expect("tls"),
            limits,
        )
        .await
        .expect("binds");
        let metrics = WebhookMetrics::register(&mut Default::default());
        let server = server.with_metrics(metrics.clone());
        let addr = server.local_addr().expect("addr");
        let app = handler::router(AppState {
            index: Arc::new(Index::new(world)),
            config: Arc::new(Config::default()),
            metrics: metrics.clone(),
            client,
            limits: Arc::new(review_limits),
            placement: None,
            own_cluster: None,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(app, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            metrics,
            dir,
            stop: Some(stop),
            served,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    fn ca(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join(certs::CA_CERT)).expect("ca")
    }

    fn client(&self) -> reqwest::Client {
        client_trusting(&self.ca(), true)
    }

    /// Waits until `path` has `n` reviews in flight (being read or answered).
    async fn until_in_flight(&self, path: &'static str, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.metrics.in_flight(path) < n {
            assert!(
                Instant::now() < deadline,
                "the request never reached the handler"
            );
            tokio::task::yield_now().await;
        }
    }

    /// Waits until at most `n` requests to `path` are in the handler.
    async fn until_in_flight_at_most(&self, path: &'static str, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.metrics.in_flight(path) > n {
            assert!(Instant::now() < deadline, "the requests never ended");
            tokio::task::yield_now().await;
        }
    }

    /// Posts `body` to `path` with a client that trusts the server's CA.
    async fn post(&self, path: &str, body: &Value) -> reqwest::Result<reqwest::Response> {
        post(&self.client(), &self.url(path), body).await
    }
}

/// Issues (or re-issues, under the same CA) the serving certificate in `dir`.
fn issue(dir: &Path) -> PathBuf {
    certs::write_serving_set(
        dir,
        &["localhost".to_owned()],
        &["127.0.0.1".parse().expect("ip")],
        1,
        1,
    )
    .expect("certificates");
    dir.join(certs::TLS_CERT)
}

fn client_trusting(ca_pem: &[u8], keep_alive: bool) -> reqwest::Client {
    client_waiting(ca_pem, keep_alive, Duration::from_secs(10))
}

/// A client that trusts the server's CA and gives each request `timeout`.
fn client_waiting(ca_pem: &[u8], keep_alive: bool, timeout: Duration) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("ca parses"))
        .http1_only()
        .timeout(timeout);
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().expect("client")
}

fn review(uid: &str, name: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": name,
            "namespace": "team-a",
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": "team-a"},
                "type": "Opaque",
                "data": {"password": "czNjcmV0"}
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// `review(uid, name)` made larger by an annotation that holds `padding`.
fn padded_review(uid: &str, name: &str, padding: String) -> Value {
    let mut body = review(uid, name);
    body["request"]["object"]["metadata"]["annotations"] = json!({"padding": padding});
    body
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client.post(url).json(body).send().await
}

/// Posts `body` and returns the AdmissionReview answering it.
async fn answer(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    answer_bytes(client, url, serde_json::to_vec(body).expect("json")).await
}

/// Posts an encoded review and returns the AdmissionReview answering it.
async fn answer_bytes(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Value {
    post_bytes(client, url, body)
        .await
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn answers_a_review_over_tls_with_its_uid() {
    let server = TestServer::start().await;
    let answer: Value = server
        .post(endpoints::SECRET_NAMES, &review("uid-1", "db"))
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "uid-1");
    assert_eq!(answer["response"]["allowed"], true);
}

/// The status a fresh server answers a review padded with `padding` with (the only heavy test
/// running meanwhile).
async fn status_of_padded_review(uid: &str, name: &str, padding: String) -> reqwest::StatusCode {
    let _heavy = HEAVY.lock().await;
    let server = TestServer::start().await;
    server
        .post(endpoints::SECRET_NAMES, &padded_review(uid, name, padding))
        .await
        .expect("an answer, not a dropped connection")
        .status()
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let padding = "x".repeat(handler::MAX_BODY_BYTES + 1024);
    assert_eq!(
        status_of_padded_review("uid-big", "big", padding).await,
        413
    );
}

#[tokio::test]
async fn bodies_up_to_the_limit_are_reviewed() {
    // The apiserver may send ~3 MiB for each of object and oldObject.
    let padding = "y".repeat(6 * 1024 * 1024);
    assert_eq!(status_of_padded_review("uid-6m", "six", padding).await, 200);
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_415_or_400_with_a_clear_error() {
    let server = TestServer::start().await;
    let client = server.client();
    let url = server.url(endpoints::SECRET_NAMES);
    let wrong_type = post_as(&client, &url, "text/plain", "{}").await;
    assert_eq!(wrong_type.status(), 415);
    assert!(
        wrong_type
            .text()
            .await
            .expect("text")
            .contains("application/json")
    );

    let garbage = post_as(&client, &url, "application/json", "{not json").await;
    assert_eq!(garbage.status(), 400);
    let text = garbage.text().await.expect("text");
    assert!(text.contains("not a valid AdmissionReview"), "{text}");

    // JSON with a readable uid but an object that is not a Secret: answered as a review, code 400
    // on a guard's entry...
    let mut odd = review("uid-odd", "odd");
    odd["request"]["object"]["data"] = json!("not a map");
    let guard = server.url(endpoints::SECRET_GUARD);
    let denied: Value = answer(&client, &guard, &odd).await;
    assert_eq!(denied["response"]["uid"], "uid-odd");
    assert_eq!(denied["response"]["allowed"], false);
    assert_eq!(denied["response"]["status"]["code"], 400);
    // ...and admitted with a warning on an entry that fails open, as its outage would admit it.
    let admitted: Value = answer(&client, &url, &odd).await;
    assert_eq!(admitted["response"]["uid"], "uid-odd");
    assert_eq!(admitted["response"]["allowed"], true, "{admitted}");
    let warning = admitted["response"]["warnings"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        warning.starts_with("scoped-secrets could not review this request")
            && warning.contains("request.object.data"),
        "{admitted}"
    );
}

#[tokio::test]
async fn wrong_tls_is_refused_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    // Plain HTTP on the TLS port.
    let mut plain = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    plain
        .write_all(b"POST /validate/secret-names HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "plain HTTP must not be served"
    );
    // A client that does not trust our CA.
    let stranger = tempfile::tempdir().expect("tempdir");
    issue(stranger.path());
    let untrusting = client_trusting(
        &std::fs::read(stranger.path().join(certs::CA_CERT)).expect("ca"),
        true,
    );
    assert!(
        post(
            &untrusting,
            &server.url(endpoints::SECRET_NAMES),
            &review("u", "n")
        )
        .await
        .is_err()
    );
    // The server is unharmed.
    let ok = server
        .post(endpoints::SECRET_NAMES, &review("u2", "n"))
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
}

/// The DER of the certificate a fresh TLS handshake is served.
async fn served_certificate(addr: SocketAddr, ca_pem: &[u8]) -> Vec<u8> {
    let tls = raw_tls(addr, ca_pem).await;
    tls.get_ref().1.peer_certificates().expect("peer certs")[0].to_vec()
}

/// A TLS client (ring, safe default versions) that trusts only `ca_pem`.
fn tls_connector(ca_pem: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("ca pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn first_der(pem_path: &Path) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(pem_path)
        .expect("pem")
        .next()
        .expect("one cert")
        .expect("valid")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_traffic_fails_no_review() {
    // Handshakes as fast as this machine makes them, all from 127.0.0.1 (two workers open a
    // connection per review, the probe below spins): the per-address handshake rate is what
    // another test shows, not this one.
    let limits = Limits {
        handshakes_per_second_per_address: 0,
        ..Limits::default()
    };
    let server = TestServer::start_with(ReviewLimits::default(), limits).await;
    let (ok, failed, running) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(true)),
    );
    let mut workers = Vec::new();
    for worker in 0..4 {
        // Half the workers keep connections alive, half make a new handshake per request.
        let client = client_trusting(&server.ca(), worker % 2 == 0);
        let url = server.url(endpoints::SECRET_NAMES);
        let (ok, failed, running) = (ok.clone(), failed.clone(), running.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while running.load(Ordering::Relaxed) {
                n += 1;
                let uid = format!("w{worker}-{n}");
                match post(&client, &url, &review(&uid, "db")).await {
                    Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                        Ok(v) if v["response"]["uid"] == uid.as_str() => {
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    },
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for _ in 0..3 {
        let before = ok.load(Ordering::Relaxed);
        let cert_path = issue(server.dir.path());
        let expected = first_der(&cert_path);
        let deadline = Instant::now() + Duration::from_secs(30);
        while served_certificate(server.addr, &server.ca()).await != expected {
            assert!(
                Instant::now() < deadline,
                "the new certificate was never served"
            );
            tokio::task::yield_now().await;
        }
        // Traffic went on across the rotation.
        let deadline = Instant::now() + Duration::from_secs(10);
        while ok.load(Ordering::Relaxed) < before + 20 {
            assert!(
                Instant::now() < deadline,
                "traffic stalled after a rotation"
            );
            tokio::task::yield_now().await;
        }
    }
    running.store(false, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker");
    }
    assert!(ok.load(Ordering::Relaxed) >= 60);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "reviews failed during rotation"
    );
}

#[tokio::test]
async fn shutdown_closes_connections_between_reviews_then_drains_in_flight_ones() {
    let mut server = TestServer::start().await;
    // Two keep-alive connections, each after one answered review: one the client goes on using,
    // one it leaves idle.
    let (mut used_read, mut used_write) = answered_once(&server, "used").await;
    let (mut idle_read, _idle_write) = answered_once(&server, "idle").await;

    // An in-flight review: headers and half the body sent.
    let (mut busy_read, mut busy_write, body) = review_head_sent(&server, "in-flight", "b").await;
    let (half, rest) = body.split_at(body.len() / 2);
    busy_write.write_all(half).await.expect("write");
    busy_write.flush().await.expect("flush");
    // Wait until the server is reading this request, so it is in flight when shutdown begins.
    server.until_in_flight(endpoints::SECRET_NAMES, 1).await;

    let _ = server.stop.take().map(|s| s.send(()));
    let stopped = Instant::now();
    // Within the drain window a review on a kept-alive connection is still answered, and the
    // answer tells the client to close; then the server closes it (a client that reuses a
    // connection the server closes under it loses the review).
    let body = serde_json::to_vec(&review("used-again", "c")).expect("json");
    used_write
        .write_all(&request_head(body.len()))
        .await
        .expect("write");
    used_write.write_all(&body).await.expect("write");
    let answer = read_response(&mut used_read).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("used-again"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    assert_closed(&mut used_read, "the connection whose answer said close").await;
    // A connection opened within the window is served the same way.
    let (mut late_read, _late_write) = answered_once(&server, "late").await;
    assert_closed(
        &mut late_read,
        "the connection opened during the drain window",
    )
    .await;
    assert!(
        stopped.elapsed() < server::DEFAULT_DRAIN_WINDOW,
        "the steps above took the whole drain window: they prove nothing"
    );

    // After the window the idle connection is closed by the server.
    assert_closed(&mut idle_read, "the idle keep-alive connection").await;
    // The in-flight review still gets its answer.
    busy_write
        .write_all(rest)
        .await
        .expect("the in-flight connection stays open");
    let answer = read_response(&mut busy_read).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("in-flight"), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), &mut server.served)
        .await
        .expect("the server finished draining")
        .expect("serve task");
    // And nothing new is accepted.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn the_drain_window_ends_once_no_connection_is_open() {
    let mut server = TestServer::start().await;
    // A connection used once, then closed by the client before the stop.
    let (read, write) = answered_once(&server, "gone").await;
    drop(read.unsplit(write));

    let _ = server.stop.take().map(|s| s.send(()));
    // With nothing left to close, the server stops long before the (default) window ends.
    let stopped = tokio::time::timeout(server::DEFAULT_DRAIN_WINDOW / 2, &mut server.served).await;
    assert!(
        stopped.is_ok(),
        "the server waited out the drain window with no connection open"
    );
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

/// A new TLS connection on which one review has been answered and kept alive (before shutdown)
/// or closed (during the drain window).
async fn answered_once(server: &TestServer, uid: &str) -> (RawRead, RawWrite) {
    let (mut read, mut write, body) = review_head_sent(server, uid, "a").await;
    write.write_all(&body).await.expect("write");
    let answer = read_response(&mut read).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(uid), "{answer}");
    (read, write)
}

/// Asserts that the server closes `read`'s connection (within the drain window and 5 s).
async fn assert_closed(read: &mut RawRead, what: &str) {
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        server::DEFAULT_DRAIN_WINDOW + Duration::from_secs(5),
        read.read_to_end(&mut rest),
    )
    .await;
    assert!(closed.is_ok(), "{what} was not closed");
    assert!(
        rest.is_empty(),
        "{what} sent more: {}",
        String::from_utf8_lossy(&rest)
    );
}

type RawRead = tokio::io::ReadHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
type RawWrite = tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A new TLS connection to the server on which the head of a request to review the secret `name`
/// is sent; with the body, which is the caller's to send (or not).
async fn review_head_sent(
    server: &TestServer,
    uid: &str,
    name: &str,
) -> (RawRead, RawWrite, Vec<u8>) {
    let stream = raw_tls(server.addr, &server.ca()).await;
    let (read, mut write) = tokio::io::split(stream);
    let body = serde_json::to_vec(&review(uid, name)).expect("json");
    write
        .write_all(&request_head(body.len()))
        .await
        .expect("write");
    (read, write, body)
}

fn request_head(len: usize) -> Vec<u8> {
    request_head_to("/validate/secret-names", len)
}

fn request_head_to(path: &str, len: usize) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes()
}

async fn raw_tls(
    addr: SocketAddr,
    ca_pem: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tls_connector(ca_pem)
        .connect(name, tcp)
        .await
        .expect("handshake")
}

/// Reads one HTTP/1.1 response with a Content-Length body.
async fn read_response(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let response = tokio::time::timeout(Duration::from_secs(10), try_read_response(stream));
    let response = response.await.expect("response in time");
    response.unwrap_or_else(|partial| panic!("connection closed mid-response: {partial}"))
}

/// One HTTP/1.1 response with a Content-Length body, or (the connection closed or failed first)
/// what came of it.
async fn try_read_response(stream: &mut (impl AsyncReadExt + Unpin)) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Ok(text);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Err(text),
        }
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_after_the_deadline() {
    let server = TestServer::start().await;
    let (mut read, mut write, body) = review_head_sent(&server, "slow", "s").await;
    write
        .write_all(&body[..body.len() / 2])
        .await
        .expect("write");
    write.flush().await.expect("flush");
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = handler::BODY_READ_TIMEOUT + Duration::from_secs(10);
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = tokio::time::timeout(deadline, read.read(&mut chunk))
            .await
            .expect("an answer before the deadline")
            .expect("read");
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= handler::BODY_READ_TIMEOUT - Duration::from_secs(1));
}

/// The server's header-read and idle timeouts in the tests below: short, so that they are quick.
const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(500);
const IDLE_TIMEOUT: Duration = Duration::from_millis(3000);

async fn server_with_header_read_timeout() -> TestServer {
    let limits = Limits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        idle_timeout: IDLE_TIMEOUT,
        ..Limits::default()
    };
    TestServer::start_with(ReviewLimits::default(), limits).await
}

/// Reads until the server closes the connection; how long that took. Fails if it answers
/// anything, or keeps the connection open well past `within`.
async fn closed_without_answer(
    read: &mut (impl AsyncReadExt + Unpin),
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(within, read.read(&mut chunk)).await {
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!(
            "the server answered instead of closing: {}",
            String::from_utf8_lossy(&chunk[..n])
        ),
        Err(_) => panic!("the connection was still open after {within:?}"),
    }
}

/// Sends a review of uid `uid` on an open connection and reads its answer (head and body).
async fn reviewed_on(read: &mut RawRead, write: &mut RawWrite, uid: &str) -> String {
    let body = serde_json::to_vec(&review(uid, "k")).expect("json");
    write
        .write_all(&request_head(body.len()))
        .await
        .expect("write");
    write.write_all(&body).await.expect("write");
    write.flush().await.expect("flush");
    read_response(read).await
}

#[tokio::test]
async fn a_request_head_past_the_read_buffer_gets_431_and_others_are_served() {
    // Each connection holds at most MAX_READ_BUFFER of a head: 256 of them with hyper's default
    // buffer, each holding an unfinished 400 KB head, took 100 MiB.
    let server = TestServer::start().await;
    let body = serde_json::to_vec(&review("padded", "a")).expect("json");
    let padding = "a".repeat(MAX_READ_BUFFER);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Padding: {padding}\r\nContent-Length: {}\r\n\r\n",
        endpoints::SECRET_NAMES,
        body.len()
    );
    let stream = raw_tls(server.addr, &server.ca()).await;
    let (mut read, mut write) = tokio::io::split(stream);
    // The server may answer and close before it has read all of it: a failed write is no failure.
    if write.write_all(head.as_bytes()).await.is_ok() {
        let _ = write.write_all(&body).await;
        let _ = write.flush().await;
    }
    let answer = read_response(&mut read).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A head under the limit (a bearer token's worth of headers) is served.
    let padding = "a".repeat(8 * 1024);
    let answered = server
        .client()
        .post(server.url(endpoints::SECRET_NAMES))
        .header("X-Padding", padding)
        .json(&review("after", "a"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(answered.status(), 200);
    let answered: Value = answered.json().await.expect("json");
    assert_eq!(answered["response"]["uid"], "after");
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_cut_off_at_the_header_read_timeout() {
    let server = server_with_header_read_timeout().await;
    let stream = raw_tls(server.addr, &server.ca()).await;
    let (mut read, mut write) = tokio::io::split(stream);
    // Half a head, then nothing (a slow-headers client).
    let head = request_head(100);
    write
        .write_all(&head[..head.len() / 2])
        .await
        .expect("write");
    write.flush().await.expect("flush");
    let waited = closed_without_answer(&mut read, HEADER_READ_TIMEOUT * 10).await;
    assert!(
        waited >= HEADER_READ_TIMEOUT - Duration::from_millis(50),
        "closed after {waited:?}, before the timeout"
    );
    // The server goes on serving others.
    let answer = answer(
        &server.client(),
        &server.url(endpoints::SECRET_NAMES),
        &review("after", "a"),
    )
    .await;
    assert_eq!(answer["response"]["uid"], "after");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout_after_its_last_answer() {
    // Not at the header timeout: the apiserver keeps idle connections 90 s, and a server that
    // closes one first races the review the apiserver is sending on it.
    let server = server_with_header_read_timeout().await;
    let stream = raw_tls(server.addr, &server.ca()).await;
    let (mut read, mut write) = tokio::io::split(stream);
    let answer = reviewed_on(&mut read, &mut write, "idle").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let waited = closed_without_answer(&mut read, IDLE_TIMEOUT * 4).await;
    assert!(
        waited >= IDLE_TIMEOUT - Duration::from_millis(50),
        "closed {waited:?} after the answer, before the idle timeout"
    );
}

#[tokio::test]
async fn a_head_begun_on_a_kept_alive_connection_is_cut_off_at_the_header_read_timeout() {
    // The idle allowance is for a connection that sends nothing; once the next head has begun,
    // it must complete within the header timeout, as on a new connection.
    let server = server_with_header_read_timeout().await;
    let stream = raw_tls(server.addr, &server.ca()).await;
    let (mut read, mut write) = tokio::io::split(stream);
    let answer = reviewed_on(&mut read, &mut write, "first").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Idle for longer than the header timeout (the server's timer is then set for the idle end),
    // then half a head: it is due a header timeout after its first byte, not at the idle end.
    let idled = tokio::time::timeout(HEADER_READ_TIMEOUT * 2, read.read(&mut [0u8; 1])).await;
    assert!(
        idled.is_err(),
        "the server closed or answered an idle connection early"
    );
    let head = request_head(100);
    write
        .write_all(&head[..head.len() / 2])
        .await
        .expect("write");
    write.flush().await.expect("flush");
    let waited = closed_without_answer(&mut read, IDLE_TIMEOUT * 4).await;
    assert!(
        waited >= HEADER_READ_TIMEOUT - Duration::from_millis(50),
        "closed {waited:?} after the head began, before the header timeout"
    );
    // Written 2 header timeouts after the answer, so the idle end is 4 header timeouts after that.
    assert!(
        waited < HEADER_READ_TIMEOUT * 3,
        "a trickled head was given the idle allowance ({waited:?})"
    );
}

#[tokio::test]
async fn a_connection_that_keeps_sending_reviews_outlives_the_header_read_timeout() {
    // The deadline runs from each answer, not from the connection's start: reviews sent one
    // after another over one connection for several timeouts are all answered on it.
    let server = server_with_header_read_timeout().await;
    let stream = raw_tls(server.addr, &server.ca()).await;
    let (mut read, mut write) = tokio::io::split(stream);
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < HEADER_READ_TIMEOUT * 4 {
        let answer = reviewed_on(&mut read, &mut write, &format!("r{answered}")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(&format!("\"r{answered}\"")), "{answer}");
        answered += 1;
    }
    assert!(
        answered >= 10,
        "only {answered} reviews in {:?}",
        started.elapsed()
    );
}

/// Tests that send MiB-sized bodies take this, so that the memory test measures its own reviews
/// only (the tests of one binary run in parallel, in one process).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A memory figure of this process in KiB: `VmRSS` (now) or `VmHWM` (peak since the last reset).
fn memory_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a memory figure")
}

/// Resets `VmHWM` to the current RSS (Linux `clear_refs` 5), so a peak can be measured.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
}

/// A review of `name` whose body is ~`MAX_BODY_BYTES - 64 KiB`, most of it millions of tiny array
/// elements at `place`: the shape that costs the most once decoded into a JSON tree.
fn hostile_review(uid: &str, place: &str) -> Vec<u8> {
    let mut body = review(uid, "bulky");
    let room = MAX_BODY_BYTES - 64 * 1024;
    // "0," is two bytes and one tree node of 32 bytes (plus the array's growth).
    let elements = room / 2;
    let marker = json!("HOSTILE");
    match place {
        "unknown" => body["request"]["object"]["padding"] = marker,
        "managedFields" => {
            body["request"]["object"]["metadata"]["managedFields"] = json!([{
                "manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:padding": marker}
            }])
        }
        "options" => body["request"]["options"]["padding"] = marker,
        other => panic!("no place {other}"),
    }
    let text = serde_json::to_string(&body).expect("json");
    let array = format!("[{}0]", "0,".repeat(elements - 1));
    text.replacen("\"HOSTILE\"", &array, 1).into_bytes()
}

/// A Secret review whose `data` is a map of a few hundred thousand tiny strings (valid, skipped).
fn hostile_data_review(uid: &str) -> Vec<u8> {
    let text = serde_json::to_string(&review(uid, "bulky")).expect("json");
    let room = MAX_BODY_BYTES - 64 * 1024;
    let mut entries = String::with_capacity(room);
    let mut i = 0u64;
    while entries.len() + 16 < room {
        entries.push_str(&format!("\"{i:x}\":\"\","));
        i += 1;
    }
    let data = format!("{{{entries}\"end\":\"\"}}");
    text.replacen("{\"password\":\"czNjcmV0\"}", &data, 1)
        .into_bytes()
}

async fn post_bytes(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::Response {
    post_as(client, url, "application/json", body).await
}

/// Posts `body` as it is, declared as `content_type`.
async fn post_as(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("an answer")
}

/// Bound on the growth of this process's peak RSS while the server answers one hostile review at
/// a time. It holds: the client's body (7 MiB) and reqwest's copy in flight, the server's buffer of
/// it (7 MiB), TLS and HTTP buffers (< 1 MiB), the decoded review (< 1 MiB: capped metadata), and
/// the allocator's slack. The old decoder needed ~250 MB for one such body; the control below
/// checks that these bodies still cost that much as a JSON tree.
const HOSTILE_GROWTH_BOUND_MIB: u64 = 64;

#[tokio::test]
async fn hostile_bodies_are_answered_in_bounded_memory() {
    let _heavy = HEAVY.lock().await;
    let server = TestServer::start().await;
    let client = server.client();
    let url = server.url("/validate/secret-names");
    let bodies = [
        hostile_review("h-unknown", "unknown"),
        hostile_review("h-managed", "managedFields"),
        hostile_review("h-options", "options"),
        hostile_data_review("h-data"),
    ];
    for body in &bodies {
        assert!(body.len() <= MAX_BODY_BYTES && body.len() > 6 * 1024 * 1024);
    }
    // Warm up connection, TLS and allocator with an ordinary review first.
    assert_eq!(
        post(&client, &url, &review("warm", "db"))
            .await
            .expect("request")
            .status(),
        200
    );
    let baseline = memory_kib("VmRSS");
    reset_peak();
    for (body, uid) in bodies
        .iter()
        .zip(["h-unknown", "h-managed", "h-options", "h-data"])
    {
        let answer: Value = post_bytes(&client, &url, body.clone())
            .await
            .json()
            .await
            .expect("a review answer");
        assert_eq!(answer["response"]["uid"], uid);
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
    }
    let growth_mib = memory_kib("VmHWM").saturating_sub(baseline) / 1024;
    println!("peak RSS growth serving 4 hostile reviews: {growth_mib} MiB");
    assert!(
        growth_mib <= HOSTILE_GROWTH_BOUND_MIB,
        "serving the hostile reviews grew the peak RSS by {growth_mib} MiB (bound {HOSTILE_GROWTH_BOUND_MIB} MiB)"
    );

    // Control: decoded as a JSON tree (the old decoder), one such body exceeds the bound, so the
    // assertion above can fail.
    let before = memory_kib("VmRSS");
    reset_peak();
    let tree: kube::core::admission::AdmissionReview<kube::core::DynamicObject> =
        serde_json::from_slice(&bodies[0]).expect("decodes as a tree");
    let tree_growth_mib = memory_kib("VmHWM").saturating_sub(before) / 1024;
    drop(tree);
    println!("peak RSS growth decoding one as a JSON tree: {tree_growth_mib} MiB");
    assert!(
        tree_growth_mib > HOSTILE_GROWTH_BOUND_MIB,
        "the control body costs only {tree_growth_mib} MiB as a tree"
    );
}

#[tokio::test]
async fn a_declared_length_over_the_limit_gets_413_before_the_body_is_sent() {
    let server = TestServer::start().await;
    let stream = raw_tls(server.addr, &server.ca()).await;
    let (mut read, mut write) = tokio::io::split(stream);
    write
        .write_all(&request_head(MAX_BODY_BYTES + 1))
        .await
        .expect("write");
    write.flush().await.expect("flush");
    // Not a byte of the body is sent: the answer must come from the headers alone.
    let answer = read_response(&mut read).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(&MAX_BODY_BYTES.to_string()), "{answer}");
    assert!(answer.contains("\"kind\":\"Status\""), "{answer}");
}

/// Holds a request being read: its headers and part of its body sent; returns the open connection.
async fn hold_in_flight(
    server: &TestServer,
    path: &'static str,
    declared: usize,
    expected_in_flight: i64,
) -> impl Sized {
    hold_in_flight_from(server, LOCAL_ONE, path, declared, expected_in_flight).await
}

/// [`hold_in_flight`] from the loopback address `local`.
async fn hold_in_flight_from(
    server: &TestServer,
    local: [u8; 4],
    path: &'static str,
    declared: usize,
    expected_in_flight: i64,
) -> (RawRead, RawWrite) {
    let (read, mut write) = tokio::io::split(raw_tls_from(server, local).await);
    write
        .write_all(&request_head_to(path, declared))
        .await
        .expect("write");
    write.write_all(b"{\"apiVersion\":").await.expect("write");
    write.flush().await.expect("flush");
    server.until_in_flight(path, expected_in_flight).await;
    (read, write)
}

/// A kube client whose apiserver never answers: its connections complete in the listener's
/// backlog and are never read (a stalled apiserver, as far as a client without a read timeout can
/// tell). The listener must be kept open.
async fn client_of_a_stalled_apiserver() -> (kube::Client, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let uri = format!("http://{}", listener.local_addr().expect("addr"));
    let config = kube::Config::new(uri.parse().expect("uri"));
    (kube::Client::try_from(config).expect("client"), listener)
}

/// A world where team-a already holds secret `taken`: a review creating it is denied (S1), and the
/// denial names the existing secret's type, which a review looks up from the apiserver.
fn world_where_team_a_holds_taken() -> World {
    let mut world = World::default();
    world.upsert_namespace("team-a".to_owned(), NamespaceState::default());
    let meta = SecretMeta {
        uid: "uid-taken".to_owned(),
        copy_of: None,
    };
    world.upsert_secret_meta("team-a", "taken", meta);
    world
}

/// From `client`, a review of secret `taken` (its look-up hangs: it holds its slot until the
/// look-ups' deadline), then reviews until one is refused with 429 (a review is counted in flight
/// from its headers on, so the first may still be on its way to its slot); the waiting review and
/// the refusal.
async fn waiting_then_refused(
    server: &TestServer,
    client: &reqwest::Client,
) -> (JoinHandle<Value>, reqwest::Response) {
    let url = server.url(endpoints::SECRET_NAMES);
    let waiting = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { answer(&client, &url, &review("waiting", "taken")).await }
    });
    server.until_in_flight(endpoints::SECRET_NAMES, 1).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = post(client, &url, &review("over", "db"))
            .await
            .expect("an answer");
        if r.status() == 429 {
            return (waiting, r);
        }
        assert!(Instant::now() < deadline, "never refused: {}", r.status());
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn reviews_past_the_in_flight_cap_get_429_while_it_is_full() {
    let (stalled, _backlog) = client_of_a_stalled_apiserver().await;
    let server = TestServer::start_on(
        ReviewLimits::new(1, MAX_BODY_BYTES),
        Limits::default(),
        world_where_team_a_holds_taken(),
        Some(stalled),
    )
    .await;
    // Its look-up hangs (until the look-ups' deadline): the one slot is taken while it waits.
    let client = server.client();
    let url = server.url(endpoints::SECRET_NAMES);
    let (waiting, refused) = waiting_then_refused(&server, &client).await;
    assert!(
        !waiting.is_finished(),
        "refused only while the slot was taken"
    );
    assert_eq!(refused.headers()["retry-after"], "1");
    let status: Value = refused.json().await.expect("a Status body");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 429);
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 reviews are in flight")),
        "{status}"
    );
    // The waiting review is decided without the look-up (S1 still denies), and its slot comes back.
    let decided = waiting.await.expect("the waiting review");
    assert_eq!(decided["response"]["allowed"], false, "{decided}");
    let after: Value = answer(&client, &url, &review("after", "db")).await;
    assert_eq!(after["response"]["allowed"], true, "{after}");
}

#[tokio::test]
async fn clients_trickling_bodies_take_no_review_slot() {
    // As many trickling clients as the server decides reviews at once, and more: each holds a
    // connection while its body has not arrived, but the apiserver's reviews are still decided.
    let server =
        TestServer::start_with(ReviewLimits::new(2, MAX_BODY_BYTES), Limits::default()).await;
    let mut held = Vec::new();
    for n in 1..=8 {
        held.push(hold_in_flight(&server, endpoints::SECRET_NAMES, 1000, n).await);
    }
    let client = server.client();
    let url = server.url(endpoints::SECRET_NAMES);
    for uid in ["first", "second", "third"] {
        let answered: Value = answer(&client, &url, &review(uid, "db")).await;
        assert_eq!(answered["response"]["uid"], uid);
        assert_eq!(answered["response"]["allowed"], true, "{answered}");
    }
    assert_eq!(server.metrics.in_flight(endpoints::SECRET_NAMES), 8);
    drop(held);
}

#[tokio::test]
async fn large_bodies_past_the_budget_get_429_while_small_reviews_pass() {
    let server =
        TestServer::start_with(ReviewLimits::new(8, MAX_BODY_BYTES), Limits::default()).await;
    // One large body being read takes the whole budget.
    let _held = hold_in_flight(&server, "/validate/secret-names", MAX_BODY_BYTES, 1).await;
    let client = server.client();
    let url = server.url("/validate/secret-names");
    let large = padded_review("large", "db", "z".repeat(ORDINARY_BODY_BYTES));
    let refused = post(&client, &url, &large).await.expect("an answer");
    assert_too_many(refused, "budget").await;
    let small: Value = answer(&client, &url, &review("small", "db")).await;
    assert_eq!(small["response"]["uid"], "small");
    assert_eq!(small["response"]["allowed"], true);
}

/// `refused` is a 429 whose `Status` body's message says `why`.
async fn assert_too_many(refused: reqwest::Response, why: &str) {
    assert_eq!(refused.status(), 429);
    let status: Value = refused.json().await.expect("a Status body");
    assert!(
        status["message"].as_str().is_some_and(|m| m.contains(why)),
        "{status}"
    );
}

#[tokio::test]
async fn one_address_holds_at_most_half_the_large_bodies_budget() {
    // Room for two bodies of the maximum size, one of them from any one address.
    let server =
        TestServer::start_with(ReviewLimits::new(8, 2 * MAX_BODY_BYTES), Limits::default()).await;
    // A client on 127.0.0.1 declares a body of the maximum size and sends none of it.
    let _held = hold_in_flight(&server, endpoints::SECRET_NAMES, MAX_BODY_BYTES, 1).await;
    let url = server.url(endpoints::SECRET_NAMES);
    let large = padded_review("large", "db", "z".repeat(ORDINARY_BODY_BYTES));
    // Another large body from that address is refused, though the budget has room for it.
    let refused = post(&server.client(), &url, &large)
        .await
        .expect("an answer");
    assert_too_many(refused, "from this address").await;
    // From another address (the apiserver's, say) it is read and answered.
    let elsewhere = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&server.ca()).expect("ca parses"))
        .http1_only()
        .local_address(Some("127.0.0.2".parse().expect("address")))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let answered: Value = answer(&elsewhere, &url, &large).await;
    assert_eq!(answered["response"]["uid"], "large");
    assert_eq!(answered["response"]["allowed"], true, "{answered}");
}

#[tokio::test]
async fn large_bodies_that_stall_make_room_in_the_budget_after_a_second() {
    // Two addresses each declare a body of the maximum size and send a few bytes of it: the whole
    // budget, held until the bodies' deadline (10 s). The apiserver's large review is not refused
    // for that long: once a stalled body has been awaited for a second, its connection is closed
    // for it.
    let server =
        TestServer::start_with(ReviewLimits::new(8, 2 * MAX_BODY_BYTES), Limits::default()).await;
    let mut stalled = Vec::new();
    for (n, from) in [(1, LOCAL_TWO), (2, LOCAL_THREE)] {
        let path = endpoints::SECRET_NAMES;
        stalled.push(hold_in_flight_from(&server, from, path, MAX_BODY_BYTES, n).await);
    }
    let url = server.url(endpoints::SECRET_NAMES);
    let large = padded_review("large", "db", "z".repeat(ORDINARY_BODY_BYTES));
    let apiserver = client_from(&server.ca(), LOCAL_ONE);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    let answered = loop {
        let r = post(&apiserver, &url, &large).await.expect("an answer");
        if r.status() == 200 {
            break r.json::<Value>().await.expect("a review");
        }
        assert_eq!(r.status(), 429, "refused for another reason");
        assert!(
            Instant::now() < deadline,
            "the budget was never made room in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(answered["response"]["allowed"], true, "{answered}");
    let stalled_reads = stalled.iter_mut().map(|(read, _)| read);
    let cut = one_closed(stalled_reads, "no stalled body was cut").await;
    assert!(cut.is_empty(), "cut with an answer: {cut:?}");
}

#[tokio::test]
async fn a_slow_large_body_of_an_address_within_its_share_is_not_cut_to_make_room() {
    let server =
        TestServer::start_with(ReviewLimits::new(8, 2 * MAX_BODY_BYTES), Limits::default()).await;
    // The apiserver (127.0.0.1) sends a 4 MiB review at about 1.25 MiB/s (a slow path): it takes
    // over three seconds to arrive, waiting for bytes again and again.
    let at_once = 0;
    let every = Duration::from_millis(50);
    let sender = send_slowly(&server, LOCAL_ONE, 4 * 1024 * 1024, at_once, every).await;
    server.until_in_flight(endpoints::SECRET_NAMES, 1).await;
    // Its bytes first awaited over a second ago (the scenario's time, not a synchronisation).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // 127.0.0.2 declares 7 MiB (room for it), 127.0.0.3 7 MiB more: the budget is full. The
    // apiserver holds 4 MiB, less than its fair share (14 MiB over three addresses), though its
    // body would make room enough: it is not cut, and 127.0.0.3 is refused.
    let path = endpoints::SECRET_NAMES;
    let _two = hold_in_flight_from(&server, LOCAL_TWO, path, MAX_BODY_BYTES, 2).await;
    refused_and_slow_body_answered(&server, LOCAL_THREE, sender).await;
}

#[tokio::test]
async fn a_large_body_on_course_is_not_cut_to_make_room_however_long_it_is_awaited() {
    let server =
        TestServer::start_with(ReviewLimits::new(8, 2 * MAX_BODY_BYTES), Limits::default()).await;
    // The apiserver (127.0.0.1) sends a 6 MiB review over a slow path: half at once, the rest at
    // about 2 MiB/s. It is awaited again and again for some 1.5 s, but at that pace it is whole
    // well within 2 s of waiting: on course.
    let every = Duration::from_millis(30);
    let sender = send_slowly(&server, LOCAL_ONE, 6 * 1024 * 1024, 3 * 1024 * 1024, every).await;
    let path = endpoints::SECRET_NAMES;
    server.until_in_flight(path, 1).await;
    let started = Instant::now();
    // 127.0.0.2 declares 7 MiB late (the scenario's time): the budget is full, and its body is
    // still within its grace when 127.0.0.3 declares 7 MiB, after the apiserver's has been
    // awaited for over a second. The apiserver holds more than its fair share (14 MiB over three
    // addresses) and than the newcomer, and its body would make room enough; but it is coming,
    // so it is not cut, and the newcomer is refused.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let _two = hold_in_flight_from(&server, LOCAL_TWO, path, MAX_BODY_BYTES, 2).await;
    tokio::time::sleep_until((started + Duration::from_millis(1200)).into()).await;
    refused_and_slow_body_answered(&server, LOCAL_THREE, sender).await;
}

#[tokio::test]
async fn a_client_replacing_its_stalled_large_bodies_within_a_second_still_makes_room() {
    // 127.0.0.2 holds the whole budget (one body of the maximum size) with a body it never
    // sends, and replaces it with a new one before its grace of a second has passed, as often as
    // it likes. Having dropped one behind its course, its next is judged after a short grace: the
    // apiserver's large review finds room within its search instead of a refusal.
    let server =
        TestServer::start_with(ReviewLimits::new(8, MAX_BODY_BYTES), Limits::default()).await;
    let path = endpoints::SECRET_NAMES;
    let first = hold_in_flight_from(&server, LOCAL_TWO, path, MAX_BODY_BYTES, 1).await;
    // Its next connection is ready before the first is dropped, as a quick client's would be.
    let next = raw_tls_from(&server, LOCAL_TWO).await;
    drop(first);
    server.until_in_flight_at_most(path, 0).await;
    let (mut next_read, mut next_write) = tokio::io::split(next);
    next_write
        .write_all(&request_head_to(path, MAX_BODY_BYTES))
        .await
        .expect("write");
    next_write
        .write_all(b"{\"apiVersion\":")
        .await
        .expect("write");
    next_write.flush().await.expect("flush");
    server.until_in_flight(path, 1).await;
    large_review_answered_by_cutting(&server, &mut next_read).await;
}

#[tokio::test]
async fn a_client_completing_its_stalled_large_bodies_late_still_makes_room() {
    // 127.0.0.2 holds the whole budget with a body of unknown length (chunked: the most a body
    // may have) and sends none of it; before its grace of a second it ends it empty and sends the
    // next such request on the same connection at once. Its body came whole, but behind its
    // course: its address is remembered, and its next body is judged after the short grace, so
    // the apiserver's large review finds room instead of a refusal.
    let server =
        TestServer::start_with(ReviewLimits::new(8, MAX_BODY_BYTES), Limits::default()).await;
    let path = endpoints::SECRET_NAMES;
    let (mut read, mut write) = tokio::io::split(raw_tls_from(&server, LOCAL_TWO).await);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await.expect("head");
    write.flush().await.expect("flush");
    server.until_in_flight(path, 1).await;
    // The client's own pace (within the grace), not a synchronisation.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ended_and_next = [b"0\r\n\r\n".as_slice(), head.as_bytes()].concat();
    write.write_all(&ended_and_next).await.expect("write");
    write.flush().await.expect("flush");
    let first = read_response(&mut read).await;
    assert!(first.starts_with("HTTP/1.1 "), "{first}");
    server.until_in_flight(path, 1).await;
    large_review_answered_by_cutting(&server, &mut read).await;
}

/// The apiserver's (127.0.0.1) large review, posted once, is answered and allowed, and the
/// stalled body on `stalled` was cut to make room for it, without an answer.
async fn large_review_answered_by_cutting(server: &TestServer, stalled: &mut RawRead) {
    let large = padded_review("large", "db", "z".repeat(ORDINARY_BODY_BYTES));
    let apiserver = client_from(&server.ca(), LOCAL_ONE);
    let answer = post(&apiserver, &server.url(endpoints::SECRET_NAMES), &large)
        .await
        .expect("an answer");
    assert_eq!(answer.status(), 200, "the apiserver's large review");
    let answered = answer.json::<Value>().await.expect("a review");
    assert_eq!(answered["response"]["allowed"], true, "{answered}");
    let cut = one_closed(std::iter::once(stalled), "the stalled body was not cut").await;
    assert!(cut.is_empty(), "answered instead of cut: {cut:?}");
}

/// Sends a review padded with `padding` bytes from `local` over a slow path: its head and its
/// first `at_once` bytes, then the rest in pieces of 64 KiB, one every `every`, the last not
/// before the sender returned is told to; its answer.
async fn send_slowly(
    server: &TestServer,
    local: [u8; 4],
    padding: usize,
    at_once: usize,
    every: Duration,
) -> (tokio::task::JoinHandle<String>, oneshot::Sender<()>) {
    let body = serde_json::to_vec(&padded_review("slow", "db", "z".repeat(padding))).expect("json");
    assert!(body.len() <= MAX_BODY_BYTES);
    let (mut read, mut write) = tokio::io::split(raw_tls_from(server, local).await);
    let (release, released) = oneshot::channel();
    let sender = tokio::spawn(async move {
        write
            .write_all(&request_head(body.len()))
            .await
            .expect("head");
        let (first, rest) = body.split_at(at_once.min(body.len()));
        let (rest, last) = rest.split_at(rest.len().saturating_sub(64 * 1024));
        write
            .write_all(first)
            .await
            .expect("the body's first bytes");
        for piece in rest.chunks(64 * 1024) {
            write.flush().await.expect("flush");
            // The pace of a slow path, not a synchronisation.
            tokio::time::sleep(every).await;
            write.write_all(piece).await.expect("a piece of the body");
        }
        write.flush().await.expect("flush");
        released.await.expect("told to send the rest");
        write.write_all(last).await.expect("the last piece");
        write.flush().await.expect("flush");
        read_response(&mut read).await
    });
    (sender, release)
}

/// A body of the maximum size declared from `newcomer` is refused (the budget is full); then the
/// slow body `sender` sends is let finish (`release`), and is answered, allowed: no body was cut to
/// make room.
async fn refused_and_slow_body_answered(
    server: &TestServer,
    newcomer: [u8; 4],
    (sender, release): (tokio::task::JoinHandle<String>, oneshot::Sender<()>),
) {
    let path = endpoints::SECRET_NAMES;
    let refused = head_alone_from(server, newcomer, path, MAX_BODY_BYTES).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert_eq!(server.metrics.connections_refused("evicted"), 0);
    release.send(()).expect("the sender waits");
    let answered = sender.await.expect("the slow body's review");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(answered.contains("\"allowed\":true"), "{answered}");
}

/// The answer to a request head to `path` from `local` declaring a body of `declared` bytes, none
/// of which is sent (an answer before the body: a refusal).
async fn head_alone_from(
    server: &TestServer,
    local: [u8; 4],
    path: &str,
    declared: usize,
) -> String {
    let (mut read, mut write) = tokio::io::split(raw_tls_from(server, local).await);
    write
        .write_all(&request_head_to(path, declared))
        .await
        .expect("write");
    write.flush().await.expect("flush");
    read_response(&mut read).await
}

/// A server whose large bodies are paced as slowly as allowed (asked for 1 byte/s, the pace is a
/// body of the maximum size in 1 s), with room for `large_bodies` of the maximum size at once, and
/// that pace in bytes per second.
async fn slowest_paced_server(large_bodies: usize) -> (TestServer, f64) {
    let server = TestServer::start_with(
        ReviewLimits::new(8, large_bodies * MAX_BODY_BYTES).with_large_body_rate(1),
        Limits::default(),
    )
    .await;
    (server, MAX_BODY_BYTES as f64)
}

/// `bodies` were read at the pace, each past its first ORDINARY_BODY_BYTES, and took `took`: every
/// such byte drew from the pace (the operator sees them in the metric), and they took at least the
/// time the pace allows them (the first body of the maximum size passes at once, the rest at
/// `slowest_rate`).
fn assert_held_to_the_pace(
    server: &TestServer,
    slowest_rate: f64,
    bodies: &[Vec<u8>],
    took: Duration,
) {
    let paced: usize = bodies
        .iter()
        .map(|body| body.len() - ORDINARY_BODY_BYTES)
        .sum();
    let counted = server.metrics.paced_bytes(endpoints::SECRET_NAMES);
    assert_eq!(counted, paced as u64, "bytes read at the pace");
    let least = paced.saturating_sub(MAX_BODY_BYTES) as f64 / slowest_rate;
    assert!(
        took.as_secs_f64() >= least * 0.9,
        "{paced} paced bytes took {took:?}; the pace allows them in no less than {least:.2} s"
    );
}

#[tokio::test]
async fn a_stream_of_large_bodies_is_read_at_the_pace_while_small_reviews_pass() {
    // Six bodies of 3 MiB sent at once, encoded beforehand: 18 MiB asked of a pace whose burst is
    // 7 MiB, so they wait however fast or slow this machine sends them (slower than 7 MiB/s would
    // be needed not to).
    let bodies = 6;
    let (server, slowest_rate) = slowest_paced_server(bodies).await;
    // All six share the pace and then the decoding (debug builds, a busy CI machine): each gets
    // more than a lone request's 10 s.
    let client = client_waiting(&server.ca(), true, Duration::from_secs(60));
    let url = server.url(endpoints::SECRET_NAMES);
    let large: Vec<Vec<u8>> = (0..bodies)
        .map(|i| {
            let review = padded_review(&format!("large-{i}"), "db", "z".repeat(3 * 1024 * 1024));
            serde_json::to_vec(&review).expect("json")
        })
        .collect();
    let started = Instant::now();
    let senders: Vec<_> = large
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let answer = answer_bytes(&client, &url, body).await;
                assert_eq!(answer["response"]["uid"], format!("large-{i}"));
                assert_eq!(answer["response"]["allowed"], true, "{answer}");
                Instant::now()
            })
        })
        .collect();
    // A small review sent while all of them are being read is answered before they all are (it
    // never draws from the pace: the paced bytes below are the large bodies' alone).
    server
        .until_in_flight(endpoints::SECRET_NAMES, bodies as i64)
        .await;
    let small: Value = answer(&client, &url, &review("small", "db")).await;
    let small_answered = Instant::now();
    assert_eq!(small["response"]["uid"], "small");
    let mut last_answered = started;
    for sender in senders {
        last_answered = last_answered.max(sender.await.expect("a large body"));
    }
    assert!(
        small_answered < last_answered,
        "the small review waited for the large ones"
    );
    assert_held_to_the_pace(&server, slowest_rate, &large, last_answered - started);
    let waited = server.metrics.paced_seconds(endpoints::SECRET_NAMES);
    assert!(waited > 0.0, "no pace wait was recorded");
}

#[tokio::test]
async fn many_mid_sized_bodies_are_paced_too() {
    // A sender cannot slip under the pace with many bodies far below the maximum, one after
    // another: every body's bytes past its first ORDINARY_BODY_BYTES are paced.
    let (server, slowest_rate) = slowest_paced_server(2).await;
    let client = server.client();
    let url = server.url(endpoints::SECRET_NAMES);
    let review = padded_review("mid", "db", "z".repeat(4 * ORDINARY_BODY_BYTES - 8 * 1024));
    let body = serde_json::to_vec(&review).expect("json");
    let bodies = vec![body; 100];
    let started = Instant::now();
    for body in &bodies {
        let answer = answer_bytes(&client, &url, body.clone()).await;
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
    }
    assert_held_to_the_pace(&server, slowest_rate, &bodies, started.elapsed());
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let server = TestServer::with_max_connections(1).await;
    let ca = server.ca();
    // A connection with a review being read holds its slot (one waiting for a request would make
    // room, see below).
    let held = hold_in_flight(&server, endpoints::SECRET_NAMES, 1000, 1).await;
    // The server accepts the TCP connection and closes it before the TLS handshake.
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let handshake = tokio::time::timeout(
        Duration::from_secs(5),
        tls_connector(&ca).connect(name, tcp),
    )
    .await
    .expect("refused at once, not after the handshake timeout");
    assert!(handshake.is_err(), "a connection past the cap was served");
    // Once the held connection closes, new ones are served again.
    drop(held);
    served_on_a_new_connection_within(&server, None, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn at_the_cap_the_busiest_address_makes_room() {
    // Clients that finish a handshake and then send nothing (anyone can, without a client CA)
    // cannot keep the apiserver out: at the cap a connection waiting for a request is closed for
    // the newcomer, the newest of the address holding the most. The apiserver's pooled
    // connection is kept.
    let server = TestServer::with_max_connections(3).await;
    // The oldest, the first that may be evicted (once it has waited 100 ms after its answer), but
    // its address holds no more than its share.
    let (mut pooled, mut pooled_write) = tokio::io::split(raw_tls_from(&server, LOCAL_ONE).await);
    let first = reviewed_on(&mut pooled, &mut pooled_write, "pooled").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let mut flood = Vec::new();
    for uid in ["flood-1", "flood-2"] {
        let (mut read, mut write) = tokio::io::split(raw_tls_from(&server, LOCAL_TWO).await);
        let answer = reviewed_on(&mut read, &mut write, uid).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        flood.push((read, write));
    }
    served_on_a_new_connection_within(&server, Some(LOCAL_THREE), Duration::from_secs(5)).await;
    let flood_reads = flood.iter_mut().map(|(read, _)| read);
    one_closed(flood_reads, "no connection of the flood was closed").await;
    let again = reviewed_on(&mut pooled, &mut pooled_write, "pooled-again").await;
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "the pooled connection was closed: {again}"
    );
    // Evicted once idle for 100 ms, or (still within them) closed after its answer.
    let closed = || {
        server.metrics.connections_refused("evicted")
            + server.metrics.connections_refused("retired")
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while closed() < 1 {
        assert!(Instant::now() < deadline, "the closing was not counted");
        tokio::task::yield_now().await;
    }
}

const LOCAL_ONE: [u8; 4] = [127, 0, 0, 1];
const LOCAL_TWO: [u8; 4] = [127, 0, 0, 2];
const LOCAL_THREE: [u8; 4] = [127, 0, 0, 3];
const LOCAL_FOUR: [u8; 4] = [127, 0, 0, 4];

#[tokio::test]
async fn at_the_cap_bodies_that_stall_make_room_after_a_second() {
    // One address fills every slot with requests whose body never comes (a head, a few bytes):
    // each is being answered, but the apiserver is not kept out until their body deadline (10 s).
    let server = TestServer::with_max_connections(3).await;
    let mut stalled = Vec::new();
    for n in 1..=3 {
        let path = endpoints::SECRET_NAMES;
        stalled.push(hold_in_flight_from(&server, LOCAL_TWO, path, 1000, n).await);
    }
    served_on_a_new_connection_within(&server, Some(LOCAL_ONE), Duration::from_secs(5)).await;
    // One of them (the first whose body had been awaited for a second) was cut, without an answer.
    let stalled_reads = stalled.iter_mut().map(|(read, _)| read);
    let answer = one_closed(stalled_reads, "no stalled body was cut").await;
    assert!(answer.is_empty(), "cut with an answer: {answer:?}");
    assert!(server.metrics.connections_refused("evicted") >= 1);
}

#[tokio::test]
async fn at_the_cap_small_bodies_trickled_on_course_make_room_after_a_second() {
    // One address fills every slot with requests whose small bodies come a few bytes at a time:
    // on course to be whole within 2 s, but far slower than a body on its way (1 MiB/s). Each is
    // cut once awaited for a second, without an answer, for the apiserver's new connection; not
    // answered when whole and closed idle after.
    let server = TestServer::with_max_connections(3).await;
    let mut trickled = Vec::new();
    for n in 1..=3 {
        trickled.push(trickle_from(&server, LOCAL_TWO, 3000, 100, Duration::from_millis(60)).await);
        server.until_in_flight(endpoints::SECRET_NAMES, n).await;
    }
    served_on_a_new_connection_within(&server, Some(LOCAL_ONE), Duration::from_secs(5)).await;
    let reads = trickled.iter_mut().map(|(read, _)| read);
    let answer = one_closed(reads, "no trickled body was cut").await;
    assert!(answer.is_empty(), "answered, not cut: {answer:?}");
    assert!(server.metrics.connections_refused("evicted") >= 1);
}

#[tokio::test]
async fn at_the_cap_a_client_keeping_its_connections_busy_gives_one_back_after_its_answer() {
    // 127.0.0.2 fills the slots the apiserver's pooled connection leaves and keeps them busy:
    // each sends a review waiting on a look-up (of an apiserver that does not answer, up to the
    // look-ups' deadline) and the next as soon as it is answered, so none is ever idle; and it
    // opens a new connection as soon as one closes. A newcomer under its share has one of them
    // close after its answer (never cut); the slot it gives back is owed to the newcomer, not
    // taken back by the client that held it.
    let (server, _backlog, _pooled, _pooled_write) = pooled_where_look_ups_hang(3).await;
    let busy: Vec<_> = (0..2)
        .map(|_| tokio::spawn(busy_connections_from(server.addr, server.ca(), LOCAL_TWO)))
        .collect();
    server.until_in_flight(endpoints::SECRET_NAMES, 2).await;
    served_on_a_new_connection_within(&server, Some(LOCAL_THREE), Duration::from_secs(10)).await;
    assert!(server.metrics.connections_refused("retired") >= 1);
    busy.iter().for_each(tokio::task::JoinHandle::abort);
}

/// Keeps a connection from `local` to the server at `addr` busy with reviews of secret `taken`,
/// each sent as soon as the last is answered, opening a new one (every 20 ms, while refused)
/// whenever it is closed; until aborted.
async fn busy_connections_from(addr: SocketAddr, ca: Vec<u8>, local: [u8; 4]) {
    let body = serde_json::to_vec(&review("busy", "taken")).expect("json");
    loop {
        let Some(stream) = try_tls_at(addr, &ca, local).await else {
            // The pace of a client asking again, not a synchronisation.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (mut read, mut write) = tokio::io::split(stream);
        loop {
            let sent = async {
                write.write_all(&request_head(body.len())).await?;
                write.write_all(&body).await?;
                write.flush().await
            };
            if sent.await.is_err() || try_read_response(&mut read).await.is_err() {
                break;
            }
        }
    }
}

/// A request from `local` declaring a body of `declared` bytes, sent `piece` bytes every `every`
/// (until it is whole, or the connection is closed): the connection's read half, and the sender.
async fn trickle_from(
    server: &TestServer,
    local: [u8; 4],
    declared: usize,
    piece: usize,
    every: Duration,
) -> (RawRead, tokio::task::JoinHandle<()>) {
    let (read, mut write) = tokio::io::split(raw_tls_from(server, local).await);
    let head = request_head_to(endpoints::SECRET_NAMES, declared);
    let sender = tokio::spawn(async move {
        let body = vec![b' '; declared];
        let _ = write.write_all(&head).await;
        for piece in body.chunks(piece) {
            if write.write_all(piece).await.is_err() || write.flush().await.is_err() {
                return;
            }
            // The sender's pace, not a synchronisation.
            tokio::time::sleep(every).await;
        }
    });
    (read, sender)
}

/// Waits until one of `reads` is closed by the server; what it read until then.
async fn one_closed<'a>(reads: impl Iterator<Item = &'a mut RawRead>, what: &str) -> Vec<u8> {
    let closing = reads.map(|read| {
        Box::pin(async move {
            let mut answer = Vec::new();
            let _ = read.read_to_end(&mut answer).await;
            answer
        })
    });
    let closed = futures::future::select_all(closing);
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect(what)
        .0
}

/// A server for `cap` connections (from any address) whose reviews' look-ups hang (an apiserver
/// that does not answer: keep the listener returned), and a pooled connection to it from 127.0.0.1
/// (the apiserver's), used once.
async fn pooled_where_look_ups_hang(
    cap: usize,
) -> (TestServer, tokio::net::TcpListener, RawRead, RawWrite) {
    let (stalled, backlog) = client_of_a_stalled_apiserver().await;
    let limits = Limits::with_max_connections(cap, Some(usize::MAX));
    let server = TestServer::start_on(
        ReviewLimits::default(),
        limits,
        world_where_team_a_holds_taken(),
        Some(stalled),
    )
    .await;
    let (mut pooled, mut pooled_write) = tokio::io::split(raw_tls_from(&server, LOCAL_ONE).await);
    let first = reviewed_on(&mut pooled, &mut pooled_write, "pooled").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    (server, backlog, pooled, pooled_write)
}

#[tokio::test]
async fn at_the_cap_room_comes_from_a_busier_address_that_has_some() {
    // 127.0.0.2 holds two connections that cannot make room (reviews waiting on a look-up from
    // an apiserver that does not answer, for up to the look-ups' deadline), 127.0.0.3 two idle
    // ones and 127.0.0.1 (the apiserver) a pooled one: the cap, five.
    let (server, _backlog, mut pooled, mut pooled_write) = pooled_where_look_ups_hang(5).await;
    let mut idle = Vec::new();
    for uid in ["idle-1", "idle-2"] {
        let (mut read, mut write) = tokio::io::split(raw_tls_from(&server, LOCAL_THREE).await);
        let answered = reviewed_on(&mut read, &mut write, uid).await;
        assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
        idle.push((read, write));
    }
    let idle_since = Instant::now();
    let waiting: Vec<_> = (0..2)
        .map(|n| {
            let client = client_from(&server.ca(), LOCAL_TWO);
            let url = server.url(endpoints::SECRET_NAMES);
            tokio::spawn(async move {
                answer(&client, &url, &review(&format!("waiting-{n}"), "taken")).await
            })
        })
        .collect();
    server.until_in_flight(endpoints::SECRET_NAMES, 2).await;
    // The scenario's time, not a synchronisation: .3's connections may be evicted once idle for
    // the product's eviction age (before, .2's busy ones would be retired instead, and the slot
    // one gives back later would be free for anyone, .2's next newcomer below included). Nothing
    // to poll: what passes is time itself, counted from their last answer.
    let evictable = idle_since + EVICTABLE_AFTER + Duration::from_millis(20);
    tokio::time::sleep_until(evictable.into()).await;
    // 127.0.0.2 and .3 hold the most; .2 has nothing to evict, so an idle connection of .3 makes
    // room, not the apiserver's pooled one.
    served_on_a_new_connection_within(&server, Some(LOCAL_FOUR), Duration::from_secs(2)).await;
    assert_eq!(server.metrics.connections_refused("retired"), 0);
    one_closed(
        idle.iter_mut().map(|(read, _)| read),
        "no idle connection was closed",
    )
    .await;
    // At the cap again (once the newcomer's connection has closed: 127.0.0.3 takes no room from
    // itself); a newcomer of the busiest address takes nothing from one holding fewer.
    let deadline = Instant::now() + Duration::from_secs(5);
    let _again = loop {
        if let Some(stream) = try_tls_from(&server, LOCAL_THREE).await {
            let (mut read, mut write) = tokio::io::split(stream);
            let answered = reviewed_on(&mut read, &mut write, "idle-again").await;
            if answered.starts_with("HTTP/1.1 200") {
                break (read, write);
            }
        }
        assert!(Instant::now() < deadline, "127.0.0.3 never got a slot back");
        tokio::task::yield_now().await;
    };
    let refused_before = server.metrics.connections_refused("connection_cap");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((std::net::IpAddr::from(LOCAL_TWO), 0).into())
        .expect("a loopback address");
    let tcp = socket.connect(server.addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        tls_connector(&server.ca()).connect(name, tcp),
    )
    .await
    .expect("refused at once");
    assert!(refused.is_err(), "the busiest address took a slot");
    assert_eq!(
        server.metrics.connections_refused("connection_cap"),
        refused_before + 1
    );
    let again = reviewed_on(&mut pooled, &mut pooled_write, "pooled-again").await;
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "the pooled connection was closed: {again}"
    );
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "the look-ups ended before the test did: it showed nothing"
    );
    for w in waiting {
        w.abort();
    }
}

#[tokio::test]
async fn a_client_from_fresh_addresses_cannot_take_the_pool_of_an_apiserver_within_its_share() {
    // 127.0.0.2 holds three connections that cannot make room (reviews waiting on a look-up from
    // an apiserver that does not answer, as a client keeping them busy could), 127.0.0.1 (the
    // apiserver) one pooled, idle connection: the cap, four. A newcomer from a fresh address is
    // refused rather than given the apiserver's connection, which holds no more than its share.
    let (server, _backlog, mut pooled, mut pooled_write) = pooled_where_look_ups_hang(4).await;
    // One after the other: at most two handshakes may be under way at this cap.
    let mut waiting = Vec::new();
    for n in 1..=3 {
        let client = client_from(&server.ca(), LOCAL_TWO);
        let url = server.url(endpoints::SECRET_NAMES);
        let review = review(&format!("waiting-{n}"), "taken");
        waiting.push(tokio::spawn(
            async move { answer(&client, &url, &review).await },
        ));
        server.until_in_flight(endpoints::SECRET_NAMES, n).await;
    }
    // Past the 100 ms after which the pooled connection could be evicted: refused every time.
    let mut refusals = 0;
    while server.metrics.connections_refused("connection_cap") < 5 {
        assert!(
            try_tls_from(&server, LOCAL_THREE).await.is_none(),
            "a fresh address took a slot"
        );
        refusals += 1;
        assert!(refusals < 1000, "refusals were not counted");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let again = reviewed_on(&mut pooled, &mut pooled_write, "pooled-again").await;
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "the pooled connection was closed: {again}"
    );
    assert_eq!(server.metrics.connections_refused("evicted"), 0);
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "the look-ups ended before the test did: it showed nothing"
    );
    for w in waiting {
        w.abort();
    }
}

/// A client from the loopback address `local`.
fn client_from(ca_pem: &[u8], local: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("ca parses"))
        .local_address(std::net::IpAddr::from(local))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn one_address_holds_at_most_its_fair_share_of_the_review_slots() {
    // Four slots; reviews waiting on a look-up (an apiserver that does not answer) from
    // 127.0.0.1 (the apiserver: one) and 127.0.0.2 (two, its fair share while the apiserver has
    // one in flight). 127.0.0.2's next review is refused though a slot is free; the apiserver's
    // is decided. (An address alone may take every slot: the unit tests in limits.rs.)
    let (stalled, _backlog) = client_of_a_stalled_apiserver().await;
    let server = TestServer::start_on(
        ReviewLimits::new(4, MAX_BODY_BYTES),
        Limits::default(),
        world_where_team_a_holds_taken(),
        Some(stalled),
    )
    .await;
    let url = server.url(endpoints::SECRET_NAMES);
    let apiserver = client_from(&server.ca(), LOCAL_ONE);
    let flood = client_from(&server.ca(), LOCAL_TWO);
    let mut waiting = Vec::new();
    for (n, client) in [(1, &apiserver), (2, &flood), (3, &flood)] {
        let (client, url) = (client.clone(), url.clone());
        let review = review(&format!("waiting-{n}"), "taken");
        waiting.push(tokio::spawn(
            async move { answer(&client, &url, &review).await },
        ));
        server.until_in_flight(endpoints::SECRET_NAMES, n).await;
    }
    // Counted in flight from its headers on, the last may still be on its way to its slot: polled.
    let deadline = Instant::now() + Duration::from_secs(3);
    let refused = loop {
        let r = post(&flood, &url, &review("over", "db"))
            .await
            .expect("an answer");
        if r.status() == 429 {
            break r;
        }
        assert!(Instant::now() < deadline, "never refused: {}", r.status());
        tokio::task::yield_now().await;
    };
    let status: Value = refused.json().await.expect("a Status body");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("2 reviews from this address are in flight")),
        "{status}"
    );
    let decided = answer(&apiserver, &url, &review("apiserver", "db")).await;
    assert_eq!(decided["response"]["allowed"], true, "{decided}");
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "refused only while the shares were held"
    );
    for w in waiting {
        w.abort();
    }
}

/// A TLS connection to the server from the loopback address `local`.
async fn raw_tls_from(
    server: &TestServer,
    local: [u8; 4],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    try_tls_from(server, local).await.expect("handshake")
}

/// A TLS connection to the server from the loopback address `local`, unless it is closed before
/// its handshake has finished.
async fn try_tls_from(
    server: &TestServer,
    local: [u8; 4],
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    try_tls_at(server.addr, &server.ca(), local).await
}

/// [`try_tls_from`] a server at `addr` whose CA is `ca_pem`.
async fn try_tls_at(
    addr: SocketAddr,
    ca_pem: &[u8],
    local: [u8; 4],
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((std::net::IpAddr::from(local), 0).into())
        .expect("a loopback address");
    let tcp = socket.connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tls_connector(ca_pem).connect(name, tcp).await.ok()
}

/// Posts a review on a new connection (from `local`, else the default address) until it is
/// answered 200, for at most `limit`: a slot given back when a connection ends is given back by its
/// task, a moment later.
async fn served_on_a_new_connection_within(
    server: &TestServer,
    local: Option<[u8; 4]>,
    limit: Duration,
) {
    let ca = server.ca();
    let deadline = Instant::now() + limit;
    loop {
        let fresh = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca parses"))
            .pool_max_idle_per_host(0)
            .local_address(local.map(std::net::IpAddr::from))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        match post(
            &fresh,
            &server.url(endpoints::SECRET_NAMES),
            &review("again", "db"),
        )
        .await
        {
            Ok(r) if r.status() == 200 => return,
            other => assert!(
                Instant::now() < deadline,
                "no connection slot within {limit:?}: {other:?}"
            ),
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn one_address_cannot_take_the_slots_the_apiserver_needs() {
    let server = TestServer::start_with(
        ReviewLimits::default(),
        Limits {
            max_connections: 10,
            max_connections_per_address: 2,
            ..Limits::default()
        },
    )
    .await;
    let ca = server.ca();
    let from = |ip: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind((std::net::IpAddr::from(ip), 0).into())
            .expect("a loopback address");
        socket.connect(server.addr).await.expect("connects")
    };
    // 127.0.0.1 holds its two (unfinished handshakes); its third is closed before any handshake.
    let _held = [from([127, 0, 0, 1]).await, from([127, 0, 0, 1]).await];
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let third = tokio::time::timeout(
        Duration::from_secs(5),
        tls_connector(&ca).connect(name, from([127, 0, 0, 1]).await),
    )
    .await
    .expect("refused at once, not after the handshake timeout");
    assert!(
        third.is_err(),
        "a connection past the address's share was served"
    );
    assert_eq!(server.metrics.connections_refused("address_cap"), 1);
    // Another address (the apiserver's) is served.
    let client = client_from(&ca, LOCAL_TWO);
    let answered = answer(
        &client,
        &server.url(endpoints::SECRET_NAMES),
        &review("other", "db"),
    )
    .await;
    assert_eq!(answered["response"]["uid"], "other");
    assert_eq!(server.metrics.connections_refused("address_cap"), 1);
}

#[tokio::test]
async fn an_address_beginning_handshakes_past_its_rate_is_closed_before_the_handshake() {
    // A burst of 3, then one a second: of 8 handshakes begun back to back from 127.0.0.2, some
    // are refused (each before any key exchange), and 127.0.0.1 is served.
    let server = TestServer::start_with(
        ReviewLimits::default(),
        Limits {
            handshakes_per_second_per_address: 1,
            handshake_burst_per_address: 3,
            ..Limits::default()
        },
    )
    .await;
    let mut handshaken = 0;
    for _ in 0..8 {
        let attempt =
            tokio::time::timeout(Duration::from_secs(5), try_tls_from(&server, LOCAL_TWO));
        if attempt
            .await
            .expect("refused at once, not after a timeout")
            .is_some()
        {
            handshaken += 1;
        }
    }
    let refused = server.metrics.connections_refused("handshake_rate");
    assert!(refused >= 1, "none refused");
    assert_eq!(handshaken + refused, 8);
    served_on_a_new_connection_within(&server, Some(LOCAL_ONE), Duration::from_secs(5)).await;
    // A rate, not a ban: the address is served again within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    while try_tls_from(&server, LOCAL_TWO).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "127.0.0.2 was never served again"
        );
        // Polled, not flooded: a connection a few tens of milliseconds.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_that_never_finish_a_handshake_make_room_for_new_ones() {
    // Every slot taken by clients that never start TLS (from any number of addresses): the next
    // client is not kept out, the oldest of them is closed instead (the pool of handshakes under
    // way, which makes room the same way, is the unit tests' in handshakes.rs).
    let server = TestServer::start_with(
        ReviewLimits::default(),
        Limits {
            max_connections: 3,
            max_connections_per_address: 100,
            max_pending_handshakes: 100,
            handshake_timeout: Duration::from_secs(60),
            ..Limits::default()
        },
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind((std::net::IpAddr::from(LOCAL_TWO), 0).into())
            .expect("a loopback address");
        silent.push(socket.connect(server.addr).await.expect("connect"));
    }
    // A client (from an address holding fewer) that does handshake is served (before, not until
    // the silent ones' handshake deadline, a minute here)...
    served_on_a_new_connection_within(&server, Some(LOCAL_ONE), Duration::from_secs(5)).await;
    // ...and the oldest silent one was closed (end of stream, no answer) to make room.
    let mut read = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), silent[0].read_to_end(&mut read))
        .await
        .expect("the oldest silent connection is closed")
        .expect("read");
    assert!(read.is_empty());
    assert!(server.metrics.connections_refused("handshake_evicted") >= 1);
}

#[tokio::test]
async fn reviews_of_another_version_get_400() {
    let server = TestServer::start().await;
    let mut body = review("old", "db");
    body["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let response = server
        .post("/validate/secret-guard", &body)
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let status: Value = response.json().await.expect("a Status body");
    assert_eq!(status["kind"], "Status");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("admission.k8s.io/v1beta1"), "{message}");
    assert!(message.contains("admission.k8s.io/v1 "), "{message}");
}

#[tokio::test]
async fn kinds_an_entry_does_not_cover_get_400() {
    let server = TestServer::start().await;
    let client = server.client();
    let mut config_map = review("cm", "settings");
    config_map["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    config_map["request"]["object"]["kind"] = json!("ConfigMap");
    let secret = review("sec", "db");
    for (path, body, uid, kind) in [
        ("/validate/secret-guard", &config_map, "cm", "ConfigMap"),
        ("/mutate/secret", &config_map, "cm", "ConfigMap"),
        ("/validate/namespace-guard", &secret, "sec", "Secret"),
        ("/mutate/namespace", &secret, "sec", "Secret"),
    ] {
        let answer: Value = answer(&client, &server.url(path), body).await;
        let response = &answer["response"];
        assert_eq!(response["uid"], uid, "{path}");
        assert_eq!(response["allowed"], false, "{path}: {answer}");
        assert_eq!(response["status"]["code"], 400, "{path}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(path) && message.contains(kind),
            "{message}"
        );
    }
}

#[tokio::test]
async fn the_unused_validate_all_endpoint_is_gone() {
    let server = TestServer::start().await;
    let response = server
        .post("/validate/all", &review("all", "db"))
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn deeply_nested_bodies_get_a_clear_400() {
    let server = TestServer::start().await;
    let text = serde_json::to_string(&review("deep", "db")).expect("json");
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let body = text.replacen("\"Opaque\"", &nested, 1);
    let response = post_bytes(
        &server.client(),
        &server.url("/validate/secret-guard"),
        body.into_bytes(),
    )
    .await;
    assert_eq!(response.status(), 400);
    let text = response.text().await.expect("text");
    assert!(text.contains("deeper than 64 levels"), "{text}");
}
