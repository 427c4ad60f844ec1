//! Evidence packs: a set of streams' events, each with its inclusion proof against a signed
//! checkpoint, in one JSON document that an auditor verifies without our database.
//!
//! [`verify_pack`] needs nothing but the pack (and, to trust it, the log's verifier key from
//! elsewhere): it recomputes every event's hash from its fields (the canonical form of
//! `chain.rs`, over the payload's and metadata's stored text, which the pack carries as
//! text), checks each stream's versions run 1, 2, 3, ... with every link, checks every
//! inclusion proof against the checkpoint's root, and the checkpoint's signature.
//!
//! What a pack proves: every event in it is in the log the checkpoint signs, unchanged, at
//! its place, and each stream's events in it are versions 1 to n without a gap. What it
//! cannot prove on its own: that a stream has no version after n at the checkpoint (the tree
//! commits to the log's order, not to each stream's length); the pack states its event count
//! per stream, which catches a pack cut short unless the count was edited too.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::chain::Canonical;
use crate::error::{Result, StoreError};
use crate::signing::{self, SignedCheckpoint};
use crate::tree::{self, Hash};
use crate::verify::{StoredEvent, VERIFY_COLUMNS};

/// The format this module writes and reads.
pub const EVIDENCE_FORMAT: &str = "payroll-ledger-evidence/1";

/// One event as the pack carries it: every field its hash covers, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceEvent {
    /// Its place in the log's tree (0-based).
    pub leaf_index: u64,
    pub global_position: i64,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub stream_type: String,
    pub stream_id: Uuid,
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: i32,
    /// The payload's stored (jsonb) text, exactly as hashed.
    pub payload: String,
    /// The metadata's stored (jsonb) text, exactly as hashed.
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
    /// Hex; null for a stream's first event.
    pub prev_hash: Option<String>,
    /// Hex SHA-256 of the previous hash and the canonical form.
    pub hash: String,
    /// RFC 9162 audit path of the leaf in the checkpoint's tree, base64 hashes.
    pub inclusion_proof: Vec<String>,
}

/// The pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidencePack {
    pub format: String,
    /// What the pack is evidence of (e.g. a payroll run).
    pub subject: String,
    /// The signed checkpoint (a C2SP signed note) every proof is against.
    pub checkpoint: String,
    /// The log's verifier key as the ledger served it. Verify with a key you got elsewhere.
    pub verifier_key: String,
    /// Events per stream in the pack (versions 1 to this).
    pub stream_events: BTreeMap<Uuid, u64>,
    /// Events of these streams recorded after the checkpoint, left out.
    pub events_after_checkpoint: u64,
    pub events: Vec<EvidenceEvent>,
}

/// Events whose proofs are read in one query.
const PROOFS_PER_QUERY: usize = 1_000;

/// The pack of `stream_ids`' events against `checkpoint` (which must be a checkpoint of the
/// stored tree: every leaf below its size is there). Events after it are left out and
/// counted.
pub async fn build(
    pool: &PgPool,
    subject: String,
    stream_ids: &[Uuid],
    checkpoint: &SignedCheckpoint,
) -> Result<EvidencePack> {
    let mut transaction = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *transaction).await?;
    let sql = format!(
        "select {VERIFY_COLUMNS} from ledger.events where stream_id = any($1) order by stream_id, stream_version"
    );
    let rows = sqlx::query(&sql).bind(stream_ids).fetch_all(&mut *transaction).await?;
    let events = rows.iter().map(StoredEvent::from_row).collect::<sqlx::Result<Vec<_>>>()?;
    let mut pack = EvidencePack {
        format: EVIDENCE_FORMAT.to_owned(),
        subject,
        checkpoint: checkpoint.note.clone(),
        verifier_key: checkpoint.verifier_key.clone(),
        stream_events: BTreeMap::new(),
        events_after_checkpoint: 0,
        events: Vec::with_capacity(events.len()),
    };
    let positions: Vec<i64> = events.iter().map(|event| event.global_position).collect();
    let leaves = tree::leaf_indexes(&mut transaction, &positions).await?;
    for event in events {
        let leaf = leaves.get(&event.global_position).copied();
        let Some(leaf_index) = leaf.filter(|leaf| *leaf < checkpoint.tree_size) else {
            pack.events_after_checkpoint += 1;
            continue;
        };
        *pack.stream_events.entry(event.stream_id).or_default() += 1;
        pack.events.push(EvidenceEvent {
            leaf_index,
            global_position: event.global_position,
            event_id: event.event_id,
            organization_id: event.organization_id,
            stream_type: event.stream_type,
            stream_id: event.stream_id,
            stream_version: event.stream_version,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload_text,
            metadata: event.metadata_text,
            recorded_at: event.recorded_at,
            prev_hash: event.prev_hash.map(hex::encode),
            hash: hex::encode(event.hash),
            inclusion_proof: Vec::new(),
        });
    }
    // The proofs a chunk of events at a time, each chunk's hashes in one query.
    for chunk in pack.events.chunks_mut(PROOFS_PER_QUERY) {
        let leaves: Vec<u64> = chunk.iter().map(|event| event.leaf_index).collect();
        let proofs = tree::inclusion_proofs(&mut transaction, checkpoint.tree_size, &leaves).await?;
        for (event, proof) in chunk.iter_mut().zip(proofs) {
            event.inclusion_proof = proof.iter().map(ToString::to_string).collect();
        }
    }
    transaction.commit().await?;
    Ok(pack)
}

