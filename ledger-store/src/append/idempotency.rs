//! Steps 2 and 6 of an append: a request with an idempotency key that was used before gets
//! the earlier result (or [`StoreError::IdempotencyMismatch`]); a new key is recorded with the
//! request's fingerprint and the id of the transaction that appended, in that transaction.
//!
//! The request hash covers streams, expected versions, event types, schema versions,
//! payloads (as their text, serialized straight into the hasher) and actor and role; not
//! event ids or correlation ids, which a client's retry may mint anew. It is computed only
//! when the request carries a key; a caller may pass its own fingerprint instead (the
//! service hashes the HTTP request, and must for a streamed append). Keys recorded before
//! payloads were text were hashed over each payload re-serialized with sorted keys; a retry
//! that does not match the text form is also compared in that form.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::reserve::LOCK_CLASS_IDEMPOTENCY;
use crate::error::{Result, StoreError};
use crate::event::{AppendRequest, AppendResult, ExpectedVersion, Payload, StreamHead};

/// The fingerprint a request's key is bound to: the caller's, or a hash of the request.
/// Empty without a key (nothing is recorded then).
pub(super) fn fingerprint_of(request: &AppendRequest) -> Vec<u8> {
    match (&request.idempotency_key, &request.fingerprint) {
        (None, _) => Vec::new(),
        (Some(_), Some(fingerprint)) => fingerprint.clone(),
        (Some(_), None) => request_hash(request, PayloadForm::Text).to_vec(),
    }
}

/// Binds the key to this transaction: its result is read back from the transaction's events
/// when the key repeats.
pub(super) async fn record_key(
    transaction: &mut Transaction<'_, Postgres>,
    key: &str,
    request_hash: &[u8],
) -> Result<()> {
    sqlx::query(
        "insert into ledger.idempotency_keys (idempotency_key, request_hash, transaction_id) \
         values ($1, $2, ledger.current_transaction_id())",
    )
    .bind(key)
    .bind(request_hash)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// How a payload enters a request's fingerprint.
#[derive(Clone, Copy)]
enum PayloadForm {
    /// Its text as the request carries it.
    Text,
    /// Parsed and written again with sorted keys: how keys recorded before payloads were
    /// carried as text were hashed.
    Sorted,
}

struct FingerprintPayload<'a>(&'a Payload, PayloadForm);

impl serde::Serialize for FingerprintPayload<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self.1 {
            PayloadForm::Text => self.0.raw().serialize(serializer),
            PayloadForm::Sorted => self.0.to_value().serialize(serializer),
        }
    }
}

/// The fingerprint an idempotency key is bound to: what the request asks to record and who
/// asks. Event ids and correlation ids are left out, since a client's retry may mint new ones.
fn request_hash(request: &AppendRequest, form: PayloadForm) -> [u8; 32] {
    #[derive(serde::Serialize)]
    struct Event<'a> {
        event_type: &'a str,
        schema_version: i32,
        payload: FingerprintPayload<'a>,
    }
    #[derive(serde::Serialize)]
    struct Stream<'a> {
        organization_id: Uuid,
        stream_type: &'a str,
        stream_id: Uuid,
        expected_version: ExpectedVersion,
        events: Vec<Event<'a>>,
    }
    #[derive(serde::Serialize)]
    struct Fingerprint<'a> {
        streams: Vec<Stream<'a>>,
        actor: &'a str,
        role: Option<&'a str>,
    }
    let fingerprint = Fingerprint {
        streams: request
            .streams
            .iter()
            .map(|stream| Stream {
                organization_id: stream.organization_id,
                stream_type: &stream.stream_type,
                stream_id: stream.stream_id,
                expected_version: stream.expected_version,
                events: stream
                    .events
                    .iter()
                    .map(|event| Event {
                        event_type: &event.event_type,
                        schema_version: event.schema_version,
                        payload: FingerprintPayload(&event.payload, form),
                    })
                    .collect(),
            })
            .collect(),
        actor: &request.metadata.actor,
        role: request.metadata.role.as_deref(),
    };
    // Serialized straight into the hasher: no copy of the payloads.
    let mut hasher = Sha256::new();
    serde_json::to_writer(&mut hasher, &fingerprint).expect("a fingerprint serializes");
    hasher.finalize().into()
}

