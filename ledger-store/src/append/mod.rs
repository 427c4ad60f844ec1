//! Appending. An append runs in one transaction on a connection of its own, in steps, each
//! a file of this folder:
//!
//! 1. [`validate`]: the request is well formed, or `StoreError::Invalid` names the field
//!    (nothing is written, no connection is taken);
//! 2. [`idempotency`]: with a key, an advisory lock on it, and a key used before returns its
//!    earlier result (same fingerprint) or `StoreError::IdempotencyMismatch`;
//! 3. [`reserve`]: the stream locks, in sorted order, before the transaction's first write;
//! 4. [`reserve`]: each stream's head checked against its expected version, its type and
//!    organization, and positions reserved from the log's sequence, in one round trip;
//! 5. [`rows`] and [`write`]: the events become chained rows (jsonb text, version, position,
//!    hashes) from one [`rows::RowSource`], written by `INSERT` (a few) or `COPY` (many, or a
//!    streamed source); the database checks every statement's rows;
//! 6. [`idempotency`]: the key is recorded with the fingerprint and the transaction's id.
//!
//! A small append (a command's) does steps 2 to 6 in one statement instead: [`statement`],
//! and joins the appends waiting at the same moment in one transaction: [`group`].
//!
//! Every lock is taken before the transaction's first write or reserved position, which is
//! when it gets its transaction id: a writer that waited for another stream's writer
//! therefore always has the larger id, and readers in (transaction_id, position) order see
//! each stream's versions in increasing order.

mod group;
mod idempotency;
mod reserve;
mod rows;
mod statement;
mod validate;
mod write;

use sqlx::{Connection as _, PgPool, Postgres};

pub(crate) use group::GroupCommit;
pub(crate) use idempotency::idempotent_result;
use reserve::{WriteMethod, check_and_reserve, lock_streams, try_lock_stream};
use rows::{NoSource, RowSource, SliceRows, StreamedRows, asked_of_postgres, jsonb_of, metadata_text};
pub use write::INSERT_CHUNK_ROWS;

use crate::error::{Result, StoreError};
use crate::event::{AppendRequest, AppendResult, NewEvent, StreamAppend, StreamHead, StreamedAppend};

/// The most events one append may carry (a payroll run of 100,000 employees pays in
/// several appends).
pub const APPEND_EVENTS_MAX: usize = 100_000;
/// From this many events an append streams its rows with COPY instead of INSERT: no
/// per-statement planning, rows inserted in batches.
pub const COPY_ROWS_MIN: usize = 200;
/// From this many payload bytes an append streams its rows with COPY whatever their number
/// (a run's calculation is ~100 events of ~700 KB each): a chunk at a time, instead of
/// copying every payload into statement parameters.
pub const COPY_PAYLOAD_BYTES_MIN: usize = 1 << 20;
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// Up to this many streams an append locks each stream; above it, it takes the whole log
/// exclusively so that the lock table stays small.
pub const STREAM_LOCKS_MAX: usize = 64;

/// A pooled connection for one append, closed instead of returned to the pool when the
/// append's future is dropped before it ends (a cancelled request, an aborted task): sqlx
/// answers a COPY dropped midway with a `CopyFail` whose replies it does not wait for, and the
/// next user of the connection would read them as its own (a query "returning no rows").
struct AppendConnection {
    connection: sqlx::pool::PoolConnection<Postgres>,
    ended: bool,
}

/// How an append ended, for its connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The connection is fit to go back to the pool.
    Sound,
    /// The connection's state is unknown (it failed, or the caller's error hides whether it
    /// did): it is closed.
    Unknown,
}

impl AppendConnection {
    async fn acquire(pool: &PgPool) -> Result<AppendConnection> {
        Ok(AppendConnection { connection: pool.acquire().await?, ended: false })
    }

    fn end(&mut self, ending: Ending) {
        self.ended = ending == Ending::Sound;
    }
}

impl Drop for AppendConnection {
    fn drop(&mut self) {
        if !self.ended {
            self.connection.close_on_drop();
        }
    }
}

/// Step 1 alone: the request is well formed.
pub(crate) fn validate(request: &AppendRequest) -> Result<()> {
    validate::validate(request)
}

/// The fingerprint a request with a key and none of its own is recorded with.
pub(crate) fn fingerprint(request: &AppendRequest) -> Option<Vec<u8>> {
    request.idempotency_key.as_ref().map(|_| idempotency::fingerprint_of(request))
}

