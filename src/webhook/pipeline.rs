//! The whole pipeline of one review, once its body has arrived: decode it (only what the rules
//! read), check it is of the kind its entry covers, ask the pure policy (fetching the facts it
//! needs), record the outcome, and answer. See the diagram in [`crate::webhook`].

use super::handler::{Action, AppState, Endpoint};
use super::limits::ORDINARY_BODY_BYTES;
use super::log_budget::LogBudget;
use super::review::ReviewError;
use super::snapshot::Released;
use super::{facts, review, runtime};
use crate::policy::{self, Decision, Facts, Needs, Review, Rules, Worlds};
use crate::world::World;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;
use std::sync::LazyLock;
use tracing::Span;

type Request = AdmissionRequest<DynamicObject>;

/// Anyone who reaches the port can send undecodable or denied reviews as fast as it likes: their
/// log lines are kept to a budget (each is counted in the metrics all the same).
static UNDECODABLE_LINES: LazyLock<LogBudget> = LazyLock::new(LogBudget::new);
static DENIAL_LINES: LazyLock<LogBudget> = LazyLock::new(LogBudget::new);

/// The body's AdmissionReview in, the AdmissionReview answering it out.
///
/// What this future holds across its awaits is kept to pointers (the request boxed, the rare
/// slow paths boxed futures): a future is copied whole each time it is awaited or boxed, and
/// kilobytes of inline state made those copies 7% of a review's CPU.
pub async fn review_pipeline(
    state: &AppState,
    body: Vec<u8>,
    path: &'static str,
    endpoint: Endpoint,
) -> Response {
    let decoded = if body.len() <= ORDINARY_BODY_BYTES {
        decode_consuming(body)
    } else {
        Box::pin(decode_off_the_webhook_threads(body)).await
    };
    let mut request = match decoded.and_then(|request| covered(request, path, endpoint)) {
        Ok(request) => request,
        Err(err) => return undecodable(state, path, endpoint, &err),
    };
    record_request(&request);
    let decision = match endpoint.action {
        Action::Mutate => {
            let world = world_here(state, &request);
            policy::mutate_taking(&mut request, &world)
        }
        Action::Validate(rules) => match validate(state, rules, &mut request) {
            Ok(decision) => decision,
            Err(awaiting) => Box::pin(awaiting.decide(state.client.as_ref(), &request)).await,
        },
        Action::ProjectGuard => Box::pin(project_guard(state, &request)).await,
    };
    let operation = policy::operation_name(&request.operation);
    state.metrics.review(path, operation, result_of(&decision));
    if let Some(denial) = &decision.denial
        && let Some(left_out) = DENIAL_LINES.line()
    {
        log_denial(path, &request, operation, denial, left_out);
    }
    axum::Json(review::respond(&request, decision)).into_response()
}

/// The answer to a body that is not a review this endpoint can decide: an AdmissionReview saying
/// why when its uid could be read (admitting it with a warning on an entry that fails open, unless
/// the entry was sent a kind it does not cover: a configuration to fix), else a 400.
fn undecodable(
    state: &AppState,
    path: &'static str,
    endpoint: Endpoint,
    err: &ReviewError,
) -> Response {
    state.metrics.review(path, "", "error");
    if let Some(left_out) = UNDECODABLE_LINES.line() {
        tracing::warn!(error = %err, left_out, "undecodable admission review");
    }
    let admitted = endpoint.fails_open() && !matches!(err, ReviewError::UncoveredKind { .. });
    let answer = if admitted {
        review::unreviewed_review(err)
    } else {
        review::error_review(err)
    };
    match answer {
        Some(answer) => axum::Json(answer).into_response(),
        None => (StatusCode::BAD_REQUEST, axum::Json(review::error_body(err))).into_response(),
    }
}

/// Decodes the body and frees it, so that it is not held across the look-ups.
fn decode_consuming(body: Vec<u8>) -> Result<Box<Request>, ReviewError> {
    review::parse_request(&body).map(Box::new)
}

/// Decodes a body larger than any ordinary review on a blocking thread of low priority, so that the
/// milliseconds it takes do not hold up the small reviews sharing the webhook's threads or cores.
async fn decode_off_the_webhook_threads(body: Vec<u8>) -> Result<Box<Request>, ReviewError> {
    tokio::task::spawn_blocking(move || {
        runtime::yield_to_small_reviews();
        decode_consuming(body)
    })
    .await
    .unwrap_or_else(|e| {
        Err(ReviewError::Malformed {
            uid: None,
            detail: format!("decoding was interrupted: {e}"),
        })
    })
}

