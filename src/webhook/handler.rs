//! The HTTP side of the webhook: the routes (one per webhook entry), what is checked before a body
//! is read (its type, declared length and the large bodies' budget), the body, and the cap on
//! reviews in flight; the review itself goes to [`super::pipeline`].

use crate::endpoints;
use crate::index::Index;
use crate::keys;
use crate::metrics::WebhookMetrics;
use crate::policy::{Config, Rules};
use crate::webhook::connection::{self, WatchedBody};
use crate::webhook::limits::{self, Paced, ReviewLimits};
use crate::webhook::pipeline;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use std::sync::Arc;

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
    /// The downstream clusters' worlds (when the reconciler runs here): a secret in the backing
    /// namespace of a project served in its own cluster is reviewed in that cluster's world.
    pub placement: Option<Arc<crate::clusters::placement::Placement>>,
    /// In a downstream cluster (`--cluster-id`, where `index` is the composed world): this
    /// cluster's own namespaces and secrets alone. A secret in a namespace named like a backing
    /// namespace of the management cluster, which the composed world takes from there, is in this
    /// cluster's namespace of that name, and reviewed here.
    pub own_cluster: Option<Arc<Index>>,
}

/// One webhook endpoint: what it does and the kinds its webhook entry sends it.
#[derive(Clone, Copy)]
pub struct Endpoint {
    pub action: Action,
    /// The `(group, kind)` of the entry's resources (`""` is the core group); any other is a
    /// misrouted review.
    pub covers: (&'static str, &'static str),
}

impl Endpoint {
    /// Whether the endpoint's entry fails open (`failurePolicy: Ignore` in the manifests: the
    /// names' checks and the mutations, which are advisory or repaired by the reconciler). A
    /// review such an entry cannot decode is admitted with a warning, as its outage would admit
    /// it: refusing it instead locked out, delete included, any secret the decoder cannot read (one
    /// of more than 1,024 labels, written before the webhook was installed).
    pub fn fails_open(&self) -> bool {
        matches!(
            self.action,
            Action::Validate(Rules::SecretNames) | Action::Mutate
        )
    }
}

#[derive(Clone, Copy)]
pub enum Action {
    Validate(Rules),
    Mutate,
    /// P1–P4 (Projects taking another project's backing namespace or members).
    ProjectGuard,
}

const ROUTES: [(&str, Endpoint); 6] = [
    (
        endpoints::SECRET_GUARD,
        Endpoint {
            action: Action::Validate(Rules::SecretGuard),
            covers: ("", "Secret"),
        },
    ),
    (
        endpoints::SECRET_NAMES,
        Endpoint {
            action: Action::Validate(Rules::SecretNames),
            covers: ("", "Secret"),
        },
    ),
    (
        endpoints::NAMESPACE_GUARD,
        Endpoint {
            action: Action::Validate(Rules::NamespaceGuard),
            covers: ("", "Namespace"),
        },
    ),
    (
        endpoints::MUTATE_SECRET,
        Endpoint {
            action: Action::Mutate,
            covers: ("", "Secret"),
        },
    ),
    (
        endpoints::MUTATE_NAMESPACE,
        Endpoint {
            action: Action::Mutate,
            covers: ("", "Namespace"),
        },
    ),
    (
        endpoints::PROJECT_GUARD,
        Endpoint {
            action: Action::ProjectGuard,
            covers: (keys::PROJECT_GROUP, keys::PROJECT_KIND),
        },
    ),
];

/// Whether the entry served at `path` fails open ([`Endpoint::fails_open`]); `None` for a path not
/// served. The manifests' `failurePolicy` must agree (tests/chart.rs checks every overlay).
pub fn fails_open(path: &str) -> Option<bool> {
    ROUTES
        .iter()
        .find(|(served, _)| *served == path)
        .map(|(_, endpoint)| endpoint.fails_open())
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (path, endpoint) in ROUTES {
        router = router.route(
            path,
            post(move |state: State<Arc<AppState>>, request: Request| {
                handle(state, request, path, endpoint)
            }),
        );
    }
    // Shared behind one `Arc`: axum clones the state for every request, and one reference count
    // is cheaper than one per field (the cores would pass each count's cache line back and forth).
    router.with_state(Arc::new(state))
}

