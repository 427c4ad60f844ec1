//! The cluster's era, checked once per run of the cluster (`ledger.check_era`) and trusted
//! only while that run and the era last checked hold.

use ledger_store::ExpectedVersion;
use ledger_store::testkit::TestDatabase;
use sqlx::PgPool;
use uuid::Uuid;

use crate::numbered;

async fn offset(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("select ledger.current_era_offset()::text").fetch_one(pool).await
}

/// Appends an event and checks that it was stored with this cluster's id of the transaction
/// that wrote it plus `offset` (the id lies between one taken before and one taken after).
async fn assert_appended_with_offset(db: &TestDatabase, offset: &str) {
    let xid = "select pg_current_xact_id()::text::bigint";
    let before: i64 = sqlx::query_scalar(xid).fetch_one(&db.pool).await.unwrap();
    db.store().append(&numbered(Uuid::new_v4(), Uuid::new_v4(), ExpectedVersion::NoStream, 1)).await.unwrap();
    let after: i64 = sqlx::query_scalar(xid).fetch_one(&db.pool).await.unwrap();
    let own_id: i64 = sqlx::query_scalar(
        "select (transaction_id::text::numeric - $1::numeric)::bigint from ledger.events order by global_position desc limit 1",
    )
    .bind(offset)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(before < own_id && own_id < after, "{before} < {own_id} < {after} (offset {offset})");
}

