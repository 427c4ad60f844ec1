//! The projector runner: reads a batch after the checkpoint, applies it and stores the new
//! checkpoint in one transaction; one active runner per projection across processes.
//!
//! A step locks the checkpoint row (`FOR UPDATE`), reads a batch with the gap-free
//! `read_all`, applies it with `search_path` set to the schema and saves the checkpoint: a
//! crash anywhere rolls all of it back, and a second runner waits on the row, so no event is
//! applied twice even without leadership. A batch ends at its size in events or once its
//! payload text reaches [`BATCH_PAYLOAD_BYTES_MAX`]; a runner fetches payloads only of the
//! types its projection decodes, and metadata only for a projection that reads it (the
//! audit log), so a run's calculation (100 chunks of ~700 KB at 100,000 employees) is read a
//! few chunks at a time.
//!
//! Leadership: [`Runner::run`] takes a session advisory lock (class `LEDP`, key the
//! projection's name) on a connection of its own; standbys retry every poll interval and
//! take over when the leader's connection closes. Caught up, a runner waits for `NOTIFY
//! ledger_events` or its poll interval, whichever comes first.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ledger_store::checkpoint::{checkpoints, lock_checkpoint, save_checkpoint};
use ledger_store::{AppendWaker, Checkpoint, EventStore, PayloadSelection, RecordedEvent};
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;

use crate::error::Result;
use crate::projection::Projection;
use crate::schema::quote;
use ledger_codec::{AnyEvent, decode};

/// The advisory-lock class of projection leadership (two-integer key space).
const LOCK_CLASS_PROJECTION: i32 = 0x4c45_4450; // "LEDP"

#[derive(Debug, Clone, Copy)]
pub struct RunnerOptions {
    /// Events per transaction.
    pub batch_size: usize,
    /// How long to wait for a notification before reading anyway; also how often a standby
    /// tries to take over.
    pub poll_interval: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions { batch_size: 1_000, poll_interval: Duration::from_millis(500) }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Applied this many events (and skipped the rest of the batch's, which it does not handle).
    Progressed {
        events: usize,
        applied: usize,
    },
    CaughtUp,
    /// Nothing to read yet, though events after the checkpoint have committed: a transaction
    /// that began before them is still running (it may append events that come first, so the
    /// gap-free read waits for it). Worth another step soon; no notification will come.
    HeldBack,
}

/// How long a runner waits before stepping again when it was held back.
pub const HELD_BACK_RETRY: Duration = Duration::from_millis(50);

/// Runs one projection.
#[derive(Debug, Clone)]
pub struct Runner {
    pool: PgPool,
    projection: Arc<dyn Projection>,
    options: RunnerOptions,
}

/// Applies `events` (already read in gap-free order) with `search_path` set to `schema`.
/// Returns how many the projection handled.
pub(crate) async fn apply_batch(
    connection: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
    events: &[RecordedEvent],
) -> Result<usize> {
    sqlx::query(&format!("set local search_path to {}, public", quote(schema))).execute(&mut *connection).await?;
    let (handled, with_payload) = (projection.event_types(), projection.payload_types());
    let mut batch = Vec::with_capacity(events.len());
    for event in events.iter().filter(|event| handled.contains(&event.event_type.as_str())) {
        let decoded = if with_payload.contains(&event.event_type.as_str()) { decode(event)? } else { AnyEvent::Other };
        batch.push((event, decoded));
    }
    projection.apply_all(connection, &batch).await?;
    Ok(batch.len())
}

/// The payload text at which a batch ends: ordinary events fill a batch by count long
/// before, a run's calculation chunks (700 KB of text and 1,000 decoded items each) by bytes.
pub const BATCH_PAYLOAD_BYTES_MAX: usize = 4 << 20;

/// The next events after `after` for `projection`, with the payloads it reads, within
/// [`BATCH_PAYLOAD_BYTES_MAX`].
pub(crate) async fn read_batch(
    connection: &mut PgConnection,
    projection: &dyn Projection,
    after: Checkpoint,
    limit: usize,
) -> Result<Vec<RecordedEvent>> {
    let types = projection.payload_types();
    let payloads =
        PayloadSelection { types: &types, bytes_max: BATCH_PAYLOAD_BYTES_MAX, metadata: projection.reads_metadata() };
    Ok(EventStore::read_all_in_with_payloads(connection, after, limit, payloads).await?)
}

impl Runner {
    pub fn new(pool: PgPool, projection: Arc<dyn Projection>, options: RunnerOptions) -> Self {
        Runner { pool, projection, options }
    }

    pub fn projection(&self) -> &Arc<dyn Projection> {
        &self.projection
    }

