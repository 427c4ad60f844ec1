use ledger_store::testkit::TestDatabase;
use ledger_store::{AppendRequest, ExpectedVersion, Metadata, StoreError};
use serde_json::json;
use uuid::Uuid;

use crate::{event, event_count, numbered, stream};

#[tokio::test]
async fn append_then_read_stream_gives_versions_one_to_n_with_a_chain() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());

    let first = store.append(&numbered(organization, stream_id, ExpectedVersion::NoStream, 3)).await.unwrap();
    let second = store.append(&numbered(organization, stream_id, ExpectedVersion::Exact(3), 2)).await.unwrap();

    assert_eq!(first.positions.len(), 3);
    assert_eq!(second.streams[0].version, 5);
    assert!(first.last_position() < second.positions[0]);
    let events = store.read_stream(stream_id, 1).await.unwrap();
    assert_eq!(events.iter().map(|e| e.stream_version).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(events[0].prev_hash, None);
    for pair in events.windows(2) {
        assert_eq!(pair[1].prev_hash.as_deref(), Some(&pair[0].hash[..]));
    }
    assert_eq!(events[3].payload.to_value(), json!({ "n": 0 }));
    assert_eq!(events[0].metadata["actor"], "tester");
    assert_eq!(store.read_stream(stream_id, 4).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_stale_expected_version_is_a_conflict_naming_stream_expected_and_actual() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    store.append(&numbered(organization, stream_id, ExpectedVersion::NoStream, 2)).await.unwrap();

    let stale = store.append(&numbered(organization, stream_id, ExpectedVersion::Exact(1), 1)).await.unwrap_err();
    let exists = store.append(&numbered(organization, stream_id, ExpectedVersion::NoStream, 1)).await.unwrap_err();
    let missing =
        store.append(&numbered(organization, Uuid::new_v4(), ExpectedVersion::Exact(4), 1)).await.unwrap_err();

    assert!(
        matches!(stale, StoreError::Conflict { stream_id: s, expected: ExpectedVersion::Exact(1), actual: Some(2) } if s == stream_id)
    );
    assert!(matches!(exists, StoreError::Conflict { expected: ExpectedVersion::NoStream, actual: Some(2), .. }));
    assert!(matches!(missing, StoreError::Conflict { expected: ExpectedVersion::Exact(4), actual: None, .. }));
    assert!(stale.to_string().contains(&stream_id.to_string()), "{stale}");
    assert_eq!(event_count(&db.pool).await, 2);
}

#[tokio::test]
async fn any_version_appends_after_whatever_is_there() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    store.append(&numbered(organization, stream_id, ExpectedVersion::Any, 2)).await.unwrap();
    let result = store.append(&numbered(organization, stream_id, ExpectedVersion::Any, 2)).await.unwrap();
    assert_eq!(result.streams[0].version, 4);
}

#[tokio::test]
async fn a_conflict_on_one_stream_writes_nothing_on_any() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let (run, wallet, transaction) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    store.append(&numbered(organization, wallet, ExpectedVersion::NoStream, 1)).await.unwrap();
    let before = event_count(&db.pool).await;

    let request = AppendRequest {
        streams: vec![
            stream(organization, run, ExpectedVersion::NoStream, vec![event("RunPaid", json!({}))]),
            stream(organization, transaction, ExpectedVersion::NoStream, vec![event("Posted", json!({}))]),
            // The wallet is at version 1, not 0.
            stream(organization, wallet, ExpectedVersion::NoStream, vec![event("Credited", json!({}))]),
        ],
        metadata: Metadata::by("tester"),
        idempotency_key: Some("pay-1".to_owned()),
        fingerprint: None,
    };
    let error = store.append(&request).await.unwrap_err();

    assert!(matches!(error, StoreError::Conflict { stream_id, .. } if stream_id == wallet));
    assert_eq!(event_count(&db.pool).await, before);
    assert!(store.read_stream(run, 1).await.unwrap().is_empty());
    assert!(store.read_stream(transaction, 1).await.unwrap().is_empty());
    let keys: i64 =
        sqlx::query_scalar("select count(*) from ledger.idempotency_keys").fetch_one(&db.pool).await.unwrap();
    assert_eq!(keys, 0, "a failed request leaves its idempotency key unused");
}

#[tokio::test]
async fn a_multi_stream_append_is_one_transaction() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let streams: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let request = AppendRequest {
        streams: streams
            .iter()
            .map(|id| {
                stream(organization, *id, ExpectedVersion::NoStream, vec![event("A", json!({})), event("B", json!({}))])
            })
            .collect(),
        metadata: Metadata::by("tester"),
        idempotency_key: None,
        fingerprint: None,
    };
    let result = store.append(&request).await.unwrap();
    assert_eq!(result.positions.len(), 6);
    let transaction_ids: Vec<String> = sqlx::query_scalar("select distinct transaction_id::text from ledger.events")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(transaction_ids.len(), 1);
}

