//! The log cannot be changed, not even by its owner, and the writer role cannot try.

use futures_util::StreamExt as _;
use ledger_store::ExpectedVersion;
use ledger_store::testkit::TestDatabase;
use uuid::Uuid;

use crate::{event_count, numbered};

async fn seeded() -> TestDatabase {
    let db = TestDatabase::new().await;
    db.store().append(&numbered(Uuid::new_v4(), Uuid::new_v4(), ExpectedVersion::NoStream, 3)).await.unwrap();
    db
}

#[tokio::test]
async fn update_delete_and_truncate_fail_even_for_the_owner() {
    let db = seeded().await;
    let owner: bool = sqlx::query_scalar(
        "select pg_get_userbyid(relowner) = current_user from pg_class where oid = 'ledger.events'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(owner, "these statements run as the table's owner");

    for statement in [
        "update ledger.events set payload = '{\"n\": 99}' where stream_version = 2",
        "delete from ledger.events where stream_version = 2",
        "truncate ledger.events",
        "truncate ledger.events cascade",
    ] {
        let error = sqlx::query(statement).execute(&db.pool).await.unwrap_err();
        assert!(error.to_string().contains("append-only"), "{statement}: {error}");
    }
    assert_eq!(event_count(&db.pool).await, 3);
}

#[tokio::test]
async fn the_writer_role_may_insert_and_select_and_nothing_else() {
    let db = seeded().await;
    for (role, privilege, expected) in [
        ("ledger_writer", "INSERT", true),
        ("ledger_writer", "SELECT", true),
        ("ledger_writer", "UPDATE", false),
        ("ledger_writer", "DELETE", false),
        ("ledger_writer", "TRUNCATE", false),
        ("ledger_projector", "INSERT", false),
        ("ledger_projector", "SELECT", true),
        ("ledger_auditor", "SELECT", true),
        ("ledger_auditor", "INSERT", false),
        ("ledger_auditor", "UPDATE", false),
    ] {
        let granted: bool = sqlx::query_scalar("select has_table_privilege($1, 'ledger.events', $2)")
            .bind(role)
            .bind(privilege)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(granted, expected, "{role} {privilege}");
    }

    let mut connection = db.connect().await;
    sqlx::query("set role ledger_writer").execute(&mut connection).await.unwrap();
    let error = sqlx::query("update ledger.events set metadata = '{}'").execute(&mut connection).await.unwrap_err();
    assert!(error.to_string().contains("permission denied"), "{error}");
    let error = sqlx::query("delete from ledger.events").execute(&mut connection).await.unwrap_err();
    assert!(error.to_string().contains("permission denied"), "{error}");
    assert_eq!(event_count(&db.pool).await, 3);
}

#[tokio::test]
async fn the_writer_role_can_append_through_the_store() {
    let db = TestDatabase::new().await;
    // A pool whose every connection acts as ledger_writer.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .after_connect(|connection, _| {
            Box::pin(async move {
                sqlx::query("set role ledger_writer").execute(connection).await?;
                Ok(())
            })
        })
        .connect(db.url())
        .await
        .unwrap();
    let store = ledger_store::EventStore::new(pool);
    let (organization, stream_id) = (Uuid::new_v4(), Uuid::new_v4());
    let request = numbered(organization, stream_id, ExpectedVersion::NoStream, 2).with_idempotency_key("w");
    store.append(&request).await.unwrap();
    assert!(store.append(&request).await.unwrap().replayed);
    // The database's chain check finds the stream's head as the writer sees it, by INSERT
    // and by COPY.
    store.append(&numbered(organization, stream_id, ExpectedVersion::Exact(2), 1)).await.unwrap();
    store
        .append(&numbered(organization, stream_id, ExpectedVersion::Exact(3), ledger_store::COPY_ROWS_MIN))
        .await
        .unwrap();
    // PostgreSQL refuses COPY into a table whose row-level security applies to the role:
    // as the writer, large appends INSERT instead, streamed ones several statements of 4 MB.
    let blob = "x".repeat(512 * 1024);
    let events = futures_util::stream::iter(0..20).map(move |n| {
        Ok::<_, ledger_store::StoreError>(crate::event("Chunk", serde_json::json!({ "n": n, "blob": blob })))
    });
    let streamed = ledger_store::StreamedAppend {
        organization_id: organization,
        stream_type: "test_stream".to_owned(),
        stream_id,
        expected_version: ExpectedVersion::Exact(3 + ledger_store::COPY_ROWS_MIN as u64),
        metadata: ledger_store::Metadata::by("tester"),
        idempotency_key: None,
        fingerprint: None,
    };
    let result = store.append_streamed(&streamed, events).await.unwrap();
    assert_eq!(result.streams[0].version, 23 + ledger_store::COPY_ROWS_MIN as u64);
    assert_eq!(event_count(&db.pool).await, 23 + ledger_store::COPY_ROWS_MIN as i64);
    let report = db.store().verify_all().await.unwrap();
    assert_eq!((report.events_checked, report.is_intact()), (23 + ledger_store::COPY_ROWS_MIN as u64, true));
}

