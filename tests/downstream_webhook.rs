//! The webhook in a downstream cluster (issue #11, item 5): `serve --cluster-id c-down1
//! --management-kubeconfig <file>` against a control plane of its own, reading the shared
//! environment's control plane as the management cluster through the read-only identity of
//! `deploy/overlays/management-reader`, with `deploy/overlays/downstream`'s RBAC and webhook
//! configurations. S1, S5 and N1 are shown to hold downstream, decided from the management cluster's
//! Project and original and (N1) from this cluster's own RBAC; and `serve` refuses to start on a
//! management kubeconfig it cannot read or must not use.

use scoped_secrets::keys::{self, ProjectId};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;
use testbed::control_plane::{ControlPlane, Options};
use testbed::env::{ExtraServer, start_server};
use testbed::harness::apply_original;
use testbed::prelude::*;
use testbed::registration;

const CLUSTER: &str = "c-down1";
const COPIER: &str = "system:serviceaccount:scoped-secrets-system:scoped-secrets-copier";
/// The copier, lent the service accounts' group as a real token would carry it.
const AS_COPIER: [&str; 2] = [
    "--as=system:serviceaccount:scoped-secrets-system:scoped-secrets-copier",
    "--as-group=system:serviceaccounts",
];
const WEBHOOK_USER: &str = "system:serviceaccount:scoped-secrets-system:scoped-secrets";
const GUARD: &str = "secret-guard.scoped-secrets.io";
const NAMES: &str = "secret-names.scoped-secrets.io";
const NAMESPACE_GUARD: &str = "namespace-guard.scoped-secrets.io";
const WAIT: Duration = Duration::from_secs(40);

/// The downstream cluster, its webhook, and the management cluster's project of it.
struct Downstream {
    /// Kept alive for the whole test binary.
    _control_plane: ControlPlane,
    server: ExtraServer,
    kubeconfig: PathBuf,
    project: TestProject,
}

/// The downstream cluster, its webhook still serving (every test asks for it many times).
#[track_caller]
fn downstream() -> &'static Downstream {
    static DOWNSTREAM: OnceLock<Downstream> = OnceLock::new();
    let down = DOWNSTREAM.get_or_init(start_downstream);
    down.server.assert_running();
    down
}

fn overlay(name: &str) -> PathBuf {
    Path::new(REPO).join("deploy/overlays").join(name)
}

fn start_downstream() -> Downstream {
    let env = env();
    let management_kubeconfig = management_reader_kubeconfig();
    let project = management_project();
    apply_original(&project, "test-secret", "key: ZG9n", "");

    let control_plane = ControlPlane::start_blocking(
        &Options::new(env.state_dir.join("downstream")).without_controller_manager(),
    )
    .expect("the downstream control plane starts");
    let kubeconfig = control_plane.kubeconfig.clone();
    let manifests =
        registration::render_kustomization(&overlay("downstream")).expect("the overlay renders");
    let setup = registration::prerequisites(&manifests).expect("its prerequisites");
    ok(kubectl_stdin(
        &kubeconfig,
        &["apply", "--server-side", "-f", "-"],
        &setup,
    ));

    let mut args = serve_args(&env.state_dir.join("certs"));
    args.cluster_id = Some(CLUSTER.to_owned());
    args.management_kubeconfig = Some(management_kubeconfig);
    args.reconciler = false;
    args.reconciler_users = vec![WEBHOOK_USER.to_owned(), COPIER.to_owned()];
    // As the product's service account of the downstream cluster, with the overlay's RBAC.
    let server = start_server(args, control_plane.sa_kubeconfig.clone())
        .unwrap_or_else(|e| panic!("the downstream webhook starts: {e:#}"));

    let configurations = registration::local_webhook_configurations(
        &manifests,
        &format!("https://{}", server.webhook_addr),
        &env.ca_bundle,
    )
    .expect("the overlay's webhook configurations");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let admin = testbed::env::client(&kubeconfig).await?;
            registration::apply(&admin, &configurations).await
        })
        .expect("the webhooks registered downstream");

    // Its index holds the management cluster's project and original.
    let id = ProjectId::new(CLUSTER, &project.name);
    eventually(
        "the management cluster's project and original downstream",
        WAIT,
        || {
            let world = server.index.read();
            (world
                .project(&id)
                .is_some_and(|p| p.backing_namespace == project.backing)
                && world.originals().any(|o| o.name() == "test-secret"))
            .then_some(())
        },
    );
    ok(kubectl_with(&kubeconfig, &["create", "namespace", CLUSTER]));
    Downstream {
        _control_plane: control_plane,
        server,
        kubeconfig,
        project,
    }
}

