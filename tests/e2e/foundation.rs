//! The foundation: a real control plane, the Project CRD from deploy/, and a dry-run request that
//! reaches the registered webhook.

use testbed::prelude::*;

#[test]
fn dry_run_secret_create_reaches_the_registered_webhook() {
    let ns = unique("found");
    ok(kubectl_line(&format!("create namespace {ns}")));
    let dry_create = |name: &str| {
        kubectl_line(&format!(
            "create secret generic {name} -n {ns} --from-literal=key=value --dry-run=server"
        ))
    };
    let out = ok(dry_create("probe"));
    assert!(
        out.contains("secret/probe created (server dry run)"),
        "{out}"
    );
    // Dry run: nothing was stored.
    fails(kubectl_line(&format!("get secret probe -n {ns}")));
    // Proof that this very dry-run request reached the webhook (a counter would not do: other
    // tests' reviews bump it too): only the webhook answers a taken name with this message, which
    // names this test's namespace.
    ok(kubectl_line(&format!(
        "create secret generic taken -n {ns} --from-literal=key=value"
    )));
    indexed("the taken name", |w| w.secret_meta(&ns, "taken").is_some());
    let err = fails(dry_create("taken"));
    let expected = format!(
        "admission webhook \"secret-names.scoped-secrets.io\" denied the request: a secret \
         (Opaque) named \"taken\" already exists in namespace \"{ns}\""
    );
    assert!(err.contains(&expected), "expected {expected:?} in {err}");
}

#[test]
fn projects_are_listed_with_their_backing_namespace() {
    let project = project("p");
    let table = ok(kubectl_line("get projects -A"));
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "NAMESPACE",
        "NAME",
        "DISPLAY NAME",
        "CLUSTER",
        "BACKING NAMESPACE",
    ] {
        assert!(header.contains(column), "missing column {column}: {table}");
    }
    let row = table
        .lines()
        .find(|l| l.contains(&format!(" {} ", project.name)))
        .unwrap_or_else(|| panic!("project {} not listed: {table}", project.name));
    assert!(row.starts_with("local "), "{row}");
    assert!(row.contains(&project.backing), "{row}");
}

#[tokio::test]
async fn the_admin_port_is_ready_once_synced_and_serves_metrics() {
    let env = env();
    let base = format!("http://{}", env.admin_addr);
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();
    assert_eq!(get("/livez").await.expect("livez").status(), 200);
    // The harness waits for the watches to sync before registering the webhooks.
    let ready = get("/readyz").await.expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.expect("text"), "ok");
    let metrics = get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "controller_runtime_webhook_requests_total{",
        "controller_runtime_webhook_latency_seconds_bucket{",
        "scoped_secrets_admission_reviews_total{",
        "scoped_secrets_index_secrets ",
    ] {
        assert!(metrics.contains(name), "missing {name} in:\n{metrics}");
    }
}
