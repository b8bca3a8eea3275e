//! Every admission rule of docs/SPEC.md §2 end to end: the real apiserver calls the registered webhooks and
//! the real `kubectl` prints the answer. Each test asserts the line a user reads: the denial as
//! `admission webhook "<entry>" denied the request: ...`, warnings as `Warning: ...` on stderr,
//! mutations in `-o yaml` of a `--dry-run=server` request.

use crate::support::*;
use scoped_secrets::keys::{self, ProjectId};
use scoped_secrets::message;
use std::path::Path;
use std::time::Duration;

pub(crate) const GUARD: &str = "secret-guard.scoped-secrets.io";
pub(crate) const NAMES: &str = "secret-names.scoped-secrets.io";
pub(crate) const NAMESPACE_GUARD: &str = "namespace-guard.scoped-secrets.io";

/// The reconciler's identity: the matchConditions skip it and its RBAC may write copies.
pub(crate) const AS_RECONCILER: [&str; 2] = [
    "--as=system:serviceaccount:scoped-secrets-system:scoped-secrets",
    "--as-group=system:serviceaccounts",
];

/// `admission webhook "<webhook>" denied the request: <message>` is in kubectl's error output.
#[track_caller]
pub(crate) fn assert_denied(err: &str, webhook: &str, message: &str) {
    let expected = format!("admission webhook \"{webhook}\" denied the request: {message}");
    assert!(
        err.contains(&expected),
        "expected\n  {expected}\nin kubectl's error output:\n  {err}"
    );
}

/// kubectl printed `Warning: <warning>` as a line of its own on stderr, exactly once (each rule
/// runs in one webhook entry only, so no warning is shown twice).
#[track_caller]
pub(crate) fn assert_warned(out: &std::process::Output, warning: &str) {
    let err = stderr(out);
    let expected = format!("Warning: {warning}");
    assert_eq!(
        err.lines().filter(|l| *l == expected).count(),
        1,
        "expected the line once\n  {expected}\non kubectl's stderr:\n  {err}"
    );
}

/// Whether the server under test runs the reconciler (it may be switched on later): then copies
/// can land by themselves, and a name that is only reserved now may be taken a moment later.
fn reconciler_running() -> bool {
    serve_args(Path::new("")).reconciler
}

/// A namespace outside every project.
pub(crate) fn plain_namespace(prefix: &str) -> String {
    let ns = unique(prefix);
    ok(kubectl(&["create", "namespace", &ns]));
    indexed("the namespace", |w| w.namespace(&ns).is_some());
    ns
}

pub(crate) fn generic(ns: &str, name: &str) {
    ok(kubectl(&[
        "create",
        "secret",
        "generic",
        name,
        "-n",
        ns,
        "--from-literal=key=value",
    ]));
    indexed("the secret", |w| w.secret_meta(ns, name).is_some());
}

/// An original `name` of the project, written by the admin; waits until the index holds it.
pub(crate) fn original(project: &TestProject, name: &str) {
    ok(kubectl_apply(&original_yaml(project, name, ""), &[]));
    indexed("the original", |w| {
        w.scoped(&project.backing, name)
            .is_some_and(|s| w.as_original(s).is_some())
    });
}

fn original_yaml(project: &TestProject, name: &str, extra_metadata: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: {backing}
  labels: {{{label}: {p}}}
{extra_metadata}data: {{key: ZG9n}}
",
        backing = project.backing,
        label = keys::PROJECT_SCOPED_LABEL,
        p = project.name
    )
}

/// A copy of the project's original `name` in `ns`, written as the reconciler would write it.
pub(crate) fn copy_as_reconciler(project: &TestProject, ns: &str, name: &str) {
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: {ns}
  labels: {{{label}: {p}, {cluster_label}: local}}
  annotations:
    {copy}: \"true\"
    {user}: \"true\"
    {origin}: {backing}/{name}
data: {{key: ZG9n}}
",
        label = keys::PROJECT_SCOPED_LABEL,
        cluster_label = keys::PROJECT_SCOPED_CLUSTER_LABEL,
        p = project.name,
        copy = keys::COPY_ANNOTATION,
        user = keys::USER_SECRET_ANNOTATION,
        origin = keys::ORIGIN_ANNOTATION,
        backing = project.backing,
    );
    let mut args = vec!["create", "-f", "-"];
    args.extend_from_slice(&AS_RECONCILER);
    let out = kubectl_stdin(&env().kubeconfig, &args, &yaml);
    // A running reconciler may have written the copy first (its RBAC has no patch, so no apply).
    if !(reconciler_running() && stderr(&out).contains("AlreadyExists")) {
        ok(out);
    }
    indexed("the copy", |w| {
        w.secret_meta(ns, name).is_some_and(|m| m.is_copy())
    });
}

pub(crate) fn origin(project: &TestProject, name: &str) -> String {
    format!("{}/{name}", project.backing)
}

// ---------------------------------------------------------------------------------------------
// S1: unique names
// ---------------------------------------------------------------------------------------------

#[test]
fn s1_a_name_taken_by_a_certificate_is_denied_naming_its_type() {
    let ns = plain_namespace("s1-tls");
    let ca = scoped_secrets::certs::Authority::generate("s1-test-ca", 1).expect("a CA");
    let issued = ca
        .issue(&["web.example".to_owned()], &[], 1, false)
        .expect("a certificate");
    let dir = env().state_dir.join(unique("s1-tls"));
    std::fs::create_dir_all(&dir).expect("a directory");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &issued.cert_pem).expect("writing the certificate");
    std::fs::write(&key, &issued.key_pem).expect("writing the key");
    ok(kubectl(&[
        "create",
        "secret",
        "tls",
        "web",
        "-n",
        &ns,
        &format!("--cert={}", cert.display()),
        &format!("--key={}", key.display()),
    ]));
    indexed("the certificate", |w| w.secret_meta(&ns, "web").is_some());

    let expected = format!(
        "a certificate (kubernetes.io/tls) named \"web\" already exists in namespace \"{ns}\"; \
         certificates, registry credentials and secrets share one set of names per namespace"
    );
    let create = |extra: &[&str]| {
        let mut args = vec![
            "create",
            "secret",
            "generic",
            "web",
            "-n",
            &ns,
            "--from-literal=key=value",
        ];
        args.extend_from_slice(extra);
        kubectl(&args)
    };
    for dry_run in [&["--dry-run=server"][..], &[]] {
        let err = fails(create(dry_run));
        assert_eq!(
            err.trim_end(),
            format!(
                "error: failed to create secret admission webhook \"{NAMES}\" denied the \
                 request: {expected}"
            )
        );
    }
    // Answered as the apiserver itself would answer a taken name, which kubectl shows as the
    // reason when it prints the server's error itself.
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: web, namespace: {ns}}}\n\
         stringData: {{key: value}}\n"
    );
    let err = fails(kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-"],
        &yaml,
    ));
    assert_eq!(
        err.trim_end(),
        format!(
            "Error from server (AlreadyExists): error when creating \"STDIN\": admission webhook \
             \"{NAMES}\" denied the request: {expected}"
        )
    );
    // The certificate is untouched.
    let ty = ok(kubectl(&[
        "get",
        "secret",
        "web",
        "-n",
        &ns,
        "-o",
        "jsonpath={.type}",
    ]));
    assert_eq!(ty, "kubernetes.io/tls");
}