#[tokio::test]
async fn a_large_batch_goes_in_chunks_within_one_transaction() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    // More rows than one INSERT chunk, spread over more streams than are locked one by one.
    let request = AppendRequest {
        streams: (0..120)
            .map(|_| {
                let events = (0..100).map(|n| event("Numbered", json!({ "n": n }))).collect();
                stream(organization, Uuid::new_v4(), ExpectedVersion::NoStream, events)
            })
            .collect(),
        metadata: Metadata::by("tester"),
        idempotency_key: None,
        fingerprint: None,
    };
    assert!(request.event_count() > ledger_store::INSERT_CHUNK_ROWS);
    let result = store.append(&request).await.unwrap();
    assert_eq!(result.positions.len(), 12_000);
    assert!(result.streams.iter().all(|head| head.version == 100));
    assert_eq!(event_count(&db.pool).await, 12_000);
    assert!(store.verify_all().await.unwrap().is_intact());
}

#[tokio::test]
async fn the_same_key_and_request_returns_the_first_result_and_appends_nothing() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let request = numbered(organization, stream_id, ExpectedVersion::NoStream, 2).with_idempotency_key("run-42");

    let first = store.append(&request).await.unwrap();
    // A retry may carry fresh event ids; it is still the same request.
    let mut retry = request.clone();
    retry.streams[0].events.iter_mut().for_each(|e| e.event_id = Uuid::new_v4());
    let second = store.append(&retry).await.unwrap();

    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(first.positions, second.positions);
    assert_eq!(first.streams, second.streams);
    assert_eq!(event_count(&db.pool).await, 2);
    let stored = store.read_stream(stream_id, 1).await.unwrap();
    assert_eq!(stored[0].metadata["idempotency_key"], "run-42");
}

#[tokio::test]
async fn the_same_key_with_another_request_is_a_typed_conflict_and_appends_nothing() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    store
        .append(&numbered(organization, stream_id, ExpectedVersion::NoStream, 2).with_idempotency_key("k"))
        .await
        .unwrap();

    let other = numbered(organization, stream_id, ExpectedVersion::Exact(2), 3).with_idempotency_key("k");
    let error = store.append(&other).await.unwrap_err();

    assert!(matches!(&error, StoreError::IdempotencyMismatch { key } if key == "k"), "{error}");
    assert_eq!(event_count(&db.pool).await, 2);
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_writes_nothing() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let good = || numbered(organization, Uuid::new_v4(), ExpectedVersion::NoStream, 1);
    let mut cases: Vec<(&str, AppendRequest)> = Vec::new();

    let mut no_streams = good();
    no_streams.streams.clear();
    cases.push(("streams", no_streams));
    let mut no_events = good();
    no_events.streams[0].events.clear();
    cases.push(("streams[0].events", no_events));
    let mut empty_type = good();
    empty_type.streams[0].events[0].event_type = String::new();
    cases.push(("streams[0].events[0].event_type", empty_type));
    let mut not_object = good();
    not_object.streams[0].events[0].payload = json!([1, 2]).into();
    cases.push(("streams[0].events[0].payload", not_object));
    let mut nil_stream = good();
    nil_stream.streams[0].stream_id = Uuid::nil();
    cases.push(("streams[0].stream_id", nil_stream));
    let mut nil_organization = good();
    nil_organization.streams[0].organization_id = Uuid::nil();
    cases.push(("streams[0].organization_id", nil_organization));
    let mut empty_stream_type = good();
    empty_stream_type.streams[0].stream_type = " ".to_owned();
    cases.push(("streams[0].stream_type", empty_stream_type));
    let mut bad_schema = good();
    bad_schema.streams[0].events[0].schema_version = 0;
    cases.push(("streams[0].events[0].schema_version", bad_schema));
    let mut no_actor = good();
    no_actor.metadata.actor = String::new();
    cases.push(("metadata.actor", no_actor));
    let mut long_key = good();
    long_key.idempotency_key = Some("k".repeat(256));
    cases.push(("idempotency_key", long_key));
    let mut twice = good();
    twice.streams.push(twice.streams[0].clone());
    twice.streams[1].events[0].event_id = Uuid::new_v4();
    cases.push(("streams[1].stream_id", twice));
    let mut same_event = good();
    let duplicate = same_event.streams[0].events[0].clone();
    same_event.streams[0].events.push(duplicate);
    cases.push(("streams[0].events[1].event_id", same_event));

    for (field, request) in cases {
        let error = store.append(&request).await.unwrap_err();
        assert!(matches!(&error, StoreError::Invalid { field: f, .. } if f == field), "{field}: {error}");
        assert!(error.to_string().contains(field), "the message names {field}: {error}");
    }
    assert_eq!(event_count(&db.pool).await, 0);
}

