//! Group commit: appends made at the same moment through one store share a transaction
//! (`ledger.append_group`), and each keeps its own outcome. A refused member refuses no
//! other, a member whose stream another transaction holds waits alone without holding up the
//! group, a key or stream used twice in one group is written once, and only writers may
//! call the function.

use std::time::Duration;

use futures_util::future::join_all;
use ledger_store::testkit::TestDatabase;
use ledger_store::{AppendRequest, EventStore, ExpectedVersion, StoreError};
use uuid::Uuid;

use crate::{event_count, numbered};

/// A stream's advisory lock key, as the store computes it.
fn lock_key(stream_id: Uuid) -> i64 {
    let bits = stream_id.as_u128();
    ((bits >> 64) as u64 ^ bits as u64) as i64
}

async fn transaction_ids(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select count(distinct transaction_id) from ledger.events").fetch_one(pool).await.unwrap()
}

async fn all_intact(store: &EventStore, events: u64) {
    let report = store.verify_all().await.unwrap();
    assert_eq!((report.events_checked, report.is_intact()), (events, true), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_made_at_once_share_transactions_and_each_is_written_once() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let requests: Vec<AppendRequest> =
        (0..48).map(|_| numbered(organization, Uuid::new_v4(), ExpectedVersion::NoStream, 2)).collect();
    let results = join_all(requests.iter().map(|request| store.append(request))).await;
    let mut positions: Vec<i64> = Vec::new();
    for (request, result) in requests.iter().zip(&results) {
        let result = result.as_ref().unwrap();
        assert_eq!(result.streams[0].stream_id, request.streams[0].stream_id);
        assert_eq!(result.streams[0].version, 2);
        assert_eq!(result.positions.len(), 2);
        positions.extend(&result.positions);
    }
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), 96, "every event has a position of its own");
    assert_eq!(event_count(&db.pool).await, 96);
    let transactions = transaction_ids(&db.pool).await;
    assert!(transactions < 48, "48 appends made at once were committed in {transactions} transactions");
    // Each stream's events in one transaction, at the positions its result names.
    for (request, result) in requests.iter().zip(&results) {
        let stored: Vec<(i64, i64)> = sqlx::query_as(
            "select global_position, stream_version from ledger.events where stream_id = $1 order by stream_version",
        )
        .bind(request.streams[0].stream_id)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let expected: Vec<(i64, i64)> = result.as_ref().unwrap().positions.iter().copied().zip(1..).collect();
        assert_eq!(stored, expected);
    }
    all_intact(&store, 96).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_member_refuses_no_other() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let existing: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    for stream_id in &existing {
        store.append(&numbered(organization, *stream_id, ExpectedVersion::NoStream, 1)).await.unwrap();
    }
    // Half stale (expect no stream), half right (expect version 1), made at once.
    let requests: Vec<AppendRequest> = existing
        .iter()
        .enumerate()
        .map(|(n, stream_id)| {
            let expected = if n % 2 == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(1) };
            numbered(organization, *stream_id, expected, 1)
        })
        .collect();
    let results = join_all(requests.iter().map(|request| store.append(request))).await;
    for (n, (result, stream_id)) in results.iter().zip(&existing).enumerate() {
        if n % 2 == 0 {
            match result {
                Err(StoreError::Conflict { stream_id: refused, expected, actual }) => {
                    assert_eq!((*refused, *expected, *actual), (*stream_id, ExpectedVersion::NoStream, Some(1)));
                }
                other => panic!("append {n}: expected a conflict, got {other:?}"),
            }
        } else {
            assert_eq!(result.as_ref().unwrap().streams[0].version, 2, "append {n}");
        }
    }
    assert_eq!(event_count(&db.pool).await, 12);
    all_intact(&store, 12).await;
}

