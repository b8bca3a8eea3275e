//! Copies in downstream clusters (docs/SPEC.md §6): originals in the management cluster (this test
//! binary's control plane), copies written by the per-cluster worker into each registered cluster's
//! project namespaces. Each downstream cluster is a real control plane of its own (etcd and
//! kube-apiserver on 127.0.0.1), registered with a Secret holding its kubeconfig.

use super::clusters::{connected, register};
use scoped_secrets::clusters::sharding;
use scoped_secrets::keys;
use scoped_secrets::policy::OverwritePolicy;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use testbed::harness::*;
use testbed::prelude::*;

/// A downstream cluster (the test bed's: a control plane of its own with `deploy/downstream-access`
/// applied, registered with a bound token of the copier, whose least privilege is all it gets), and
/// what these tests ask of it.
struct Downstream {
    id: String,
    cluster: testbed::downstream::Downstream,
}

impl Downstream {
    fn start(id: &str) -> Self {
        let dir = env().state_dir.join(unique(&format!("downstream-{id}")));
        let cluster =
            testbed::downstream::Downstream::start(id, dir).expect("a downstream control plane");
        Self {
            id: id.to_owned(),
            cluster,
        }
    }

    fn kubeconfig(&self) -> &Path {
        self.cluster.kubeconfig()
    }

    /// Registers it in the management cluster with a fresh copier token; returns the Secret's name.
    fn register(&self) -> String {
        self.cluster
            .register(&env().kubeconfig)
            .expect("registered");
        self.cluster.registration_name()
    }

    fn kubectl(&self, args: &[&str]) -> String {
        ok(kubectl_with(self.kubeconfig(), args))
    }

    /// A namespace of this cluster in `project` (annotated `<cluster>:<project>`, as Rancher does).
    fn namespace_in(&self, name: &str, project: &str) {
        self.namespace_annotated(name, &format!("{}:{project}", self.id));
    }

