//! Step 5b of an append: the rows go into `ledger.events`, by `INSERT` or by `COPY`, and the
//! database checks each statement's rows as a whole (`ledger.events_check_chain`).

use futures_util::Stream;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::reserve::WriteMethod;
use super::rows::{Row, RowSource};
use crate::error::{Result, StoreError};
use crate::event::{ExpectedVersion, NewEvent};

/// Rows per INSERT statement: one round trip each.
pub const INSERT_CHUNK_ROWS: usize = 5_000;
/// The payload bytes at which an INSERT statement is sent (with at most
/// `INSERT_CHUNK_ROWS` rows).
const INSERT_CHUNK_BYTES: usize = 4 << 20;
/// Bytes buffered before a COPY chunk is sent.
const COPY_BUFFER_BYTES: usize = 1 << 20;

/// Writes every row of `source` and returns their positions, in order. Every row has the
/// append's `metadata` and the transaction id its era stores (`transaction_id`, text).
pub(super) async fn write_rows<'a, E, S>(
    transaction: &mut Transaction<'_, Postgres>,
    source: RowSource<'a, S>,
    metadata: &str,
    transaction_id: &str,
    method: WriteMethod,
) -> std::result::Result<Vec<i64>, E>
where
    E: From<StoreError> + Send,
    S: Stream<Item = std::result::Result<NewEvent, E>> + Send,
{
    match method {
        WriteMethod::Insert => insert_rows(transaction, source, metadata, transaction_id).await,
        WriteMethod::Copy => copy_rows(transaction, source, metadata, transaction_id).await,
    }
}

/// INSERTs the rows a chunk at a time (a chunk may span the source's segments).
async fn insert_rows<'a, E, S>(
    transaction: &mut Transaction<'_, Postgres>,
    mut source: RowSource<'a, S>,
    metadata: &str,
    transaction_id: &str,
) -> std::result::Result<Vec<i64>, E>
where
    E: From<StoreError> + Send,
    S: Stream<Item = std::result::Result<NewEvent, E>> + Send,
{
    let (mut chunk, mut bytes, mut positions) = (Vec::new(), 0, Vec::new());
    while source.prepare(transaction).await? {
        while let Some(row) = source.next_row().await {
            let row = row?;
            bytes += row.payload.len();
            positions.push(row.position);
            chunk.push(row);
            if chunk.len() == INSERT_CHUNK_ROWS || bytes >= INSERT_CHUNK_BYTES {
                insert_chunk(transaction, &chunk, metadata, transaction_id).await?;
                (chunk, bytes) = (Vec::new(), 0);
            }
        }
    }
    if !chunk.is_empty() {
        insert_chunk(transaction, &chunk, metadata, transaction_id).await?;
    }
    Ok(positions)
}

const INSERT_EVENTS: &str = "\
insert into ledger.events (transaction_id, global_position, event_id, organization_id, stream_type, stream_id, \
    stream_version, event_type, schema_version, payload, metadata, prev_hash, hash) \
select $13::text::xid8, e.global_position, e.event_id, e.organization_id, e.stream_type, e.stream_id, e.stream_version, e.event_type, \
    e.schema_version, e.payload::jsonb, $9::jsonb, e.prev_hash, e.hash \
from unnest($1::int8[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::int8[], $7::text[], $8::int4[], $10::text[], \
            $11::bytea[], $12::bytea[]) \
    as e(global_position, event_id, organization_id, stream_type, stream_id, stream_version, event_type, schema_version, \
         payload, prev_hash, hash)";