/// A row written by hand: `overrides` replace the chained defaults (a reserved position, the
/// transaction's time and id, the link to the previous event, the hash `ledger.event_hash`
/// gives).
async fn insert_by_hand<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    stream_id: Uuid,
    version: i64,
    overrides: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    let defaults = [
        ("global_position", "nextval('ledger.events_global_position_seq')"),
        ("recorded_at", "now()"),
        ("transaction_id", "ledger.current_transaction_id()"),
        ("prev_hash", "(select hash from ledger.events where stream_id = $3 and stream_version = $4 - 1)"),
        ("forged_hash", "null::bytea"),
    ];
    let chosen: Vec<String> = defaults
        .iter()
        .map(|(column, default)| {
            let expression = overrides.iter().find(|(name, _)| name == column).map_or(*default, |(_, value)| *value);
            format!("{expression} as {column}")
        })
        .collect();
    sqlx::query(&format!(
        "insert into ledger.events (global_position, event_id, organization_id, stream_type, stream_id, stream_version, \
             event_type, schema_version, payload, metadata, recorded_at, transaction_id, prev_hash, hash) \
         select global_position, event_id, organization_id, stream_type, stream_id, stream_version, event_type, \
             schema_version, payload, metadata, recorded_at, transaction_id, prev_hash, \
             coalesce(forged_hash, ledger.event_hash(prev_hash, global_position, event_id, organization_id, stream_type, \
                 stream_id, stream_version, event_type, schema_version, payload, metadata, recorded_at)) \
         from (select $1::uuid as event_id, $2::uuid as organization_id, 'test_stream' as stream_type, $3::uuid as stream_id, \
                   $4::int8 as stream_version, 'ByHand' as event_type, 1 as schema_version, '{{}}'::jsonb as payload, \
                   '{{}}'::jsonb as metadata, {}) by_hand",
        chosen.join(", ")
    ))
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(stream_id)
    .bind(version)
    .execute(executor)
    .await
    .map(|_| ())
}

/// Every inserting statement is checked as a whole: a wrong hash, link, time, transaction,
/// position or version fails it, whoever wrote it, and nothing of it is stored.
#[tokio::test]
async fn a_client_cannot_write_a_wrong_chain_time_or_position() {
    let db = TestDatabase::new().await;
    let stream_id = Uuid::new_v4();
    insert_by_hand(&db.pool, stream_id, 1, &[]).await.unwrap();
    assert_eq!(db.store().read_stream(stream_id, 1).await.unwrap().len(), 1);
    assert!(db.store().verify_all().await.unwrap().is_intact());

    let refused = [
        (2, ("forged_hash", "'\\x00'::bytea"), "hash must be ledger.event_hash"),
        (2, ("forged_hash", "sha256('someone else')"), "hash must be ledger.event_hash"),
        (2, ("recorded_at", "timestamptz '2001-01-01'"), "recorded_at must be the writing transaction's time"),
        (2, ("transaction_id", "'1'::xid8"), "transaction_id must be ledger.current_transaction_id()"),
        (2, ("prev_hash", "sha256('another link')"), "prev_hash must be the hash of the stream's previous event"),
        (2, ("prev_hash", "null::bytea"), "prev_hash must be the hash of the stream's previous event"),
        (2, ("global_position", "0"), "must come after its previous event's"),
        (
            2,
            ("global_position", "(select last_value + 1000 from ledger.events_global_position_seq)"),
            "was not reserved",
        ),
        (3, ("recorded_at", "now()"), "versions must be contiguous"),
    ];
    for (version, field, problem) in refused {
        let error = insert_by_hand(&db.pool, stream_id, version, &[field]).await.unwrap_err();
        assert!(error.to_string().contains(problem), "{field:?}: {error}");
        assert_eq!(error.as_database_error().and_then(|error| error.code()).as_deref(), Some("23514"), "{field:?}");
    }
    assert_eq!(event_count(&db.pool).await, 1, "nothing refused was stored");
    insert_by_hand(&db.pool, stream_id, 2, &[]).await.unwrap();
    assert!(db.store().verify_all().await.unwrap().is_intact());
}

