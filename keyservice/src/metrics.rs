//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! Labels are fixed route names, status codes, error codes and limit names: never a
//! path, a user or a token, so cardinality stays bounded and nothing personal leaks.
//! Namespace names tell an outsider who the customers are: families labelled with them
//! are served only on the separate metrics listener (`metrics_listen`).

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
struct DiskLabel {
    disk: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceBudgetLabels {
    namespace: String,
    budget: &'static str,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Families labelled by namespace: they tell who the customers are, so they are
    /// served only on the separate metrics listener.
    by_namespace: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    auth_failures: Family<ReasonLabel, Counter>,
    rate_limited: Family<LimitLabel, Counter>,
    connect_budget: Counter,
    namespace_budget: Family<NamespaceBudgetLabels, Counter>,
    connections_refused: Family<ReasonLabel, Counter>,
    insufficient_storage: Family<DiskLabel, Counter>,
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
        let connect_budget = Counter::default();
        let namespace_budget = Family::default();
        let mut by_namespace = Registry::with_prefix("keyservice");
        by_namespace.register(
            "namespace_budget_exceeded",
            "Requests refused because a namespace exceeded a budget (connect, erase), by namespace",
            namespace_budget.clone(),
        );
        let connections_refused = Family::default();
        let insufficient_storage = Family::default();
        let (pending_inits, sessions, stored_keys) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("requests", "HTTP requests by route and status", requests.clone());
        registry.register("request_duration_seconds", "Time to answer a request, by route", latency.clone());
        registry.register("auth_failures", "Refused signatures, by reason", auth_failures.clone());
        registry.register("rate_limited", "Requests refused by a rate limit or cap, by limit", rate_limited.clone());
        registry.register(
            "insufficient_storage",
            "Writes refused because a disk was below its free-space reserve, by disk",
            insufficient_storage.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at accept, by reason (per_client cap, accept_failed)",
            connections_refused.clone(),
        );
        registry.register(
            "connect_budget_exceeded",
            "Connects refused because a namespace exceeded its budget (per namespace: on the metrics listener only)",
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
            by_namespace,
            namespace_budget,
            connections_refused,
            insufficient_storage,
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

    /// Counts a request refused by a namespace's budget (`connect` or `erase`).
    pub fn namespace_budget_exceeded(&self, namespace: &str, budget: &'static str) {
        if budget == "connect" {
            self.connect_budget.inc();
        }
        self.namespace_budget.get_or_create(&NamespaceBudgetLabels { namespace: namespace.to_owned(), budget }).inc();
    }

    /// Counts a write refused for want of free space on `disk`.
    pub fn insufficient_storage(&self, disk: &'static str) {
        self.insufficient_storage.get_or_create(&DiskLabel { disk }).inc();
    }

    /// Counts a connection closed at accept.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Sets the stored-record gauges.
    pub fn set_counts(&self, pending_inits: u64, sessions: u64, stored_keys: u64) {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.pending_inits.set(clamp(pending_inits));
        self.sessions.set(clamp(sessions));
        self.stored_keys.set(clamp(stored_keys));
    }

    /// The OpenMetrics text exposition; with `namespaces`, also the families labelled
    /// by namespace.
    pub fn encode(&self, namespaces: bool) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        if namespaces {
            prometheus_client::encoding::text::encode_registry(&mut out, &self.by_namespace)
                .expect("encoding into a String cannot fail");
        }
        prometheus_client::encoding::text::encode_eof(&mut out).expect("encoding into a String cannot fail");
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
        metrics.namespace_budget_exceeded("acme", "connect");
        metrics.connection_refused("per_client");
        let text = metrics.encode(false);
        for needle in [
            "keyservice_requests_total{route=\"/key\",status=\"200\"} 1",
            "keyservice_request_duration_seconds_count{route=\"/key\"} 1",
            "keyservice_auth_failures_total{reason=\"bad_signature\"} 1",
            "keyservice_rate_limited_total{limit=\"init\"} 1",
            "keyservice_stored_keys 3",
            "keyservice_connect_budget_exceeded_total 1",
            "keyservice_connections_refused_total{reason=\"per_client\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn namespace_names_appear_only_when_asked_for() {
        let metrics = Metrics::new();
        metrics.namespace_budget_exceeded("acme-customer", "erase");
        assert!(!metrics.encode(false).contains("acme-customer"));
        let private = metrics.encode(true);
        assert!(
            private
                .contains("keyservice_namespace_budget_exceeded_total{namespace=\"acme-customer\",budget=\"erase\"} 1"),
            "{private}"
        );
        assert_eq!(private.matches("# EOF").count(), 1);
    }
}