/// The same stream, or the same key, twice at once: each is written once, as when alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_or_key_used_twice_at_once_is_written_once() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let stream_id = Uuid::new_v4();
    // Sixteen "first events" of one stream: one is written, fifteen conflict.
    let requests: Vec<AppendRequest> =
        (0..16).map(|_| numbered(organization, stream_id, ExpectedVersion::NoStream, 1)).collect();
    let results = join_all(requests.iter().map(|request| store.append(request))).await;
    assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|result| result.as_ref().err())
            .all(|error| matches!(error, StoreError::Conflict { actual: Some(1), .. }))
    );
    // Sixteen appends of any version to one stream: all written, versions 2 to 17.
    let requests: Vec<AppendRequest> =
        (0..16).map(|_| numbered(organization, stream_id, ExpectedVersion::Any, 1)).collect();
    let results = join_all(requests.iter().map(|request| store.append(request))).await;
    let mut versions: Vec<u64> = results.iter().map(|result| result.as_ref().unwrap().streams[0].version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=17).collect::<Vec<_>>());
    // One request sent eight times at once with its key: written once, seven replays.
    let mut request = numbered(organization, Uuid::new_v4(), ExpectedVersion::NoStream, 3);
    request.idempotency_key = Some("group-key-1".to_owned());
    let results = join_all((0..8).map(|_| store.append(&request))).await;
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|result| !result.replayed).count(), 1);
    assert!(results.iter().all(|result| result.positions == results[0].positions));
    // The same key with another request at once: one written, the other refused.
    let mut other = numbered(organization, Uuid::new_v4(), ExpectedVersion::NoStream, 1);
    other.idempotency_key = Some("group-key-2".to_owned());
    let mut another = numbered(organization, Uuid::new_v4(), ExpectedVersion::NoStream, 1);
    another.idempotency_key = Some("group-key-2".to_owned());
    let (first, second) = tokio::join!(store.append(&other), store.append(&another));
    let mismatches =
        [&first, &second].iter().filter(|result| matches!(result, Err(StoreError::IdempotencyMismatch { .. }))).count();
    assert_eq!((first.is_ok() as u8 + second.is_ok() as u8, mismatches), (1, 1), "{first:?} {second:?}");
    assert_eq!(event_count(&db.pool).await, 1 + 16 + 3 + 1);
    all_intact(&store, 21).await;
}

