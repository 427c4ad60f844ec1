//! Integration tests of the event store, against a real PostgreSQL (one database per test).

mod append;
mod concurrency;
mod eras;
mod group;
mod immutability;
mod properties;
mod read;
mod statement;
mod streamed;
mod vault;
mod verify;

use ledger_store::{AppendRequest, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use serde_json::json;
use uuid::Uuid;

pub fn event(event_type: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent::new(event_type, 1, payload)
}

pub fn stream(
    organization_id: Uuid,
    stream_id: Uuid,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> StreamAppend {
    StreamAppend {
        organization_id,
        stream_type: "test_stream".to_owned(),
        stream_id,
        expected_version: expected,
        events,
    }
}

/// A request appending `count` numbered events to one stream.
pub fn numbered(organization_id: Uuid, stream_id: Uuid, expected: ExpectedVersion, count: usize) -> AppendRequest {
    let events = (0..count).map(|n| event("Numbered", json!({ "n": n }))).collect();
    AppendRequest::single(stream(organization_id, stream_id, expected, events), Metadata::by("tester"))
}

/// How many rows `ledger.events` holds.
pub async fn event_count(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from ledger.events").fetch_one(pool).await.unwrap()
}

/// Reads the log from `after` until `count` events have come. `read_all` stops below the
/// oldest transaction still running anywhere in the cluster (other tests' too), so a read
/// can come back short for a moment; this waits that out, up to a minute.
pub async fn read_all_until(
    store: &ledger_store::EventStore,
    after: ledger_store::Checkpoint,
    count: usize,
) -> Vec<ledger_store::RecordedEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut checkpoint = after;
    let mut events = Vec::new();
    while events.len() < count {
        let batch = store.read_all(checkpoint, ledger_store::READ_BATCH_MAX).await.unwrap();
        match batch.last() {
            Some(last) => checkpoint = last.checkpoint(),
            None => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "only {} of {count} events readable after a minute",
                    events.len()
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        events.extend(batch);
    }
    events
}
