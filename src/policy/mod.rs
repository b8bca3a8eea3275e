//! The admission rules of docs/SPEC.md §2 as pure functions of (request, world, config, facts).
//!
//! No I/O here: the webhook asks [`needs`] what it must fetch from the cluster (a SubjectAccessReview,
//! an existing secret's type), fetches it, and passes the answers in as [`Facts`] to [`validate`].
//! [`mutate`] needs nothing but the world. Because nothing here has side effects, dry-run requests
//! get exactly the decisions real ones get.

/// Moved below both the webhook and the reconciler; re-exported for the rules' `super::message`.
pub use crate::message;
mod mutate;
mod namespaces;
pub mod projects;
mod secrets;

use crate::world::World;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use serde::de::DeserializeOwned;

/// Whether denials are enforced or only announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    /// Every denial becomes a `would deny: …` warning, to roll the webhook out safely.
    Audit,
}

pub use crate::plan::OverwritePolicy;

/// The webhook's policy settings (from the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// The reconciler's settings (overwrite policy, protected namespaces): the webhook's warnings
    /// announce exactly what the reconciler will do.
    pub copies: crate::plan::Settings,
    /// S5: deny (true) or only warn about (false) changes to copies.
    pub protect_copies: bool,
    /// Usernames whose requests skip every rule: our reconciler, and beside Rancher its copier.
    pub reconciler_users: Vec<String>,
    /// S8: the most bytes a project's originals may take together in the index.
    pub max_project_original_bytes: u64,
}

/// S8's default: 16 MiB per project.
pub const DEFAULT_MAX_PROJECT_ORIGINAL_BYTES: u64 = 16 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            copies: crate::plan::Settings::default(),
            protect_copies: true,
            reconciler_users: Vec::new(),
            max_project_original_bytes: DEFAULT_MAX_PROJECT_ORIGINAL_BYTES,
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// 403 for policy, 400 for malformed input, 409 for a name that is already taken.
    pub code: u16,
    /// A machine-readable CamelCase reason.
    pub reason: String,
    /// What conflicts, why, and how to fix it.
    pub message: String,
}

impl Denial {
    pub fn forbidden(reason: &str, message: impl Into<String>) -> Self {
        Self {
            code: 403,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// What the apiserver itself would answer a moment later, so that clients which handle
    /// `AlreadyExists` (create-or-update controllers) keep working.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self {
            code: 409,
            reason: "AlreadyExists".to_owned(),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            reason: "BadRequest".to_owned(),
            message: message.into(),
        }
    }
}

/// The answer to one admission request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// `None` admits the request.
    pub denial: Option<Denial>,
    /// Single lines of at most 120 characters.
    pub warnings: Vec<String>,
    /// Only ever set by [`mutate`]: a validating response must not carry a patch.
    pub patch: Option<json_patch::Patch>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.denial.is_none()
    }

    fn denied(denial: Denial) -> Self {
        Self {
            denial: Some(denial),
            ..Self::default()
        }
    }
}

/// What a review needs from the cluster beyond the world; the webhook fetches it before [`validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// N1: SubjectAccessReviews for the requesting user (with groups and extra), verb
    /// `manage-namespaces` on each Project resource `<project>` in namespace `<cluster>`: the project
    /// joined, the project left, or both for a move.
    pub access_reviews: Vec<crate::keys::ProjectId>,
    /// N5: SubjectAccessReviews for verb `update` on the Project's `status` subresource, for a
    /// change of a namespace's backing-namespace marks: the project they hand the namespace to,
    /// and the one they take it from (both for a mark moved from one project to another).
    pub status_reviews: Vec<crate::keys::ProjectId>,
    /// S1: `(namespace, name)` of an existing secret whose type the denial message names.
    pub secret_type_of: Option<(String, String)>,
    /// P4: SubjectAccessReviews for verb `update` on each namespace named (`""`: on every
    /// namespace).
    pub namespace_update_reviews: Vec<String>,
}

/// The answers to [`Needs`]; absent or `None` when not asked or when the lookup failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Per project asked about: whether the user has `manage-namespaces` on it.
    pub may_manage_namespaces: std::collections::BTreeMap<crate::keys::ProjectId, bool>,
    /// Per project asked about: whether the user may update its status (N5).
    pub may_update_project_status: std::collections::BTreeMap<crate::keys::ProjectId, bool>,
    pub existing_secret_type: Option<String>,
    /// Per namespace asked about (`""`: every namespace): whether the user may update it (P4).
    pub may_update_namespaces: std::collections::BTreeMap<String, bool>,
}