/// A stream held by another transaction (a payroll calculation, a client of its own) does
/// not hold up the group: the others are written, its append waits alone and follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_whose_stream_is_held_waits_alone() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let held: Vec<Uuid> = (0..2).map(|_| Uuid::new_v4()).collect();
    for stream_id in &held {
        store.append(&numbered(organization, *stream_id, ExpectedVersion::NoStream, 1)).await.unwrap();
    }
    let mut holder = db.connect().await;
    sqlx::query("begin").execute(&mut holder).await.unwrap();
    for stream_id in &held {
        sqlx::query("select pg_advisory_xact_lock($1)").bind(lock_key(*stream_id)).execute(&mut holder).await.unwrap();
    }
    // The first waits alone (nothing else was being written); the second arrives while it
    // waits, so it goes with a group, which finds its stream held and hands it back.
    let mut waiting = Vec::new();
    for stream_id in held.clone() {
        let store = store.clone();
        waiting.push(tokio::spawn(async move {
            store.append(&numbered(organization, stream_id, ExpectedVersion::Exact(1), 1)).await
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let others: Vec<AppendRequest> =
        (0..8).map(|_| numbered(organization, Uuid::new_v4(), ExpectedVersion::NoStream, 1)).collect();
    let written = tokio::time::timeout(Duration::from_secs(10), join_all(others.iter().map(|o| store.append(o))))
        .await
        .expect("the others are not held up by the held streams");
    assert!(written.iter().all(Result::is_ok), "{written:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(waiting.iter().all(|task| !task.is_finished()), "the held streams' appends wait for their locks");
    assert_eq!(event_count(&db.pool).await, 10);
    sqlx::query("commit").execute(&mut holder).await.unwrap();
    for task in waiting {
        assert_eq!(task.await.unwrap().unwrap().streams[0].version, 2);
    }
    assert_eq!(event_count(&db.pool).await, 12);
    all_intact(&store, 12).await;
}

/// One member per stream, `count` events each, through `ledger.append_group` itself.
async fn append_group_by_sql<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    organization: Uuid,
    streams: &[(Uuid, Option<i64>)],
    count: usize,
) -> Result<Vec<(String, Option<i32>, Option<i64>)>, sqlx::Error> {
    let keys = vec![None; streams.len()];
    append_group_by_sql_keyed(executor, organization, streams, count, &keys).await
}

/// The same, one event per member, each member with its key.
async fn append_group_with_keys<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    organization: Uuid,
    streams: &[(Uuid, Option<i64>)],
    keys: &[String],
) -> Result<Vec<(String, Option<i32>, Option<i64>)>, sqlx::Error> {
    let keys: Vec<Option<String>> = keys.iter().cloned().map(Some).collect();
    append_group_by_sql_keyed(executor, organization, streams, 1, &keys).await
}

async fn append_group_by_sql_keyed<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    organization: Uuid,
    streams: &[(Uuid, Option<i64>)],
    count: usize,
    keys: &[Option<String>],
) -> Result<Vec<(String, Option<i32>, Option<i64>)>, sqlx::Error> {
    let members = streams.len();
    let events = members * count;
    let payloads: Vec<String> = (0..events).map(|n| format!("{{\"n\": {n}}}")).collect();
    let lock_keys: Vec<i64> = streams.iter().map(|(id, _)| lock_key(*id)).collect();
    sqlx::query_as(
        "select status, stream_index, stored_version from ledger.append_group( \
             array_fill(1, array[$1::int4]), array_fill('{\"actor\":\"sql\"}'::text, array[$1::int4]), \
             $10::text[], array_fill('\\x01'::bytea, array[$1::int4]), \
             array_fill($2::uuid, array[$1::int4]), array_fill('test_stream'::text, array[$1::int4]), $3, $4, \
             array_fill($5::int4, array[$1::int4]), $6, \
             $7, array_fill('Numbered'::text, array[$8::int4]), array_fill(1, array[$8::int4]), $9) order by member",
    )
    .bind(members as i32)
    .bind(organization)
    .bind(streams.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(streams.iter().map(|(_, expected)| *expected).collect::<Vec<_>>())
    .bind(count as i32)
    .bind(lock_keys)
    .bind((0..events).map(|_| Uuid::new_v4()).collect::<Vec<_>>())
    .bind(events as i32)
    .bind(payloads)
    .bind(keys)
    .fetch_all(executor)
    .await
}

#[tokio::test]
async fn the_function_answers_each_member_and_only_writers_may_call_it() {
    let db = TestDatabase::new().await;
    let organization = Uuid::new_v4();
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let outcomes = append_group_by_sql(&db.pool, organization, &[(a, Some(0)), (b, None)], 2).await.unwrap();
    let statuses: Vec<&str> = outcomes.iter().map(|outcome| outcome.0.as_str()).collect();
    assert_eq!(statuses, ["written", "written"]);
    // a is at 2: a stale member is refused with its head, the others written; a stream twice
    // in one group: the second is busy (appended alone by the store).
    let outcomes =
        append_group_by_sql(&db.pool, organization, &[(a, Some(1)), (c, Some(0)), (c, None), (b, Some(2))], 1)
            .await
            .unwrap();
    assert_eq!(
        outcomes,
        [
            ("refused".to_owned(), Some(1), Some(2)),
            ("written".to_owned(), None, None),
            ("busy".to_owned(), None, None),
            ("written".to_owned(), None, None),
        ]
    );
    assert_eq!(event_count(&db.pool).await, 6);
    for role in ["ledger_projector", "ledger_auditor", "ledger_api_reader"] {
        let mut connection = db.connect().await;
        sqlx::query(&format!("set role {role}")).execute(&mut connection).await.unwrap();
        let error =
            append_group_by_sql(&mut connection, organization, &[(Uuid::new_v4(), Some(0))], 1).await.unwrap_err();
        assert!(error.to_string().contains("permission denied for function append_group"), "{role}: {error}");
    }
    let mut connection = db.connect().await;
    sqlx::query("set role ledger_writer").execute(&mut connection).await.unwrap();
    let outcomes = append_group_by_sql(&mut connection, organization, &[(Uuid::new_v4(), Some(0))], 1).await.unwrap();
    assert_eq!(outcomes[0].0, "written");
    assert_eq!(event_count(&db.pool).await, 7);
    all_intact(&db.store(), 7).await;
}

/// How many key rows sequential scans have read (this backend's flushed counters).
async fn keys_read(connection: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "select coalesce(seq_tup_read, 0) from pg_stat_user_tables \
         where schemaname = 'ledger' and relname = 'idempotency_keys'",
    )
    .fetch_one(connection)
    .await
    .unwrap()
}

/// A group's check of its members' keys probes the key index: it never reads every key
/// ever used (a hashed scan made each group slower as the log grew: 134 million key rows
/// read in one benchmark minute).
#[tokio::test]
async fn a_groups_key_check_reads_no_other_key() {
    let db = TestDatabase::new().await;
    sqlx::query(
        "insert into ledger.idempotency_keys (idempotency_key, request_hash, transaction_id) \
         select 'old-' || n, '\\x00', ledger.current_transaction_id() from generate_series(1, 20000) n",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("analyze ledger.idempotency_keys").execute(&db.pool).await.unwrap();
    let mut connection = db.connect().await;
    let before = keys_read(&mut connection).await;
    let organization = Uuid::new_v4();
    for round in 0..8 {
        let streams: Vec<(Uuid, Option<i64>)> = (0..8).map(|_| (Uuid::new_v4(), Some(0))).collect();
        let keys: Vec<String> = (0..8).map(|n| format!("new-{round}-{n}")).collect();
        let outcomes = append_group_with_keys(&mut connection, organization, &streams, &keys).await.unwrap();
        assert!(outcomes.iter().all(|outcome| outcome.0 == "written"), "{outcomes:?}");
    }
    // This backend's counters, flushed at its next transaction's end; read afresh.
    sqlx::query("select pg_stat_force_next_flush()").execute(&mut connection).await.unwrap();
    sqlx::query("select 1").execute(&mut connection).await.unwrap();
    sqlx::query("select pg_stat_clear_snapshot()").execute(&mut connection).await.unwrap();
    let read = keys_read(&mut connection).await - before;
    assert!(read < 20000, "eight groups read {read} key rows: a scan of every key");
}

/// A member's answer: number, status, positions, its streams' first new versions.
type MemberPositions = (i32, String, Option<Vec<i64>>, Option<Vec<i64>>);

/// A group whose streams carry one event each (commands) is written as an append alone would
/// write it: each stream's row follows its stored head, positions in the members' order, the
/// writing transaction's era id, each member's own metadata; a refused member writes nothing.
#[tokio::test]
async fn a_group_of_one_event_streams_writes_each_row_as_an_append_alone_would() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let (a, b, c, d) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    store.append(&numbered(organization, c, ExpectedVersion::NoStream, 1)).await.unwrap();
    store.append(&numbered(organization, d, ExpectedVersion::NoStream, 1)).await.unwrap();
    // Member 1: two new streams (a, b); member 2: c at version 1; member 3: d, stale.
    let mut transaction = db.pool.begin().await.unwrap();
    let outcomes: Vec<MemberPositions> = sqlx::query_as(
        "select member, status, positions, first_versions from ledger.append_group( \
             array[2, 1, 1], array['{\"actor\":\"one\"}', '{\"actor\":\"two\"}', '{\"actor\":\"three\"}'], \
             array[null, 'key-2', null]::text[], array[null, '\\x02', null]::bytea[], \
             array_fill($1::uuid, array[4]), array_fill('test_stream'::text, array[4]), $2, array[0, 0, 1, 0]::int8[], \
             array[1, 1, 1, 1], $3, $4, array_fill('Numbered'::text, array[4]), array[1, 1, 1, 1], \
             array['{\"n\": 0}', '{\"n\": 1}', '{\"n\": 2}', '{\"n\": 3}'])",
    )
    .bind(organization)
    .bind(vec![a, b, c, d])
    .bind(vec![a, b, c, d].into_iter().map(lock_key).collect::<Vec<_>>())
    .bind((0..4).map(|_| Uuid::new_v4()).collect::<Vec<_>>())
    .fetch_all(&mut *transaction)
    .await
    .unwrap();
    let writing: String =
        sqlx::query_scalar("select ledger.current_transaction_id()::text").fetch_one(&mut *transaction).await.unwrap();
    transaction.commit().await.unwrap();
    let positions: Vec<i64> = outcomes.iter().filter_map(|outcome| outcome.2.clone()).flatten().collect();
    assert_eq!(
        outcomes.iter().map(|outcome| (outcome.0, outcome.1.as_str(), outcome.3.clone())).collect::<Vec<_>>(),
        [(1, "written", Some(vec![1, 1])), (2, "written", Some(vec![2])), (3, "refused", None)]
    );
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "positions in the members' order: {positions:?}");
    let rows: Vec<(i64, Uuid, i64, String, String, bool)> = sqlx::query_as(
        "select e.global_position, e.stream_id, e.stream_version, e.transaction_id::text, e.metadata->>'actor', \
             e.prev_hash is not distinct from (select p.hash from ledger.events p \
                 where p.stream_id = e.stream_id and p.stream_version = e.stream_version - 1) \
         from ledger.events e where e.global_position = any($1) order by e.global_position",
    )
    .bind(&positions)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected = [(a, 1, "one"), (b, 1, "one"), (c, 2, "two")];
    assert_eq!(rows.len(), 3, "{rows:?}");
    for ((position, stream, version, transaction_id, actor, follows), (stream_id, stream_version, member_actor)) in
        rows.iter().zip(expected)
    {
        assert_eq!((*stream, *version, actor.as_str()), (stream_id, stream_version, member_actor), "at {position}");
        assert_eq!(transaction_id, &writing, "the writing transaction's era id at {position}");
        assert!(follows, "the row at {position} follows its stream's stored head");
    }
    let keys: i64 = sqlx::query_scalar("select count(*) from ledger.idempotency_keys where idempotency_key = 'key-2'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(keys, 1);
    assert_eq!(event_count(&db.pool).await, 5, "the stale member wrote nothing");
    all_intact(&store, 5).await;
}

/// Which members a group tries, and which it answers busy without trying: a key an earlier
/// member has, a key another transaction holds, a stream an earlier member holding its key
/// has, a stream another transaction holds. A member busy on its key claims no stream, so a
/// later member with that stream is tried and written.
#[tokio::test]
async fn a_group_answers_busy_for_what_an_earlier_member_or_another_transaction_has() {
    let db = TestDatabase::new().await;
    let organization = Uuid::new_v4();
    let (a, b, c, d, e) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut holder = db.connect().await;
    sqlx::query("begin").execute(&mut holder).await.unwrap();
    sqlx::query("select pg_advisory_xact_lock(1279607881, hashtext('held-key')), pg_advisory_xact_lock($1)")
        .bind(lock_key(d))
        .execute(&mut holder)
        .await
        .unwrap();
    let members = [
        (a, Some("key-1")),    // 1: written
        (b, Some("key-1")),    // 2: busy, key-1 is member 1's
        (b, Some("key-2")),    // 3: written: member 2 claimed no stream
        (c, Some("held-key")), // 4: busy, its key is held elsewhere
        (c, None),             // 5: written: member 4 claimed no stream
        (a, None),             // 6: busy, stream a is member 1's
        (d, None),             // 7: busy, stream d is held elsewhere
        (e, Some("key-3")),    // 8: written
    ];
    let streams: Vec<(Uuid, Option<i64>)> = members.iter().map(|(stream, _)| (*stream, None)).collect();
    let keys: Vec<Option<String>> = members.iter().map(|(_, key)| key.map(str::to_owned)).collect();
    let outcomes = append_group_by_sql_keyed(&db.pool, organization, &streams, 1, &keys).await.unwrap();
    let statuses: Vec<&str> = outcomes.iter().map(|outcome| outcome.0.as_str()).collect();
    assert_eq!(statuses, ["written", "busy", "written", "busy", "written", "busy", "busy", "written"]);
    sqlx::query("commit").execute(&mut holder).await.unwrap();
    let written: Vec<(Uuid, i64)> =
        sqlx::query_as("select stream_id, stream_version from ledger.events order by global_position")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(written, [(a, 1), (b, 1), (c, 1), (e, 1)]);
    let recorded: Vec<String> =
        sqlx::query_scalar("select idempotency_key from ledger.idempotency_keys order by idempotency_key")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(recorded, ["key-1", "key-2", "key-3"]);
    all_intact(&db.store(), 4).await;
}

/// A refused member is answered with the first of its streams that refused it (its index
/// among the member's streams) and that stream's stored head, whether the group's streams
/// carry one event each (the path of commands) or several; the member's other streams get
/// nothing, and the members after it are written.
#[tokio::test]
async fn a_refused_member_is_answered_with_the_stream_that_refused_it() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, other) = (Uuid::new_v4(), Uuid::new_v4());
    for count in [1, 2] {
        let (fresh, stale, foreign, written) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        store.append(&numbered(organization, stale, ExpectedVersion::NoStream, 1)).await.unwrap();
        store.append(&numbered(other, foreign, ExpectedVersion::NoStream, 2)).await.unwrap();
        let before = event_count(&db.pool).await;
        // Member 1: `fresh` (new) and `stale` (expected 0, at 1); member 2: `foreign` (another
        // organization's); member 3: `written` (new).
        let streams = [fresh, stale, foreign, written];
        let events = streams.len() * count;
        type Answer = (i32, String, Option<i32>, Option<i64>, Option<String>, Option<Uuid>, Option<Vec<i64>>);
        let answers: Vec<Answer> = sqlx::query_as(
            "select member, status, stream_index, stored_version, stored_type, stored_organization, first_versions \
             from ledger.append_group(array[2, 1, 1], array_fill('{\"actor\":\"sql\"}'::text, array[3]), \
                 array[null, null, null]::text[], array[null, null, null]::bytea[], \
                 array_fill($1::uuid, array[4]), array_fill('test_stream'::text, array[4]), $2, \
                 array[null, 0, null, 0]::int8[], array_fill($3::int4, array[4]), $4, $5, \
                 array_fill('Numbered'::text, array[$6::int4]), array_fill(1, array[$6::int4]), \
                 array_fill('{\"n\": 0}'::text, array[$6::int4])) order by member",
        )
        .bind(organization)
        .bind(streams.to_vec())
        .bind(count as i32)
        .bind(streams.iter().map(|id| lock_key(*id)).collect::<Vec<_>>())
        .bind((0..events).map(|_| Uuid::new_v4()).collect::<Vec<_>>())
        .bind(events as i32)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            answers,
            [
                (1, "refused".to_owned(), Some(2), Some(1), Some("test_stream".to_owned()), Some(organization), None),
                (2, "refused".to_owned(), Some(1), Some(2), Some("test_stream".to_owned()), Some(other), None),
                (3, "written".to_owned(), None, None, None, None, Some(vec![1])),
            ],
            "{count} event(s) a stream"
        );
        assert_eq!(event_count(&db.pool).await, before + count as i64, "only member 3's events");
        let fresh_rows: i64 = sqlx::query_scalar("select count(*) from ledger.events where stream_id = $1")
            .bind(fresh)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(fresh_rows, 0, "a refused member writes none of its streams");
    }
    let total = event_count(&db.pool).await as u64;
    all_intact(&store, total).await;
}

