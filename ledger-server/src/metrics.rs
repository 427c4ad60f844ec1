//! Prometheus metrics: append latency, commands, and projection lag (read at scrape time).

use std::sync::Arc;

use ledger_app::CommandMetrics;
use prometheus::{Encoder, GaugeVec, IntGaugeVec, Opts, Registry, TextEncoder};

use ledger_projections::ProjectionLag;

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// The command side's, registered here.
    pub commands: Arc<CommandMetrics>,
    lag_events: IntGaugeVec,
    lag_seconds: GaugeVec,
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
        registry.register(Box::new(lag_events.clone())).expect("registered once");
        registry.register(Box::new(lag_seconds.clone())).expect("registered once");
        Metrics { registry, commands, lag_events, lag_seconds }
    }

    /// The text exposition, with the projection lag as of now.
    pub fn render(&self, lags: &[ProjectionLag]) -> String {
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