#[test]
fn s1_a_name_taken_by_a_registry_credential_is_denied_naming_its_type() {
    let ns = plain_namespace("s1-reg");
    ok(kubectl(&[
        "create",
        "secret",
        "docker-registry",
        "pull",
        "-n",
        &ns,
        "--docker-server=registry.example",
        "--docker-username=u",
        "--docker-password=p",
    ]));
    indexed("the registry credential", |w| {
        w.secret_meta(&ns, "pull").is_some()
    });
    let err = fails(kubectl(&[
        "create",
        "secret",
        "generic",
        "pull",
        "-n",
        &ns,
        "--from-literal=key=value",
    ]));
    assert_eq!(
        err.trim_end(),
        format!(
            "error: failed to create secret admission webhook \"{NAMES}\" denied the request: a \
             registry credential (kubernetes.io/dockerconfigjson) named \"pull\" already exists in \
             namespace \"{ns}\"; certificates, registry credentials and secrets share one set of \
             names per namespace"
        )
    );
}

#[test]
fn s1_a_name_reserved_by_an_original_is_denied_in_the_project_namespaces() {
    let project = project("s1r");
    let ns = namespace_in(&project, "s1r");
    original(&project, "db");
    let out = kubectl(&[
        "create",
        "secret",
        "generic",
        "db",
        "-n",
        &ns,
        "--from-literal=key=value",
    ]);
    let err = fails(out);
    let reserved = format!(
        "secret name \"db\" in namespace \"{ns}\" is reserved by project-scoped secret \"{}\" of \
         project {}",
        origin(&project, "db"),
        project.name
    );
    if reconciler_running() && !err.contains(&reserved) {
        // The copy landed first: the name is then simply taken.
        assert_denied(
            &err,
            NAMES,
            &format!("a secret (Opaque) named \"db\" already exists in namespace \"{ns}\""),
        );
    } else {
        assert_eq!(
            err.trim_end(),
            format!(
                "error: failed to create secret admission webhook \"{NAMES}\" denied the \
                 request: {reserved}"
            )
        );
    }
    // Other names in the project namespace, and the same name outside the project, are free.
    let elsewhere = plain_namespace("s1r-out");
    generic(&elsewhere, "db");
    generic(&ns, "not-reserved");
}

