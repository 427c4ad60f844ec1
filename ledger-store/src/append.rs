//! Appending: validation, idempotency, per-stream locks and optimistic concurrency, and the
//! batched insert.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::chain::{Canonical, jsonb_text, needs_postgres};
use crate::error::{Result, StoreError};
use crate::event::{
    AppendRequest, AppendResult, ExpectedVersion, Metadata, NewEvent, Payload, StreamAppend, StreamHead, StreamedAppend,
};

/// The most events one append may carry (a payroll run of 100,000 employees pays in
/// several appends).
pub const APPEND_EVENTS_MAX: usize = 100_000;
/// Rows per INSERT statement: one round trip each.
pub const INSERT_CHUNK_ROWS: usize = 5_000;
/// From this many events an append streams its rows with COPY instead of INSERT: no
/// per-statement planning, rows inserted in batches.
pub const COPY_ROWS_MIN: usize = 200;
/// From this many payload bytes an append streams its rows with COPY whatever their number
/// (a run's calculation is ~100 events of ~700 KB each): a chunk at a time, instead of
/// copying every payload into statement parameters.
pub const COPY_PAYLOAD_BYTES_MIN: usize = 1 << 20;
/// Bytes buffered before a COPY chunk is sent.
const COPY_BUFFER_BYTES: usize = 1 << 20;
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// Up to this many streams an append locks each stream; above it, it takes the whole log
/// exclusively so that the lock table stays small.
pub const STREAM_LOCKS_MAX: usize = 64;

/// Advisory lock keys in the two-integer space (distinct from the one-bigint space used for
/// single streams).
pub(crate) const LOCK_CLASS_LOG: i32 = 0x4c45_4447; // "LEDG"
pub(crate) const LOCK_CLASS_IDEMPOTENCY: i32 = 0x4c45_4449; // "LEDI"
const LOCK_OBJECT_LOG: i32 = 0;

/// A pooled connection for one append, closed instead of returned to the pool when the
/// append's future is dropped before it ends (a cancelled request, an aborted task): sqlx
/// answers a COPY dropped midway with a `CopyFail` whose replies it does not wait for, and the
/// next user of the connection would read them as its own (a query "returning no rows").
struct AppendConnection {
    connection: sqlx::pool::PoolConnection<Postgres>,
    ended: bool,
}

impl AppendConnection {
    async fn acquire(pool: &PgPool) -> Result<AppendConnection> {
        Ok(AppendConnection { connection: pool.acquire().await?, ended: false })
    }

    /// The append ended, and the connection is fit to go back to the pool (when the
    /// connection itself failed, its state is unknown).
    fn end(&mut self, sound: bool) {
        self.ended = sound;
    }
}

impl Drop for AppendConnection {
    fn drop(&mut self) {
        if !self.ended {
            self.connection.close_on_drop();
        }
    }
}

pub(crate) async fn append(pool: &PgPool, request: &AppendRequest) -> Result<AppendResult> {
    validate(request)?;
    let mut connection = AppendConnection::acquire(pool).await?;
    let result = append_on(&mut connection.connection, request).await;
    connection.end(!matches!(result, Err(StoreError::Database(_))));
    result
}

async fn append_on(connection: &mut sqlx::PgConnection, request: &AppendRequest) -> Result<AppendResult> {
    use sqlx::Connection as _;
    let request_hash = match (&request.idempotency_key, &request.fingerprint) {
        (None, _) => Vec::new(),
        (Some(_), Some(fingerprint)) => fingerprint.clone(),
        (Some(_), None) => request_hash(request, PayloadForm::Text).to_vec(),
    };
    // The payloads' jsonb texts only PostgreSQL writes (what their hashes cover), before any
    // lock is taken.
    let asked = asked_of_postgres(
        connection,
        request.streams.iter().flat_map(|stream| &stream.events).map(|event| event.payload.text()),
    )
    .await?;
    let mut transaction = connection.begin().await?;
    if let Some(key) = &request.idempotency_key
        && let Some(result) = earlier_result(&mut transaction, key, &request_hash, Some(request)).await?
    {
        transaction.rollback().await?;
        return Ok(result);
    }
    // Every lock is taken before the transaction's first write or reserved position, which
    // is when it gets its transaction id: a writer that waited for another stream's writer
    // therefore always has the larger id, and readers in (transaction_id, position) order
    // see each stream's versions in increasing order.
    lock_streams(&mut transaction, &request.streams).await?;
    let (heads, reserved) = check_and_reserve(&mut transaction, &request.streams, request.event_count()).await?;
    let (first_versions, previous_hashes): (Vec<u64>, Vec<Option<Vec<u8>>>) = heads.into_iter().unzip();
    let positions = insert_events(&mut transaction, request, &first_versions, previous_hashes, reserved, asked).await?;
    let result = AppendResult {
        positions,
        streams: request
            .streams
            .iter()
            .zip(&first_versions)
            .map(|(stream, first)| StreamHead {
                stream_id: stream.stream_id,
                version: first + stream.events.len() as u64 - 1,
            })
            .collect(),
        replayed: false,
    };
    if let Some(key) = &request.idempotency_key {
        record_key(&mut transaction, key, &request_hash).await?;
    }
    transaction.commit().await?;
    Ok(result)
}