/// Waits for any other request with the same key, then returns its stored result (or the
/// mismatch error). `None` when the key is new.
pub(super) async fn earlier_result(
    transaction: &mut Transaction<'_, Postgres>,
    key: &str,
    request_hash: &[u8],
    request: Option<&AppendRequest>,
) -> Result<Option<AppendResult>> {
    sqlx::query("select pg_advisory_xact_lock($1, hashtext($2))")
        .bind(LOCK_CLASS_IDEMPOTENCY)
        .bind(key)
        .execute(&mut **transaction)
        .await?;
    stored_result(transaction, key, request_hash, request).await
}

/// What an idempotency key already stands for, without waiting for a request in flight.
pub(crate) async fn idempotent_result(pool: &PgPool, key: &str, fingerprint: &[u8]) -> Result<Option<AppendResult>> {
    let mut connection = pool.acquire().await?;
    stored_result(&mut connection, key, fingerprint, None).await
}

/// The stored result of an idempotency key, if the key was used: `Ok(None)` when it is new,
/// the result when it was used with the same fingerprint, `IdempotencyMismatch` otherwise.
/// A key recorded before payloads were hashed as text is also compared with the `request`'s
/// fingerprint in that earlier form, when the store computed it. Keys recorded before
/// migration `20261123000001` kept a copy of the result, which is returned as it is.
async fn stored_result(
    connection: &mut sqlx::PgConnection,
    key: &str,
    fingerprint: &[u8],
    request: Option<&AppendRequest>,
) -> Result<Option<AppendResult>> {
    type Stored = (Vec<u8>, Option<sqlx::types::Json<AppendResult>>, Option<String>);
    let stored: Option<Stored> = sqlx::query_as(
        "select request_hash, result, transaction_id::text from ledger.idempotency_keys where idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(&mut *connection)
    .await?;
    match stored {
        None => Ok(None),
        Some((stored_hash, _, _))
            if stored_hash != fingerprint
                && !request.is_some_and(|request| {
                    request.fingerprint.is_none() && stored_hash == request_hash(request, PayloadForm::Sorted)
                }) =>
        {
            Err(StoreError::IdempotencyMismatch { key: key.to_owned() })
        }
        Some((_, Some(result), _)) => Ok(Some(AppendResult { replayed: true, ..result.0 })),
        Some((_, None, transaction_id)) => {
            let transaction_id = transaction_id.expect("a key without a stored result has its transaction id");
            Ok(Some(result_of_transaction(connection, &transaction_id).await?))
        }
    }
}

/// The result of the append that `transaction_id` committed, rebuilt from its events: their
/// positions, and per stream (in the order the request named them, which is the order they
/// were written in) the last version.
async fn result_of_transaction(connection: &mut sqlx::PgConnection, transaction_id: &str) -> Result<AppendResult> {
    let written: Vec<(i64, Uuid, i64)> = sqlx::query_as(
        "select global_position, stream_id, stream_version from ledger.events \
         where transaction_id = $1::text::xid8 order by global_position",
    )
    .bind(transaction_id)
    .fetch_all(&mut *connection)
    .await?;
    let mut result = AppendResult { positions: Vec::with_capacity(written.len()), streams: Vec::new(), replayed: true };
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for (position, stream_id, version) in written {
        result.positions.push(position);
        let version = u64::try_from(version).expect("stream versions are positive");
        match index.get(&stream_id) {
            Some(&at) => result.streams[at].version = result.streams[at].version.max(version),
            None => {
                index.insert(stream_id, result.streams.len());
                result.streams.push(StreamHead { stream_id, version });
            }
        }
    }
    Ok(result)
}