#[test]
fn s1_generate_name_passes_even_where_the_prefix_is_a_taken_name() {
    let ns = plain_namespace("s1g");
    generic(&ns, "app");
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata: {{generateName: app, namespace: {ns}}}
stringData: {{key: value}}
"
    );
    let out = ok(kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-", "-o", "name"],
        &yaml,
    ));
    let created = out.trim();
    assert!(
        created.starts_with("secret/app") && created.len() > "secret/app".len(),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// S2: overwrite warning
// ---------------------------------------------------------------------------------------------

#[test]
fn s2_an_original_that_will_overwrite_a_plain_secret_warns_naming_the_namespace() {
    let project = project("s2");
    let ns = namespace_in(&project, "s2");
    generic(&ns, "api");
    let head = format!(
        "project-scoped secret \"{}\" will overwrite the secret of that name in 1 namespace",
        origin(&project, "api")
    );
    let warning = message::warning_list(&head, &[ns.as_str()]);
    assert!(warning.ends_with(&format!(": {ns}")), "{warning}");
    let yaml = original_yaml(&project, "api", "");
    let dry = kubectl_apply(&yaml, &["--dry-run=server"]);
    assert_warned(&dry, &warning);
    let out = kubectl_apply(&yaml, &[]);
    assert_warned(&out, &warning);
    assert!(
        stdout(&out).contains("secret/api created"),
        "{}",
        stdout(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// S3: the label belongs to a backing namespace, naming its project
// ---------------------------------------------------------------------------------------------

#[test]
fn s3_the_label_outside_a_backing_namespace_is_denied() {
    let ns = plain_namespace("s3");
    let project = project("s3");
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: stray
  namespace: {ns}
  labels: {{{label}: {p}}}
data: {{key: ZG9n}}
",
        label = keys::PROJECT_SCOPED_LABEL,
        p = project.name
    );
    let expected = format!(
        "label {} is only allowed on secrets in a project's backing namespace, and namespace \
         \"{ns}\" is not one; create the secret in the project's backing namespace and the \
         reconciler will copy it here",
        keys::PROJECT_SCOPED_LABEL
    );
    for dry_run in [&["--dry-run=server"][..], &[]] {
        let err = fails(kubectl_apply(&yaml, dry_run));
        assert_eq!(
            err.trim_end(),
            format!(
                "Error from server (LabelOutsideBackingNamespace): error when creating \"STDIN\": \
                 admission webhook \"{GUARD}\" denied the request: {expected}"
            )
        );
    }
    fails(kubectl(&["get", "secret", "stray", "-n", &ns]));

    // Adding the label to an existing plain secret is denied too.
    generic(&ns, "plain");
    let err = fails(kubectl(&[
        "label",
        "secret",
        "plain",
        "-n",
        &ns,
        &format!("{}={}", keys::PROJECT_SCOPED_LABEL, project.name),
    ]));
    assert_denied(&err, GUARD, &expected);
}

#[test]
fn s3_a_wrong_label_value_is_denied_with_the_right_one() {
    let project = project("s3w");
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: wrong
  namespace: {backing}
  labels: {{{label}: p-someone-else}}
data: {{key: ZG9n}}
",
        backing = project.backing,
        label = keys::PROJECT_SCOPED_LABEL,
    );
    let expected = format!(
        "label {} on secret \"wrong\" is \"p-someone-else\", but namespace \"{}\" backs project \
         {}; set it to {}",
        keys::PROJECT_SCOPED_LABEL,
        project.backing,
        project.id(),
        project.name
    );
    for dry_run in [&["--dry-run=server"][..], &[]] {
        assert_denied(&fails(kubectl_apply(&yaml, dry_run)), GUARD, &expected);
    }
}

// ---------------------------------------------------------------------------------------------
// S4: no forged copies
// ---------------------------------------------------------------------------------------------

#[test]
fn s4_creating_a_secret_with_a_copy_marker_is_denied() {
    let ns = plain_namespace("s4c");
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: forged
  namespace: {ns}
  annotations: {{{copy}: \"true\"}}
data: {{key: ZG9n}}
",
        copy = keys::COPY_ANNOTATION
    );
    let err = fails(kubectl_apply(&yaml, &[]));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "only the scoped-secrets reconciler may set copy markers; remove annotation {} from \
             secret \"forged\" in namespace \"{ns}\"",
            keys::COPY_ANNOTATION
        ),
    );
    fails(kubectl(&["get", "secret", "forged", "-n", &ns]));
}

#[test]
fn s4_adding_a_copy_marker_to_an_existing_secret_is_denied() {
    let ns = plain_namespace("s4a");
    generic(&ns, "mine");
    for key in [keys::COPY_ANNOTATION, keys::ORIGIN_ANNOTATION] {
        let err = fails(kubectl(&[
            "annotate",
            "secret",
            "mine",
            "-n",
            &ns,
            &format!("{key}=true"),
        ]));
        assert_denied(
            &err,
            GUARD,
            &format!(
                "only the scoped-secrets reconciler may set copy markers; remove annotation {key} \
                 from secret \"mine\" in namespace \"{ns}\""
            ),
        );
    }
    // An ordinary annotation is fine.
    ok(kubectl(&[
        "annotate", "secret", "mine", "-n", &ns, "team=a",
    ]));
}

// ---------------------------------------------------------------------------------------------
// S5: copies are read-only
// ---------------------------------------------------------------------------------------------

#[test]
fn s5_updating_or_deleting_a_copy_is_denied() {
    let project = project("s5");
    let ns = namespace_in(&project, "s5");
    original(&project, "db");
    copy_as_reconciler(&project, &ns, "db");
    let expected = format!(
        "secret \"db\" in namespace \"{ns}\" is a copy of project-scoped secret \"{}\"; change \
         the original instead",
        origin(&project, "db")
    );
    let err = fails(kubectl(&[
        "annotate",
        "secret",
        "db",
        "-n",
        &ns,
        "edited=yes",
    ]));
    assert_denied(&err, GUARD, &expected);
    let err = fails(kubectl(&["delete", "secret", "db", "-n", &ns]));
    assert_denied(&err, GUARD, &expected);
    let err = fails(kubectl(&[
        "delete",
        "secret",
        "db",
        "-n",
        &ns,
        "--dry-run=server",
    ]));
    assert_denied(&err, GUARD, &expected);
    // Still there, unchanged.
    let annotations = ok(kubectl(&[
        "get",
        "secret",
        "db",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.annotations}",
    ]));
    assert!(!annotations.contains("edited"), "{annotations}");
}

#[test]
fn s5_copies_in_a_terminating_namespace_may_be_changed() {
    let project = project("s5t");
    let ns = namespace_in(&project, "s5t");
    original(&project, "db");
    copy_as_reconciler(&project, &ns, "db");
    // The namespace controller would empty the namespace and remove it; a finalizer on the copy
    // itself holds both while the test edits it, as a finalizer of some controller would.
    let hold = r#"{"metadata":{"finalizers":["example.com/hold"]}}"#;
    let mut args = vec![
        "patch",
        "secret",
        "db",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        hold,
    ];
    // As the reconciler's user (which the webhook skips), lent the admin's group: its RBAC has no
    // patch.
    args.extend_from_slice(&[
        "--as=system:serviceaccount:scoped-secrets-system:scoped-secrets",
        "--as-group=system:masters",
    ]);
    ok(kubectl(&args));
    ok(kubectl(&["delete", "namespace", &ns, "--wait=false"]));
    indexed("the namespace terminating", |w| {
        w.namespace(&ns).is_some_and(|n| n.terminating)
    });
    let out = ok(kubectl(&[
        "annotate",
        "secret",
        "db",
        "-n",
        &ns,
        "edited=yes",
    ]));
    assert!(out.contains("secret/db annotated"), "{out}");
    // Released (also a change to a copy in a terminating namespace), the namespace goes away.
    let release = r#"[{"op":"remove","path":"/metadata/finalizers"}]"#;
    ok(kubectl(&[
        "patch",
        "secret",
        "db",
        "-n",
        &ns,
        "--type=json",
        "-p",
        release,
    ]));
    eventually(
        &format!("namespace {ns} to disappear"),
        Duration::from_secs(40),
        || {
            let out = kubectl(&["get", "namespace", &ns]);
            stderr(&out).contains("NotFound").then_some(())
        },
    );
}

#[test]
fn s5_deleting_a_copy_that_no_original_wants_is_allowed() {
    let project = project("s5d");
    let ns = namespace_in(&project, "s5d");
    // A copy whose original is gone (debris the reconciler would remove too).
    copy_as_reconciler(&project, &ns, "orphan");
    let out = kubectl(&["delete", "secret", "orphan", "-n", &ns]);
    if reconciler_running() && stderr(&out).contains("NotFound") {
        return; // the reconciler removed the debris first
    }
    let out = ok(out);
    assert!(out.contains("secret \"orphan\" deleted"), "{out}");
}

