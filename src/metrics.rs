//! Prometheus metrics (`GET /metrics`, OpenMetrics text via `prometheus-client`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// One label: an array, so counting needs no allocation (a `Vec` label set cost one per call).
type Labels = [(&'static str, &'static str); 1];

/// Every `rejected_total` reason the server counts.
pub const REJECT_REASONS: [&str; 8] = [
    "unknown_bin",
    "rate_limited",
    "max_connections",
    "body_too_large",
    "body_timeout",
    "memory_budget",
    "invalid_signature",
    "store_unavailable",
];
/// Every `deliveries_total` outcome.
pub const DELIVERY_OUTCOMES: [&str; 4] = ["ok", "http_error", "error", "queue_full"];

/// The server's counters and gauges.
pub struct Metrics {
    registry: Registry,
    /// Captures stored.
    pub captures: Counter,
    /// Body bytes stored.
    pub capture_bytes: Counter,
    /// Requests refused, by reason.
    pub rejected: Family<Labels, Counter>,
    /// Captures evicted to stay within bounds.
    pub evictions: Counter,
    /// Live WebSocket viewers.
    pub viewers: Gauge,
    /// Delivery attempts by outcome (`ok`, `http_error`, `error`, `queue_full`).
    pub deliveries: Family<Labels, Counter>,
    /// Bytes of captures held (set at scrape time).
    pub stored_bytes: Gauge,
    /// Open client connections.
    pub connections: Gauge,
    /// `rejected` per reason of [`REJECT_REASONS`], resolved once: a family lookup hashes and
    /// locks, and floods of refused requests count here.
    reject_counters: [Counter; REJECT_REASONS.len()],
    /// `deliveries` per outcome of [`DELIVERY_OUTCOMES`], resolved once (a dead forward
    /// target counts one `queue_full` per capture).
    delivery_counters: [Counter; DELIVERY_OUTCOMES.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric under the `hookrelay_` prefix.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            captures: Counter::default(),
            capture_bytes: Counter::default(),
            rejected: Family::default(),
            evictions: Counter::default(),
            viewers: Gauge::default(),
            deliveries: Family::default(),
            stored_bytes: Gauge::default(),
            connections: Gauge::default(),
            registry: Registry::with_prefix("hookrelay"),
            reject_counters: Default::default(),
            delivery_counters: Default::default(),
        };
        // Every series exists from the start (at 0), and the hot paths skip the lookup.
        m.reject_counters =
            REJECT_REASONS.map(|r| m.rejected.get_or_create(&[("reason", r)]).clone());
        m.delivery_counters =
            DELIVERY_OUTCOMES.map(|o| m.deliveries.get_or_create(&[("outcome", o)]).clone());
        let registry = &mut m.registry;
        registry.register("captures", "Captures stored", m.captures.clone());
        registry.register(
            "capture_bytes",
            "Body bytes captured",
            m.capture_bytes.clone(),
        );
        registry.register(
            "rejected",
            "Requests refused, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "evictions",
            "Captures evicted to stay within bounds",
            m.evictions.clone(),
        );
        registry.register("viewers", "Live WebSocket viewers", m.viewers.clone());
        registry.register(
            "deliveries",
            "Delivery attempts by outcome",
            m.deliveries.clone(),
        );
        registry.register(
            "stored_bytes",
            "Bytes of captures held in memory",
            m.stored_bytes.clone(),
        );
        registry.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        m
    }

    /// Count a refused request.
    pub fn reject(&self, reason: &'static str) {
        count(
            &self.rejected,
            &REJECT_REASONS,
            &self.reject_counters,
            "reason",
            reason,
        );
    }

    /// Count a delivery attempt by its outcome.
    pub fn delivery(&self, outcome: &'static str) {
        count(
            &self.deliveries,
            &DELIVERY_OUTCOMES,
            &self.delivery_counters,
            "outcome",
            outcome,
        );
    }

    /// Render the text exposition.
    pub fn render(&self, stored_bytes: usize) -> String {
        self.stored_bytes.set(stored_bytes as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Keeps a gauge incremented while alive.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    /// Increment now, decrement on drop.
    pub fn new(gauge: &Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Increment the pre-resolved counter for `value`, or the family's (a value not listed).
fn count(
    family: &Family<Labels, Counter>,
    values: &[&str],
    counters: &[Counter],
    label: &'static str,
    value: &'static str,
) {
    match values.iter().position(|v| *v == value) {
        Some(i) => {
            counters[i].inc();
        }
        None => {
            family.get_or_create(&[(label, value)]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_and_unlisted_labels_both_count() {
        let m = Metrics::new();
        let fresh = m.render(0);
        for r in REJECT_REASONS {
            assert!(
                fresh.contains(&format!("hookrelay_rejected_total{{reason=\"{r}\"}} 0")),
                "{fresh}"
            );
        }
        m.reject("unknown_bin");
        m.reject("unknown_bin");
        m.reject("not_listed");
        m.delivery("queue_full");
        let out = m.render(0);
        for line in [
            r#"hookrelay_rejected_total{reason="unknown_bin"} 2"#,
            r#"hookrelay_rejected_total{reason="not_listed"} 1"#,
            r#"hookrelay_deliveries_total{outcome="queue_full"} 1"#,
            r#"hookrelay_deliveries_total{outcome="ok"} 0"#,
        ] {
            assert!(out.contains(line), "{line} missing:\n{out}");
        }
    }
}
