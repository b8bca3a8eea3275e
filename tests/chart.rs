//! charts/scoped-secrets, with the real `helm` (built from the Go module proxy by hack/helm/build.sh,
//! `make helm`), against deploy/ and a real kube-apiserver of its own:
//! - `helm lint` in every mode;
//! - what the chart renders equals what deploy/'s kustomizations render, object for object (RBAC
//!   exactly; webhooks' rules, matchConditions, failurePolicy and timeouts; the Deployment's
//!   securityContext, probes and rollout; the PDB), so the two cannot drift;
//! - every mode passes `kubectl apply --server-side --dry-run=server`, with no warning;
//! - the self-signed certificate it makes is trusted through the caBundle by the product's own TLS
//!   server under the Service's name; `helm install`, `helm upgrade` (the CA kept, the serving
//!   certificate re-issued) and `helm uninstall` (the Project CRD kept) against the control plane;
//! - values.schema.json refuses bad values with a message naming them.

use testbed::control_plane::ControlPlane;
use testbed::downstream::NAMESPACE;
use testbed::prelude as support;

use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

const SERVICE_NAME: &str = "scoped-secrets.scoped-secrets-system.svc";
const CERT_MANAGER: &str = "cert-manager.io/v1/Certificate";
const MONITORING: [&str; 2] = [
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
];

fn repo() -> &'static Path {
    Path::new(support::REPO)
}

fn chart() -> PathBuf {
    repo().join("charts/scoped-secrets")
}

/// This test process's scratch directory (helm's own config and cache go there too).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join(format!("target/chart/{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

/// The pinned helm, built once and cached (`HELM` names another).
fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("hack/helm/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "hack/helm/build.sh failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

fn helm(args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let home = scratch().join("helm-home");
    let mut command = Command::new(helm_binary());
    command
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG");
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    command.output().expect("helm runs")
}

/// `helm <command>` of the release `scoped-secrets` of the chart in `namespace`, `args` after.
fn helm_release(
    command: &str,
    namespace: &str,
    args: &[&str],
    kubeconfig: Option<&Path>,
) -> Output {
    let chart = chart().display().to_string();
    let mut all = vec![command, "scoped-secrets", &chart, "--namespace", namespace];
    all.extend_from_slice(args);
    helm(&all, kubeconfig)
}

#[track_caller]
fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        support::stdout(&out),
        support::stderr(&out)
    );
    support::stdout(&out)
}

/// One way to install the chart: values and the API versions the cluster would serve.
struct Setup {
    name: &'static str,
    values: Vec<String>,
    api_versions: Vec<&'static str>,
}

impl Setup {
    fn new(name: &'static str, values: &[&str]) -> Self {
        Setup {
            name,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            api_versions: Vec::new(),
        }
    }

