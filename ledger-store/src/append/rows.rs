//! Step 5a of an append: the rows to write, chained. Each event's payload becomes its jsonb
//! text (what the hash covers: written here, or asked of PostgreSQL for the few payloads
//! [`needs_postgres`] picks), gets its version and a reserved position, and is linked to its
//! stream's previous hash.
//!
//! One [`RowSource`] feeds both writers: [`SliceRows`] over a request's events (positions
//! reserved and texts asked before), [`StreamedRows`] over a source that produces events
//! while they are written (positions reserved a few at a time, texts asked as needed).
//!
//! A streamed append's transaction stays open while its source produces: readers of the
//! whole log wait behind it as behind any long write (a 100,000-employee calculation: ~6 s).
//! Positions reserved and not used (a refused append, the rest of a streamed reservation)
//! are a gap; nothing relies on positions being dense.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};

use futures_util::{Stream, StreamExt as _};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::reserve::{Reserved, StreamStart, reserve};
use super::validate::checked_event;
use crate::chain::{Canonical, jsonb_text, needs_postgres};
use crate::error::{Result, StoreError};
use crate::event::{Metadata, NewEvent, StreamAppend};

/// Positions a streamed append reserves at a time. The ones it does not use are a gap.
const STREAMED_RESERVE: usize = 64;

/// One event's row as written: its fields, position and link in its stream's chain.
pub(super) struct Row<'a> {
    pub stream: &'a StreamAppend,
    pub event_id: Uuid,
    pub event_type: Cow<'a, str>,
    pub schema_version: i32,
    pub version: u64,
    pub position: i64,
    /// The payload's jsonb text.
    pub payload: String,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: [u8; 32],
}

/// One stream's chain as an append extends it.
struct StreamChain<'a> {
    stream: &'a StreamAppend,
    metadata: &'a str,
    recorded_at_micros: i64,
    next_version: u64,
    previous: Option<Vec<u8>>,
}

impl<'a> StreamChain<'a> {
    fn new(stream: &'a StreamAppend, start: StreamStart, metadata: &'a str, recorded_at_micros: i64) -> Self {
        StreamChain {
            stream,
            metadata,
            recorded_at_micros,
            next_version: start.first_version,
            previous: start.previous_hash,
        }
    }

    /// The row of the stream's next event, at `position`; its hash becomes the one the next
    /// event follows.
    fn link(
        &mut self,
        event_id: Uuid,
        event_type: Cow<'a, str>,
        schema_version: i32,
        payload: String,
        position: i64,
    ) -> Row<'a> {
        let version = self.next_version;
        let hash = Canonical {
            global_position: position,
            event_id,
            organization_id: self.stream.organization_id,
            stream_type: &self.stream.stream_type,
            stream_id: self.stream.stream_id,
            stream_version: version,
            event_type: &event_type,
            schema_version,
            payload: &payload,
            metadata: self.metadata,
            recorded_at_micros: self.recorded_at_micros,
        }
        .hash(self.previous.as_deref());
        self.next_version += 1;
        let prev_hash = self.previous.replace(hash.to_vec());
        Row { stream: self.stream, event_id, event_type, schema_version, version, position, payload, prev_hash, hash }
    }
}

/// Where an append's rows come from, a segment at a time. A segment is what can be written
/// without the connection (a COPY holds it): between segments the source may use it.
///
/// An enum rather than a trait: a trait with a lifetime, used in the append's future, made
/// rustc unable to prove that future `Send` for every lifetime ("not general enough").
pub(super) enum RowSource<'a, S> {
    Slice(SliceRows<'a>),
    Streamed(StreamedRows<'a, S>),
}

/// The source type of a [`RowSource::Slice`], which has none.
pub(super) type NoSource = futures_util::stream::Empty<Result<NewEvent>>;

impl<'a, E, S> RowSource<'a, S>
where
    E: From<StoreError> + Send,
    S: Stream<Item = std::result::Result<NewEvent, E>> + Send,
{
    /// Makes the next segment ready (reserves positions, asks PostgreSQL for a payload's
    /// text); `false` when nothing more can come.
    pub async fn prepare(&mut self, transaction: &mut Transaction<'_, Postgres>) -> std::result::Result<bool, E> {
        match self {
            RowSource::Slice(rows) => Ok(!std::mem::replace(&mut rows.prepared, true)),
            RowSource::Streamed(rows) => rows.prepare(transaction).await,
        }
    }

    /// The segment's next row; `None` at its end.
    pub async fn next_row(&mut self) -> Option<std::result::Result<Row<'a>, E>> {
        match self {
            RowSource::Slice(rows) => rows.next().map(|row| row.map_err(E::from)),
            RowSource::Streamed(rows) => rows.next_row().await,
        }
    }
}

/// The rows of a request's events, stream after stream, over positions reserved for all of
/// them: one segment.
pub(super) struct SliceRows<'a> {
    runs: std::vec::IntoIter<(&'a [NewEvent], StreamChain<'a>)>,
    run: Option<(&'a [NewEvent], StreamChain<'a>)>,
    positions: std::vec::IntoIter<i64>,
    /// The payloads' jsonb texts PostgreSQL wrote, by event index in the request.
    asked: HashMap<usize, String>,
    index: usize,
    prepared: bool,
}