// A debug-level span: at the default level, reviews that pass cost no span; denials log their own
// context.
#[tracing::instrument(
    level = "debug",
    skip_all,
    fields(webhook = path, uid, kind, namespace, name, operation, dry_run)
)]
async fn handle(
    State(state): State<Arc<AppState>>,
    request: Request,
    path: &'static str,
    endpoint: Endpoint,
) -> Response {
    // Timed (and counted in flight) from the headers on, so slow, oversized or refused bodies show too.
    let mut timer = state.metrics.start(path);
    let response = match serve(&state, request, path, endpoint).await {
        Ok(answer) => answer,
        Err(refused) => {
            state.metrics.review(path, "", "error");
            refused
        }
    };
    timer.set_code(response.status().as_u16());
    response
}

/// Room for the body (from its headers), the body, a slot among the reviews in flight and of the
/// client address's share of them (only once the body has arrived: a client trickling a body holds
/// no slot the apiserver's reviews need), and the review; or the refusal that ended it.
async fn serve(
    state: &AppState,
    request: Request,
    path: &'static str,
    endpoint: Endpoint,
) -> Result<Response, Response> {
    let (parts, body) = request.into_parts();
    let address = connection::client_address();
    let declared = declared_length(&parts.headers);
    // Held until the answer is made: the body and the decoded review are the review's memory.
    let room = admit_body(state, &parts.headers, declared, address)
        .await
        .map_err(IntoResponse::into_response)?;
    // Counted whatever the read comes to: a body that waited and then timed out waited too.
    let mut paced = Paced::default();
    let pace = state.limits.large_body_pace();
    let read = read_body(body, declared, pace, &mut paced, room.lagged()).await;
    if paced.bytes > 0 {
        state.metrics.paced(path, &paced);
    }
    let body = read?;
    let _slot = state.limits.admit_review(address).map_err(|refusal| {
        tracing::debug!(%refusal, "review refused with its body read");
        refusal.into_response()
    })?;
    Ok(pipeline::review_pipeline(state, body, path, endpoint).await)
}

/// Checks what the headers say before any of the body is read: its type, its `declared` length
/// (413 at once, not after reading 7 MiB), and room under the large bodies' budget and the share of
/// it the client's `address` may hold (429 at once; when the budget is full, after a stalled large
/// body has made room if one could).
async fn admit_body(
    state: &AppState,
    headers: &HeaderMap,
    declared: Option<u64>,
    address: Option<std::net::IpAddr>,
) -> Result<limits::BodyRoom, limits::Refusal> {
    if !is_json(headers) {
        return Err(limits::Refusal::NotJson);
    }
    state
        .limits
        .admit_body_making_room(declared, address)
        .await
        .inspect_err(|refusal| tracing::debug!(%refusal, "review refused before reading its body"))
}

/// The body's length as its `Content-Length` header declares it, if it does.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The body, up to [`MAX_BODY_BYTES`], in one buffer of its declared size (no copy when it is
/// complete, so a 7 MiB body is held once); past the limit a 413 that says it. Its bytes past the
/// first [`limits::ORDINARY_BODY_BYTES`] are read at `pace`, and added to `paced` with the time
/// they waited; `lagged` is set if the body falls behind its course (see [`WatchedBody`]).
async fn read_body(
    body: Body,
    declared: Option<u64>,
    pace: Option<&limits::BodyPace>,
    paced: &mut Paced,
    lagged: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Result<Vec<u8>, Response> {
    // The apiserver sends a review at once; a sender that trickles holds a connection and up to
    // 7 MiB, so the body gets a deadline of its own (the header read has one in the server).
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(MAX_BODY_BYTES));
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, async move {
        // Tells the connection while the body's bytes are awaited, so that a stalled body can
        // make room at the connection cap.
        let expected = declared.map_or(MAX_BODY_BYTES, |_| capacity.min(MAX_BODY_BYTES));
        let mut body = WatchedBody::new(body, expected, lagged);
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
            let before = buffer.len();
            buffer.extend_from_slice(&data);
            let past_ordinary = |n: usize| n.saturating_sub(limits::ORDINARY_BODY_BYTES);
            let beyond = past_ordinary(buffer.len()) - past_ordinary(before);
            if let (Some(pace), true) = (pace, beyond > 0) {
                pace.after_read(beyond, paced).await;
            }
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

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}
