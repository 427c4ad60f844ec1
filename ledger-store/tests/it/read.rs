use ledger_store::testkit::TestDatabase;
use ledger_store::{
    AppendRequest, Checkpoint, EventStore, ExpectedVersion, Metadata, PayloadSelection, READ_BATCH_MAX, RecordedEvent,
    StoreError,
};
use serde_json::json;
use uuid::Uuid;

use crate::{event, numbered, read_all_until, stream};

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

/// The log's time index (BRIN) is summarized by vacuum, which autovacuum runs on the log
/// every 50,000 appended events: an append filling new ranges asks autovacuum for no work
/// item (with autosummarize on, a payroll run overflowed autovacuum's 256 items and logged a
/// line per range), and once vacuumed no range is left to summarize, while a time-range
/// read still finds every event. (Vacuum leaves the range still being filled for later.)
#[tokio::test]
async fn the_time_index_is_summarized_by_vacuum_not_by_a_request_per_range() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let options: Vec<(String, Option<Vec<String>>)> = sqlx::query_as(
        "select relname::text, reloptions from pg_class \
         where relname in ('events', 'events_recorded_at') and relnamespace = 'ledger'::regnamespace order by relname",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        options,
        [
            (
                "events".to_owned(),
                Some(vec![
                    "autovacuum_vacuum_insert_threshold=50000".to_owned(),
                    "autovacuum_vacuum_insert_scale_factor=0".to_owned()
                ])
            ),
            ("events_recorded_at".to_owned(), Some(vec!["autosummarize=off".to_owned()])),
        ]
    );
    // About three ranges of 128 pages: 3 appends of 2,000 events of ~1 KB.
    let started: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select clock_timestamp()").fetch_one(&db.pool).await.unwrap();
    let organization = Uuid::new_v4();
    let padding = "x".repeat(1_000);
    for _ in 0..3 {
        let events = (0..2_000).map(|n| event("Padded", json!({ "n": n, "padding": padding }))).collect();
        let request = AppendRequest::single(
            stream(organization, Uuid::new_v4(), ExpectedVersion::NoStream, events),
            Metadata::by("tester"),
        );
        store.append(&request).await.unwrap();
    }
    let pages: i64 =
        sqlx::query_scalar("select pg_relation_size('ledger.events') / 8192").fetch_one(&db.pool).await.unwrap();
    assert!(pages > 2 * 128, "the appends filled {pages} pages, fewer than two ranges");
    sqlx::query("vacuum ledger.events").execute(&db.pool).await.unwrap();
    let left: i32 = sqlx::query_scalar("select brin_summarize_new_values('ledger.events_recorded_at')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // Vacuum leaves the range still being filled (the log's last, partial one) for later.
    let partial = i32::from(pages % 128 != 0);
    assert_eq!(left, partial, "ranges vacuum left unsummarized of {pages} pages");
    let mut connection = db.connect().await;
    sqlx::query("set enable_seqscan = off").execute(&mut connection).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar("explain select count(*) from ledger.events where recorded_at >= $1")
        .bind(started)
        .fetch_all(&mut connection)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("Bitmap Index Scan on events_recorded_at"), "{plan}");
    let found: i64 = sqlx::query_scalar("select count(*) from ledger.events where recorded_at >= $1")
        .bind(started)
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(found, 6_000, "a time-range read finds every event ({plan})");
}

/// Many streams in one read: each stream's events together in version order, the streams in
/// the order of their ids, a stream named twice read once, an unknown one read as nothing.
#[tokio::test]
async fn many_streams_are_read_in_the_order_named_each_in_version_order() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    // Interleaved appends, so that log order is not stream order.
    for round in 0..3_u64 {
        for (n, stream_id) in streams.iter().enumerate() {
            if round <= n as u64 {
                let expected = if round == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(round) };
                store.append(&numbered(organization, *stream_id, expected, 1)).await.unwrap();
            }
        }
    }
    let unknown = Uuid::new_v4();
    let asked = [streams[3], streams[0], unknown, streams[2], streams[3], streams[1]];
    let read: Vec<(Uuid, u64)> =
        store.read_streams(&asked).await.unwrap().iter().map(|e| (e.stream_id, e.stream_version)).collect();
    let mut versions = [(streams[0], 1), (streams[1], 2), (streams[2], 3), (streams[3], 3)];
    versions.sort();
    let expected: Vec<(Uuid, u64)> = versions
        .iter()
        .flat_map(|(stream_id, versions)| (1..=*versions).map(move |version| (*stream_id, version)))
        .collect();
    assert_eq!(read, expected);
    assert!(store.read_streams(&[]).await.unwrap().is_empty());
}