#[tokio::test]
async fn a_stream_keeps_its_type_and_organization() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    store.append(&numbered(organization, stream_id, ExpectedVersion::NoStream, 1)).await.unwrap();

    let other_tenant = store.append(&numbered(Uuid::new_v4(), stream_id, ExpectedVersion::Any, 1)).await.unwrap_err();
    let mut other_type = numbered(organization, stream_id, ExpectedVersion::Any, 1);
    other_type.streams[0].stream_type = "wallet".to_owned();
    let other_type = store.append(&other_type).await.unwrap_err();

    assert!(matches!(other_tenant, StoreError::StreamMismatch { field: "organization_id", .. }));
    assert!(matches!(other_type, StoreError::StreamMismatch { field: "stream_type", .. }));
    assert_eq!(event_count(&db.pool).await, 1);
}

#[tokio::test]
async fn the_schema_version_is_visible_to_readers_for_upcasting() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let mut request = numbered(organization, stream_id, ExpectedVersion::NoStream, 2);
    request.streams[0].events[1].schema_version = 3;
    store.append(&request).await.unwrap();
    let events = store.read_stream(stream_id, 1).await.unwrap();
    assert_eq!(events.iter().map(|e| e.schema_version).collect::<Vec<_>>(), vec![1, 3]);
}

#[tokio::test]
async fn a_large_append_goes_by_copy_and_keeps_every_character() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let awkward = "tab\there, newline\nthere, backslash \\ and \\N, quote \" and ünïcødé ✓";
    let mut request = numbered(organization, stream_id, ExpectedVersion::NoStream, ledger_store::COPY_ROWS_MIN + 1);
    request.streams[0].events[7].payload =
        json!({ "text": awkward, "nested": { "list": [awkward, 1.5, null] } }).into();
    // Text as a client may send it: raw newlines and tabs between the tokens.
    request.streams[0].events[8].payload = raw_payload("{\n\t\"pretty\": [1,\r\n 2],\t\"odd\": \"\\\\N\"\n}");
    request.streams[0].stream_type = "type\twith\\odd chars".to_owned();
    request.metadata.actor = "actor\nwith newline".to_owned();

    let result = store.append(&request).await.unwrap();

    assert_eq!(result.positions.len(), ledger_store::COPY_ROWS_MIN + 1);
    let events = store.read_stream(stream_id, 1).await.unwrap();
    assert_eq!(events[7].payload.to_value(), request.streams[0].events[7].payload.to_value());
    assert_eq!(events[8].payload.to_value(), json!({ "pretty": [1, 2], "odd": "\\N" }));
    assert_eq!(events[0].stream_type, request.streams[0].stream_type);
    assert_eq!(events[0].metadata["actor"], "actor\nwith newline");
    assert_eq!(events.iter().map(|e| e.global_position).collect::<Vec<_>>(), result.positions);
    assert!(store.verify_all().await.unwrap().is_intact());
}

/// A repeated key's result is read back from the events its transaction appended: every
/// position, and each stream's head in the order the request named the streams (here not
/// the order of their ids), for a large append by COPY across many streams.
#[tokio::test]
async fn a_repeated_large_request_gets_back_every_position_and_head_in_request_order() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let mut streams: Vec<Uuid> = (0..120).map(|_| Uuid::new_v4()).collect();
    streams.sort_unstable_by(|a, b| b.cmp(a));
    let mut request = numbered(organization, streams[0], ExpectedVersion::NoStream, 3);
    for stream_id in &streams[1..] {
        request.streams.push(numbered(organization, *stream_id, ExpectedVersion::NoStream, 3).streams.remove(0));
    }
    let request = request.with_idempotency_key("import-7");
    assert!(request.event_count() > ledger_store::COPY_ROWS_MIN);

    let first = store.append(&request).await.unwrap();
    let again = store.append(&request).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.positions, first.positions);
    assert_eq!(again.streams, first.streams);
    assert_eq!(again.streams.iter().map(|head| head.stream_id).collect::<Vec<_>>(), streams);
    assert!(again.streams.iter().all(|head| head.version == 3));
    assert_eq!(event_count(&db.pool).await, 360);
}

