//! Steps 2 to 6 of a small append in one statement: `ledger.append` (migration
//! `20261126000008_append_in_one_statement.sql`) takes the same locks in the same order,
//! checks each stream's head, reserves positions, chains (the hash computed by
//! `ledger.event_hash`, the one definition in SQL), inserts and records the key, in the
//! statement's own transaction: one round trip instead of six. The database's chain check
//! verifies its rows as it verifies every insert.
//!
//! Used for an append of fewer than [`super::COPY_ROWS_MIN`] events and
//! [`super::COPY_PAYLOAD_BYTES_MIN`] payload bytes that erases no data key (every command);
//! a key used before is answered by the steps of `mod.rs`, which know how to replay it.

use uuid::Uuid;

use super::STREAM_LOCKS_MAX;
use super::reserve::stream_lock_key;
use super::write::map_unique_violation;
use crate::error::{Result, StoreError};
use crate::event::{AppendRequest, AppendResult, ExpectedVersion, StreamHead};

const APPEND: &str = "select status, stream_index, actual_version, stored, positions, first_versions \
    from ledger.append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

type Outcome = (String, Option<i32>, Option<i64>, Option<String>, Option<Vec<i64>>, Option<Vec<i64>>);

/// Appends `request` in one statement on `connection` (outside any transaction: the
/// statement is its own). `None`: its idempotency key was used before and nothing was
/// written; the caller answers it.
pub(super) async fn append_in_one_statement(
    connection: &mut sqlx::PgConnection,
    request: &AppendRequest,
    metadata: &str,
    fingerprint: &[u8],
) -> Result<Option<AppendResult>> {
    let streams = &request.streams;
    let events = || streams.iter().flat_map(|stream| &stream.events);
    let lock_keys = (streams.len() <= STREAM_LOCKS_MAX).then(|| {
        let mut keys: Vec<i64> = streams.iter().map(|stream| stream_lock_key(stream.stream_id)).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    });
    let expected: Vec<Option<i64>> = streams
        .iter()
        .map(|stream| match stream.expected_version {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(version) => Some(i64::try_from(version).unwrap_or(i64::MAX)),
        })
        .collect();
    let (status, stream_index, actual_version, stored, positions, first_versions): Outcome = sqlx::query_as(APPEND)
        .bind(streams.iter().map(|stream| stream.organization_id).collect::<Vec<Uuid>>())
        .bind(streams.iter().map(|stream| stream.stream_type.as_str()).collect::<Vec<_>>())
        .bind(streams.iter().map(|stream| stream.stream_id).collect::<Vec<Uuid>>())
        .bind(expected)
        .bind(streams.iter().map(|stream| stream.events.len() as i32).collect::<Vec<_>>())
        .bind(lock_keys)
        .bind(events().map(|event| event.event_id).collect::<Vec<Uuid>>())
        .bind(events().map(|event| event.event_type.as_str()).collect::<Vec<_>>())
        .bind(events().map(|event| event.schema_version).collect::<Vec<_>>())
        .bind(events().map(|event| event.payload.text()).collect::<Vec<_>>())
        .bind(metadata)
        .bind(request.idempotency_key.as_deref())
        .bind(request.idempotency_key.as_ref().map(|_| fingerprint))
        .fetch_one(&mut *connection)
        .await
        .map_err(map_unique_violation)?;
    let refused_stream = || {
        stream_index
            .and_then(|index| usize::try_from(index).ok()?.checked_sub(1))
            .and_then(|index| streams.get(index))
            .ok_or_else(|| {
                StoreError::Database(sqlx::Error::Protocol(format!("ledger.append: {status} without its stream")))
            })
    };
    match status.as_str() {
        "written" => {
            let (Some(positions), Some(first_versions)) = (positions, first_versions) else {
                return Err(StoreError::Database(sqlx::Error::Protocol(
                    "ledger.append wrote without positions".into(),
                )));
            };
            let streams = streams
                .iter()
                .zip(first_versions)
                .map(|(stream, first)| StreamHead {
                    stream_id: stream.stream_id,
                    version: first as u64 + stream.events.len() as u64 - 1,
                })
                .collect();
            Ok(Some(AppendResult { positions, streams, replayed: false }))
        }
        "key_used" => Ok(None),
        "conflict" => {
            let stream = refused_stream()?;
            Err(StoreError::Conflict {
                stream_id: stream.stream_id,
                expected: stream.expected_version,
                actual: actual_version.map(|version| version as u64),
            })
        }
        field @ ("stream_type" | "organization_id") => {
            let stream = refused_stream()?;
            Err(StoreError::StreamMismatch {
                stream_id: stream.stream_id,
                field: if field == "stream_type" { "stream_type" } else { "organization_id" },
                stored: stored.unwrap_or_default(),
                requested: if field == "stream_type" {
                    stream.stream_type.clone()
                } else {
                    stream.organization_id.to_string()
                },
            })
        }
        other => Err(StoreError::Database(sqlx::Error::Protocol(format!("ledger.append answered {other:?}")))),
    }
}