/// What checking a pack found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceReport {
    pub tree_size: u64,
    pub events_checked: usize,
    /// Whether the key checked against was given by the verifier (not read from the pack).
    pub key_from_verifier: bool,
    /// Each thing that does not hold, naming the event; empty when the pack verifies.
    pub failures: Vec<String>,
}

impl EvidenceReport {
    pub fn verified(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Checks a pack offline. `verifier_key` is the log's key as the auditor knows it; `None`
/// uses the pack's own (which proves only that the pack is consistent with itself).
pub fn verify_pack(pack: &EvidencePack, verifier_key: Option<&str>) -> EvidenceReport {
    let mut failures = Vec::new();
    if pack.format != EVIDENCE_FORMAT {
        failures.push(format!("the format is {:?}, not {EVIDENCE_FORMAT:?}", pack.format));
    }
    let key = verifier_key.unwrap_or(&pack.verifier_key);
    let head = match signing::open(&pack.checkpoint, key) {
        Ok(opened) => Some(opened.head),
        Err(error) => {
            failures.push(format!("the checkpoint does not verify: {error}"));
            None
        }
    };
    let mut last: BTreeMap<Uuid, (u64, String)> = BTreeMap::new();
    for event in &pack.events {
        let name = format!(
            "event at position {} ({} v{} of stream {})",
            event.global_position, event.event_type, event.stream_version, event.stream_id
        );
        let computed = hex::encode(
            Canonical {
                global_position: event.global_position,
                event_id: event.event_id,
                organization_id: event.organization_id,
                stream_type: &event.stream_type,
                stream_id: event.stream_id,
                stream_version: event.stream_version,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                payload: &event.payload,
                metadata: &event.metadata,
                recorded_at_micros: event.recorded_at.timestamp_micros(),
            }
            .hash(hex::decode(event.prev_hash.as_deref().unwrap_or_default()).ok().as_deref()),
        );
        if computed != event.hash {
            failures.push(format!("{name}: its hash is not the hash of its fields (a field was changed)"));
        }
        let (expected_version, expected_prev) = match last.get(&event.stream_id) {
            Some((version, hash)) => (version + 1, Some(hash.clone())),
            None => (1, None),
        };
        if event.stream_version != expected_version {
            failures.push(format!("{name}: version {expected_version} of the stream is missing before it"));
        } else if event.prev_hash != expected_prev {
            failures.push(format!("{name}: its previous hash is not the hash of the stream's previous event"));
        }
        last.insert(event.stream_id, (event.stream_version, event.hash.clone()));
        let Some(head) = head else { continue };
        let leaf = hex::decode(&event.hash).ok().filter(|bytes| bytes.len() == 32);
        let proof: Option<Vec<Hash>> = event.inclusion_proof.iter().map(|hash| tree::parse_hash(hash)).collect();
        match (leaf, proof) {
            (Some(leaf), Some(proof)) if event.leaf_index < head.size => {
                if tree::check_record(&proof, head.size, head.root, event.leaf_index, tree::leaf_hash(&leaf)).is_err() {
                    failures.push(format!(
                        "{name}: its inclusion proof does not lead to the checkpoint's root (it is not leaf {} of the signed log)",
                        event.leaf_index
                    ));
                }
            }
            (Some(_), Some(_)) => failures
                .push(format!("{name}: leaf {} lies outside the checkpoint's tree of {}", event.leaf_index, head.size)),
            _ => failures.push(format!("{name}: its hash or proof is not well formed")),
        }
    }
    for (stream, (version, _)) in &last {
        let stated = pack.stream_events.get(stream).copied().unwrap_or_default();
        if stated != *version {
            failures
                .push(format!("stream {stream}: the pack states {stated} events, it holds versions 1 to {version}"));
        }
    }
    for (stream, stated) in &pack.stream_events {
        if !last.contains_key(stream) && *stated > 0 {
            failures.push(format!("stream {stream}: the pack states {stated} events and holds none"));
        }
    }
    EvidenceReport {
        tree_size: head.map_or(0, |head| head.size),
        events_checked: pack.events.len(),
        key_from_verifier: verifier_key.is_some(),
        failures,
    }
}

/// Reads a pack from its JSON text, saying what is wrong with it.
pub fn parse_pack(text: &str) -> Result<EvidencePack> {
    serde_json::from_str(text).map_err(|error| StoreError::invalid("evidence", error.to_string()))
}
