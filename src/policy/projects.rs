//! Rules P1–P4: Projects that would take over another project's backing namespace or members.
//!
//! A backing namespace belongs to exactly one project: its originals are copied into that project's
//! namespaces. A Project that claims someone else's (through `status.backingNamespace`, or through
//! the legacy or generated name it would get) would have the victim's copies removed and its secrets
//! copied into the attacker's namespaces, so it is refused here (the `project-guard` entry, which
//! fails closed), and the reconciler resolves what slips by (two claims: neither gets it).
//!
//! - P1: `spec.clusterName` must be the Project's namespace (its ID is `<namespace>:<name>`).
//! - P2: the name must be able to form a namespace name (the legacy backing namespace is the name).
//! - P3: no backing namespace (the status one, or without one the legacy and generated names) that
//!   another project claims or that is marked as another project's.
//! - P4: no Project created whose ID namespaces already name (members of a deleted project of that
//!   name: N2 refuses naming one that does not exist), unless its creator may update each of them,
//!   as joining them would need; they would otherwise join a project their owners never chose.

use super::{Config, Decision, Denial, Facts, Findings, Needs, skips_rules};
use crate::keys::{self, ProjectId};
use crate::project::status_backing_namespace;
use crate::world::World;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};

/// The fields of one Project the rules read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectView {
    /// `spec.clusterName`, if set.
    pub cluster_name: Option<String>,
    /// `status.backingNamespace`, if set and not empty.
    pub backing_namespace: Option<String>,
}

/// A Project admission request as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectReview {
    pub op: Operation,
    /// The Project's namespace (its cluster) and name; the name is empty when the apiserver has not
    /// picked it yet (it has by the time validating webhooks are called).
    pub id: ProjectId,
    /// The Project object's uid (empty when the request does not carry it yet).
    pub uid: String,
    pub new: Option<ProjectView>,
    pub old: Option<ProjectView>,
}

impl ProjectReview {
    /// The one place a request becomes a [`ProjectReview`].
    pub fn from_request(req: &AdmissionRequest<DynamicObject>) -> Self {
        let view = |obj: &Option<DynamicObject>| {
            obj.as_ref().map(|o| ProjectView {
                cluster_name: text(&o.data, "/spec/clusterName"),
                backing_namespace: status_backing_namespace(&o.data).map(str::to_owned),
            })
        };
        let meta = req
            .object
            .as_ref()
            .or(req.old_object.as_ref())
            .map(|o| &o.metadata);
        let name = Some(req.name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| meta.and_then(|m| m.name.clone()))
            .unwrap_or_default();
        let namespace = req
            .namespace
            .clone()
            .or_else(|| meta.and_then(|m| m.namespace.clone()))
            .unwrap_or_default();
        Self {
            op: req.operation.clone(),
            id: ProjectId::new(namespace, name),
            uid: meta.and_then(|m| m.uid.clone()).unwrap_or_default(),
            new: view(&req.object),
            old: view(&req.old_object),
        }
    }
}