/// Appends `request`; `erased` are subjects whose data keys the same transaction destroys
/// (their erasure events are in the request). A small one goes with the next of `groups`.
pub(crate) async fn append(
    pool: &PgPool,
    groups: &std::sync::Arc<GroupCommit>,
    request: &AppendRequest,
    erased: &[uuid::Uuid],
) -> Result<AppendResult> {
    validate::validate(request)?;
    let mut alone = None;
    if erased.is_empty() && group::fits(request) {
        alone = groups.alone();
        if alone.is_none()
            && let Some(result) = groups.append(pool, request, fingerprint(request)).await
        {
            return result;
        }
    }
    let failed = |result: &Result<AppendResult>| matches!(result, Err(StoreError::Database(_)));
    if let Some(alone) = &alone {
        // A connection whose append failed is closed (its state is unknown), as is one whose
        // caller stopped waiting.
        let mut connection = alone.connection(pool).await?;
        let result = append_on(&mut connection, request, erased).await;
        if !failed(&result) {
            alone.keep(connection);
        }
        return result;
    }
    let mut connection = AppendConnection::acquire(pool).await?;
    let result = append_on(&mut connection.connection, request, erased).await;
    connection.end(if failed(&result) { Ending::Unknown } else { Ending::Sound });
    result
}

async fn append_on(
    connection: &mut sqlx::PgConnection,
    request: &AppendRequest,
    erased: &[uuid::Uuid],
) -> Result<AppendResult> {
    let fingerprint = idempotency::fingerprint_of(request);
    if erased.is_empty() && fits_one_statement(request) {
        let metadata = metadata_text(&request.metadata, request.idempotency_key.as_deref());
        if let Some(result) = statement::append_in_one_statement(connection, request, &metadata, &fingerprint).await? {
            return Ok(result);
        }
    }
    // The payloads' jsonb texts only PostgreSQL writes (what their hashes cover), before any
    // lock is taken.
    let events = request.streams.iter().flat_map(|stream| &stream.events);
    let asked = asked_of_postgres(connection, events.map(|event| event.payload.text())).await?;
    let mut transaction = connection.begin().await?;
    if let Some(key) = &request.idempotency_key
        && let Some(result) = idempotency::earlier_result(&mut transaction, key, &fingerprint, Some(request)).await?
    {
        transaction.rollback().await?;
        return Ok(result);
    }
    lock_streams(&mut transaction, &request.streams).await?;
    let (starts, reserved) = check_and_reserve(&mut transaction, &request.streams, request.event_count()).await?;
    let heads = request
        .streams
        .iter()
        .zip(&starts)
        .map(|(stream, start)| StreamHead {
            stream_id: stream.stream_id,
            version: start.first_version + stream.events.len() as u64 - 1,
        })
        .collect();
    let metadata =
        jsonb_of(&mut transaction, &metadata_text(&request.metadata, request.idempotency_key.as_deref())).await?;
    let method = match reserved.write_method {
        WriteMethod::Copy if !fits_one_statement(request) => WriteMethod::Copy,
        _ => WriteMethod::Insert,
    };
    let rows = RowSource::<NoSource>::Slice(SliceRows::new(&request.streams, starts, &reserved, &metadata, asked));
    let positions = write::write_rows(&mut transaction, rows, &metadata, &reserved.transaction_id, method).await?;
    if !erased.is_empty() {
        let at = chrono::DateTime::from_timestamp_micros(reserved.recorded_at_micros).unwrap_or_else(chrono::Utc::now);
        let subjects: Vec<_> = request
            .streams
            .iter()
            .filter(|stream| erased.contains(&stream.stream_id))
            .map(|stream| (stream.stream_id, stream.organization_id, at))
            .collect();
        crate::vault::destroy_keys(&mut *transaction, &subjects).await?;
    }
    if let Some(key) = &request.idempotency_key {
        idempotency::record_key(&mut transaction, key, &fingerprint).await?;
    }
    transaction.commit().await?;
    Ok(AppendResult { positions, streams: heads, replayed: false })
}

/// Whether an append goes in one statement ([`statement`]): a command's few events. Larger
/// ones are written by the steps above with COPY, and so is an erasure (its data keys are
/// destroyed in the same transaction; with INSERT, being small).
fn fits_one_statement(request: &AppendRequest) -> bool {
    request.event_count() < COPY_ROWS_MIN && payload_bytes(request) < COPY_PAYLOAD_BYTES_MIN
}