impl<'a> SliceRows<'a> {
    pub fn new(
        streams: &'a [StreamAppend],
        starts: Vec<StreamStart>,
        reserved: &Reserved,
        metadata: &'a str,
        asked: HashMap<usize, String>,
    ) -> Self {
        let runs: Vec<_> = streams
            .iter()
            .zip(starts)
            .map(|(stream, start)| {
                (stream.events.as_slice(), StreamChain::new(stream, start, metadata, reserved.recorded_at_micros))
            })
            .collect();
        SliceRows {
            runs: runs.into_iter(),
            run: None,
            positions: reserved.positions.clone().into_iter(),
            asked,
            index: 0,
            prepared: false,
        }
    }
}

impl<'a> Iterator for SliceRows<'a> {
    type Item = Result<Row<'a>>;

    fn next(&mut self) -> Option<Result<Row<'a>>> {
        while self.run.as_ref().is_none_or(|(events, _)| events.is_empty()) {
            self.run = Some(self.runs.next()?);
        }
        let (events, chain) = self.run.as_mut().expect("a run with events left");
        let (event, rest) = events.split_first().expect("a run with events left");
        *events = rest;
        let position = self.positions.next().expect("a position is reserved for every event");
        let payload = match self.asked.remove(&self.index) {
            Some(text) => text,
            None => match jsonb_text(event.payload.text()) {
                Some(text) => text,
                None => return Some(Err(StoreError::invalid("payload", "is not JSON"))),
            },
        };
        self.index += 1;
        Some(Ok(chain.link(event.event_id, Cow::Borrowed(&event.event_type), event.schema_version, payload, position)))
    }
}

/// The rows of one stream's events as a source produces them, each checked as it comes. A
/// segment ends when the reserved positions run out or an event's jsonb text has to be asked
/// of PostgreSQL.
pub(super) struct StreamedRows<'a, S> {
    events: std::pin::Pin<Box<S>>,
    chain: StreamChain<'a>,
    reserved: VecDeque<i64>,
    /// The checked event that ended the last segment, with its jsonb text once asked.
    pending: Option<(NewEvent, Option<String>)>,
    event_ids: HashSet<Uuid>,
    produced: usize,
    ended: bool,
}

impl<'a, S> StreamedRows<'a, S> {
    pub fn new(
        target: &'a StreamAppend,
        start: StreamStart,
        metadata: &'a str,
        recorded_at_micros: i64,
        events: S,
    ) -> Self {
        StreamedRows {
            events: Box::pin(events),
            chain: StreamChain::new(target, start, metadata, recorded_at_micros),
            reserved: VecDeque::new(),
            pending: None,
            event_ids: HashSet::new(),
            produced: 0,
            ended: false,
        }
    }
}

impl<'a, E, S> StreamedRows<'a, S>
where
    E: From<StoreError> + Send,
    S: Stream<Item = std::result::Result<NewEvent, E>> + Send,
{
    async fn prepare(&mut self, transaction: &mut Transaction<'_, Postgres>) -> std::result::Result<bool, E> {
        if self.ended && self.pending.is_none() {
            return Ok(false);
        }
        if let Some((event, asked @ None)) = &mut self.pending
            && needs_postgres(event.payload.text())
        {
            *asked = asked_of_postgres(transaction, std::iter::once(event.payload.text())).await?.remove(&0);
        }
        if self.reserved.is_empty() {
            self.reserved.extend(reserve(transaction, STREAMED_RESERVE).await?.positions);
        }
        Ok(true)
    }

    async fn next_row(&mut self) -> Option<std::result::Result<Row<'a>, E>> {
        let (event, asked) = match self.pending.take() {
            Some(pending) => pending,
            None => match self.events.next().await {
                None => {
                    self.ended = true;
                    return None;
                }
                Some(event) => {
                    match event.and_then(|event| Ok(checked_event(event, self.produced, &mut self.event_ids)?)) {
                        Ok(event) => (event, None),
                        Err(error) => return Some(Err(error)),
                    }
                }
            },
        };
        if self.reserved.is_empty() || (asked.is_none() && needs_postgres(event.payload.text())) {
            self.pending = Some((event, asked));
            return None;
        }
        let payload = match asked.or_else(|| jsonb_text(event.payload.text())) {
            Some(text) => text,
            None => return Some(Err(StoreError::invalid("payload", "is not JSON").into())),
        };
        let position = self.reserved.pop_front().expect("a reserved position");
        self.produced += 1;
        let NewEvent { event_id, event_type, schema_version, .. } = event;
        Some(Ok(self.chain.link(event_id, Cow::Owned(event_type), schema_version, payload, position)))
    }
}

/// The metadata stored with every event of an append: the request's, with its key.
pub(super) fn metadata_text(metadata: &Metadata, idempotency_key: Option<&str>) -> String {
    let mut metadata = metadata.clone();
    metadata.idempotency_key = idempotency_key.map(str::to_owned);
    serde_json::to_string(&metadata).expect("metadata serializes")
}

/// The jsonb texts (what hashes cover) PostgreSQL has to write: of the texts
/// [`needs_postgres`] picks, by their index in `texts`. The others are written here as their
/// rows are produced.
pub(super) async fn asked_of_postgres<'t>(
    connection: &mut sqlx::PgConnection,
    texts: impl Iterator<Item = &'t str>,
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
pub(super) async fn jsonb_of(connection: &mut sqlx::PgConnection, json: &str) -> Result<String> {
    match asked_of_postgres(connection, std::iter::once(json)).await?.remove(&0) {
        Some(text) => Ok(text),
        None => jsonb_text(json).ok_or_else(|| StoreError::invalid("metadata", "is not JSON")),
    }
}
