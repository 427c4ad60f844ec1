//! The database's own append function (`ledger.append`), which the store calls for every
//! small append: it refuses what the store's steps refuse, only writers may call it, its
//! chain is the one the verifier recomputes, and a caller that skips its locks can only lose.

use ledger_store::testkit::TestDatabase;
use ledger_store::{AppendRequest, ExpectedVersion, Metadata};
use serde_json::json;
use uuid::Uuid;

use crate::{event, event_count, numbered, stream};

/// What `ledger.append` (or `ledger.append_one`) answered.
#[derive(Debug, sqlx::FromRow)]
pub struct Outcome {
    pub status: String,
    pub stream_index: Option<i32>,
    pub stored_version: Option<i64>,
    pub stored_type: Option<String>,
    pub stored_organization: Option<Uuid>,
    pub positions: Option<Vec<i64>>,
}

/// Appends `count` events to one `test_stream` by calling `ledger.append` directly, taking no
/// stream lock (an empty list of keys): the way a client that bypasses the store would.
pub async fn append_by_sql<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    organization: Uuid,
    stream_id: Uuid,
    expected: Option<i64>,
    count: usize,
) -> Outcome {
    try_append_by_sql(executor, organization, "test_stream", stream_id, expected, count).await.unwrap()
}

pub async fn try_append_by_sql<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    organization: Uuid,
    stream_type: &str,
    stream_id: Uuid,
    expected: Option<i64>,
    count: usize,
) -> Result<Outcome, sqlx::Error> {
    let payloads: Vec<String> = (0..count).map(|n| json!({ "n": n }).to_string()).collect();
    sqlx::query_as(
        "select status, stream_index, stored_version, stored_type, stored_organization, positions from ledger.append( \
             array[$1::uuid], array[$2], array[$3::uuid], array[$4::int8], array[$5::int4], '{}', \
             $6, array_fill('Numbered'::text, array[$5::int4]), array_fill(1, array[$5::int4]), $7, \
             '{\"actor\":\"sql\"}', null, null)",
    )
    .bind(organization)
    .bind(stream_type)
    .bind(stream_id)
    .bind(expected)
    .bind(count as i32)
    .bind((0..count).map(|_| Uuid::new_v4()).collect::<Vec<_>>())
    .bind(payloads)
    .fetch_one(executor)
    .await
}