/// Stages a stream's next event in `staged` (a copy of the log's columns), chained after the
/// stream's previous event whether that is staged or stored, hashed by `ledger.event_hash`.
async fn stage(
    connection: &mut sqlx::PgConnection,
    organization_id: Uuid,
    stream_id: Uuid,
    version: i64,
    payload: &str,
) {
    sqlx::query(
        "insert into staged (global_position, transaction_id, event_id, organization_id, stream_type, stream_id, \
             stream_version, event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash) \
         select position, ledger.current_transaction_id(), event_id, $1, 'test_stream', $2, $3, 'ByHand', 1, $4::jsonb, \
             '{\"actor\": \"tester\"}'::jsonb, now(), previous, \
             ledger.event_hash(previous, position, event_id, $1, 'test_stream', $2, $3, 'ByHand', 1, $4::jsonb, \
                 '{\"actor\": \"tester\"}'::jsonb, now()) \
         from (select nextval('ledger.events_global_position_seq') as position, gen_random_uuid() as event_id, \
             coalesce((select hash from staged where stream_id = $2 and stream_version = $3 - 1), \
                      (select hash from ledger.events where stream_id = $2 and stream_version = $3 - 1)) as previous) next",
    )
    .bind(organization_id)
    .bind(stream_id)
    .bind(version)
    .bind(payload)
    .execute(connection)
    .await
    .unwrap();
}