/// Keys recorded before results were read back from the events kept a copy of the result;
/// a retry of one still gets it.
#[tokio::test]
async fn a_key_recorded_with_a_stored_result_still_replays_it() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let request = numbered(organization, stream_id, ExpectedVersion::NoStream, 2).with_idempotency_key("old-key");
    let first = store.append(&request).await.unwrap();
    // Turn the key into the earlier form: a stored result, no transaction id.
    sqlx::query(
        "update ledger.idempotency_keys set result = $1, transaction_id = null where idempotency_key = 'old-key'",
    )
    .bind(sqlx::types::Json(&first))
    .execute(&db.pool)
    .await
    .unwrap();
    let again = store.append(&request).await.unwrap();
    assert!(again.replayed);
    assert_eq!((again.positions, again.streams), (first.positions, first.streams));
    assert_eq!(event_count(&db.pool).await, 2);
}

fn raw_payload(text: &str) -> ledger_store::Payload {
    ledger_store::Payload::from_raw(serde_json::value::RawValue::from_string(text.to_owned()).unwrap())
}

/// A key is bound to the payload's text, and, as keys recorded before payloads were carried as
/// text were, to its parsed form: a retry whose payload has the same keys in another order is
/// the same request, one with another value is not.
#[tokio::test]
async fn a_retry_with_the_payload_keys_in_another_order_is_the_same_request() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let with_payload = |text: &str| {
        let mut request = numbered(organization, stream_id, ExpectedVersion::NoStream, 1).with_idempotency_key("order");
        request.streams[0].events[0].payload = raw_payload(text);
        request
    };
    let first = store.append(&with_payload(r#"{"amount":"10.00","employee":"e1"}"#)).await.unwrap();

    let again = store.append(&with_payload(r#"{"employee":"e1","amount":"10.00"}"#)).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.positions, first.positions);
    let other = store.append(&with_payload(r#"{"employee":"e1","amount":"11.00"}"#)).await.unwrap_err();
    assert!(matches!(other, StoreError::IdempotencyMismatch { .. }), "{other:?}");
    assert_eq!(event_count(&db.pool).await, 1);
}

/// A few events with large payloads (a run's calculation chunks) also go by COPY: every byte
/// arrives, the chain holds, and a retry of the key gets the same positions.
#[tokio::test]
async fn a_few_large_payloads_go_by_copy_and_arrive_whole() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let line = "tab\there \\ ünïcødé ✓ ".repeat(30);
    let big = |n: usize| json!({ "chunk": n, "lines": vec![line.clone(); ledger_store::COPY_PAYLOAD_BYTES_MIN / line.len() / 2] });
    let events = (0..3).map(|n| event("Chunk", big(n))).collect();
    let request =
        AppendRequest::single(stream(organization, stream_id, ExpectedVersion::NoStream, events), Metadata::by("t"))
            .with_idempotency_key("chunks");
    assert!(request.event_count() < ledger_store::COPY_ROWS_MIN);

    let result = store.append(&request).await.unwrap();
    let again = store.append(&request).await.unwrap();

    assert_eq!(again.positions, result.positions);
    let stored = store.read_stream(stream_id, 1).await.unwrap();
    assert_eq!(stored.iter().map(|e| e.global_position).collect::<Vec<_>>(), result.positions);
    for (n, event) in stored.iter().enumerate() {
        assert_eq!(event.payload.to_value(), big(n));
    }
    assert!(store.verify_all().await.unwrap().is_intact());
}

/// Numbers only PostgreSQL formats (fractions, exponents, integers beyond 64 bits) are
/// hashed as it stores them, by INSERT and by COPY, and the positions returned are the
/// events' own.
#[tokio::test]
async fn payloads_with_any_numbers_are_chained_as_stored() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let numbers: serde_json::Value = serde_json::from_str(
        r#"{"fraction": 1.50, "exponent": 1e2, "tiny": -2.5E-3, "huge": 123456789012345678901234567890}"#,
    )
    .unwrap();
    for count in [2, ledger_store::COPY_ROWS_MIN] {
        let stream_id = Uuid::new_v4();
        let events = (0..count).map(|n| event("Numbers", json!({ "n": n, "numbers": numbers }))).collect();
        let request = AppendRequest::single(
            stream(Uuid::new_v4(), stream_id, ExpectedVersion::NoStream, events),
            Metadata::by("tester"),
        );
        let result = store.append(&request).await.unwrap();
        let stored = store.read_stream(stream_id, 1).await.unwrap();
        assert_eq!(stored.iter().map(|event| event.global_position).collect::<Vec<_>>(), result.positions);
        assert!(stored[0].payload.text().contains(r#""exponent": 100"#), "{}", stored[0].payload.text());
        let report = store.verify_stream(stream_id).await.unwrap();
        assert_eq!((report.events_checked, report.is_intact()), (count as u64, true), "{report:?}");
    }
}
