//! The command side of the payroll ledger: turning commands into events.
//!
//! [`Ledger`] handles one aggregate's command (load the stream, fold, decide, append with the
//! expected version, retry on a version conflict); [`operations`] are the payroll's
//! operations over several aggregates (calculate, process, reverse, withdraw, settle);
//! [`staff`] hires in bulk. Facts a command needs from elsewhere are looked up in the read
//! tables, after waiting for the projections that write them, by name: this crate does not
//! depend on the projections. The HTTP API and the CLI (`ledger-server`) call into it.

mod context;
mod error;
mod ledger;
mod metrics;
pub mod operations;
mod retry;
pub mod staff;

pub use context::{Actor, Context, Idempotency, Written};
pub use error::{Error, Result};
pub use ledger::{
    CACHED_RUNS_MAX, COMMAND_ATTEMPTS_MAX, KeyUse, Ledger, Loaded, PAY_BATCH_ITEMS, WAIT_FOR_POSITION_MAX, fold_stream,
};
pub use metrics::CommandMetrics;
pub use retry::Attempts;
