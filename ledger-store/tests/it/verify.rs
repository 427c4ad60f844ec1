//! Tamper evidence: the verifier recomputes every chain and names the first bad event.

use ledger_store::testkit::TestDatabase;
use ledger_store::{BreakKind, ExpectedVersion};
use uuid::Uuid;

use crate::numbered;

/// Three streams of five events each.
async fn seeded() -> (TestDatabase, Vec<Uuid>) {
    let db = TestDatabase::new().await;
    let organization = Uuid::new_v4();
    let streams: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for stream_id in &streams {
        db.store().append(&numbered(organization, *stream_id, ExpectedVersion::NoStream, 5)).await.unwrap();
    }
    (db, streams)
}

/// As superuser: switch off the append-only guard, run `statement`, switch it back on.
async fn tamper(db: &TestDatabase, statement: &str, stream_id: Uuid) {
    sqlx::query("alter table ledger.events disable trigger events_no_update_delete").execute(&db.pool).await.unwrap();
    let changed = sqlx::query(statement).bind(stream_id).execute(&db.pool).await.unwrap().rows_affected();
    assert_eq!(changed, 1);
    sqlx::query("alter table ledger.events enable trigger events_no_update_delete").execute(&db.pool).await.unwrap();
}

async fn position_of(db: &TestDatabase, stream_id: Uuid, version: i64) -> i64 {
    sqlx::query_scalar("select global_position from ledger.events where stream_id = $1 and stream_version = $2")
        .bind(stream_id)
        .bind(version)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_untouched_log_is_intact_with_counts() {
    let (db, streams) = seeded().await;
    let report = db.store().verify_all().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.streams_checked, report.events_checked), (3, 15));
    let one = db.store().verify_stream(streams[1]).await.unwrap();
    assert_eq!((one.streams_checked, one.events_checked), (1, 5));
}

#[tokio::test]
async fn a_changed_payload_is_named_exactly() {
    let (db, streams) = seeded().await;
    let target = streams[1];
    tamper(
        &db,
        "update ledger.events set payload = '{\"n\": 1000000}' where stream_id = $1 and stream_version = 3",
        target,
    )
    .await;

    let report = db.store().verify_all().await.unwrap();
    assert_eq!(report.breaks.len(), 1, "{report:?}");
    let chain_break = report.first_break().unwrap();
    assert_eq!((chain_break.stream_id, chain_break.stream_version), (target, 3));
    assert_eq!(chain_break.global_position, position_of(&db, target, 3).await);
    assert_eq!(chain_break.kind, BreakKind::HashMismatch);
    assert!(!db.store().verify_stream(target).await.unwrap().is_intact());
    assert!(db.store().verify_stream(streams[0]).await.unwrap().is_intact());
}

#[tokio::test]
async fn a_changed_actor_in_metadata_is_caught() {
    let (db, streams) = seeded().await;
    tamper(&db, "update ledger.events set metadata = '{\"actor\": \"someone else\"}' where stream_id = $1 and stream_version = 1", streams[2])
        .await;
    let report = db.store().verify_all().await.unwrap();
    let chain_break = report.first_break().unwrap();
    assert_eq!(
        (chain_break.stream_id, chain_break.stream_version, &chain_break.kind),
        (streams[2], 1, &BreakKind::HashMismatch)
    );
}

#[tokio::test]
async fn an_event_deleted_from_the_middle_of_a_stream_is_caught() {
    let (db, streams) = seeded().await;
    let target = streams[0];
    let next_position = position_of(&db, target, 4).await;
    tamper(&db, "delete from ledger.events where stream_id = $1 and stream_version = 3", target).await;

    let report = db.store().verify_all().await.unwrap();
    assert_eq!(report.breaks.len(), 1, "{report:?}");
    let chain_break = report.first_break().unwrap();
    assert_eq!(
        (chain_break.stream_id, chain_break.stream_version, chain_break.global_position),
        (target, 4, next_position)
    );
    assert_eq!(chain_break.kind, BreakKind::MissingVersion { expected_version: 3 });
}

#[tokio::test]
async fn a_rewritten_hash_breaks_the_link_to_the_next_event() {
    let (db, streams) = seeded().await;
    let target = streams[1];
    tamper(&db, "update ledger.events set hash = sha256('forged') where stream_id = $1 and stream_version = 2", target)
        .await;
    let report = db.store().verify_all().await.unwrap();
    let chain_break = report.first_break().unwrap();
    assert_eq!(
        (chain_break.stream_id, chain_break.stream_version, &chain_break.kind),
        (target, 2, &BreakKind::HashMismatch)
    );
}