async fn reserved_positions(pool: &sqlx::PgPool) -> Option<i64> {
    sqlx::query_scalar("select pg_sequence_last_value('ledger.events_global_position_seq')")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn it_refuses_a_stale_version_another_organization_and_another_type_and_writes_nothing() {
    let db = TestDatabase::new().await;
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let written = append_by_sql(&db.pool, organization, stream_id, Some(0), 2).await;
    assert_eq!(written.status, "written");
    assert_eq!(written.positions.as_ref().map(Vec::len), Some(2));
    let reserved = reserved_positions(&db.pool).await;

    let stale = append_by_sql(&db.pool, organization, stream_id, Some(1), 1).await;
    assert_eq!((stale.status.as_str(), stale.stream_index, stale.stored_version), ("refused", Some(1), Some(2)));
    let not_new = append_by_sql(&db.pool, organization, stream_id, Some(0), 1).await;
    assert_eq!((not_new.status.as_str(), not_new.stored_version), ("refused", Some(2)));
    let foreign = append_by_sql(&db.pool, Uuid::new_v4(), stream_id, None, 1).await;
    assert_eq!((foreign.status.as_str(), foreign.stored_organization), ("refused", Some(organization)));
    let other_type = try_append_by_sql(&db.pool, organization, "other_stream", stream_id, None, 1).await.unwrap();
    assert_eq!((other_type.status.as_str(), other_type.stored_type.as_deref()), ("refused", Some("test_stream")));

    assert_eq!(event_count(&db.pool).await, 2, "a refusal writes nothing");
    assert_eq!(reserved_positions(&db.pool).await, reserved, "and reserves no position");
    let report = db.store().verify_stream(stream_id).await.unwrap();
    assert_eq!((report.events_checked, report.is_intact()), (2, true), "{report:?}");
}

/// The store's refusals through the one-statement path, across several streams: the first
/// refused stream is named, and the chain the database computed is the one the verifier
/// recomputes.
#[tokio::test]
async fn the_store_names_the_refused_stream_of_a_multi_stream_append() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let both = |expected_first, expected_second| AppendRequest {
        streams: vec![
            stream(organization, first, expected_first, vec![event("A", json!({ "a": 1.50 }))]),
            stream(organization, second, expected_second, vec![event("B", json!({})), event("C", json!({}))]),
        ],
        metadata: Metadata::by("tester"),
        idempotency_key: None,
        fingerprint: None,
    };
    let result = store.append(&both(ExpectedVersion::NoStream, ExpectedVersion::NoStream)).await.unwrap();
    assert_eq!(result.streams.iter().map(|head| head.version).collect::<Vec<_>>(), [1, 2]);
    assert!(result.positions.windows(2).all(|pair| pair[0] < pair[1]), "{:?}", result.positions);

    let error = store.append(&both(ExpectedVersion::Exact(1), ExpectedVersion::Exact(1))).await.unwrap_err();
    match error {
        ledger_store::StoreError::Conflict { stream_id, expected, actual } => {
            assert_eq!((stream_id, expected, actual), (second, ExpectedVersion::Exact(1), Some(2)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut foreign = both(ExpectedVersion::Any, ExpectedVersion::Any);
    foreign.streams[1].organization_id = Uuid::new_v4();
    let error = store.append(&foreign).await.unwrap_err();
    assert!(
        matches!(error, ledger_store::StoreError::StreamMismatch { stream_id, field: "organization_id", .. } if stream_id == second),
        "{error:?}"
    );
    assert_eq!(event_count(&db.pool).await, 3);
    let report = store.verify_all().await.unwrap();
    assert_eq!((report.events_checked, report.is_intact()), (3, true), "{report:?}");
}

/// Only the writer may execute it (it runs as `ledger_appender`, whose rights are not the
/// caller's).
#[tokio::test]
async fn only_a_writer_may_call_it() {
    let db = TestDatabase::new().await;
    for role in ["ledger_projector", "ledger_auditor", "ledger_api_reader"] {
        let mut connection = db.connect().await;
        sqlx::query(&format!("set role {role}")).execute(&mut connection).await.unwrap();
        let error = try_append_by_sql(&mut connection, Uuid::new_v4(), "test_stream", Uuid::new_v4(), Some(0), 1)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("permission denied for function append"), "{role}: {error}");
    }
    assert_eq!(event_count(&db.pool).await, 0);

    let mut connection = db.connect().await;
    sqlx::query("set role ledger_writer").execute(&mut connection).await.unwrap();
    let written = append_by_sql(&mut connection, Uuid::new_v4(), Uuid::new_v4(), Some(0), 1).await;
    assert_eq!(written.status, "written");
    assert_eq!(event_count(&db.pool).await, 1);
}

/// `second` (an append racing `first`'s uncommitted one for the same version) waits for
/// `first` to commit, then fails at the stream's unique version.
async fn waits_for_the_first_then_loses(
    second: tokio::task::JoinHandle<Result<String, sqlx::Error>>,
    first: &mut sqlx::PgConnection,
) {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second waits for the first's version");
    sqlx::query("commit").execute(&mut *first).await.unwrap();
    let error = second.await.unwrap().unwrap_err();
    let constraint = error.as_database_error().and_then(|error| error.constraint().map(str::to_owned));
    assert_eq!(constraint.as_deref(), Some("events_stream_id_stream_version_key"), "{error}");
}

/// Two callers that take no stream lock race for the same version: the second waits for the
/// first at the stream's unique version and then fails; the store reads that as a conflict.
#[tokio::test]
async fn a_caller_that_skips_the_stream_locks_can_only_lose() {
    let db = TestDatabase::new().await;
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    append_by_sql(&db.pool, organization, stream_id, Some(0), 1).await;

    let mut first = db.connect().await;
    sqlx::query("begin").execute(&mut first).await.unwrap();
    assert_eq!(append_by_sql(&mut first, organization, stream_id, Some(1), 1).await.status, "written");
    let second = {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            try_append_by_sql(&pool, organization, "test_stream", stream_id, Some(1), 1)
                .await
                .map(|outcome| outcome.status)
        })
    };
    waits_for_the_first_then_loses(second, &mut first).await;

    assert_eq!(event_count(&db.pool).await, 2);
    let report = db.store().verify_all().await.unwrap();
    assert_eq!((report.events_checked, report.is_intact()), (2, true), "{report:?}");
}

/// Calls `ledger.append_one` directly: one `Numbered` event, the stream's lock key as the
/// caller gives it.
#[allow(clippy::too_many_arguments)]
pub async fn try_append_one_by_sql<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    organization: Uuid,
    stream_type: &str,
    stream_id: Uuid,
    expected: Option<i64>,
    lock_key: i64,
    key: Option<&str>,
) -> Result<Outcome, sqlx::Error> {
    sqlx::query_as(
        "select status, stream_index, stored_version, stored_type, stored_organization, positions \
         from ledger.append_one($1, $2, $3, $4, $5, $6, 'Numbered', 1, '{\"n\": 1}', '{\"actor\":\"sql\"}', $7, $8)",
    )
    .bind(organization)
    .bind(stream_type)
    .bind(stream_id)
    .bind(expected)
    .bind(lock_key)
    .bind(Uuid::new_v4())
    .bind(key)
    .bind(key.map(|_| vec![7u8; 32]))
    .fetch_one(executor)
    .await
}