    /// One transaction: lock the checkpoint, read a batch after it, apply, save. A crash at
    /// any point rolls all of it back: nothing is lost, nothing applied twice.
    #[tracing::instrument(name = "projector_step", level = "debug", skip_all, fields(projection = self.projection.name()))]
    pub async fn step(&self) -> Result<StepOutcome> {
        let mut transaction = self.pool.begin().await?;
        let name = self.projection.name();
        let checkpoint = lock_checkpoint(&mut transaction, name).await?;
        let events =
            read_batch(&mut transaction, self.projection.as_ref(), checkpoint, self.options.batch_size).await?;
        let Some(last) = events.last() else {
            let held_back = EventStore::committed_after(&mut transaction, checkpoint).await?;
            transaction.rollback().await?;
            return Ok(if held_back { StepOutcome::HeldBack } else { StepOutcome::CaughtUp });
        };
        let next = last.checkpoint();
        let applied =
            apply_batch(&mut transaction, self.projection.as_ref(), self.projection.schema(), &events).await?;
        save_checkpoint(&mut transaction, name, next, events.len() as i64).await?;
        transaction.commit().await?;
        Ok(StepOutcome::Progressed { events: events.len(), applied })
    }

    /// Steps until caught up (waiting out a transaction that holds the log back); returns the
    /// events read. For tests and one-off catch-ups.
    pub async fn catch_up(&self) -> Result<u64> {
        let mut total = 0u64;
        loop {
            match self.step().await? {
                StepOutcome::Progressed { events, .. } => total += events as u64,
                StepOutcome::HeldBack => tokio::time::sleep(HELD_BACK_RETRY).await,
                StepOutcome::CaughtUp => return Ok(total),
            }
        }
    }

    /// Runs until `shutdown` turns true: waits as a standby until it holds the projection's
    /// leadership lock, then steps, sleeping on notifications (or the poll interval) when
    /// caught up. Returns after the current step when asked to stop.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let Some(leadership) = self.lead(&mut shutdown).await? else { return Ok(()) };
        tracing::info!(projection = self.projection.name(), "leading");
        let mut waker = AppendWaker::listen(&self.pool).await?;
        while !*shutdown.borrow() {
            // Held back, the events it waits for have been notified already: it steps again
            // soon instead of sleeping until the poll interval.
            let wait = match self.step().await? {
                StepOutcome::Progressed { .. } => continue,
                StepOutcome::HeldBack => HELD_BACK_RETRY,
                StepOutcome::CaughtUp => self.options.poll_interval,
            };
            tokio::select! {
                _ = waker.wait(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        leadership.close().await?;
        Ok(())
    }

    /// Takes the leadership lock on a connection of its own, held for the runner's life
    /// (closing the connection releases it). `None` when asked to stop while waiting.
    async fn lead(&self, shutdown: &mut watch::Receiver<bool>) -> Result<Option<PgConnection>> {
        let mut connection = self.pool.acquire().await?.detach();
        loop {
            let leading: bool = sqlx::query_scalar("select pg_try_advisory_lock($1, hashtext($2))")
                .bind(LOCK_CLASS_PROJECTION)
                .bind(self.projection.name())
                .fetch_one(&mut connection)
                .await?;
            if leading {
                return Ok(Some(connection));
            }
            if *shutdown.borrow() {
                connection.close().await?;
                return Ok(None);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.options.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// How far a projection is behind the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionLag {
    pub projection_name: String,
    pub checkpoint: Checkpoint,
    pub events_applied: i64,
    pub head_position: i64,
    /// Committed events after the checkpoint.
    pub events_behind: i64,
    /// How much older the checkpoint's event is than the head's; zero when caught up, `None`
    /// before the first event is applied.
    pub seconds_behind: Option<f64>,
}

/// The lag of every projection that has a checkpoint.
pub async fn lag(store: &EventStore) -> Result<Vec<ProjectionLag>> {
    let head = store.head().await?;
    let (head_position, head_time) = head.unwrap_or((0, DateTime::<Utc>::UNIX_EPOCH));
    let mut lags = Vec::new();
    for stored in checkpoints(store.pool()).await? {
        let checkpoint_time = store.recorded_at(stored.checkpoint.global_position).await?;
        let behind = store.count_after(stored.checkpoint).await?;
        let seconds_behind = match (behind, checkpoint_time) {
            (0, _) => Some(0.0),
            (_, Some(time)) => Some((head_time - time).num_milliseconds().max(0) as f64 / 1000.0),
            (_, None) => None,
        };
        lags.push(ProjectionLag {
            projection_name: stored.projection_name,
            checkpoint: stored.checkpoint,
            events_applied: stored.events_applied,
            head_position,
            events_behind: behind,
            seconds_behind,
        });
    }
    Ok(lags)
}