/// Which validating rules a webhook endpoint runs. docs/SPEC.md §5 splits them over webhook entries with
/// different failure policies; each entry runs only its own, or warnings would be shown twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rules {
    #[default]
    All,
    /// S3–S6 and S8: the secret guard (failurePolicy Fail).
    SecretGuard,
    /// S1, S2, S7: advisory and best-effort (failurePolicy Ignore).
    SecretNames,
    /// N1–N3: the namespace guard (failurePolicy Fail).
    NamespaceGuard,
}

impl Rules {
    fn secret_guard(self) -> bool {
        matches!(self, Self::All | Self::SecretGuard)
    }
    fn secret_names(self) -> bool {
        matches!(self, Self::All | Self::SecretNames)
    }
    fn namespaces(self) -> bool {
        matches!(self, Self::All | Self::NamespaceGuard)
    }
}

/// The worlds one review is decided in: `here`, the index of the cluster the request is made in,
/// which every rule about the request's own namespace reads (S1, S3–S6, S8, N1–N5); and `copies`,
/// where an original's copies go, which only the consequence rules read (S2, S7). They differ for
/// an original of a project served in its own (downstream) cluster: its copies land in that
/// cluster's world, while its backing namespace, and whatever else a management project keeps
/// there, is the management cluster's. `also`: where the copies still are while that cluster takes
/// them over (the management cluster keeps a project's copies until they are in place in its own
/// cluster), whose consequences are said too.
#[derive(Clone, Copy)]
pub struct Worlds<'w> {
    pub here: &'w World,
    pub copies: &'w World,
    pub also: Option<&'w World>,
}

impl<'w> From<&'w World> for Worlds<'w> {
    fn from(world: &'w World) -> Self {
        Self {
            here: world,
            copies: world,
            also: None,
        }
    }
}

/// One admission request, decoded once for the rules of one webhook entry. The webhook asks it what
/// it [`needs`](Review::needs) from the cluster beyond the index, fetches that, and has it
/// [`decide`](Review::decide):
///
/// ```text
/// Review::new(rules, request, cfg) ──► needs(world) ──► (webhook fetches Facts) ──► decide(world, facts)
/// ```
pub struct Review<'c> {
    rules: Rules,
    cfg: &'c Config,
    subject: Parsed,
}

/// The request's object, typed once.
enum Parsed {
    /// From the reconciler's own identity: not reviewed.
    Skipped,
    Secret(Subject<Secret>),
    Namespace(Subject<Namespace>),
    /// A kind no validating rule is about.
    Other,
    /// Not a valid object of its kind: a 400 for the entries that cover that kind.
    Malformed(Kind, Denial),
}

impl<'c> Review<'c> {
    pub fn new(rules: Rules, req: &AdmissionRequest<DynamicObject>, cfg: &'c Config) -> Self {
        Self::of(
            rules,
            req,
            || (req.object.clone(), req.old_object.clone()),
            cfg,
        )
    }

    /// As [`Review::new`], but the request's `object` and `oldObject` are moved into the review
    /// instead of copied: the webhook's path, where nothing reads them afterwards (copying their
    /// metadata and fields was ~0.35 µs of the ~7 µs a review takes in process, TLS aside).
    pub fn taking(
        rules: Rules,
        req: &mut AdmissionRequest<DynamicObject>,
        cfg: &'c Config,
    ) -> Self {
        let objects = (req.object.take(), req.old_object.take());
        Self::of(rules, req, || objects, cfg)
    }

    fn of(
        rules: Rules,
        req: &AdmissionRequest<DynamicObject>,
        objects: impl FnOnce() -> (Option<DynamicObject>, Option<DynamicObject>),
        cfg: &'c Config,
    ) -> Self {
        let subject = if skips_rules(req, cfg) {
            Parsed::Skipped
        } else {
            match kind_of(req) {
                Kind::Secret => subject::<Secret>(req, objects())
                    .map_or_else(|d| Parsed::Malformed(Kind::Secret, d), Parsed::Secret),
                Kind::Namespace => subject::<Namespace>(req, objects())
                    .map_or_else(|d| Parsed::Malformed(Kind::Namespace, d), Parsed::Namespace),
                Kind::Other => Parsed::Other,
            }
        };
        Self {
            rules,
            cfg,
            subject,
        }
    }

