//! A lookup waits for the projections it reads to apply what it must see, and no more:
//! the wallets a payment goes to as of their last event, not every event written since
//! (another projector applying a calculation holds the readers of those back).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_app::{CommandMetrics, Error, Ledger};
use ledger_store::checkpoint::reset_checkpoint;
use ledger_store::testkit::TestDatabase;
use ledger_store::{AppendRequest, Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use serde_json::json;
use uuid::Uuid;

/// Appends one event to a new stream of `stream_type` of `organization`: its place in the log.
async fn append(store: &EventStore, organization: Uuid, stream_type: &str) -> Checkpoint {
    let request = AppendRequest {
        streams: vec![StreamAppend {
            organization_id: organization,
            stream_type: stream_type.to_owned(),
            stream_id: Uuid::now_v7(),
            expected_version: ExpectedVersion::NoStream,
            events: vec![NewEvent::new("Tested", 1, json!({ "n": 1 }))],
        }],
        metadata: Metadata::by("tester"),
        idempotency_key: None,
        fingerprint: None,
    };
    let written = store.append(&request).await.unwrap();
    let position = written.last_position();
    let transaction_id: i64 =
        sqlx::query_scalar("select transaction_id::text::int8 from ledger.events where global_position = $1")
            .bind(position)
            .fetch_one(store.pool())
            .await
            .unwrap();
    Checkpoint { transaction_id: transaction_id as u64, global_position: position }
}

#[tokio::test]
async fn a_wallet_lookup_waits_for_the_wallets_last_event_and_not_for_later_ones() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let ledger = Ledger::new(store.clone(), Arc::new(CommandMetrics::unregistered()), Vec::new());
    let (organization, other) = (Uuid::new_v4(), Uuid::new_v4());
    let short = Duration::from_millis(300);
    // No wallet of the organization yet: nothing to wait for, whatever the projection.
    ledger.wait_for_stream_type_of(&["wallet"], organization, "wallet", short).await.unwrap();

    let wallet = append(&store, organization, "wallet").await;
    sqlx::query("insert into ledger.projection_checkpoints (projection_name) values ('wallet')")
        .execute(&db.pool)
        .await
        .unwrap();
    // The projection has not applied the wallet: the lookup waits, then says so.
    let started = Instant::now();
    let waited = ledger.wait_for_stream_type_of(&["wallet"], organization, "wallet", short).await;
    assert!(matches!(waited, Err(Error::Timeout(_))), "{waited:?}");
    assert!(started.elapsed() >= short, "it waited for the projection");

    // Applied through the wallet; then a payroll run of the organization and another
    // organization's wallet are written, which the projection has not read.
    reset_checkpoint(&mut db.connect().await, "wallet", wallet, 1).await.unwrap();
    append(&store, organization, "payroll_run").await;
    append(&store, other, "wallet").await;
    ledger.wait_for_stream_type_of(&["wallet"], organization, "wallet", short).await.unwrap();
    let behind = ledger.wait_for_head_of(&["wallet"], short).await;
    assert!(matches!(behind, Err(Error::Timeout(_))), "the head is not applied: {behind:?}");

    // A second wallet of the organization is waited for again.
    let second = append(&store, organization, "wallet").await;
    let waited = ledger.wait_for_stream_type_of(&["wallet"], organization, "wallet", short).await;
    assert!(matches!(waited, Err(Error::Timeout(_))), "{waited:?}");
    reset_checkpoint(&mut db.connect().await, "wallet", second, 4).await.unwrap();
    ledger.wait_for_stream_type_of(&["wallet"], organization, "wallet", short).await.unwrap();
}
