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

/// An event's stored columns, every one its hash covers, as text where the hash takes text
/// (the verifier's and the evidence packs' reading of the log).
pub(crate) struct StoredEvent {
    pub(crate) global_position: i64,
    pub(crate) event_id: Uuid,
    pub(crate) organization_id: Uuid,
    pub(crate) stream_type: String,
    pub(crate) stream_id: Uuid,
    pub(crate) stream_version: u64,
    pub(crate) event_type: String,
    pub(crate) schema_version: i32,
    pub(crate) payload_text: String,
    pub(crate) metadata_text: String,
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) prev_hash: Option<Vec<u8>>,
    pub(crate) hash: Vec<u8>,
}

impl StoredEvent {
    pub(crate) fn from_row(row: &PgRow) -> sqlx::Result<Self> {
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

pub(crate) const VERIFY_COLUMNS: &str = "global_position, event_id, organization_id, stream_type, stream_id, stream_version, event_type, \
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

/// Where the log first differs from a checkpoint's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeDifference {
    /// The leaf (0-based place in log order) where the log and the checkpointed tree part.
    pub leaf_index: u64,
    /// The event now at that place in the log; `None` when the log ends before it (events
    /// were removed).
    pub global_position: Option<i64>,
    /// The event just before it, the last one that is still what the checkpoint covered;
    /// `None` at the first leaf.
    pub last_matching_position: Option<i64>,
    /// Base64 leaf hash the checkpointed log had at that place (`SHA-256(0x00 || event hash)`).
    pub recorded_leaf_hash: String,
}

/// The log against a checkpoint saved earlier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointVerification {
    /// The hash chains, recomputed from every event's fields.
    pub chains: VerifyReport,
    pub checkpoint_size: u64,
    /// Events readable in the log now (the checkpoint covers the first `checkpoint_size`).
    pub log_events: u64,
    /// Whether the root of the log's first `checkpoint_size` events is the checkpoint's.
    pub root_matches: bool,
    /// Whether the stored tree still has the checkpoint's root at its size (then it locates
    /// the first difference leaf by leaf).
    pub stored_tree_matches: bool,
    /// The first place where the log is not what the checkpoint covered; `None` when it is,
    /// or when the stored tree was changed too and cannot tell (`stored_tree_matches`).
    pub first_difference: Option<TreeDifference>,
    /// Other trusted tree heads (the key's earlier and later checkpoints) the log reached.
    pub anchors_checked: usize,
    /// The largest of them whose root the log's prefix still has, below the first that it
    /// has not: the log is intact through this many events.
    pub last_matching_anchor: Option<u64>,
    /// The smallest of them whose root the log's prefix no longer has.
    pub first_broken_anchor: Option<u64>,
}

impl CheckpointVerification {
    /// The log is the checkpointed log, extended, it has every anchor's root, and every
    /// chain is intact.
    pub fn is_intact(&self) -> bool {
        self.root_matches && self.first_broken_anchor.is_none() && self.chains.is_intact()
    }
}

/// Events per query while comparing the log with the stored tree's leaves.
const TREE_COMPARE_BATCH: usize = 10_000;

/// Verifies the log against `checkpoint` (a signed tree head saved earlier): recomputes
/// every chain, and the Merkle root of the log's first `checkpoint.size` events in log order
/// (leaf = each event's stored hash). From one consistent snapshot. Where the root differs,
/// the first differing leaf is found by comparing with the stored tree, once that tree is
/// shown to still have the checkpoint's root.
pub(crate) async fn verify_against(
    pool: &PgPool,
    checkpoint: crate::tree::TreeHead,
    anchors: &[crate::tree::TreeHead],
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<CheckpointVerification> {
    use crate::tree::{Frontier, leaf_hash, root_at, stored_leaves};

    let mut transaction = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *transaction).await?;
    let chains = walk(&mut transaction, VerifyScope::All, progress).await?;
    let stored_tree = crate::tree::head(&mut transaction).await?;
    let stored_tree_matches =
        stored_tree.size >= checkpoint.size && root_at(&mut transaction, checkpoint.size).await? == checkpoint.root;

    let mut anchors: Vec<crate::tree::TreeHead> = anchors.iter().copied().filter(|anchor| anchor.size > 0).collect();
    anchors.sort_by_key(|anchor| anchor.size);
    let mut next_anchor = 0;
    let (mut anchors_checked, mut last_matching_anchor, mut first_broken_anchor) = (0, None, None);
    let mut checkpoint_root = (checkpoint.size == 0).then_some(crate::tree::EMPTY_HASH);
    let mut frontier = Frontier::default();
    let mut first_difference = None;
    let mut after = crate::event::Checkpoint::START;
    let mut log_events = 0u64;
    let mut previous: Option<i64> = None;
    loop {
        let rows: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(
            "select transaction_id::text::int8, global_position, hash from ledger.events \
             where (transaction_id, global_position) > ($1::text::xid8, $2) and transaction_id < ledger.read_horizon() \
             order by events.transaction_id, events.global_position limit $3",
        )
        .bind(after.transaction_id.to_string())
        .bind(after.global_position)
        .bind(TREE_COMPARE_BATCH as i64)
        .fetch_all(&mut *transaction)
        .await?;
        let Some(&(transaction_id, global_position, _)) = rows.last() else { break };
        after = crate::event::Checkpoint { transaction_id: transaction_id as u64, global_position };
        let recorded = if stored_tree_matches && first_difference.is_none() && log_events < checkpoint.size {
            stored_leaves(&mut transaction, log_events, rows.len() as u64).await?
        } else {
            Vec::new()
        };
        for (offset, (_, global_position, hash)) in rows.iter().enumerate() {
            let leaf = leaf_hash(hash);
            frontier.push(leaf);
            if frontier.size() == checkpoint.size {
                checkpoint_root = Some(frontier.root());
            }
            while let Some(anchor) = anchors.get(next_anchor).filter(|anchor| anchor.size == frontier.size()) {
                anchors_checked += 1;
                if frontier.root() == anchor.root {
                    if first_broken_anchor.is_none() {
                        last_matching_anchor = Some(anchor.size);
                    }
                } else {
                    first_broken_anchor.get_or_insert(anchor.size);
                }
                next_anchor += 1;
            }
            if frontier.size() <= checkpoint.size
                && stored_tree_matches
                && first_difference.is_none()
                && let Some(was) = recorded.get(offset).filter(|was| **was != leaf)
            {
                first_difference = Some(TreeDifference {
                    leaf_index: log_events,
                    global_position: Some(*global_position),
                    last_matching_position: previous,
                    recorded_leaf_hash: was.to_string(),
                });
            }
            previous = Some(*global_position);
            log_events += 1;
        }
    }
    let root_matches = checkpoint_root == Some(checkpoint.root);
    if !root_matches && stored_tree_matches && first_difference.is_none() && log_events < checkpoint.size {
        // Every event the log has matches, and it has fewer than the checkpoint: the first
        // missing one is where it differs.
        let was = stored_leaves(&mut transaction, log_events, 1).await?;
        first_difference = Some(TreeDifference {
            leaf_index: log_events,
            global_position: None,
            last_matching_position: previous,
            recorded_leaf_hash: was.first().map(ToString::to_string).unwrap_or_default(),
        });
    }
    transaction.commit().await?;
    Ok(CheckpointVerification {
        chains,
        checkpoint_size: checkpoint.size,
        log_events,
        root_matches,
        stored_tree_matches,
        first_difference,
        anchors_checked,
        last_matching_anchor,
        first_broken_anchor,
    })
}