/// A kubeconfig of the management cluster as `deploy/overlays/management-reader`'s service account:
/// the shared environment's server and CA, that account's token.
fn management_reader_kubeconfig() -> PathBuf {
    let path = overlay("management-reader");
    ok(kubectl(&["apply", "-k", &path.display().to_string()]));
    let token = eventually("the reader's token", WAIT, || {
        let out = kubectl(&[
            "get",
            "secret",
            "scoped-secrets-downstream-reader-token",
            "-n",
            "scoped-secrets-system",
            "-o",
            "go-template={{if .data.token}}{{.data.token | base64decode}}{{end}}",
        ]);
        let token = stdout(&out).trim().to_owned();
        (out.status.success() && !token.is_empty()).then_some(token)
    });
    let admin = std::fs::read_to_string(&env().kubeconfig).expect("the admin kubeconfig");
    let reader: String = admin
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("user: {token:") {
                format!("  user: {{token: {token}}}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert_ne!(reader, admin, "the token was replaced");
    let file = env().state_dir.join("management-reader.kubeconfig");
    std::fs::write(&file, reader).expect("writing the reader's kubeconfig");
    // It reads, and only reads.
    let can = |verb: &str, what: &str| stdout(&kubectl_with(&file, &["auth", "can-i", verb, what]));
    assert_eq!(can("list", "projects.management.cattle.io").trim(), "yes");
    assert_eq!(can("watch", "secrets").trim(), "yes");
    assert_eq!(can("create", "secrets").trim(), "no");
    file
}

/// Project `c-down1:<name>` in the management cluster, with its backing namespace there.
fn management_project() -> TestProject {
    project_in(CLUSTER, &unique("p-down"))
}

/// `kubectl` against the downstream cluster, as its admin.
/// `kubectl` in the downstream cluster, as the admin: `line` split at white space.
fn downstream_kubectl(line: &str) -> Output {
    kubectl_line_with(&downstream().kubeconfig, line)
}

fn downstream_apply(yaml: &str, extra: &[&str]) -> Output {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    kubectl_stdin(&downstream().kubeconfig, &args, yaml)
}

fn namespace_yaml(name: &str, project: &TestProject) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  annotations: {{{key}: \"{CLUSTER}:{p}\"}}\n",
        key = keys::PROJECT_ID_KEY,
        p = project.name
    )
}

/// A downstream namespace in the project (created by the admin), where user `dev` may edit
/// secrets, once the downstream webhook has indexed it.
fn project_namespace(prefix: &str) -> String {
    let down = downstream();
    let ns = unique(prefix);
    ok(downstream_apply(&namespace_yaml(&ns, &down.project), &[]));
    secrets_editable_by_dev(&ns);
    let id = ProjectId::new(CLUSTER, &down.project.name);
    eventually("the namespace in the downstream index", WAIT, || {
        let world = down.server.index.read();
        world
            .namespace(&ns)
            .is_some_and(|n| world.member_project(n) == Some(id.clone()))
            .then_some(())
    });
    ns
}

/// User `dev` may edit secrets in downstream namespace `ns` (and nothing else), once granted.
fn secrets_editable_by_dev(ns: &str) {
    // Not the built-in `edit`: its rules are aggregated by a controller this control plane lacks.
    ok(downstream_kubectl(&format!(
        "create role secret-editor --verb=get,list,create,update,patch,delete --resource=secrets -n {ns}"
    )));
    ok(downstream_kubectl(&format!(
        "create rolebinding dev-edits --role=secret-editor --user=dev -n {ns}"
    )));
    eventually("dev's grant", WAIT, || {
        (stdout(&downstream_kubectl(&format!(
            "auth can-i create secrets -n {ns} --as=dev"
        )))
        .trim()
            == "yes")
            .then_some(())
    });
}

#[track_caller]
fn assert_denied(err: &str, webhook: &str, message: &str) {
    let expected = format!("admission webhook \"{webhook}\" denied the request: {message}");
    assert!(
        err.contains(&expected),
        "expected\n  {expected}\nin kubectl's error output:\n  {err}"
    );
}

#[test]
fn s1_a_name_reserved_by_a_management_original_is_refused_downstream() {
    let down = downstream();
    let ns = project_namespace("team-a");
    let create = |name: &str| {
        downstream_kubectl(&format!(
            "create secret generic {name} -n {ns} --from-literal=key=value --as=dev"
        ))
    };
    let err = fails(create("test-secret"));
    assert_denied(
        &err,
        NAMES,
        &format!(
            "secret name \"test-secret\" in namespace \"{ns}\" is reserved by project-scoped \
             secret \"{}/test-secret\" of project {}",
            down.project.backing, down.project.name
        ),
    );
    // The original lives in the management cluster only: nothing downstream reserves the name.
    fails(downstream_kubectl(&format!(
        "get namespace {}",
        down.project.backing
    )));
    ok(create("not-reserved"));
}

#[test]
fn a_namespace_named_like_a_management_backing_namespace_is_this_clusters_own() {
    // Whoever may create namespaces downstream makes one named like the management cluster's
    // backing namespace. What the webhook says there is about that namespace, never about the
    // management cluster's (whose originals' names and types it would tell, and whose label it
    // would let in).
    let down = downstream();
    let named = management_project();
    apply_original(&named, "kept-there", "key: ZG9n", "");
    let id = ProjectId::new(CLUSTER, &named.name);
    eventually("the management cluster's original downstream", WAIT, || {
        let world = down.server.index.read();
        (world.owned_backing_namespace(&id) == Some(named.backing.as_str())
            && world.original_at(&named.backing, "kept-there").is_some())
        .then_some(())
    });
    let ns = &named.backing;
    ok(downstream_kubectl(&format!("create namespace {ns}")));
    // An ordinary user of that namespace, with no right in the management cluster.
    secrets_editable_by_dev(ns);
    ok(downstream_kubectl(&format!(
        "create secret generic kept-there -n {ns} --from-literal=key=value --dry-run=server --as=dev"
    )));
    let labelled = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: planted\n  namespace: {ns}\n  labels: {{{}: {}}}\n",
        keys::PROJECT_SCOPED_LABEL,
        named.name
    );
    let err = fails(downstream_apply(
        &labelled,
        &["--dry-run=server", "--as=dev"],
    ));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "label {} is only allowed on secrets in a project's backing namespace",
            keys::PROJECT_SCOPED_LABEL
        ),
    );
}