/// The request, if it is of the kind its endpoint's webhook entry sends: another kind means the
/// configuration routes it wrongly, and admitting it unreviewed would hide that.
fn covered(
    request: Box<Request>,
    path: &'static str,
    endpoint: Endpoint,
) -> Result<Box<Request>, ReviewError> {
    let kind = &request.kind;
    let (group, covered_kind) = endpoint.covers;
    if kind.group == group && kind.kind == covered_kind {
        return Ok(request);
    }
    let group_name = |g: &str| if g.is_empty() { "core" } else { g }.to_owned();
    Err(ReviewError::UncoveredKind {
        uid: request.uid.clone(),
        kind: review::quoted(&format!(
            "{} ({}/{})",
            kind.kind,
            group_name(&kind.group),
            kind.version
        )),
        endpoint: path,
        covers: format!("{covered_kind}s ({})", group_name(group)),
    })
}

/// One validating entry's rules, decided in one index snapshot; a review that needs facts from the
/// apiserver (SubjectAccessReviews, a secret's type) comes back to be finished with them. The
/// request's objects move into the review: only the request's other fields are read afterwards.
fn validate<'a>(
    state: &'a AppState,
    rules: Rules,
    request: &mut Request,
) -> Result<Decision, Box<AwaitingFacts<'a>>> {
    let snapshots = snapshots_for(state, request);
    let review = Review::taking(rules, request, &state.config);
    let needs = review.needs(&snapshots.here);
    if needs == Needs::default() {
        return Ok(review.decide(snapshots.worlds(), &Facts::default()));
    }
    Err(Box::new(AwaitingFacts {
        snapshots,
        review,
        needs,
    }))
}

/// A review whose rules need facts from the apiserver, with the index snapshots it was begun in
/// (a snapshot holds up nobody).
struct AwaitingFacts<'a> {
    snapshots: Snapshots,
    review: Review<'a>,
    needs: Needs,
}

impl AwaitingFacts<'_> {
    async fn decide(self: Box<Self>, client: Option<&kube::Client>, request: &Request) -> Decision {
        let facts = facts::fetch(facts::lookup_deadline(), client, request, self.needs).await;
        self.review.decide(self.snapshots.worlds(), &facts)
    }
}

/// P1–P4 in one index snapshot, with the SubjectAccessReviews P4 asks for (rarely any: only for
/// a Project created under a name namespaces already carry), in rounds that share one deadline.
async fn project_guard(state: &AppState, request: &Request) -> Decision {
    let world = Released::new(state.index.read());
    let mut facts = Facts::default();
    let deadline = facts::lookup_deadline();
    loop {
        let needs = policy::projects::needs(request, &world, &state.config, &facts);
        if needs == Needs::default() {
            break;
        }
        let more = facts::fetch(deadline, state.client.as_ref(), request, needs).await;
        let asked = facts.may_update_namespaces.len();
        facts
            .may_update_namespaces
            .extend(more.may_update_namespaces);
        // A review that could not be made leaves its answer unknown: ask no more.
        if facts.may_update_namespaces.len() == asked {
            break;
        }
    }
    policy::projects::review(request, &world, &state.config, &facts)
}

/// The index snapshots a review is decided in ([`Worlds`]): the index's, and for a secret in the
/// backing namespace of a project served in its own (downstream) cluster, that cluster's world
/// while it is listed, so that what the original's copies would do there is said
/// (`cluster/namespace`). Only the consequences are read there: the composed world knows no other
/// project of the management cluster, and the backing namespace may also be a member of one,
/// whose reserved names (S1) and copies (S5) still hold.
struct Snapshots {
    here: Released<World>,
    copies: Option<Released<World>>,
    /// Whether the management cluster still keeps the project's copies (not yet in place in its
    /// own cluster): what they do here is said too.
    also_here: bool,
}

impl Snapshots {
    fn worlds(&self) -> Worlds<'_> {
        match &self.copies {
            Some(copies) => Worlds {
                here: &self.here,
                copies,
                also: self.also_here.then_some(&*self.here),
            },
            None => Worlds::from(&*self.here),
        }
    }
}

