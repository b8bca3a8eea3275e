//! Fixtures for the policy tests: one small world and admission requests built from JSON, the way
//! the apiserver sends them.

use super::{Config, Decision, Facts, OverwritePolicy, validate};
use crate::keys::{self, ProjectId};
use crate::world::fixtures::{add_secret, namespace_in, project, secret};
use crate::world::{NamespaceState, World};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;
use serde_json::{Value, json};

pub const RECONCILER: &str = "system:serviceaccount:scoped-secrets:scoped-secrets";
pub const USER: &str = "alice";
pub const BACKING: &str = "local-p-vwxyz";
/// The backing namespace of project `c-1:p-down` ([`served_downstream`]).
pub const DOWNSTREAM_BACKING: &str = "c-1-p-down";

/// [`world`] as a management cluster with project `c-1:p-down` served in its own cluster `c-1`
/// (namespace `team-d` there holds a plain `api`), whose backing namespace is also a member of
/// `local:p-vwxyz` and holds the copy of its `db`; and cluster `c-1`: its own world (with a
/// namespace of its own named like that backing namespace) and its composed world.
pub struct ServedDownstream {
    pub management: World,
    pub own: World,
    pub composed: World,
}

pub fn served_downstream() -> ServedDownstream {
    let mut management = world();
    let served = project(&mut management, "c-1", "p-down", DOWNSTREAM_BACKING);
    management.serve_elsewhere(std::sync::Arc::new([served.clone()].into()));
    namespace_in(&mut management, DOWNSTREAM_BACKING, &project_id());
    let origin = keys::origin_value(BACKING, "db");
    add_secret(
        &mut management,
        secret(
            DOWNSTREAM_BACKING,
            "db",
            &[(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")],
            &[
                (keys::COPY_ANNOTATION, keys::TRUE),
                (keys::ORIGIN_ANNOTATION, origin.as_str()),
            ],
        ),
    );
    let mut own = World::default();
    namespace_in(&mut own, "team-d", &served);
    add_secret(&mut own, secret("team-d", "api", &[], &[]));
    own.upsert_namespace(DOWNSTREAM_BACKING.to_owned(), NamespaceState::default());
    let composed = World::for_cluster(&management, &own, "c-1");
    ServedDownstream {
        management,
        own,
        composed,
    }
}

pub fn project_id() -> ProjectId {
    ProjectId::new("local", "p-vwxyz")
}

/// Project local:p-vwxyz (backing namespace local-p-vwxyz) with namespaces team-a, team-b and the
/// terminating `dying`; namespace `other` and `newcomer` belong to no project.
///
/// - original `db` (copies in team-a and dying; its copy in team-b has not landed yet),
///   original `cache` ignoring team-b (copy in team-a);
/// - team-b holds a plain secret `api`; `other` a plain `web`; `newcomer` a plain `db` and `cache`.
pub fn world() -> World {
    let mut world = World::default();
    world.projects_installed = true;
    let p = project(&mut world, "local", "p-vwxyz", BACKING);
    for ns in ["team-a", "team-b", "dying"] {
        namespace_in(&mut world, ns, &p);
    }
    world.upsert_namespace(
        "dying".to_owned(),
        NamespaceState {
            terminating: true,
            ..world.namespace("dying").cloned().unwrap_or_default()
        },
    );
    for ns in ["other", "newcomer"] {
        world.upsert_namespace(ns.to_owned(), NamespaceState::default());
    }
    let scoped = [(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")];
    add_secret(&mut world, secret(BACKING, "db", &scoped, &[]));
    let ignore_b = [(keys::IGNORE_NAMESPACES_ANNOTATION, "team-b")];
    add_secret(&mut world, secret(BACKING, "cache", &scoped, &ignore_b));
    for (ns, name) in [("team-a", "db"), ("dying", "db"), ("team-a", "cache")] {
        let origin = keys::origin_value(BACKING, name);
        let markers = [
            (keys::COPY_ANNOTATION, keys::TRUE),
            (keys::ORIGIN_ANNOTATION, origin.as_str()),
        ];
        add_secret(&mut world, secret(ns, name, &scoped, &markers));
    }
    for (ns, name) in [
        ("team-b", "api"),
        ("other", "web"),
        ("newcomer", "db"),
        ("newcomer", "cache"),
    ] {
        add_secret(&mut world, secret(ns, name, &[], &[]));
    }
    world
}

pub fn config() -> Config {
    Config {
        reconciler_users: vec![RECONCILER.to_owned()],
        ..Config::default()
    }
}

pub fn deny_overwrites() -> Config {
    Config {
        copies: crate::plan::Settings::with_policy(OverwritePolicy::Deny),
        ..config()
    }
}

/// A Secret as JSON; `labels`/`annotations` are JSON objects (or null).
pub fn secret_json(ns: &str, name: &str, labels: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
        "type": "Opaque",
        "data": {"password": "aHVudGVyMg=="},
    })
}

/// A secret in the backing namespace carrying the project-scoped label with `value`.
pub fn original_json(name: &str, value: &str, annotations: Value) -> Value {
    secret_json(
        BACKING,
        name,
        json!({keys::PROJECT_SCOPED_LABEL: value}),
        annotations,
    )
}

/// The copy of `name` in `ns`, as the reconciler writes it.
pub fn copy_json(ns: &str, name: &str) -> Value {
    secret_json(
        ns,
        name,
        json!({keys::PROJECT_SCOPED_LABEL: "p-vwxyz"}),
        json!({keys::COPY_ANNOTATION: keys::TRUE, keys::ORIGIN_ANNOTATION: keys::origin_value(BACKING, name)}),
    )
}

pub fn namespace_json(name: &str, labels: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
    })
}

