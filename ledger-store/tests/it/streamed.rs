//! Appends whose events are produced while they are written (a payroll run's calculation).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::{self, BoxStream};
use ledger_store::testkit::TestDatabase;
use ledger_store::{
    APPEND_EVENTS_MAX, AppendRequest, ExpectedVersion, Metadata, NewEvent, StoreError, StreamedAppend, VerifyScope,
};
use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::{event, event_count, numbered, stream};

fn target(organization_id: Uuid, stream_id: Uuid, expected_version: ExpectedVersion) -> StreamedAppend {
    StreamedAppend {
        organization_id,
        stream_type: "test_stream".to_owned(),
        stream_id,
        expected_version,
        metadata: Metadata::by("tester"),
        idempotency_key: None,
        fingerprint: None,
    }
}

/// `count` events of ~`bytes` of payload each, produced one at a time.
fn source(count: usize, bytes: usize, writer: usize) -> BoxStream<'static, Result<NewEvent, StoreError>> {
    let blob = "z\t\\\n".repeat(bytes / 4);
    stream::iter(0..count).map(move |n| Ok(event("Chunk", json!({ "writer": writer, "n": n, "blob": blob })))).boxed()
}

#[tokio::test]
async fn a_streamed_append_writes_every_event_in_order_with_its_chain() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    store.append(&numbered(organization, stream_id, ExpectedVersion::NoStream, 2)).await.unwrap();

    // 12 MB in all: more than one COPY buffer, never all in memory.
    let result = store
        .append_streamed(&target(organization, stream_id, ExpectedVersion::Exact(2)), source(24, 512 * 1024, 0))
        .await
        .unwrap();

    assert_eq!(result.positions.len(), 24);
    assert_eq!(result.streams[0].version, 26);
    assert!(!result.replayed);
    let stored = store.read_stream(stream_id, 3).await.unwrap();
    assert_eq!(stored.iter().map(|event| event.stream_version).collect::<Vec<_>>(), (3..=26).collect::<Vec<_>>());
    assert_eq!(stored.iter().map(|event| event.global_position).collect::<Vec<_>>(), result.positions);
    let expected = source(24, 512 * 1024, 0).map(|event| event.unwrap().payload.to_value()).collect::<Vec<_>>().await;
    assert_eq!(stored.iter().map(|event| event.payload.to_value()).collect::<Vec<_>>(), expected);
    assert!(store.verify(VerifyScope::Stream(stream_id), &mut |_| {}).await.unwrap().is_intact());
    // Read one at a time, and picked by version.
    let mut versions = Vec::new();
    let seen = store
        .each_in_stream(stream_id, 20, |event| {
            versions.push(event.stream_version);
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    assert_eq!((seen, versions), (7, (20..=26).collect::<Vec<_>>()));
    let picked = store.read_stream_versions(stream_id, &[26, 3, 99]).await.unwrap();
    assert_eq!(picked.iter().map(|event| event.stream_version).collect::<Vec<_>>(), vec![3, 26]);
}

/// More events than one reservation of positions, and events whose jsonb text PostgreSQL
/// writes (fractions, exponents) in the middle: each ends a COPY and begins another, and the
/// stream is whole, in order and chained.
#[tokio::test]
async fn a_streamed_append_spans_several_copies_in_one_transaction() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let count = 150;
    let events = stream::iter(0..count)
        .map(|n| {
            let payload = if n % 50 == 7 { json!({ "n": n, "rate": 1.25, "big": 1e21 }) } else { json!({ "n": n }) };
            Ok::<_, StoreError>(event("Chunk", payload))
        })
        .boxed();
    let result =
        store.append_streamed(&target(organization, stream_id, ExpectedVersion::NoStream), events).await.unwrap();

    assert_eq!((result.positions.len(), result.streams[0].version), (count, count as u64));
    assert!(result.positions.windows(2).all(|pair| pair[0] < pair[1]), "{:?}", result.positions);
    let stored = store.read_stream(stream_id, 1).await.unwrap();
    assert_eq!(stored.iter().map(|event| event.global_position).collect::<Vec<_>>(), result.positions);
    assert_eq!(stored[7].payload.to_value()["rate"], json!(1.25));
    let transactions: std::collections::HashSet<u64> = stored.iter().map(|event| event.transaction_id).collect();
    assert_eq!(transactions.len(), 1, "one transaction");
    let report = store.verify(VerifyScope::Stream(stream_id), &mut |_| {}).await.unwrap();
    assert_eq!((report.events_checked, report.is_intact()), (count as u64, true), "{report:?}");
}