    fn namespace_annotated(&self, name: &str, id: &str) {
        ok(kubectl_stdin(
            self.kubeconfig(),
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  annotations: {{field.cattle.io/projectId: \"{id}\"}}\n"
            ),
        ));
    }

    fn secret(&self, ns: &str, name: &str) -> Option<Value> {
        self.cluster.secret(ns, name)
    }

    /// Waits until `ns` here holds a copy of `origin` whose data is `data`.
    #[track_caller]
    fn copy_with(&self, ns: &str, name: &str, backing: &str, data: &Value) -> Value {
        eventually(
            &format!("the copy of {backing}/{name} in {}/{ns}", self.id),
            WAIT,
            || {
                self.secret(ns, name)
                    .filter(|s| is_copy_of(s, backing, name) && &s["data"] == data)
            },
        )
    }

    #[track_caller]
    fn gone(&self, ns: &str, name: &str) {
        eventually(&format!("{name} to leave {}/{ns}", self.id), WAIT, || {
            self.secret(ns, name).is_none().then_some(())
        });
    }
}

/// Project `<cluster>:<name>` in the management cluster; returns its backing namespace.
fn project_of(cluster: &str, name: &str) -> String {
    project_in(cluster, name).backing
}

fn original(backing: &str, project: &str, name: &str, value: &str) {
    let label = format!("{}: {project}", keys::PROJECT_SCOPED_LABEL);
    let data = format!("stringData: {{key: {value}}}\n");
    ok(kubectl_apply(
        &secret_yaml(backing, name, &label, &data),
        &[],
    ));
}

/// The data a copy of an original holding `key: value` has.
fn data_of(value: &str) -> Value {
    let encoded = k8s_openapi::ByteString(value.as_bytes().to_vec());
    serde_json::json!({ "key": encoded })
}

/// A reconciler probing downstream clusters every second (two-second timeouts).
fn reconciler() -> Running {
    Running::start_with(
        &unique("lease"),
        &unique("instance"),
        OverwritePolicy::Warn,
        probe_often,
    )
}

fn probe_often(cfg: &mut scoped_secrets::reconciler::Config) {
    cfg.clusters.probe_every = Duration::from_secs(1);
    cfg.clusters.max_backoff = Duration::from_secs(1);
    cfg.clusters.request_timeout = Duration::from_secs(2);
}

/// Removes a registration Secret.
fn unregister(name: &str) {
    ok(kubectl(&["delete", "secret", name, "-n", LEASE_NAMESPACE]));
}

/// The Project's `CopiesInPlace` condition as "status,reason: message".
fn copies_condition(cluster: &str, project: &str) -> String {
    let path = format!(
        "jsonpath={{.status.conditions[?(@.type==\"{0}\")].status}},{{.status.conditions[?(@.type==\"{0}\")].reason}}: {{.status.conditions[?(@.type==\"{0}\")].message}}",
        keys::COPIES_IN_PLACE_CONDITION
    );
    ok(kubectl(&[
        "get", "project", project, "-n", cluster, "-o", &path,
    ]))
}

#[track_caller]
fn condition_saying(cluster: &str, project: &str, start: &str) -> String {
    eventually(
        &format!("the CopiesInPlace condition of {cluster}:{project} saying {start:?}"),
        WAIT,
        || Some(copies_condition(cluster, project)).filter(|c| c.starts_with(start)),
    )
}

/// Where the outage tests begin: a reconciler; cluster `id`, its namespaces `members` in project
/// `project`, registered; and two originals of the project, named `kept` and `dropped` and holding
/// the values of those names, copied into every member (the tests delete `dropped` while the
/// cluster cannot be written). Returns the reconciler, the cluster, its registration and the
/// project's backing namespace.
#[track_caller]
fn kept_and_dropped(
    id: &str,
    project: &str,
    members: &[&str],
    kept: &str,
    dropped: &str,
) -> (Running, Downstream, String, String) {
    let originals = [("kept", kept), ("dropped", dropped)];
    let running = reconciler();
    let downstream = Downstream::start(id);
    for ns in members {
        downstream.namespace_in(ns, project);
    }
    let registration = downstream.register();
    let backing = project_of(id, project);
    for (name, value) in originals {
        original(&backing, project, name, value);
    }
    for ns in members {
        for (name, value) in originals {
            downstream.copy_with(ns, name, &backing, &data_of(value));
        }
    }
    (running, downstream, registration, backing)
}

#[test]
fn rancher_example_across_clusters_test_secret_reaches_every_project_namespace_of_c_abc123() {
    let _serial = serial();
    let running = reconciler();
    let downstream = Downstream::start("c-abc123");
    downstream.namespace_in("team-a", "p-vwxyz");
    downstream.namespace_in("team-b", "p-vwxyz");
    // Another project of the same cluster, and a namespace in no project.
    downstream.namespace_in("elsewhere", "p-other");
    downstream.kubectl(&["create", "namespace", "plain"]);
    let registration = downstream.register();

    let backing = project_of("c-abc123", "p-vwxyz");
    original(&backing, "p-vwxyz", "test-secret", "one");
    for ns in ["team-a", "team-b"] {
        let copy = downstream.copy_with(ns, "test-secret", &backing, &data_of("one"));
        assert_eq!(
            copy["metadata"]["labels"][keys::PROJECT_SCOPED_LABEL],
            "p-vwxyz"
        );
    }
    for ns in ["elsewhere", "plain"] {
        assert!(downstream.secret(ns, "test-secret").is_none(), "{ns}");
    }
    // Nothing of it in the management cluster but the original.
    let listed = ok(kubectl(&[
        "get",
        "secrets",
        "-A",
        "-l",
        &format!("{}=p-vwxyz", keys::PROJECT_SCOPED_LABEL),
        "-o",
        "name",
    ]));
    assert_eq!(listed.lines().count(), 1, "{listed}");

    // Updates follow; a namespace joining receives it; deletion follows.
    original(&backing, "p-vwxyz", "test-secret", "two");
    for ns in ["team-a", "team-b"] {
        downstream.copy_with(ns, "test-secret", &backing, &data_of("two"));
    }
    downstream.namespace_in("team-c", "p-vwxyz");
    downstream.copy_with("team-c", "test-secret", &backing, &data_of("two"));
    condition_saying(
        "c-abc123",
        "p-vwxyz",
        "True,CopiesInPlace: every copy is in place in cluster c-abc123",
    );
    assert!(
        running
            .series(
                "scoped_secrets_cluster_writes_total",
                "cluster=\"c-abc123\",kind=\"create\""
            )
            .is_some_and(|n| n >= 3.0),
        "writes are counted by cluster"
    );
    assert!(
        running
            .series(
                "scoped_secrets_cluster_last_sync_timestamp_seconds",
                "cluster=\"c-abc123\""
            )
            .is_some_and(|t| t > 0.0)
    );
    ok(kubectl(&[
        "delete",
        "secret",
        "test-secret",
        "-n",
        &backing,
    ]));
    for ns in ["team-a", "team-b", "team-c"] {
        downstream.gone(ns, "test-secret");
    }
    unregister(&registration);
}

#[test]
fn two_downstream_clusters_with_projects_of_the_same_name_do_not_cross_talk() {
    let _serial = serial();
    let _running = reconciler();
    let (one, two) = (Downstream::start("c-one"), Downstream::start("c-two"));
    one.namespace_in("team", "p-same");
    two.namespace_in("team", "p-same");
    // In c-two, a namespace claiming c-one's project: not c-two's to fill.
    two.namespace_annotated("impostor", "c-one:p-same");
    let registrations = [one.register(), two.register()];
    let (backing_one, backing_two) = (project_of("c-one", "p-same"), project_of("c-two", "p-same"));
    original(&backing_one, "p-same", "shared", "for-one");
    original(&backing_two, "p-same", "shared", "for-two");
    one.copy_with("team", "shared", &backing_one, &data_of("for-one"));
    two.copy_with("team", "shared", &backing_two, &data_of("for-two"));
    // Converged: every copy of c-two is its own project's, and the impostor got none.
    assert!(two.secret("impostor", "shared").is_none());
    let copy = two.secret("team", "shared").expect("the copy");
    assert_eq!(copy["data"], data_of("for-two"));
    for registration in &registrations {
        unregister(registration);
    }
}

#[test]
fn a_stopped_downstream_apiserver_is_written_nothing_and_converges_once_it_answers() {
    let _serial = serial();
    let (running, downstream, registration, backing) =
        kept_and_dropped("c-stop", "p-stop", &["team-a", "team-b"], "before", "x");
    let deletes = |running: &Running| {
        running
            .series(
                "scoped_secrets_cluster_writes_total",
                "cluster=\"c-stop\",kind=\"delete\"",
            )
            .unwrap_or(0.0)
    };
    let deleted_before = deletes(&running);

    let apiserver = downstream
        .cluster
        .pid("kube-apiserver")
        .expect("its apiserver");
    let stopped_at = Instant::now();
    let paused = testbed::process::Paused::new(apiserver).expect("SIGSTOP");
    eventually("the stopped cluster reported down", WAIT, || {
        (connected(&running, "c-stop") == Some(0.0)).then_some(())
    });
    let said = condition_saying(
        "c-stop",
        "p-stop",
        "False,ClusterUnreachable: cluster c-stop cannot be served since ",
    );
    assert!(said.contains("cannot be reached"), "{said}");
    // Meanwhile the original changes and another is deleted: nothing is written downstream.
    original(&backing, "p-stop", "kept", "after");
    ok(kubectl(&["delete", "secret", "dropped", "-n", &backing]));

    // The outage lasts 30 s, as an operator's would. Near its end a namespace leaves the project:
    // asked of the stopped apiserver (within kubectl's 10 s TLS handshake timeout), which applies it
    // when it runs again.
    let mut leaving = None;
    while stopped_at.elapsed() < Duration::from_secs(30) {
        assert_eq!(deletes(&running), deleted_before, "a delete while down");
        if leaving.is_none() && stopped_at.elapsed() >= Duration::from_secs(25) {
            leaving = Some(leave(&downstream, "team-b"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(paused);
    let resumed = Instant::now();
    ok(leaving
        .expect("asked during the outage")
        .wait_with_output()
        .expect("kubectl ends"));
    downstream.copy_with("team-a", "kept", &backing, &data_of("after"));
    downstream.gone("team-a", "dropped");
    downstream.gone("team-b", "kept");
    let took = resumed.elapsed();
    assert!(
        took <= Duration::from_secs(10),
        "converged {took:?} after the apiserver answered again"
    );
    condition_saying("c-stop", "p-stop", "True,CopiesInPlace");
    unregister(&registration);
}

/// `kubectl annotate` taking `namespace` out of its project, running in the background.
fn leave(downstream: &Downstream, namespace: &str) -> std::process::Child {
    std::process::Command::new("kubectl")
        .env("KUBECONFIG", downstream.kubeconfig())
        .args([
            "annotate",
            "namespace",
            namespace,
            "field.cattle.io/projectId-",
            "--request-timeout=60s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs")
}

#[test]
fn revoked_credentials_are_said_and_delete_nothing_and_restored_ones_converge() {
    let _serial = serial();
    let (running, downstream, registration, backing) =
        kept_and_dropped("c-revoke", "p-revoke", &["team-a"], "k", "d");

    // The service account behind the token is deleted: its token is refused from now on.
    downstream.cluster.revoke().expect("revoked");
    eventually("the refusal said on the registration", WAIT, || {
        event_messages(LEASE_NAMESPACE, &registration, "ClusterCredentialsRefused")
            .contains("401")
            .then_some(())
    });
    condition_saying(
        "c-revoke",
        "p-revoke",
        "False,ClusterCredentialsRefused: cluster c-revoke cannot be served since ",
    );
    assert_eq!(connected(&running, "c-revoke"), Some(0.0));
    // An original deleted meanwhile: its copy is not deleted while the cluster cannot be read.
    ok(kubectl(&["delete", "secret", "dropped", "-n", &backing]));
    indexed("the deletion of the original", |w| {
        w.original_at(&backing, "dropped").is_none()
    });
    // Watched over several probes (one a second): the copy stays.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(4) {
        assert!(
            downstream.secret("team-a", "dropped").is_some(),
            "a copy deleted while the credentials were refused"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Restored: a new service account and token, registered again; the cluster converges.
    downstream.cluster.restore().expect("restored");
    downstream.gone("team-a", "dropped");
    downstream.copy_with("team-a", "kept", &backing, &data_of("k"));
    condition_saying("c-revoke", "p-revoke", "True,CopiesInPlace");
    unregister(&registration);
}

#[test]
fn registering_a_projects_cluster_moves_its_copies_there_and_removing_it_leaves_them() {
    let _serial = serial();
    let running = reconciler();
    let backing = project_of("c-move", "p-move");
    // Served in the management cluster while its cluster is not registered, as on one cluster.
    ok(kubectl_apply(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: move-here\n  annotations: {field.cattle.io/projectId: \"c-move:p-move\"}\n",
        &[],
    ));
    original(&backing, "p-move", "moving", "m");
    copy_where(
        "move-here",
        &backing,
        "moving",
        "the management copy",
        |_| true,
    );
    condition_saying(
        "c-move",
        "p-move",
        "True,CopiesInPlace: every copy is in place in cluster local",
    );

    let downstream = Downstream::start("c-move");
    downstream.namespace_in("team-a", "p-move");
    let registration = downstream.register();
    // The management copy goes only once the downstream one is in place.
    eventually("the management copy removed", WAIT, || {
        get_secret("move-here", "moving").is_none().then_some(())
    });
    assert!(
        downstream
            .secret("team-a", "moving")
            .is_some_and(|s| is_copy_of(&s, &backing, "moving")),
        "the management copy went before the downstream one was in place"
    );
    condition_saying(
        "c-move",
        "p-move",
        "True,CopiesInPlace: every copy is in place in cluster c-move",
    );

    // The registration removed: its copies stay where they are, and the project is served in the
    // management cluster again.
    unregister(&registration);
    eventually("the cluster forgotten", WAIT, || {
        connected(&running, "c-move").is_none().then_some(())
    });
    copy_where(
        "move-here",
        &backing,
        "moving",
        "the management copy again",
        |_| true,
    );
    assert!(downstream.secret("team-a", "moving").is_some());
    ok(kubectl(&[
        "delete",
        "namespace",
        "move-here",
        "--wait=false",
    ]));
}

#[test]
fn the_management_webhook_warns_of_what_a_new_original_would_overwrite_downstream() {
    let _serial = serial();
    // The product as deployed: webhook and reconciler in one process, so the webhook reads the
    // downstream worlds its workers keep. Registered for one backing namespace only.
    let server = start_extra_server(|args| args.reconciler = true);
    let downstream = Downstream::start("c-warn");
    downstream.namespace_in("team", "p-warn");
    downstream.kubectl(&["create", "secret", "generic", "api", "-n", "team"]);
    // A labelled secret that is no copy (the downstream cluster has no webhook to refuse it): kept
    // without its data there (`Scoped::downstream`), still seen as the secret a copy overwrites.
    downstream.kubectl(&[
        "create",
        "secret",
        "generic",
        "cfg",
        "-n",
        "team",
        "--from-literal=k=v",
    ]);
    let label = format!("{}=p-warn", keys::PROJECT_SCOPED_LABEL);
    downstream.kubectl(&["label", "secret", "cfg", "-n", "team", &label]);
    let registration = downstream.register();
    let backing = project_of("c-warn", "p-warn");
    original(&backing, "p-warn", "first", "f");
    downstream.copy_with("team", "first", &backing, &data_of("f"));

    let configuration = unique("downstream-warnings");
    ok(kubectl_apply(
        &format!(
            "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: {configuration}}}
webhooks:
- name: secret-names.downstream-warnings.test
  clientConfig:
    url: https://{addr}{path}
    caBundle: {ca}
  rules: [{{apiGroups: [''], apiVersions: [v1], resources: [secrets], operations: [CREATE]}}]
  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {backing}}}}}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
",
            addr = server.webhook_addr,
            path = scoped_secrets::endpoints::SECRET_NAMES,
            ca = env().ca_bundle,
        ),
        &[],
    ));
    let words = "will overwrite the secret of that name in 1 namespace: c-warn/team";
    for name in ["api", "cfg"] {
        let said = eventually("the downstream overwrite warned of", WAIT, || {
            let out = kubectl_apply(
                &format!(
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {backing}\n  labels: {{{}: p-warn}}\n",
                    keys::PROJECT_SCOPED_LABEL
                ),
                &["--dry-run=server"],
            );
            let said = stderr(&out);
            (out.status.success() && said.contains(words)).then_some(said)
        });
        assert!(said.contains(&format!("\"{backing}/{name}\"")), "{said}");
    }
    ok(kubectl(&[
        "delete",
        "validatingwebhookconfiguration",
        &configuration,
    ]));
    unregister(&registration);
}

#[test]
fn three_replicas_and_six_clusters_give_each_cluster_one_writer_and_a_killed_replicas_clusters_move()
 {
    let _serial = serial();
    const LEASE: Duration = Duration::from_secs(6);
    let (lease, prefix) = (unique("lease"), unique("six"));
    let replica = |i: usize| {
        let prefix = prefix.clone();
        Running::start_with(
            &lease,
            &unique(&format!("replica-{i}")),
            OverwritePolicy::Warn,
            move |cfg| {
                probe_often(cfg);
                cfg.ownership = cfg.ownership.clone().with_lease_duration(LEASE);
                cfg.ownership.prefix = prefix;
            },
        )
    };
    let mut replicas: Vec<Option<Running>> = (0..3).map(|i| Some(replica(i))).collect();
    // Six clusters, each its own id and projects, served by one apiserver: what counts here is who
    // writes to which cluster, not how many apiservers there are.
    let downstream = Downstream::start("c-six");
    let clusters: Vec<String> = (0..6).map(|i| format!("c-six{i}")).collect();
    let mut registrations = Vec::new();
    let mut backings = Vec::new();
    let copier = downstream
        .cluster
        .registration_kubeconfig()
        .expect("a copier kubeconfig");
    for cluster in &clusters {
        downstream.namespace_annotated(&format!("team-{cluster}"), &format!("{cluster}:p-six"));
        let registration = unique(&format!("reg-{cluster}"));
        register(&registration, cluster, &copier);
        registrations.push(registration);
        let backing = project_of(cluster, "p-six");
        original(&backing, "p-six", "s", "before");
        backings.push(backing);
    }
    for (cluster, backing) in clusters.iter().zip(&backings) {
        downstream.copy_with(&format!("team-{cluster}"), "s", backing, &data_of("before"));
    }

    // Who writes each cluster: the one replica that holds its Lease, and the only one that wrote.
    let owner_of = |replicas: &[Option<Running>], cluster: &str| {
        replicas_where(
            replicas,
            "scoped_secrets_cluster_owned",
            &format!("cluster=\"{cluster}\""),
            |owned| owned == 1.0,
        )
    };
    for cluster in &clusters {
        let owners = eventually(&format!("one owner of {cluster}"), WAIT, || {
            Some(owner_of(&replicas, cluster)).filter(|o| o.len() == 1)
        });
        let writers = replicas_where(
            &replicas,
            "scoped_secrets_cluster_writes_total",
            &format!("cluster=\"{cluster}\",kind=\"create\""),
            |creates| creates > 0.0,
        );
        assert_eq!(
            writers, owners,
            "{cluster}: the writers are its owner alone"
        );
    }

    // SIGKILL (as a crash: nothing released) the replica owning c-six0.
    let victim = owner_of(&replicas, "c-six0")[0];
    let theirs: Vec<&String> = clusters
        .iter()
        .filter(|c| owner_of(&replicas, c) == [victim])
        .collect();
    replicas[victim].take().expect("running").crash();
    let crashed = Instant::now();
    for cluster in &theirs {
        eventually(
            &format!("{cluster} taken over"),
            LEASE + Duration::from_secs(5),
            || Some(owner_of(&replicas, cluster)).filter(|o| o.len() == 1),
        );
    }
    let taken_over = crashed.elapsed();
    assert!(
        taken_over <= LEASE + Duration::from_secs(5),
        "{taken_over:?}"
    );
    // And every cluster converges on a change made since.
    for backing in &backings {
        original(backing, "p-six", "s", "after");
    }
    for (cluster, backing) in clusters.iter().zip(&backings) {
        downstream.copy_with(&format!("team-{cluster}"), "s", backing, &data_of("after"));
        let owners = owner_of(&replicas, cluster);
        assert_eq!(owners.len(), 1, "{cluster}: {owners:?}");
    }
    for registration in &registrations {
        unregister(registration);
    }
}

#[test]
fn a_deleted_projects_copies_leave_a_downstream_cluster_whose_writer_does_not_lead() {
    let _serial = serial();
    let (lease, prefix) = (unique("lease"), unique("nl"));
    let (leading, writing) = (unique("leading"), unique("writing"));
    let replica = |identity: &str| {
        let prefix = prefix.clone();
        Running::start_with(&lease, identity, OverwritePolicy::Warn, move |cfg| {
            probe_often(cfg);
            cfg.ownership.prefix = prefix;
        })
    };
    let leads = |r: &Running| r.metric("scoped_secrets_reconciler_leader") == 1.0;
    // The first replica leads before the second starts; the cluster is the second's by rendezvous.
    let leader = replica(&leading);
    eventually("the first replica leads", WAIT, || {
        leads(&leader).then_some(())
    });
    let writer = replica(&writing);
    let cluster = (0..)
        .map(|i| format!("c-nl{i}"))
        .find(|c| sharding::owner(c, [leading.as_str(), writing.as_str()]) == Some(&writing))
        .expect("some cluster id hashes to the second replica");
    let downstream = Downstream::start(&cluster);
    downstream.namespace_in("team-nl", "p-nl");
    let registration = downstream.register();
    let backing = project_of(&cluster, "p-nl");
    original(&backing, "p-nl", "s", "v");
    downstream.copy_with("team-nl", "s", &backing, &data_of("v"));
    let owns = |r: &Running| {
        r.series(
            "scoped_secrets_cluster_owned",
            &format!("cluster=\"{cluster}\""),
        )
    };
    eventually(
        &format!("the second replica writing {cluster}"),
        WAIT,
        || (owns(&writer) == Some(1.0)).then_some(()),
    );

    // The leader's management round proves the deletion in the leader's index alone: the writer
    // has to prove it too, or its world never counts the project's copies for removal.
    ok(kubectl(&["delete", "project", "p-nl", "-n", &cluster]));
    downstream.gone("team-nl", "s");
    assert!(
        leads(&leader) && !leads(&writer),
        "the writer proved the deletion without leading"
    );
    unregister(&registration);
}

/// The indices of the replicas still running whose series `name{labels}` (0 where it does not
/// exist) satisfies `check`.
fn replicas_where(
    replicas: &[Option<Running>],
    name: &str,
    labels: &str,
    check: impl Fn(f64) -> bool,
) -> Vec<usize> {
    replicas
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r.as_ref()?)))
        .filter(|(_, r)| check(r.series(name, labels).unwrap_or(0.0)))
        .map(|(i, _)| i)
        .collect()
}