/// Binds the key to this transaction: its result is read back from the transaction's events
/// when the key repeats.
async fn record_key(transaction: &mut Transaction<'_, Postgres>, key: &str, request_hash: &[u8]) -> Result<()> {
    sqlx::query(
        "insert into ledger.idempotency_keys (idempotency_key, request_hash, transaction_id) \
         values ($1, $2, pg_current_xact_id())",
    )
    .bind(key)
    .bind(request_hash)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// Appends one stream's events as `events` produces them, in one transaction (see
/// [`crate::EventStore::append_streamed`]).
pub(crate) async fn append_streamed<E, S>(
    pool: &PgPool,
    append: &StreamedAppend,
    events: S,
) -> std::result::Result<AppendResult, E>
where
    E: From<StoreError>,
    S: futures_util::Stream<Item = std::result::Result<NewEvent, E>>,
{
    let target = StreamAppend {
        organization_id: append.organization_id,
        stream_type: append.stream_type.clone(),
        stream_id: append.stream_id,
        expected_version: append.expected_version,
        events: Vec::new(),
    };
    validate_envelope(&append.metadata, append.idempotency_key.as_deref(), append.fingerprint.as_deref())?;
    validate_target(0, &target)?;
    let mut connection = AppendConnection::acquire(pool).await?;
    let result = append_streamed_on(&mut connection.connection, append, &target, events).await;
    // The caller's error type hides whether the connection failed: after any error it is
    // closed (a streamed append fails rarely: a conflict is found before anything is sent).
    connection.end(result.is_ok());
    result
}

async fn append_streamed_on<E, S>(
    connection: &mut sqlx::PgConnection,
    append: &StreamedAppend,
    target: &StreamAppend,
    events: S,
) -> std::result::Result<AppendResult, E>
where
    E: From<StoreError>,
    S: futures_util::Stream<Item = std::result::Result<NewEvent, E>>,
{
    use sqlx::Connection as _;
    let mut transaction = connection.begin().await.map_err(StoreError::from)?;
    if let Some(key) = &append.idempotency_key {
        // The events are not known before they are written: the caller says what "the same
        // request" is.
        let fingerprint = append.fingerprint.as_deref().ok_or_else(|| {
            StoreError::invalid(
                "fingerprint",
                "a streamed append with an idempotency key needs its request's fingerprint",
            )
        })?;
        if let Some(result) = earlier_result(&mut transaction, key, fingerprint, None).await? {
            transaction.rollback().await.map_err(StoreError::from)?;
            return Ok(result);
        }
    }
    lock_streams(&mut transaction, std::slice::from_ref(target)).await?;
    let (mut heads, checked) = check_and_reserve(&mut transaction, std::slice::from_ref(target), 0).await?;
    let (first_version, previous) = heads.remove(0);
    let metadata = metadata_text(&append.metadata, append.idempotency_key.as_deref());
    let metadata = jsonb_of(&mut transaction, &metadata).await?;
    let positions = if checked.copy_allowed {
        write_segments(&mut transaction, target, first_version, previous, &metadata, events).await?
    } else {
        insert_segments(&mut transaction, target, first_version, previous, &metadata, events).await?
    };
    if positions.is_empty() {
        return Err(StoreError::invalid("streams[0].events", "a stream in an append needs at least one event").into());
    }
    if let Some(key) = &append.idempotency_key {
        record_key(&mut transaction, key, append.fingerprint.as_deref().expect("checked above")).await?;
    }
    transaction.commit().await.map_err(StoreError::from)?;
    Ok(AppendResult {
        streams: vec![StreamHead { stream_id: append.stream_id, version: first_version + positions.len() as u64 - 1 }],
        positions,
        replayed: false,
    })
}

/// Positions a streamed append reserves at a time. The ones it does not use are a gap.
const STREAMED_RESERVE: usize = 64;

/// Takes the source's events one at a time, each checked and chained as it comes, into a
/// COPY kept open while the source produces (the server takes a megabyte while the next is
/// made); returns the positions of all (none for a source that yields none). A COPY ends,
/// and the next begins, when the reserved positions run out or an event's jsonb text has to
/// be asked of PostgreSQL. A source that fails fails the append before its commit: nothing
/// of it is written.
async fn write_segments<E, S>(
    transaction: &mut Transaction<'_, Postgres>,
    target: &StreamAppend,
    first_version: u64,
    mut previous: Option<Vec<u8>>,
    metadata: &str,
    events: S,
) -> std::result::Result<Vec<i64>, E>
where
    E: From<StoreError>,
    S: futures_util::Stream<Item = std::result::Result<NewEvent, E>>,
{
    use futures_util::StreamExt as _;
    let mut events = std::pin::pin!(events);
    let mut event_ids = HashSet::new();
    let mut positions = Vec::new();
    let mut reserved = std::collections::VecDeque::new();
    let mut recorded_at_micros = 0;
    let escaped_metadata = escaped(metadata);
    let mut buffer = String::with_capacity(COPY_BUFFER_BYTES + 4096);
    // The checked event that ended the last COPY, with its jsonb text when PostgreSQL wrote it.
    let mut pending: Option<(NewEvent, Option<String>)> = None;
    let mut ended = false;
    while !ended {
        if let Some((event, asked)) = &mut pending
            && asked.is_none()
            && needs_postgres(event.payload.text())
        {
            *asked = asked_of_postgres(transaction, std::iter::once(event.payload.text())).await?.remove(&0);
        }
        if reserved.is_empty() {
            let (_, more) = check_and_reserve(transaction, &[], STREAMED_RESERVE).await?;
            recorded_at_micros = more.recorded_at_micros;
            reserved.extend(more.positions);
        }
        let mut copy = transaction.copy_in_raw(COPY_EVENTS).await.map_err(StoreError::from)?;
        let mut copied = 0;
        loop {
            let (event, asked) = match pending.take() {
                Some(pending) => pending,
                None => match events.next().await {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(event) => match checked_event(event, positions.len(), &mut event_ids) {
                        Ok(event) => (event, None),
                        Err(error) => {
                            let _ = copy.abort("the append's events could not all be produced").await;
                            return Err(error);
                        }
                    },
                },
            };
            if reserved.is_empty() || (asked.is_none() && needs_postgres(event.payload.text())) {
                pending = Some((event, asked));
                break;
            }
            let payload = match asked {
                Some(text) => text,
                None => match jsonb_text(event.payload.text()) {
                    Some(text) => text,
                    None => {
                        let _ = copy.abort("an event could not be written").await;
                        return Err(StoreError::invalid("payload", "is not JSON").into());
                    }
                },
            };
            let position = reserved.pop_front().expect("a reserved position");
            let version = first_version + positions.len() as u64;
            let row =
                Row::chained(target, &event, version, position, payload, &mut previous, metadata, recorded_at_micros);
            push_copy_line(&mut buffer, &row, &escaped_metadata);
            positions.push(position);
            copied += 1;
            if buffer.len() >= COPY_BUFFER_BYTES {
                copy.send(buffer.as_bytes()).await.map_err(StoreError::from)?;
                buffer.clear();
            }
        }
        if copied == 0 {
            let _ = copy.abort("nothing to write").await;
            continue;
        }
        finish_copy(copy, &mut buffer).await?;
    }
    Ok(positions)
}

/// [`write_segments`] for a role that may not COPY: the source's events are taken up to
/// `INSERT_CHUNK_BYTES` of payload (or `INSERT_CHUNK_ROWS` events) at a time, chained over
/// positions reserved for them and INSERTed.
async fn insert_segments<E, S>(
    transaction: &mut Transaction<'_, Postgres>,
    target: &StreamAppend,
    first_version: u64,
    mut previous: Option<Vec<u8>>,
    metadata: &str,
    events: S,
) -> std::result::Result<Vec<i64>, E>
where
    E: From<StoreError>,
    S: futures_util::Stream<Item = std::result::Result<NewEvent, E>>,
{
    use futures_util::StreamExt as _;
    let mut events = std::pin::pin!(events);
    let mut event_ids = HashSet::new();
    let mut positions = Vec::new();
    let (mut segment, mut bytes): (Vec<NewEvent>, usize) = (Vec::new(), 0);
    let mut ended = false;
    while !ended {
        match events.next().await {
            Some(event) => {
                let event = checked_event(event, positions.len() + segment.len(), &mut event_ids)?;
                bytes += event.payload.text().len();
                segment.push(event);
            }
            None => ended = true,
        }
        if segment.is_empty() || !(ended || segment.len() == INSERT_CHUNK_ROWS || bytes >= INSERT_CHUNK_BYTES) {
            continue;
        }
        let asked = asked_of_postgres(transaction, segment.iter().map(|event| event.payload.text())).await?;
        let (_, reserved) = check_and_reserve(transaction, &[], segment.len()).await?;
        let run = Run {
            stream: target,
            events: &segment,
            first_version: first_version + positions.len() as u64,
            previous: previous.take(),
        };
        let rows = Chainer::new(vec![run], &reserved, metadata, asked).collect::<Result<Vec<_>>>()?;
        previous = rows.last().map(|row| row.hash.to_vec());
        insert_chunk(transaction, &rows, metadata).await?;
        positions.extend(reserved.positions);
        (segment, bytes) = (Vec::new(), 0);
    }
    Ok(positions)
}

/// A source's event, checked as the `count`th of its append.
fn checked_event<E: From<StoreError>>(
    event: std::result::Result<NewEvent, E>,
    count: usize,
    event_ids: &mut HashSet<Uuid>,
) -> std::result::Result<NewEvent, E> {
    let event = event?;
    validate_event(0, count, &event)?;
    if !event_ids.insert(event.event_id) {
        return Err(StoreError::invalid(
            format!("streams[0].events[{count}].event_id"),
            format!("event id {} appears twice", event.event_id),
        )
        .into());
    }
    if count == APPEND_EVENTS_MAX {
        return Err(StoreError::invalid(
            "streams",
            format!("more than {APPEND_EVENTS_MAX} events: the limit of one append"),
        )
        .into());
    }
    Ok(event)
}

/// Sends what is buffered and ends the COPY (the database checks its rows then).
async fn finish_copy(mut copy: sqlx::postgres::PgCopyIn<&mut sqlx::PgConnection>, buffer: &mut String) -> Result<()> {
    if !buffer.is_empty() {
        copy.send(buffer.as_bytes()).await?;
        buffer.clear();
    }
    copy.finish().await.map_err(map_unique_violation)?;
    Ok(())
}

/// The metadata stored with every event of an append: the request's, with its key.
fn metadata_text(metadata: &Metadata, idempotency_key: Option<&str>) -> String {
    let mut metadata = metadata.clone();
    metadata.idempotency_key = idempotency_key.map(str::to_owned);
    serde_json::to_string(&metadata).expect("metadata serializes")
}

fn validate(request: &AppendRequest) -> Result<()> {
    if request.streams.is_empty() {
        return Err(StoreError::invalid("streams", "an append needs at least one stream"));
    }
    let event_count = request.event_count();
    if event_count > APPEND_EVENTS_MAX {
        return Err(StoreError::invalid(
            "streams",
            format!("{event_count} events exceed the limit of {APPEND_EVENTS_MAX} per append"),
        ));
    }
    validate_envelope(&request.metadata, request.idempotency_key.as_deref(), request.fingerprint.as_deref())?;
    let mut stream_ids = HashSet::with_capacity(request.streams.len());
    let mut event_ids = HashSet::with_capacity(event_count);
    for (stream_index, stream) in request.streams.iter().enumerate() {
        validate_stream(stream_index, stream)?;
        if !stream_ids.insert(stream.stream_id) {
            return Err(StoreError::invalid(
                format!("streams[{stream_index}].stream_id"),
                format!("stream {} appears twice in one append", stream.stream_id),
            ));
        }
        for (event_index, event) in stream.events.iter().enumerate() {
            if !event_ids.insert(event.event_id) {
                return Err(StoreError::invalid(
                    format!("streams[{stream_index}].events[{event_index}].event_id"),
                    format!("event id {} appears twice", event.event_id),
                ));
            }
        }
    }
    Ok(())
}

/// What every append needs besides its events: who acts, and a well-formed key.
fn validate_envelope(metadata: &Metadata, idempotency_key: Option<&str>, fingerprint: Option<&[u8]>) -> Result<()> {
    if metadata.actor.trim().is_empty() {
        return Err(StoreError::invalid("metadata.actor", "must name who acts"));
    }
    if fingerprint.is_some_and(|fingerprint| fingerprint.is_empty()) {
        return Err(StoreError::invalid("fingerprint", "must not be empty"));
    }
    if let Some(key) = idempotency_key
        && (key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX)
    {
        return Err(StoreError::invalid(
            "idempotency_key",
            format!("must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes long"),
        ));
    }
    Ok(())
}

fn validate_stream(stream_index: usize, stream: &StreamAppend) -> Result<()> {
    validate_target(stream_index, stream)?;
    if stream.events.is_empty() {
        return Err(StoreError::invalid(
            format!("streams[{stream_index}].events"),
            "a stream in an append needs at least one event",
        ));
    }
    for (event_index, event) in stream.events.iter().enumerate() {
        validate_event(stream_index, event_index, event)?;
    }
    Ok(())
}

/// A stream's identity, without its events.
fn validate_target(stream_index: usize, stream: &StreamAppend) -> Result<()> {
    let field = |name: &str| format!("streams[{stream_index}].{name}");
    if stream.stream_id.is_nil() {
        return Err(StoreError::invalid(field("stream_id"), "must not be the nil uuid"));
    }
    if stream.organization_id.is_nil() {
        return Err(StoreError::invalid(field("organization_id"), "must not be the nil uuid"));
    }
    if stream.stream_type.trim().is_empty() {
        return Err(StoreError::invalid(field("stream_type"), "must not be empty"));
    }
    Ok(())
}

fn validate_event(stream_index: usize, event_index: usize, event: &NewEvent) -> Result<()> {
    let field = |name: &str| format!("streams[{stream_index}].events[{event_index}].{name}");
    if event.event_id.is_nil() {
        return Err(StoreError::invalid(field("event_id"), "must not be the nil uuid"));
    }
    if event.event_type.trim().is_empty() {
        return Err(StoreError::invalid(field("event_type"), "must not be empty"));
    }
    if event.schema_version < 1 {
        return Err(StoreError::invalid(
            field("schema_version"),
            format!("must be 1 or more, not {}", event.schema_version),
        ));
    }
    if !event.payload.is_object() {
        return Err(StoreError::invalid(field("payload"), "must be a JSON object"));
    }
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
async fn earlier_result(
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

/// The stored result of an idempotency key, if the key was used: `Ok(None)` when it is new,
/// the result when it was used with the same fingerprint, `IdempotencyMismatch` otherwise.
/// A key recorded before payloads were hashed as text is also compared with the `request`'s
/// fingerprint in that earlier form, when the store computed it.
///
/// The result is rebuilt from the events the key's transaction appended: their positions,
/// and per stream (in the order the request named them, which is the order they were
/// written in) the last version. Keys recorded before this kept a copy of the result.
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
            let written: Vec<(i64, Uuid, i64)> = sqlx::query_as(
                "select global_position, stream_id, stream_version from ledger.events \
                 where transaction_id = $1::text::xid8 order by global_position",
            )
            .bind(&transaction_id)
            .fetch_all(&mut *connection)
            .await?;
            let mut result =
                AppendResult { positions: Vec::with_capacity(written.len()), streams: Vec::new(), replayed: true };
            let mut index: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
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
            Ok(Some(result))
        }
    }
}