#[test]
fn s5_a_copy_downstream_is_read_only_except_for_the_copier() {
    let down = downstream();
    let ns = project_namespace("team-c");
    let copy = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: test-secret
  namespace: {ns}
  labels: {{{label}: {p}, {cluster_label}: {CLUSTER}}}
  annotations:
    {copy}: \"true\"
    {user}: \"true\"
    {origin}: {backing}/test-secret
data: {{key: ZG9n}}
",
        label = keys::PROJECT_SCOPED_LABEL,
        cluster_label = keys::PROJECT_SCOPED_CLUSTER_LABEL,
        p = down.project.name,
        copy = keys::COPY_ANNOTATION,
        user = keys::USER_SECRET_ANNOTATION,
        origin = keys::ORIGIN_ANNOTATION,
        backing = down.project.backing,
    );
    // The same copy from dev is refused (a forged copy, S4, and a reserved name, S1); from the
    // copier it is accepted.
    fails(kubectl_stdin(
        &down.kubeconfig,
        &["create", "-f", "-", "--as=dev"],
        &copy,
    ));
    ok(kubectl_stdin(
        &down.kubeconfig,
        &["create", "-f", "-", AS_COPIER[0], AS_COPIER[1]],
        &copy,
    ));
    eventually("the copy in the downstream index", WAIT, || {
        down.server
            .index
            .read()
            .secret_meta(&ns, "test-secret")
            .is_some_and(|m| m.is_copy())
            .then_some(())
    });

    let expected = format!(
        "secret \"test-secret\" in namespace \"{ns}\" is a copy of project-scoped secret \
         \"{}/test-secret\"; change the original instead",
        down.project.backing
    );
    let err = fails(downstream_kubectl(&format!(
        "annotate secret test-secret -n {ns} edited=yes --as=dev"
    )));
    assert_denied(&err, GUARD, &expected);
    let err = fails(downstream_kubectl(&format!(
        "delete secret test-secret -n {ns} --as=dev"
    )));
    assert_denied(&err, GUARD, &expected);

    // The copier replaces it (its RBAC updates, never patches).
    let current = ok(downstream_kubectl(&format!(
        "get secret test-secret -n {ns} -o json"
    )));
    let mut secret: serde_json::Value = serde_json::from_str(&current).expect("JSON");
    secret["metadata"]["annotations"]["copied-again"] = "yes".into();
    ok(kubectl_stdin(
        &down.kubeconfig,
        &["replace", "-f", "-", AS_COPIER[0], AS_COPIER[1]],
        &secret.to_string(),
    ));
    let annotations = ok(downstream_kubectl(&format!(
        "get secret test-secret -n {ns} -o jsonpath={{.metadata.annotations}}"
    )));
    assert!(annotations.contains("copied-again"), "{annotations}");
    assert!(!annotations.contains("edited"), "{annotations}");
}

