//! Reading one stream, and the whole log in gap-free order.
//!
//! `read_stream` returns a stream in version order and asserts that its versions are
//! contiguous. `read_all(after, limit)` returns the log in `(transaction_id,
//! global_position)` order, only below `ledger.read_horizon()` (the oldest running
//! transaction's id in the cluster's era, see `cluster.rs`): an event is readable once every
//! older transaction has ended, so a late commit is waited for, never skipped. The
//! [`crate::Checkpoint`] is that pair.
//!
//! The horizon is cluster-wide: a long transaction anywhere in the cluster (another database
//! included) holds readers back until it ends. Projection runners hold each other back the
//! same way while they apply a batch; [`committed_after`] tells a reader whose batch came
//! back empty that events it cannot see yet have committed (the runner then steps again
//! shortly instead of waiting for a notification that was already sent).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::event::{Checkpoint, Payload, RecordedEvent};

/// The most events one `read_all` call returns.
pub const READ_BATCH_MAX: usize = 10_000;

/// The columns `event_from_row` reads, with `payload` the expression giving the payload's
/// text (`payload::text` for every event).
pub(crate) fn event_columns(payload: &str) -> String {
    event_columns_with(payload, "metadata, prev_hash, hash")
}

/// The same, with the expressions giving the metadata and the two hashes.
fn event_columns_with(payload: &str, metadata_and_hashes: &str) -> String {
    format!(
        "global_position, transaction_id::text::int8 as transaction_id, event_id, organization_id, stream_type, stream_id, \
         stream_version, event_type, schema_version, {payload} as payload_text, recorded_at, {metadata_and_hashes}"
    )
}

/// In place of the metadata, for a reader that does not need it.
const NO_METADATA: &str = "'{}'::jsonb as metadata";
/// In place of the hashes, for a reader that does not need them.
const NO_HASHES: &str = "null::bytea as prev_hash, '\\x'::bytea as hash";

/// Every event's payload.
pub(crate) const ALL_PAYLOADS: &str = "payload::text";

pub(crate) fn event_from_row(row: &PgRow) -> Result<RecordedEvent> {
    event_with_payload(row, row.try_get("payload_text")?)
}

