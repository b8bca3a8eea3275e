//! What the reconciler tests share: a reconciler running as the product's service account on its own
//! runtime thread, and `kubectl` helpers to wait for copies. Used by `tests/reconciler/`,
//! `tests/crd_lifecycle.rs` and `tests/faults.rs` (which need control planes of their own).

use crate::prelude::*;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use scoped_secrets::index::Index;
use scoped_secrets::keys;
use scoped_secrets::plan::{OverwritePolicy, Settings};
use scoped_secrets::reconciler::{self, Config, ReconcilerMetrics};
use scoped_secrets::world::World;
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub const LEASE_NAMESPACE: &str = "scoped-secrets-system";
pub const WAIT: Duration = Duration::from_secs(40);

pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A reconciler running on its own runtime thread until stopped (or dropped).
pub struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    crash: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    registry: Registry,
    pub index: Arc<Index>,
}

impl Running {
    pub fn start(lease: &str, identity: &str, policy: OverwritePolicy) -> Self {
        Self::start_with(lease, identity, policy, |_| {})
    }

    /// [`Running::start`] with `configure` applied to the reconciler's settings.
    pub fn start_with(
        lease: &str,
        identity: &str,
        policy: OverwritePolicy,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let env = env();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut cfg = Config::new(
            Settings::with_policy(policy),
            true,
            LEASE_NAMESPACE,
            identity,
        );
        cfg.lease.name = lease.to_owned();
        configure(&mut cfg);
        let mut registry = Registry::default();
        let metrics = ReconcilerMetrics::register(&mut registry);
        let sa = env.sa_kubeconfig.clone();
        // As `serve` builds it: where the reconciler manages backing namespaces, only marked
        // ones count.
        let index = Arc::new(Index::new(World::for_backing(
            cfg.manage_backing_namespaces,
        )));
        let watched = index.clone();
        let (crash, crashed) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let client = client(&sa).await.expect("a client for the service account");
                let _watches = scoped_secrets::index::spawn(client.clone(), watched.clone());
                tokio::select! {
                    ran = reconciler::run(client, watched, cfg, metrics, stopped) => {
                        if let Err(e) = ran {
                            panic!("the reconciler failed: {e:#}");
                        }
                    }
                    Ok(()) = crashed => {}
                }
            });
            // Whatever still runs (a crash) is dropped where it stands: nothing is released.
            runtime.shutdown_background();
        });
        Self {
            stop,
            crash: Some(crash),
            thread: Some(thread),
            registry,
            index,
        }
    }

    /// The Prometheus text encoding of every metric.
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("metrics encode");
        text
    }

    /// The sum of a metric's samples (all label sets), from the Prometheus text encoding.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text();
        text.lines()
            .filter(|line| line.split(['{', ' ']).next() == Some(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// One series' value (`name{labels}`, labels as the text encoding writes them), or `None` when
    /// it does not exist.
    pub fn series(&self, name: &str, labels: &str) -> Option<f64> {
        let prefix = format!("{name}{{{labels}}} ");
        self.metrics_text()
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
    }

    pub fn writes(&self) -> f64 {
        self.metric("scoped_secrets_reconciler_writes_total")
    }

    pub fn rounds(&self) -> f64 {
        self.metric("scoped_secrets_reconciler_reconciles_total")
    }

    pub fn errors(&self) -> f64 {
        self.metric("scoped_secrets_reconciler_errors_total")
    }

    pub fn requeues(&self) -> f64 {
        self.metric("scoped_secrets_reconciler_requeues_total")
    }

    /// Makes the reconciler plan a round (any watched change does) and waits until it has started,
    /// which means every earlier round has ended: rounds run one after another.
    #[track_caller]
    pub fn another_round(&self, poke: &str) {
        let rounds = self.rounds();
        ok(kubectl(&[
            "annotate",
            "namespace",
            poke,
            &format!("poked={}", unique("round")),
            "--overwrite",
        ]));
        eventually("another reconcile round", WAIT, || {
            (self.rounds() > rounds).then_some(())
        });
    }

    /// No error loop: no action has failed since the error count was `errors`, and further rounds
    /// (one made per namespace of `pokes`) requeue nothing.
    #[track_caller]
    pub fn assert_no_error_loop(&self, errors: f64, pokes: &[&String]) {
        let requeues = self.requeues();
        for poke in pokes {
            self.another_round(poke);
        }
        assert_eq!(self.errors(), errors, "the reconciler's actions failed");
        assert_eq!(self.requeues(), requeues, "the reconciler keeps requeueing");
    }

    /// Stops the reconciler as a SIGKILL would: no Lease is released, no write finished.
    pub fn crash(mut self) {
        if let Some(crash) = self.crash.take() {
            let _ = crash.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the reconciler thread ends");
        }
    }

    /// Signals shutdown and waits until the reconciler has stepped down and released its lease.
    pub fn stop(mut self) {
        self.halt();
    }

    pub fn halt(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the reconciler thread ends cleanly");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn start(policy: OverwritePolicy) -> Running {
    Running::start(&unique("lease"), &unique("instance"), policy)
}

/// The messages of the Events with this reason on object `name` in `namespace`.
pub fn event_messages(namespace: &str, name: &str, reason: &str) -> String {
    ok(kubectl(&[
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        &format!("reason={reason},involvedObject.name={name}"),
        "-o",
        "jsonpath={.items[*].message}",
    ]))
}

/// A reconciler under the warn policy, and the project's original `db` (`k: v`) applied: where
/// most reconciler tests begin.
pub fn reconciling_db(project: &TestProject) -> Running {
    let running = start(OverwritePolicy::Warn);
    apply_original(project, "db", "k: dg==", "");
    running
}

/// The secret as JSON, or `None` when it does not exist.
pub fn get_secret(ns: &str, name: &str) -> Option<Value> {
    let out = kubectl(&["get", "secret", name, "-n", ns, "-o", "json"]);
    if !out.status.success() {
        let err = stderr(&out);
        assert!(err.contains("NotFound"), "kubectl get failed: {err}");
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("kubectl prints JSON"))
}

pub fn annotation<'a>(secret: &'a Value, key: &str) -> Option<&'a str> {
    secret["metadata"]["annotations"][key].as_str()
}