    /// What [`Review::decide`] needs fetched from the cluster (access reviews, a secret's type).
    pub fn needs(&self, world: &World) -> Needs {
        match &self.subject {
            Parsed::Secret(s) if self.rules.secret_names() => secrets::needs(s, world),
            Parsed::Namespace(s) if self.rules.namespaces() => {
                namespaces::needs(s, world, self.cfg)
            }
            _ => Needs::default(),
        }
    }

    /// The entry's verdict: denial, warnings (never a patch). In audit mode denials become warnings.
    pub fn decide<'w>(&self, worlds: impl Into<Worlds<'w>>, facts: &Facts) -> Decision {
        let worlds = worlds.into();
        let (rules, cfg, world) = (self.rules, self.cfg, worlds.here);
        let mut findings = Findings::default();
        match &self.subject {
            Parsed::Skipped | Parsed::Other => return Decision::default(),
            Parsed::Secret(s) => {
                if rules.secret_names() {
                    secrets::validate_names(s, worlds, cfg, facts, &mut findings);
                }
                if rules.secret_guard() {
                    secrets::validate_guard(s, world, cfg, &mut findings);
                } else if rules.secret_names() {
                    // The guard answers from its own entry; run it here only to know whether the
                    // request will be refused, so that no consequence is announced for it.
                    let mut guard = Findings::default();
                    secrets::validate_guard(s, world, cfg, &mut guard);
                    findings.refused_elsewhere = !guard.denials.is_empty();
                }
            }
            Parsed::Namespace(s) if rules.namespaces() => {
                namespaces::validate(s, world, cfg, facts, &mut findings);
            }
            Parsed::Namespace(_) => {}
            Parsed::Malformed(kind, denial) => {
                let covered = match kind {
                    Kind::Secret => rules.secret_guard() || rules.secret_names(),
                    Kind::Namespace => rules.namespaces(),
                    Kind::Other => false,
                };
                if covered {
                    findings.deny(denial.clone());
                }
            }
        }
        findings.decide(cfg.mode)
    }
}

/// What [`validate`] needs fetched for this request.
pub fn needs(req: &AdmissionRequest<DynamicObject>, world: &World, cfg: &Config) -> Needs {
    Review::new(Rules::All, req, cfg).needs(world)
}

/// Every validating rule, S1–S8 and N1–N5, decided in one go (the unit tests' entry point; the
/// webhook runs one entry's rules through [`Review`]).
pub fn validate(
    req: &AdmissionRequest<DynamicObject>,
    world: &World,
    cfg: &Config,
    facts: &Facts,
) -> Decision {
    Review::new(Rules::All, req, cfg).decide(world, facts)
}

/// The validating rules of one webhook entry, decided in one go.
pub fn validate_only(
    rules: Rules,
    req: &AdmissionRequest<DynamicObject>,
    world: &World,
    cfg: &Config,
    facts: &Facts,
) -> Decision {
    Review::new(rules, req, cfg).decide(world, facts)
}

/// The mutations M1 (namespace label) and M2 (original's labels): a JSON Patch or nothing. Never
/// on DELETE, never touching secret data, and no patch when nothing needs to change.
pub fn mutate(req: &AdmissionRequest<DynamicObject>, world: &World) -> Decision {
    mutation(req, || (req.object.clone(), req.old_object.clone()), world)
}

/// As [`mutate`], the request's objects moved instead of copied (see [`Review::taking`]).
pub fn mutate_taking(req: &mut AdmissionRequest<DynamicObject>, world: &World) -> Decision {
    let objects = (req.object.take(), req.old_object.take());
    mutation(req, || objects, world)
}

fn mutation(
    req: &AdmissionRequest<DynamicObject>,
    objects: impl FnOnce() -> (Option<DynamicObject>, Option<DynamicObject>),
    world: &World,
) -> Decision {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Decision::default();
    }
    let mutation = match kind_of(req) {
        Kind::Secret => {
            subject::<Secret>(req, objects()).map(|s| (mutate::secret(&s, world), Vec::new()))
        }
        Kind::Namespace => subject::<Namespace>(req, objects()).map(|s| mutate::namespace(&s)),
        Kind::Other => Ok((Vec::new(), Vec::new())),
    };
    match mutation {
        Ok((ops, warnings)) => Decision {
            patch: (!ops.is_empty()).then_some(json_patch::Patch(ops)),
            warnings: warnings.iter().map(|w| message::warning(w)).collect(),
            ..Decision::default()
        },
        Err(denial) => Decision::denied(denial),
    }
}