/// Kills every backend of `connection`'s database but its own: how many.
async fn kill_others(connection: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "select count(*) filter (where pg_terminate_backend(pid)) from pg_stat_activity \
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .fetch_one(connection)
    .await
    .unwrap()
}

/// The stream's last stored version, read again until a connection answers.
async fn stored_version(pool: &sqlx::PgPool, stream: Uuid) -> u64 {
    loop {
        let read: Result<i64, _> =
            sqlx::query_scalar("select coalesce(max(stream_version), 0) from ledger.events where stream_id = $1")
                .bind(stream)
                .fetch_one(pool)
                .await;
        if let Ok(version) = read {
            return u64::try_from(version).expect("versions are positive");
        }
    }
}

/// Connections killed under concurrent appends (a failover, an operator's
/// `pg_terminate_backend`), the groups' included: an append answered as written is in the
/// log, none is written twice, one answered with an error was written once or not at all,
/// and the appends after the kills are written (no dead connection is kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_killed_under_concurrent_appends_lose_nothing_and_double_nothing() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers = (0..12).map(|_| {
        let (store, pool, errors) = (store.clone(), db.pool.clone(), errors.clone());
        async move {
            let stream = Uuid::new_v4();
            let (mut version, mut sent) = (0, Vec::new());
            for _ in 0..30 {
                let request = numbered(organization, stream, ExpectedVersion::Exact(version), 1);
                let event_id = request.streams[0].events[0].event_id;
                match store.append(&request).await {
                    Ok(result) => {
                        assert_eq!(result.streams[0].version, version + 1);
                        sent.push((event_id, Some(result.positions[0])));
                        version += 1;
                    }
                    Err(StoreError::Database(_)) => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        sent.push((event_id, None));
                        version = stored_version(&pool, stream).await;
                    }
                    Err(other) => panic!("an append refused as {other:?}: the writer read its version wrong"),
                }
            }
            (stream, sent)
        }
    });
    let killer = {
        let (writing, errors) = (writing.clone(), errors.clone());
        let mut connection = db.connect().await;
        async move {
            let mut kills = 0;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                kills += kill_others(&mut connection).await;
                // Kill only until appends have failed: a pause lets groups form again.
                let pause = if errors.load(std::sync::atomic::Ordering::Relaxed) > 5 { 50 } else { 3 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            kills
        }
    };
    let (written, kills) = tokio::join!(
        async {
            let written = join_all(writers).await;
            writing.store(false, std::sync::atomic::Ordering::Relaxed);
            written
        },
        killer
    );
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    assert!(kills > 0 && errors > 0, "{kills} backends killed, {errors} appends failed: the kills did not bite");
    // A connection killed in the last round and not used since is found dead only on its
    // next use, unless it has been idle long enough to be checked first (the store's and the
    // pool's rule, `UNCHECKED_IDLE_MAX`): past that, the appends below must all be written.
    tokio::time::sleep(ledger_store::UNCHECKED_IDLE_MAX + Duration::from_millis(100)).await;
    for (stream, sent) in &written {
        let stored: Vec<(i64, Uuid)> = sqlx::query_as(
            "select global_position, event_id from ledger.events where stream_id = $1 order by stream_version",
        )
        .bind(stream)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let stored_ids: Vec<Uuid> = stored.iter().map(|(_, id)| *id).collect();
        for (event_id, position) in sent {
            let copies = stored_ids.iter().filter(|id| *id == event_id).count();
            match position {
                Some(position) => {
                    assert_eq!(copies, 1, "an append answered as written is in the log once");
                    assert!(stored.contains(&(*position, *event_id)), "at the position it was answered with");
                }
                None => assert!(copies <= 1, "an append that failed is in the log once at most"),
            }
        }
        assert!(stored_ids.iter().all(|id| sent.iter().any(|(event_id, _)| event_id == id)));
        // After the kills: the next append is written.
        let version = stored_version(&db.pool, *stream).await;
        store.append(&numbered(organization, *stream, ExpectedVersion::Exact(version), 1)).await.unwrap();
    }
    let total = event_count(&db.pool).await as u64;
    all_intact(&store, total).await;
}

