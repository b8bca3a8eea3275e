//! Worlds built through the public `World` API: the admission target's fixed world (the one
//! `src/policy/testing.rs` describes) and the plan target's generated ones, which scale
//! `src/policy/properties.rs`'s generator up (more projects, namespaces and names) and, in "wild"
//! worlds, add what that generator leaves out: deleted projects, backing-namespace marks and uids,
//! shared and missing backing namespaces, malformed annotations.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use proptest::prelude::*;
use scoped_secrets::keys::{self, ProjectId};
use scoped_secrets::world::{NamespaceState, ProjectState, SecretMeta, World};
use std::collections::{BTreeMap, BTreeSet};

pub const BACKING: &str = "local-p-vwxyz";

pub fn project(world: &mut World, cluster: &str, name: &str, backing: &str) -> ProjectId {
    world.projects_installed = true;
    let id = ProjectId::new(cluster, name);
    world.upsert_project(
        id.clone(),
        ProjectState {
            uid: String::new(),
            backing_namespace: backing.to_owned(),
            has_backing_status: true,
            backing_not_ready: None,
            deleting: false,
        },
    );
    world.upsert_namespace(backing.to_owned(), NamespaceState::default());
    id
}

pub fn member(project: &ProjectId, terminating: bool) -> NamespaceState {
    NamespaceState {
        project_annotation: Some(project.to_string()),
        project_label: Some(project.project.clone()),
        terminating,
        ..NamespaceState::default()
    }
}

pub fn secret(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> Secret {
    let map = |pairs: &[(&str, &str)]| {
        (!pairs.is_empty()).then(|| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        })
    };
    Secret {
        metadata: ObjectMeta {
            namespace: Some(ns.to_owned()),
            name: Some(name.to_owned()),
            uid: Some(format!("uid-{ns}-{name}")),
            labels: map(labels),
            annotations: map(annotations),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "key".to_owned(),
            ByteString(b"S3CR3T-world".to_vec()),
        )])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// Adds a secret to both indexes, as the watchers would.
pub fn add_secret(world: &mut World, secret: Secret) {
    let meta = &secret.metadata;
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    world.upsert_secret_meta(&ns, &name, SecretMeta::from_meta(meta));
    if scoped_secrets::world::label(meta, keys::PROJECT_SCOPED_LABEL).is_some() {
        world.upsert_scoped(secret);
    }
}

/// The policy tests' world: project local:p-vwxyz with team-a, team-b and the terminating `dying`;
/// `other` and `newcomer` outside; originals `db` and `cache` (ignoring team-b) with copies.
pub fn admission_world() -> World {
    let mut world = World::default();
    let p = project(&mut world, "local", "p-vwxyz", BACKING);
    for ns in ["team-a", "team-b"] {
        world.upsert_namespace(ns.to_owned(), member(&p, false));
    }
    world.upsert_namespace("dying".to_owned(), member(&p, true));
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
    for (ns, name) in [("team-b", "api"), ("other", "web"), ("newcomer", "db")] {
        add_secret(&mut world, secret(ns, name, &[], &[]));
    }
    world
}

/// Plan worlds: four projects (backing namespaces b0–b3), twelve ordinary namespaces (n10 and n11
/// protected), six secret names.
pub const PROJECTS: usize = 4;
pub const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
pub const ORDINARY: usize = 12;
pub const PROTECTED: [&str; 2] = ["n10", "n11"];

pub fn namespaces() -> Vec<String> {
    (0..PROJECTS)
        .map(|p| format!("b{p}"))
        .chain((0..ORDINARY).map(|n| format!("n{n}")))
        .collect()
}

pub fn project_id(p: usize) -> ProjectId {
    ProjectId::new("local", format!("p{p}"))
}

#[derive(Debug, Clone)]
pub enum Holder {
    Plain,
    Copy(usize),
    StrayCopy,
    Labelled(usize),
}

