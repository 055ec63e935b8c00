//! Prometheus metrics (`GET /metrics`, OpenMetrics text via `prometheus-client`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

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
        };
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
        self.rejected.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// Count a delivery attempt by its outcome.
    pub fn delivery(&self, outcome: &'static str) {
        self.deliveries
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
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