/// `ledger.append_one` refuses what `ledger.append` refuses, with the stream's head, and then
/// writes nothing and reserves no position; what it writes verifies.
#[tokio::test]
async fn append_one_refuses_a_stale_version_another_organization_and_another_type() {
    let db = TestDatabase::new().await;
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let one = |organization, stream_type: &'static str, expected| {
        let pool = db.pool.clone();
        async move { try_append_one_by_sql(&pool, organization, stream_type, stream_id, expected, 1, None).await.unwrap() }
    };
    let written = one(organization, "test_stream", Some(0)).await;
    assert_eq!((written.status.as_str(), written.positions.as_ref().map(Vec::len)), ("written", Some(1)));
    let reserved = reserved_positions(&db.pool).await;

    let not_new = one(organization, "test_stream", Some(0)).await;
    assert_eq!((not_new.status.as_str(), not_new.stream_index, not_new.stored_version), ("refused", Some(1), Some(1)));
    let ahead = one(organization, "test_stream", Some(5)).await;
    assert_eq!((ahead.status.as_str(), ahead.stored_version), ("refused", Some(1)));
    let foreign = one(Uuid::new_v4(), "test_stream", None).await;
    assert_eq!((foreign.status.as_str(), foreign.stored_organization), ("refused", Some(organization)));
    let other_type = one(organization, "other_stream", None).await;
    assert_eq!((other_type.status.as_str(), other_type.stored_type.as_deref()), ("refused", Some("test_stream")));
    let missing =
        try_append_one_by_sql(&db.pool, organization, "test_stream", Uuid::new_v4(), Some(1), 1, None).await.unwrap();
    assert_eq!((missing.status.as_str(), missing.stored_version), ("refused", None), "no stream at version 1");

    assert_eq!(event_count(&db.pool).await, 1, "a refusal writes nothing");
    assert_eq!(reserved_positions(&db.pool).await, reserved, "and reserves no position");
    let next = one(organization, "test_stream", Some(1)).await;
    assert_eq!(next.status, "written");
    let any = one(organization, "test_stream", None).await;
    assert_eq!(any.status, "written");
    let report = db.store().verify_stream(stream_id).await.unwrap();
    assert_eq!((report.events_checked, report.is_intact()), (3, true), "{report:?}");
}