/// A statement of many rows, several to a stream, is checked row by row: each row against the
/// one before it in its stream, whether the statement wrote that one too or an earlier one
/// did, in whatever order the statement lists them; the first wrong row (by position) is
/// named and nothing of the statement is stored.
#[tokio::test]
async fn a_statement_of_many_rows_is_checked_against_its_own_rows_and_the_stored_ones() {
    let db = TestDatabase::new().await;
    let organization_id = Uuid::new_v4();
    let (stored, fresh) = (Uuid::new_v4(), Uuid::new_v4());
    insert_by_hand(&db.pool, stored, 1, &[]).await.unwrap();
    let mut connection = db.connect().await;
    sqlx::query("begin").execute(&mut connection).await.unwrap();
    sqlx::query("create temp table staged on commit drop as select * from ledger.events limit 0")
        .execute(&mut connection)
        .await
        .unwrap();
    // Payloads whose text jsonb writes its own way (key order, numbers' scale, escapes).
    let payloads = [
        r#"{"n": 1.000, "a": "Zoë \"Q\" 🎉\\n"}"#,
        r#"{"net": {"amount": "3000.10", "currency": {"code": "JPY", "scale": 0}}, "list": [1e3, -0.0, null]}"#,
        r#"{"nested": {"b": 2, "a": 1}, "tab": "a\tb"}"#,
    ];
    for (n, payload) in payloads.iter().enumerate() {
        stage(&mut connection, organization_id, stored, n as i64 + 2, payload).await;
        stage(&mut connection, organization_id, fresh, n as i64 + 1, payload).await;
    }
    let columns = "global_position, transaction_id, event_id, organization_id, stream_type, stream_id, stream_version, \
                   event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash";
    let refused = [
        ("delete from attempt where stream_id = $2 and stream_version = 2", "has no version 2 to follow"),
        (
            "update attempt set prev_hash = sha256('another link') where stream_id = $1 and stream_version = 3",
            "event 3 of stream {stored}: prev_hash must be",
        ),
        (
            "update attempt set prev_hash = sha256('nothing') where stream_id = $2 and stream_version = 1",
            "event 1 of stream {fresh}: prev_hash must be",
        ),
        (
            // The link is right, the linked row's hash is not its own.
            "update attempt set hash = case stream_version when 3 then sha256('forged') else hash end, \
                 prev_hash = case stream_version when 4 then sha256('forged') else prev_hash end \
             where stream_id = $1",
            "event 3 of stream {stored}: hash must be ledger.event_hash",
        ),
        (
            "update attempt a set global_position = (select sum(global_position) from attempt b \
                 where b.stream_id = a.stream_id and b.stream_version in (2, 3)) - a.global_position \
             where stream_id = $2 and stream_version in (2, 3)",
            "event 3 of stream {fresh}: global_position",
        ),
        (
            "update attempt set recorded_at = recorded_at - interval '1 second' where stream_id = $2 and stream_version = 3",
            "event 3 of stream {fresh}: recorded_at must be",
        ),
        (
            "update attempt set payload = payload || '{\"n\": 2}' where stream_id = $1 and stream_version = 2",
            "event 2 of stream {stored}: hash must be ledger.event_hash",
        ),
    ];
    for (tamper, problem) in refused {
        let problem = problem.replace("{stored}", &stored.to_string()).replace("{fresh}", &fresh.to_string());
        for order in ["global_position", "global_position desc", "stream_id, stream_version desc"] {
            sqlx::query("savepoint attempt").execute(&mut connection).await.unwrap();
            sqlx::query("create temp table attempt as select * from staged").execute(&mut connection).await.unwrap();
            sqlx::query(tamper).bind(stored).bind(fresh).execute(&mut connection).await.unwrap();
            let error = sqlx::query(&format!(
                "insert into ledger.events ({columns}) select {columns} from attempt order by {order}"
            ))
            .execute(&mut connection)
            .await
            .unwrap_err();
            assert!(error.to_string().contains(&problem), "{tamper} ({order}): {error}");
            assert_eq!(error.as_database_error().and_then(|error| error.code()).as_deref(), Some("23514"), "{tamper}");
            sqlx::query("rollback to savepoint attempt").execute(&mut connection).await.unwrap();
        }
    }
    // Untouched, listed newest first: taken whole.
    let written = sqlx::query(&format!(
        "insert into ledger.events ({columns}) select {columns} from staged order by global_position desc"
    ))
    .execute(&mut connection)
    .await
    .unwrap();
    assert_eq!(written.rows_affected(), 6);
    sqlx::query("commit").execute(&mut connection).await.unwrap();
    assert_eq!(event_count(&db.pool).await, 7);
    let report = db.store().verify_all().await.unwrap();
    assert!(report.is_intact() && report.events_checked == 7, "{report:?}");
}

