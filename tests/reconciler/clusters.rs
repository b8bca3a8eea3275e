//! Registering downstream clusters (docs/SPEC.md §6): a Secret in the product's namespace labelled
//! `scoped-secrets.io/cluster: <id>` with a kubeconfig under `value`. The leader refuses what it must
//! not run or read (an `exec` plugin), says so with an Event on the Secret, and keeps a probed
//! connection to each accepted cluster: `scoped_secrets_cluster_connected{cluster}` and an Event when
//! the health changes. The "downstream" cluster here is a control plane of its own (its admin
//! kubeconfig: these tests are about registrations, not the copier's rights); the test's own
//! apiserver registered as a downstream cluster is recognised as the management cluster itself and
//! never written through.

use scoped_secrets::keys;
use scoped_secrets::policy::OverwritePolicy;
use testbed::harness::*;
use testbed::prelude::*;

const TOKEN_MARK: &str = "token-that-must-never-be-quoted";

/// Another cluster (a control plane of its own, stopped when dropped) and its admin kubeconfig's
/// text, with inline token and CA as registrations must hold them.
fn another_cluster(id: &str) -> (testbed::downstream::Downstream, String) {
    let dir = env().state_dir.join(unique(&format!("registered-{id}")));
    let cluster = testbed::downstream::Downstream::start(id, dir).expect("a control plane");
    let kubeconfig = std::fs::read_to_string(cluster.kubeconfig()).expect("its kubeconfig");
    (cluster, kubeconfig)
}

/// Creates or replaces registration Secret `name` for cluster `cluster` holding `kubeconfig`.
pub(crate) fn register(name: &str, cluster: &str, kubeconfig: &str) {
    let indented: String = kubeconfig.lines().map(|l| format!("    {l}\n")).collect();
    let label = format!("{}: {cluster}", keys::CLUSTER_REGISTRATION_LABEL);
    let data = format!("stringData:\n  {}: |\n{indented}", keys::KUBECONFIG_KEY);
    ok(kubectl_apply(
        &secret_yaml(LEASE_NAMESPACE, name, &label, &data),
        &[],
    ));
}

/// `scoped_secrets_cluster_connected` for `cluster`, or `None` when the series does not exist.
pub(crate) fn connected(running: &Running, cluster: &str) -> Option<f64> {
    running.series(
        "scoped_secrets_cluster_connected",
        &format!("cluster=\"{cluster}\""),
    )
}

#[track_caller]
pub(crate) fn event_saying(secret: &str, reason: &str, words: &str) -> String {
    eventually(
        &format!("a {reason} Event on {secret} saying {words:?}"),
        WAIT,
        || {
            let messages = event_messages(LEASE_NAMESPACE, secret, reason);
            messages.contains(words).then_some(messages)
        },
    )
}