#[test]
fn s5_a_rancher_copy_without_our_origin_annotation_is_read_only_too() {
    // Rancher's copier marks copies without scoped-secrets.io/origin: the origin is found through
    // the project its label names.
    let project = project("s5r");
    let ns = namespace_in(&project, "s5r");
    original(&project, "db");
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: {ns}
  labels: {{{label}: {p}}}
  annotations: {{{copy}: \"true\", {user}: \"true\"}}
data: {{key: ZG9n}}
",
        label = keys::PROJECT_SCOPED_LABEL,
        p = project.name,
        copy = keys::COPY_ANNOTATION,
        user = keys::USER_SECRET_ANNOTATION,
    );
    let mut args = vec!["create", "-f", "-"];
    args.extend_from_slice(&AS_RECONCILER);
    let out = kubectl_stdin(&env().kubeconfig, &args, &yaml);
    if !(reconciler_running() && stderr(&out).contains("AlreadyExists")) {
        ok(out);
    }
    indexed("the copy", |w| {
        w.secret_meta(&ns, "db").is_some_and(|m| m.is_copy())
    });
    let err = fails(kubectl(&["delete", "secret", "db", "-n", &ns]));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "secret \"db\" in namespace \"{ns}\" is a copy of project-scoped secret \"{}\"; change \
             the original instead",
            origin(&project, "db")
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// S6: what can be project-scoped
// ---------------------------------------------------------------------------------------------

#[test]
fn s6_a_service_account_token_original_is_denied() {
    let project = project("s6t");
    let yaml = format!(
        "apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata:
  name: token
  namespace: {backing}
  labels: {{{label}: {p}}}
  annotations: {{kubernetes.io/service-account.name: default}}
",
        backing = project.backing,
        label = keys::PROJECT_SCOPED_LABEL,
        p = project.name
    );
    let err = fails(kubectl_apply(&yaml, &[]));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "secret \"token\" in namespace \"{}\" is of type kubernetes.io/service-account-token, \
             which cannot be project-scoped; remove label {}",
            project.backing,
            keys::PROJECT_SCOPED_LABEL
        ),
    );
}

#[test]
fn s6_an_invalid_ignore_pattern_is_denied_with_the_parse_error() {
    let project = project("s6i");
    let pattern = "team-(a";
    let parse_error = scoped_secrets::plan::IgnoreList::parse(pattern)
        .expect_err("an invalid pattern")
        .to_string();
    assert!(parse_error.contains("team-(a"), "{parse_error}");
    let yaml = original_yaml(
        &project,
        "ignoring",
        &format!(
            "  annotations: {{{}: \"{pattern}\"}}\n",
            keys::IGNORE_NAMESPACES_ANNOTATION
        ),
    );
    let err = fails(kubectl_apply(&yaml, &[]));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "annotation {}: {parse_error}",
            keys::IGNORE_NAMESPACES_ANNOTATION
        ),
    );
}