/// A key is recorded with the event in the same statement; the key again writes nothing.
#[tokio::test]
async fn append_one_records_its_key_once() {
    let db = TestDatabase::new().await;
    let organization = Uuid::new_v4();
    let key = format!("key-{}", Uuid::new_v4());
    let first = try_append_one_by_sql(&db.pool, organization, "test_stream", Uuid::new_v4(), Some(0), 1, Some(&key))
        .await
        .unwrap();
    assert_eq!(first.status, "written");
    for stream_id in [Uuid::new_v4(), Uuid::new_v4()] {
        let again =
            try_append_one_by_sql(&db.pool, organization, "test_stream", stream_id, None, 2, Some(&key)).await.unwrap();
        assert_eq!((again.status.as_str(), again.positions), ("key_used", None));
    }
    assert_eq!(event_count(&db.pool).await, 1);
    let (recorded, writer_matches): (Vec<u8>, bool) = sqlx::query_as(
        "select k.request_hash, k.transaction_id = e.transaction_id from ledger.idempotency_keys k, ledger.events e \
         where k.idempotency_key = $1",
    )
    .bind(&key)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((recorded, writer_matches), (vec![7u8; 32], true), "the key names the event's transaction");
}

/// Only the writer may call it; a caller that passes another stream's lock key can only lose
/// at the stream's unique version.
#[tokio::test]
async fn append_one_is_the_writers_and_a_wrong_lock_key_can_only_lose() {
    let db = TestDatabase::new().await;
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    for role in ["ledger_projector", "ledger_auditor", "ledger_api_reader"] {
        let mut connection = db.connect().await;
        sqlx::query(&format!("set role {role}")).execute(&mut connection).await.unwrap();
        let error = try_append_one_by_sql(&mut connection, organization, "test_stream", stream_id, Some(0), 1, None)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("permission denied for function append_one"), "{role}: {error}");
    }
    let mut first = db.connect().await;
    sqlx::query("set role ledger_writer").execute(&mut first).await.unwrap();
    sqlx::query("begin").execute(&mut first).await.unwrap();
    let written =
        try_append_one_by_sql(&mut first, organization, "test_stream", stream_id, None, 1, None).await.unwrap();
    assert_eq!(written.status, "written");
    let second = {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            try_append_one_by_sql(&pool, organization, "test_stream", stream_id, None, 2, None)
                .await
                .map(|outcome| outcome.status)
        })
    };
    waits_for_the_first_then_loses(second, &mut first).await;
    let report = db.store().verify_all().await.unwrap();
    assert_eq!((report.events_checked, report.is_intact()), (1, true), "{report:?}");
}

/// The store sends a one-event append to `ledger.append_one`, and what it answers is the
/// store's usual answer: written, a conflict naming the stored version, a keyed repeat
/// replayed.
#[tokio::test]
async fn the_store_appends_one_event_through_append_one() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let request = numbered(organization, stream_id, ExpectedVersion::NoStream, 1);
    let written = store.append(&request).await.unwrap();
    assert_eq!(written.streams[0].version, 1);
    let error = store.append(&request).await.unwrap_err();
    assert!(
        matches!(error, ledger_store::StoreError::Conflict { actual: Some(1), .. }),
        "a second first event conflicts: {error:?}"
    );
    let mut keyed = numbered(organization, stream_id, ExpectedVersion::Exact(1), 1);
    keyed.idempotency_key = Some(format!("key-{}", Uuid::new_v4()));
    let first = store.append(&keyed).await.unwrap();
    let again = store.append(&keyed).await.unwrap();
    assert_eq!((again.replayed, again.positions), (true, first.positions));
    assert_eq!(event_count(&db.pool).await, 2);
    let report = store.verify_all().await.unwrap();
    assert_eq!((report.events_checked, report.is_intact()), (2, true), "{report:?}");

    // With the function gone the store's one-event append fails, naming it: this is its path.
    sqlx::query("alter function ledger.append_one rename to append_one_away").execute(&db.pool).await.unwrap();
    let error = store.append(&numbered(organization, stream_id, ExpectedVersion::Exact(2), 1)).await.unwrap_err();
    assert!(error.to_string().contains("append_one"), "{error}");
    sqlx::query("alter function ledger.append_one_away rename to append_one").execute(&db.pool).await.unwrap();
    assert_eq!(
        store.append(&numbered(organization, stream_id, ExpectedVersion::Exact(2), 1)).await.unwrap().streams[0]
            .version,
        3
    );
}