fn text(data: &serde_json::Value, pointer: &str) -> Option<String> {
    data.pointer(pointer)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The `project-guard` entry: P1–P4 for one request (reconciler identities skip them), with the
/// access reviews [`needs`] asked for.
pub fn review(
    req: &AdmissionRequest<DynamicObject>,
    world: &World,
    cfg: &Config,
    facts: &Facts,
) -> Decision {
    if skips_rules(req, cfg) {
        return Decision::default();
    }
    let review = ProjectReview::from_request(req);
    let mut findings = Findings::default();
    for denial in validate(&review, world) {
        findings.deny(denial);
    }
    let user = req.user_info.username.as_deref().unwrap_or_default();
    if let Some(denial) = namesake_members(&review, &leftover_members(&review, world), user, facts)
    {
        findings.deny(denial);
    }
    findings.decide(cfg.mode)
}

/// The most namespaces P4 asks about one by one; past it only a user who may update every
/// namespace may create the project (the review would otherwise cost a request per namespace).
pub const MAX_MEMBER_REVIEWS: usize = 32;

/// What P4 needs to ask the apiserver before [`review`], given what was asked so far: first
/// whether the user may update every namespace, then (if not) each leftover member. Empty when
/// nothing (more) is needed.
pub fn needs(
    req: &AdmissionRequest<DynamicObject>,
    world: &World,
    cfg: &Config,
    asked: &Facts,
) -> Needs {
    if skips_rules(req, cfg) {
        return Needs::default();
    }
    let members = leftover_members(&ProjectReview::from_request(req), world);
    let reviews = if members.is_empty() || asked.may_update_namespaces.get("") == Some(&true) {
        Vec::new()
    } else if !asked.may_update_namespaces.contains_key("") {
        vec![String::new()]
    } else if members.len() <= MAX_MEMBER_REVIEWS {
        members
            .into_iter()
            .filter(|ns| !asked.may_update_namespaces.contains_key(ns))
            .collect()
    } else {
        Vec::new()
    };
    Needs {
        namespace_update_reviews: reviews,
        ..Needs::default()
    }
}

/// P4: the namespaces that a Project created now would have as members without anyone having
/// asked: those whose annotation already names its ID.
fn leftover_members(review: &ProjectReview, world: &World) -> Vec<String> {
    if review.op != Operation::Create || review.id.project.is_empty() {
        return Vec::new();
    }
    world
        .namespaces_naming(&review.id)
        .map(|m| m.name.to_owned())
        .collect()
}

/// P4's denial, if `user` may not update every one of `members` (or it could not be verified).
fn namesake_members(
    review: &ProjectReview,
    members: &[String],
    user: &str,
    facts: &Facts,
) -> Option<Denial> {
    if members.is_empty() || facts.may_update_namespaces.get("") == Some(&true) {
        return None;
    }
    let answers: Vec<Option<bool>> = members
        .iter()
        .map(|ns| facts.may_update_namespaces.get(ns).copied())
        .collect();
    if answers.iter().all(|a| *a == Some(true)) {
        return None;
    }
    let id = &review.id;
    let shown: Vec<&str> = members.iter().take(5).map(String::as_str).collect();
    let more = members.len().saturating_sub(shown.len());
    let named = if more > 0 {
        format!("{shown:?} and {more} more")
    } else {
        format!("{shown:?}")
    };
    let situation = format!(
        "namespaces {named} already name project {id} in annotation {} (members of a deleted \
         project of that name), so creating it would make them its members",
        keys::PROJECT_ID_KEY
    );
    let unasked = !facts.may_update_namespaces.contains_key("");
    if answers.contains(&None) && (members.len() <= MAX_MEMBER_REVIEWS || unasked) {
        return Some(Denial::forbidden(
            "ProjectMembersUnverified",
            format!(
                "{situation}, and whether user {user:?} may update them (as joining them would \
                 need) could not be verified; try again"
            ),
        ));
    }
    Some(Denial::forbidden(
        "NamesakeMembers",
        format!(
            "{situation}, which user {user:?} may not update (as joining them would need); remove \
             the annotation from them first, or have a user who may update them create the project"
        ),
    ))
}

/// Every denial P1–P3 find (P4 needs access reviews: see [`review`]), in rule order. Only what a request changes is judged: an UPDATE that
/// leaves the cluster name and backing namespace alone is never refused for them.
pub fn validate(review: &ProjectReview, world: &World) -> Vec<Denial> {
    let mut out = Vec::new();
    let Some(new) = &review.new else {
        return out;
    };
    let old = review.old.as_ref();
    let id = &review.id;
    if let Some(cluster_name) = &new.cluster_name
        && *cluster_name != id.cluster
        && old.is_none_or(|o| o.cluster_name != new.cluster_name)
    {
        out.push(Denial::forbidden(
            "ClusterNameMismatch",
            format!(
                "project {:?} in namespace {:?} has spec.clusterName {cluster_name:?}, which is not \
                 its namespace; a project's ID is <namespace>:<name> ({id}), and its backing \
                 namespace and members are matched by that ID; set spec.clusterName to {:?}, or \
                 create the project in namespace {cluster_name:?}",
                id.project, id.cluster, id.cluster
            ),
        ));
    }
    if id.project.is_empty() {
        return out;
    }
    if review.op == Operation::Create && !keys::is_namespace_name(&id.project) {
        out.push(Denial::forbidden(
            "InvalidProjectName",
            format!(
                "project name {:?} cannot form a namespace name (at most 63 lowercase letters, \
                 digits and '-', starting and ending with a letter or digit), and the project's \
                 backing namespace is named after it; choose a name like {:?}",
                id.project,
                suggestion(&id.project)
            ),
        ));
        return out;
    }
    let claims = |view: Option<&ProjectView>| view.map(|v| claimed(id, v));
    let before = claims(old);
    for claim in claimed(id, new) {
        if before.as_ref().is_some_and(|b| b.contains(&claim)) {
            continue;
        }
        if let Some(owner) = other_owner(world, id, &review.uid, claim.namespace()) {
            out.push(claim.denial(id, &owner));
        }
    }
    out
}

/// A namespace a project takes (or would take) as its backing namespace, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    Status(String),
    Legacy(String),
    Generated(String),
}