/// Requests from the reconciler's own identity are not reviewed. Subresource writes are: a
/// namespace's `status` update can change its annotations, so skipping it would bypass N1.
fn skips_rules(req: &AdmissionRequest<DynamicObject>, cfg: &Config) -> bool {
    req.user_info
        .username
        .as_deref()
        .is_some_and(|user| cfg.reconciler_users.iter().any(|r| r == user))
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Secret,
    Namespace,
    Other,
}

fn kind_of(req: &AdmissionRequest<DynamicObject>) -> Kind {
    let core = req.kind.group.is_empty();
    match req.kind.kind.as_str() {
        k if core && k == Secret::KIND => Kind::Secret,
        k if core && k == Namespace::KIND => Kind::Namespace,
        _ => Kind::Other,
    }
}

/// An admission request with its objects converted to a typed resource.
#[derive(Debug)]
pub(crate) struct Subject<T> {
    pub op: Operation,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    /// `None` for a CREATE with `generateName`.
    pub name: Option<String>,
    /// The requesting user's name, for messages.
    pub user: String,
    pub new: Option<T>,
    pub old: Option<T>,
    /// What the data of `new` and of `old` would take in the index (`scoped::held_bytes`: keys,
    /// values decoded, and a cost per entry): the policy never holds the data itself, only its
    /// size (S8).
    pub new_data_bytes: u64,
    pub old_data_bytes: u64,
}

impl<T> Subject<T> {
    /// The name for messages: `(generated)` when the apiserver has not picked it yet.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or("(generated)")
    }
}

/// Fields of an object that hold a secret's payload. No rule reads them, so they are left out before
/// conversion: the policy never holds secret data, and nothing is base64-decoded on the hot path.
const PAYLOAD_FIELDS: [&str; 2] = ["data", "stringData"];

/// Where the lean decoder (`webhook/lean.rs`) leaves the size of the payload it skipped: a key no
/// Kubernetes field can have, and no client can set (the decoder keeps only the fields it knows).
pub const PAYLOAD_BYTES_FIELD: &str = "scoped-secrets.io/payloadBytes";

/// The bytes an object's data would take in the index (see [`crate::scoped::held_bytes`]):
/// counted from its `data` (decoded) and `stringData` when it was decoded whole, else as the lean
/// decoder counted them.
fn payload_bytes(fields: &serde_json::Value) -> u64 {
    let maps: Vec<_> = PAYLOAD_FIELDS
        .into_iter()
        .filter_map(|key| Some((key, fields.get(key)?.as_object()?)))
        .collect();
    if maps.is_empty() {
        return fields
            .get(PAYLOAD_BYTES_FIELD)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
    }
    maps.into_iter()
        .flat_map(|(key, map)| map.iter().map(move |entry| (key, entry)))
        .map(|(field, (key, value))| {
            let value = value.as_str().unwrap_or_default();
            let bytes = if field == "data" {
                crate::scoped::base64_decoded_len(value)
            } else {
                value.len() as u64
            };
            crate::scoped::data_entry_bytes(key.len(), bytes)
        })
        .fold(0, u64::saturating_add)
}

/// The object's fields (metadata aside, which DynamicObject keeps apart) without its payload.
fn without_payload(fields: serde_json::Value) -> serde_json::Value {
    let mut kept = match fields {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    for key in PAYLOAD_FIELDS.into_iter().chain([PAYLOAD_BYTES_FIELD]) {
        kept.remove(key);
    }
    serde_json::Value::Object(kept)
}

/// The first payload field that is not a map of strings (checked without decoding it).
fn malformed_payload(fields: &serde_json::Value) -> Option<&'static str> {
    PAYLOAD_FIELDS.into_iter().find(|key| {
        fields.get(key).is_some_and(|value| {
            !value.is_null()
                && !value
                    .as_object()
                    .is_some_and(|map| map.values().all(serde_json::Value::is_string))
        })
    })
}

