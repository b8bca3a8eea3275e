//! How long `plan::actions` takes over a large converged world (the reconciler runs it after every
//! debounced change), and what publishing a new index snapshot costs per watch event in that world:
//! `cargo run --release --example plan_bench [projects] [namespaces-per-project]
//! [originals-per-project]`.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use scoped_secrets::index::Index;
use scoped_secrets::keys::{self, ProjectId};
use scoped_secrets::plan;
use scoped_secrets::plan::Settings;
use scoped_secrets::world::{NamespaceState, ProjectState, SecretMeta, World};
use std::collections::BTreeMap;
use std::time::Instant;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn add(world: &mut World, secret: Secret) {
    let meta = &secret.metadata;
    let (ns, name) = (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    world.upsert_secret_meta(&ns, &name, SecretMeta::from_meta(meta));
    world.upsert_scoped(secret);
}

fn main() {
    let (projects, namespaces, originals) = (arg(1, 50), arg(2, 40), arg(3, 10));
    let mut world = World::default();
    world.projects_installed = true;
    for p in 0..projects {
        let id = ProjectId::new("local", format!("p-{p}"));
        let backing = id.generated_backing_namespace();
        world.upsert_project(
            id.clone(),
            ProjectState {
                uid: String::new(),
                backing_namespace: backing.clone(),
                has_backing_status: true,
                backing_not_ready: None,
                deleting: false,
            },
        );
        world.upsert_namespace(backing.clone(), NamespaceState::default());
        for n in 0..namespaces {
            world.upsert_namespace(
                format!("p{p}-ns{n}"),
                NamespaceState {
                    project_annotation: Some(id.to_string()),
                    project_label: Some(id.project.clone()),
                    ..NamespaceState::default()
                },
            );
        }
        for o in 0..originals {
            let labels = BTreeMap::from([
                (keys::PROJECT_SCOPED_LABEL.to_owned(), id.project.clone()),
                (
                    keys::PROJECT_SCOPED_CLUSTER_LABEL.to_owned(),
                    id.cluster.clone(),
                ),
            ]);
            let original = Secret {
                metadata: ObjectMeta {
                    namespace: Some(backing.clone()),
                    name: Some(format!("secret-{o}")),
                    uid: Some(format!("uid-{p}-{o}")),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    "key".to_owned(),
                    ByteString(vec![7; 64]),
                )])),
                type_: Some("Opaque".to_owned()),
                ..Secret::default()
            };
            add(&mut world, original);
        }
    }
    // Converge: write every copy the plan asks for into the world, as the watches would.
    let copies: Vec<Secret> = plan::actions(&world, &Settings::default())
        .into_iter()
        .filter_map(|a| match a {
            plan::Action::Create { copy } => Some(copy.placed()),
            _ => None,
        })
        .collect();
    let copy_count = copies.len();
    for mut copy in copies {
        copy.metadata.uid = Some("copy".to_owned());
        copy.metadata.resource_version = Some("1".to_owned());
        add(&mut world, copy);
    }
    let rounds = 10;
    let start = Instant::now();
    for _ in 0..rounds {
        let actions = plan::actions(&world, &Settings::default());
        assert!(
            actions.is_empty(),
            "not converged: {} actions",
            actions.len()
        );
    }
    let per_round = start.elapsed() / rounds;
    println!(
        "{projects} projects x {namespaces} namespaces x {originals} originals = {copy_count} copies: \
         {per_round:?} per converged plan"
    );
    publish_per_event(world, projects, namespaces);
}

/// Each watch event publishes a new snapshot: time one secret-metadata event (spread over the
/// namespaces), with a reader holding an older snapshot all along, as a plan in progress would.
fn publish_per_event(world: World, projects: usize, namespaces: usize) {
    let index = Index::new(world);
    let held = index.read();
    let events: u32 = 10_000;
    let start = Instant::now();
    for e in 0..events as usize {
        let ns = format!("p{}-ns{}", e % projects, (e / projects) % namespaces);
        index.update(|w| {
            w.upsert_secret_meta(
                &ns,
                &format!("event-{e}"),
                SecretMeta {
                    uid: format!("uid-event-{e}"),
                    copy_of: None,
                },
            )
        });
    }
    let per_event = start.elapsed() / events;
    assert_eq!(
        index.read().secret_count(),
        held.secret_count() + events as usize
    );
    println!("{per_event:?} per watch event to publish a new index snapshot");
}
