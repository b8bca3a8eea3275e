//! Prometheus metrics for the webhook, in the names controller-runtime webhooks use (so existing
//! dashboards fit), plus our own per-rule-set counters under the `scoped_secrets_` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use std::time::Instant;

/// Registers a new default `M` (a counter, gauge or family) under `name` and returns it: a metric
/// is an `Arc` inside, so the returned handle records into the registered series.
pub fn registered<M: Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    registered_as(registry, name, help, M::default())
}

/// [`registered`] for a metric that needs arguments to build (a histogram's buckets).
pub fn registered_as<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

// Label values are static strings and numbers: recording a request allocates nothing.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub webhook: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub webhook: &'static str,
    pub operation: &'static str,
    /// allowed, warned, denied, or error (the review could not be decided).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// connection_cap, handshake_timeout, client_certificate (none, or not of the client CA),
    /// client_name (not one of the allowed names) or handshake (any other TLS failure).
    pub reason: &'static str,
}

/// The webhook's metrics; cheap to clone (every field is an `Arc` inside).
#[derive(Clone)]
pub struct WebhookMetrics {
    requests: Family<CodeLabels, Counter>,
    in_flight: Family<WebhookLabels, Gauge>,
    latency: Family<WebhookLabels, Histogram>,
    reviews: Family<ReviewLabels, Counter>,
    paced: Family<WebhookLabels, Counter<f64>>,
    paced_bytes: Family<WebhookLabels, Counter>,
    connections_refused: Family<RefusedLabels, Counter>,
}

impl WebhookMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        // Registered in this order (the order of /metrics): the fields are evaluated as written.
        Self {
            requests: registered(
                registry,
                "controller_runtime_webhook_requests",
                "Total number of admission requests by HTTP status code",
            ),
            in_flight: registered(
                registry,
                "controller_runtime_webhook_requests_in_flight",
                "Current number of admission requests being served",
            ),
            latency: registered_as(
                registry,
                "controller_runtime_webhook_latency_seconds",
                "Histogram of the latency of processing admission requests",
                Family::new_with_constructor(|| {
                    // controller-runtime's buckets reach 10 s; ours start lower, where reviews live.
                    Histogram::new([
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        10.0,
                    ])
                }),
            ),
            reviews: registered(
                registry,
                "scoped_secrets_admission_reviews",
                "Admission reviews by webhook, operation and result",
            ),
            paced: registered(
                registry,
                "scoped_secrets_webhook_body_pace_wait_seconds",
                "Time request bodies waited for the large bodies' pace before being read further",
            ),
            paced_bytes: registered(
                registry,
                "scoped_secrets_webhook_body_paced_bytes",
                &format!(
                    "Bytes of request bodies read at the large bodies' pace (past each body's first {} KiB)",
                    crate::webhook::limits::ORDINARY_BODY_BYTES / 1024
                ),
            ),
            connections_refused: registered(
                registry,
                "scoped_secrets_webhook_connections_refused",
                "Webhook connections closed before any request was read, or evicted while waiting for one, by reason",
            ),
        }
    }

    /// A connection was closed before any request was read, or evicted while waiting for one.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&RefusedLabels { reason })
            .inc();
    }

    /// How many connections were refused for `reason`; for tests.
    pub fn connections_refused(&self, reason: &'static str) -> u64 {
        self.connections_refused
            .get_or_create(&RefusedLabels { reason })
            .get()
    }

    /// A body of this webhook had `paced.bytes` read at the large bodies' pace, and waited
    /// `paced.waited` for it.
    pub fn paced(&self, webhook: &'static str, paced: &crate::webhook::limits::Paced) {
        let labels = WebhookLabels { webhook };
        self.paced
            .get_or_create(&labels)
            .inc_by(paced.waited.as_secs_f64());
        self.paced_bytes
            .get_or_create(&labels)
            .inc_by(paced.bytes as u64);
    }

    /// How long this webhook's bodies have waited for the pace, in seconds; for tests.
    pub fn paced_seconds(&self, webhook: &'static str) -> f64 {
        self.paced.get_or_create(&WebhookLabels { webhook }).get()
    }

    /// How many bytes of this webhook's bodies were read at the pace; for tests.
    pub fn paced_bytes(&self, webhook: &'static str) -> u64 {
        self.paced_bytes
            .get_or_create(&WebhookLabels { webhook })
            .get()
    }

    /// Starts timing one request; the guard records latency, status and in-flight when dropped.
    pub fn start(&self, webhook: &'static str) -> RequestTimer<'_> {
        let labels = WebhookLabels { webhook };
        self.in_flight.get_or_create(&labels).inc();
        RequestTimer {
            metrics: self,
            labels,
            started: Instant::now(),
            code: 500,
        }
    }

    pub fn review(&self, webhook: &'static str, operation: &'static str, result: &'static str) {
        self.reviews
            .get_or_create(&ReviewLabels {
                webhook,
                operation,
                result,
            })
            .inc();
    }

    /// Requests of this webhook being served right now.
    pub fn in_flight(&self, webhook: &'static str) -> i64 {
        self.in_flight
            .get_or_create(&WebhookLabels { webhook })
            .get()
    }

    /// How many reviews this webhook has answered (all results); for tests and the readiness story.
    pub fn reviews_total(
        &self,
        webhook: &'static str,
        operation: &'static str,
        result: &'static str,
    ) -> u64 {
        self.reviews
            .get_or_create(&ReviewLabels {
                webhook,
                operation,
                result,
            })
            .get()
    }
}