/// A namespace whose projectId annotation is `value` (and no label).
pub fn namespace_in_json(name: &str, value: &str) -> Value {
    namespace_json(name, Value::Null, json!({keys::PROJECT_ID_KEY: value}))
}

/// An AdmissionRequest (v1) for `op` on the given objects, by user alice.
pub fn request(op: &str, object: Option<Value>, old: Option<Value>) -> Value {
    let any = object
        .as_ref()
        .or(old.as_ref())
        .cloned()
        .unwrap_or(Value::Null);
    let kind = any["kind"].as_str().unwrap_or("Secret").to_owned();
    let resource = format!("{}s", kind.to_lowercase());
    let mut req = json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": resource},
        "name": any["metadata"]["name"].as_str().unwrap_or_default(),
        "operation": op,
        "userInfo": {"username": USER, "groups": ["system:authenticated"]},
        "object": object,
        "oldObject": old,
        "dryRun": false,
    });
    req["namespace"] = if kind == "Secret" {
        any["metadata"]["namespace"].clone()
    } else {
        // The apiserver names a Namespace itself as the request's namespace.
        any["metadata"]["name"].clone()
    };
    req
}

/// The AdmissionReview the apiserver sends for `req` (a [`request`]), as bytes.
pub fn review_body(req: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": req,
    }))
    .expect("serializable")
}

pub fn admission(req: Value) -> AdmissionRequest<DynamicObject> {
    serde_json::from_value(req).expect("fixture is a valid AdmissionRequest")
}

/// What a test expects of a decision.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Admitted without warnings.
    Allow,
    /// Admitted with a warning containing the text.
    Warn(String),
    /// Denied with this code and a message containing the text.
    Deny(u16, String),
}

pub fn warn(text: impl Into<String>) -> Expect {
    Expect::Warn(text.into())
}

pub fn deny(code: u16, text: impl Into<String>) -> Expect {
    Expect::Deny(code, text.into())
}

pub struct Case {
    pub name: &'static str,
    pub req: Value,
    pub cfg: Config,
    pub facts: Facts,
    pub expect: Expect,
}

impl Case {
    pub fn new(name: &'static str, req: Value, expect: Expect) -> Self {
        Self {
            name,
            req,
            cfg: config(),
            facts: Facts::default(),
            expect,
        }
    }

    pub fn with_cfg(mut self, cfg: Config) -> Self {
        self.cfg = cfg;
        self
    }

    pub fn with_facts(mut self, facts: Facts) -> Self {
        self.facts = facts;
        self
    }
}

/// Runs every case against [`world`], and again as a dry run, which must decide the same.
pub fn run(cases: Vec<Case>) {
    let world = world();
    for case in cases {
        let decision = validate(&admission(case.req.clone()), &world, &case.cfg, &case.facts);
        check(case.name, &decision, &case.expect);
        let mut dry = case.req.clone();
        dry["dryRun"] = Value::Bool(true);
        let dry_decision = validate(&admission(dry), &world, &case.cfg, &case.facts);
        assert_eq!(
            dry_decision, decision,
            "{}: dry run decides differently",
            case.name
        );
    }
}

pub fn check(name: &str, decision: &Decision, expect: &Expect) {
    assert!(
        decision.patch.is_none(),
        "{name}: validation returned a patch"
    );
    for w in &decision.warnings {
        assert!(w.chars().count() <= 120, "{name}: warning too long: {w}");
        assert!(
            !w.chars().any(char::is_control),
            "{name}: control char: {w:?}"
        );
        assert!(
            !w.contains("aHVudGVyMg"),
            "{name}: secret data in a warning"
        );
    }
    match expect {
        Expect::Allow => {
            assert_eq!(decision.denial, None, "{name}");
            assert!(
                decision.warnings.is_empty(),
                "{name}: {:?}",
                decision.warnings
            );
        }
        Expect::Warn(text) => {
            assert_eq!(decision.denial, None, "{name}");
            assert!(
                decision.warnings.iter().any(|w| w.contains(text.as_str())),
                "{name}: no warning containing {text:?} in {:?}",
                decision.warnings
            );
        }
        Expect::Deny(code, text) => {
            let denial = decision
                .denial
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: admitted ({:?})", decision.warnings));
            assert_eq!(denial.code, *code, "{name}: {}", denial.message);
            assert!(
                denial.message.contains(text.as_str()),
                "{name}: message {:?} lacks {text:?}",
                denial.message
            );
            assert!(!denial.reason.is_empty(), "{name}: no reason");
            assert!(
                !denial.message.contains("aHVudGVyMg"),
                "{name}: secret data"
            );
        }
    }
}
