//! Which requests reach which webhook entry of `deploy/`, and what an outage of the webhook costs,
//! proven against a real kube-apiserver (one of each test's own: both register webhook
//! configurations of the same names). The server-side dry run of `hack/check-manifests.sh` only
//! compiles the matchConditions; their behaviour at request time (`object` is null on DELETE,
//! `oldObject` on CREATE; missing labels/annotations maps) is only seen when a request is admitted.
//!
//! How: the RBAC and webhook configurations are applied for real, but no Service exists, so every
//! call to the webhook fails at once. A request the apiserver sends to a Fail entry is then refused
//! with `failed calling webhook "<entry>"`; one sent only to Ignore entries (or to none) passes. That
//! is exactly the outage behaviour docs/SPEC.md §5 asks for, observed rather than assumed. Probes
//! are server-side dry runs, so they leave nothing behind; the few objects they act on are written
//! before the webhooks are registered. Requests made as the reconciler's service account
//! (impersonation) check the matchConditions and the ClusterRole together; `tests/rbac.rs` proves
//! each verb of that ClusterRole needed by a feature.

use std::path::{Path, PathBuf};
use std::time::Duration;
use testbed::control_plane::{ControlPlane, Options, SERVICE_ACCOUNT_USER};
use testbed::prelude::*;
use testbed::registration::{self, WEBHOOK_KINDS};

const SECRET_GUARD: &str = "secret-guard.scoped-secrets.io";
const NAMESPACE_GUARD: &str = "namespace-guard.scoped-secrets.io";
const PROJECT_GUARD: &str = "project-guard.scoped-secrets.io";
const PROBE_NS: &str = "scoped-secrets-probe";
const MEMBER: &str = "scoped-secrets-probe-member";
const RANCHER_USERS: [&str; 2] = [
    "system:serviceaccount:cattle-system:rancher",
    "system:serviceaccount:cattle-system:cattle",
];
const RBAC_KINDS: [&str; 5] = [
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ServiceAccount",
];
const NEW_PROJECT: &str = r#"{"apiVersion":"management.cattle.io/v3","kind":"Project","metadata":{"name":"p-new","namespace":"local"},"spec":{"clusterName":"local"}}"#;

/// The kustomization a test installs.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `deploy/base`: the reconciler's full permissions.
    Base,
    /// `deploy/overlays/beside-rancher`: read-only permissions, and Rancher's identities skip the
    /// webhooks too (they get a cluster-admin binding, standing in for Rancher's own rights).
    BesideRancher,
}

/// How a request fares while the webhook is unreachable.
#[derive(Clone, Copy)]
enum Outcome {
    Passes,
    /// Refused because it is sent to this fail-closed entry.
    BlockedBy(&'static str),
}
use Outcome::{BlockedBy, Passes};

/// A throwaway cluster with `mode`'s RBAC and webhook configurations and the probes' fixtures, and
/// the checks that failed so far (all are run, then reported together).
struct Probed {
    _control_plane: ControlPlane,
    kubeconfig: PathBuf,
    failures: Vec<String>,
}

impl Probed {
    fn install(mode: Mode) -> Self {
        let dir = Path::new(REPO).join(format!(
            "target/webhook-scope/{}-{}",
            std::process::id(),
            if mode == Mode::Base {
                "base"
            } else {
                "beside-rancher"
            }
        ));
        let control_plane =
            ControlPlane::start_blocking(&Options::new(dir)).expect("control plane");
        let mut probed = Self {
            kubeconfig: control_plane.kubeconfig.clone(),
            _control_plane: control_plane,
            failures: Vec::new(),
        };
        probed.set_up(mode);
        probed
    }