/// The event of a row whose payload text comes from elsewhere.
fn event_with_payload(row: &PgRow, payload_text: String) -> Result<RecordedEvent> {
    let transaction_id: i64 = row.try_get("transaction_id")?;
    let stream_version: i64 = row.try_get("stream_version")?;
    Ok(RecordedEvent {
        global_position: row.try_get("global_position")?,
        transaction_id: u64::try_from(transaction_id).expect("transaction ids are positive"),
        event_id: row.try_get("event_id")?,
        organization_id: row.try_get("organization_id")?,
        stream_type: row.try_get("stream_type")?,
        stream_id: row.try_get("stream_id")?,
        stream_version: u64::try_from(stream_version).expect("stream versions are positive"),
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        payload: Payload::from_text(payload_text).map_err(|error| StoreError::invalid("payload", error.to_string()))?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// The events of one stream from `from_version` on (1 for all), in version order.
pub(crate) async fn read_stream(
    executor: impl PgExecutor<'_>,
    stream_id: Uuid,
    from_version: u64,
) -> Result<Vec<RecordedEvent>> {
    let mut events = Vec::new();
    each_in_stream_with(executor, stream_id, from_version, &event_columns(ALL_PAYLOADS), |event| {
        events.push(event);
        Ok::<_, StoreError>(())
    })
    .await?;
    Ok(events)
}

/// Hands each event of one stream from `from_version` on to `each` as its row arrives, in
/// version order: a stream of any length is folded holding one event at a time (a payroll
/// run's stream is its calculation's chunks and an event per paid item). Returns how many.
///
/// Its events carry neither metadata (`{}`) nor hashes: folding a state needs neither, and
/// a command loads its stream on every call (the verifier and [`read_stream`] read them).
pub(crate) async fn each_in_stream<E: From<StoreError>>(
    executor: impl PgExecutor<'_>,
    stream_id: Uuid,
    from_version: u64,
    each: impl FnMut(RecordedEvent) -> std::result::Result<(), E>,
) -> std::result::Result<u64, E> {
    let columns = event_columns_with(ALL_PAYLOADS, &format!("{NO_METADATA}, {NO_HASHES}"));
    each_in_stream_with(executor, stream_id, from_version, &columns, each).await
}

async fn each_in_stream_with<E: From<StoreError>>(
    executor: impl PgExecutor<'_>,
    stream_id: Uuid,
    from_version: u64,
    columns: &str,
    mut each: impl FnMut(RecordedEvent) -> std::result::Result<(), E>,
) -> std::result::Result<u64, E> {
    use futures_util::TryStreamExt as _;
    // Versions start at 1: from 0 means from the start too.
    let from_version = from_version.max(1);
    let from = i64::try_from(from_version).map_err(|_| StoreError::invalid("from_version", "is too large"))?;
    let sql = format!(
        "select {columns} from ledger.events where stream_id = $1 and stream_version >= $2 order by stream_version"
    );
    let mut rows = sqlx::query(&sql).bind(stream_id).bind(from).fetch(executor);
    let mut expected = from_version;
    while let Some(row) = rows.try_next().await.map_err(StoreError::from)? {
        let event = event_from_row(&row)?;
        assert_eq!(event.stream_version, expected, "stream {stream_id} has contiguous versions");
        expected += 1;
        each(event)?;
    }
    Ok(expected - from_version)
}

/// The events at the given versions of one stream, in version order (a payroll run's
/// calculation chunks that hold the items of one payment batch).
pub(crate) async fn read_stream_versions(
    executor: impl PgExecutor<'_>,
    stream_id: Uuid,
    versions: &[u64],
) -> Result<Vec<RecordedEvent>> {
    let versions: Vec<i64> = versions
        .iter()
        .map(|version| i64::try_from(*version).map_err(|_| StoreError::invalid("versions", "a version is too large")))
        .collect::<Result<_>>()?;
    let sql = format!(
        "select {} from ledger.events where stream_id = $1 and stream_version = any($2) order by stream_version",
        event_columns(ALL_PAYLOADS)
    );
    let rows = sqlx::query(&sql).bind(stream_id).bind(&versions).fetch_all(executor).await?;
    rows.iter().map(event_from_row).collect()
}

/// Up to `limit` events after `after`, in `(transaction_id, global_position)` order, and only
/// from transactions older than every transaction still running: an event that commits late
/// is waited for, never skipped.
pub(crate) async fn read_all(
    executor: impl PgExecutor<'_>,
    after: Checkpoint,
    limit: usize,
) -> Result<Vec<RecordedEvent>> {
    check_limit(limit)?;
    let sql = read_all_sql(&event_columns(ALL_PAYLOADS));
    let rows = sqlx::query(&sql)
        .bind(after.transaction_id.to_string())
        .bind(after.global_position)
        .bind(limit as i64)
        .fetch_all(executor)
        .await?;
    rows.iter().map(event_from_row).collect()
}

fn check_limit(limit: usize) -> Result<()> {
    if limit == 0 || limit > READ_BATCH_MAX {
        return Err(StoreError::invalid("limit", format!("must be 1 to {READ_BATCH_MAX}, not {limit}")));
    }
    Ok(())
}

/// Which payloads a gap-free read carries, how many bytes of payload text a batch reads
/// before it ends, and whether the events carry their metadata and their hashes (without,
/// an empty object and empty hashes: of the projections only the audit log reads metadata,
/// and only the log's tree the hashes; parsing every event's metadata cost each of them).
#[derive(Debug, Clone, Copy)]
pub struct PayloadSelection<'a> {
    pub types: &'a [&'a str],
    pub bytes_max: usize,
    pub metadata: bool,
    pub hashes: bool,
}

/// A selected payload stored larger than this comes in a query of its own, and only while
/// the batch's budget lasts: one read never carries more than its limit times this.
const INLINE_PAYLOAD_BYTES_MAX: i32 = 16 * 1024;

/// [`read_all`] where only events of the selected types carry their payload (the others a
/// JSON `null`: a projector skips what it does not handle, and a payroll run's calculation
/// can be megabytes), and the batch ends once its payload text reaches the byte budget, with
/// the event that reaches it (never empty). Payloads stored larger than 16 KB are left out
/// of the read (a SQL `null`) and fetched one by one, so a batch holds at most one past its
/// budget. (A running sum in SQL did the same at ~13 % of every read, a cursor at more.)
pub(crate) async fn read_all_selected(
    connection: &mut PgConnection,
    after: Checkpoint,
    limit: usize,
    selection: PayloadSelection<'_>,
) -> Result<Vec<RecordedEvent>> {
    check_limit(limit)?;
    let columns = event_columns_with(
        "case when event_type <> all($4) then 'null' when pg_column_size(payload) <= $5 then payload::text end",
        &format!(
            "{}, {}",
            if selection.metadata { "metadata" } else { NO_METADATA },
            if selection.hashes { "prev_hash, hash" } else { NO_HASHES }
        ),
    );
    let rows = sqlx::query(&read_all_sql(&columns))
        .bind(after.transaction_id.to_string())
        .bind(after.global_position)
        .bind(limit as i64)
        .bind(selection.types)
        .bind(INLINE_PAYLOAD_BYTES_MAX)
        .fetch_all(&mut *connection)
        .await?;
    let (mut events, mut bytes) = (Vec::with_capacity(rows.len()), 0usize);
    for row in &rows {
        let text = match row.try_get::<Option<String>, _>("payload_text")? {
            Some(text) => text,
            None => {
                let position: i64 = row.try_get("global_position")?;
                sqlx::query_scalar("select payload::text from ledger.events where global_position = $1")
                    .bind(position)
                    .fetch_one(&mut *connection)
                    .await?
            }
        };
        bytes += text.len();
        events.push(event_with_payload(row, text)?);
        if bytes >= selection.bytes_max {
            break;
        }
    }
    Ok(events)
}

/// The gap-free read. The order names the table's columns: the output column
/// `transaction_id` is a cast to int8, and ordering by it would sort every event after the
/// checkpoint instead of walking the `(transaction_id, global_position)` index (2 s instead
/// of 15 ms per batch at a million events, so a catch-up grew with the square of the log).
fn read_all_sql(columns: &str) -> String {
    format!(
        "select {columns} from ledger.events \
         where (transaction_id, global_position) > ($1::text::xid8, $2) \
           and transaction_id < ledger.read_horizon() \
         order by events.transaction_id, events.global_position \
         limit $3"
    )
}

/// The newest position and time in the log, for lag reports. `None` when the log is empty.
pub(crate) async fn head(executor: impl PgExecutor<'_>) -> Result<Option<(i64, DateTime<Utc>)>> {
    let head =
        sqlx::query_as("select global_position, recorded_at from ledger.events order by global_position desc limit 1")
            .fetch_optional(executor)
            .await?;
    Ok(head)
}

/// The last event of `organization_id`'s streams of `stream_type` in the log's order, as
/// this transaction sees it; `None` if there is none. Walks the organization's events from
/// its newest back to the first of that type.
pub(crate) async fn last_of_stream_type(
    executor: impl PgExecutor<'_>,
    organization_id: Uuid,
    stream_type: &str,
) -> Result<Option<Checkpoint>> {
    let last: Option<(i64, i64)> = sqlx::query_as(
        // Ordered by the columns (not the select list's cast of one): the organization's
        // log-order index read backwards, stopping at the first row of the type.
        "select e.transaction_id::text::int8, e.global_position from ledger.events e \
         where e.organization_id = $1 and e.stream_type = $2 \
         order by e.organization_id desc, e.transaction_id desc, e.global_position desc limit 1",
    )
    .bind(organization_id)
    .bind(stream_type)
    .fetch_optional(executor)
    .await?;
    Ok(last.map(|(transaction_id, global_position)| Checkpoint {
        transaction_id: u64::try_from(transaction_id).expect("transaction ids are positive"),
        global_position,
    }))
}

/// When the event at `global_position` was recorded; `None` if there is none.
pub(crate) async fn recorded_at(executor: impl PgExecutor<'_>, global_position: i64) -> Result<Option<DateTime<Utc>>> {
    let time = sqlx::query_scalar("select recorded_at from ledger.events where global_position = $1")
        .bind(global_position)
        .fetch_optional(executor)
        .await?;
    Ok(time)
}

/// Whether any committed event lies after `after` in `(transaction_id, global_position)`
/// order, whether or not the gap-free read may return it yet.
///
/// The first such event by the index, not `exists (...)`: the planner drops an ordering
/// inside `exists` and, expecting a third of the log to match, scans the table from the
/// start for a row that lies at its end (1 s per call at 1.4M events, seven runners asking
/// every 50 ms).
pub(crate) async fn committed_after(executor: impl PgExecutor<'_>, after: Checkpoint) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar(
        "select global_position from ledger.events where (transaction_id, global_position) > ($1::text::xid8, $2) \
         order by events.transaction_id, events.global_position limit 1",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .fetch_optional(executor)
    .await?;
    Ok(found.is_some())
}

/// How many committed events lie after `after` in `(transaction_id, global_position)` order.
pub(crate) async fn count_after(executor: impl PgExecutor<'_>, after: Checkpoint) -> Result<i64> {
    let count = sqlx::query_scalar(
        "select count(*) from ledger.events where (transaction_id, global_position) > ($1::text::xid8, $2)",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .fetch_one(executor)
    .await?;
    Ok(count)
}

/// The events of several streams, each stream's together and in version order, the streams
/// in the order of their ids (a stream named twice is read once). One query: for loading
/// many aggregates at once.
pub(crate) async fn read_streams(executor: impl PgExecutor<'_>, stream_ids: &[Uuid]) -> Result<Vec<RecordedEvent>> {
    let sql = format!(
        "select {} from ledger.events where stream_id = any($1) order by stream_id, stream_version",
        event_columns(ALL_PAYLOADS)
    );
    let rows = sqlx::query(&sql).bind(stream_ids).fetch_all(executor).await?;
    rows.iter().map(event_from_row).collect()
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::testkit::TestDatabase;

    /// The gap-free read walks the index in order, never sorts: with sorting disabled a plan
    /// that needs a sort still shows one.
    #[tokio::test]
    async fn the_gap_free_read_walks_the_index_without_sorting() {
        let db = TestDatabase::new().await;
        let mut transaction = db.pool.begin().await.unwrap();
        sqlx::query("set local enable_sort = off").execute(&mut *transaction).await.unwrap();
        sqlx::query("set local enable_seqscan = off").execute(&mut *transaction).await.unwrap();
        let sql = format!("explain (format json) {}", read_all_sql(&event_columns(ALL_PAYLOADS)));
        let plan: serde_json::Value =
            sqlx::query_scalar(&sql).bind("1").bind(0_i64).bind(10_i64).fetch_one(&mut *transaction).await.unwrap();
        let plan = plan.to_string();
        assert!(!plan.contains("\"Sort\""), "{plan}");
        assert!(plan.contains("events_transaction_order"), "{plan}");
    }
}
