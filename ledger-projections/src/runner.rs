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
    /// The least time between the starts of two steps. Under a steady stream of commands a
    /// step takes what gathered meanwhile instead of stepping once per notification (each
    /// step is a transaction of its own); after a quiet spell the first step starts at once.
    pub step_interval_min: Duration,
}

/// The default [`RunnerOptions::step_interval_min`]: read tables trail a busy log by at most
/// this much more; a command answered under load costs ~30 % less (docs/benchmarks.md).
pub const STEP_INTERVAL_MIN: Duration = Duration::from_millis(20);

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            batch_size: 1_000,
            poll_interval: Duration::from_millis(500),
            step_interval_min: STEP_INTERVAL_MIN,
        }
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

/// The first wait after a runner's error; it doubles with every error in a row.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between a failing runner's tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a runner is doing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RunnerState {
    /// Waiting for the projection's leadership (another process leads it).
    Standby,
    Leading,
    /// Its last try failed; it tries again after a backoff.
    Failing {
        error: String,
        since: DateTime<Utc>,
    },
    /// Asked to stop, or its task ended.
    Stopped,
}

/// A runner's state, shared with whoever checks readiness. A runner whose task ends in any
/// way (a panic included) reads as stopped.
#[derive(Debug)]
pub struct RunnerHealth {
    projection: &'static str,
    state: std::sync::Mutex<RunnerState>,
}

impl RunnerHealth {
    pub fn projection(&self) -> &'static str {
        self.projection
    }

    pub fn state(&self) -> RunnerState {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, state: RunnerState) {
        let mut current = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A failure stays failing (with its first time) until a step works.
        if let (RunnerState::Failing { since, .. }, RunnerState::Failing { error, .. }) = (&*current, &state) {
            *current = RunnerState::Failing { error: error.clone(), since: *since };
            return;
        }
        *current = state;
    }

    /// Marks the runner stopped: call it when its task ends, however it ends.
    pub fn stopped(&self) {
        self.set(RunnerState::Stopped);
    }
}

/// Runs one projection.
#[derive(Debug, Clone)]
pub struct Runner {
    pool: PgPool,
    projection: Arc<dyn Projection>,
    options: RunnerOptions,
    health: Arc<RunnerHealth>,
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
    let every = projection.handles_every_event();
    for event in events.iter().filter(|event| every || handled.contains(&event.event_type.as_str())) {
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
    let payloads = PayloadSelection {
        types: &types,
        bytes_max: BATCH_PAYLOAD_BYTES_MAX,
        metadata: projection.reads_metadata(),
        hashes: projection.reads_hashes(),
    };
    Ok(EventStore::read_all_in_with_payloads(connection, after, limit, payloads).await?)
}

impl Runner {
    pub fn new(pool: PgPool, projection: Arc<dyn Projection>, options: RunnerOptions) -> Self {
        let health = Arc::new(RunnerHealth {
            projection: projection.name(),
            state: std::sync::Mutex::new(RunnerState::Standby),
        });
        Runner { pool, projection, options, health }
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

    /// What this runner is doing, for readiness checks.
    pub fn health(&self) -> &Arc<RunnerHealth> {
        &self.health
    }

    /// Runs until `shutdown` turns true: waits as a standby until it holds the projection's
    /// leadership lock, then steps, sleeping on notifications (or the poll interval) when
    /// caught up. Returns after the current step when asked to stop.
    ///
    /// Supervised: an error (the database gone, a batch that fails to apply) is logged, the
    /// runner lets go of its leadership, waits (doubling from [`BACKOFF_MIN`] to
    /// [`BACKOFF_MAX`]) and starts again from its checkpoint, for ever; nothing is lost or
    /// applied twice, since a step's rows and checkpoint commit together.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut backoff = BACKOFF_MIN;
        let outcome = loop {
            match self.lead_and_follow(&mut shutdown, &mut backoff).await {
                Ok(()) => break Ok(()),
                Err(error) => {
                    tracing::error!(projection = self.projection.name(), %error, retry_in = ?backoff,
                        "projector step failed; starting again from the checkpoint");
                    self.health.set(RunnerState::Failing { error: error.to_string(), since: Utc::now() });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    if *shutdown.borrow() {
                        break Ok(());
                    }
                }
            }
        };
        self.health.set(RunnerState::Stopped);
        outcome
    }

    /// Leads (after waiting as a standby) and steps until asked to stop; returns the first
    /// error. `backoff` goes back to its minimum after a step that works.
    async fn lead_and_follow(&self, shutdown: &mut watch::Receiver<bool>, backoff: &mut Duration) -> Result<()> {
        self.health.set(RunnerState::Standby);
        let Some(leadership) = self.lead(shutdown).await? else { return Ok(()) };
        tracing::info!(projection = self.projection.name(), "leading");
        let mut waker = AppendWaker::listen(&self.pool).await?;
        self.health.set(RunnerState::Leading);
        let mut last_step: Option<std::time::Instant> = None;
        while !*shutdown.borrow() {
            if let Some(wait) = last_step.and_then(|last| self.options.step_interval_min.checked_sub(last.elapsed())) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
            last_step = Some(std::time::Instant::now());
            // Held back, the events it waits for have been notified already: it steps again
            // soon instead of sleeping until the poll interval.
            let outcome = self.step().await?;
            *backoff = BACKOFF_MIN;
            self.health.set(RunnerState::Leading);
            let linger = self.projection.linger();
            let wait = match outcome {
                StepOutcome::Progressed { events, .. } if events >= self.options.batch_size || linger.is_zero() => {
                    continue;
                }
                StepOutcome::Progressed { .. } => Duration::ZERO,
                StepOutcome::HeldBack => HELD_BACK_RETRY,
                StepOutcome::CaughtUp => self.options.poll_interval,
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = waker.wait(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
            // Let a trickle gather into one batch (see `Projection::linger`).
            if !linger.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(linger) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        waker.close().await;
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

/// The lag of each named projection: every committed event after its checkpoint (all of the
/// log for one that has never run).
pub async fn lag(store: &EventStore, projection_names: &[&str]) -> Result<Vec<ProjectionLag>> {
    let head = store.head().await?;
    let (head_position, head_time) = head.unwrap_or((0, DateTime::<Utc>::UNIX_EPOCH));
    let stored = checkpoints(store.pool()).await?;
    let mut lags = Vec::new();
    for name in projection_names {
        let (checkpoint, events_applied) = stored
            .iter()
            .find(|stored| stored.projection_name == *name)
            .map_or((Checkpoint::START, 0), |stored| (stored.checkpoint, stored.events_applied));
        let checkpoint_time = store.recorded_at(checkpoint.global_position).await?;
        let behind = store.count_after(checkpoint).await?;
        let seconds_behind = match (behind, checkpoint_time) {
            (0, _) => Some(0.0),
            (_, Some(time)) => Some((head_time - time).num_milliseconds().max(0) as f64 / 1000.0),
            (_, None) => None,
        };
        lags.push(ProjectionLag {
            projection_name: (*name).to_owned(),
            checkpoint,
            events_applied,
            head_position,
            events_behind: behind,
            seconds_behind,
        });
    }
    Ok(lags)
}
