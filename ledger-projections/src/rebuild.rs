//! Rebuild: replay a projection from the start into a shadow schema, then swap it in, so
//! readers never see a half-built table.

use ledger_store::Checkpoint;
use ledger_store::checkpoint::{lock_checkpoint, reset_checkpoint};
use sqlx::{Connection, PgConnection, PgPool};

use crate::error::Result;
use crate::projection::Projection;
use crate::runner::{apply_batch, read_batch};
use crate::schema::{quote, tables};

/// The advisory-lock class of rebuilds (two-integer key space): one rebuild per projection
/// at a time.
const LOCK_CLASS_REBUILD: i32 = 0x4c45_4452; // "LEDR"

/// Events per rebuild transaction.
pub const REBUILD_BATCH_SIZE: usize = 5_000;

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildReport {
    pub events_read: u64,
    pub events_applied: u64,
    pub checkpoint: Checkpoint,
}

fn shadow_schema(projection: &dyn Projection) -> String {
    format!("{}__rebuild", projection.schema())
}

/// Creates an empty shadow schema with the live schema's tables (columns, defaults,
/// constraints, indexes) and reference data.
async fn create_shadow(connection: &mut PgConnection, projection: &dyn Projection) -> Result<String> {
    let (live, shadow) = (projection.schema(), shadow_schema(projection));
    sqlx::query(&format!("drop schema if exists {} cascade", quote(&shadow))).execute(&mut *connection).await?;
    sqlx::query(&format!("create schema {}", quote(&shadow))).execute(&mut *connection).await?;
    for table in tables(connection, live).await? {
        let (live_table, shadow_table) =
            (format!("{}.{}", quote(live), quote(&table)), format!("{}.{}", quote(&shadow), quote(&table)));
        sqlx::query(&format!("create table {shadow_table} (like {live_table} including all)"))
            .execute(&mut *connection)
            .await?;
    }
    Ok(shadow)
}

/// Rebuilds one projection from the first event. Live runners keep serving the old tables
/// until the swap; the swap waits for their current step (the checkpoint row lock) and they
/// continue from the rebuilt checkpoint. `progress` gets the events read so far.
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<RebuildReport> {
    let mut guard = pool.acquire().await?.detach();
    sqlx::query("select pg_advisory_lock($1, hashtext($2))")
        .bind(LOCK_CLASS_REBUILD)
        .bind(projection.name())
        .execute(&mut guard)
        .await?;
    let shadow = create_shadow(&mut guard, projection).await?;
    let mut report = RebuildReport { events_read: 0, events_applied: 0, checkpoint: Checkpoint::START };
    // Catch up without holding the checkpoint, so live runners go on meanwhile.
    while catch_up_shadow(pool.begin().await?, projection, &shadow, &mut report).await? {
        progress(report.events_read);
    }
    // Then hold the checkpoint row, read the last events and swap, in one transaction.
    let mut transaction = pool.begin().await?;
    lock_checkpoint(&mut transaction, projection.name()).await?;
    loop {
        let events = read_batch(&mut transaction, projection, report.checkpoint, REBUILD_BATCH_SIZE).await?;
        let Some(last) = events.last() else { break };
        report.checkpoint = last.checkpoint();
        report.events_read += events.len() as u64;
        report.events_applied += apply_batch(&mut transaction, projection, &shadow, &events).await? as u64;
    }
    let live = quote(projection.schema());
    sqlx::query(&format!("drop schema {live} cascade")).execute(&mut *transaction).await?;
    sqlx::query(&format!("alter schema {} rename to {live}", quote(&shadow))).execute(&mut *transaction).await?;
    sqlx::query("select ledger.grant_read_schema($1)").bind(projection.schema()).execute(&mut *transaction).await?;
    reset_checkpoint(&mut transaction, projection.name(), report.checkpoint, report.events_read as i64).await?;
    transaction.commit().await?;
    progress(report.events_read);
    guard.close().await?;
    Ok(report)
}

/// Applies one batch to the shadow in its own transaction; false when there was none.
async fn catch_up_shadow(
    mut transaction: sqlx::Transaction<'_, sqlx::Postgres>,
    projection: &dyn Projection,
    shadow: &str,
    report: &mut RebuildReport,
) -> Result<bool> {
    let events = read_batch(&mut transaction, projection, report.checkpoint, REBUILD_BATCH_SIZE).await?;
    let Some(last) = events.last() else { return Ok(false) };
    let applied = apply_batch(&mut transaction, projection, shadow, &events).await?;
    transaction.commit().await?;
    report.checkpoint = last.checkpoint();
    report.events_read += events.len() as u64;
    report.events_applied += applied as u64;
    Ok(true)
}