impl Claim {
    fn namespace(&self) -> &str {
        match self {
            Self::Status(ns) | Self::Legacy(ns) | Self::Generated(ns) => ns,
        }
    }

    fn denial(&self, id: &ProjectId, owner: &ProjectId) -> Denial {
        let ns = self.namespace();
        let why = format!(
            "namespace {ns:?} is the backing namespace of project {owner}, and a backing namespace \
             belongs to exactly one project (sharing it would remove {owner}'s copies and hand its \
             project-scoped secrets to {id})"
        );
        let message = match self {
            Self::Status(_) => format!(
                "project {id} may not have status.backingNamespace {ns:?}: {why}; leave \
                 status.backingNamespace empty (a backing namespace is then made for the project), or \
                 name a namespace no other project uses"
            ),
            Self::Legacy(_) => format!(
                "project {id} may not be named {:?}: without status.backingNamespace a project's \
                 backing namespace is its own name, and {why}; choose another project name",
                id.project
            ),
            Self::Generated(_) => format!(
                "project {id} would get the generated backing namespace {ns:?}, but {why}; choose \
                 another project name"
            ),
        };
        Denial::forbidden("BackingNamespaceClaimed", message)
    }
}

/// The namespaces a project claims: its status one, or without one both names it could get.
fn claimed(id: &ProjectId, view: &ProjectView) -> Vec<Claim> {
    match &view.backing_namespace {
        Some(ns) => vec![Claim::Status(ns.clone())],
        None => vec![
            Claim::Legacy(id.legacy_backing_namespace().to_owned()),
            Claim::Generated(id.generated_backing_namespace()),
        ],
    }
}

/// Another project that claims this namespace, or that it is marked for: also a deleted project of
/// the same name, whose Project object had another uid (its originals may still be there).
fn other_owner(world: &World, id: &ProjectId, uid: &str, namespace: &str) -> Option<ProjectId> {
    world
        .claims(namespace)
        .into_iter()
        .find(|claimant| *claimant != id)
        .cloned()
        .or_else(|| {
            let ns = world.namespace(namespace)?;
            let owner = ns.marked_project()?;
            let earlier_namesake = &owner == id
                && !uid.is_empty()
                && ns
                    .backing_uid
                    .as_deref()
                    .is_some_and(|marked| marked != uid);
            (&owner != id || earlier_namesake).then_some(owner)
        })
}

