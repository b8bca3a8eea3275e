//! The whole pipeline of one review, once its body has arrived: decode it (only what the rules
//! read), check it is of the kind its entry covers, ask the pure policy (fetching the facts it
//! needs), record the outcome, and answer. See the diagram in [`crate::webhook`].

use super::handler::{Action, AppState, Endpoint};
use super::limits::ORDINARY_BODY_BYTES;
use super::{facts, review, runtime};
use crate::policy::{self, Decision, Review, Rules};
use crate::world::World;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;
use std::sync::Arc;
use tracing::Span;

/// The body's AdmissionReview in, the AdmissionReview answering it out.
pub async fn review_pipeline(
    state: &AppState,
    body: Vec<u8>,
    path: &'static str,
    endpoint: Endpoint,
) -> Response {
    let request = decode(body)
        .await
        .and_then(|request| covered(request, path, endpoint));
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
    let operation = policy::operation_name(&request.operation);
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

/// Decodes the body; one larger than any ordinary review on a blocking thread of low priority, so
/// that the milliseconds it takes do not hold up the small reviews sharing the webhook's threads
/// or cores.
async fn decode(body: Vec<u8>) -> Result<AdmissionRequest<DynamicObject>, review::ReviewError> {
    if body.len() <= ORDINARY_BODY_BYTES {
        return review::parse_request(&body);
    }
    tokio::task::spawn_blocking(move || {
        runtime::yield_to_small_reviews();
        review::parse_request(&body)
    })
    .await
    .unwrap_or_else(|e| {
        Err(review::ReviewError::Malformed {
            uid: None,
            detail: format!("decoding was interrupted: {e}"),
        })
    })
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

/// One validating entry's rules: the request is decoded once, and one index snapshot serves the
/// whole review, across the facts fetched from the apiserver (a snapshot holds up nobody).
async fn validate(
    state: &AppState,
    rules: Rules,
    request: &AdmissionRequest<DynamicObject>,
) -> Decision {
    let world = world_for(state, request);
    let review = Review::new(rules, request, &state.config);
    let needs = review.needs(&world);
    let facts = facts::fetch(state.client.as_ref(), request, needs).await;
    review.decide(&world, &facts)
}

/// The world a review is decided in: for a secret in the backing namespace of a project served in
/// its own (downstream) cluster, that cluster's world while it is listed, so that what the
/// original's copies would overwrite there is said (`cluster/namespace`); else the index's. Only
/// a namespace the management cluster gives that project alone: the composed world knows no
/// other cluster's claims.
fn world_for(state: &AppState, request: &AdmissionRequest<DynamicObject>) -> Arc<World> {
    let world = state.index.read();
    let (Some(placement), Some(namespace)) = (&state.placement, request.namespace.as_deref())
    else {
        return world;
    };
    if request.kind.kind != "Secret" {
        return world;
    }
    let Some(project) = world.backing_project(namespace) else {
        return world;
    };
    match placement.world(&project.cluster) {
        Some(downstream) => downstream.read(),
        None => world,
    }
}

fn result_of(decision: &Decision) -> &'static str {
    match (&decision.denial, decision.warnings.is_empty()) {
        (Some(_), _) => "denied",
        (None, false) => "warned",
        (None, true) => "allowed",
    }
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
    span.record("operation", policy::operation_name(&request.operation));
    span.record("dry_run", request.dry_run);
}
