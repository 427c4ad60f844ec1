use ledger_store::testkit::TestDatabase;
use ledger_store::{
    AppendRequest, Checkpoint, EventStore, ExpectedVersion, Metadata, PayloadSelection, READ_BATCH_MAX, RecordedEvent,
    StoreError,
};
use uuid::Uuid;

use crate::{numbered, read_all_until};

#[tokio::test]
async fn read_all_pages_through_the_log_in_commit_order() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    for _ in 0..5 {
        store.append(&numbered(organization, Uuid::new_v4(), ExpectedVersion::NoStream, 3)).await.unwrap();
    }
    // Readable once no older transaction runs anywhere in the cluster (other tests' too).
    read_all_until(&store, Checkpoint::START, 15).await;
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
/// payload text reaches the byte budget: never empty, skipped types counted as their `null`,
/// large payloads (fetched apart) and small ones alike, and paging on from the last event
/// read misses nothing.
#[tokio::test]
async fn a_payload_selection_bounds_a_batch_by_bytes() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    // Random hex does not compress: stored larger than what a read carries inline.
    let large =
        || serde_json::json!({ "blob": (0..2_000).map(|_| Uuid::new_v4().simple().to_string()).collect::<String>() });
    let events = vec![
        crate::event("Big", serde_json::json!({ "blob": "x".repeat(10_000) })),
        crate::event("Skipped", large()),
        crate::event("Big", large()),
        crate::event("Big", large()),
        crate::event("Big", large()),
    ];
    let request = AppendRequest::single(
        crate::stream(organization, stream_id, ExpectedVersion::NoStream, events),
        Metadata::by("t"),
    );
    store.append(&request).await.unwrap();
    // The gap-free read stops below the oldest transaction running anywhere in the cluster
    // (another test's): wait until all five are readable, so that every read below is whole.
    read_all_until(&store, Checkpoint::START, 5).await;
    let mut connection = db.pool.acquire().await.unwrap();
    let (texts, stored): (Vec<String>, Vec<i32>) = sqlx::query_as::<_, (String, i32)>(
        "select payload::text, pg_column_size(payload) from ledger.events order by global_position",
    )
    .fetch_all(&mut *connection)
    .await
    .unwrap()
    .into_iter()
    .unzip();
    assert!(stored[0] < 16 * 1024 && stored[2] > 16 * 1024, "one small and large ones: {stored:?}");
    let size = |n: usize| texts[n].len();

    // The first two "Big" payloads reach the budget: the third is left for the next batch.
    let budget = size(0) + "null".len() + size(2);
    let first = read_big(&mut connection, Checkpoint::START, budget).await;
    assert_eq!(first.iter().map(|e| e.stream_version).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(first.iter().map(|e| e.payload.text()).collect::<Vec<_>>(), vec![&texts[0], "null", &texts[2]]);
    let rest = read_big(&mut connection, first.last().unwrap().checkpoint(), budget).await;
    assert_eq!(rest.iter().map(|e| e.stream_version).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(rest[1].payload.text(), texts[4]);
    // The skipped event's `null` counts; a budget smaller than one payload still reads it.
    let two = read_big(&mut connection, Checkpoint::START, size(0) + "null".len()).await;
    assert_eq!(two.len(), 2);
    let one = read_big(&mut connection, Checkpoint::START, 1).await;
    assert_eq!(one.iter().map(|e| e.stream_version).collect::<Vec<_>>(), vec![1]);
    // Without a budget to speak of, the limit ends the batch.
    let limited = EventStore::read_all_in_with_payloads(
        &mut connection,
        Checkpoint::START,
        4,
        PayloadSelection { types: &["Big"], bytes_max: usize::MAX, metadata: true, hashes: true },
    )
    .await
    .unwrap();
    assert_eq!(limited.len(), 4);
}

async fn read_big(connection: &mut sqlx::PgConnection, after: Checkpoint, bytes_max: usize) -> Vec<RecordedEvent> {
    let payloads = PayloadSelection { types: &["Big"], bytes_max, metadata: true, hashes: true };
    EventStore::read_all_in_with_payloads(connection, after, 100, payloads).await.unwrap()
}

#[tokio::test]
async fn a_selective_read_leaves_metadata_and_hashes_out_unless_asked() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let mut request = numbered(Uuid::new_v4(), Uuid::new_v4(), ExpectedVersion::NoStream, 3);
    request.metadata.role = Some("processor".to_owned());
    store.append(&request).await.unwrap();
    let whole = read_all_until(&store, Checkpoint::START, 3).await;
    let mut connection = db.pool.acquire().await.unwrap();
    let selection =
        |metadata, hashes| PayloadSelection { types: &["Numbered"], bytes_max: usize::MAX, metadata, hashes };

    let with = EventStore::read_all_in_with_payloads(&mut connection, Checkpoint::START, 10, selection(true, true))
        .await
        .unwrap();
    let without =
        EventStore::read_all_in_with_payloads(&mut connection, Checkpoint::START, 10, selection(false, false))
            .await
            .unwrap();
    let hashes_only =
        EventStore::read_all_in_with_payloads(&mut connection, Checkpoint::START, 10, selection(false, true))
            .await
            .unwrap();
    for (hashed, full) in hashes_only.iter().zip(&whole) {
        assert_eq!(hashed.metadata, serde_json::json!({}));
        assert_eq!((&hashed.prev_hash, &hashed.hash), (&full.prev_hash, &full.hash));
    }
    assert_eq!(hashes_only.len(), 3);

    assert_eq!(with, whole);
    assert_eq!(without.len(), 3);
    for (bare, full) in without.iter().zip(&whole) {
        assert_eq!(bare.metadata, serde_json::json!({}));
        assert_eq!((bare.prev_hash.as_deref(), bare.hash.as_slice()), (None, &[][..]));
        assert_eq!(
            (bare.global_position, bare.event_id, bare.stream_version, bare.payload.text(), bare.recorded_at),
            (full.global_position, full.event_id, full.stream_version, full.payload.text(), full.recorded_at)
        );
    }
    assert_eq!(whole[0].metadata["role"], "processor");
    assert!(whole[1].prev_hash.is_some() && whole[1].hash.len() == 32);
}