#[test]
fn s6_an_invalid_ignore_pattern_added_to_an_existing_original_is_denied() {
    let project = project("s6u");
    original(&project, "cfg");
    let pattern = "[unclosed";
    let parse_error = scoped_secrets::plan::IgnoreList::parse(pattern)
        .expect_err("an invalid pattern")
        .to_string();
    let err = fails(kubectl(&[
        "annotate",
        "secret",
        "cfg",
        "-n",
        &project.backing,
        &format!("{}={pattern}", keys::IGNORE_NAMESPACES_ANNOTATION),
    ]));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "annotation {}: {parse_error}",
            keys::IGNORE_NAMESPACES_ANNOTATION
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// S7: consequences are announced
// ---------------------------------------------------------------------------------------------

#[test]
fn s7_deleting_an_original_warns_how_many_copies_will_be_removed() {
    let project = project("s7");
    let a = namespace_in(&project, "s7a");
    let b = namespace_in(&project, "s7b");
    original(&project, "db");
    copy_as_reconciler(&project, &a, "db");
    copy_as_reconciler(&project, &b, "db");
    let mut namespaces = [a.as_str(), b.as_str()];
    namespaces.sort();
    let head = format!(
        "2 copies of project-scoped secret \"{}\" will be removed from",
        origin(&project, "db")
    );
    let warning = message::warning_list(&head, &namespaces);
    assert!(warning.ends_with(&format!(": {}, {}", namespaces[0], namespaces[1])));
    let delete = |extra: &[&str]| {
        let mut args = vec!["delete", "secret", "db", "-n", &project.backing];
        args.extend_from_slice(extra);
        kubectl(&args)
    };
    let dry = delete(&["--dry-run=server"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert_warned(&dry, &warning);
    let out = delete(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_warned(&out, &warning);
}

#[test]
fn s7_removing_the_label_of_an_original_warns_too() {
    let project = project("s7l");
    let ns = namespace_in(&project, "s7l");
    original(&project, "cfg");
    copy_as_reconciler(&project, &ns, "cfg");
    let out = kubectl(&[
        "label",
        "secret",
        "cfg",
        "-n",
        &project.backing,
        &format!("{}-", keys::PROJECT_SCOPED_LABEL),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let head = format!(
        "1 copy of project-scoped secret \"{}\" will be removed from",
        origin(&project, "cfg")
    );
    assert_warned(&out, &message::warning_list(&head, &[ns.as_str()]));
}

#[test]
fn s7_narrowing_the_ignore_list_warns_how_many_copies_will_be_removed() {
    let project = project("s7i");
    let kept = namespace_in(&project, "s7i-kept");
    let ignored = namespace_in(&project, "s7i-gone");
    original(&project, "db");
    copy_as_reconciler(&project, &kept, "db");
    copy_as_reconciler(&project, &ignored, "db");
    let pattern = ignored.clone();
    let out = kubectl(&[
        "annotate",
        "secret",
        "db",
        "-n",
        &project.backing,
        &format!("{}={pattern}", keys::IGNORE_NAMESPACES_ANNOTATION),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let head = format!(
        "1 copy of project-scoped secret \"{}\" will be removed from",
        origin(&project, "db")
    );
    assert_warned(&out, &message::warning_list(&head, &[ignored.as_str()]));
}

// ---------------------------------------------------------------------------------------------
// N1: joining a project needs manage-namespaces
// ---------------------------------------------------------------------------------------------

/// Lets `alice` and `bob` create and edit namespaces, and `alice` (only) manage the project's
/// namespaces, as Rancher's project roles do.
pub(crate) fn grant_namespace_editing(project: &TestProject) {
    // Shared by the tests that call this, so created once (two concurrent creates would race).
    static EDITORS: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    EDITORS.get_or_init(|| {
        ok(kubectl_apply(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: scoped-secrets-e2e-namespace-editor}
rules:
- apiGroups: [\"\"]
  resources: [namespaces, namespaces/status, namespaces/finalize]
  verbs: [get, list, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: scoped-secrets-e2e-namespace-editor}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: scoped-secrets-e2e-namespace-editor}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}
",
            &[],
        ));
    });
    let role = unique("n1-manage");
    ok(kubectl_apply(
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {role}, namespace: local}}
rules:
- apiGroups: [{group}]
  resources: [{plural}]
  resourceNames: [{p}]
  verbs: [{verb}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {role}, namespace: local}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {role}}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}
",
            group = keys::PROJECT_GROUP,
            plural = keys::PROJECT_PLURAL,
            verb = keys::MANAGE_NAMESPACES_VERB,
            p = project.name
        ),
        &[],
    ));
    let resource = format!(
        "{}.{}/{}",
        keys::PROJECT_PLURAL,
        keys::PROJECT_GROUP,
        project.name
    );
    let can = |user: &str, verb: &str, what: &str, ns: Option<&str>| {
        let mut args = vec!["auth", "can-i", verb, what];
        let as_user = format!("--as={user}");
        args.push(&as_user);
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        stdout(&kubectl(&args)).trim().to_owned()
    };
    // RBAC is served from the apiserver's cache: wait until it answers with the new grants.
    eventually("alice's and bob's grants", Duration::from_secs(20), || {
        (can(
            "alice",
            keys::MANAGE_NAMESPACES_VERB,
            &resource,
            Some("local"),
        ) == "yes"
            && can("alice", "create", "namespaces", None) == "yes"
            && can("bob", "create", "namespaces", None) == "yes")
            .then_some(())
    });
    assert_eq!(
        can(
            "bob",
            keys::MANAGE_NAMESPACES_VERB,
            &resource,
            Some("local")
        ),
        "no"
    );
}

fn namespace_yaml(name: &str, project_id: &str) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {name}
  annotations: {{{key}: \"{project_id}\"}}
",
        key = keys::PROJECT_ID_KEY
    )
}

fn apply_as(user: &str, yaml: &str, extra: &[&str]) -> std::process::Output {
    let as_user = format!("--as={user}");
    let mut args = vec!["apply", "-f", "-", as_user.as_str()];
    args.extend_from_slice(extra);
    kubectl_stdin(&env().kubeconfig, &args, yaml)
}

#[test]
fn n1_joining_a_project_needs_manage_namespaces() {
    let project = project("n1");
    grant_namespace_editing(&project);

    // bob may edit namespaces but not manage the project's: denied, dry run or not.
    let bobs = unique("n1-bob");
    let yaml = namespace_yaml(&bobs, &project.id());
    let expected = format!(
        "user \"bob\" may not move namespace \"{bobs}\" into project {}: that needs verb \
         manage-namespaces on projects.management.cattle.io \"{}\" in namespace \"local\"",
        project.id(),
        project.name
    );
    for dry_run in [&["--dry-run=server"][..], &[]] {
        let err = fails(apply_as("bob", &yaml, dry_run));
        assert_denied(&err, NAMESPACE_GUARD, &expected);
    }
    fails(kubectl(&["get", "namespace", &bobs]));

    // Nor may bob move an existing namespace of his into the project.
    let plain = unique("n1-plain");
    ok(apply_as(
        "bob",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {plain}}}\n"),
        &[],
    ));
    let err = fails(kubectl(&[
        "annotate",
        "namespace",
        &plain,
        &format!("{}={}", keys::PROJECT_ID_KEY, project.id()),
        "--as=bob",
    ]));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        &format!(
            "user \"bob\" may not move namespace \"{plain}\" into project {}",
            project.id()
        ),
    );

    // alice may: allowed, dry run or not, and the mutator mirrors the annotation in the label.
    let alices = unique("n1-alice");
    let yaml = namespace_yaml(&alices, &project.id());
    let dry = ok(apply_as(
        "alice",
        &yaml,
        &["--dry-run=server", "-o", "yaml"],
    ));
    assert!(
        dry.contains(&format!("{}: {}", keys::PROJECT_ID_KEY, project.name)),
        "{dry}"
    );
    fails(kubectl(&["get", "namespace", &alices]));
    let out = ok(apply_as("alice", &yaml, &[]));
    assert!(
        out.contains(&format!("namespace/{alices} created")),
        "{out}"
    );

    // alice's grant names this project only: another project is still refused.
    let other = crate::support::project("n1-other");
    let elsewhere = unique("n1-alice");
    let err = fails(apply_as(
        "alice",
        &namespace_yaml(&elsewhere, &other.id()),
        &[],
    ));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        &format!(
            "user \"alice\" may not move namespace \"{elsewhere}\" into project {}: that needs \
             verb manage-namespaces on projects.management.cattle.io \"{}\" in namespace \"local\"",
            other.id(),
            other.name
        ),
    );
}

#[test]
fn n1_the_status_subresource_is_no_way_around_manage_namespaces() {
    // A namespace's status subresource also writes its metadata: bob, who may update namespace
    // status but not manage the project's namespaces, must not join a project through it.
    let project = project("n1s");
    grant_namespace_editing(&project);
    let status_patch = |ns: &str, user: &str| {
        kubectl(&[
            "patch",
            "namespace",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(
                r#"{{"metadata":{{"annotations":{{"{}":"{}"}}}}}}"#,
                keys::PROJECT_ID_KEY,
                project.id()
            ),
            &format!("--as={user}"),
        ])
    };
    let bobs = plain_namespace("n1s-bob");
    let err = fails(status_patch(&bobs, "bob"));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        &format!(
            "user \"bob\" may not move namespace \"{bobs}\" into project {}: that needs verb \
             manage-namespaces on projects.management.cattle.io \"{}\" in namespace \"local\"",
            project.id(),
            project.name
        ),
    );
    let annotations = ok(kubectl(&[
        "get",
        "namespace",
        &bobs,
        "-o",
        "jsonpath={.metadata.annotations}",
    ]));
    assert!(!annotations.contains(keys::PROJECT_ID_KEY), "{annotations}");

    // Nor through the finalize subresource, which writes metadata as well.
    let mut namespace: serde_json::Value =
        serde_json::from_str(&ok(kubectl(&["get", "namespace", &bobs, "-o", "json"])))
            .expect("a namespace as JSON");
    namespace["metadata"]["annotations"] = serde_json::json!({keys::PROJECT_ID_KEY: project.id()});
    let err = fails(kubectl_stdin(
        &env().kubeconfig,
        &[
            "replace",
            "--raw",
            &format!("/api/v1/namespaces/{bobs}/finalize"),
            "-f",
            "-",
            "--as=bob",
        ],
        &namespace.to_string(),
    ));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        &format!(
            "user \"bob\" may not move namespace \"{bobs}\" into project {}",
            project.id()
        ),
    );

    // alice may, and the mutator mirrors the annotation in the label there too.
    let alices = plain_namespace("n1s-alice");
    ok(status_patch(&alices, "alice"));
    let label = ok(kubectl(&[
        "get",
        "namespace",
        &alices,
        "-o",
        "jsonpath={.metadata.labels.field\\.cattle\\.io/projectId}",
    ]));
    assert_eq!(label, project.name);
}

