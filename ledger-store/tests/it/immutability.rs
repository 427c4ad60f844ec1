//! The log cannot be changed, not even by its owner, and the writer role cannot try.

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
    let request = numbered(Uuid::new_v4(), Uuid::new_v4(), ExpectedVersion::NoStream, 2).with_idempotency_key("w");
    store.append(&request).await.unwrap();
    assert!(store.append(&request).await.unwrap().replayed);
    assert_eq!(event_count(&db.pool).await, 2);
}

#[tokio::test]
async fn a_client_cannot_write_its_own_hash_or_time() {
    let db = TestDatabase::new().await;
    let stream_id = Uuid::new_v4();
    sqlx::query(
        "insert into ledger.events (event_id, organization_id, stream_type, stream_id, stream_version, event_type, schema_version, payload, metadata, recorded_at, hash) \
         values ($1, $2, 'test_stream', $3, 1, 'Forged', 1, '{}', '{}', '2001-01-01', '\\x00')",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(stream_id)
    .execute(&db.pool)
    .await
    .unwrap();
    let event = db.store().read_stream(stream_id, 1).await.unwrap().remove(0);
    assert_eq!(event.hash.len(), 32);
    assert!(event.recorded_at.timestamp() > 1_700_000_000, "the database's clock is used: {}", event.recorded_at);
    assert!(db.store().verify_all().await.unwrap().is_intact());

    let gap = sqlx::query(
        "insert into ledger.events (event_id, organization_id, stream_type, stream_id, stream_version, event_type, schema_version, payload, metadata) \
         values ($1, $2, 'test_stream', $3, 3, 'Gap', 1, '{}', '{}')",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(stream_id)
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(gap.to_string().contains("contiguous"), "{gap}");
}
