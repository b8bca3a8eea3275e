//! The HTTP routes of the webhook: thin handlers that parse a review, fetch what the policy needs
//! (a SubjectAccessReview, one secret's type), ask the pure policy, and answer.

use crate::index::Index;
use crate::keys::{self, ProjectId};
use crate::metrics::WebhookMetrics;
use crate::policy::{self, Config, Decision, Facts, Rules};
use crate::webhook::review;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
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
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;
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
}

/// One webhook endpoint: its path and what it does.
#[derive(Clone, Copy)]
enum Endpoint {
    Validate(Rules),
    Mutate,
    /// P1–P3 (Projects taking another project's backing namespace).
    ProjectGuard,
}

const ROUTES: [(&str, Endpoint); 7] = [
    (
        "/validate/secret-guard",
        Endpoint::Validate(Rules::SecretGuard),
    ),
    (
        "/validate/secret-names",
        Endpoint::Validate(Rules::SecretNames),
    ),
    (
        "/validate/namespace-guard",
        Endpoint::Validate(Rules::NamespaceGuard),
    ),
    ("/validate/project-guard", Endpoint::ProjectGuard),
    ("/validate/all", Endpoint::Validate(Rules::All)),
    ("/mutate/secret", Endpoint::Mutate),
    ("/mutate/namespace", Endpoint::Mutate),
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
    // Timed (and counted in flight) from the headers on, so slow or oversized bodies show too.
    let mut timer = state.metrics.start(path);
    let (parts, body) = request.into_parts();
    let response = match read_body(body).await {
        Ok(body) => answer(&state, &parts.headers, &body, path, endpoint).await,
        Err(rejection) => {
            state.metrics.review(path, "", "error");
            rejection
        }
    };
    timer.set_code(response.status().as_u16());
    response
}

/// The body, up to [`MAX_BODY_BYTES`]; past that a 413 that says the limit.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    // The apiserver sends a review at once; a sender that trickles holds a connection and up to
    // 7 MiB, so the body gets a deadline of its own (the header read has one in the server).
    let Ok(read) = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    else {
        let message = format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}");
        return Err((StatusCode::REQUEST_TIMEOUT, message).into_response());
    };
    read.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            let message = format!("AdmissionReview bodies are limited to {MAX_BODY_BYTES} bytes");
            (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
        } else {
            (
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )
                .into_response()
        }
    })
}

async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    path: &'static str,
    endpoint: Endpoint,
) -> Response {
    if !is_json(headers) {
        state.metrics.review(path, "", "error");
        let message = "Content-Type must be application/json";
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response();
    }
    let request = match review::parse_request(body) {
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
    let decision = match endpoint {
        Endpoint::Mutate => policy::mutate(&request, &state.index.read()),
        Endpoint::Validate(rules) => validate(state, rules, &request).await,
        Endpoint::ProjectGuard => {
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