fn snapshots_for(state: &AppState, request: &Request) -> Snapshots {
    let here = world_here(state, request);
    let (mut copies, mut also_here) = (None, false);
    if let (Some(placement), Some(namespace)) = (&state.placement, request.namespace.as_deref())
        && request.kind.kind == "Secret"
        && let Some(project) = here.backing_project(namespace)
        && let Some(downstream) = placement.world(&project.cluster)
    {
        copies = Some(Released::new(downstream.read()));
        also_here = !placement.is_in_place(project);
    }
    Snapshots {
        here,
        copies,
        also_here,
    }
}

/// The index a request about its own namespace is decided in: the webhook's. Downstream, though,
/// a namespace named like a management backing namespace (which the composed world takes from
/// there, and the product never writes into) is this cluster's namespace of that name: a secret in
/// it, or the namespace itself, is decided (and mutated) in this cluster's own world, never telling
/// the originals' names nor letting their label in. Nothing is copied there, so nothing is
/// reserved or announced; a project it joins is checked for the user's right (N1) but not for
/// existence (N2: this cluster has no Projects).
fn world_here(state: &AppState, request: &Request) -> Released<World> {
    let index = Released::new(state.index.read());
    let Some(own) = &state.own_cluster else {
        return index;
    };
    let namespace = match request.kind.kind.as_str() {
        "Secret" => request.namespace.as_deref(),
        "Namespace" => Some(request.name.as_str()),
        _ => None,
    };
    match namespace {
        Some(namespace) if index.lends(namespace) => Released::new(own.read()),
        _ => index,
    }
}

fn result_of(decision: &Decision) -> &'static str {
    match (&decision.denial, decision.warnings.is_empty()) {
        (Some(_), _) => "denied",
        (None, false) => "warned",
        (None, true) => "allowed",
    }
}

/// One line per denial (within [`DENIAL_LINES`]; `left_out`: the lines left out before it). What
/// the request names is cut to [`review::quoted`]'s length: anyone who can reach the port can send
/// a review naming a 64 KiB secret.
fn log_denial(
    path: &str,
    request: &Request,
    operation: &str,
    denial: &policy::Denial,
    left_out: u64,
) {
    tracing::info!(
        webhook = path,
        uid = %review::quoted(&request.uid),
        kind = %request.kind.kind,
        namespace = %review::quoted(request.namespace.as_deref().unwrap_or_default()),
        name = %review::quoted(&request.name),
        operation,
        dry_run = request.dry_run,
        code = denial.code,
        reason = %denial.reason,
        left_out,
        "denied"
    );
}