fn subject<T>(
    req: &AdmissionRequest<DynamicObject>,
    (object, old_object): (Option<DynamicObject>, Option<DynamicObject>),
) -> Result<Subject<T>, Denial>
where
    T: DeserializeOwned + Metadata<Ty = ObjectMeta>,
{
    let convert = |obj: Option<DynamicObject>, field: &str| -> Result<Option<(T, u64)>, Denial> {
        let Some(obj) = obj else { return Ok(None) };
        let malformed = |e: &dyn std::fmt::Display| {
            Denial::bad_request(format!("{field} is not a valid {}: {e}", T::KIND))
        };
        if let Some(bad) = malformed_payload(&obj.data) {
            return Err(malformed(&format_args!("{bad} is not a map of strings")));
        }
        let bytes = payload_bytes(&obj.data);
        let mut typed = T::deserialize(without_payload(obj.data)).map_err(|e| malformed(&e))?;
        *typed.metadata_mut() = obj.metadata;
        Ok(Some((
            with_namespace(typed, req.namespace.as_deref()),
            bytes,
        )))
    };
    let (new, new_data_bytes) = convert(object, "object")?.unzip();
    let (old, old_data_bytes) = convert(old_object, "oldObject")?.unzip();
    let missing = match req.operation {
        Operation::Create => new.is_none().then_some("object"),
        Operation::Update => (new.is_none() || old.is_none()).then_some("object or oldObject"),
        Operation::Delete => old.is_none().then_some("oldObject"),
        Operation::Connect => None,
    };
    if let Some(field) = missing {
        return Err(Denial::bad_request(format!(
            "{} request for a {} has no {field}",
            operation_name(&req.operation),
            T::KIND
        )));
    }
    let meta = new.as_ref().or(old.as_ref()).map(Metadata::metadata);
    let name = Some(req.name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| meta.and_then(|m| m.name.clone()));
    let namespace = req
        .namespace
        .clone()
        .or_else(|| meta.and_then(|m| m.namespace.clone()))
        .unwrap_or_default();
    Ok(Subject {
        op: req.operation.clone(),
        namespace,
        name,
        user: req.user_info.username.clone().unwrap_or_default(),
        new,
        old,
        new_data_bytes: new_data_bytes.unwrap_or(0),
        old_data_bytes: old_data_bytes.unwrap_or(0),
    })
}

/// The operation as the apiserver spells it (also the metrics' `operation` label).
pub fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// The apiserver fills an object's namespace from the request path; make sure ours has it too.
fn with_namespace<T: Metadata<Ty = ObjectMeta>>(mut obj: T, namespace: Option<&str>) -> T {
    let meta = obj.metadata_mut();
    if meta.namespace.is_none() {
        meta.namespace = namespace.filter(|n| !n.is_empty()).map(str::to_owned);
    }
    obj
}

/// What the validating rules found, in rule order.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    denials: Vec<Denial>,
    warnings: Vec<String>,
    /// What admitting the request will do (overwrites, removals): said only if it is admitted.
    consequences: Vec<String>,
    /// Another entry of the webhook refuses this request (its own answer carries the denial).
    refused_elsewhere: bool,
}

impl Findings {
    pub fn deny(&mut self, mut denial: Denial) {
        // Names and annotation values come from users; keep the message one line.
        denial.message = message::one_line(&denial.message);
        self.denials.push(denial);
    }

    pub fn warn(&mut self, warning: String) {
        self.warnings.push(message::warning(&warning));
    }

    /// A warning about what admitting the request will do; dropped when the request is refused.
    pub fn announce(&mut self, consequence: String) {
        self.consequences.push(message::warning(&consequence));
    }