/// The append functions chain their rows themselves and run as `ledger_appender`, the one role
/// whose inserts the check skips: no writer can become it, and a writer's own INSERT is checked
/// as the owner's is.
#[tokio::test]
async fn only_the_append_functions_role_is_trusted_with_the_chain() {
    let db = TestDatabase::new().await;
    let stream_id = Uuid::new_v4();
    insert_by_hand(&db.pool, stream_id, 1, &[]).await.unwrap();

    // A login of the writer's (SET ROLE is checked against the login, so not a superuser's).
    let login = format!("ledger_test_writer_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("create role {login} login in role ledger_writer")).execute(&db.pool).await.unwrap();
    let options: sqlx::postgres::PgConnectOptions = db.url().parse().unwrap();
    let mut writer = sqlx::ConnectOptions::connect(&options.username(&login)).await.unwrap();
    let error = insert_by_hand(&mut writer, stream_id, 2, &[("forged_hash", "sha256('forged')")]).await.unwrap_err();
    assert!(error.to_string().contains("hash must be ledger.event_hash"), "{error}");
    let error = sqlx::query("set role ledger_appender").execute(&mut writer).await.unwrap_err();
    assert!(error.to_string().contains("permission denied to set role"), "{error}");
    let outcome = crate::statement::append_by_sql(&mut writer, Uuid::new_v4(), Uuid::new_v4(), Some(0), 1).await;
    assert_eq!(outcome.status, "written", "the writer's login appends through the function");
    sqlx::Connection::close(writer).await.unwrap();
    sqlx::query(&format!("drop role {login}")).execute(&db.pool).await.unwrap();
    let members: Vec<String> = sqlx::query_scalar(
        "select pg_get_userbyid(m.member)::text from pg_auth_members m where m.roleid = 'ledger_appender'::regrole",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(members.is_empty(), "no role is a member of ledger_appender: {members:?}");
    let owners: Vec<(String, String, bool)> = sqlx::query_as(
        "select p.proname::text, pg_get_userbyid(p.proowner)::text, p.prosecdef from pg_proc p \
         where p.pronamespace = 'ledger'::regnamespace and p.proname in ('append', 'append_group') order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        owners,
        [("append".into(), "ledger_appender".into(), true), ("append_group".into(), "ledger_appender".into(), true)]
    );

    // The exemption is that role's alone: a forged row inserted as it (here by a superuser)
    // passes the trigger, and the verifier still finds it.
    let mut superuser = db.connect().await;
    sqlx::query("set role ledger_appender").execute(&mut superuser).await.unwrap();
    insert_by_hand(&mut superuser, stream_id, 2, &[("forged_hash", "sha256('forged')")]).await.unwrap();
    let report = db.store().verify_all().await.unwrap();
    assert!(!report.is_intact(), "{report:?}");
    assert_eq!(report.breaks[0].stream_version, 2, "{report:?}");
}

/// What `ledger.access_problems()` checks of the append functions, and `ensure_access` makes
/// again: their owner (a restore with --no-owner drops it) and who may call them.
#[tokio::test]
async fn the_append_functions_access_is_checked_and_repaired() {
    let db = TestDatabase::new().await;
    let problems = || async { ledger_store::cluster::access_problems(&db.pool).await.unwrap() };
    assert_eq!(problems().await, Vec::<String>::new());
    let pool = &db.pool;
    let broken = |statements: &'static [&'static str]| async move {
        for statement in statements {
            sqlx::query(statement).execute(pool).await.unwrap();
        }
    };
    broken(&[
        "alter function ledger.append owner to current_user",
        "grant execute on function ledger.append to ledger_api_reader",
        "grant execute on function ledger.append_group to public",
        "drop policy appender on ledger.events",
    ])
    .await;
    assert_eq!(
        problems().await,
        [
            "policy appender on ledger.events is missing",
            "function ledger.append is not a security definer owned by ledger_appender",
            "role ledger_api_reader may execute ledger.append",
            "PUBLIC may execute ledger.append_group",
            "role ledger_projector may execute ledger.append_group",
            "role ledger_auditor may execute ledger.append_group",
            "role ledger_api_reader may execute ledger.append_group",
        ]
    );
    let repaired: i32 = sqlx::query_scalar("select ledger.ensure_access()").fetch_one(&db.pool).await.unwrap();
    assert_eq!(repaired, 7);
    assert_eq!(problems().await, Vec::<String>::new());
    broken(&["revoke execute on function ledger.append_group from ledger_writer"]).await;
    assert_eq!(problems().await, ["role ledger_writer lacks EXECUTE on ledger.append_group"]);
    let repaired: i32 = sqlx::query_scalar("select ledger.ensure_access()").fetch_one(&db.pool).await.unwrap();
    assert_eq!(repaired, 1);
    assert_eq!(problems().await, Vec::<String>::new());
    let mut writer = db.connect().await;
    sqlx::query("set role ledger_writer").execute(&mut writer).await.unwrap();
    let outcome = crate::statement::append_by_sql(&mut writer, Uuid::new_v4(), Uuid::new_v4(), Some(0), 1).await;
    assert_eq!(outcome.status, "written");
    assert!(db.store().verify_all().await.unwrap().is_intact());
}