/// The request's names on the review's span (debug level: nothing is spent while it is off), cut
/// as in [`log_denial`].
fn record_request(request: &Request) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("uid", review::quoted(&request.uid));
    span.record("kind", request.kind.kind.as_str());
    span.record(
        "namespace",
        review::quoted(request.namespace.as_deref().unwrap_or_default()),
    );
    span.record("name", review::quoted(&request.name));
    span.record("operation", policy::operation_name(&request.operation));
    span.record("dry_run", request.dry_run);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;
    use crate::metrics::WebhookMetrics;
    use crate::policy::Config;
    use crate::webhook::handler::{Endpoint, MAX_BODY_BYTES};
    use crate::webhook::limits::ReviewLimits;
    use serde_json::Value;
    use std::sync::Arc;

    /// A webhook's state with an empty index and no client.
    fn state() -> AppState {
        AppState {
            index: Arc::new(Index::default()),
            config: Arc::new(Config::default()),
            metrics: WebhookMetrics::register(&mut Default::default()),
            client: None,
            limits: Arc::new(ReviewLimits::new(8, MAX_BODY_BYTES)),
            placement: None,
            own_cluster: None,
        }
    }

    /// The answer of `state`'s webhook at `path` to `request` (policy fixtures' JSON).
    async fn answer(
        state: &AppState,
        path: &'static str,
        action: Action,
        request: serde_json::Value,
    ) -> serde_json::Value {
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        });
        let endpoint = Endpoint {
            action,
            covers: ("", "Secret"),
        };
        let body = serde_json::to_vec(&body).expect("a review");
        let response = review_pipeline(state, body, path, endpoint).await;
        let bytes = axum::body::to_bytes(response.into_body(), MAX_BODY_BYTES)
            .await
            .expect("an answer");
        let review: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        review["response"].clone()
    }

    /// The management cluster's webhook with the reconciler in the same process: `management`
    /// its index, `composed` the listed world of cluster `c-1` (and the seat of its worker).
    fn management_webhook(
        management: World,
        composed: World,
    ) -> (AppState, crate::clusters::placement::Seat) {
        let placement = crate::clusters::placement::Placement::new();
        let seat = placement.register("c-1");
        placement.set_world("c-1", seat, Some(Arc::new(Index::new(composed))));
        let state = AppState {
            index: Arc::new(Index::new(management)),
            placement: Some(placement),
            ..state()
        };
        (state, seat)
    }

    /// A secret in the downstream project's backing namespace carrying the project-scoped label.
    fn labelled(name: &str, value: &str) -> Value {
        crate::policy::testing::secret_json(
            crate::policy::testing::DOWNSTREAM_BACKING,
            name,
            serde_json::json!({crate::keys::PROJECT_SCOPED_LABEL: value}),
            Value::Null,
        )
    }

    fn guard() -> Action {
        Action::Validate(Rules::SecretGuard)
    }

    fn names() -> Action {
        Action::Validate(Rules::SecretNames)
    }

    #[tokio::test]
    async fn the_management_webhook_reads_only_consequences_in_a_downstream_clusters_world() {
        use crate::policy::testing::*;
        let ServedDownstream {
            management,
            composed,
            ..
        } = served_downstream();
        let (state, _) = management_webhook(management, composed);
        // The management project's copy in the downstream project's backing namespace.
        let delete = request("DELETE", None, Some(copy_json(DOWNSTREAM_BACKING, "db")));
        let refused = answer(&state, crate::endpoints::SECRET_GUARD, guard(), delete).await;
        assert_eq!(refused["allowed"], false, "{refused}");
        assert_eq!(refused["status"]["reason"], "CopyIsReadOnly", "{refused}");
        // What the downstream project's original overwrites, said from its cluster.
        let original = labelled("api", "p-down");
        let create = request("CREATE", Some(original), None);
        let warned = answer(&state, crate::endpoints::SECRET_NAMES, names(), create).await;
        assert_eq!(warned["allowed"], true, "{warned}");
        assert!(
            warned["warnings"]
                .to_string()
                .contains("in 1 namespace: c-1/team-d"),
            "{warned}"
        );
    }

    /// While its own cluster takes a project's copies over, the management cluster still keeps
    /// those it has: what an original does to them is said too, until they are in place there.
    #[tokio::test]
    async fn the_management_webhook_says_what_an_original_does_in_both_clusters_while_moving() {
        use crate::policy::testing::*;
        use crate::world::fixtures::{add_secret, namespace_in, secret};
        let ServedDownstream {
            mut management,
            composed,
            ..
        } = served_downstream();
        // As the index has it: every project served here as far as it knows, with a namespace
        // of the moving project here, holding a plain `api`.
        management.serve_elsewhere(Arc::default());
        let moving = crate::keys::ProjectId::new("c-1", "p-down");
        namespace_in(&mut management, "here-d", &moving);
        add_secret(&mut management, secret("here-d", "api", &[], &[]));
        let (state, seat) = management_webhook(management, composed);
        let placement = state.placement.clone().expect("a placement");
        let original = labelled("api", "p-down");
        let create = || request("CREATE", Some(original.clone()), None);
        let warnings = |answer: Value| answer["warnings"].to_string();
        let moving_over =
            warnings(answer(&state, crate::endpoints::SECRET_NAMES, names(), create()).await);
        assert!(
            moving_over.contains("in 1 namespace: c-1/team-d"),
            "{moving_over}"
        );
        assert!(
            moving_over.contains("in 1 namespace: here-d"),
            "{moving_over}"
        );
        let done = crate::plan::Progress {
            pending: 0,
            conflicts: 0,
        };
        placement.report("c-1", seat, [(moving, done)].into());
        let moved =
            warnings(answer(&state, crate::endpoints::SECRET_NAMES, names(), create()).await);
        assert!(moved.contains("in 1 namespace: c-1/team-d"), "{moved}");
        assert!(!moved.contains("here-d"), "{moved}");
    }

    #[tokio::test]
    async fn downstream_a_namespace_named_like_a_backing_namespace_is_the_clusters_own() {
        use crate::policy::testing::*;
        let ServedDownstream { own, composed, .. } = served_downstream();
        let state = AppState {
            index: Arc::new(Index::new(composed)),
            own_cluster: Some(Arc::new(Index::new(own))),
            ..state()
        };
        // The management cluster's namespace holds `db`: this cluster's holds nothing.
        let plain = secret_json(DOWNSTREAM_BACKING, "db", Value::Null, Value::Null);
        let create = request("CREATE", Some(plain), None);
        let free = answer(&state, crate::endpoints::SECRET_NAMES, names(), create).await;
        assert_eq!(free["allowed"], true, "{free}");
        assert!(free["warnings"].is_null(), "{free}");
        // Not a backing namespace here: the label is neither filled in nor let in.
        let labelled = labelled("planted", "");
        let create = request("CREATE", Some(labelled), None);
        let mutated = answer(
            &state,
            crate::endpoints::MUTATE_SECRET,
            Action::Mutate,
            create.clone(),
        )
        .await;
        assert!(mutated["patch"].is_null(), "{mutated}");
        let refused = answer(&state, crate::endpoints::SECRET_GUARD, guard(), create).await;
        assert_eq!(
            refused["status"]["reason"], "LabelOutsideBackingNamespace",
            "{refused}"
        );
    }

    /// The namespace itself too: joining it to a project announces nothing from the management
    /// cluster's namespace of that name (nothing is copied into it here).
    #[test]
    fn downstream_a_namespace_named_like_a_backing_namespace_is_reviewed_as_the_clusters_own() {
        use crate::policy::testing::*;
        let ServedDownstream { own, composed, .. } = served_downstream();
        let state = AppState {
            index: Arc::new(Index::new(composed)),
            own_cluster: Some(Arc::new(Index::new(own))),
            ..state()
        };
        let world_of = |request: Value| world_here(&state, &admission(request));
        let join = |name: &str| {
            request(
                "UPDATE",
                Some(namespace_in_json(name, "c-1:p-down")),
                Some(namespace_json(name, Value::Null, Value::Null)),
            )
        };
        assert!(
            world_of(join(DOWNSTREAM_BACKING))
                .secret_meta(DOWNSTREAM_BACKING, "db")
                .is_none()
        );
        assert!(
            world_of(join("team-d")).lends(DOWNSTREAM_BACKING),
            "the composed world"
        );
        let in_team_d = secret_json("team-d", "db", Value::Null, Value::Null);
        assert!(world_of(request("CREATE", Some(in_team_d), None)).lends(DOWNSTREAM_BACKING));
    }

    #[test]
    fn a_reviews_future_holds_only_pointers_across_its_awaits() {
        // Each await copies a future whole; this one held the decoded request, the typed review
        // and the look-ups inline (7,456 bytes) until they were boxed.
        let state = state();
        let endpoint = Endpoint {
            action: Action::Validate(Rules::SecretNames),
            covers: ("", "Secret"),
        };
        let future = review_pipeline(&state, Vec::new(), crate::endpoints::SECRET_NAMES, endpoint);
        let size = std::mem::size_of_val(&future);
        assert!(size <= 1024, "review_pipeline's future is {size} bytes");
    }

    #[test]
    fn undecodable_reviews_sent_back_to_back_log_a_few_lines_a_second() {
        let state = state();
        let endpoint = Endpoint {
            action: Action::Validate(Rules::SecretGuard),
            covers: ("", "Secret"),
        };
        let err = ReviewError::Malformed {
            uid: None,
            detail: "not a review".to_owned(),
        };
        let started = std::time::Instant::now();
        let logged = crate::telemetry::testing::logged(None, || {
            for _ in 0..500 {
                undecodable(&state, crate::endpoints::SECRET_GUARD, endpoint, &err);
            }
        });
        let seconds = started.elapsed().as_secs();
        let lines = logged.matches("undecodable admission review").count() as u64;
        let budget = u64::from(crate::webhook::log_budget::LINES_PER_SECOND) * (seconds + 2);
        assert!(lines <= budget, "{lines} lines in {seconds} s");
    }

    #[test]
    fn a_denial_logs_what_the_review_names_cut_short() {
        let long = "n".repeat(64 * 1024);
        let mut request = crate::policy::testing::admission(crate::policy::testing::request(
            "CREATE",
            Some(serde_json::json!({"metadata": {"name": "x"}})),
            None,
        ));
        request.name = long.clone();
        request.uid = long.clone();
        request.namespace = Some(long);
        let denial = policy::Denial::forbidden("Test", "denied for the test");
        let logged = crate::telemetry::testing::logged(None, || {
            log_denial("/validate/secret-names", &request, "CREATE", &denial, 0);
        });
        assert!(logged.contains("denied"), "{logged}");
        assert!(
            logged.len() < 4 * review::QUOTED_LIMIT,
            "{} bytes logged",
            logged.len()
        );
    }
}
