//! Steps 2 to 6 of a small append in one statement: `ledger.append` (migration
//! `20261126000008_append_in_one_statement.sql`) takes the same locks in the same order,
//! checks each stream's head, reserves positions, chains (the hash computed by
//! `ledger.event_hash`, the one definition in SQL), inserts and records the key, in the
//! statement's own transaction: one round trip instead of six. The functions run as
//! `ledger_appender` and chain their rows themselves; the database's chain check, which
//! verifies every other insert, skips that role's (migration `20261126000011`).
//!
//! One event to one stream goes through `ledger.append_one` instead (a few small cached
//! statements for the shape almost every command has), answered alike.
//!
//! Used for an append of fewer than [`super::COPY_ROWS_MIN`] events and
//! [`super::COPY_PAYLOAD_BYTES_MIN`] payload bytes that erases no data key (every command);
//! a key used before is answered by the steps of `mod.rs`, which know how to replay it.

use uuid::Uuid;

use super::STREAM_LOCKS_MAX;
use super::reserve::{StoredHead, first_version, stream_lock_key};
use super::write::map_unique_violation;
use crate::error::{Result, StoreError};
use crate::event::{AppendRequest, AppendResult, ExpectedVersion, StreamHead};

const APPEND: &str = "select status, stream_index, stored_version, stored_type, stored_organization, positions, \
    first_versions from ledger.append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// One event to one stream (almost every command): `ledger.append_one` (migrations
/// `20261126000012_append_one.sql`, `20261127000004`), one call answering in the same columns.
const APPEND_ONE: &str = "select status, stream_index, stored_version, stored_type, stored_organization, positions, \
    first_versions from ledger.append_one($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// What `ledger.append` answers for an append, and `ledger.append_group` for each member.
#[derive(sqlx::FromRow)]
pub(super) struct Outcome {
    pub status: String,
    stream_index: Option<i32>,
    stored_version: Option<i64>,
    stored_type: Option<String>,
    stored_organization: Option<Uuid>,
    positions: Option<Vec<i64>>,
    first_versions: Option<Vec<i64>>,
}

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
    // The stream and event arguments of either function; metadata, key and fingerprint
    // come last in both.
    let query = if let [stream] = streams.as_slice()
        && let [event] = stream.events.as_slice()
    {
        sqlx::query_as(APPEND_ONE)
            .bind(stream.organization_id)
            .bind(stream.stream_type.as_str())
            .bind(stream.stream_id)
            .bind(expected_of(stream.expected_version))
            .bind(stream_lock_key(stream.stream_id))
            .bind(event.event_id)
            .bind(event.event_type.as_str())
            .bind(event.schema_version)
            .bind(event.payload.text())
    } else {
        let events = || streams.iter().flat_map(|stream| &stream.events);
        let lock_keys = (streams.len() <= STREAM_LOCKS_MAX).then(|| {
            let mut keys: Vec<i64> = streams.iter().map(|stream| stream_lock_key(stream.stream_id)).collect();
            keys.sort_unstable();
            keys.dedup();
            keys
        });
        sqlx::query_as(APPEND)
            .bind(streams.iter().map(|stream| stream.organization_id).collect::<Vec<Uuid>>())
            .bind(streams.iter().map(|stream| stream.stream_type.as_str()).collect::<Vec<_>>())
            .bind(streams.iter().map(|stream| stream.stream_id).collect::<Vec<Uuid>>())
            .bind(streams.iter().map(|stream| expected_of(stream.expected_version)).collect::<Vec<_>>())
            .bind(streams.iter().map(|stream| stream.events.len() as i32).collect::<Vec<_>>())
            .bind(lock_keys)
            .bind(events().map(|event| event.event_id).collect::<Vec<Uuid>>())
            .bind(events().map(|event| event.event_type.as_str()).collect::<Vec<_>>())
            .bind(events().map(|event| event.schema_version).collect::<Vec<_>>())
            .bind(events().map(|event| event.payload.text()).collect::<Vec<_>>())
    };
    let outcome: Outcome = query
        .bind(metadata)
        .bind(request.idempotency_key.as_deref())
        .bind(request.idempotency_key.as_ref().map(|_| fingerprint))
        .fetch_one(&mut *connection)
        .await
        .map_err(map_unique_violation)?;
    result_of(request, outcome)
}

/// An expected version as the functions take it: null any, 0 no stream, n exactly n.
pub(super) fn expected_of(expected: ExpectedVersion) -> Option<i64> {
    match expected {
        ExpectedVersion::Any => None,
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(version) => Some(i64::try_from(version).unwrap_or(i64::MAX)),
    }
}

/// The result of `request` as the database answered it: written, or refused with the error
/// the steps would give; `None` when its key was used before (nothing written).
pub(super) fn result_of(request: &AppendRequest, outcome: Outcome) -> Result<Option<AppendResult>> {
    let unexpected = |what: &str| StoreError::Database(sqlx::Error::Protocol(format!("ledger.append: {what}")));
    let streams = &request.streams;
    match (outcome.status.as_str(), outcome.positions, outcome.first_versions) {
        ("written", Some(positions), Some(first_versions)) if first_versions.len() == streams.len() => {
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
        ("key_used", ..) => Ok(None),
        ("refused", ..) => {
            let stream = outcome
                .stream_index
                .and_then(|index| streams.get(usize::try_from(index).ok()?.checked_sub(1)?))
                .ok_or_else(|| unexpected("a refusal without its stream"))?;
            let head = match (outcome.stored_version, outcome.stored_type, outcome.stored_organization) {
                (Some(version), Some(stream_type), Some(organization_id)) => {
                    Some(StoredHead { version, stream_type, organization_id })
                }
                _ => None,
            };
            // The same checks as the steps' (the database made them too, to write nothing).
            first_version(stream, head.as_ref())?;
            Err(unexpected("a refusal the stream's head does not explain"))
        }
        (other, ..) => Err(unexpected(&format!("answered {other:?}"))),
    }
}