// ---------------------------------------------------------------------------------------------
// N2: well-formed project IDs naming existing projects
// ---------------------------------------------------------------------------------------------

#[test]
fn n2_a_malformed_project_id_is_denied() {
    for value in ["local:", ":p-abc", "p-abc"] {
        let ns = unique("n2m");
        let err = fails(kubectl_apply(&namespace_yaml(&ns, value), &[]));
        let parse_error = ProjectId::parse(value)
            .expect_err("a malformed project ID")
            .to_string();
        assert_denied(
            &err,
            NAMESPACE_GUARD,
            &format!(
                "annotation {} on namespace \"{ns}\": {parse_error}; both parts must be non-empty, \
                 e.g. local:p-vwxyz",
                keys::PROJECT_ID_KEY
            ),
        );
        fails(kubectl(&["get", "namespace", &ns]));
    }
}

#[test]
fn n2_an_unknown_project_is_denied() {
    let ns = unique("n2u");
    let missing = unique("p-missing");
    let err = fails(kubectl_apply(
        &namespace_yaml(&ns, &format!("local:{missing}")),
        &[],
    ));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        &format!(
            "namespace \"{ns}\" names project local:{missing} in annotation {}, but no such \
             project exists",
            keys::PROJECT_ID_KEY
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// N3: join and leave are announced
// ---------------------------------------------------------------------------------------------

#[test]
fn n3_joining_warns_which_secrets_will_be_overwritten() {
    let project = project("n3j");
    original(&project, "api");
    let ns = plain_namespace("n3j");
    generic(&ns, "api");
    let head = format!(
        "namespace \"{ns}\" joins project {}; its project-scoped secrets will overwrite 1 secret here",
        project.id()
    );
    let warning = message::warning_list(&head, &["api"]);
    assert!(warning.ends_with(": api"), "{warning}");
    let annotate = |extra: &[&str]| {
        let value = format!("{}={}", keys::PROJECT_ID_KEY, project.id());
        let mut args = vec!["annotate", "namespace", &ns, &value];
        args.extend_from_slice(extra);
        kubectl(&args)
    };
    let dry = annotate(&["--dry-run=server"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert_warned(&dry, &warning);
    let out = annotate(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_warned(&out, &warning);
}

#[test]
fn n3_leaving_warns_how_many_copies_will_be_removed() {
    let project = project("n3l");
    let ns = namespace_in(&project, "n3l");
    original(&project, "db");
    copy_as_reconciler(&project, &ns, "db");
    let out = kubectl(&[
        "annotate",
        "namespace",
        &ns,
        &format!("{}-", keys::PROJECT_ID_KEY),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let head = format!(
        "namespace \"{ns}\" leaves project {}; 1 copy of its project-scoped secrets will be removed",
        project.id()
    );
    assert_warned(&out, &message::warning_list(&head, &["db"]));
    // M1: the label follows the annotation out.
    let labels = ok(kubectl(&[
        "get",
        "namespace",
        &ns,
        "-o",
        "jsonpath={.metadata.labels}",
    ]));
    assert!(!labels.contains(keys::PROJECT_ID_KEY), "{labels}");
}

// ---------------------------------------------------------------------------------------------
// M1, M2: mutations, seen in -o yaml of a server dry run
// ---------------------------------------------------------------------------------------------

#[test]
fn m1_the_namespace_label_mirrors_the_annotation() {
    let project = project("m1");
    // Missing label: added.
    let ns = unique("m1");
    let out = ok(kubectl_apply(
        &namespace_yaml(&ns, &project.id()),
        &["--dry-run=server", "-o", "yaml"],
    ));
    let label_line = format!("    {}: {}", keys::PROJECT_ID_KEY, project.name);
    assert!(out.lines().any(|l| l == label_line), "{out}");
    // Stale label: corrected.
    let stale = format!(
        "{}  labels: {{{}: p-stale}}\n",
        namespace_yaml(&ns, &project.id()),
        keys::PROJECT_ID_KEY
    );
    let out = ok(kubectl_apply(&stale, &["--dry-run=server", "-o", "yaml"]));
    assert!(out.lines().any(|l| l == label_line), "{out}");
    let stale_line = format!("    {}: p-stale", keys::PROJECT_ID_KEY);
    assert!(!out.lines().any(|l| l == stale_line), "{out}");
}

#[test]
fn m1_a_projectid_label_without_the_annotation_is_removed() {
    let project = project("m1l");
    let ns = plain_namespace("m1l");
    // (`kubectl label --dry-run=server -o yaml` prints its own edit, not the server's answer;
    // `kubectl patch` prints the server's.)
    let out = ok(kubectl(&[
        "patch",
        "namespace",
        &ns,
        "--type=merge",
        "-p",
        &format!(
            r#"{{"metadata":{{"labels":{{"{}":"{}"}}}}}}"#,
            keys::PROJECT_ID_KEY,
            project.name
        ),
        "--dry-run=server",
        "-o",
        "yaml",
    ]));
    assert!(
        !out.lines()
            .any(|l| l.trim_start().starts_with(keys::PROJECT_ID_KEY)),
        "a label alone must not put a namespace in a project: {out}"
    );
    assert!(
        out.contains(&format!("kubernetes.io/metadata.name: {ns}")),
        "{out}"
    );
}

#[test]
fn m2_an_empty_project_label_is_filled_and_the_cluster_label_added() {
    let project = project("m2");
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: filled
  namespace: {backing}
  labels: {{{label}: \"\"}}
data: {{key: ZG9n}}
",
        backing = project.backing,
        label = keys::PROJECT_SCOPED_LABEL,
    );
    let out = ok(kubectl_apply(&yaml, &["--dry-run=server", "-o", "yaml"]));
    assert!(
        out.lines()
            .any(|l| l == format!("    {}: {}", keys::PROJECT_SCOPED_LABEL, project.name)),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l == format!("    {}: local", keys::PROJECT_SCOPED_CLUSTER_LABEL)),
        "{out}"
    );
    // The data is untouched.
    assert!(out.lines().any(|l| l == "  key: ZG9n"), "{out}");
}

#[test]
fn m2_an_update_adds_the_missing_cluster_label() {
    let project = project("m2u");
    // Written by the reconciler's identity, so the mutator did not see the create.
    let yaml = original_yaml(&project, "bare", "");
    let mut args = vec!["create", "-f", "-"];
    args.extend_from_slice(&AS_RECONCILER);
    ok(kubectl_stdin(&env().kubeconfig, &args, &yaml));
    let cluster_label = format!(
        "jsonpath={{.metadata.labels.{}}}",
        keys::PROJECT_SCOPED_CLUSTER_LABEL.replace('.', "\\.")
    );
    let get = || {
        ok(kubectl(&[
            "get",
            "secret",
            "bare",
            "-n",
            &project.backing,
            "-o",
            &cluster_label,
        ]))
    };
    if !reconciler_running() {
        assert_eq!(get(), "", "created without the cluster label");
    }
    indexed("the original", |w| {
        w.scoped(&project.backing, "bare").is_some()
    });
    ok(kubectl(&[
        "annotate",
        "secret",
        "bare",
        "-n",
        &project.backing,
        "team=a",
    ]));
    assert_eq!(get(), "local");
}

#[test]
fn m2_server_side_apply_of_an_original_gets_its_labels_filled() {
    let project = project("m2s");
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: ssa
  namespace: {backing}
  labels: {{{label}: \"\"}}
data: {{key: ZG9n}}
",
        backing = project.backing,
        label = keys::PROJECT_SCOPED_LABEL,
    );
    let out = kubectl_apply(&yaml, &["--server-side", "--field-manager=e2e"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let labels: serde_json::Value = serde_json::from_str(&ok(kubectl(&[
        "get",
        "secret",
        "ssa",
        "-n",
        &project.backing,
        "-o",
        "jsonpath={.metadata.labels}",
    ])))
    .expect("labels as JSON");
    assert_eq!(labels[keys::PROJECT_SCOPED_LABEL], project.name.as_str());
    assert_eq!(labels[keys::PROJECT_SCOPED_CLUSTER_LABEL], "local");
    // Applying the same manifest again is no conflict with what the mutator wrote.
    let again = kubectl_apply(&yaml, &["--server-side", "--field-manager=e2e"]);
    assert!(again.status.success(), "{}", stderr(&again));
}

// ---------------------------------------------------------------------------------------------
// Rancher's documented example
// ---------------------------------------------------------------------------------------------

/// Project `p-vwxyz` of Rancher's documentation, created idempotently (its name cannot be unique).
fn project_p_vwxyz() -> TestProject {
    let (name, backing) = ("p-vwxyz", "local-p-vwxyz");
    cluster_namespace();
    ok(kubectl_apply(
        &format!(
            "apiVersion: v1
kind: Namespace
metadata: {{name: {backing}}}
---
apiVersion: management.cattle.io/v3
kind: Project
metadata: {{name: {name}, namespace: local}}
spec: {{clusterName: local, displayName: Rancher docs example}}
"
        ),
        &[],
    ));
    ok(kubectl(&[
        "patch",
        "project",
        name,
        "-n",
        "local",
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(r#"{{"status":{{"backingNamespace":"{backing}"}}}}"#),
    ]));
    let id = ProjectId::new("local", name);
    indexed("project p-vwxyz", |w| {
        w.project(&id)
            .is_some_and(|p| p.backing_namespace == backing)
    });
    TestProject {
        name: name.to_owned(),
        backing: backing.to_owned(),
    }
}

#[test]
fn rancher_documented_example_is_admitted_and_gets_the_cluster_label() {
    let project = project_p_vwxyz();
    // Verbatim from the Rancher documentation, but for the backing namespace's name.
    let yaml = "apiVersion: v1
data:
  key: ZG9n
kind: Secret
metadata:
  labels:
    management.cattle.io/project-scoped-secret: p-vwxyz
  name: test-secret
  namespace: c-abc123-p-vwxyz
type: Opaque
"
    .replace("c-abc123-p-vwxyz", &project.backing);
    let dry = kubectl_apply(&yaml, &["--dry-run=server", "-o", "yaml"]);
    let dry_yaml = stdout(&dry);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        dry_yaml
            .lines()
            .any(|l| l == "    management.cattle.io/project-scoped-secret-cluster: local"),
        "{dry_yaml}"
    );
    let out = kubectl_apply(&yaml, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        ["created", "configured", "unchanged"]
            .iter()
            .any(|verb| stdout(&out).contains(&format!("secret/test-secret {verb}"))),
        "{}",
        stdout(&out)
    );
    let labels = ok(kubectl(&[
        "get",
        "secret",
        "test-secret",
        "-n",
        &project.backing,
        "-o",
        "jsonpath={.metadata.labels.management\\.cattle\\.io/project-scoped-secret-cluster}",
    ]));
    assert_eq!(labels, "local");
}

// ---------------------------------------------------------------------------------------------
// The webhook stopped: failurePolicy, observed through kubectl
// ---------------------------------------------------------------------------------------------

/// Deletes webhook configurations registered by a test, however the test ends.
struct Registered(Vec<(String, String)>);

impl Drop for Registered {
    fn drop(&mut self) {
        for (kind, name) in &self.0 {
            let _ = kubectl(&["delete", kind, name, "--ignore-not-found"]);
        }
    }
}

/// Registers deploy/'s webhook configurations under a unique name derived from `prefix`, pointed at
/// `https://<addr>`, each webhook limited to `namespace_selector` (and, if given, with its
/// failurePolicy replaced), so that they act on the test's own namespaces only.
fn register_deploy_webhooks(
    prefix: &str,
    addr: &str,
    namespace_selector: serde_json::Value,
    failure_policy: Option<&str>,
) -> Registered {
    let manifests =
        scoped_secrets::registration::render_kustomization(&Path::new(REPO).join("deploy/base"))
            .expect("deploy/base renders");
    let ca = std::fs::read(
        env()
            .state_dir
            .join("certs")
            .join(scoped_secrets::certs::CA_CERT),
    )
    .expect("the test CA");
    let configurations = scoped_secrets::registration::local_webhook_configurations(
        &manifests,
        &format!("https://{addr}"),
        &scoped_secrets::certs::base64_encode(&ca),
    )
    .expect("webhook configurations");
    let mut registered = Registered(Vec::new());
    let name = unique(prefix);
    for mut configuration in configurations {
        configuration["metadata"]["name"] = name.clone().into();
        for webhook in configuration["webhooks"].as_array_mut().expect("webhooks") {
            webhook["namespaceSelector"] = namespace_selector.clone();
            if let Some(policy) = failure_policy {
                webhook["failurePolicy"] = policy.into();
            }
        }
        let kind = configuration["kind"]
            .as_str()
            .expect("a kind")
            .to_lowercase();
        registered.0.push((kind, name.clone()));
        ok(kubectl_apply(&configuration.to_string(), &[]));
    }
    registered
}

#[test]
fn a_stopped_webhook_fails_closed_only_for_the_guarded_objects() {
    let project = project("down");
    let selector_value = unique("down");
    let selector_key = "scoped-secrets.io/e2e-outage";
    ok(kubectl(&[
        "label",
        "namespace",
        &project.backing,
        &format!("{selector_key}={selector_value}"),
    ]));

    // A namespace of the project, in the selector too (labelled before the outage: an outage
    // refuses updates of project namespaces).
    let member = namespace_in(&project, "down");
    ok(kubectl(&[
        "label",
        "namespace",
        &member,
        &format!("{selector_key}={selector_value}"),
    ]));

    // deploy/'s configurations, renamed and pointed at a port where nothing listens, for the
    // labelled namespaces only.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("an address").port()
    };
    let registered = register_deploy_webhooks(
        "scoped-secrets-outage",
        &format!("127.0.0.1:{closed_port}"),
        serde_json::json!({"matchLabels": {selector_key: selector_value}}),
        None,
    );

    // Fail: a project-scoped secret cannot be written while the guard is unreachable.
    let scoped = original_yaml(&project, "blocked", "");
    let failed_call = format!("failed calling webhook \"{GUARD}\"");
    let err = eventually(
        "the apiserver to call the stopped webhook",
        Duration::from_secs(30),
        || {
            let out = kubectl_apply(&scoped, &["--dry-run=server"]);
            let err = stderr(&out);
            (!out.status.success() && err.contains(&failed_call)).then_some(err)
        },
    );
    assert!(
        err.contains(&format!(
            "127.0.0.1:{closed_port}{}",
            scoped_secrets::endpoints::SECRET_GUARD
        )),
        "{err}"
    );
    let err = fails(kubectl_apply(&scoped, &[]));
    assert!(err.contains(&failed_call), "{err}");
    fails(kubectl(&[
        "get",
        "secret",
        "blocked",
        "-n",
        &project.backing,
    ]));

    // Ignore: a plain secret in the same namespace is written (names check and mutator fail open).
    let out = ok(kubectl(&[
        "create",
        "secret",
        "generic",
        "plain",
        "-n",
        &project.backing,
        "--from-literal=key=value",
    ]));
    assert!(out.contains("secret/plain created"), "{out}");

    // Fail: the namespace guard too, for a namespace in the selector that joins a project.
    let err = fails(kubectl(&[
        "annotate",
        "namespace",
        &project.backing,
        &format!("{}={}", keys::PROJECT_ID_KEY, project.id()),
        "--dry-run=server",
    ]));
    assert!(
        err.contains(&format!("failed calling webhook \"{NAMESPACE_GUARD}\"")),
        "{err}"
    );

    // No rule is about deleting a namespace: deleting one of a project is never held up by an
    // outage (the namespace guard is not called for DELETE).
    let out = ok(kubectl(&[
        "delete",
        "namespace",
        &member,
        "--dry-run=server",
    ]));
    assert!(
        out.contains(&format!("namespace \"{member}\" deleted (server dry run)")),
        "{out}"
    );

    // The way out: delete the configurations; the same write then succeeds.
    drop(registered);
    eventually(
        "the apiserver to forget the stopped webhook",
        Duration::from_secs(30),
        || {
            kubectl_apply(&scoped, &["--dry-run=server"])
                .status
                .success()
                .then_some(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Audit mode: a second server, registered for one namespace the shared server leaves out
// ---------------------------------------------------------------------------------------------

#[test]
fn audit_mode_admits_with_would_deny_warnings() {
    let addr = start_extra_server(|args| args.mode = scoped_secrets::cli::ModeArg::Audit);
    // deploy/'s configurations leave out the webhook's own namespace; the audit server is
    // registered for it alone, and fails open, so the shared server's decisions never mix in.
    // Everything below is a dry run: nothing is stored there.
    let ns = "scoped-secrets-system";
    let _registered = register_deploy_webhooks(
        "scoped-secrets-audit",
        &addr.to_string(),
        serde_json::json!({"matchLabels": {"kubernetes.io/metadata.name": ns}}),
        Some("Ignore"),
    );
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: audited
  namespace: {ns}
  labels: {{{label}: p-vwxyz}}
  annotations: {{{copy}: \"true\"}}
data: {{key: ZG9n}}
",
        label = keys::PROJECT_SCOPED_LABEL,
        copy = keys::COPY_ANNOTATION
    );
    // Each denial as audit lines: what is wrong, and what to do, each within 120 characters.
    let s3 = message::would_deny(&format!(
        "label {} is only allowed on secrets in a project's backing namespace, and namespace \
         \"{ns}\" is not one; create the secret in the project's backing namespace and the \
         reconciler will copy it here",
        keys::PROJECT_SCOPED_LABEL
    ));
    let s4 = message::would_deny(&format!(
        "only the scoped-secrets reconciler may set copy markers; remove annotation {} from secret \
         \"audited\" in namespace \"{ns}\"",
        keys::COPY_ANNOTATION
    ));
    assert_eq!(
        s3.last().map(String::as_str),
        Some(
            "would deny: …; create the secret in the project's backing namespace and the \
             reconciler will copy it here"
        )
    );
    let out = eventually(
        "the apiserver to call the audit server",
        Duration::from_secs(30),
        || {
            let out = kubectl_apply(&yaml, &["--dry-run=server"]);
            stderr(&out).contains("would deny: ").then_some(out)
        },
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("secret/audited created (server dry run)"),
        "{}",
        stdout(&out)
    );
    for line in s3.iter().chain(&s4) {
        assert_warned(&out, line);
    }
}