#[derive(Debug, Clone)]
pub struct Original {
    pub project: usize,
    pub name: usize,
    pub consents: bool,
    pub ignores: Option<String>,
    pub token: bool,
    pub has_cluster_label: bool,
}

/// What only wild worlds have, per project.
#[derive(Debug, Clone)]
pub struct Wild {
    /// `None`: the project keeps its own backing namespace `b<p>`; else another project's, or an
    /// ordinary namespace, or an odd name.
    pub backing: Option<usize>,
    pub has_backing_status: bool,
    pub uid: bool,
    /// The project was deleted (its copies must go once confirmed).
    pub deleted: Option<bool>,
    /// Backing-namespace marks on its namespace: (names project, names uid).
    pub marks: Option<(usize, bool)>,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    /// Per namespace: the project it belongs to (or a malformed annotation), and whether it is
    /// terminating.
    pub members: Vec<(Option<usize>, bool, bool)>,
    pub originals: Vec<Original>,
    pub others: Vec<(usize, usize, Holder)>,
    pub deny: bool,
    pub wild: Option<Vec<Wild>>,
}

fn holder() -> impl Strategy<Value = Holder> {
    prop_oneof![
        Just(Holder::Plain),
        (0..PROJECTS).prop_map(Holder::Copy),
        Just(Holder::StrayCopy),
        (0..PROJECTS).prop_map(Holder::Labelled),
    ]
}

fn ignore_value() -> impl Strategy<Value = String> {
    let ns = PROJECTS + ORDINARY;
    prop_oneof![
        (0..ns).prop_map(move |i| namespaces()[i].clone()),
        Just("^n1.*$".to_owned()),
        Just("n1, n2,,".to_owned()),
        Just("(".to_owned()),
        Just("*".to_owned()),
        Just(String::new()),
    ]
}

fn wild() -> impl Strategy<Value = Wild> {
    (
        prop::option::weighted(0.2, 0..(PROJECTS + 3)),
        prop::bool::weighted(0.8),
        any::<bool>(),
        prop::option::weighted(0.2, any::<bool>()),
        prop::option::weighted(0.3, (0..PROJECTS, any::<bool>())),
    )
        .prop_map(|(backing, has_backing_status, uid, deleted, marks)| Wild {
            backing,
            has_backing_status,
            uid,
            deleted,
            marks,
        })
}

pub fn scenario() -> impl Strategy<Value = Scenario> {
    let n = PROJECTS + ORDINARY;
    let members = prop::collection::vec(
        (
            prop::option::of(0..PROJECTS),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.05),
        ),
        n,
    );
    let original = (
        0..PROJECTS,
        0..NAMES.len(),
        any::<bool>(),
        prop::option::weighted(0.3, ignore_value()),
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.9),
    )
        .prop_map(
            |(project, name, consents, ignores, token, has_cluster_label)| Original {
                project,
                name,
                consents,
                ignores,
                token,
                has_cluster_label,
            },
        );
    (
        members,
        prop::collection::vec(original, 0..16),
        prop::collection::vec((0..n, 0..NAMES.len(), holder()), 0..40),
        any::<bool>(),
        prop::option::weighted(0.5, prop::collection::vec(wild(), PROJECTS)),
    )
        .prop_map(|(members, originals, others, deny, wild)| Scenario {
            members,
            originals,
            others,
            deny,
            wild,
        })
}

