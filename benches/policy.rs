//! The rules alone, in process (no cluster): the CPU time of one review while the index holds a
//! project's worth of copies, 10 originals copied into BENCH_POLICY_NAMESPACES (default 10,000)
//! namespaces, 100,000 copies, beside a small project of 10 namespaces; BENCH_POLICY_REVIEWS
//! (default 20,000) reviews of each kind. A review decodes the body and runs one entry's rules:
//! a new secret in a project's namespace (S1's reserved names look the project's originals up), a
//! user deleting a copy (S5), a user editing an original of the large and of the small project
//! (S2 and S7 walk the project's namespaces, not the cluster's). Last, the costliest ignore lists
//! the limits let through or refuse: what reading one costs a review (anyone who can reach the
//! webhook port can send one in a forged review).
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
/// A second project, of a few namespaces, in the same cluster: its reviews should cost what its
/// own namespaces cost, whatever the size of the cluster.
const SMALL_BACKING: &str = "local-p-small";
const SMALL_MEMBERS: usize = 10;

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
    let config = Config::default();
    let namespace = member(namespaces / 2);
    let create = request(&namespace, "fresh", "CREATE", None, BACKING)?;
    let per_review = time(&create, Rules::SecretNames, &world, &config, reviews, false)?;
    println!(
        "a review of a new secret in a project's namespace, {} copies indexed: {per_review:.1} us per review ({reviews} reviews)",
        namespaces * ORIGINALS
    );
    // A user deleting a copy: S5 refuses it while the original still wants the copy there.
    let origin = keys::origin_value(BACKING, "s0");
    let delete = request(&namespace, "s0", "DELETE", Some(&origin), BACKING)?;
    let per_review = time(&delete, Rules::SecretGuard, &world, &config, reviews, true)?;
    println!(
        "a review of a user deleting a copy, {} copies indexed: {per_review:.1} us per review ({reviews} reviews)",
        namespaces * ORIGINALS
    );
    // A user editing an original: S2 lists the namespaces its copies go to (all 10,000).
    let edit = request(BACKING, "s0", "UPDATE", None, BACKING)?;
    let per_review = time(
        &edit,
        Rules::SecretNames,
        &world,
        &config,
        reviews / 100,
        false,
    )?;
    println!(
        "a review of a user's edit of an original copied into {namespaces} namespaces: {per_review:.1} us per review ({} reviews)",
        reviews / 100
    );
    // The same edit of a small project's original: its copies go to its 10 namespaces, whatever
    // the cluster's other 10,000 hold.
    let edit = request(SMALL_BACKING, "s0", "UPDATE", None, SMALL_BACKING)?;
    let per_review = time(&edit, Rules::SecretNames, &world, &config, reviews, false)?;
    println!(
        "a review of a user's edit of an original copied into {SMALL_MEMBERS} namespaces, {} namespaces in the cluster: {per_review:.1} us per review ({reviews} reviews)",
        namespaces + SMALL_MEMBERS + 2
    );
    let (shape, worst) = costliest_ignore_list();
    println!(
        "the costliest ignore list to read (of the shapes tried, the limits hold the rest): {worst:.0} us ({shape})"
    );
    Ok(())
}