    fn serving(mut self, api_versions: &[&'static str]) -> Self {
        self.api_versions.extend_from_slice(api_versions);
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for value in &self.values {
            args.extend(["--set".to_owned(), value.clone()]);
        }
        for api in &self.api_versions {
            args.extend(["--api-versions".to_owned(), (*api).to_owned()]);
        }
        args
    }

    /// `helm template` of this setup, offline.
    fn render(&self) -> String {
        let out = self.try_render(&[]);
        succeeded(&format!("helm template ({})", self.name), out)
    }

    fn try_render(&self, extra: &[&str]) -> Output {
        let own = self.args();
        let mut args: Vec<&str> = own.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        helm_release("template", NAMESPACE, &args, None)
    }
}

fn existing_ca_bundle() -> String {
    let dir = scratch().join("existing-certs");
    scoped_secrets::certs::write_serving_set(&dir, &[SERVICE_NAME.to_owned()], &[], 1, 1)
        .expect("certificates")
        .ca_bundle_base64
}

/// Every mode with every certificate source (cert-manager where the cluster serves it).
fn setups() -> Vec<Setup> {
    let existing = format!("certificates.existing.caBundle={}", existing_ca_bundle());
    vec![
        Setup::new("standalone, self-signed", &[]),
        Setup::new(
            "standalone, cert-manager",
            &["certificates.source=cert-manager"],
        )
        .serving(&[CERT_MANAGER]),
        Setup::new(
            "standalone, existing certificate, monitoring, tuned",
            &[
                "certificates.source=existing",
                &existing,
                "serve.mode=audit",
                "serve.maxReviewsInFlight=32",
                "serve.protectedNamespaces={kube-system,infra}",
                "replicas=5",
                "priorityClassName=system-cluster-critical",
            ],
        )
        .serving(&MONITORING),
        Setup::new("besideRancher, self-signed", &["mode=besideRancher"]),
        Setup::new(
            "besideRancher, cert-manager, monitoring",
            &["mode=besideRancher", "certificates.source=cert-manager"],
        )
        .serving(&[CERT_MANAGER, MONITORING[0], MONITORING[1]]),
        Setup::new("webhookOnly, self-signed", &["mode=webhookOnly"]),
    ]
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

#[test]
fn the_entries_the_server_admits_unreviewed_are_the_ones_that_fail_open() {
    // A review an entry cannot decode is admitted with a warning exactly where the entry's outage
    // would admit it (failurePolicy: Ignore); on a Fail entry it is refused. Every overlay's
    // entries, and so the chart's (which renders the same, above), agree with the server.
    let mut checked = 0;
    for overlay in ["base", "overlays/beside-rancher", "overlays/downstream"] {
        for (key, object) in by_key(&kustomize(overlay)) {
            if !key.contains("WebhookConfiguration") {
                continue;
            }
            for webhook in object["webhooks"].as_array().into_iter().flatten() {
                let path = webhook["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap_or_default();
                let ignore = webhook["failurePolicy"] == "Ignore";
                assert_eq!(
                    scoped_secrets::webhook::handler::fails_open(path),
                    Some(ignore),
                    "{overlay}: {} at {path}",
                    webhook["name"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 12, "only {checked} entries found");
}

fn by_key(yaml: &str) -> BTreeMap<String, Value> {
    documents(yaml).into_iter().map(|o| (key(&o), o)).collect()
}

/// Labels Helm adds that kustomize does not (they say which release, not what runs).
const RELEASE_LABELS: [&str; 4] = [
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
];

/// What must be equal: everything but release labels, Helm's keep annotation, the caBundle (compared
/// by its own test), certificate material (keys and type only) and the order of env variables.
fn substance(mut object: Value) -> Value {
    fn drop_release_labels(labels: Option<&mut Value>) {
        if let Some(Value::Object(labels)) = labels {
            for label in RELEASE_LABELS {
                labels.remove(label);
            }
        }
    }
    drop_release_labels(object.pointer_mut("/metadata/labels"));
    drop_release_labels(object.pointer_mut("/spec/template/metadata/labels"));
    if let Some(Value::Object(annotations)) = object.pointer_mut("/metadata/annotations") {
        annotations.remove("helm.sh/resource-policy");
        if annotations.is_empty() {
            object["metadata"]
                .as_object_mut()
                .map(|m| m.remove("annotations"));
        }
    }
    if let Some(Value::Array(webhooks)) = object.get_mut("webhooks") {
        for webhook in webhooks {
            webhook["clientConfig"]
                .as_object_mut()
                .map(|c| c.remove("caBundle"));
        }
    }
    // Kustomize's strategic merge puts patched variables first; their order means nothing.
    if let Some(Value::Array(containers)) = object.pointer_mut("/spec/template/spec/containers") {
        for container in containers {
            if let Some(Value::Array(env)) = container.get_mut("env") {
                env.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            }
        }
    }
    if object["kind"] == "Secret" {
        let keys: Vec<String> = object["data"]
            .as_object()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        return json!({"kind": "Secret", "name": object["metadata"]["name"], "type": object["type"], "data": keys});
    }
    object
}

/// A copy of deploy/ with certificates for the self-signed overlay, and a kustomization of the
/// beside-rancher overlay with the cert-manager component (the combination deploy/README.md gives).
fn deploy_copy() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("deploy-copy");
        let copied = Command::new("cp")
            .arg("-r")
            .arg(repo().join("deploy"))
            .arg(&dir)
            .status()
            .expect("cp runs");
        assert!(copied.success());
        scoped_secrets::certs::write_serving_set(
            &dir.join("overlays/self-signed/certs"),
            &[SERVICE_NAME.to_owned()],
            &[],
            1,
            1,
        )
        .expect("certificates");
        let mine = dir.join("overlays/beside-rancher-cert-manager");
        std::fs::create_dir_all(&mine).expect("directory");
        std::fs::write(
            mine.join("kustomization.yaml"),
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [../beside-rancher]\ncomponents: [../../components/cert-manager]\n",
        )
        .expect("kustomization");
        dir
    })
}

fn kustomize(overlay: &str) -> String {
    testbed::registration::render_kustomization(&deploy_copy().join(overlay))
        .expect("kubectl kustomize")
}

/// Asserts that the chart renders the overlay's objects (only `chart_only` and `overlay_only` may
/// be missing on the other side), each equal in substance.
#[track_caller]
fn assert_same_objects(setup: &Setup, overlay: &str, chart_only: &[&str], overlay_only: &[&str]) {
    let chart = by_key(&setup.render());
    let overlay_objects = by_key(&kustomize(overlay));
    let missing: Vec<&String> = overlay_objects
        .keys()
        .filter(|k| !chart.contains_key(*k) && !overlay_only.contains(&k.as_str()))
        .collect();
    let extra: Vec<&String> = chart
        .keys()
        .filter(|k| !overlay_objects.contains_key(*k) && !chart_only.contains(&k.as_str()))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} vs {overlay}: the chart lacks {missing:?} and adds {extra:?}",
        setup.name
    );
    for (key, expected) in &overlay_objects {
        let Some(rendered) = chart.get(key) else {
            continue;
        };
        let (rendered, expected) = (substance(rendered.clone()), substance(expected.clone()));
        assert!(
            rendered == expected,
            "{} vs {overlay}: {key} differs\n--- chart\n{}\n--- overlay\n{}",
            setup.name,
            serde_json::to_string_pretty(&rendered).unwrap_or_default(),
            serde_json::to_string_pretty(&expected).unwrap_or_default()
        );
    }
}

#[test]
fn helm_lint_passes_in_every_mode() {
    let chart = chart().display().to_string();
    for mode in ["standalone", "besideRancher", "webhookOnly"] {
        let set = format!("mode={mode}");
        let out = succeeded(
            &format!("helm lint ({mode})"),
            helm(
                &[
                    "lint",
                    "--strict",
                    &chart,
                    "--namespace",
                    NAMESPACE,
                    "--set",
                    &set,
                ],
                None,
            ),
        );
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{out}"
        );
    }
}

#[test]
fn every_mode_renders_what_deploy_renders() {
    let ca_secret = "Secret/scoped-secrets-ca";
    let namespace = "Namespace/scoped-secrets-system";
    assert_same_objects(
        &Setup::new("standalone, self-signed", &[]),
        "overlays/self-signed",
        &[ca_secret],
        &[namespace],
    );
    assert_same_objects(
        &Setup::new(
            "standalone, cert-manager",
            &["certificates.source=cert-manager"],
        )
        .serving(&[CERT_MANAGER]),
        "overlays/cert-manager",
        &[],
        &[namespace],
    );
    assert_same_objects(
        &Setup::new(
            "besideRancher, cert-manager",
            &["mode=besideRancher", "certificates.source=cert-manager"],
        )
        .serving(&[CERT_MANAGER]),
        "overlays/beside-rancher-cert-manager",
        &[],
        &[namespace],
    );
}

#[test]
fn rbac_is_exactly_deploys_in_every_mode() {
    let rbac = |yaml: &str| -> BTreeMap<String, Value> {
        by_key(yaml)
            .into_iter()
            .filter(|(k, _)| {
                ["ClusterRole/", "ClusterRoleBinding/", "Role/", "RoleBinding/"]
                    .iter()
                    .any(|kind| k.starts_with(kind))
            })
            .map(|(k, o)| (k, json!({"rules": o["rules"], "roleRef": o["roleRef"], "subjects": o["subjects"], "namespace": o["metadata"]["namespace"]})))
            .collect()
    };
    let base = rbac(&kustomize("base"));
    let read_only = rbac(&kustomize("overlays/beside-rancher"));
    assert_eq!(base.len(), 4, "deploy/base's RBAC: {base:#?}");
    assert_eq!(read_only.len(), 2, "beside-rancher's RBAC: {read_only:#?}");
    for (setup, expected) in [
        (Setup::new("standalone", &[]), &base),
        (
            Setup::new("besideRancher", &["mode=besideRancher"]),
            &read_only,
        ),
        (Setup::new("webhookOnly", &["mode=webhookOnly"]), &read_only),
    ] {
        assert_eq!(&rbac(&setup.render()), expected, "{}", setup.name);
    }
}

#[test]
fn webhook_only_mode_serves_the_webhook_with_the_crd_and_nothing_else() {
    let objects = by_key(&Setup::new("webhookOnly", &["mode=webhookOnly"]).render());
    assert!(objects.contains_key("CustomResourceDefinition/projects.management.cattle.io"));
    let env =
        &objects["Deployment/scoped-secrets"]["spec"]["template"]["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == name))
            .map(|v| v["value"].clone())
    };
    assert_eq!(value("SCOPED_SECRETS_RECONCILER"), Some(json!("false")));
    assert_eq!(
        value("SCOPED_SECRETS_MANAGE_BACKING_NAMESPACES"),
        Some(json!("false"))
    );
    assert_eq!(
        value("SCOPED_SECRETS_RECONCILER_USERS"),
        Some(json!(
            "system:serviceaccount:scoped-secrets-system:scoped-secrets"
        ))
    );
}

#[test]
fn values_reach_the_pods_and_the_webhooks() {
    let objects = by_key(
        &Setup::new(
            "tuned",
            &[
                "replicas=5",
                "serve.mode=audit",
                "serve.overwritePolicy=deny",
                "serve.protectCopies=false",
                "serve.maxReviewsInFlight=32",
                "serve.maxLargeBodyBytes=16777216",
                "serve.largeBodyBytesPerSecond=0",
                "serve.maxConnections=100",
                "serve.maxConnectionsPerAddress=40",
                "serve.logFormat=text",
                "serve.logLevel=debug",
                "serve.protectedNamespaces={kube-system,infra}",
                "serve.extraTrustedUsers={system:serviceaccount:flux-system:kustomize-controller}",
                "image.repository=registry.example.com/scoped-secrets",
                "image.tag=1.2.3",
                "resources.limits.memory=1Gi",
                "podDisruptionBudget.maxUnavailable=2",
                "serve.clientCAConfigMap=apiserver-client-ca",
                "serve.allowedClientNames={kube-apiserver,kube-apiserver-proxy}",
            ],
        )
        .render(),
    );
    let deployment = &objects["Deployment/scoped-secrets"];
    assert_eq!(deployment["spec"]["replicas"], 5);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "registry.example.com/scoped-secrets:1.2.3"
    );
    assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
    let env: BTreeMap<String, Value> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                v["value"].clone(),
            )
        })
        .collect();
    let trusted = "system:serviceaccount:scoped-secrets-system:scoped-secrets,system:serviceaccount:flux-system:kustomize-controller";
    for (name, value) in [
        ("SCOPED_SECRETS_MODE", "audit"),
        ("SCOPED_SECRETS_OVERWRITE_POLICY", "deny"),
        ("SCOPED_SECRETS_PROTECT_COPIES", "false"),
        ("SCOPED_SECRETS_MAX_REVIEWS_IN_FLIGHT", "32"),
        ("SCOPED_SECRETS_MAX_LARGE_BODY_BYTES", "16777216"),
        ("SCOPED_SECRETS_LARGE_BODY_BYTES_PER_SECOND", "0"),
        ("SCOPED_SECRETS_MAX_CONNECTIONS", "100"),
        ("SCOPED_SECRETS_MAX_CONNECTIONS_PER_ADDRESS", "40"),
        ("SCOPED_SECRETS_LOG_FORMAT", "text"),
        ("RUST_LOG", "debug"),
        ("SCOPED_SECRETS_PROTECTED_NAMESPACES", "kube-system,infra"),
        ("SCOPED_SECRETS_RECONCILER_USERS", trusted),
        ("SCOPED_SECRETS_CLIENT_CA_FILE", "/client-ca/ca.crt"),
        (
            "SCOPED_SECRETS_ALLOWED_CLIENT_NAMES",
            "kube-apiserver,kube-apiserver-proxy",
        ),
    ] {
        assert_eq!(env.get(name), Some(&json!(value)), "{name} in {env:#?}");
    }
    // The client CA's ConfigMap is mounted where the variable says.
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(
        pod["volumes"].as_array().expect("volumes").contains(&json!({
            "name": "client-ca",
            "configMap": {"name": "apiserver-client-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
        })),
        "{:#}",
        pod["volumes"]
    );
    assert!(
        container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .contains(&json!({"name": "client-ca", "mountPath": "/client-ca", "readOnly": true})),
        "{:#}",
        container["volumeMounts"]
    );
    // Every entry skips the same identities the binary trusts.
    let expression = "!(request.userInfo.username in ['system:serviceaccount:scoped-secrets-system:scoped-secrets', 'system:serviceaccount:flux-system:kustomize-controller'])";
    for configuration in [
        "ValidatingWebhookConfiguration/scoped-secrets",
        "MutatingWebhookConfiguration/scoped-secrets",
    ] {
        for webhook in objects[configuration]["webhooks"]
            .as_array()
            .expect("webhooks")
        {
            assert_eq!(
                webhook["matchConditions"][0],
                json!({"name": "not-the-reconciler", "expression": expression}),
                "{}",
                webhook["name"]
            );
        }
    }
    assert_eq!(
        objects["PodDisruptionBudget/scoped-secrets"]["spec"]["maxUnavailable"],
        2
    );
}

