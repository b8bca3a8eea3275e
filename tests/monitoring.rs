//! deploy/monitoring's dashboard and alert rules name only metrics that a running server serves.
//! A test binary of its own (a control plane of its own), because the server it starts runs the
//! reconciler, which would copy secrets into the other suites' projects.

use std::collections::BTreeSet;
use std::path::Path;
use testbed::prelude::*;

/// Every metric name in a file: `scoped_secrets_…` and `controller_runtime_webhook_…` words.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["scoped_secrets_", "controller_runtime_webhook_"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let word: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + word.len()..];
            names.insert(word);
        }
    }
    names
}

/// The family a sample name belongs to, as `# TYPE` lines name it (counters and histograms are
/// declared without their `_total`, `_bucket`, `_sum`, `_count` suffixes).
fn family(sample: &str) -> &str {
    ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| sample.strip_suffix(suffix))
        .unwrap_or(sample)
}

/// The body of a plain-HTTP GET on the admin port (HTTP/1.0: the server closes when done).
fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.lines()
        .next()?
        .contains(" 200 ")
        .then(|| body.to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The metric families a server declares (`# TYPE` lines; a family appears once it has a sample).
fn declared(admin: std::net::SocketAddr) -> BTreeSet<String> {
    http_get(admin, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// The apiserver's limit on an object's annotations (keys and values).
const ANNOTATIONS_LIMIT: usize = 262_144;

#[test]
fn dashboards_and_alerts_name_only_served_metrics() {
    // The shared server answers the registered webhooks; a second one runs the reconciler.
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("an address");
    let _reconciling = start_extra_server(|args| {
        args.reconciler = true;
        args.admin_addr = admin;
    });
    // Give every family a sample: reviews (allowed and denied), a copy written, and a copy the
    // apiserver refuses (an original written behind the webhook whose annotations fit, but not
    // with the copy markers added).
    let project = project("mon");
    let ns = namespace_in(&project, "mon-a");
    ok(kubectl_line(&format!(
        "create secret generic probe -n {ns} --from-literal=k=v --dry-run=server"
    )));
    let label = format!(
        "{}={}",
        scoped_secrets::keys::PROJECT_SCOPED_LABEL,
        project.name
    );
    ok(kubectl_line(&format!(
        "create secret generic db -n {} --from-literal=k=v",
        project.backing
    )));
    ok(kubectl(&[
        "label",
        "secret",
        "db",
        "-n",
        &project.backing,
        &label,
    ]));
    let filler = "x".repeat(ANNOTATIONS_LIMIT - 64 - "example.com/filler".len());
    let big = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: big\n  namespace: {backing}\n  labels: \
         {{{key}: {p}, {cluster}: local}}\n  annotations: {{example.com/filler: {filler}}}\n",
        backing = project.backing,
        key = scoped_secrets::keys::PROJECT_SCOPED_LABEL,
        cluster = scoped_secrets::keys::PROJECT_SCOPED_CLUSTER_LABEL,
        p = project.name,
    );
    ok(kubectl_stdin(
        &env().sa_kubeconfig,
        &["create", "-f", "-"],
        &big,
    ));

    let dir = Path::new(REPO).join("deploy/monitoring");
    let mut named = BTreeSet::new();
    for file in ["grafana-dashboard.json", "prometheus-rules.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("a monitoring file");
        let names = metric_names(&text);
        assert!(names.len() >= 5, "{file} names only {names:?}");
        named.extend(names);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let served: BTreeSet<String> = declared(env().admin_addr)
            .into_iter()
            .chain(declared(admin))
            .collect();
        let missing: Vec<&String> = named
            .iter()
            .filter(|name| !served.contains(family(name)))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "named in deploy/monitoring but not served: {missing:?}; served: {served:?}"
        );
        std::thread::park_timeout(std::time::Duration::from_millis(200));
    }
    assert!(
        named.len() >= 10,
        "only {} metric names checked",
        named.len()
    );
}

#[test]
fn the_served_certificates_expiry_is_a_metric() {
    let cert_pem = std::fs::read(
        env()
            .state_dir
            .join("certs")
            .join(scoped_secrets::certs::TLS_CERT),
    )
    .expect("the shared server's certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&cert_pem).expect("PEM");
    let not_after = pem
        .parse_x509()
        .expect("a certificate")
        .validity()
        .not_after
        .timestamp();
    let metrics = http_get(env().admin_addr, "/metrics").expect("/metrics");
    let served: i64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("scoped_secrets_serving_certificate_expiry_timestamp_seconds ")
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no expiry in /metrics:\n{metrics}"));
    assert_eq!(served, not_after);
}