#[test]
fn n1_joining_downstream_needs_manage_namespaces_in_the_downstream_cluster() {
    let down = downstream();
    let project = &down.project;
    // alice, bob and carol may create namespaces downstream; alice may manage the project's
    // namespaces there; carol may only in the management cluster, which the SAR must not ask.
    let editor = testbed::rbac::namespace_editor(
        "namespace-editor",
        "namespaces",
        &["alice", "bob", "carol"],
    );
    ok(downstream_apply(&editor, &[]));
    let manage = |user: &str| {
        let name = format!("manage-{}", project.name);
        testbed::rbac::project_namespace_manager(&name, CLUSTER, &project.name, user)
    };
    ok(downstream_apply(&manage("alice"), &[]));
    ok(kubectl_apply(&manage("carol"), &[]));
    // Asked as the webhook asks (kubectl auth can-i cannot name a resource the cluster does not
    // serve, and the Project CRD is not served downstream).
    let can = |kubeconfig: &Path, user: &str| {
        let review = format!(
            "apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: {user}
  resourceAttributes: {{group: {group}, resource: {plural}, name: {p}, namespace: {CLUSTER}, verb: {verb}}}
",
            group = keys::PROJECT_GROUP,
            plural = keys::PROJECT_PLURAL,
            verb = keys::MANAGE_NAMESPACES_VERB,
            p = project.name
        );
        let allowed = ok(kubectl_stdin(
            kubeconfig,
            &["create", "-f", "-", "-o", "jsonpath={.status.allowed}"],
            &review,
        ));
        if allowed.trim() == "true" {
            "yes"
        } else {
            "no"
        }
        .to_owned()
    };
    let grants = || {
        [
            can(&down.kubeconfig, "alice"),
            can(&env().kubeconfig, "carol"),
            stdout(&downstream_kubectl(
                "auth can-i create namespaces --as=carol",
            ))
            .trim()
            .to_owned(),
        ]
    };
    let mut last = Default::default();
    let settled = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < settled {
        last = grants();
        if last.iter().all(|answer| answer == "yes") {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(200));
    }
    assert!(
        last.iter().all(|answer| answer == "yes"),
        "alice downstream, carol in the management cluster, carol's namespaces downstream: {last:?}"
    );
    assert_eq!(can(&down.kubeconfig, "bob"), "no");
    assert_eq!(can(&down.kubeconfig, "carol"), "no");

    for user in ["bob", "carol"] {
        let ns = unique(&format!("n1-{user}"));
        let err = fails(downstream_apply(
            &namespace_yaml(&ns, project),
            &[&format!("--as={user}")],
        ));
        assert_denied(
            &err,
            NAMESPACE_GUARD,
            &format!(
                "user \"{user}\" may not move namespace \"{ns}\" into project {CLUSTER}:{p}: that \
                 needs verb manage-namespaces on projects.management.cattle.io \"{p}\" in \
                 namespace \"{CLUSTER}\"",
                p = project.name
            ),
        );
        fails(downstream_kubectl(&format!("get namespace {ns}")));
    }
    let ns = unique("n1-alice");
    ok(downstream_apply(
        &namespace_yaml(&ns, project),
        &["--as=alice"],
    ));
    ok(downstream_kubectl(&format!("get namespace {ns}")));
}