pub(crate) fn stream_lock_key(stream_id: Uuid) -> i64 {
    let bits = stream_id.as_u128();
    ((bits >> 64) as u64 ^ bits as u64) as i64
}

async fn lock_streams(transaction: &mut Transaction<'_, Postgres>, streams: &[StreamAppend]) -> Result<()> {
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
    // Sorted keys: two appends sharing streams take them in the same order, so they never
    // deadlock. Volatile select-list functions run after the ORDER BY.
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

struct StoredHead {
    version: i64,
    stream_type: String,
    organization_id: Uuid,
    hash: Vec<u8>,
}

/// Checks every stream against its expectation and returns, in request order, the version
/// each stream's first new event gets and the hash it follows (none for a new stream); with
/// `count` positions reserved from the log's sequence in increasing order, the
/// transaction's time and whether it may COPY, in one round trip. Called after the stream
/// locks are held (a reservation may give the transaction its id: see `append_on`), so a
/// stream's later events always get larger positions. A reservation the check then refuses
/// leaves a gap in the positions, as a rolled back append always did.
async fn check_and_reserve(
    transaction: &mut Transaction<'_, Postgres>,
    streams: &[StreamAppend],
    count: usize,
) -> Result<(Vec<(u64, Option<Vec<u8>>)>, Reserved)> {
    type Heads = (
        chrono::DateTime<chrono::Utc>,
        Vec<i64>,
        bool,
        Option<Vec<Uuid>>,
        Option<Vec<i64>>,
        Option<Vec<String>>,
        Option<Vec<Uuid>>,
        Option<Vec<Vec<u8>>>,
    );
    let stream_ids: Vec<Uuid> = streams.iter().map(|stream| stream.stream_id).collect();
    let (now, mut positions, row_security, ids, versions, types, organizations, hashes): Heads = sqlx::query_as(
        "select now(), array(select nextval('ledger.events_global_position_seq') from generate_series(1, $2)), \
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
    let mut heads: HashMap<Uuid, StoredHead> = HashMap::new();
    if let (Some(ids), Some(versions), Some(types), Some(organizations), Some(hashes)) =
        (ids, versions, types, organizations, hashes)
    {
        for ((((stream_id, version), stream_type), organization_id), hash) in
            ids.into_iter().zip(versions).zip(types).zip(organizations).zip(hashes)
        {
            heads.insert(stream_id, StoredHead { version, stream_type, organization_id, hash });
        }
    }
    let checked = streams
        .iter()
        .map(|stream| {
            let head = heads.remove(&stream.stream_id);
            Ok((first_version(stream, head.as_ref())?, head.map(|head| head.hash)))
        })
        .collect::<Result<_>>()?;
    Ok((checked, Reserved { recorded_at_micros: now.timestamp_micros(), positions, copy_allowed: !row_security }))
}

fn first_version(stream: &StreamAppend, head: Option<&StoredHead>) -> Result<u64> {
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

/// The transaction's time (every event's `recorded_at`) and positions reserved from the
/// log's sequence, in increasing order: what an event's hash covers besides its own fields.
struct Reserved {
    recorded_at_micros: i64,
    positions: Vec<i64>,
    /// Whether this role may COPY into the log: PostgreSQL refuses COPY FROM into a table
    /// whose row-level security applies to the role (a login role that is a member of
    /// `ledger_writer` rather than the table's owner); such an append INSERTs instead.
    copy_allowed: bool,
}

/// The jsonb texts (what hashes cover) PostgreSQL has to write: of the texts
/// [`needs_postgres`] picks, by their index in `texts`. The others are written here as their
/// rows are produced.
async fn asked_of_postgres<'a>(
    connection: &mut sqlx::PgConnection,
    texts: impl Iterator<Item = &'a str>,
) -> Result<HashMap<usize, String>> {
    let (indexes, asked): (Vec<usize>, Vec<&str>) = texts.enumerate().filter(|(_, text)| needs_postgres(text)).unzip();
    if asked.is_empty() {
        return Ok(HashMap::new());
    }
    let answers: Vec<String> = sqlx::query_scalar(
        "select array(select t::jsonb::text from unnest($1::text[]) with ordinality as a(t, n) order by n)",
    )
    .bind(&asked)
    .fetch_one(&mut *connection)
    .await?;
    Ok(indexes.into_iter().zip(answers).collect())
}

/// The jsonb text of one JSON text, written here or asked of PostgreSQL.
async fn jsonb_of(connection: &mut sqlx::PgConnection, json: &str) -> Result<String> {
    match asked_of_postgres(connection, std::iter::once(json)).await?.remove(&0) {
        Some(text) => Ok(text),
        None => jsonb_text(json).ok_or_else(|| StoreError::invalid("metadata", "is not JSON")),
    }
}

/// The events of one stream in an append, from `first_version` on, after the stream's last
/// stored hash.
struct Run<'a> {
    stream: &'a StreamAppend,
    events: &'a [NewEvent],
    first_version: u64,
    previous: Option<Vec<u8>>,
}

/// One event's row as written: its fields, position and link in its stream's chain.
struct Row<'a> {
    stream: &'a StreamAppend,
    event: &'a NewEvent,
    version: u64,
    position: i64,
    /// The payload's jsonb text.
    payload: String,
    prev_hash: Option<Vec<u8>>,
    hash: [u8; 32],
}

