//! Steps 3 and 4 of an append: the stream locks, then in one round trip each stream's
//! version check and the positions its events get.

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::STREAM_LOCKS_MAX;
use crate::error::{Result, StoreError};
use crate::event::{ExpectedVersion, StreamAppend};

/// Advisory lock keys in the two-integer space (distinct from the one-bigint space used for
/// single streams).
const LOCK_CLASS_LOG: i32 = 0x4c45_4447; // "LEDG"
pub(super) const LOCK_CLASS_IDEMPOTENCY: i32 = 0x4c45_4449; // "LEDI"
const LOCK_OBJECT_LOG: i32 = 0;

pub(super) fn stream_lock_key(stream_id: Uuid) -> i64 {
    let bits = stream_id.as_u128();
    ((bits >> 64) as u64 ^ bits as u64) as i64
}

/// A shared lock on the whole log plus an exclusive lock per stream in sorted order (so two
/// appends sharing streams never deadlock); above [`STREAM_LOCKS_MAX`] streams, the whole log
/// exclusively, so that the lock table stays small.
pub(super) async fn lock_streams(transaction: &mut Transaction<'_, Postgres>, streams: &[StreamAppend]) -> Result<()> {
    if streams.len() > STREAM_LOCKS_MAX {
        sqlx::query("select pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_CLASS_LOG)
            .bind(LOCK_OBJECT_LOG)
            .execute(&mut **transaction)
            .await?;
        return Ok(());
    }
    let mut keys: Vec<i64> = streams.iter().map(|stream| stream_lock_key(stream.stream_id)).collect();
    keys.sort_unstable();
    keys.dedup();
    // Volatile select-list functions run after the ORDER BY.
    sqlx::query(
        "select pg_advisory_xact_lock_shared($1, $2) \
         union all \
         select pg_advisory_xact_lock(key) from (select key from unnest($3::int8[]) with ordinality as k(key, n) order by n) ordered",
    )
    .bind(LOCK_CLASS_LOG)
    .bind(LOCK_OBJECT_LOG)
    .bind(&keys)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// The same locks as [`lock_streams`] for one stream, without waiting for another writer of
/// it: [`StoreError::Busy`] when one holds it.
pub(super) async fn try_lock_stream(transaction: &mut Transaction<'_, Postgres>, stream: &StreamAppend) -> Result<()> {
    let locked: bool = sqlx::query_scalar(
        "select bool_and(locked) from ( \
             select pg_advisory_xact_lock_shared($1, $2) is not null as locked \
             union all select pg_try_advisory_xact_lock($3)) taken",
    )
    .bind(LOCK_CLASS_LOG)
    .bind(LOCK_OBJECT_LOG)
    .bind(stream_lock_key(stream.stream_id))
    .fetch_one(&mut **transaction)
    .await?;
    if !locked {
        return Err(StoreError::Busy(format!(
            "stream {} is being written by another request (a calculation or payment in progress); retry when it is done",
            stream.stream_id
        )));
    }
    Ok(())
}

/// Where a stream's new events begin: the version of the first and the hash it follows
/// (none for a new stream).
#[derive(Debug)]
pub(super) struct StreamStart {
    pub first_version: u64,
    pub previous_hash: Option<Vec<u8>>,
}

/// The transaction's time (every event's `recorded_at`) and positions reserved from the
/// log's sequence, in increasing order: what an event's hash covers besides its own fields.
#[derive(Debug)]
pub(super) struct Reserved {
    pub recorded_at_micros: i64,
    /// The transaction id the log stores for this transaction (its era's, as text).
    pub transaction_id: String,
    pub positions: Vec<i64>,
    pub write_method: WriteMethod,
}

/// How rows go into the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteMethod {
    /// `INSERT ... SELECT FROM unnest(...)`, a chunk of rows per statement.
    Insert,
    /// `COPY ... FROM STDIN`, a buffer at a time.
    Copy,
}

/// A stream's last event as stored: what an append is checked against.
pub(super) struct StoredHead {
    pub version: i64,
    pub stream_type: String,
    pub organization_id: Uuid,
}

/// Checks every stream against its expectation and returns, in request order, where each
/// stream's new events start; with `count` positions reserved from the log's sequence in
/// increasing order, the transaction's time and whether the role may COPY, in one round
/// trip. Called after the stream locks are held (a reservation may give the transaction its
/// id), so a stream's later events always get larger positions. A reservation the check then
/// refuses leaves a gap in the positions, as a rolled back append always did.
pub(super) async fn check_and_reserve(
    transaction: &mut Transaction<'_, Postgres>,
    streams: &[StreamAppend],
    count: usize,
) -> Result<(Vec<StreamStart>, Reserved)> {
    type Heads = (
        chrono::DateTime<chrono::Utc>,
        String,
        Vec<i64>,
        bool,
        Option<Vec<Uuid>>,
        Option<Vec<i64>>,
        Option<Vec<String>>,
        Option<Vec<Uuid>>,
        Option<Vec<Vec<u8>>>,
    );
    let stream_ids: Vec<Uuid> = streams.iter().map(|stream| stream.stream_id).collect();
    let (now, transaction_id, mut positions, row_security, ids, versions, types, organizations, hashes): Heads = sqlx::query_as(
        "select now(), ledger.current_transaction_id()::text, array(select nextval('ledger.events_global_position_seq') from generate_series(1, $2)), \
                row_security_active('ledger.events'), array_agg(s.stream_id), array_agg(head.stream_version), array_agg(head.stream_type), \
                array_agg(head.organization_id), array_agg(head.hash) \
         from unnest($1::uuid[]) as s(stream_id) \
         cross join lateral ( \
             select e.stream_version, e.stream_type, e.organization_id, e.hash from ledger.events e \
             where e.stream_id = s.stream_id order by e.stream_version desc limit 1) head",
    )
    .bind(&stream_ids)
    .bind(count as i64)
    .fetch_one(&mut **transaction)
    .await?;
    positions.sort_unstable();
    let mut heads: HashMap<Uuid, (StoredHead, Vec<u8>)> = HashMap::new();
    if let (Some(ids), Some(versions), Some(types), Some(organizations), Some(hashes)) =
        (ids, versions, types, organizations, hashes)
    {
        for ((((stream_id, version), stream_type), organization_id), hash) in
            ids.into_iter().zip(versions).zip(types).zip(organizations).zip(hashes)
        {
            heads.insert(stream_id, (StoredHead { version, stream_type, organization_id }, hash));
        }
    }
    let starts = streams
        .iter()
        .map(|stream| {
            let (head, previous_hash) = heads.remove(&stream.stream_id).unzip();
            let first_version = first_version(stream, head.as_ref())?;
            Ok(StreamStart { first_version, previous_hash })
        })
        .collect::<Result<_>>()?;
    // PostgreSQL refuses COPY FROM into a table whose row-level security applies to the role
    // (a login role that is a member of `ledger_writer` rather than the table's owner).
    let write_method = if row_security { WriteMethod::Insert } else { WriteMethod::Copy };
    Ok((starts, Reserved { recorded_at_micros: now.timestamp_micros(), transaction_id, positions, write_method }))
}

/// `count` more positions, for a streamed append whose streams are checked already.
pub(super) async fn reserve(transaction: &mut Transaction<'_, Postgres>, count: usize) -> Result<Reserved> {
    Ok(check_and_reserve(transaction, &[], count).await?.1)
}

/// The version a stream's new events start at, or why the stream refuses them (another type or
/// organization, another version than expected): the one definition of both append paths'
/// refusals.
pub(super) fn first_version(stream: &StreamAppend, head: Option<&StoredHead>) -> Result<u64> {
    if let Some(head) = head {
        if head.stream_type != stream.stream_type {
            return Err(StoreError::StreamMismatch {
                stream_id: stream.stream_id,
                field: "stream_type",
                stored: head.stream_type.clone(),
                requested: stream.stream_type.clone(),
            });
        }
        if head.organization_id != stream.organization_id {
            return Err(StoreError::StreamMismatch {
                stream_id: stream.stream_id,
                field: "organization_id",
                stored: head.organization_id.to_string(),
                requested: stream.organization_id.to_string(),
            });
        }
    }
    let actual = head.map(|head| u64::try_from(head.version).expect("stream versions are positive"));
    let matches = match stream.expected_version {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual.is_none(),
        ExpectedVersion::Exact(expected) => actual.unwrap_or(0) == expected,
    };
    if !matches {
        return Err(StoreError::Conflict { stream_id: stream.stream_id, expected: stream.expected_version, actual });
    }
    Ok(actual.unwrap_or(0) + 1)
}
