//! Random sequences of appends across streams, checked against a model of the versions.

use std::collections::{HashMap, HashSet};

use ledger_store::testkit::TestDatabase;
use ledger_store::{Checkpoint, EventStore, ExpectedVersion, StoreError};
use proptest::prelude::*;
use uuid::Uuid;

use crate::{numbered, read_all_until};

#[derive(Debug, Clone)]
enum Expectation {
    Correct,
    Any,
    Stale,
}

#[derive(Debug, Clone)]
struct Step {
    stream: usize,
    events: usize,
    expectation: Expectation,
}

fn step() -> impl Strategy<Value = Step> {
    (0..4usize, 1..6usize, prop_oneof![Just(Expectation::Correct), Just(Expectation::Any), Just(Expectation::Stale)])
        .prop_map(|(stream, events, expectation)| Step { stream, events, expectation })
}

async fn run(store: &EventStore, steps: Vec<Step>) {
    let organization = Uuid::new_v4();
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let mut model: HashMap<Uuid, u64> = HashMap::new();
    for step in steps {
        let stream_id = streams[step.stream];
        let current = model.get(&stream_id).copied().unwrap_or(0);
        let expected = match step.expectation {
            Expectation::Correct if current == 0 => ExpectedVersion::NoStream,
            Expectation::Correct => ExpectedVersion::Exact(current),
            Expectation::Any => ExpectedVersion::Any,
            Expectation::Stale => ExpectedVersion::Exact(current + 1),
        };
        match store.append(&numbered(organization, stream_id, expected, step.events)).await {
            Ok(result) => {
                assert!(!matches!(step.expectation, Expectation::Stale));
                assert_eq!(result.streams[0].version, current + step.events as u64);
                model.insert(stream_id, current + step.events as u64);
            }
            Err(StoreError::Conflict { actual, .. }) => {
                assert!(matches!(step.expectation, Expectation::Stale));
                assert_eq!(actual, model.get(&stream_id).copied());
            }
            Err(error) => panic!("unexpected error: {error}"),
        }
    }
    for (stream_id, version) in &model {
        let versions: Vec<u64> =
            store.read_stream(*stream_id, 1).await.unwrap().iter().map(|e| e.stream_version).collect();
        assert_eq!(versions, (1..=*version).collect::<Vec<_>>());
    }
    let total: i64 = sqlx::query_scalar("select count(*) from ledger.events").fetch_one(store.pool()).await.unwrap();
    let everything = read_all_until(store, Checkpoint::START, total as usize).await;
    let mine: Vec<_> = everything.iter().filter(|e| e.organization_id == organization).collect();
    assert_eq!(mine.len() as u64, model.values().sum::<u64>());
    let unique: HashSet<Uuid> = everything.iter().map(|e| e.event_id).collect();
    assert_eq!(unique.len(), everything.len());
    assert!(store.verify_all().await.unwrap().is_intact());
}

#[test]
fn random_appends_keep_versions_contiguous_reads_unique_and_chains_intact() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // One database for every case; each case uses streams of its own.
    let db = runtime.block_on(TestDatabase::new());
    let store = db.store();
    let config = ProptestConfig { cases: 24, ..ProptestConfig::default() };
    proptest!(config, |(steps in proptest::collection::vec(step(), 1..25))| {
        runtime.block_on(run(&store, steps));
    });
    runtime.block_on(async { db.pool.close().await });
    drop(db);
}

/// Text a jsonb string can hold: any characters but NUL, multi-byte ones, quotes,
/// backslashes, tabs and newlines (which COPY's text format escapes) among them.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[^\u{0}]{0,40}", "[a-zA-Zé€𝄞\"\\\\\t\n\r ]{0,40}",]
}

/// The chain the append writes passes the database's check and is the one the verifier
/// rebuilds from the stored columns, for any text in the payload, the event type and the
/// metadata, by INSERT (a few events) and by COPY (from `COPY_ROWS_MIN` on).
#[test]
fn the_append_the_database_and_the_verifier_hash_any_text_alike() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = runtime.block_on(TestDatabase::new());
    let store = db.store();
    let config = ProptestConfig { cases: 16, ..ProptestConfig::default() };
    let texts = proptest::collection::vec(text(), 1..6);
    proptest!(config, |(texts in texts, event_type in "[^\u{0}\\s]{1,20}", actor in "[^\u{0}]{0,10}[^\u{0}\\s][^\u{0}]{0,10}", by_copy in any::<bool>())| {
        runtime.block_on(async {
            let count = if by_copy { ledger_store::COPY_ROWS_MIN } else { texts.len() };
            let events = (0..count)
                .map(|n| crate::event(&event_type, serde_json::json!({ "text": texts[n % texts.len()], "n": n })))
                .collect();
            let stream_id = Uuid::new_v4();
            let request = ledger_store::AppendRequest::single(
                crate::stream(Uuid::new_v4(), stream_id, ExpectedVersion::NoStream, events),
                ledger_store::Metadata::by(actor.clone()),
            );
            store.append(&request).await.unwrap();
            let stored = store.read_stream(stream_id, 1).await.unwrap();
            assert_eq!(stored.len(), count);
            let stored_text: serde_json::Value = serde_json::from_str(stored[0].payload.text()).unwrap();
            assert_eq!(stored_text["text"], texts[0].as_str());
            let report = store.verify_stream(stream_id).await.unwrap();
            assert_eq!(report.events_checked, count as u64);
            assert!(report.is_intact(), "{report:?}");
        });
    });
    runtime.block_on(async { db.pool.close().await });
    drop(db);
}
