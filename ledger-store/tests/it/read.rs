use ledger_store::testkit::TestDatabase;
use ledger_store::{
    AppendRequest, Checkpoint, EventStore, ExpectedVersion, Metadata, PayloadSelection, READ_BATCH_MAX, RecordedEvent,
    StoreError,
};
use uuid::Uuid;

use crate::numbered;

#[tokio::test]
async fn read_all_pages_through_the_log_in_commit_order() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    for _ in 0..5 {
        store.append(&numbered(organization, Uuid::new_v4(), ExpectedVersion::NoStream, 3)).await.unwrap();
    }
    let mut checkpoint = Checkpoint::START;
    let mut positions = Vec::new();
    loop {
        let page = store.read_all(checkpoint, 4).await.unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        checkpoint = last.checkpoint();
        positions.extend(page.iter().map(|e| e.global_position));
    }
    assert_eq!(positions.len(), 15);
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));
    let (head_position, _) = store.head().await.unwrap().unwrap();
    assert_eq!(head_position, *positions.last().unwrap());
}

#[tokio::test]
async fn read_all_rejects_a_limit_out_of_bounds() {
    let db = TestDatabase::new().await;
    for limit in [0, READ_BATCH_MAX + 1] {
        let error = db.store().read_all(Checkpoint::START, limit).await.unwrap_err();
        assert!(matches!(&error, StoreError::Invalid { field, .. } if field == "limit"), "{error}");
    }
    assert_eq!(db.store().head().await.unwrap(), None);
}

/// A reader that selects payloads gets them only for its types, and its batch ends once the
/// payloads reach the byte budget: never empty, skipped types not counted, and paging on
/// from the last event read misses nothing.
#[tokio::test]
async fn a_payload_selection_bounds_a_batch_by_stored_bytes() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let noise = |n: usize| (0..n).map(|_| Uuid::new_v4().simple().to_string()).collect::<String>();
    let events = vec![
        crate::event("Big", serde_json::json!({ "blob": noise(300) })),
        crate::event("Skipped", serde_json::json!({ "blob": noise(3000) })),
        crate::event("Big", serde_json::json!({ "blob": noise(300) })),
        crate::event("Big", serde_json::json!({ "blob": noise(300) })),
        crate::event("Big", serde_json::json!({ "blob": noise(300) })),
    ];
    store
        .append(&AppendRequest::single(
            crate::stream(organization, stream_id, ExpectedVersion::NoStream, events),
            Metadata::by("t"),
        ))
        .await
        .unwrap();
    let mut connection = db.pool.acquire().await.unwrap();
    let sizes: Vec<i32> =
        sqlx::query_scalar("select pg_column_size(payload) from ledger.events order by global_position")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    // A batch ends once its payloads reach the budget: the first two "Big" ones reach it (the
    // skipped one between costs nothing), the third is left for the next batch.
    let budget = (sizes[0] + sizes[2]) as usize;
    let first = read_big(&mut connection, Checkpoint::START, budget).await;
    assert_eq!(first.iter().map(|e| e.stream_version).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(first[1].payload.text(), "null");
    assert!(first[0].payload.text().len() > 9_000);
    assert!(sizes[4] < budget as i32, "the third would fit alone");
    let rest = read_big(&mut connection, first.last().unwrap().checkpoint(), budget).await;
    assert_eq!(rest.iter().map(|e| e.stream_version).collect::<Vec<_>>(), vec![4, 5]);
    // A budget smaller than one payload still reads that one.
    let one = read_big(&mut connection, Checkpoint::START, 1).await;
    assert_eq!(one.iter().map(|e| e.stream_version).collect::<Vec<_>>(), vec![1]);
}

async fn read_big(connection: &mut sqlx::PgConnection, after: Checkpoint, bytes_max: usize) -> Vec<RecordedEvent> {
    let payloads = PayloadSelection { types: &["Big"], bytes_max };
    EventStore::read_all_in_with_payloads(connection, after, 100, payloads).await.unwrap()
}
