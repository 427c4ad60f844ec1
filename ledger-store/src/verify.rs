//! The independent verifier: recomputes every stream's hash chain in Rust from the stored
//! columns, without trusting the trigger that wrote them.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::PgRow;
use sqlx::{Row, postgres::PgConnection};
use uuid::Uuid;

use crate::chain::Canonical;
use crate::error::Result;

/// The most chain breaks one report lists; the first of each stream is listed.
pub const BREAKS_LISTED_MAX: usize = 1_000;
/// How often (in events) the progress callback is called.
pub const PROGRESS_EVENTS_INTERVAL: u64 = 10_000;

/// What is wrong with an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BreakKind {
    /// The stored hash is not the hash of the stored fields: the event was changed.
    HashMismatch,
    /// The stored previous hash is not the hash of the stream's previous event.
    PrevHashMismatch,
    /// A version is missing before this event: an event was removed.
    MissingVersion { expected_version: u64 },
}

/// The first bad event of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub stream_id: Uuid,
    pub stream_version: u64,
    pub global_position: i64,
    #[serde(flatten)]
    pub kind: BreakKind,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub streams_checked: u64,
    pub events_checked: u64,
    /// The first break of each broken stream, by global position; at most
    /// [`BREAKS_LISTED_MAX`].
    pub breaks: Vec<ChainBreak>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty()
    }

    /// The break with the lowest global position.
    pub fn first_break(&self) -> Option<&ChainBreak> {
        self.breaks.first()
    }
}

struct StoredEvent {
    global_position: i64,
    event_id: Uuid,
    organization_id: Uuid,
    stream_type: String,
    stream_id: Uuid,
    stream_version: u64,
    event_type: String,
    schema_version: i32,
    payload_text: String,
    metadata_text: String,
    recorded_at: DateTime<Utc>,
    prev_hash: Option<Vec<u8>>,
    hash: Vec<u8>,
}

impl StoredEvent {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(StoredEvent {
            global_position: row.try_get("global_position")?,
            event_id: row.try_get("event_id")?,
            organization_id: row.try_get("organization_id")?,
            stream_type: row.try_get("stream_type")?,
            stream_id: row.try_get("stream_id")?,
            stream_version: row.try_get::<i64, _>("stream_version")? as u64,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            payload_text: row.try_get("payload_text")?,
            metadata_text: row.try_get("metadata_text")?,
            recorded_at: row.try_get("recorded_at")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }

    fn expected_hash(&self, previous_hash: Option<&[u8]>) -> [u8; 32] {
        Canonical {
            global_position: self.global_position,
            event_id: self.event_id,
            organization_id: self.organization_id,
            stream_type: &self.stream_type,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            payload: &self.payload_text,
            metadata: &self.metadata_text,
            recorded_at_micros: self.recorded_at.timestamp_micros(),
        }
        .hash(previous_hash)
    }
}

/// Walks one stream's events in version order.
#[derive(Default)]
struct ChainWalker {
    stream_id: Option<Uuid>,
    last_version: u64,
    last_hash: Option<Vec<u8>>,
    broken: bool,
}

impl ChainWalker {
    fn check(&mut self, event: StoredEvent, report: &mut VerifyReport) {
        if self.stream_id != Some(event.stream_id) {
            *self = ChainWalker { stream_id: Some(event.stream_id), ..ChainWalker::default() };
            report.streams_checked += 1;
        }
        report.events_checked += 1;
        let kind = if event.stream_version != self.last_version + 1 {
            Some(BreakKind::MissingVersion { expected_version: self.last_version + 1 })
        } else if event.prev_hash != self.last_hash {
            Some(BreakKind::PrevHashMismatch)
        } else if event.hash[..] != event.expected_hash(self.last_hash.as_deref())[..] {
            Some(BreakKind::HashMismatch)
        } else {
            None
        };
        if let Some(kind) = kind {
            if !self.broken && report.breaks.len() < BREAKS_LISTED_MAX {
                report.breaks.push(ChainBreak {
                    stream_id: event.stream_id,
                    stream_version: event.stream_version,
                    global_position: event.global_position,
                    kind,
                });
            }
            self.broken = true;
        }
        self.last_version = event.stream_version;
        self.last_hash = Some(event.hash);
    }
}

const VERIFY_COLUMNS: &str = "global_position, event_id, organization_id, stream_type, stream_id, stream_version, event_type, \
     schema_version, payload::text as payload_text, metadata::text as metadata_text, recorded_at, prev_hash, hash";

/// Which streams to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyScope {
    All,
    Organization(Uuid),
    Stream(Uuid),
}

/// Verifies the streams of `scope` from one consistent snapshot. `progress` is called with
/// the events checked so far.
pub(crate) async fn verify(
    pool: &PgPool,
    scope: VerifyScope,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<VerifyReport> {
    let mut transaction = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *transaction).await?;
    let report = walk(&mut transaction, scope, progress).await?;
    transaction.commit().await?;
    Ok(report)
}

async fn walk(
    connection: &mut PgConnection,
    scope: VerifyScope,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<VerifyReport> {
    // The filter is chosen here, not by a `$1 is null or ...` predicate, so that each scope
    // gets the plan that fits it (an index range for one stream).
    let (filter, id) = match scope {
        VerifyScope::All => ("$1::uuid is null", None),
        VerifyScope::Organization(id) => ("organization_id = $1", Some(id)),
        VerifyScope::Stream(id) => ("stream_id = $1", Some(id)),
    };
    let sql = format!("select {VERIFY_COLUMNS} from ledger.events where {filter} order by stream_id, stream_version");
    let mut rows = sqlx::query(&sql).bind(id).fetch(connection);
    let mut report = VerifyReport::default();
    let mut walker = ChainWalker::default();
    while let Some(row) = rows.try_next().await? {
        walker.check(StoredEvent::from_row(&row)?, &mut report);
        if report.events_checked % PROGRESS_EVENTS_INTERVAL == 0 {
            progress(report.events_checked);
        }
    }
    report.breaks.sort_by_key(|chain_break| chain_break.global_position);
    progress(report.events_checked);
    Ok(report)
}
