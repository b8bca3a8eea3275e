//! The HTTP routes of the webhook: thin handlers that parse a review, fetch what the policy needs
//! (a SubjectAccessReview, one secret's type), ask the pure policy, and answer.

use crate::keys::{self, ProjectId};
use crate::metrics::WebhookMetrics;
use crate::policy::{self, Config, Decision, Facts, Rules};
use crate::watch::Index;
use crate::webhook::limits::{self, ReviewLimits};
use crate::webhook::review;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use std::sync::Arc;
use tracing::{Instrument, Span};

/// The apiserver sends up to ~3 MiB each for object and oldObject.
pub const MAX_BODY_BYTES: usize = limits::MAX_BODY_BYTES;
/// How long a request body may take to arrive once its headers have.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub index: Arc<Index>,
    pub config: Arc<Config>,
    pub metrics: WebhookMetrics,
    /// For the few look-ups a review needs; `None` answers them as unknown (tests of the pure path).
    pub client: Option<kube::Client>,
    /// Reviews in flight and large bodies buffered at once.
    pub limits: Arc<ReviewLimits>,
}

/// One webhook endpoint: what it does and the kinds its webhook entry sends it.
#[derive(Clone, Copy)]
struct Endpoint {
    action: Action,
    /// The `(group, kind)` of the entry's resources (`""` is the core group); any other is a
    /// misrouted review.
    covers: (&'static str, &'static str),
}

#[derive(Clone, Copy)]
enum Action {
    Validate(Rules),
    Mutate,
    /// P1–P3 (Projects taking another project's backing namespace).
    ProjectGuard,
}

const ROUTES: [(&str, Endpoint); 6] = [
    (
        "/validate/secret-guard",
        Endpoint {
            action: Action::Validate(Rules::SecretGuard),
            covers: ("", "Secret"),
        },
    ),
    (
        "/validate/secret-names",
        Endpoint {
            action: Action::Validate(Rules::SecretNames),
            covers: ("", "Secret"),
        },
    ),
    (
        "/validate/namespace-guard",
        Endpoint {
            action: Action::Validate(Rules::NamespaceGuard),
            covers: ("", "Namespace"),
        },
    ),
    (
        "/mutate/secret",
        Endpoint {
            action: Action::Mutate,
            covers: ("", "Secret"),
        },
    ),
    (
        "/mutate/namespace",
        Endpoint {
            action: Action::Mutate,
            covers: ("", "Namespace"),
        },
    ),
    (
        "/validate/project-guard",
        Endpoint {
            action: Action::ProjectGuard,
            covers: (keys::PROJECT_GROUP, keys::PROJECT_KIND),
        },
    ),
];

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (path, endpoint) in ROUTES {
        router = router.route(
            path,
            post(move |state: State<AppState>, request: Request| {
                handle(state, request, path, endpoint)
            }),
        );
    }
    router.with_state(state)
}

// A debug-level span: at the default level, reviews that pass cost no span; denials log their own
// context.
#[tracing::instrument(
    level = "debug",
    skip_all,
    fields(webhook = path, uid, kind, namespace, name, operation, dry_run)
)]
async fn handle(
    State(state): State<AppState>,
    request: Request,
    path: &'static str,
    endpoint: Endpoint,
) -> Response {
    // Timed (and counted in flight) from the headers on, so slow, oversized or refused bodies show too.
    let mut timer = state.metrics.start(path);
    let (parts, body) = request.into_parts();
    let response = match admit(&state, &parts.headers) {
        // Held until the answer is made: the body and the decoded review are the review's memory.
        Ok(_admitted) => match read_body(body, declared_length(&parts.headers)).await {
            Ok(body) => answer(&state, &body, path, endpoint).await,
            Err(rejection) => {
                state.metrics.review(path, "", "error");
                rejection
            }
        },
        Err(refusal) => {
            state.metrics.review(path, "", "error");
            refusal.into_response()
        }
    };
    timer.set_code(response.status().as_u16());
    response
}

/// Checks what the headers say before any of the body is read: its type, its declared length
/// (413 at once, not after reading 7 MiB), and room under the caps (429 at once).
fn admit(state: &AppState, headers: &HeaderMap) -> Result<limits::Admitted, limits::Refusal> {
    if !is_json(headers) {
        return Err(limits::Refusal::NotJson);
    }
    state
        .limits
        .admit(declared_length(headers))
        .inspect_err(|refusal| tracing::debug!(%refusal, "review refused before reading its body"))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The body, up to [`MAX_BODY_BYTES`], in one buffer of its declared size (no copy when it is
/// complete, so a 7 MiB body is held once); past the limit a 413 that says it.
async fn read_body(body: Body, declared: Option<u64>) -> Result<Vec<u8>, Response> {
    // The apiserver sends a review at once; a sender that trickles holds a connection and up to
    // 7 MiB, so the body gets a deadline of its own (the header read has one in the server).
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(MAX_BODY_BYTES));
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, async move {
        let mut body = body;
        let mut buffer = Vec::with_capacity(capacity.min(MAX_BODY_BYTES));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                let message = format!("could not read the request body: {e}");
                (StatusCode::BAD_REQUEST, message).into_response()
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buffer.len() + data.len() > MAX_BODY_BYTES {
                return Err(limits::Refusal::TooLarge {
                    declared: (buffer.len() + data.len()) as u64,
                }
                .into_response());
            }
            buffer.extend_from_slice(&data);
        }
        Ok(buffer)
    })
    .await;
    match read {
        Ok(read) => read,
        Err(_) => {
            let message = format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}");
            Err((StatusCode::REQUEST_TIMEOUT, message).into_response())
        }
    }
}