#[test]
fn another_release_namespace_is_exempt_and_its_service_account_trusted() {
    let rendered = succeeded(
        "helm template -n security",
        helm_release("template", "security", &[], None),
    );
    let objects = by_key(&rendered);
    let validating = &objects["ValidatingWebhookConfiguration/scoped-secrets"]["webhooks"][0];
    assert_eq!(
        validating["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["kube-system", "kube-public", "kube-node-lease", "security"])
    );
    assert_eq!(
        validating["matchConditions"][0]["expression"],
        "request.userInfo.username != 'system:serviceaccount:security:scoped-secrets'"
    );
    assert_eq!(
        validating["clientConfig"]["service"]["namespace"],
        "security"
    );
    let bundle = ca_bundle(&objects);
    let secret = &objects["Secret/scoped-secrets-tls"];
    handshake(secret, &bundle, "scoped-secrets.security.svc").expect("the Service's name");
    assert!(!rendered.contains("scoped-secrets-system"), "{rendered}");
}

#[test]
fn monitoring_objects_only_where_the_cluster_serves_them() {
    let without = by_key(&Setup::new("no monitoring CRDs", &[]).render());
    assert!(!without.contains_key("ServiceMonitor/scoped-secrets"));
    assert!(!without.contains_key("PrometheusRule/scoped-secrets"));

    let alerts = |objects: &BTreeMap<String, Value>| -> Vec<String> {
        objects["PrometheusRule/scoped-secrets"]["spec"]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|g| g["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let with = by_key(
        &Setup::new("monitoring CRDs", &[])
            .serving(&MONITORING)
            .render(),
    );
    let monitor = &with["ServiceMonitor/scoped-secrets"];
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let service = &with["Service/scoped-secrets-metrics"];
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "admin");
    // The rules are deploy/monitoring's, every group of them.
    let deployed = &documents(
        &std::fs::read_to_string(repo().join("deploy/monitoring/prometheus-rules.yaml"))
            .expect("deploy/monitoring/prometheus-rules.yaml"),
    )[0]["spec"];
    assert_eq!(&with["PrometheusRule/scoped-secrets"]["spec"], deployed);
    assert_eq!(
        alerts(&with),
        ["scoped-secrets.webhook", "scoped-secrets.reconciler"]
    );

    // Without a reconciler its alerts would always fire.
    let beside = by_key(
        &Setup::new("besideRancher, monitoring CRDs", &["mode=besideRancher"])
            .serving(&MONITORING)
            .render(),
    );
    assert_eq!(alerts(&beside), ["scoped-secrets.webhook"]);

    let off = by_key(
        &Setup::new(
            "monitoring off",
            &[
                "monitoring.serviceMonitor.enabled=false",
                "monitoring.prometheusRule.enabled=false",
            ],
        )
        .serving(&MONITORING)
        .render(),
    );
    assert!(!off.contains_key("ServiceMonitor/scoped-secrets"));
    assert!(!off.contains_key("PrometheusRule/scoped-secrets"));
}

#[test]
fn the_chart_carries_deploys_files_and_the_crates_version() {
    for (copy, original) in [
        ("files/crd-project.yaml", "deploy/base/crd-project.yaml"),
        (
            "files/prometheus-rules.yaml",
            "deploy/monitoring/prometheus-rules.yaml",
        ),
    ] {
        let read =
            |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert!(
            read(chart().join(copy)) == read(repo().join(original)),
            "charts/scoped-secrets/{copy} differs from {original}: copy it again"
        );
    }
    let chart_yaml = std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml");
    assert!(
        chart_yaml.contains(&format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"))),
        "Chart.yaml's appVersion is not Cargo.toml's version {}",
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn bad_values_are_refused_with_a_message_naming_them() {
    for (values, expected) in [
        (vec!["mode=standlone"], "at '/mode': value must be one of"),
        (vec!["replicas=0"], "at '/replicas'"),
        (
            vec!["replica=3"],
            "additional properties 'replica' not allowed",
        ),
        (
            vec!["serve.mode=Enforce"],
            "at '/serve/mode': value must be one of",
        ),
        (
            vec!["serve.overwritePolicy=allow"],
            "at '/serve/overwritePolicy'",
        ),
        (
            vec!["certificates.source=vault"],
            "at '/certificates/source'",
        ),
        (vec!["certificates.source=existing"], "caBundle"),
        (
            vec![
                "certificates.source=existing",
                "certificates.existing.caBundle=bm90IGEgY2VydA==",
            ],
            "certificates.existing.caBundle must be the base64 of a PEM certificate",
        ),
        (
            vec!["certificates.source=cert-manager"],
            "certificates.source=cert-manager needs cert-manager",
        ),
        (
            vec!["serve.allowedClientNames={kube-apiserver}"],
            "serve.allowedClientNames needs serve.clientCAConfigMap",
        ),
        (
            vec!["serve.clientCAConfigMap=Not_A_Name"],
            "at '/serve/clientCAConfigMap'",
        ),
        (
            vec!["serve.extraTrustedUsers={a'b}"],
            "at '/serve/extraTrustedUsers/0'",
        ),
    ] {
        let setup = Setup::new("bad", &values);
        let out = setup.try_render(&[]);
        let stderr = support::stderr(&out);
        assert!(!out.status.success(), "{values:?} was accepted");
        assert!(stderr.contains(expected), "{values:?}: {stderr}");
    }
    let old_cluster = Setup::new("Kubernetes 1.29", &[]).try_render(&["--kube-version", "1.29.9"]);
    assert!(
        support::stderr(&old_cluster).contains("scoped-secrets needs Kubernetes 1.30 or newer"),
        "{}",
        support::stderr(&old_cluster)
    );
    let supported = Setup::new("Kubernetes 1.30", &[]).try_render(&["--kube-version", "1.30.0"]);
    assert!(
        supported.status.success(),
        "{}",
        support::stderr(&supported)
    );
}

/// The product's own TLS server, given the Secret's certificate and key, is trusted by a client that
/// trusts only the caBundle, under `name` (what the apiserver checks when it calls the Service).
fn handshake(secret: &Value, ca_bundle: &str, name: &str) -> Result<(), String> {
    let decode = |field: &str| -> Vec<u8> {
        let text = secret["data"][field].as_str().unwrap_or_default();
        base64_decode(text)
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, decode("tls.crt")).map_err(|e| e.to_string())?;
    std::fs::write(&key, decode("tls.key")).map_err(|e| e.to_string())?;
    let loaded = scoped_secrets::webhook::tls::ReloadingCert::load(&cert, &key)
        .map_err(|e| format!("the server cannot load the Secret: {e}"))?;
    let server =
        scoped_secrets::webhook::tls::server_config(loaded, None).map_err(|e| e.to_string())?;

    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = base64_decode(ca_bundle);
    for ca in rustls_pki_types::CertificateDer::pem_slice_iter(&ca_pem) {
        roots
            .add(ca.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name =
        rustls_pki_types::ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let accept = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.ok()?;
            acceptor.accept(stream).await.ok()
        });
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let connected = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, stream)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        accept.abort();
        connected
    })
}

fn base64_decode(text: &str) -> Vec<u8> {
    serde_json::from_value::<k8s_openapi::ByteString>(json!(text))
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text}"))
        .0
}

