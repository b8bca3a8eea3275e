//! Faults injected into real processes (issue 10, section 2): `scoped-secrets serve` runs as its own
//! processes against a control plane of this binary's own (the scenarios pause its apiserver and
//! etcd, which would stall every other binary's tests), and each scenario asserts the exact final
//! state (every wanted copy present and equal to its original, no other copy, no bystander touched,
//! and a converged world that plans nothing) and counts the writes it took at the apiserver.
//!
//! The scenarios run one at a time (`serial`): they share the control plane and the Lease. One more
//! test here reads a running replica's thread priorities (the replicas are started here).

#[path = "faults/replica.rs"]
mod replica;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use replica::*;
use scoped_secrets::keys;
use scoped_secrets::plan::{self, Settings};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};
use testbed::harness::serial;
use testbed::prelude::*;

/// The whole fan-out, after the fault, converges within this.
const CONVERGE: Duration = Duration::from_secs(120);

/// `n` namespaces of `project`, created concurrently (through the webhook, like any namespace).
fn member_namespaces(project: &TestProject, n: usize) -> BTreeSet<String> {
    let prefix = unique("fan");
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let api: Api<Namespace> = Api::all(admin());
    let results: Vec<_> = runtime().block_on(
        futures::stream::iter(names.clone())
            .map(|name| {
                let api = api.clone();
                let namespace = Namespace {
                    metadata: ObjectMeta {
                        name: Some(name),
                        annotations: Some(BTreeMap::from([(
                            keys::PROJECT_ID_KEY.to_owned(),
                            project.id(),
                        )])),
                        labels: Some(BTreeMap::from([(
                            keys::PROJECT_ID_KEY.to_owned(),
                            project.name.clone(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                };
                async move { api.create(&PostParams::default(), &namespace).await }
            })
            .buffer_unordered(16)
            .collect(),
    );
    for result in results {
        result.expect("a member namespace is created");
    }
    names.into_iter().collect()
}

/// Secrets that are not copies, in the backing namespace and in some members: the reconciler must
/// leave them exactly as they are (uid and resourceVersion).
struct Bystanders(Vec<(String, String, String)>);

impl Bystanders {
    fn create(project: &TestProject, members: &BTreeSet<String>) -> Self {
        let mut made = Vec::new();
        for ns in std::iter::once(&project.backing).chain(members.iter().take(3)) {
            ok(kubectl_apply(
                &format!(
                    "apiVersion: v1\nkind: Secret\nmetadata: {{name: bystander, namespace: {ns}}}\n\
                     data: {{k: Ynk=}}\n"
                ),
                &[],
            ));
            made.push((
                ns.clone(),
                "bystander".to_owned(),
                identity(ns, "bystander"),
            ));
        }
        Self(made)
    }

    #[track_caller]
    fn assert_untouched(&self) {
        for (ns, name, was) in &self.0 {
            assert_eq!(
                &identity(ns, name),
                was,
                "the non-copy secret {ns}/{name} was changed"
            );
        }
    }
}

/// The secret's uid and resourceVersion: any write to it changes them.
fn identity(ns: &str, name: &str) -> String {
    ok(kubectl_line(&format!(
        "get secret {name} -n {ns} -o jsonpath={{.metadata.uid}}/{{.metadata.resourceVersion}}"
    )))
}

/// A scenario's cluster: a project with `n` members and bystanders in it, and the scenario's turn
/// (`serial`), taken before the cluster is made and held until the scenario ends.
struct Fanout {
    project: TestProject,
    members: BTreeSet<String>,
    bystanders: Bystanders,
    _turn: MutexGuard<'static, ()>,
}

impl Fanout {
    fn new(prefix: &str, n: usize) -> Self {
        let turn = serial();
        let project = project(prefix);
        let members = member_namespaces(&project, n);
        let bystanders = Bystanders::create(&project, &members);
        Self {
            project,
            members,
            bystanders,
            _turn: turn,
        }
    }

    /// The cluster, and a replica that reaches it as the service account and holds the Lease.
    fn led(prefix: &str, n: usize) -> (Self, Replica) {
        let fan = Self::new(prefix, n);
        let replica = leading_replica(&env().sa_kubeconfig);
        (fan, replica)
    }
}

/// A replica reaching the cluster through `kubeconfig`, once it holds the Lease.
fn leading_replica(kubeconfig: &std::path::Path) -> Replica {
    let name = unique("replica");
    let replica = Replica::start_with(&name, kubeconfig);
    eventually("the replica to hold the Lease", CONVERGE, || {
        lease_holder().filter(|h| *h == name)
    });
    replica
}

/// The original `name` in the project's backing namespace, with labels and annotations to carry.
fn apply_original(project: &TestProject, name: &str, value: &str) {
    let labels = format!(
        "{}: {}, team: faults",
        keys::PROJECT_SCOPED_LABEL,
        project.name
    );
    let rest = format!(
        "  annotations: {{note: carried}}
type: Opaque
stringData: {{value: {value}, other: kept}}
"
    );
    ok(kubectl_apply(
        &secret_yaml(&project.backing, name, &labels, &rest),
        &[],
    ));
}

fn get(ns: &str, name: &str) -> Secret {
    runtime()
        .block_on(Api::<Secret>::namespaced(admin(), ns).get(name))
        .expect("the secret can be read")
}

/// Every copy of `backing/name` in the cluster (any namespace), by namespace.
fn copies_of(project: &TestProject, name: &str) -> BTreeMap<String, Secret> {
    let origin = keys::origin_value(&project.backing, name);
    let params =
        ListParams::default().labels(&format!("{}={}", keys::PROJECT_SCOPED_LABEL, project.name));
    let list = runtime()
        .block_on(Api::<Secret>::all(admin()).list(&params))
        .expect("secrets can be listed");
    list.items
        .into_iter()
        .filter(|s| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(keys::ORIGIN_ANNOTATION))
                == Some(&origin)
        })
        .map(|s| (s.metadata.namespace.clone().unwrap_or_default(), s))
        .collect()
}

/// Copies of `backing/name` whose `value` key holds `value`.
fn copies_with(project: &TestProject, name: &str, value: &str) -> usize {
    copies_of(project, name)
        .values()
        .filter(|s| {
            s.data
                .as_ref()
                .and_then(|d| d.get("value"))
                .is_some_and(|v| v.0 == value.as_bytes())
        })
        .count()
}

/// Waits until the fan-out is well under way but not done (at least a tenth but not all of `n`
/// copies carry `value`), and returns how many there were: the moment to inject the fault.
fn mid_fan_out(project: &TestProject, name: &str, value: &str, n: usize) -> usize {
    eventually("the fan-out to be under way", CONVERGE, || {
        let done = copies_with(project, name, value);
        assert!(
            done < n,
            "the fan-out finished before the fault could be injected"
        );
        (done >= n / 10).then_some(done)
    })
}

/// The exact final state: every member holds a copy equal to the original (`data`, `type`, and what
/// `plan` compares: a converged world plans nothing for this original or these namespaces), no copy
/// exists anywhere else, and the bystanders are untouched.
#[track_caller]
fn assert_converged(fan: &Fanout, name: &str, value: &str) {
    let Fanout {
        project,
        members,
        bystanders,
        ..
    } = fan;
    eventually("every copy to carry the original's data", CONVERGE, || {
        (copies_with(project, name, value) == members.len()).then_some(())
    });
    let original = get(&project.backing, name);
    let copies = copies_of(project, name);
    let placed: BTreeSet<String> = copies.keys().cloned().collect();
    assert_eq!(&placed, members, "copies exactly in the project's members");
    for (ns, copy) in &copies {
        assert_eq!(copy.data, original.data, "data of the copy in {ns}");
        assert_eq!(copy.type_, original.type_, "type of the copy in {ns}");
        assert_eq!(copy.immutable, original.immutable, "immutable in {ns}");
    }
    let world = runtime()
        .block_on(scoped_secrets::plan_load::load_world(admin(), true))
        .expect("the world loads");
    let origin = keys::origin_value(&project.backing, name);
    let left: Vec<String> = plan::planned(&world, &Settings::default(), true)
        .iter()
        .filter(|a| match a.origin() {
            Some(of) => of == origin,
            // Repairs of the members themselves (another original's copies are its own business).
            None => members.contains(a.namespace()),
        })
        .map(|a| format!("{a:?}"))
        .collect();
    assert!(left.is_empty(), "a converged world plans nothing: {left:?}");
    bystanders.assert_untouched();
}

/// The secret requests the apiserver has served, by verb, and the successful creates and updates.
#[derive(Debug, Clone, Copy)]
struct Writes {
    creates: f64,
    created: f64,
    updates: f64,
    updated: f64,
    patches: f64,
    deletes: f64,
}

impl Writes {
    fn now() -> Self {
        Self::at(&env().kubeconfig)
    }

    /// The counts of the apiserver `kubeconfig` (an admin's) points at, from its `/metrics`.
    fn at(kubeconfig: &std::path::Path) -> Self {
        let text = ok(kubectl_with(kubeconfig, &["get", "--raw", "/metrics"]));
        let count = |verb: &str, code: Option<&str>| -> f64 {
            text.lines()
                .filter(|l| l.starts_with("apiserver_request_total{"))
                .filter(|l| {
                    l.contains("resource=\"secrets\"")
                        && l.contains("group=\"\"")
                        && l.contains("subresource=\"\"")
                        && l.contains(&format!("verb=\"{verb}\""))
                        && code.is_none_or(|c| l.contains(&format!("code=\"{c}\"")))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Self {
            creates: count("POST", None),
            created: count("POST", Some("201")),
            updates: count("PUT", None),
            updated: count("PUT", Some("200")),
            patches: count("PATCH", None) + count("APPLY", None),
            deletes: count("DELETE", None),
        }
    }

    fn plus(self, other: Self) -> Self {
        Self {
            creates: self.creates + other.creates,
            created: self.created + other.created,
            updates: self.updates + other.updates,
            updated: self.updated + other.updated,
            patches: self.patches + other.patches,
            deletes: self.deletes + other.deletes,
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            creates: self.creates - before.creates,
            created: self.created - before.created,
            updates: self.updates - before.updates,
            updated: self.updated - before.updated,
            patches: self.patches - before.patches,
            deletes: self.deletes - before.deletes,
        }
    }

    /// No secret was created or updated twice: at most `created` creates and `updated` updates
    /// succeeded, and the attempts beyond them are at most the reconciler's concurrent writes (16),
    /// those cut off by the fault. Nothing was deleted.
    #[track_caller]
    fn assert_once_each(&self, created: f64, updated: f64) {
        const IN_FLIGHT: f64 = 16.0;
        assert!(self.created <= created, "created twice: {self:?}");
        assert!(self.updated <= updated, "updated twice: {self:?}");
        assert!(
            self.creates <= created + IN_FLIGHT,
            "retried creates: {self:?}"
        );
        assert!(
            self.updates <= updated + IN_FLIGHT,
            "retried updates: {self:?}"
        );
        assert_eq!(self.deletes, 0.0, "{self:?}");
    }

    fn total(&self) -> f64 {
        self.creates + self.updates + self.patches + self.deletes
    }
}

/// The fault of the stop scenarios: the original `fan` is applied with `value`, and once its
/// fan-out is well under way the control plane's `process` is stopped (SIGSTOP) for `fault`, then
/// continued. Returns the writes from the apply to the exact converged state.
fn stopped_mid_fan_out(fan: &Fanout, value: &str, process: &str, fault: Duration) -> Writes {
    let members = fan.members.len();
    let pid = env().control_plane_pid(process);
    let before = Writes::now();
    apply_original(&fan.project, "fan", value);
    let at_stop = mid_fan_out(&fan.project, "fan", value, members);
    Stopped::stop(pid).hold_for(fault);
    let continued = Instant::now();
    assert_converged(fan, "fan", value);
    let writes = Writes::now().since(before);
    println!(
        "{process} stopped for {fault:?} with {at_stop}/{members} copies carrying {value}; \
         converged {:.1} s after SIGCONT; writes {writes:?}, {:.3} per copy",
        continued.elapsed().as_secs_f64(),
        (writes.total() - 1.0) / members as f64,
    );
    writes
}

/// Two replicas; the Lease holder is SIGKILLed mid fan-out; the other takes over within the lease
/// duration (15 s) + 5 s and converges, creating each copy exactly once.
#[test]
fn a_leader_killed_mid_fan_out_is_replaced_and_nothing_is_lost() {
    const MEMBERS: usize = 1000;
    let fan = Fanout::new("kill", MEMBERS);
    let names = [unique("replica-a"), unique("replica-b")];
    let mut replicas: Vec<Replica> = names.iter().map(|n| Replica::start(n)).collect();
    let leader = eventually("one replica to hold the Lease", CONVERGE, || {
        lease_holder().filter(|h| names.contains(h))
    });

    let before = Writes::now();
    apply_original(&fan.project, "fan", "one");
    let at_kill = mid_fan_out(&fan.project, "fan", "one", MEMBERS);
    let killed = replicas
        .iter_mut()
        .find(|r| r.name == leader)
        .expect("the leader is one of ours");
    killed.kill();
    let killed_at = Instant::now();
    let successor = eventually(
        "the other replica to take the Lease",
        Duration::from_secs(20),
        || lease_holder().filter(|h| *h != leader && names.contains(h)),
    );
    let takeover = killed_at.elapsed();
    assert_converged(&fan, "fan", "one");
    let converged = killed_at.elapsed();
    let writes = Writes::now().since(before);
    println!(
        "leader {leader} killed with {at_kill}/{MEMBERS} copies made; {successor} took the Lease after \
         {:.1} s and converged {:.1} s after the kill; writes {writes:?}, {:.3} per copy",
        takeover.as_secs_f64(),
        converged.as_secs_f64(),
        (writes.total() - 1.0) / MEMBERS as f64,
    );
    // Ours is one create; every copy is created once: the creates the killed leader had in flight
    // (landed or not, the apiserver counts them without a 201) are the only ones beyond that.
    writes.assert_once_each(MEMBERS as f64 + 1.0, 0.0);
}

/// Reviews come first on a busy machine: in a running `serve`, the threads that answer them keep
/// the process's priority and every other thread (watches, reconciler, admin port) runs nicer.
#[test]
fn the_webhooks_threads_keep_their_priority_and_the_rest_yield() {
    let _turn = serial();
    let replica = leading_replica(&env().sa_kubeconfig);
    let ours = rustix::process::getpriority_process(None).expect("our priority");
    let mut by_name: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let tasks = format!("/proc/{}/task", replica.pid());
    for task in std::fs::read_dir(&tasks).expect("the replica's threads") {
        let task = task.expect("a thread").path();
        let (Ok(comm), Some(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            stat_fields(&task.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // The state is the 3rd field, nice the 19th.
        let nice: i32 = stat
            .get(16)
            .and_then(|n| n.parse().ok())
            .expect("a nice field");
        by_name
            .entry(comm.trim().to_owned())
            .or_default()
            .insert(nice);
    }
    let background = ours.max(scoped_secrets::webhook::runtime::BACKGROUND_NICENESS);
    assert_eq!(
        by_name.get("webhook"),
        Some(&BTreeSet::from([ours])),
        "the webhook's threads keep the process's priority: {by_name:?}"
    );
    assert_eq!(
        by_name.get(scoped_secrets::webhook::runtime::BACKGROUND_THREAD_NAME),
        Some(&BTreeSet::from([background])),
        "every background thread runs nicer: {by_name:?}"
    );
}

/// The apiserver is stopped (SIGSTOP) for 20 s mid fan-out, then continued: the reconciler converges
/// with nothing lost, each copy created once (a retried create whose first attempt landed answers 409).
#[test]
fn an_apiserver_stopped_mid_fan_out_loses_nothing() {
    const MEMBERS: usize = 1000;
    let (fan, _replica) = Fanout::led("apiserver", MEMBERS);

    let writes = stopped_mid_fan_out(&fan, "one", "kube-apiserver", Duration::from_secs(20));
    // Ours is one create; requests cut off by the stop may be retried (a landed one answers 409).
    writes.assert_once_each(MEMBERS as f64 + 1.0, 0.0);
}

/// etcd is paused (SIGSTOP) for 10 s while an original's change fans out, then continued: every copy
/// ends with the new data, each updated once.
#[test]
fn etcd_paused_during_changes_loses_nothing() {
    const MEMBERS: usize = 1000;
    let (fan, _replica) = Fanout::led("etcd", MEMBERS);
    apply_original(&fan.project, "fan", "one");
    assert_converged(&fan, "fan", "one");

    let writes = stopped_mid_fan_out(&fan, "two", "etcd", Duration::from_secs(10));
    writes.assert_once_each(0.0, MEMBERS as f64);
}

/// A watch expires (410 Gone) and is re-listed while originals change. The replica reaches the
/// cluster through a second apiserver of its own on the same etcd; that apiserver is SIGKILLed, the
/// original changes and a second original appears meanwhile, and a new apiserver starts on the same
/// port: its watch cache begins at the current revision, so the replica's watches resume from a
/// resourceVersion it no longer holds, are answered 410 Gone, and re-list.
#[test]
fn a_watch_expired_while_originals_change_is_relisted_and_converges() {
    const MEMBERS: usize = 200;
    let fan = Fanout::new("expired", MEMBERS);
    let mut second = SecondApiserver::start();
    let replica = leading_replica(&second.sa_kubeconfig);
    apply_original(&fan.project, "fan", "one");
    assert_converged(&fan, "fan", "one");
    assert!(
        !replica.log().contains("too old resource version"),
        "no watch expired before the fault"
    );

    let before = Writes::now();
    second.kill();
    apply_original(&fan.project, "fan", "two");
    apply_original(&fan.project, "late", "new");
    second.spawn();
    let restarted = Instant::now();
    assert_converged(&fan, "fan", "two");
    assert_converged(&fan, "late", "new");
    // The replica wrote through the new apiserver (whose counts start at zero), the test through
    // the first.
    let writes = Writes::now()
        .since(before)
        .plus(Writes::at(&second.admin_kubeconfig));
    let log = replica.log();
    assert!(
        log.contains("too old resource version"),
        "the replica's watches expired (410 Gone): {log}"
    );
    println!(
        "watches expired (410) and re-listed; converged {:.1} s after the apiserver restarted; \
         writes {writes:?}",
        restarted.elapsed().as_secs_f64(),
    );
    // Ours are one create and one update; each copy of `fan` is updated once, of `late` created once.
    writes.assert_once_each(MEMBERS as f64 + 1.0, MEMBERS as f64);
}