pub fn is_copy_of(secret: &Value, backing: &str, name: &str) -> bool {
    annotation(secret, keys::COPY_ANNOTATION) == Some(keys::TRUE)
        && annotation(secret, keys::ORIGIN_ANNOTATION) == Some(&keys::origin_value(backing, name))
}

/// Waits until `ns` holds a copy of `backing/name` that satisfies `check`, and returns it.
#[track_caller]
pub fn copy_where(
    ns: &str,
    backing: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(&format!("{what} in {ns}"), WAIT, || {
        get_secret(ns, name).filter(|s| is_copy_of(s, backing, name) && check(s))
    })
}

/// Two namespaces of `project`, `<prefix>-a` and `<prefix>-b` (made unique).
pub fn two_namespaces_in(project: &TestProject, prefix: &str) -> (String, String) {
    (
        namespace_in(project, &format!("{prefix}-a")),
        namespace_in(project, &format!("{prefix}-b")),
    )
}

/// Waits until each of `namespaces` holds a copy of the project's original `name`.
#[track_caller]
pub fn copied_into(namespaces: &[&String], project: &TestProject, name: &str) {
    for ns in namespaces {
        copy_where(ns, &project.backing, name, "the copy", |_| true);
    }
}

#[track_caller]
pub fn gone(ns: &str, name: &str) {
    eventually(&format!("secret {name} to leave {ns}"), WAIT, || {
        get_secret(ns, name).is_none().then_some(())
    });
}

pub fn data(secret: &Value) -> Value {
    secret["data"].clone()
}

pub fn original_yaml(project: &TestProject, name: &str, data: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: {backing}
  labels: {{{label}: {project}}}
  annotations: {{{annotations}}}
data: {{{data}}}
",
        backing = project.backing,
        label = keys::PROJECT_SCOPED_LABEL,
        project = project.name,
    )
}

#[track_caller]
pub fn apply_original(project: &TestProject, name: &str, data: &str, annotations: &str) {
    ok(kubectl_apply(
        &original_yaml(project, name, data, annotations),
        &[],
    ));
}

/// `kubectl` as the service account, which the webhook lets through: an admin acting behind the
/// webhook's back, as drift repair must expect.
pub fn behind_the_webhook(args: &[&str]) -> String {
    ok(kubectl_with(&env().sa_kubeconfig, args))
}

/// Requests the apiserver has served for secrets with this verb (and status code, if given), from
/// its own `apiserver_request_total`.
pub fn apiserver_requests(verb: &str, code: Option<&str>) -> f64 {
    let text = ok(kubectl(&["get", "--raw", "/metrics"]));
    let code = code.map(|c| format!("code=\"{c}\""));
    text.lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
        .filter(|line| {
            line.contains("resource=\"secrets\"")
                && line.contains("group=\"\"")
                && line.contains("subresource=\"\"")
                && line.contains(&format!("verb=\"{verb}\""))
                && code.as_ref().is_none_or(|c| line.contains(c.as_str()))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