#[test]
fn a_kubeconfig_that_runs_programs_or_names_a_taken_cluster_is_refused_with_an_event() {
    let _serial = serial();
    let running = start(OverwritePolicy::Warn);
    let exec = unique("reg-exec");
    register(
        &exec,
        "c-exec",
        &format!(
            "current-context: c
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:1'}}}}]
users:
- name: u
  user:
    token: {TOKEN_MARK}
    exec: {{apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, 'touch /tmp/pwned']}}
"
        ),
    );
    let said = event_saying(&exec, "ClusterRegistrationRefused", "`exec`");
    assert!(
        !said.contains(TOKEN_MARK) && !said.contains("/bin/sh"),
        "{said}"
    );
    assert_eq!(
        connected(&running, "c-exec"),
        None,
        "a refused registration has no connection"
    );

    let sa = std::fs::read_to_string(&env().sa_kubeconfig).expect("the service account kubeconfig");
    // A user who may write Secrets only in their own namespace cannot register a cluster there: only
    // the product's namespace is read. Created as that user, with the RBAC the test gives them.
    let own = unique("tenant");
    ok(kubectl(&["create", "namespace", &own]));
    ok(kubectl_line(&format!(
        "create role secrets-writer --verb=get,list,create,update,patch --resource=secrets -n {own}"
    )));
    ok(kubectl_line(&format!(
        "create rolebinding tenant-secrets --role=secrets-writer --user=tenant -n {own}"
    )));
    let planted = unique("reg-planted");
    let indented: String = sa.lines().map(|l| format!("    {l}\n")).collect();
    ok(kubectl_stdin(
        &env().kubeconfig,
        &["apply", "--as=tenant", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {planted}\n  namespace: {own}\n  labels: {{{}: c-planted}}\nstringData:\n  {}: |\n{indented}",
            keys::CLUSTER_REGISTRATION_LABEL,
            keys::KUBECONFIG_KEY,
        ),
    ));
    fails(kubectl(&[
        "create",
        "secret",
        "generic",
        "x",
        "--as=tenant",
        "-n",
        LEASE_NAMESPACE,
    ]));

    // Two registrations of one cluster: neither is used.
    let (_twice, twice) = another_cluster("c-twice");
    let (first, second) = (unique("reg-twice"), unique("reg-twice"));
    register(&first, "c-twice", &twice);
    register(&second, "c-twice", &twice);
    event_saying(&first, "ClusterRegistrationDuplicated", &second);
    event_saying(&second, "ClusterRegistrationDuplicated", &first);
    assert_eq!(connected(&running, "c-twice"), None);
    // The one left is used.
    ok(kubectl(&[
        "delete",
        "secret",
        &second,
        "-n",
        LEASE_NAMESPACE,
    ]));
    eventually("the remaining registration connected", WAIT, || {
        (connected(&running, "c-twice") == Some(1.0)).then_some(())
    });
    // The planted one was there all along, and the keeper has converged since: never connected.
    assert_eq!(
        connected(&running, "c-planted"),
        None,
        "a registration outside the product's namespace"
    );
    ok(kubectl(&["delete", "namespace", &own, "--wait=false"]));
    for name in [exec, first] {
        ok(kubectl(&["delete", "secret", &name, "-n", LEASE_NAMESPACE]));
    }
}

#[test]
fn a_registered_cluster_is_probed_and_rotated_credentials_are_followed_at_runtime() {
    let _serial = serial();
    let running = start(OverwritePolicy::Warn);
    let name = unique("reg");
    let (_probed, sa) = another_cluster("c-probed");

    register(&name, "c-probed", &sa);
    eventually("c-probed connected", WAIT, || {
        (connected(&running, "c-probed") == Some(1.0)).then_some(())
    });
    event_saying(&name, "ClusterConnected", "connected to https://127.0.0.1:");

    // Rotated to a token the apiserver does not know: refused, said, nothing else changes.
    let token = sa
        .lines()
        .find_map(|l| l.trim().strip_prefix("user: {token: "))
        .and_then(|t| t.strip_suffix('}'))
        .expect("the kubeconfig carries an inline token");
    register(&name, "c-probed", &sa.replace(token, TOKEN_MARK));
    eventually("c-probed disconnected", WAIT, || {
        (connected(&running, "c-probed") == Some(0.0)).then_some(())
    });
    let said = event_saying(&name, "ClusterCredentialsRefused", "401");
    assert!(!said.contains(TOKEN_MARK), "{said}");

    // Restored: connected again, without a restart.
    register(&name, "c-probed", &sa);
    eventually("c-probed connected again", WAIT, || {
        (connected(&running, "c-probed") == Some(1.0)).then_some(())
    });

    // Removed: the connection and its series go.
    ok(kubectl(&["delete", "secret", &name, "-n", LEASE_NAMESPACE]));
    eventually("c-probed forgotten", WAIT, || {
        connected(&running, "c-probed").is_none().then_some(())
    });
}

#[test]
fn the_management_cluster_registered_as_a_downstream_one_is_never_written_through() {
    let _serial = serial();
    let running = start(OverwritePolicy::Warn);
    // The test's own apiserver, under another cluster id: written to as a downstream cluster, its
    // namespaces would be written by two rounds undoing each other's work.
    let name = unique("reg-self");
    let own =
        std::fs::read_to_string(&env().sa_kubeconfig).expect("the service account kubeconfig");
    register(&name, "c-self", &own);
    let said = event_saying(
        &name,
        "ClusterIsManagement",
        "is the management cluster itself",
    );
    assert!(
        said.contains("kube-system namespace has the same uid"),
        "{said}"
    );
    eventually("c-self not connected", WAIT, || {
        (connected(&running, "c-self") == Some(0.0)).then_some(())
    });
    ok(kubectl(&["delete", "secret", &name, "-n", LEASE_NAMESPACE]));
    running.stop();
}