    /// Enforce: the first denial wins (plain warnings still travel with it, consequences do not).
    /// Audit: every denial becomes `would deny:` warnings and the request is admitted.
    fn decide(mut self, mode: Mode) -> Decision {
        match mode {
            Mode::Enforce => {
                let denial = self.denials.into_iter().next();
                if denial.is_none() && !self.refused_elsewhere {
                    self.warnings.append(&mut self.consequences);
                }
                Decision {
                    denial,
                    warnings: self.warnings,
                    patch: None,
                }
            }
            Mode::Audit => {
                self.warnings.append(&mut self.consequences);
                for denial in &self.denials {
                    self.warnings.extend(message::would_deny(&denial.message));
                }
                Decision {
                    denial: None,
                    warnings: self.warnings,
                    patch: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    use crate::keys;
    use crate::world::fixtures::{add_secret, namespace_in, secret};
    use serde_json::{Value, json};

    fn decide(rules: Rules, req: Value) -> Decision {
        validate_only(
            rules,
            &admission(req),
            &world(),
            &config(),
            &Facts::default(),
        )
    }

    #[test]
    fn each_webhook_entry_runs_only_its_rules() {
        // Deleting a copy (S5, guard) and creating over a taken name (S1, names).
        let delete_copy = || request("DELETE", None, Some(copy_json("team-a", "db")));
        let taken = || {
            request(
                "CREATE",
                Some(secret_json("other", "web", Value::Null, Value::Null)),
                None,
            )
        };
        assert!(!decide(Rules::SecretGuard, delete_copy()).allowed());
        assert!(decide(Rules::SecretNames, delete_copy()).allowed());
        assert!(!decide(Rules::SecretNames, taken()).allowed());
        assert!(decide(Rules::SecretGuard, taken()).allowed());
        assert!(decide(Rules::NamespaceGuard, taken()).allowed());
        // S7 is a names rule: its warning is not repeated by the guard.
        let delete_original = || {
            request(
                "DELETE",
                None,
                Some(original_json("db", "p-vwxyz", Value::Null)),
            )
        };
        assert_eq!(
            decide(Rules::SecretNames, delete_original()).warnings.len(),
            1
        );
        assert!(
            decide(Rules::SecretGuard, delete_original())
                .warnings
                .is_empty()
        );
        let join = request(
            "CREATE",
            Some(namespace_in_json("fresh", "local:p-vwxyz")),
            None,
        );
        assert!(decide(Rules::SecretGuard, join.clone()).allowed());
        assert!(!decide(Rules::NamespaceGuard, join.clone()).allowed());
        assert_eq!(
            Review::new(Rules::SecretGuard, &admission(join), &config()).needs(&world()),
            Needs::default()
        );
    }

    #[test]
    fn overwrite_warnings_cut_long_namespace_lists() {
        let mut world = world();
        let p = project_id();
        for i in 0..37 {
            let ns = format!("team-with-a-rather-long-name-{i:02}");
            namespace_in(&mut world, &ns, &p);
            add_secret(&mut world, secret(&ns, "api", &[], &[]));
        }
        let req = request(
            "CREATE",
            Some(original_json("api", "p-vwxyz", Value::Null)),
            None,
        );
        let decision = validate(&admission(req), &world, &config(), &Facts::default());
        let [warning] = decision.warnings.as_slice() else {
            panic!("one warning expected: {:?}", decision.warnings);
        };
        assert!(
            warning.chars().count() <= message::WARNING_LIMIT,
            "{warning}"
        );
        assert!(warning.contains("in 38 namespaces: "), "{warning}");
        assert!(warning.ends_with(" more"), "{warning}");
    }

    #[test]
    fn audit_mode_keeps_what_to_do_within_the_limit() {
        let audit = Config {
            mode: Mode::Audit,
            ..config()
        };
        let long_name = "n".repeat(200);
        let req = request(
            "CREATE",
            Some(secret_json(
                "other",
                &long_name,
                json!({keys::PROJECT_SCOPED_LABEL: "p-vwxyz"}),
                Value::Null,
            )),
            None,
        );
        let decision = validate(&admission(req), &world(), &audit, &Facts::default());
        assert!(decision.allowed());
        let [what, fix] = decision.warnings.as_slice() else {
            panic!("two warnings expected: {:?}", decision.warnings);
        };
        assert!(what.starts_with("would deny: label "), "{what}");
        assert_eq!(
            fix,
            "would deny: …; create the secret in the project's backing namespace and the \
             reconciler will copy it here"
        );
        assert!(
            decision
                .warnings
                .iter()
                .all(|w| w.chars().count() <= message::WARNING_LIMIT)
        );
    }

    #[test]
    fn other_kinds_pass_untouched() {
        let mut req = request("CREATE", Some(copy_json("team-a", "x")), None);
        req["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
        assert_eq!(decide(Rules::All, req.clone()), Decision::default());
        assert_eq!(mutate(&admission(req), &world()), Decision::default());
    }
}