/// Drop guard timing one request (kube-rs controller-rs habit). It borrows the metrics: a clone
/// would count six references up and down per request, each a cache line the cores pass around.
pub struct RequestTimer<'a> {
    metrics: &'a WebhookMetrics,
    labels: WebhookLabels,
    started: Instant,
    code: u16,
}

impl RequestTimer<'_> {
    pub fn set_code(&mut self, code: u16) {
        self.code = code;
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .latency
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics.in_flight.get_or_create(&self.labels).dec();
        self.metrics
            .requests
            .get_or_create(&CodeLabels {
                webhook: self.labels.webhook,
                code: self.code,
            })
            .inc();
    }
}

/// Gauges describing the index.
#[derive(Clone, Default)]
pub struct IndexMetrics {
    pub secrets: Gauge,
    pub namespaces: Gauge,
    pub projects: Gauge,
    pub scoped_secrets: Gauge,
}

impl IndexMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("scoped_secrets_index");
        Self {
            secrets: registered(r, "secrets", "Secrets in the name index"),
            namespaces: registered(r, "namespaces", "Namespaces indexed"),
            projects: registered(r, "projects", "Projects indexed"),
            scoped_secrets: registered(
                r,
                "scoped_secrets",
                "Project-scoped secrets held: originals whole, copies by metadata and digests",
            ),
        }
    }

    /// Read on every scrape of `/metrics`, which anyone who reaches the admin port may send as often
    /// as they like: counts the maps keep, summed per namespace at most, never a walk of every
    /// secret.
    pub fn observe(&self, world: &crate::world::World) {
        self.secrets.set(world.secret_count() as i64);
        self.namespaces.set(world.namespace_count() as i64);
        self.projects.set(world.project_count() as i64);
        self.scoped_secrets.set(world.scoped_count() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_gauges_count_what_the_index_holds() {
        let world = crate::policy::testing::world();
        let metrics = IndexMetrics::default();
        metrics.observe(&world);
        assert_eq!(metrics.namespaces.get(), world.namespaces().count() as i64);
        assert_eq!(metrics.projects.get(), world.projects().count() as i64);
        assert_eq!(
            metrics.scoped_secrets.get(),
            world.scoped_secrets().count() as i64
        );
        // The test world: the backing namespace's 2 originals, 3 copies, and 4 plain secrets.
        assert_eq!(
            (metrics.scoped_secrets.get(), metrics.secrets.get()),
            (5, 9)
        );
    }
}
