//! The admin port (plain HTTP): `/livez`, `/readyz` (ready once every watch has synced, and not while
//! shutting down) and `/metrics`.

use crate::index::Index;
use crate::metrics::IndexMetrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone)]
pub struct AdminState {
    pub index: Arc<Index>,
    pub registry: Arc<Registry>,
    pub index_metrics: IndexMetrics,
    /// Set when shutdown begins, so load balancers stop sending reviews before the listener closes.
    pub stopping: Arc<AtomicBool>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.stopping.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if !state.index.is_synced() {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    state.index_metrics.observe(&state.index.read());
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn readyz_status(state: AdminState) -> StatusCode {
        let request = Request::get("/readyz")
            .body(Body::empty())
            .expect("request");
        router(state)
            .oneshot(request)
            .await
            .expect("response")
            .status()
    }

    fn state() -> AdminState {
        AdminState {
            index: Arc::new(Index::default()),
            registry: Arc::new(Registry::default()),
            index_metrics: IndexMetrics::default(),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    #[tokio::test]
    async fn not_ready_until_every_watch_synced_nor_while_stopping() {
        let state = state();
        assert_eq!(
            readyz_status(state.clone()).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.index.mark_all_synced_for_tests();
        assert_eq!(readyz_status(state.clone()).await, StatusCode::OK);
        state.stopping.store(true, Ordering::Relaxed);
        assert_eq!(readyz_status(state).await, StatusCode::SERVICE_UNAVAILABLE);
    }
}