    fn set_up(&mut self, mode: Mode) {
        let deploy = Path::new(REPO).join("deploy");
        let kustomization = match mode {
            Mode::Base => deploy.join("base"),
            Mode::BesideRancher => deploy.join("overlays/beside-rancher"),
        };
        let all = registration::render_kustomization(&kustomization).expect("kustomize");
        // The CRD comes from the base in both modes (beside Rancher, Rancher would have installed it).
        let base = registration::render_kustomization(&deploy.join("base")).expect("kustomize");
        let of_kinds = |manifests: &str, kinds: &[&str]| {
            registration::of_kinds(manifests, kinds).expect("manifests")
        };
        let namespace = deploy.join("base/namespace.yaml");
        ok(self.kubectl(&["apply", "-f", &namespace.to_string_lossy()]));
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {PROBE_NS}}}\n"
        ));
        self.apply(&of_kinds(&all, &RBAC_KINDS));
        if mode == Mode::BesideRancher {
            // Stand-ins for Rancher's own rights, so its requests get past authorization to admission.
            ok(self.kubectl_line(
                "create clusterrolebinding scoped-secrets-probe-rancher --clusterrole=cluster-admin \
                 --serviceaccount=cattle-system:rancher --serviceaccount=cattle-system:cattle",
            ));
        }
        self.apply(&of_kinds(&base, &["CustomResourceDefinition"]));
        ok(self.kubectl_line(
            "wait --for=condition=Established --timeout=30s crd/projects.management.cattle.io",
        ));

        // Fixtures, written before the webhooks exist: a namespace in a project, an original, a
        // copy, an ordinary secret, and a Project in cluster "local".
        self.apply(&format!(
            "apiVersion: v1
kind: Namespace
metadata:
  name: {MEMBER}
  annotations: {{field.cattle.io/projectId: \"local:p-probe\"}}
  labels: {{field.cattle.io/projectId: p-probe}}
---
apiVersion: v1
kind: Secret
metadata:
  name: original
  namespace: {PROBE_NS}
  labels: {{management.cattle.io/project-scoped-secret: p-probe, scoped-secrets.io/probe: \"true\"}}
---
apiVersion: v1
kind: Secret
metadata:
  name: copy
  namespace: {PROBE_NS}
  labels: {{scoped-secrets.io/probe: \"true\"}}
  annotations: {{management.cattle.io/project-scoped-secret-copy: \"true\"}}
---
apiVersion: v1
kind: Secret
metadata:
  name: plain
  namespace: {PROBE_NS}
  labels: {{scoped-secrets.io/probe: \"true\"}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: local}}
"
        ));
        self.apply(
            "apiVersion: management.cattle.io/v3
kind: Project
metadata: {name: p-probe, namespace: local}
spec: {clusterName: local, displayName: Probe}
",
        );
        if mode == Mode::Base {
            // The printer columns, with status.backingNamespace set through the status subresource
            // (before the project guard exists: it judges an admin's status write too). The
            // reconciler's own merge patch of projects/status, with only the `patch` verb, is
            // exercised by tests/reconciler's projects_without_a_backing_namespace_get_one.
            ok(self.kubectl_line(
                r#"patch project p-probe -n local --subresource=status --type=merge -p {"status":{"backingNamespace":"local-p-probe"}}"#,
            ));
        }

        self.apply(&of_kinds(&all, &WEBHOOK_KINDS));
        // Webhook configurations reach the apiserver's admission chain asynchronously; wait until
        // a probe that must be refused is refused.
        eventually("the webhooks to be called", Duration::from_secs(10), || {
            let line = format!("label secret original -n {PROBE_NS} warm=up --dry-run=server");
            (!self.kubectl_line(&line).status.success()).then_some(())
        });
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        kubectl_with(&self.kubeconfig, args)
    }

    /// One command line as a person types it (no quoting: split on whitespace).
    fn kubectl_line(&self, line: &str) -> std::process::Output {
        kubectl_line_with(&self.kubeconfig, line)
    }

    fn apply(&self, manifests: &str) {
        ok(kubectl_stdin(
            &self.kubeconfig,
            &["apply", "-f", "-"],
            manifests,
        ));
    }

    /// Checks how the request `line` fares.
    fn expect(&mut self, want: Outcome, what: &str, line: &str) {
        let out = self.kubectl_line(line);
        self.judge(want, what, out);
    }

    /// Checks how a server-side dry run of creating `json` fares (`extra`: more flags).
    fn expect_create(&mut self, want: Outcome, what: &str, json: &str, extra: &[&str]) {
        let mut args = vec!["apply", "--dry-run=server", "-f", "-"];
        args.extend_from_slice(extra);
        let out = kubectl_stdin(&self.kubeconfig, &args, json);
        self.judge(want, what, out);
    }

    fn judge(&mut self, want: Outcome, what: &str, out: std::process::Output) {
        let failure = match (want, out.status.success()) {
            (Passes, true) => None,
            (BlockedBy(entry), true) => Some(format!("{what}: admitted, want refused by {entry}")),
            (BlockedBy(entry), false)
                if stderr(&out).contains(&format!("failed calling webhook \"{entry}\"")) =>
            {
                None
            }
            (BlockedBy(entry), false) => Some(format!(
                "{what}: want refused by {entry}, got: {}",
                stderr(&out)
            )),
            (Passes, false) => Some(format!("{what}: want admitted, got: {}", stderr(&out))),
        };
        self.failures.extend(failure);
    }

    /// Checks `kubectl auth can-i <line> --as=<the product's service account>`.
    fn can(&mut self, want: bool, line: &str) {
        let out = self.kubectl_line(&format!("auth can-i {line} --as={SERVICE_ACCOUNT_USER}"));
        let got = stdout(&out).trim().to_owned();
        let want = if want { "yes" } else { "no" };
        if got != want {
            self.failures
                .push(format!("can-i {line}: want {want}, got {got:?}"));
        }
    }

    /// Checks that the CRD's own validation refuses `manifest` with a message containing `want`.
    fn crd_refuses(&mut self, what: &str, want: &str, manifest: &str) {
        let out = kubectl_stdin(
            &self.kubeconfig,
            &["apply", "--dry-run=server", "-f", "-"],
            manifest,
        );
        if out.status.success() || !stderr(&out).contains(want) {
            self.failures.push(format!(
                "{what}: want the CRD's {want:?}, got: {}",
                stderr(&out)
            ));
        }
    }

    #[track_caller]
    fn assert_all_held(self) {
        assert!(
            self.failures.is_empty(),
            "{} check(s) failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// A Secret in `namespace` with `metadata` (JSON) otherwise empty.
fn secret(namespace: &str, metadata: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"l","namespace":"{namespace}",{metadata}}}}}"#
    )
}

/// An outage blocks only project-scoped secrets and copies.
fn secrets(p: &mut Probed, mode: Mode) {
    let ns = PROBE_NS;
    p.expect(
        Passes,
        "create an ordinary secret (secret-names fails open)",
        &format!("create secret generic probe-plain -n {ns} --from-literal=k=v --dry-run=server"),
    );
    p.expect(
        Passes,
        "update an ordinary secret",
        &format!("label secret plain -n {ns} probe=1 --dry-run=server"),
    );
    p.expect(
        Passes,
        "delete an ordinary secret",
        &format!("delete secret plain -n {ns} --dry-run=server"),
    );
    let label = r#""labels":{"management.cattle.io/project-scoped-secret":"p"}"#;
    p.expect_create(
        BlockedBy(SECRET_GUARD),
        "create with the project-scoped label (oldObject is null)",
        &secret(ns, label),
        &[],
    );
    p.expect_create(
        BlockedBy(SECRET_GUARD),
        "create with a forged copy marker",
        &secret(
            ns,
            r#""annotations":{"management.cattle.io/project-scoped-secret-copy":"true"}"#,
        ),
        &[],
    );
    p.expect_create(
        BlockedBy(SECRET_GUARD),
        "create with a forged origin annotation",
        &secret(ns, r#""annotations":{"scoped-secrets.io/origin":"x/y"}"#),
        &[],
    );
    p.expect(
        BlockedBy(SECRET_GUARD),
        "add a copy marker to an ordinary secret",
        &format!(
            "annotate secret plain -n {ns} management.cattle.io/project-scoped-secret-copy=true --dry-run=server"
        ),
    );
    p.expect(
        BlockedBy(SECRET_GUARD),
        "remove the label from an original (seen on oldObject)",
        &format!(
            "label secret original -n {ns} management.cattle.io/project-scoped-secret- --dry-run=server"
        ),
    );
    p.expect(
        BlockedBy(SECRET_GUARD),
        "delete an original (object is null on DELETE)",
        &format!("delete secret original -n {ns} --dry-run=server"),
    );
    p.expect(
        BlockedBy(SECRET_GUARD),
        "delete a copy",
        &format!("delete secret copy -n {ns} --dry-run=server"),
    );
    for user in skipping_users(mode) {
        p.expect(
            Passes,
            &format!("{user} skips the guard (matchConditions)"),
            &format!("delete secret copy -n {ns} --dry-run=server --as={user}"),
        );
    }
    p.expect_create(
        Passes,
        "kube-system is outside every webhook (namespaceSelector)",
        &secret("kube-system", label),
        &[],
    );
    p.expect_create(
        Passes,
        "scoped-secrets-system is outside every webhook (its TLS secret can always be fixed)",
        &secret("scoped-secrets-system", label),
        &[],
    );
}

/// The identities the mode's matchConditions let skip the webhooks: the reconciler's own, or
/// beside Rancher, Rancher's copier.
fn skipping_users(mode: Mode) -> Vec<&'static str> {
    match mode {
        Mode::Base => vec![SERVICE_ACCOUNT_USER],
        Mode::BesideRancher => RANCHER_USERS.to_vec(),
    }
}

/// An outage blocks only changes of project membership.
fn namespaces(p: &mut Probed, mode: Mode) {
    p.expect(
        Passes,
        "create an ordinary namespace",
        "create namespace probe-plain --dry-run=server",
    );
    p.expect_create(
        BlockedBy(NAMESPACE_GUARD),
        "create a namespace with the projectId annotation",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"probe-a","annotations":{"field.cattle.io/projectId":"local:p"}}}"#,
        &[],
    );
    p.expect_create(
        Passes,
        "create a namespace with only the projectId label (the mutator's; no membership change)",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"probe-l","labels":{"field.cattle.io/projectId":"p"}}}"#,
        &[],
    );
    p.expect(
        BlockedBy(NAMESPACE_GUARD),
        "move a namespace into a project",
        &format!(
            "annotate namespace {PROBE_NS} field.cattle.io/projectId=local:p --dry-run=server"
        ),
    );
    p.expect(
        BlockedBy(NAMESPACE_GUARD),
        "take a namespace out of its project (seen on oldObject)",
        &format!("annotate namespace {MEMBER} field.cattle.io/projectId- --dry-run=server"),
    );
    p.expect(
        BlockedBy(NAMESPACE_GUARD),
        "kube-system joining a project (no namespace is exempt from the guard)",
        "annotate namespace kube-system field.cattle.io/projectId=local:p --dry-run=server",
    );
    p.expect(
        BlockedBy(NAMESPACE_GUARD),
        "marking a namespace as a project's backing namespace (N5)",
        &format!(
            "annotate namespace {PROBE_NS} scoped-secrets.io/backing-namespace-of=local:p --dry-run=server"
        ),
    );
    p.expect(
        Passes,
        "an ordinary change to kube-system (matchConditions)",
        "label namespace kube-system probe=1 --dry-run=server",
    );
    p.expect(
        Passes,
        "an ordinary change to a namespace in a project (matchConditions)",
        &format!("label namespace {MEMBER} probe=1 --dry-run=server"),
    );
    // No rule is about deleting a namespace, so the fail-closed guard is not called for it: an
    // outage never holds up namespace deletion (or the namespace controller).
    p.expect(
        Passes,
        "delete a namespace in a project (no rule is about it)",
        &format!("delete namespace {MEMBER} --dry-run=server"),
    );
    for user in skipping_users(mode) {
        p.expect(
            Passes,
            &format!("{user} skips the guard"),
            &format!(
                "label namespace {MEMBER} field.cattle.io/projectId=p-probe2 --overwrite --dry-run=server --as={user}"
            ),
        );
    }
}

/// An outage blocks only creating Projects and changing their cluster or backing namespace.
fn projects(p: &mut Probed, mode: Mode) {
    let set_backing = r#"patch project p-probe -n local --subresource=status --type=merge -p {"status":{"backingNamespace":"somewhere"}} --dry-run=server"#;
    p.expect_create(
        BlockedBy(PROJECT_GUARD),
        "create a Project",
        NEW_PROJECT,
        &[],
    );
    p.expect(
        BlockedBy(PROJECT_GUARD),
        "set status.backingNamespace (the status subresource)",
        set_backing,
    );
    p.expect(
        BlockedBy(PROJECT_GUARD),
        "change spec.clusterName",
        r#"patch project p-probe -n local --type=merge -p {"spec":{"clusterName":"other"}} --dry-run=server"#,
    );
    p.expect(
        Passes,
        "label a Project (its claim unchanged)",
        "label project p-probe -n local probe=1 --dry-run=server",
    );
    p.expect(
        Passes,
        "write a Project's status conditions (its claim unchanged)",
        r#"patch project p-probe -n local --subresource=status --type=merge -p {"status":{"conditions":[{"type":"Probe","status":"True"}]}} --dry-run=server"#,
    );
    p.expect(
        Passes,
        "delete a Project (no rule is about it)",
        "delete project p-probe -n local --dry-run=server",
    );
    match mode {
        // The admin lends the reconciler's name its group: the reconciler's RBAC lacks the GET
        // kubectl makes first; only the username matters to the matchConditions.
        Mode::Base => p.expect(
            Passes,
            "the reconciler's account skips the guard",
            &format!("{set_backing} --as={SERVICE_ACCOUNT_USER} --as-group=system:masters"),
        ),
        // Rancher names the Projects it creates and records their backing namespaces itself.
        Mode::BesideRancher => {
            for user in RANCHER_USERS {
                p.expect_create(
                    Passes,
                    &format!("{user} skips the guard"),
                    NEW_PROJECT,
                    &[&format!("--as={user}")],
                );
            }
        }
    }
}

fn recovery(p: &mut Probed) {
    p.expect(
        Passes,
        "deleting the webhook configurations is never blocked",
        "delete validatingwebhookconfiguration scoped-secrets --dry-run=server",
    );
}

/// The reconciler's full rights (base): what `kubectl auth can-i` answers for its account.
fn reconciler_rights(p: &mut Probed) {
    for verb in ["get", "list", "watch", "create", "update", "delete"] {
        p.can(true, &format!("{verb} secrets -A"));
    }
    p.can(false, "patch secrets -A");
    for verb in ["get", "list", "watch", "create", "patch"] {
        p.can(true, &format!("{verb} namespaces"));
    }
    for verb in ["update", "delete"] {
        p.can(false, &format!("{verb} namespaces"));
    }
    for verb in ["get", "list", "watch"] {
        p.can(true, &format!("{verb} projects.management.cattle.io -A"));
    }
    p.can(false, "update projects.management.cattle.io -A");
    p.can(
        true,
        "patch projects.management.cattle.io --subresource=status -A",
    );
    p.can(
        false,
        "update projects.management.cattle.io --subresource=status -A",
    );
    p.can(true, "create subjectaccessreviews.authorization.k8s.io");
    p.can(true, "create events.events.k8s.io -A");
    p.can(false, "create events -A");
    for verb in ["get", "list", "watch", "create", "update", "delete"] {
        p.can(
            true,
            &format!("{verb} leases.coordination.k8s.io -n scoped-secrets-system"),
        );
    }
    p.can(false, "get leases.coordination.k8s.io -n kube-system");
    p.can(false, "get configmaps -A");
}

/// Beside Rancher the webhook only reads its index and asks SubjectAccessReviews; it writes
/// nothing else.
fn webhook_only_rights(p: &mut Probed) {
    for resource in ["secrets", "namespaces", "projects.management.cattle.io"] {
        for verb in ["get", "list", "watch"] {
            p.can(true, &format!("{verb} {resource} -A"));
        }
        for verb in ["create", "update", "patch", "delete"] {
            p.can(false, &format!("{verb} {resource} -A"));
        }
    }
    p.can(
        false,
        "update projects.management.cattle.io --subresource=status -A",
    );
    p.can(true, "create subjectaccessreviews.authorization.k8s.io");
    p.can(false, "create events.events.k8s.io -A");
    p.can(
        false,
        "create leases.coordination.k8s.io -n scoped-secrets-system",
    );
}

/// The Project CRD: its printer columns show the backing namespace, and its own validation (which
/// runs before any webhook, so it holds during an outage too) refuses what it must, with messages
/// that tell it apart from the unreachable project guard's refusal.
fn project_crd(p: &mut Probed) {
    let listed = stdout(&p.kubectl_line("get projects -A"));
    let row = ["local", "p-probe", "Probe", "local", "local-p-probe"];
    let shown = listed.contains("BACKING NAMESPACE")
        && listed
            .lines()
            .any(|line| line.split_whitespace().take(row.len()).eq(row));
    if !shown {
        p.failures.push(format!(
            "Project printer columns or status write:\n{listed}"
        ));
    }
    p.crd_refuses(
        "spec.clusterName is required",
        "spec.clusterName: Required value",
        "apiVersion: management.cattle.io/v3
kind: Project
metadata: {name: p-bad, namespace: local}
spec: {displayName: No cluster}
",
    );
    p.crd_refuses(
        "a Project name must be able to name a namespace",
        "cannot form a namespace name",
        "apiVersion: management.cattle.io/v3
kind: Project
metadata: {name: p.dotted, namespace: local}
spec: {clusterName: local}
",
    );
}

/// Every request of the outage table, as `mode` routes it.
fn during_an_outage(p: &mut Probed, mode: Mode) {
    secrets(p, mode);
    namespaces(p, mode);
    projects(p, mode);
    recovery(p);
}

#[test]
fn deploy_base_webhooks_see_exactly_their_requests_and_the_reconciler_has_exactly_its_rights() {
    let mut p = Probed::install(Mode::Base);
    during_an_outage(&mut p, Mode::Base);
    reconciler_rights(&mut p);
    project_crd(&mut p);
    p.assert_all_held();
}

#[test]
fn beside_rancher_webhooks_see_exactly_their_requests_and_rancher_skips_them() {
    let mut p = Probed::install(Mode::BesideRancher);
    during_an_outage(&mut p, Mode::BesideRancher);
    webhook_only_rights(&mut p);
    p.assert_all_held();
}
