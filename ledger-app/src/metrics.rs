//! What the command side measures: append latency and commands by outcome. The server
//! registers them in its Prometheus registry.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct CommandMetrics {
    pub append_seconds: Histogram,
    pub commands: IntCounterVec,
}

impl CommandMetrics {
    /// The metrics, registered in `registry`.
    ///
    /// # Panics
    /// When `registry` holds them already (a programmer error: one registry each).
    pub fn registered(registry: &Registry) -> CommandMetrics {
        let append_seconds = Histogram::with_opts(
            HistogramOpts::new("append_seconds", "Time to append one request to the event store")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )
        .expect("valid histogram");
        let commands = IntCounterVec::new(Opts::new("commands_total", "Commands handled, by outcome"), &["outcome"])
            .expect("valid counter");
        registry.register(Box::new(append_seconds.clone())).expect("registered once");
        registry.register(Box::new(commands.clone())).expect("registered once");
        CommandMetrics { append_seconds, commands }
    }

    /// Metrics of a ledger nobody scrapes (a CLI command, a test).
    pub fn unregistered() -> CommandMetrics {
        CommandMetrics::registered(&Registry::new())
    }

    pub(crate) fn observe_append(&self, started: std::time::Instant, succeeded: bool) {
        self.append_seconds.observe(started.elapsed().as_secs_f64());
        self.commands.with_label_values(&[if succeeded { "ok" } else { "rejected" }]).inc();
    }
}
