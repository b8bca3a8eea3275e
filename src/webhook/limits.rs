//! Caps on what the webhook holds at once, so a burst of reviews (or a hostile client on the port)
//! costs bounded memory instead of an OOM kill that fails every `failurePolicy: Fail` entry:
//! reviews in flight, and bytes of large bodies being buffered. Past a cap a review is refused at
//! once with HTTP 429 and a `Status` body; the apiserver then applies the entry's failurePolicy.
//! (Open connections are capped by the listener, see [`crate::webhook::server::Limits`].)

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The largest body accepted: the apiserver sends up to ~3 MiB each for object and oldObject.
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// Bodies up to this size (every ordinary review) need no share of the body budget: the cap on
/// reviews in flight bounds them. Larger ones, or ones of unknown length, draw from the budget.
pub const SMALL_BODY_BYTES: usize = 256 * 1024;

/// Default cap on reviews being read, decided or answered at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default budget for large bodies being buffered at once: two bodies of the maximum size.
pub const DEFAULT_LARGE_BODY_BUDGET: usize = 2 * MAX_BODY_BYTES;

/// The budget is counted in KiB, so that it fits a semaphore's permits.
const UNIT: usize = 1024;

/// The shared caps of one webhook server.
#[derive(Debug)]
pub struct ReviewLimits {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    large_bodies: Arc<Semaphore>,
    budget: usize,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_IN_FLIGHT, DEFAULT_LARGE_BODY_BUDGET)
    }
}

/// Held while a review is served; dropping it gives its share back.
#[derive(Debug)]
pub struct Admitted {
    _review: OwnedSemaphorePermit,
    _body: Option<OwnedSemaphorePermit>,
}

/// Why a review was refused before its body was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Content-Type must be application/json")]
    NotJson,
    #[error(
        "the request body declares {declared} bytes; AdmissionReview bodies are limited to {MAX_BODY_BYTES} bytes"
    )]
    TooLarge { declared: u64 },
    #[error("{0} reviews are in flight, the most this webhook serves at once; retry")]
    InFlight(usize),
    #[error("large request bodies being read already fill the budget of {0} bytes; retry")]
    BodyBudget(usize),
}

impl ReviewLimits {
    /// `max_in_flight` reviews at once (at least 1), and large bodies totalling `large_body_budget`
    /// bytes (at least one body of [`MAX_BODY_BYTES`], so that any valid review can get through).
    pub fn new(max_in_flight: usize, large_body_budget: usize) -> Self {
        let max_in_flight = max_in_flight.max(1);
        let budget = large_body_budget.max(MAX_BODY_BYTES);
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            large_bodies: Arc::new(Semaphore::new(budget.div_ceil(UNIT))),
            budget,
        }
    }

    /// Admits a review whose body declares `declared` bytes (`None`: unknown, as when chunked), or
    /// says why not. Never waits.
    pub fn admit(&self, declared: Option<u64>) -> Result<Admitted, Refusal> {
        let size = match declared {
            Some(n) if n > MAX_BODY_BYTES as u64 => return Err(Refusal::TooLarge { declared: n }),
            Some(n) => n as usize,
            None => MAX_BODY_BYTES,
        };
        let body = if size <= SMALL_BODY_BYTES {
            None
        } else {
            let units = u32::try_from(size.div_ceil(UNIT)).unwrap_or(u32::MAX);
            let permit = self.large_bodies.clone().try_acquire_many_owned(units);
            Some(permit.map_err(|_| Refusal::BodyBudget(self.budget))?)
        };
        let review = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::InFlight(self.max_in_flight))?;
        Ok(Admitted {
            _review: review,
            _body: body,
        })
    }
}

impl IntoResponse for Refusal {
    /// 415 for a body that is not JSON, 413 for a body that is too large, 429 (with `Retry-After`) for a full server, each with a
    /// Kubernetes `Status` body that the apiserver quotes in its error.
    fn into_response(self) -> Response {
        let (code, reason) = match self {
            Self::NotJson => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            Self::InFlight(_) | Self::BodyBudget(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
            }
        };
        let body = status_body(code, reason, &self.to_string());
        let mut response = (code, axum::Json(body)).into_response();
        if code == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// A Kubernetes `Status` (failure) body.
pub fn status_body(code: StatusCode, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code.as_u16(),
        "reason": reason,
        "message": message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_need_only_a_slot_in_flight() {
        let limits = ReviewLimits::new(2, MAX_BODY_BYTES);
        let a = limits.admit(Some(1000)).expect("first");
        let _b = limits.admit(Some(SMALL_BODY_BYTES as u64)).expect("second");
        assert_eq!(limits.admit(Some(10)).err(), Some(Refusal::InFlight(2)));
        drop(a);
        assert!(limits.admit(Some(10)).is_ok(), "a freed slot is reusable");
    }

    #[test]
    fn large_bodies_share_the_budget_and_small_ones_still_pass() {
        let limits = ReviewLimits::new(8, MAX_BODY_BYTES);
        let big = limits.admit(Some(MAX_BODY_BYTES as u64)).expect("one fits");
        assert_eq!(
            limits.admit(Some(SMALL_BODY_BYTES as u64 + 1)).err(),
            Some(Refusal::BodyBudget(MAX_BODY_BYTES))
        );
        assert!(
            limits.admit(None).is_err(),
            "unknown length reserves the maximum"
        );
        assert!(
            limits.admit(Some(2048)).is_ok(),
            "small reviews get through"
        );
        drop(big);
        assert!(limits.admit(None).is_ok());
    }

    #[test]
    fn oversized_declarations_are_refused_before_anything_is_reserved() {
        let limits = ReviewLimits::new(1, MAX_BODY_BYTES);
        let declared = MAX_BODY_BYTES as u64 + 1;
        assert_eq!(
            limits.admit(Some(declared)).err(),
            Some(Refusal::TooLarge { declared })
        );
        assert!(limits.admit(Some(10)).is_ok());
    }
}
