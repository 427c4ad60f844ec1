//! What a projection is.
//!
//! A projection writes a batch's rows in a few statements, not one per row: `apply_all`
//! gathers rows into column arrays and writes each table with one `insert ... select from
//! unnest(...)` (or `update ... from unnest(...)`), summing what adds up (account balances)
//! and keeping the last of what is overwritten (a wallet's balance). An event that reads rows
//! back or changes a row in place (a failed payment reads its postings, a run completes and
//! its reports are written) first writes what was gathered before it, so the result is the
//! one of applying event by event; a test applies the log one event per step and compares
//! every table with whole-batch rebuilds.
//!
//! Projections are deterministic: no clock, no randomness, no outside calls; times come from
//! `recorded_at`. Each writes only its own schema, so each rebuilds alone.

use async_trait::async_trait;
use ledger_store::RecordedEvent;
use sqlx::PgConnection;

use crate::error::Result;
use ledger_codec::AnyEvent;

/// Materializes events into the tables of one read schema.
///
/// `apply` runs inside the runner's transaction with `search_path` set to the schema being
/// written (the live one, or a shadow during a rebuild), so its SQL names tables without a
/// schema. It must be deterministic: no clock, no randomness, no outside calls; times come
/// from the events. That is what makes a rebuild equal to the live tables.
#[async_trait]
pub trait Projection: Send + Sync + std::fmt::Debug + 'static {
    /// The checkpoint key, stable for ever.
    fn name(&self) -> &'static str;

    /// The read schema it owns.
    fn schema(&self) -> &'static str;

    /// The event types it handles; others are skipped (the checkpoint still advances).
    fn event_types(&self) -> Vec<&'static str>;

    /// The handled event types whose payload it reads; the others it gets as
    /// [`AnyEvent::Other`] without their payload being fetched. All handled types by default.
    fn payload_types(&self) -> Vec<&'static str> {
        self.event_types()
    }

    /// Whether it reads events' metadata (who acted, under which key). Without, a runner's
    /// reads leave the metadata and the hashes out.
    fn reads_metadata(&self) -> bool {
        false
    }

    /// Whether it reads events' hashes (the log's tree).
    fn reads_hashes(&self) -> bool {
        false
    }

    /// Whether it takes every event of the log, of any type (the log's tree); then
    /// `event_types` is ignored.
    fn handles_every_event(&self) -> bool {
        false
    }

    /// How long its runner lets events gather after a step that was not full (or a wake-up)
    /// before it reads again. Zero (the default) reads at once: read tables are read right
    /// after a write. The log's tree lingers, so a steady trickle of appends costs it a
    /// transaction per batch, not per append.
    fn linger(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Applies one event.
    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()>;

    /// Applies a batch of handled events in log order. By default one by one; a projection
    /// may write a batch's rows in one statement instead.
    async fn apply_all(&self, connection: &mut PgConnection, events: &[(&RecordedEvent, AnyEvent)]) -> Result<()> {
        for (event, decoded) in events {
            self.apply(connection, event, decoded).await?;
        }
        Ok(())
    }

    /// Empties its tables (the runner then replays from the start).
    async fn reset(&self, connection: &mut PgConnection) -> Result<()> {
        crate::schema::truncate_tables(connection, self.schema()).await
    }
}