impl<'a> Row<'a> {
    /// The row of `event` at `version` and `position`, after `previous` (which becomes its
    /// hash).
    #[allow(clippy::too_many_arguments)]
    fn chained(
        stream: &'a StreamAppend,
        event: &'a NewEvent,
        version: u64,
        position: i64,
        payload: String,
        previous: &mut Option<Vec<u8>>,
        metadata: &str,
        recorded_at_micros: i64,
    ) -> Row<'a> {
        let hash = Canonical {
            global_position: position,
            event_id: event.event_id,
            organization_id: stream.organization_id,
            stream_type: &stream.stream_type,
            stream_id: stream.stream_id,
            stream_version: version,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            payload: &payload,
            metadata,
            recorded_at_micros,
        }
        .hash(previous.as_deref());
        let prev_hash = previous.replace(hash.to_vec());
        Row { stream, event, version, position, payload, prev_hash, hash }
    }
}

/// Chains runs of events in order over reserved positions, one row at a time: the rows of a
/// COPY are made while PostgreSQL takes the ones sent before.
struct Chainer<'a> {
    runs: std::vec::IntoIter<Run<'a>>,
    run: Option<Run<'a>>,
    offset: usize,
    positions: std::vec::IntoIter<i64>,
    recorded_at_micros: i64,
    metadata: &'a str,
    /// The payloads' jsonb texts PostgreSQL wrote, by event index.
    asked: HashMap<usize, String>,
    index: usize,
}