async fn insert_chunk(
    transaction: &mut Transaction<'_, Postgres>,
    rows: &[Row<'_>],
    metadata: &str,
    transaction_id: &str,
) -> Result<()> {
    let column = |field: fn(&Row<'_>) -> String| rows.iter().map(field).collect::<Vec<_>>();
    sqlx::query(INSERT_EVENTS)
        .bind(rows.iter().map(|row| row.position).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.event_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.stream.organization_id).collect::<Vec<_>>())
        .bind(column(|row| row.stream.stream_type.clone()))
        .bind(rows.iter().map(|row| row.stream.stream_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.version as i64).collect::<Vec<_>>())
        .bind(column(|row| row.event_type.to_string()))
        .bind(rows.iter().map(|row| row.schema_version).collect::<Vec<_>>())
        .bind(metadata)
        .bind(column(|row| row.payload.clone()))
        .bind(rows.iter().map(|row| row.prev_hash.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.hash.to_vec()).collect::<Vec<_>>())
        .bind(transaction_id)
        .execute(&mut **transaction)
        .await
        .map_err(map_unique_violation)?;
    Ok(())
}

const COPY_EVENTS: &str = "copy ledger.events (transaction_id, global_position, event_id, organization_id, stream_type, stream_id, \
    stream_version, event_type, schema_version, payload, metadata, prev_hash, hash) from stdin";

/// Streams the rows with COPY, a buffer at a time, one COPY statement per segment of the
/// source (each checked as a whole). The rows of a buffer are made while PostgreSQL takes
/// the one sent before.
async fn copy_rows<'a, E, S>(
    transaction: &mut Transaction<'_, Postgres>,
    mut source: RowSource<'a, S>,
    metadata: &str,
    transaction_id: &str,
) -> std::result::Result<Vec<i64>, E>
where
    E: From<StoreError> + Send,
    S: Stream<Item = std::result::Result<NewEvent, E>> + Send,
{
    // Both the same for every row: the line's first and its metadata field.
    let escaped_metadata = escaped(metadata);
    let line_start = format!("{transaction_id}\t");
    let mut buffer = String::with_capacity(COPY_BUFFER_BYTES + 4096);
    let mut positions = Vec::new();
    while source.prepare(transaction).await? {
        let mut copy = transaction.copy_in_raw(COPY_EVENTS).await.map_err(StoreError::from)?;
        let copied_before = positions.len();
        while let Some(row) = source.next_row().await {
            let row = match row {
                Ok(row) => row,
                Err(error) => {
                    let _ = copy.abort("an event could not be written").await;
                    return Err(error);
                }
            };
            buffer.push_str(&line_start);
            push_copy_line(&mut buffer, &row, &escaped_metadata);
            positions.push(row.position);
            if buffer.len() >= COPY_BUFFER_BYTES {
                copy.send(buffer.as_bytes()).await.map_err(StoreError::from)?;
                buffer.clear();
            }
        }
        if positions.len() == copied_before {
            let _ = copy.abort("nothing to write").await;
            continue;
        }
        if !buffer.is_empty() {
            copy.send(buffer.as_bytes()).await.map_err(StoreError::from)?;
            buffer.clear();
        }
        copy.finish().await.map_err(map_unique_violation)?;
    }
    Ok(positions)
}

/// Escapes a value for COPY's text format. Most values (compact JSON among them: inside its
/// strings these characters are escaped already) have nothing to escape and go as they are.
fn push_copy_field(line: &mut String, value: &str) {
    if !value.bytes().any(|byte| matches!(byte, b'\\' | b'\n' | b'\r' | b'\t')) {
        line.push_str(value);
        return;
    }
    for character in value.chars() {
        match character {
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            other => line.push(other),
        }
    }
}

fn escaped(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len() + 8);
    push_copy_field(&mut escaped, value);
    escaped
}

/// One event's row in COPY's text format after its transaction id; `escaped_metadata` is
/// escaped already.
fn push_copy_line(buffer: &mut String, row: &Row<'_>, escaped_metadata: &str) {
    use std::fmt::Write as _;
    let _ = write!(buffer, "{}\t{}\t{}\t", row.position, row.event_id, row.stream.organization_id);
    push_copy_field(buffer, &row.stream.stream_type);
    let _ = write!(buffer, "\t{}\t{}\t", row.stream.stream_id, row.version);
    push_copy_field(buffer, &row.event_type);
    let _ = write!(buffer, "\t{}\t", row.schema_version);
    push_copy_field(buffer, &row.payload);
    buffer.push('\t');
    buffer.push_str(escaped_metadata);
    match &row.prev_hash {
        Some(hash) => {
            buffer.push_str("\t\\\\x");
            buffer.push_str(&hex::encode(hash));
        }
        None => buffer.push_str("\t\\N"),
    }
    buffer.push_str("\t\\\\x");
    buffer.push_str(&hex::encode(row.hash));
    buffer.push('\n');
}

/// A writer that bypassed the store's locks can still only lose: the unique
/// `(stream_id, stream_version)` index turns its race into a conflict, never an overwrite.
pub(super) fn map_unique_violation(error: sqlx::Error) -> StoreError {
    let clash = error.as_database_error().and_then(|database| {
        let is_version_clash =
            database.is_unique_violation() && database.constraint() == Some("events_stream_id_stream_version_key");
        is_version_clash.then(|| {
            database
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| pg.detail())
                .and_then(parse_clash)
        })?
    });
    match clash {
        Some((stream_id, version)) => {
            StoreError::Conflict { stream_id, expected: ExpectedVersion::Exact(version - 1), actual: Some(version) }
        }
        None => error.into(),
    }
}

/// Reads `Key (stream_id, stream_version)=(<uuid>, <version>) already exists.`
fn parse_clash(detail: &str) -> Option<(Uuid, u64)> {
    let values = detail.split(")=(").nth(1)?.split(')').next()?;
    let (stream_id, version) = values.split_once(", ")?;
    Some((stream_id.parse().ok()?, version.parse().ok()?))
}
