//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! Labels are fixed route names, status codes, error codes and limit names: never a
//! path, a user or a token, so cardinality stays bounded and nothing personal leaks.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabel {
    namespace: String,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    auth_failures: Family<ReasonLabel, Counter>,
    rate_limited: Family<LimitLabel, Counter>,
    connect_budget: Family<NamespaceLabel, Counter>,
    pending_inits: Gauge,
    sessions: Gauge,
    stored_keys: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyservice");
        let requests = Family::default();
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let auth_failures = Family::default();
        let rate_limited = Family::default();
        let connect_budget = Family::default();
        let (pending_inits, sessions, stored_keys) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("requests", "HTTP requests by route and status", requests.clone());
        registry.register("request_duration_seconds", "Time to answer a request, by route", latency.clone());
        registry.register("auth_failures", "Refused signatures, by reason", auth_failures.clone());
        registry.register("rate_limited", "Requests refused by a rate limit or cap, by limit", rate_limited.clone());
        registry.register(
            "connect_budget_exceeded",
            "Connects refused because a namespace exceeded its budget",
            connect_budget.clone(),
        );
        registry.register(
            "pending_inits",
            "Init tokens waiting for /connect (at the last sweep)",
            pending_inits.clone(),
        );
        registry.register("sessions", "Sessions stored (at the last sweep)", sessions.clone());
        registry.register("stored_keys", "Key versions stored (at the last sweep)", stored_keys.clone());
        Self {
            registry,
            requests,
            latency,
            auth_failures,
            rate_limited,
            connect_budget,
            pending_inits,
            sessions,
            stored_keys,
        }
    }

    /// Counts one answered request.
    pub fn request(&self, route: &'static str, status: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { route, status }).inc();
        self.latency.get_or_create(&RouteLabel { route }).observe(seconds);
    }

    /// Counts a refused signature.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a request refused by a limit.
    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitLabel { limit }).inc();
    }

    /// Counts a connect refused by a namespace's budget.
    pub fn connect_budget_exceeded(&self, namespace: &str) {
        self.connect_budget.get_or_create(&NamespaceLabel { namespace: namespace.to_owned() }).inc();
    }

    /// Sets the stored-record gauges.
    pub fn set_counts(&self, pending_inits: u64, sessions: u64, stored_keys: u64) {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.pending_inits.set(clamp(pending_inits));
        self.sessions.set(clamp(sessions));
        self.stored_keys.set(clamp(stored_keys));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family() {
        let metrics = Metrics::new();
        metrics.request("/key", 200, 0.001);
        metrics.auth_failure("bad_signature");
        metrics.rate_limited("init");
        metrics.set_counts(1, 2, 3);
        let text = metrics.encode();
        for needle in [
            "keyservice_requests_total{route=\"/key\",status=\"200\"} 1",
            "keyservice_request_duration_seconds_count{route=\"/key\"} 1",
            "keyservice_auth_failures_total{reason=\"bad_signature\"} 1",
            "keyservice_rate_limited_total{limit=\"init\"} 1",
            "keyservice_stored_keys 3",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