#[tokio::test]
async fn a_source_that_fails_midway_writes_nothing_and_the_append_can_be_made_again() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let failing = source(30, 100_000, 0)
        .take(20)
        .chain(stream::once(async {
            Err(StoreError::Invalid { field: "employees".into(), problem: "the source gave up".into() })
        }))
        .boxed();

    let error =
        store.append_streamed(&target(organization, stream_id, ExpectedVersion::NoStream), failing).await.unwrap_err();

    assert!(error.to_string().contains("the source gave up"), "{error}");
    assert_eq!(event_count(&db.pool).await, 0);
    let again = store
        .append_streamed(&target(organization, stream_id, ExpectedVersion::NoStream), source(30, 100_000, 0))
        .await
        .unwrap();
    assert_eq!(again.streams[0].version, 30);
}

#[tokio::test]
async fn an_append_stopped_in_the_middle_writes_nothing_and_resumes_whole() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    // The producer stops (a crash, a cancelled request) after 15 events, 3 MB copied.
    let stalled = source(15, 200_000, 0).chain(stream::pending()).boxed();
    let stopped = tokio::time::timeout(
        Duration::from_millis(500),
        store.append_streamed(&target(organization, stream_id, ExpectedVersion::NoStream), stalled),
    )
    .await;
    assert!(stopped.is_err(), "the append was still waiting for its source");

    // Every pooled connection still answers its own queries: none is handed on out of step
    // with the server after the append was dropped midway (the append closes its connection
    // then; this stall alone did not desynchronize one even without that).
    tokio::time::sleep(Duration::from_millis(100)).await;
    for round in 0..3_i64 {
        let answers =
            futures_util::future::join_all(
                (0..8_i64).map(|n| {
                    let pool = db.pool.clone();
                    async move {
                        sqlx::query_scalar::<_, i64>("select $1::int8").bind(round * 100 + n).fetch_one(&pool).await
                    }
                }),
            )
            .await;
        for (n, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), round * 100 + n as i64);
        }
    }
    assert_eq!(event_count(&db.pool).await, 0);
    let resumed = store
        .append_streamed(&target(organization, stream_id, ExpectedVersion::NoStream), source(15, 200_000, 1))
        .await
        .unwrap();
    assert_eq!(resumed.positions.len(), 15);
    assert_eq!(event_count(&db.pool).await, 15);
}

#[tokio::test]
async fn bad_events_from_the_source_are_named_and_nothing_is_written() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let at = |expected| target(organization, stream_id, expected);
    let not_an_object = stream::iter([Ok(event("Good", json!({}))), Ok(NewEvent::new("Bad", 1, json!([1, 2])))]);
    let repeated_id = {
        let first = event("Good", json!({}));
        stream::iter([Ok(first.clone()), Ok(first)])
    };

    let errors = [
        store.append_streamed(&at(ExpectedVersion::NoStream), not_an_object).await.unwrap_err(),
        store.append_streamed(&at(ExpectedVersion::NoStream), repeated_id).await.unwrap_err(),
        store.append_streamed(&at(ExpectedVersion::NoStream), stream::empty()).await.unwrap_err(),
        store
            .append_streamed(
                &StreamedAppend { idempotency_key: Some("k".into()), ..at(ExpectedVersion::NoStream) },
                source(1, 10, 0),
            )
            .await
            .unwrap_err(),
        store
            .append_streamed(
                &StreamedAppend { metadata: Metadata::by(" "), ..at(ExpectedVersion::NoStream) },
                source(1, 10, 0),
            )
            .await
            .unwrap_err(),
    ];

    let fields: Vec<String> = errors
        .iter()
        .map(|error| match error {
            StoreError::Invalid { field, .. } => field.clone(),
            other => panic!("not an invalid-input error: {other:?}"),
        })
        .collect();
    assert_eq!(
        fields,
        [
            "streams[0].events[1].payload",
            "streams[0].events[1].event_id",
            "streams[0].events",
            "fingerprint",
            "metadata.actor"
        ]
    );
    assert_eq!(event_count(&db.pool).await, 0);
    // The limit of one append holds for a source too (checked without producing the rest).
    let endless = stream::repeat_with(|| Ok::<_, StoreError>(event("Tiny", json!({}))));
    let too_many = store.append_streamed(&at(ExpectedVersion::NoStream), endless).await.unwrap_err();
    assert!(too_many.to_string().contains(&APPEND_EVENTS_MAX.to_string()), "{too_many}");
    assert_eq!(event_count(&db.pool).await, 0);
}