async fn answer(state: &AppState, body: &[u8], path: &'static str, endpoint: Endpoint) -> Response {
    let request = review::parse_request(body).and_then(|request| covered(request, path, endpoint));
    let request = match request {
        Ok(request) => request,
        Err(err) => {
            state.metrics.review(path, "", "error");
            tracing::warn!(error = %err, "undecodable admission review");
            return match review::error_review(&err) {
                Some(answer) => axum::Json(answer).into_response(),
                None => (
                    StatusCode::BAD_REQUEST,
                    axum::Json(review::error_body(&err)),
                )
                    .into_response(),
            };
        }
    };
    record_request(&request);
    let decision = match endpoint.action {
        Action::Mutate => policy::mutate(&request, &state.index.read()),
        Action::Validate(rules) => validate(state, rules, &request).await,
        Action::ProjectGuard => {
            policy::projects::review(&request, &state.index.read(), &state.config)
        }
    };
    let operation = operation_label(&request.operation);
    state.metrics.review(path, operation, result_of(&decision));
    if let Some(denial) = &decision.denial {
        tracing::info!(
            webhook = path,
            uid = %request.uid,
            kind = %request.kind.kind,
            namespace = request.namespace.as_deref().unwrap_or_default(),
            name = %request.name,
            operation,
            dry_run = request.dry_run,
            code = denial.code,
            reason = %denial.reason,
            "denied"
        );
    }
    axum::Json(review::respond(&request, decision)).into_response()
}

/// The request, if it is of the kind its endpoint's webhook entry sends: another kind means the
/// configuration routes it wrongly, and admitting it unreviewed would hide that.
fn covered(
    request: AdmissionRequest<DynamicObject>,
    path: &'static str,
    endpoint: Endpoint,
) -> Result<AdmissionRequest<DynamicObject>, review::ReviewError> {
    let kind = &request.kind;
    let (group, covered_kind) = endpoint.covers;
    if kind.group == group && kind.kind == covered_kind {
        return Ok(request);
    }
    let group_name = |g: &str| if g.is_empty() { "core" } else { g }.to_owned();
    Err(review::ReviewError::UncoveredKind {
        uid: request.uid,
        kind: format!(
            "{} ({}/{})",
            kind.kind,
            group_name(&kind.group),
            kind.version
        ),
        endpoint: path,
        covers: format!("{covered_kind}s ({})", group_name(group)),
    })
}

async fn validate(
    state: &AppState,
    rules: Rules,
    request: &AdmissionRequest<DynamicObject>,
) -> Decision {
    let needs = policy::needs_for(rules, request, &state.index.read(), &state.config);
    let mut may_manage = std::collections::BTreeMap::new();
    for project in needs.access_reviews {
        if let Some(answer) = may_manage_namespaces(state, request, &project).await {
            may_manage.insert(project, answer);
        }
    }
    let facts = Facts {
        may_manage_namespaces: may_manage,
        existing_secret_type: match &needs.secret_type_of {
            Some((namespace, name)) => secret_type(state, namespace, name).await,
            None => None,
        },
    };
    policy::validate_only(rules, request, &state.index.read(), &state.config, &facts)
}

fn operation_label(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn result_of(decision: &Decision) -> &'static str {
    match (&decision.denial, decision.warnings.is_empty()) {
        (Some(_), _) => "denied",
        (None, false) => "warned",
        (None, true) => "allowed",
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn record_request(request: &AdmissionRequest<DynamicObject>) {
    let span = Span::current();
    span.record("uid", request.uid.as_str());
    span.record("kind", request.kind.kind.as_str());
    span.record(
        "namespace",
        request.namespace.as_deref().unwrap_or_default(),
    );
    span.record("name", request.name.as_str());
    span.record("operation", operation_label(&request.operation));
    span.record("dry_run", request.dry_run);
}

/// N1: may this user move namespaces into the project? `None` when the review could not be made.
async fn may_manage_namespaces(
    state: &AppState,
    request: &AdmissionRequest<DynamicObject>,
    project: &ProjectId,
) -> Option<bool> {
    let client = state.client.clone()?;
    let user = &request.user_info;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(keys::PROJECT_GROUP.to_owned()),
                version: Some(keys::PROJECT_VERSION.to_owned()),
                resource: Some(keys::PROJECT_PLURAL.to_owned()),
                namespace: Some(project.cluster.clone()),
                name: Some(project.project.clone()),
                verb: Some(keys::MANAGE_NAMESPACES_VERB.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client);
    match api
        .create(&PostParams::default(), &review)
        .instrument(tracing::debug_span!("subject_access_review"))
        .await
    {
        Ok(answer) => answer.status.map(|s| s.allowed),
        Err(e) => {
            tracing::warn!(error = %e, "SubjectAccessReview failed");
            None
        }
    }
}

/// S1: the type of the secret that holds a name, for the denial message. Only the type is kept.
async fn secret_type(state: &AppState, namespace: &str, name: &str) -> Option<String> {
    let api: Api<Secret> = Api::namespaced(state.client.clone()?, namespace);
    match api.get_opt(name).await {
        Ok(secret) => secret.and_then(|s| s.type_),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the existing secret's type");
            None
        }
    }
}