impl<'a> Chainer<'a> {
    fn new(runs: Vec<Run<'a>>, reserved: &Reserved, metadata: &'a str, asked: HashMap<usize, String>) -> Self {
        Chainer {
            runs: runs.into_iter(),
            run: None,
            offset: 0,
            positions: reserved.positions.clone().into_iter(),
            recorded_at_micros: reserved.recorded_at_micros,
            metadata,
            asked,
            index: 0,
        }
    }
}

impl<'a> Iterator for Chainer<'a> {
    type Item = Result<Row<'a>>;

    fn next(&mut self) -> Option<Result<Row<'a>>> {
        while self.run.as_ref().is_none_or(|run| self.offset == run.events.len()) {
            self.run = Some(self.runs.next()?);
            self.offset = 0;
        }
        let run = self.run.as_mut().expect("a run with events left");
        let event = &run.events[self.offset];
        let version = run.first_version + self.offset as u64;
        let position = self.positions.next().expect("a position is reserved for every event");
        let payload = match self.asked.remove(&self.index) {
            Some(text) => text,
            None => match jsonb_text(event.payload.text()) {
                Some(text) => text,
                None => return Some(Err(StoreError::invalid("payload", "is not JSON"))),
            },
        };
        self.offset += 1;
        self.index += 1;
        Some(Ok(Row::chained(
            run.stream,
            event,
            version,
            position,
            payload,
            &mut run.previous,
            self.metadata,
            self.recorded_at_micros,
        )))
    }
}