#[tokio::test]
async fn two_streamed_writers_at_one_version_one_wins_whole_and_the_other_is_refused_before_producing() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let barrier = Arc::new(Barrier::new(2));
    let produced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers = (0..2).map(|writer| {
        let (store, barrier, produced) = (store.clone(), barrier.clone(), produced.clone());
        tokio::spawn(async move {
            // Slow producers: the two appends overlap.
            let events = source(20, 50_000, writer).then(move |event| {
                let produced = produced.clone();
                async move {
                    produced.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    event
                }
            });
            barrier.wait().await;
            store.append_streamed(&target(organization, stream_id, ExpectedVersion::NoStream), events).await
        })
    });
    let results: Vec<_> = futures_util::future::join_all(writers).await.into_iter().map(Result::unwrap).collect();

    let won: Vec<usize> = (0..2).filter(|&writer| results[writer].is_ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let lost = &results[1 - won[0]];
    // The loser does not wait for a stream a streamed append holds (that may take minutes,
    // and the stream will have changed): busy at once, or a conflict if it came after.
    assert!(
        matches!(
            lost,
            Err(StoreError::Busy(_)
                | StoreError::Conflict { expected: ExpectedVersion::NoStream, actual: Some(20), .. })
        ),
        "{lost:?}"
    );
    // Either way, before its first event.
    assert_eq!(produced.load(std::sync::atomic::Ordering::SeqCst), 20);
    let stored = store.read_stream(stream_id, 1).await.unwrap();
    assert_eq!(stored.len(), 20);
    assert!(stored.iter().all(|event| event.payload.to_value()["writer"] == won[0]));
    // A plain append racing a streamed one on the same stream is refused the same way.
    let late = AppendRequest::single(
        stream(organization, stream_id, ExpectedVersion::Exact(19), vec![event("Late", json!({}))]),
        Metadata::by("t"),
    );
    assert!(matches!(store.append(&late).await, Err(StoreError::Conflict { actual: Some(20), .. })));
}

#[tokio::test]
async fn the_same_key_and_fingerprint_returns_the_first_result_and_produces_nothing_again() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let keyed = |fingerprint: &[u8]| StreamedAppend {
        idempotency_key: Some("calculate-january".into()),
        fingerprint: Some(fingerprint.to_vec()),
        ..target(organization, stream_id, ExpectedVersion::NoStream)
    };
    let first = store.append_streamed(&keyed(b"request-1"), source(5, 2_000_000, 0)).await.unwrap();

    // The retry's source would fail if it were asked for an event.
    let untouched = stream::once(async {
        Err::<NewEvent, _>(StoreError::Invalid { field: "source".into(), problem: "asked again".into() })
    });
    let retry = store.append_streamed(&keyed(b"request-1"), untouched).await.unwrap();
    let other = store.append_streamed(&keyed(b"request-2"), source(5, 10, 0)).await.unwrap_err();

    assert!(retry.replayed);
    assert_eq!((retry.positions, retry.streams), (first.positions, first.streams));
    assert!(matches!(other, StoreError::IdempotencyMismatch { .. }), "{other:?}");
    assert_eq!(event_count(&db.pool).await, 5);
    let stored = store.read_stream(stream_id, 1).await.unwrap();
    assert!(stored.iter().all(|event| event.metadata["idempotency_key"] == "calculate-january"));
}

/// A streamed source whose events now and then carry numbers only PostgreSQL formats: each
/// ends a COPY to have its text asked, and positions run out every few dozen events; the
/// stream comes out whole, in order, with its chain, and the positions returned are its own.
#[tokio::test]
async fn a_streamed_append_with_numbers_postgres_formats_spans_copies_and_keeps_its_chain() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let count = 150;
    let events = stream::iter(0..count).map(|n| {
        let payload = if n % 10 == 3 { json!({ "n": n, "rate": 1.50, "scale": 1e2 }) } else { json!({ "n": n }) };
        Ok::<_, StoreError>(event("Numbers", payload))
    });
    let result =
        store.append_streamed(&target(organization, stream_id, ExpectedVersion::NoStream), events).await.unwrap();
    assert_eq!(result.streams[0].version, count as u64);
    let stored = store.read_stream(stream_id, 1).await.unwrap();
    assert_eq!(stored.iter().map(|event| event.global_position).collect::<Vec<_>>(), result.positions);
    let numbers: Vec<i64> = stored.iter().map(|event| event.payload.to_value()["n"].as_i64().unwrap()).collect();
    assert_eq!(numbers, (0..count).collect::<Vec<_>>());
    assert!(stored[3].payload.text().contains(r#""scale": 100"#), "{}", stored[3].payload.text());
    let report = store.verify_stream(stream_id).await.unwrap();
    assert_eq!((report.events_checked, report.is_intact()), (count as u64, true), "{report:?}");
}