/// The bytes of a request's payloads.
fn payload_bytes(request: &AppendRequest) -> usize {
    request.streams.iter().flat_map(|stream| &stream.events).map(|event| event.payload.text().len()).sum()
}

/// Appends one stream's events as `events` produces them, in one transaction (see
/// [`crate::EventStore::append_streamed`]).
pub(crate) async fn append_streamed<E, S>(
    pool: &PgPool,
    append: &StreamedAppend,
    events: S,
) -> std::result::Result<AppendResult, E>
where
    E: From<StoreError> + Send,
    S: futures_util::Stream<Item = std::result::Result<NewEvent, E>> + Send,
{
    let target = StreamAppend {
        organization_id: append.organization_id,
        stream_type: append.stream_type.clone(),
        stream_id: append.stream_id,
        expected_version: append.expected_version,
        events: Vec::new(),
    };
    validate::validate_envelope(&append.metadata, append.idempotency_key.as_deref(), append.fingerprint.as_deref())?;
    validate::validate_target(0, &target)?;
    let mut connection = AppendConnection::acquire(pool).await?;
    let result = append_streamed_on(&mut connection.connection, append, &target, events).await;
    // The caller's error type hides whether the connection failed: after any error it is
    // closed (a streamed append fails rarely: a conflict is found before anything is sent).
    connection.end(if result.is_ok() { Ending::Sound } else { Ending::Unknown });
    result
}

async fn append_streamed_on<E, S>(
    connection: &mut sqlx::PgConnection,
    append: &StreamedAppend,
    target: &StreamAppend,
    events: S,
) -> std::result::Result<AppendResult, E>
where
    E: From<StoreError> + Send,
    S: futures_util::Stream<Item = std::result::Result<NewEvent, E>> + Send,
{
    let mut transaction = connection.begin().await.map_err(StoreError::from)?;
    // The events are not known before they are written: the caller says what "the same
    // request" is.
    let fingerprint = match (&append.idempotency_key, &append.fingerprint) {
        (None, _) => None,
        (Some(key), Some(fingerprint)) => Some((key, fingerprint)),
        (Some(_), None) => Err(StoreError::invalid(
            "fingerprint",
            "a streamed append with an idempotency key needs its request's fingerprint",
        ))?,
    };
    if let Some((key, fingerprint)) = fingerprint
        && let Some(result) = idempotency::earlier_result(&mut transaction, key, fingerprint, None).await?
    {
        transaction.rollback().await.map_err(StoreError::from)?;
        return Ok(result);
    }
    // A streamed append holds its stream for as long as its source produces (a calculation:
    // seconds); a second one would wait all that time holding a connection and then find the
    // stream changed. It is told at once instead.
    try_lock_stream(&mut transaction, target).await?;
    let (mut starts, reserved) = check_and_reserve(&mut transaction, std::slice::from_ref(target), 0).await?;
    let start = starts.remove(0);
    let first_version = start.first_version;
    let metadata = metadata_text(&append.metadata, append.idempotency_key.as_deref());
    let metadata = jsonb_of(&mut transaction, &metadata).await?;
    let rows = RowSource::Streamed(StreamedRows::new(target, start, &metadata, reserved.recorded_at_micros, events));
    let positions =
        write::write_rows(&mut transaction, rows, &metadata, &reserved.transaction_id, reserved.write_method).await?;
    if positions.is_empty() {
        return Err(StoreError::invalid("streams[0].events", "a stream in an append needs at least one event").into());
    }
    if let Some((key, fingerprint)) = fingerprint {
        idempotency::record_key(&mut transaction, key, fingerprint).await?;
    }
    transaction.commit().await.map_err(StoreError::from)?;
    Ok(AppendResult {
        streams: vec![StreamHead { stream_id: append.stream_id, version: first_version + positions.len() as u64 - 1 }],
        positions,
        replayed: false,
    })
}

// The server runs appends on tokio's worker threads: their futures must be `Send`. A
// regression fails to compile here, where its cause is, rather than in the server's router.
const _: () = {
    fn send<T: Send>(_: T) {}
    #[allow(dead_code)]
    fn appends_are_send(pool: &PgPool, request: &AppendRequest, streamed: &StreamedAppend) {
        send(append(pool, &Default::default(), request, &[]));
        send(append_streamed(pool, streamed, futures_util::stream::empty::<Result<NewEvent>>()));
    }
};