/// The microseconds the costliest of a few hostile ignore lists takes to read (parsed and
/// compiled, or refused), and its shape: as many entries and as much text as the limits allow,
/// and more.
fn costliest_ignore_list() -> (&'static str, f64) {
    use scoped_secrets::plan::ignore::{MAX_ENTRIES, MAX_PATTERN_BYTES};
    let fill = |entry: &dyn Fn(usize) -> String| {
        let mut entries: Vec<String> = Vec::new();
        let mut bytes = 0;
        for i in 0..MAX_ENTRIES {
            let next = entry(i);
            if bytes + next.len() > MAX_PATTERN_BYTES {
                break;
            }
            bytes += next.len();
            entries.push(next);
        }
        entries.join(",")
    };
    let shapes: [(&'static str, String); 6] = [
        (
            "counted repetitions",
            fill(&|i| format!("[a-z0-9-]{{60}}{i}")),
        ),
        (
            "Unicode classes (refused)",
            fill(&|_| r"(?u:\w{29})".to_owned()),
        ),
        (
            "alternations",
            fill(&|i| format!("(?:a|b|c|d|e|f|g|h){{8}}{i}")),
        ),
        (
            "long literals",
            fill(&|i| format!("ns-{i}-{}", "abcdefghij".repeat(12))),
        ),
        (
            "negated classes",
            fill(&|i| format!("{}{i}", "[^a]".repeat(20))),
        ),
        (
            "text past the limit",
            vec![format!("ns-{}.*", "abcdefghij".repeat(24)); MAX_ENTRIES].join(","),
        ),
    ];
    let mut worst = ("", 0.0);
    for (shape, list) in &shapes {
        let rounds = 20;
        let started = Instant::now();
        for _ in 0..rounds {
            let _ = scoped_secrets::plan::IgnoreList::parse(list);
        }
        let each = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        if each > worst.1 {
            worst = (shape, each);
        }
    }
    worst
}

/// Microseconds of CPU per review of `body` by `rules`, each checked to be refused or not.
fn time(
    body: &[u8],
    rules: Rules,
    world: &World,
    config: &Config,
    reviews: u32,
    refused: bool,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    for _ in 0..reviews {
        let request = scoped_secrets::webhook::review::parse_request(body)?;
        let decision = policy::validate_only(rules, &request, world, config, &Facts::default());
        anyhow::ensure!(
            decision.denial.is_some() == refused,
            "unexpected decision: {:?}",
            decision.denial
        );
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(reviews))
}

/// An AdmissionReview of `operation` on secret `name` in `namespace` by alice; the secret is a
/// copy of `origin` when that is given, labelled for the project backed by `backing`.
fn request(
    namespace: &str,
    name: &str,
    operation: &str,
    origin: Option<&str>,
    backing: &str,
) -> anyhow::Result<Vec<u8>> {
    let project = backing.trim_start_matches("local-");
    let mut object = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"password": "c2VjcmV0"}
    });
    if namespace == backing || origin.is_some() {
        object["metadata"]["labels"] = serde_json::json!({keys::PROJECT_SCOPED_LABEL: project});
    }
    if let Some(origin) = origin {
        object["metadata"]["annotations"] =
            serde_json::json!({keys::COPY_ANNOTATION: keys::TRUE, keys::ORIGIN_ANNOTATION: origin});
    }
    let (object, old) = match operation {
        "CREATE" => (Some(object), None),
        "DELETE" => (None, Some(object)),
        _ => (Some(object.clone()), Some(object)),
    };
    Ok(serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": name, "namespace": namespace, "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old,
        }
    }))?)
}

fn member(i: usize) -> String {
    format!("member-{i}")
}

/// The project with its originals in its backing namespace and a copy of each in every member, and
/// beside it a small project of [`SMALL_MEMBERS`] namespaces.
fn world(project: &ProjectId, namespaces: usize) -> World {
    let mut world = World::default();
    world.projects_installed = true;
    add_project(&mut world, project, BACKING, (0..namespaces).map(member));
    let small = ProjectId::new("local", "p-small");
    let small_members = (0..SMALL_MEMBERS).map(|i| format!("small-{i}"));
    add_project(&mut world, &small, SMALL_BACKING, small_members);
    world
}

/// `project`, backed by `backing` with [`ORIGINALS`] originals, a copy of each in every member.
fn add_project(
    world: &mut World,
    project: &ProjectId,
    backing: &str,
    members: impl Iterator<Item = String>,
) {
    world.upsert_project(
        project.clone(),
        ProjectState {
            uid: String::new(),
            backing_namespace: backing.to_owned(),
            has_backing_status: true,
            backing_not_ready: None,
            deleting: false,
        },
    );
    world.upsert_namespace(backing.to_owned(), NamespaceState::default());
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
        add(world, labelled(backing, &format!("s{n}"), project, None));
    }
    for ns in members {
        let state = NamespaceState {
            project_annotation: Some(project.to_string()),
            project_label: Some(project.project.clone()),
            ..NamespaceState::default()
        };
        world.upsert_namespace(ns.clone(), state);
        for n in 0..ORIGINALS {
            let name = format!("s{n}");
            let origin = keys::origin_value(backing, &name);
            add(world, labelled(&ns, &name, project, Some(&origin)));
        }
    }
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