const INSERT_EVENTS: &str = "\
insert into ledger.events (global_position, event_id, organization_id, stream_type, stream_id, stream_version, event_type, \
    schema_version, payload, metadata, prev_hash, hash) \
select e.global_position, e.event_id, e.organization_id, e.stream_type, e.stream_id, e.stream_version, e.event_type, \
    e.schema_version, e.payload::jsonb, $9::jsonb, e.prev_hash, e.hash \
from unnest($1::int8[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::int8[], $7::text[], $8::int4[], $10::text[], \
            $11::bytea[], $12::bytea[]) \
    as e(global_position, event_id, organization_id, stream_type, stream_id, stream_version, event_type, schema_version, \
         payload, prev_hash, hash)";

/// Writes an append's events (chained here, checked by the database per statement) and
/// returns their positions: by INSERT for a few, by COPY from `COPY_ROWS_MIN` events or
/// `COPY_PAYLOAD_BYTES_MIN` bytes of payload on.
async fn insert_events(
    transaction: &mut Transaction<'_, Postgres>,
    request: &AppendRequest,
    first_versions: &[u64],
    previous_hashes: Vec<Option<Vec<u8>>>,
    reserved: Reserved,
    asked: HashMap<usize, String>,
) -> Result<Vec<i64>> {
    let metadata = metadata_text(&request.metadata, request.idempotency_key.as_deref());
    let metadata = jsonb_of(transaction, &metadata).await?;
    let runs = request
        .streams
        .iter()
        .zip(first_versions)
        .zip(previous_hashes)
        .map(|((stream, first_version), previous)| Run {
            stream,
            events: &stream.events,
            first_version: *first_version,
            previous,
        })
        .collect();
    let rows = Chainer::new(runs, &reserved, &metadata, asked);
    let payload_bytes: usize =
        request.streams.iter().flat_map(|stream| &stream.events).map(|event| event.payload.text().len()).sum();
    if reserved.copy_allowed && (request.event_count() >= COPY_ROWS_MIN || payload_bytes >= COPY_PAYLOAD_BYTES_MIN) {
        copy_rows(transaction, rows, &metadata).await?;
    } else {
        insert_rows(transaction, rows, &metadata).await?;
    }
    Ok(reserved.positions)
}

