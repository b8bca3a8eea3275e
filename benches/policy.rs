//! The rules alone, in process (no cluster): the CPU time of one review of a new secret in a
//! project's namespace while the index holds a project's worth of copies, 10 originals copied into
//! BENCH_POLICY_NAMESPACES (default 10,000) namespaces, 100,000 copies; BENCH_POLICY_REVIEWS
//! (default 20,000) reviews. The review decodes the
//! body and runs the name-check entry's rules (S1's reserved names look the project's originals up).
//!
//! `make bench-policy` (or `cargo bench --bench policy`).

use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use scoped_secrets::keys::{self, ProjectId};
use scoped_secrets::policy::{self, Config, Facts, Rules};
use scoped_secrets::world::{NamespaceState, ProjectState, SecretMeta, World};
use std::collections::BTreeMap;
use std::time::Instant;

const BACKING: &str = "local-p-bench";
const ORIGINALS: usize = 10;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let setting = |name: &str, default: u32| -> u32 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let namespaces = setting("BENCH_POLICY_NAMESPACES", 10_000) as usize;
    let reviews = setting("BENCH_POLICY_REVIEWS", 20_000);
    let project = ProjectId::new("local", "p-bench");
    let world = world(&project, namespaces);
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": "fresh", "namespace": member(namespaces / 2), "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": {
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "fresh", "namespace": member(namespaces / 2)},
                "data": {"password": "c2VjcmV0"}
            }
        }
    }))?;
    let config = Config::default();
    let started = Instant::now();
    for _ in 0..reviews {
        let request = scoped_secrets::webhook::review::parse_request(&body)?;
        let decision = policy::validate_only(
            Rules::SecretNames,
            &request,
            &world,
            &config,
            &Facts::default(),
        );
        anyhow::ensure!(decision.denial.is_none(), "the new name was refused");
    }
    println!(
        "a review of a new secret in a project's namespace, {} copies indexed: {:.1} us per review ({reviews} reviews)",
        namespaces * ORIGINALS,
        started.elapsed().as_secs_f64() * 1e6 / f64::from(reviews)
    );
    Ok(())
}

fn member(i: usize) -> String {
    format!("member-{i}")
}

/// The project with its originals in its backing namespace and a copy of each in every member.
fn world(project: &ProjectId, namespaces: usize) -> World {
    let mut world = World::default();
    world.projects_installed = true;
    world.upsert_project(
        project.clone(),
        ProjectState {
            uid: String::new(),
            backing_namespace: BACKING.to_owned(),
            has_backing_status: true,
            backing_not_ready: None,
        },
    );
    world.upsert_namespace(BACKING.to_owned(), NamespaceState::default());
    let add = |world: &mut World, secret: Secret| {
        let meta = &secret.metadata;
        let (ns, name) = (meta.namespace.clone(), meta.name.clone());
        world.upsert_secret_meta(
            ns.as_deref().unwrap_or_default(),
            name.as_deref().unwrap_or_default(),
            SecretMeta::from_meta(meta),
        );
        world.upsert_scoped(secret);
    };
    for n in 0..ORIGINALS {
        add(
            &mut world,
            labelled(BACKING, &format!("s{n}"), project, None),
        );
    }
    for i in 0..namespaces {
        let ns = member(i);
        let state = NamespaceState {
            project_annotation: Some(project.to_string()),
            project_label: Some(project.project.clone()),
            ..NamespaceState::default()
        };
        world.upsert_namespace(ns.clone(), state);
        for n in 0..ORIGINALS {
            let name = format!("s{n}");
            let origin = keys::origin_value(BACKING, &name);
            add(&mut world, labelled(&ns, &name, project, Some(&origin)));
        }
    }
    world
}

/// A secret with the project-scoped label: a copy of `origin` when it is given, else an original.
fn labelled(ns: &str, name: &str, project: &ProjectId, origin: Option<&str>) -> Secret {
    let mut annotations = BTreeMap::new();
    if let Some(origin) = origin {
        annotations.insert(keys::COPY_ANNOTATION.to_owned(), keys::TRUE.to_owned());
        annotations.insert(keys::ORIGIN_ANNOTATION.to_owned(), origin.to_owned());
    }
    let labels = BTreeMap::from([(
        keys::PROJECT_SCOPED_LABEL.to_owned(),
        project.project.clone(),
    )]);
    Secret {
        metadata: ObjectMeta {
            namespace: Some(ns.to_owned()),
            name: Some(name.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    }
}