/// A valid namespace name close to `name`, for the denial message.
fn suggestion(name: &str) -> String {
    let mapped: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let cut = &trimmed[..trimmed.len().min(63)];
    let cut = cut.trim_end_matches('-');
    if cut.is_empty() {
        "p-1".to_owned()
    } else {
        cut.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::fixtures::project;
    use crate::world::{NamespaceState, ProjectState};

    fn create(cluster: &str, name: &str, view: ProjectView) -> ProjectReview {
        ProjectReview {
            uid: String::new(),
            op: Operation::Create,
            id: ProjectId::new(cluster, name),
            new: Some(view),
            old: None,
        }
    }

    fn spec(cluster: &str) -> ProjectView {
        ProjectView {
            cluster_name: Some(cluster.to_owned()),
            backing_namespace: None,
        }
    }

    fn messages(review: &ProjectReview, world: &World) -> Vec<String> {
        validate(review, world)
            .into_iter()
            .map(|d| d.message)
            .collect()
    }

    fn victim() -> World {
        let mut world = World::default();
        let id = project(&mut world, "local", "a-team", "local-a-team");
        world.upsert_namespace(
            "local-a-team".to_owned(),
            NamespaceState {
                backing_of: Some(id.to_string()),
                ..NamespaceState::default()
            },
        );
        world
    }

    #[test]
    fn a_project_named_after_another_backing_namespace_is_refused() {
        let got = messages(&create("local", "local-a-team", spec("local")), &victim());
        assert_eq!(
            got,
            [
                "project local:local-a-team may not be named \"local-a-team\": without \
              status.backingNamespace a project's backing namespace is its own name, and namespace \
              \"local-a-team\" is the backing namespace of project local:a-team, and a backing \
              namespace belongs to exactly one project (sharing it would remove local:a-team's \
              copies and hand its project-scoped secrets to local:local-a-team); choose another \
              project name"
            ]
        );
    }

    #[test]
    fn a_project_whose_id_namespaces_already_name_needs_the_right_to_update_them() {
        let mut world = World::default();
        let id = ProjectId::new("local", "payments");
        for ns in ["team-old", "team-older"] {
            world.upsert_namespace(
                ns.to_owned(),
                NamespaceState {
                    project_annotation: Some(id.to_string()),
                    ..NamespaceState::default()
                },
            );
        }
        let review = create("local", "payments", spec("local"));
        let members = leftover_members(&review, &world);
        assert_eq!(members, ["team-old", "team-older"]);
        let answers = |pairs: &[(&str, bool)]| Facts {
            may_update_namespaces: pairs.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect(),
            ..Facts::default()
        };
        let denial = |facts: &Facts| {
            namesake_members(&review, &members, "mallory", facts).map(|d| (d.reason, d.message))
        };
        // Who may update every namespace, or each of them, may create it.
        assert_eq!(denial(&answers(&[("", true)])), None);
        let each = answers(&[("", false), ("team-old", true), ("team-older", true)]);
        assert_eq!(denial(&each), None);
        // Anyone else is refused, and told which namespaces and why.
        let one = answers(&[("", false), ("team-old", true), ("team-older", false)]);
        assert_eq!(
            denial(&one),
            Some((
                "NamesakeMembers".to_owned(),
                "namespaces [\"team-old\", \"team-older\"] already name project local:payments in \
                 annotation field.cattle.io/projectId (members of a deleted project of that name), \
                 so creating it would make them its members, which user \"mallory\" may not update \
                 (as joining them would need); remove the annotation from them first, or have a \
                 user who may update them create the project"
                    .to_owned()
            ))
        );
        // Unknown (a review failed): refused, fail closed.
        let unknown = answers(&[("", false), ("team-old", true)]);
        assert_eq!(
            denial(&unknown).map(|(reason, _)| reason),
            Some("ProjectMembersUnverified".to_owned())
        );
        // Updates, and projects no namespace names, are never asked about.
        let mut update = review.clone();
        update.op = Operation::Update;
        assert!(leftover_members(&update, &world).is_empty());
        let fresh = create("local", "fresh", spec("local"));
        assert!(leftover_members(&fresh, &world).is_empty());
    }

    #[test]
    fn a_marked_namespace_counts_even_without_a_claim() {
        let mut world = World::default();
        world.upsert_namespace(
            "local-a-team".to_owned(),
            NamespaceState {
                backing_of: Some("local:a-team".to_owned()),
                ..NamespaceState::default()
            },
        );
        assert_eq!(
            validate(&create("local", "local-a-team", spec("local")), &world).len(),
            1
        );
        // The project it is marked for may have it.
        assert!(validate(&create("local", "a-team", spec("local")), &world).is_empty());
    }

    #[test]
    fn a_generated_name_that_is_another_backing_namespace_is_refused() {
        // An older version gave `local-p:vwxyz` the namespace `local-p-vwxyz`, which the injective
        // encoding now gives `local:p-vwxyz`.
        let mut world = World::default();
        project(&mut world, "local-p", "vwxyz", "local-p-vwxyz");
        let got = messages(&create("local", "p-vwxyz", spec("local")), &world);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "project local:p-vwxyz would get the generated backing namespace \"local-p-vwxyz\", \
                 but namespace \"local-p-vwxyz\" is the backing namespace of project local-p:vwxyz"
            ),
            "{got:?}"
        );
        // The other way round no longer collides at all.
        let mut world = World::default();
        project(&mut world, "local", "p-vwxyz", "local-p-vwxyz");
        assert!(validate(&create("local-p", "vwxyz", spec("local-p")), &world).is_empty());
    }

    #[test]
    fn a_status_naming_another_backing_namespace_is_refused_once_set() {
        let world = victim();
        let mut view = spec("local");
        view.backing_namespace = Some("local-a-team".to_owned());
        let update = ProjectReview {
            uid: String::new(),
            op: Operation::Update,
            id: ProjectId::new("local", "evil"),
            new: Some(view.clone()),
            old: Some(spec("local")),
        };
        let got = messages(&update, &world);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("project local:evil may not have status.backingNamespace"),
            "{got:?}"
        );
        // The owner itself, and an update that does not change the claim, pass.
        let own = ProjectReview {
            uid: String::new(),
            id: ProjectId::new("local", "a-team"),
            ..update.clone()
        };
        assert!(validate(&own, &world).is_empty());
        let unchanged = ProjectReview {
            uid: String::new(),
            old: Some(view),
            ..update
        };
        assert!(validate(&unchanged, &world).is_empty());
    }

    #[test]
    fn cluster_name_must_be_the_namespace() {
        let got = messages(&create("local", "p-x", spec("other")), &World::default());
        assert_eq!(
            got,
            [
                "project \"p-x\" in namespace \"local\" has spec.clusterName \"other\", which is not \
              its namespace; a project's ID is <namespace>:<name> (local:p-x), and its backing \
              namespace and members are matched by that ID; set spec.clusterName to \"local\", or \
              create the project in namespace \"other\""
            ]
        );
        assert!(
            validate(
                &create("local", "p-x", ProjectView::default()),
                &World::default()
            )
            .is_empty()
        );
    }

    #[test]
    fn names_that_cannot_be_namespaces_are_refused() {
        let got = messages(
            &create("local", "p.dotted", spec("local")),
            &World::default(),
        );
        assert_eq!(
            got,
            [
                "project name \"p.dotted\" cannot form a namespace name (at most 63 lowercase \
              letters, digits and '-', starting and ending with a letter or digit), and the \
              project's backing namespace is named after it; choose a name like \"p-dotted\""
            ]
        );
    }

    #[test]
    fn an_ordinary_project_passes() {
        let mut world = victim();
        world.upsert_project(
            ProjectId::new("local", "p-new"),
            ProjectState {
                uid: String::new(),
                backing_namespace: "p-new".to_owned(),
                ..ProjectState::default()
            },
        );
        assert!(validate(&create("local", "p-other", spec("local")), &world).is_empty());
    }
}