/// The payload bytes at which an INSERT statement is sent (with at most
/// `INSERT_CHUNK_ROWS` rows).
const INSERT_CHUNK_BYTES: usize = 4 << 20;

/// INSERTs the rows a chunk at a time.
async fn insert_rows<'a>(
    transaction: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = Result<Row<'a>>>,
    metadata: &str,
) -> Result<()> {
    let (mut chunk, mut bytes) = (Vec::new(), 0);
    for row in rows {
        let row = row?;
        bytes += row.payload.len();
        chunk.push(row);
        if chunk.len() == INSERT_CHUNK_ROWS || bytes >= INSERT_CHUNK_BYTES {
            insert_chunk(transaction, &chunk, metadata).await?;
            (chunk, bytes) = (Vec::new(), 0);
        }
    }
    if !chunk.is_empty() {
        insert_chunk(transaction, &chunk, metadata).await?;
    }
    Ok(())
}

async fn insert_chunk(transaction: &mut Transaction<'_, Postgres>, rows: &[Row<'_>], metadata: &str) -> Result<()> {
    let column = |field: fn(&Row<'_>) -> String| rows.iter().map(field).collect::<Vec<_>>();
    sqlx::query(INSERT_EVENTS)
        .bind(rows.iter().map(|row| row.position).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.event.event_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.stream.organization_id).collect::<Vec<_>>())
        .bind(column(|row| row.stream.stream_type.clone()))
        .bind(rows.iter().map(|row| row.stream.stream_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.version as i64).collect::<Vec<_>>())
        .bind(column(|row| row.event.event_type.clone()))
        .bind(rows.iter().map(|row| row.event.schema_version).collect::<Vec<_>>())
        .bind(metadata)
        .bind(column(|row| row.payload.clone()))
        .bind(rows.iter().map(|row| row.prev_hash.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.hash.to_vec()).collect::<Vec<_>>())
        .execute(&mut **transaction)
        .await
        .map_err(map_unique_violation)?;
    Ok(())
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

const COPY_EVENTS: &str = "copy ledger.events (global_position, event_id, organization_id, stream_type, stream_id, \
    stream_version, event_type, schema_version, payload, metadata, prev_hash, hash) from stdin";

/// Streams the rows with COPY, a buffer at a time: one statement, checked as a whole.
async fn copy_rows<'a>(
    transaction: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = Result<Row<'a>>>,
    metadata: &str,
) -> Result<()> {
    let mut copy = transaction.copy_in_raw(COPY_EVENTS).await?;
    let mut buffer = String::with_capacity(COPY_BUFFER_BYTES + 4096);
    let escaped_metadata = escaped(metadata);
    for row in rows {
        let row = match row {
            Ok(row) => row,
            Err(error) => {
                let _ = copy.abort("an event could not be written").await;
                return Err(error);
            }
        };
        push_copy_line(&mut buffer, &row, &escaped_metadata);
        if buffer.len() >= COPY_BUFFER_BYTES {
            copy.send(buffer.as_bytes()).await?;
            buffer.clear();
        }
    }
    if !buffer.is_empty() {
        copy.send(buffer.as_bytes()).await?;
    }
    copy.finish().await.map_err(map_unique_violation)?;
    Ok(())
}

fn escaped(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len() + 8);
    push_copy_field(&mut escaped, value);
    escaped
}

/// One event's row in COPY's text format; `escaped_metadata` is escaped already.
fn push_copy_line(buffer: &mut String, row: &Row<'_>, escaped_metadata: &str) {
    use std::fmt::Write as _;
    let _ = write!(buffer, "{}\t{}\t{}\t", row.position, row.event.event_id, row.stream.organization_id);
    push_copy_field(buffer, &row.stream.stream_type);
    let _ = write!(buffer, "\t{}\t{}\t", row.stream.stream_id, row.version);
    push_copy_field(buffer, &row.event.event_type);
    let _ = write!(buffer, "\t{}\t", row.event.schema_version);
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
fn map_unique_violation(error: sqlx::Error) -> StoreError {
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

/// What an idempotency key already stands for, without waiting for a request in flight.
pub(crate) async fn idempotent_result(pool: &PgPool, key: &str, fingerprint: &[u8]) -> Result<Option<AppendResult>> {
    let mut connection = pool.acquire().await?;
    stored_result(&mut connection, key, fingerprint, None).await
}