pub fn build(s: &Scenario) -> World {
    let names = namespaces();
    let mut world = World::default();
    for p in 0..PROJECTS {
        let backing = match s.wild.as_ref().and_then(|w| w[p].backing) {
            None => format!("b{p}"),
            Some(i) if i < PROJECTS => format!("b{i}"),
            Some(i) if i == PROJECTS => "n0".to_owned(),
            Some(i) if i == PROJECTS + 1 => "Not A Namespace!".to_owned(),
            Some(_) => String::new(),
        };
        let id = project(&mut world, "local", &format!("p{p}"), &backing);
        if let Some(w) = s.wild.as_ref().map(|w| &w[p]) {
            world.upsert_project(
                id.clone(),
                ProjectState {
                    uid: if w.uid {
                        format!("uid-p{p}")
                    } else {
                        String::new()
                    },
                    backing_namespace: backing.clone(),
                    has_backing_status: w.has_backing_status,
                    backing_not_ready: None,
                    deleting: false,
                },
            );
        }
    }
    for (ns, (belongs, terminating, malformed)) in names.iter().zip(&s.members) {
        let mut state = match belongs {
            Some(p) => member(&project_id(*p), *terminating),
            None => NamespaceState {
                terminating: *terminating,
                ..NamespaceState::default()
            },
        };
        if *malformed && s.wild.is_some() {
            state.project_annotation = Some("local:".to_owned());
        }
        world.upsert_namespace(ns.clone(), state);
    }
    if let Some(wild) = &s.wild {
        for (p, w) in wild.iter().enumerate() {
            if let Some((owner, with_uid)) = w.marks {
                let ns = format!("b{p}");
                let mut state = world.namespace(&ns).cloned().unwrap_or_default();
                state.backing_of = Some(project_id(owner).to_string());
                state.backing_uid = with_uid.then(|| format!("uid-p{owner}"));
                world.upsert_namespace(ns, state);
            }
        }
    }
    let mut taken = BTreeSet::new();
    for o in &s.originals {
        let (ns, name) = (format!("b{}", o.project), NAMES[o.name]);
        if !taken.insert((ns.clone(), name)) {
            continue;
        }
        let label = format!("p{}", o.project);
        let mut labels = vec![(keys::PROJECT_SCOPED_LABEL, label.as_str())];
        if o.has_cluster_label || s.wild.is_none() {
            labels.push((keys::PROJECT_SCOPED_CLUSTER_LABEL, "local"));
        }
        let mut annotations = Vec::new();
        if o.consents {
            annotations.push((keys::ALLOW_OVERWRITE_ANNOTATION, keys::TRUE));
        }
        if let Some(ignored) = &o.ignores {
            annotations.push((keys::IGNORE_NAMESPACES_ANNOTATION, ignored.as_str()));
        }
        let mut original = secret(&ns, name, &labels, &annotations);
        if o.token {
            original.type_ = Some(keys::SERVICE_ACCOUNT_TOKEN_TYPE.to_owned());
        }
        add_secret(&mut world, original);
    }
    for (ns, name, holder) in &s.others {
        let (ns, name) = (names[*ns].as_str(), NAMES[*name]);
        if !taken.insert((ns.to_owned(), name)) {
            continue;
        }
        let held = match holder {
            Holder::Plain => secret(ns, name, &[], &[]),
            Holder::Copy(p) => {
                let label = format!("p{p}");
                let origin = keys::origin_value(&format!("b{p}"), name);
                secret(
                    ns,
                    name,
                    &[(keys::PROJECT_SCOPED_LABEL, label.as_str())],
                    &[
                        (keys::COPY_ANNOTATION, keys::TRUE),
                        (keys::ORIGIN_ANNOTATION, origin.as_str()),
                    ],
                )
            }
            Holder::StrayCopy => secret(ns, name, &[], &[(keys::COPY_ANNOTATION, keys::TRUE)]),
            Holder::Labelled(p) => {
                let label = format!("p{p}");
                secret(
                    ns,
                    name,
                    &[(keys::PROJECT_SCOPED_LABEL, label.as_str())],
                    &[],
                )
            }
        };
        add_secret(&mut world, held);
    }
    if let Some(wild) = &s.wild {
        for (p, w) in wild.iter().enumerate() {
            if let Some(confirmed) = w.deleted {
                let id = project_id(p);
                let backing = world
                    .project(&id)
                    .map(|state| state.backing_namespace.clone())
                    .unwrap_or_default();
                world.remove_project(&id);
                world.note_project_deleted(id.clone(), backing, String::new());
                if confirmed {
                    world.confirm_project_deleted(&id);
                }
            }
        }
    }
    world
}