#[tokio::test]
async fn a_start_records_the_era_check_for_this_run_of_the_cluster() {
    let db = TestDatabase::new().await;
    let (era, recorded_run): (i32, bool) =
        sqlx::query_as("select era, postmaster_started = pg_postmaster_start_time() from ledger.era_checked")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let latest: i32 = sqlx::query_scalar("select max(era) from ledger.eras").fetch_one(&db.pool).await.unwrap();
    assert_eq!((era, recorded_run), (latest, true));
    assert_eq!(offset(&db.pool).await.unwrap(), "0");
    assert_appended_with_offset(&db, "0").await;
    // Readiness checks record nothing more while the record holds.
    for _ in 0..3 {
        assert_eq!(ledger_store::cluster::era_problem(&db.pool).await.unwrap(), None);
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from ledger.era_checked").fetch_one(&db.pool).await.unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn a_record_of_another_run_or_an_older_era_is_not_trusted() {
    let db = TestDatabase::new().await;
    // A record carried in by a dump of another cluster: another run, an offset of its own.
    sqlx::query("delete from ledger.era_checked").execute(&db.pool).await.unwrap();
    sqlx::query(
        "insert into ledger.era_checked values (pg_postmaster_start_time() - interval '1 day', \
         (select max(era) from ledger.eras), 123456)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(offset(&db.pool).await.unwrap(), "0", "the whole check answers");
    assert_appended_with_offset(&db, "0").await;

    // This run's record, but the database is then as if restored from another cluster: the
    // latest era is no longer the one checked, and nothing may be written.
    sqlx::query("select ledger.check_era()").execute(&db.pool).await.unwrap();
    sqlx::query("insert into ledger.eras (era, system_identifier, xid_offset, first_position) values (7, 1, 5000, 0)")
        .execute(&db.pool)
        .await
        .unwrap();
    let error = offset(&db.pool).await.unwrap_err();
    assert!(error.to_string().contains("has not begun its era"), "{error}");
    let problem = ledger_store::cluster::era_problem(&db.pool).await.unwrap();
    assert!(problem.unwrap().contains("has not begun its era"));
    let refused = db.store().append(&numbered(Uuid::new_v4(), Uuid::new_v4(), ExpectedVersion::NoStream, 1)).await;
    assert!(refused.is_err(), "{refused:?}");

    // The next start begins an era here, records it, and appends write in it.
    let (era, begun) = ledger_store::cluster::begin_era(&db.pool).await.unwrap();
    assert_eq!((era, begun), (8, true));
    let era_offset: String =
        sqlx::query_scalar("select xid_offset::text from ledger.eras where era = 8").fetch_one(&db.pool).await.unwrap();
    let recorded: (i32, String) =
        sqlx::query_as("select era, xid_offset::text from ledger.era_checked").fetch_one(&db.pool).await.unwrap();
    assert_eq!(recorded, (8, era_offset.clone()));
    assert_eq!(offset(&db.pool).await.unwrap(), era_offset);
    assert_appended_with_offset(&db, &era_offset).await;
}

#[tokio::test]
async fn no_login_but_the_owner_may_write_the_record() {
    let db = TestDatabase::new().await;
    let mut connection = db.connect().await;
    for role in ["ledger_writer", "ledger_appender", "ledger_projector", "ledger_auditor", "ledger_api_reader"] {
        sqlx::query(&format!("set role {role}")).execute(&mut connection).await.unwrap();
        for statement in [
            "insert into ledger.era_checked values (pg_postmaster_start_time() + interval '1 s', 1, 99)",
            "update ledger.era_checked set xid_offset = 99",
            "delete from ledger.era_checked",
        ] {
            let error = sqlx::query(statement).execute(&mut connection).await.unwrap_err();
            assert!(error.to_string().contains("permission denied"), "{role}: {statement}: {error}");
        }
        // What any of them may do is ask for the whole check, which records only its answer.
        let era: i32 = sqlx::query_scalar("select ledger.check_era()").fetch_one(&mut connection).await.unwrap();
        assert_eq!(era, 1, "{role}");
        sqlx::query("reset role").execute(&mut connection).await.unwrap();
    }
    let recorded: (bool, i32, String) = sqlx::query_as(
        "select postmaster_started = pg_postmaster_start_time(), era, xid_offset::text from ledger.era_checked",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(recorded, (true, 1, "0".to_owned()));
}

/// `ledger.append_one` reads the record as ledger_appender: the grant it needs is checked and
/// repaired with the rest of the ledger's access.
#[tokio::test]
async fn the_appenders_read_of_the_record_is_checked_and_repaired() {
    let db = TestDatabase::new().await;
    let problems = || async { ledger_store::cluster::access_problems(&db.pool).await.unwrap() };
    assert_eq!(problems().await, Vec::<String>::new());
    sqlx::query("revoke select on ledger.era_checked from ledger_appender").execute(&db.pool).await.unwrap();
    assert_eq!(problems().await, ["role ledger_appender lacks SELECT on ledger.eras and ledger.era_checked"]);
    // Until it is repaired a one-event append is refused, and writes nothing.
    let one = || numbered(Uuid::new_v4(), Uuid::new_v4(), ExpectedVersion::NoStream, 1);
    let error = db.store().append(&one()).await.unwrap_err();
    assert!(error.to_string().contains("permission denied"), "{error}");
    assert_eq!(crate::event_count(&db.pool).await, 0);
    let repaired: i32 = sqlx::query_scalar("select ledger.ensure_access()").fetch_one(&db.pool).await.unwrap();
    assert_eq!(repaired, 1);
    assert_eq!(problems().await, Vec::<String>::new());
    db.store().append(&one()).await.unwrap();
    assert_eq!(crate::event_count(&db.pool).await, 1);
}

/// Readiness checks of several servers at once after PostgreSQL restarted: every one answers,
/// and one record is left.
#[tokio::test]
async fn checks_at_once_all_answer_and_record_once() {
    let db = TestDatabase::new().await;
    sqlx::query("delete from ledger.era_checked").execute(&db.pool).await.unwrap();
    let checks = (0..8).map(|_| {
        let pool = db.pool.clone();
        tokio::spawn(async move { ledger_store::cluster::era_problem(&pool).await.unwrap() })
    });
    for check in checks {
        assert_eq!(check.await.unwrap(), None);
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from ledger.era_checked").fetch_one(&db.pool).await.unwrap();
    assert_eq!(rows, 1);
}