/// The caBundle of every webhook entry, which must all be the same.
fn ca_bundle(objects: &BTreeMap<String, Value>) -> String {
    let mut bundles: Vec<String> = [
        "ValidatingWebhookConfiguration/scoped-secrets",
        "MutatingWebhookConfiguration/scoped-secrets",
    ]
    .iter()
    .flat_map(|k| {
        objects[*k]["webhooks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    })
    .map(|w| {
        w["clientConfig"]["caBundle"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    })
    .collect();
    assert_eq!(bundles.len(), 6, "six entries");
    bundles.dedup();
    assert_eq!(
        bundles.len(),
        1,
        "one caBundle for all entries: {bundles:?}"
    );
    assert!(!bundles[0].is_empty(), "a caBundle");
    bundles.remove(0)
}

#[test]
fn the_self_signed_certificate_is_trusted_through_the_ca_bundle_under_the_service_name() {
    let objects = by_key(&Setup::new("standalone, self-signed", &[]).render());
    let bundle = ca_bundle(&objects);
    let secret = &objects["Secret/scoped-secrets-tls"];
    assert_eq!(
        secret["data"]["ca.crt"],
        bundle.as_str(),
        "the Secret's ca.crt is the caBundle"
    );
    handshake(secret, &bundle, SERVICE_NAME).expect("the apiserver's view of the webhook");
    handshake(
        secret,
        &bundle,
        "scoped-secrets.scoped-secrets-system.svc.cluster.local",
    )
    .expect("the long Service name");
    // The check is real: another name, or another CA, is refused.
    let wrong_name = handshake(secret, &bundle, "scoped-secrets.elsewhere.svc");
    assert!(
        wrong_name.is_err(),
        "a certificate for another name was trusted"
    );
    let other = by_key(&Setup::new("another render", &[]).render());
    assert!(
        handshake(secret, &ca_bundle(&other), SERVICE_NAME).is_err(),
        "another render's CA trusted this certificate"
    );
}

/// The control plane of this test binary, and a lock: the tests that write to it register objects
/// with the same cluster-wide names.
fn cluster() -> (&'static Path, std::sync::MutexGuard<'static, ()>) {
    // Kept for the whole run: its guard stops the control plane when this process exits.
    static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let control_plane = CONTROL_PLANE.get_or_init(|| {
        let control_plane =
            support::start_control_plane(&scratch().join("control-plane")).expect("control plane");
        support::ok(support::kubectl_stdin(
            &control_plane.kubeconfig,
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n"),
        ));
        control_plane
    });
    let kubeconfig = control_plane.kubeconfig.as_path();
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    (kubeconfig, guard)
}

#[test]
fn every_mode_passes_a_server_side_dry_run() {
    let (kubeconfig, _lock) = cluster();
    for crds in [
        "hack/testdata/cert-manager-stand-in-crds.yaml",
        "hack/testdata/monitoring-stand-in-crds.yaml",
    ] {
        let path = repo().join(crds).display().to_string();
        support::ok(support::kubectl_with(kubeconfig, &["apply", "-f", &path]));
    }
    support::ok(support::kubectl_with(
        kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "-l",
            "scoped-secrets.io/stand-in=true",
        ],
    ));
    for setup in setups() {
        let rendered = setup.render();
        let out = support::kubectl_stdin(
            kubeconfig,
            &["apply", "--server-side", "--dry-run=server", "-f", "-"],
            &rendered,
        );
        let (stdout, stderr) = (support::stdout(&out), support::stderr(&out));
        assert!(out.status.success(), "{}: {stderr}", setup.name);
        assert!(
            stderr.trim().is_empty(),
            "{}: warnings: {stderr}",
            setup.name
        );
        assert_eq!(
            stdout.lines().count(),
            documents(&rendered).len(),
            "{}: every object applied: {stdout}",
            setup.name
        );
    }
    // helm reads the cluster's own API versions: the stand-ins make it render the monitoring objects.
    let validated = succeeded(
        "helm template --validate",
        helm_release("template", NAMESPACE, &["--validate"], Some(kubeconfig)),
    );
    let objects = by_key(&validated);
    assert!(
        objects.contains_key("ServiceMonitor/scoped-secrets"),
        "{validated}"
    );
    assert!(
        objects.contains_key("PrometheusRule/scoped-secrets"),
        "{validated}"
    );
}

#[test]
fn helm_install_upgrade_and_uninstall_against_the_control_plane() {
    let (kubeconfig, _lock) = cluster();
    let installed = |what: &str| -> (Value, String) {
        let secret: Value = serde_json::from_str(&support::ok(support::kubectl_with(
            kubeconfig,
            &[
                "get",
                "secret",
                "scoped-secrets-tls",
                "-n",
                NAMESPACE,
                "-o",
                "json",
            ],
        )))
        .expect("JSON");
        let mut objects = BTreeMap::new();
        for kind in [
            "validatingwebhookconfiguration",
            "mutatingwebhookconfiguration",
        ] {
            let object: Value = serde_json::from_str(&support::ok(support::kubectl_with(
                kubeconfig,
                &["get", kind, "scoped-secrets", "-o", "json"],
            )))
            .expect("JSON");
            objects.insert(key(&object), object);
        }
        let bundle = ca_bundle(&objects);
        assert_eq!(
            secret["data"]["ca.crt"],
            bundle.as_str(),
            "{what}: ca.crt is the caBundle"
        );
        handshake(&secret, &bundle, SERVICE_NAME).unwrap_or_else(|e| {
            panic!("{what}: the installed caBundle does not trust the installed certificate: {e}")
        });
        (secret, bundle)
    };

    // Without cert-manager in the cluster, helm reads that from the cluster and says so.
    let has_cert_manager =
        support::kubectl_with(kubeconfig, &["get", "crd", "certificates.cert-manager.io"])
            .status
            .success();
    if !has_cert_manager {
        let refused = helm_release(
            "install",
            NAMESPACE,
            &["--set", "certificates.source=cert-manager"],
            Some(kubeconfig),
        );
        assert!(
            support::stderr(&refused).contains("needs cert-manager"),
            "{}",
            support::stderr(&refused)
        );
    }

    succeeded(
        "helm install",
        helm_release("install", NAMESPACE, &[], Some(kubeconfig)),
    );
    let (first_secret, first_bundle) = installed("after install");

    succeeded(
        "helm upgrade",
        helm_release(
            "upgrade",
            NAMESPACE,
            &["--reuse-values", "--set", "serve.mode=audit"],
            Some(kubeconfig),
        ),
    );
    let (second_secret, second_bundle) = installed("after upgrade");
    assert_eq!(first_bundle, second_bundle, "an upgrade keeps the CA");
    assert_ne!(
        first_secret["data"]["tls.crt"], second_secret["data"]["tls.crt"],
        "an upgrade issues a new serving certificate"
    );
    let mode = support::ok(support::kubectl_with(
        kubeconfig,
        &[
            "get",
            "deploy",
            "scoped-secrets",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"SCOPED_SECRETS_MODE\")].value}",
        ],
    ));
    assert_eq!(mode, "audit");

    succeeded(
        "helm uninstall",
        helm(
            &["uninstall", "scoped-secrets", "-n", NAMESPACE, "--wait"],
            Some(kubeconfig),
        ),
    );
    for gone in [
        "validatingwebhookconfiguration/scoped-secrets",
        "mutatingwebhookconfiguration/scoped-secrets",
        "clusterrole/scoped-secrets",
    ] {
        let out = support::kubectl_with(kubeconfig, &["get", gone, "-n", NAMESPACE]);
        assert!(!out.status.success(), "{gone} outlived helm uninstall");
    }
    // Deleting the CRD would delete every Project: it stays, then this test removes it.
    support::ok(support::kubectl_with(
        kubeconfig,
        &["get", "crd", "projects.management.cattle.io"],
    ));
    support::ok(support::kubectl_with(
        kubeconfig,
        &["delete", "crd", "projects.management.cattle.io", "--wait"],
    ));
}
