//! Projection checkpoints, read and written inside the projector's own transaction, so that
//! its rows and its checkpoint commit together.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};

use crate::error::Result;
use crate::event::Checkpoint;

/// A projection's stored progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredCheckpoint {
    pub projection_name: String,
    pub checkpoint: Checkpoint,
    pub events_applied: i64,
    pub updated_at: DateTime<Utc>,
}

/// Locks the projection's checkpoint row for the rest of the transaction (creating it at
/// the start if need be) and returns it. A second runner of the same projection waits here,
/// so no event is applied twice even without the leadership lock.
pub async fn lock_checkpoint(connection: &mut PgConnection, projection_name: &str) -> Result<Checkpoint> {
    sqlx::query("insert into ledger.projection_checkpoints (projection_name) values ($1) on conflict do nothing")
        .bind(projection_name)
        .execute(&mut *connection)
        .await?;
    let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
        "select transaction_id::text::int8, global_position from ledger.projection_checkpoints \
         where projection_name = $1 for update",
    )
    .bind(projection_name)
    .fetch_one(&mut *connection)
    .await?;
    Ok(Checkpoint { transaction_id: transaction_id as u64, global_position })
}

/// Moves the projection's checkpoint forward by `events_applied` events. Call it in the
/// transaction that applied them, after `lock_checkpoint`.
pub async fn save_checkpoint(
    connection: &mut PgConnection,
    projection_name: &str,
    checkpoint: Checkpoint,
    events_applied: i64,
) -> Result<()> {
    sqlx::query(
        "update ledger.projection_checkpoints \
         set transaction_id = $2::text::xid8, global_position = $3, events_applied = events_applied + $4, updated_at = now() \
         where projection_name = $1",
    )
    .bind(projection_name)
    .bind(checkpoint.transaction_id.to_string())
    .bind(checkpoint.global_position)
    .bind(events_applied)
    .execute(connection)
    .await?;
    Ok(())
}

/// Sets the checkpoint outright (after a rebuild).
pub async fn reset_checkpoint(
    connection: &mut PgConnection,
    projection_name: &str,
    checkpoint: Checkpoint,
    events_applied: i64,
) -> Result<()> {
    sqlx::query(
        "update ledger.projection_checkpoints \
         set transaction_id = $2::text::xid8, global_position = $3, events_applied = $4, updated_at = now() \
         where projection_name = $1",
    )
    .bind(projection_name)
    .bind(checkpoint.transaction_id.to_string())
    .bind(checkpoint.global_position)
    .bind(events_applied)
    .execute(connection)
    .await?;
    Ok(())
}

/// Every projection's stored progress.
pub async fn checkpoints(executor: impl PgExecutor<'_>) -> Result<Vec<StoredCheckpoint>> {
    let rows: Vec<(String, i64, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "select projection_name, transaction_id::text::int8, global_position, events_applied, updated_at \
         from ledger.projection_checkpoints order by projection_name",
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(projection_name, transaction_id, global_position, events_applied, updated_at)| StoredCheckpoint {
            projection_name,
            checkpoint: Checkpoint { transaction_id: transaction_id as u64, global_position },
            events_applied,
            updated_at,
        })
        .collect())
}

/// Whether every named projection has applied the event at `checkpoint` (and so, in the log's
/// order, every event before it). False while any has not, or has no checkpoint yet.
pub async fn applied_through(
    executor: impl PgExecutor<'_>,
    checkpoint: Checkpoint,
    projection_names: &[&str],
) -> Result<bool> {
    let names: Vec<String> = projection_names.iter().map(|name| (*name).to_owned()).collect();
    let through: i64 = sqlx::query_scalar(
        "select count(*) from ledger.projection_checkpoints c where c.projection_name = any($3) \
           and (c.transaction_id, c.global_position) >= ($1::text::xid8, $2)",
    )
    .bind(checkpoint.transaction_id.to_string())
    .bind(checkpoint.global_position)
    .bind(&names)
    .fetch_one(executor)
    .await?;
    Ok(through == names.len() as i64)
}

/// Whether every named projection has applied every committed event at or below
/// `global_position` (compared in the log's `(transaction_id, global_position)` order): the
/// event there, when there is one, and any before it. A position with no event (0, a gap
/// left by a refused append) needs only those before it. False while any projection has
/// not, or has no checkpoint yet. Costs what a projection lags: it looks only at the events
/// after each checkpoint.
pub async fn projected(executor: impl PgExecutor<'_>, global_position: i64, projection_names: &[&str]) -> Result<bool> {
    let names: Vec<String> = projection_names.iter().map(|name| (*name).to_owned()).collect();
    let (behind, checkpoints): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where exists ( \
                    select 1 from ledger.events e \
                    where (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position) \
                      and e.global_position <= $1)), \
                count(*) \
         from ledger.projection_checkpoints c where c.projection_name = any($2)",
    )
    .bind(global_position)
    .bind(&names)
    .fetch_one(executor)
    .await?;
    Ok(behind == 0 && checkpoints == names.len() as i64)
}

/// A projection that has committed events to apply and has not moved for a while.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StalledProjection {
    pub projection_name: String,
    /// Its checkpoint's position; `None` when it has never run.
    pub global_position: Option<i64>,
    /// How long ago the first event it has not applied was recorded.
    pub waiting_seconds: f64,
}

/// The named projections that have committed events to apply recorded more than `after`
/// ago, and whose checkpoint has not moved for as long (or that have never run).
pub async fn stalled(
    executor: impl PgExecutor<'_>,
    projection_names: &[&str],
    after: std::time::Duration,
) -> Result<Vec<StalledProjection>> {
    let names: Vec<String> = projection_names.iter().map(|name| (*name).to_owned()).collect();
    let rows: Vec<(String, Option<i64>, f64)> = sqlx::query_as(
        "select name, global_position, waiting from ( \
             select n.name, c.global_position, c.updated_at, \
                 extract(epoch from now() - ( \
                     select e.recorded_at from ledger.events e \
                     where (e.transaction_id, e.global_position) > \
                           (coalesce(c.transaction_id, '0'::xid8), coalesce(c.global_position, 0)) \
                     order by e.transaction_id, e.global_position limit 1))::float8 as waiting \
             from unnest($1::text[]) as n(name) \
             left join ledger.projection_checkpoints c on c.projection_name = n.name) behind \
         where waiting > $2 and (updated_at is null or updated_at < now() - make_interval(secs => $2)) \
         order by name",
    )
    .bind(&names)
    .bind(after.as_secs_f64())
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(projection_name, global_position, waiting_seconds)| StalledProjection {
            projection_name,
            global_position,
            waiting_seconds,
        })
        .collect())
}
