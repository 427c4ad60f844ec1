//! Prometheus metrics: append latency, commands, and projection lag (read at scrape time).

use std::sync::Arc;

use ledger_app::CommandMetrics;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use ledger_projections::ProjectionLag;

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// The command side's, registered here.
    pub commands: Arc<CommandMetrics>,
    lag_events: IntGaugeVec,
    lag_seconds: GaugeVec,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    checkpoint_tree_size: prometheus::IntGauge,
    checkpoint_age_seconds: prometheus::Gauge,
}

/// The latest signed checkpoint, for the gauges: its tree size and age in seconds.
#[derive(Debug, Clone, Copy)]
pub struct LatestCheckpoint {
    pub tree_size: u64,
    pub age_seconds: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("payroll_ledger".to_owned()), None).expect("a valid prefix");
        let commands = Arc::new(CommandMetrics::registered(&registry));
        let lag_events = IntGaugeVec::new(
            Opts::new("projection_lag_events", "Committed events a projection has not applied yet"),
            &["projection"],
        )
        .expect("valid gauge");
        let lag_seconds = GaugeVec::new(
            Opts::new("projection_lag_seconds", "Age of a projection's checkpoint relative to the log's head"),
            &["projection"],
        )
        .expect("valid gauge");
        let labels = &["method", "route", "status"];
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered, by method, route and status"),
            labels,
        )
        .expect("valid counter");
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer an HTTP request, by method, route and status",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            labels,
        )
        .expect("valid histogram");
        let checkpoint_tree_size = prometheus::IntGauge::new(
            "checkpoint_tree_size",
            "Events covered by the latest signed checkpoint of the log (0 before the first)",
        )
        .expect("valid gauge");
        let checkpoint_age_seconds = prometheus::Gauge::new(
            "checkpoint_age_seconds",
            "Seconds since the latest signed checkpoint of the log (NaN before the first)",
        )
        .expect("valid gauge");
        registry.register(Box::new(checkpoint_tree_size.clone())).expect("registered once");
        registry.register(Box::new(checkpoint_age_seconds.clone())).expect("registered once");
        registry.register(Box::new(http_requests.clone())).expect("registered once");
        registry.register(Box::new(http_seconds.clone())).expect("registered once");
        registry.register(Box::new(lag_events.clone())).expect("registered once");
        registry.register(Box::new(lag_seconds.clone())).expect("registered once");
        Metrics {
            registry,
            commands,
            lag_events,
            lag_seconds,
            http_requests,
            http_seconds,
            checkpoint_tree_size,
            checkpoint_age_seconds,
        }
    }

    /// One answered request. `route` is the matched route's template, never the raw path.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, latency: std::time::Duration) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_seconds.with_label_values(&labels).observe(latency.as_secs_f64());
    }

    /// The text exposition, with the projection lag and the latest checkpoint as of now.
    pub fn render(&self, lags: &[ProjectionLag], checkpoint: Option<LatestCheckpoint>) -> String {
        self.checkpoint_tree_size.set(checkpoint.map_or(0, |checkpoint| checkpoint.tree_size as i64));
        self.checkpoint_age_seconds.set(checkpoint.map_or(f64::NAN, |checkpoint| checkpoint.age_seconds));
        for lag in lags {
            self.lag_events.with_label_values(&[lag.projection_name.as_str()]).set(lag.events_behind);
            self.lag_seconds
                .with_label_values(&[lag.projection_name.as_str()])
                .set(lag.seconds_behind.unwrap_or(f64::NAN));
        }
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("metrics encode");
        String::from_utf8(buffer).expect("metrics are text")
    }
}
