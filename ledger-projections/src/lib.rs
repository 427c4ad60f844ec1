//! Projections: the log materialized into read tables, one Postgres schema per area.
//!
//! A [`Projection`] applies events to its schema's tables; a [`Runner`] feeds it batches in
//! the store's gap-free order and saves its checkpoint in the same transaction; [`rebuild`]
//! replays it into a shadow schema and swaps that in; [`replay`] answers "what was it then"
//! from the events alone.

mod error;
mod projection;
pub mod projections;
pub mod rebuild;
pub mod replay;
pub mod runner;
pub mod schema;

pub use error::{ProjectionError, Result};
pub use ledger_codec::AnyEvent;
pub use projection::Projection;
pub use rebuild::{RebuildReport, rebuild};
pub use runner::{ProjectionLag, Runner, RunnerHealth, RunnerOptions, RunnerState, StepOutcome, lag};