/// `scoped-secrets serve` as a process, with a kubeconfig of its own cluster that is never
/// contacted: each refusal comes before any connection.
fn serve(dir: &Path, extra: &[&str]) -> Output {
    let own = dir.join("own.kubeconfig");
    std::fs::write(
        &own,
        "apiVersion: v1
kind: Config
current-context: own
contexts: [{name: own, context: {cluster: own, user: own}}]
clusters: [{name: own, cluster: {server: 'https://127.0.0.1:1'}}]
users: [{name: own, user: {token: unused}}]
",
    )
    .expect("writing a kubeconfig");
    std::process::Command::new(env!("CARGO_BIN_EXE_scoped-secrets"))
        .env("KUBECONFIG", &own)
        .args([
            "serve",
            "--webhook-addr=127.0.0.1:0",
            "--admin-addr=127.0.0.1:0",
            "--log-format=text",
        ])
        .args(extra)
        .output()
        .expect("the binary runs")
}

#[test]
fn serve_refuses_a_management_kubeconfig_it_cannot_read_or_must_not_use() {
    let dir = tempfile::tempdir().expect("a directory");
    let refused = |extra: &[&str]| {
        let out = serve(dir.path(), extra);
        assert!(!out.status.success(), "serve started: {}", stderr(&out));
        stderr(&out)
    };

    // An exec plugin would run a program inside the webhook's pod: refused, and never run.
    let ran = dir.path().join("the-plugin-ran");
    let exec = dir.path().join("exec.kubeconfig");
    std::fs::write(
        &exec,
        format!(
            "apiVersion: v1
kind: Config
current-context: m
contexts: [{{name: m, context: {{cluster: m, user: m}}}}]
clusters: [{{name: m, cluster: {{server: 'https://127.0.0.1:1', certificate-authority-data: Y2E=}}}}]
users:
- name: m
  user:
    exec: {{apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, 'touch {}']}}
",
            ran.display()
        ),
    )
    .expect("writing a kubeconfig");
    let exec = exec.display().to_string();
    let err = refused(&[
        "--cluster-id=c-down1",
        &format!("--management-kubeconfig={exec}"),
        "--reconciler=false",
    ]);
    assert!(
        err.contains(&format!(
            "the management kubeconfig {exec} is refused: the kubeconfig uses `exec`, which is \
             refused: only inline credentials (token, client certificate and key, CA data) are \
             accepted"
        )),
        "{err}"
    );
    assert!(!ran.exists(), "the exec plugin ran");

    let missing = dir.path().join("missing.kubeconfig").display().to_string();
    let err = refused(&[
        "--cluster-id=c-down1",
        &format!("--management-kubeconfig={missing}"),
        "--reconciler=false",
    ]);
    assert!(
        err.contains(&format!("reading the management kubeconfig {missing}")),
        "{err}"
    );

    // Webhook only: the reconciler (on by default) is refused beside --cluster-id.
    let err = refused(&[
        "--cluster-id=c-down1",
        &format!("--management-kubeconfig={missing}"),
    ]);
    assert!(
        err.contains("--cluster-id serves the webhook only") && err.contains("--reconciler=false"),
        "{err}"
    );
    // Both or neither.
    let err = refused(&["--cluster-id=c-down1", "--reconciler=false"]);
    assert!(err.contains("--management-kubeconfig"), "{err}");
}