/// Kills every other backend of the test's database.
async fn kill_connections(db: &TestDatabase) -> i64 {
    kill_others(&mut db.connect().await).await
}

/// A single writer's appends go alone, one after another on the connection the one before
/// used. When that connection was closed under it: after more than a second idle it is
/// checked and replaced before use (the append is written); within the second, the append
/// fails with a database error or is written, and the next one is written on a new
/// connection. Nothing is written twice.
#[tokio::test]
async fn a_single_writers_connection_killed_between_appends_is_replaced() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (organization, stream) = (Uuid::new_v4(), Uuid::new_v4());
    store.append(&numbered(organization, stream, ExpectedVersion::NoStream, 1)).await.unwrap();
    assert!(kill_connections(&db).await > 0);
    tokio::time::sleep(ledger_store::UNCHECKED_IDLE_MAX + Duration::from_millis(100)).await;
    store.append(&numbered(organization, stream, ExpectedVersion::Exact(1), 1)).await.unwrap();
    assert!(kill_connections(&db).await > 0);
    let mut version = 2;
    match store.append(&numbered(organization, stream, ExpectedVersion::Exact(version), 1)).await {
        Ok(_) => version += 1,
        Err(StoreError::Database(_)) => version = stored_version(&db.pool, stream).await,
        Err(other) => panic!("{other:?}"),
    }
    store.append(&numbered(organization, stream, ExpectedVersion::Exact(version), 1)).await.unwrap();
    assert_eq!(stored_version(&db.pool, stream).await, version + 1);
    let events = event_count(&db.pool).await;
    assert_eq!(events, version as i64 + 1);
    all_intact(&store, events as u64).await;
}
