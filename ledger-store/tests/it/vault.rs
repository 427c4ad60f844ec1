//! Personal data sealed per subject: what the log stores, opening, erasure with the append,
//! the master key check.

use ledger_store::testkit::TestDatabase;
use ledger_store::vault::{MasterKey, PersonalDataPolicy, Vault};
use ledger_store::{AppendRequest, EventStore, ExpectedVersion, Metadata, StoreError, StreamAppend, VerifyScope};
use serde_json::json;
use uuid::Uuid;

use crate::event;

const POLICY: PersonalDataPolicy = PersonalDataPolicy {
    sealed: &[("person", "Joined", "personal"), ("person", "Joined", "note")],
    erasures: &[("person", "Forgotten")],
};

fn person(
    organization: Uuid,
    id: Uuid,
    expected: ExpectedVersion,
    events: Vec<ledger_store::NewEvent>,
) -> AppendRequest {
    let stream = StreamAppend {
        organization_id: organization,
        stream_type: "person".to_owned(),
        stream_id: id,
        expected_version: expected,
        events,
    };
    AppendRequest::single(stream, Metadata::by("tester"))
}

fn joined(name: &str) -> ledger_store::NewEvent {
    event(
        "Joined",
        json!({ "personal": { "full_name": name, "email": format!("{name}@example.com") }, "note": null, "grade": 7 }),
    )
}

async fn stored_text(pool: &sqlx::PgPool, id: Uuid) -> Vec<String> {
    sqlx::query_scalar("select payload::text from ledger.events where stream_id = $1 order by stream_version")
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn personal_fields_are_stored_sealed_and_read_back_opened() {
    let db = TestDatabase::new().await;
    let store = db.store().with_personal_data(POLICY);
    let (organization, id) = (Uuid::new_v4(), Uuid::new_v4());
    store.append(&person(organization, id, ExpectedVersion::NoStream, vec![joined("Ada Quill")])).await.unwrap();
    let stored = stored_text(&db.pool, id).await;
    assert!(!stored[0].contains("Ada Quill") && !stored[0].contains("example.com"), "{}", stored[0]);
    assert!(stored[0].contains("\"sealed\"") && stored[0].contains("\"grade\": 7"), "{}", stored[0]);
    // A null personal field stays null (nothing to seal).
    assert!(stored[0].contains("\"note\": null"), "{}", stored[0]);

    let mut events = store.read_stream(id, 1).await.unwrap();
    ledger_store::vault::open(&db.pool, &POLICY, &mut events).await.unwrap();
    let payload = events[0].payload.to_value();
    assert_eq!(payload["personal"], json!({ "full_name": "Ada Quill", "email": "Ada Quill@example.com" }));
    assert_eq!(payload["grade"], json!(7));
    assert!(store.verify(VerifyScope::All, &mut |_| {}).await.unwrap().is_intact());
}

#[tokio::test]
async fn a_repeated_request_with_its_key_is_answered_once_though_sealing_differs() {
    let db = TestDatabase::new().await;
    let store = db.store().with_personal_data(POLICY);
    let (organization, id) = (Uuid::new_v4(), Uuid::new_v4());
    let request =
        person(organization, id, ExpectedVersion::NoStream, vec![joined("Ada")]).with_idempotency_key("hire-ada");
    let first = store.append(&request).await.unwrap();
    let again = store.append(&request).await.unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!(again.positions, first.positions);
    assert_eq!(crate::event_count(&db.pool).await, 1);
}

#[tokio::test]
async fn an_erasure_destroys_the_key_with_its_append_and_only_then() {
    let db = TestDatabase::new().await;
    let store = db.store().with_personal_data(POLICY);
    let (organization, id) = (Uuid::new_v4(), Uuid::new_v4());
    store.append(&person(organization, id, ExpectedVersion::NoStream, vec![joined("Ada")])).await.unwrap();
    // A conflicting erasure writes nothing and destroys nothing.
    let stale = person(organization, id, ExpectedVersion::NoStream, vec![event("Forgotten", json!({}))]);
    assert!(matches!(store.append(&stale).await, Err(StoreError::Conflict { .. })));
    assert_eq!(Vault::status(&db.pool, id).await.unwrap().unwrap().erased_at, None);

    let erase = person(organization, id, ExpectedVersion::Exact(1), vec![event("Forgotten", json!({}))]);
    let erased = store.append(&erase).await.unwrap();
    let status = Vault::status(&db.pool, id).await.unwrap().unwrap();
    let recorded_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select recorded_at from ledger.events where global_position = $1")
            .bind(erased.last_position())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status.erased_at, Some(recorded_at));
    let wrapped: Option<Vec<u8>> =
        sqlx::query_scalar("select wrapped_key from ledger.subject_keys where subject_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(wrapped, None);

    let mut events = store.read_stream(id, 1).await.unwrap();
    ledger_store::vault::open(&db.pool, &POLICY, &mut events).await.unwrap();
    assert_eq!(events[0].payload.to_value()["personal"], json!({ "erased": { "at": recorded_at } }));
    assert!(store.verify(VerifyScope::All, &mut |_| {}).await.unwrap().is_intact());

    // No key is made for the subject again: new personal data of it is refused, unwritten.
    let count = crate::event_count(&db.pool).await;
    let again = person(organization, id, ExpectedVersion::Exact(2), vec![joined("Ada again")]);
    assert!(
        matches!(store.append(&again).await, Err(StoreError::SubjectErased { subject_id, .. }) if subject_id == id)
    );
    assert_eq!(crate::event_count(&db.pool).await, count);
}

#[tokio::test]
async fn a_sealed_field_does_not_open_in_another_organization() {
    let db = TestDatabase::new().await;
    let store = db.store().with_personal_data(POLICY);
    let (organization, id) = (Uuid::new_v4(), Uuid::new_v4());
    store.append(&person(organization, id, ExpectedVersion::NoStream, vec![joined("Ada")])).await.unwrap();
    // The sealed value copied into another organization's event (a forger's) stays shut.
    let sealed = store.read_stream(id, 1).await.unwrap()[0].payload.to_value()["personal"].clone();
    let (other, copy) = (Uuid::new_v4(), Uuid::new_v4());
    let plain = EventStore::new(db.pool.clone());
    let forged = StreamAppend {
        organization_id: other,
        stream_type: "copy".to_owned(),
        stream_id: copy,
        expected_version: ExpectedVersion::NoStream,
        events: vec![event("Copied", json!({ "personal": sealed }))],
    };
    plain.append(&AppendRequest::single(forged, Metadata::by("forger"))).await.unwrap();
    let mut events = plain.read_stream(copy, 1).await.unwrap();
    ledger_store::vault::open(&db.pool, &POLICY, &mut events).await.unwrap();
    assert!(!events[0].payload.text().contains("Ada"), "{:?}", events[0].payload);
    assert_eq!(events[0].payload.to_value()["personal"], json!({ "erased": { "at": null } }));
}

#[tokio::test]
async fn another_master_key_is_refused_with_nothing_written() {
    let db = TestDatabase::new().await;
    let check = || async {
        sqlx::query_scalar::<_, Vec<u8>>("select sealed from ledger.master_key_check")
            .fetch_all(&db.pool)
            .await
            .unwrap()
    };
    let before = check().await;
    assert_eq!(before.len(), 1, "the test database was unlocked with the test key");
    let error = Vault::unlock(&db.pool, &MasterKey::generate()).await.unwrap_err();
    assert!(error.to_string().contains("not the one"), "{error}");
    assert_eq!(check().await, before);
    // The process keeps the key it has.
    let error = Vault::install(&db.pool, &MasterKey::generate()).await.unwrap_err();
    assert!(matches!(error, StoreError::Vault(_)), "{error}");
}

#[tokio::test]
async fn a_field_written_in_clear_before_sealing_reads_as_erased_once_its_subject_is() {
    let db = TestDatabase::new().await;
    // As appended before personal data was sealed: a store without the policy.
    let plain = EventStore::new(db.pool.clone());
    let (organization, id) = (Uuid::new_v4(), Uuid::new_v4());
    plain.append(&person(organization, id, ExpectedVersion::NoStream, vec![joined("Old Ada")])).await.unwrap();
    let read = || async {
        let mut events = plain.read_stream(id, 1).await.unwrap();
        ledger_store::vault::open(&db.pool, &POLICY, &mut events).await.unwrap();
        events[0].payload.to_value()
    };
    assert_eq!(read().await["personal"]["full_name"], "Old Ada");
    // Erased by the policy's store: the row it leaves names the subject as erased.
    let store = db.store().with_personal_data(POLICY);
    store
        .append(&person(organization, id, ExpectedVersion::Exact(1), vec![event("Forgotten", json!({}))]))
        .await
        .unwrap();
    let payload = read().await;
    assert!(payload["personal"]["erased"]["at"].is_string(), "{payload}");
    assert_eq!(payload["grade"], json!(7));
    // The log's own bytes keep it (rewriting them would break the chain): documented.
    assert!(stored_text(&db.pool, id).await[0].contains("Old Ada"));
}

#[tokio::test]
async fn a_rotated_master_key_opens_everything_and_the_old_one_nothing() {
    let db = TestDatabase::new().await;
    let store = db.store().with_personal_data(POLICY);
    let (organization, id) = (Uuid::new_v4(), Uuid::new_v4());
    store.append(&person(organization, id, ExpectedVersion::NoStream, vec![joined("Ada")])).await.unwrap();
    let old = MasterKey::parse(ledger_store::testkit::TEST_MASTER_KEY).unwrap();
    let new = MasterKey::generate();
    let vault = Vault::unlock(&db.pool, &old).await.unwrap();
    assert_eq!(vault.rotate(&db.pool, &new).await.unwrap(), 1);
    assert!(Vault::unlock(&db.pool, &old).await.is_err(), "the old key no longer unlocks");
    let check = || async {
        sqlx::query_scalar::<_, Vec<u8>>("select sealed from ledger.master_key_check")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let before = check().await;
    assert!(vault.rotate(&db.pool, &MasterKey::generate()).await.is_err(), "the old key rotates nothing");
    assert_eq!(check().await, before);
    let rotated = Vault::unlock(&db.pool, &new).await.unwrap();
    // The log is untouched; its sealed field opens through the new key's unwrapping.
    let mut events = store.read_stream(id, 1).await.unwrap();
    let stored = events[0].payload.clone();
    ledger_store::vault::open_with(Some(&rotated), &db.pool, &POLICY, &mut events).await.unwrap();
    assert_eq!(events[0].payload.to_value()["personal"]["full_name"], "Ada");
    assert_eq!(store.read_stream(id, 1).await.unwrap()[0].payload, stored);
    assert!(store.verify(VerifyScope::All, &mut |_| {}).await.unwrap().is_intact());
}

#[tokio::test]
async fn an_erasure_that_fails_midway_writes_nothing_and_keeps_the_key() {
    let db = TestDatabase::new().await;
    let store = db.store().with_personal_data(POLICY);
    let (organization, id) = (Uuid::new_v4(), Uuid::new_v4());
    store.append(&person(organization, id, ExpectedVersion::NoStream, vec![joined("Ada")])).await.unwrap();
    // The key's destruction fails after the erasure event is written, inside its transaction
    // (as a crash there would end it).
    sqlx::query(
        "create function ledger.fail_midway() returns trigger language plpgsql as \
         $$ begin raise exception 'crashed in the middle of an erasure'; end $$",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "create trigger fail_midway before update on ledger.subject_keys for each row execute function ledger.fail_midway()",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let erase = person(organization, id, ExpectedVersion::Exact(1), vec![event("Forgotten", json!({}))]);
    assert!(store.append(&erase).await.is_err());
    assert_eq!(crate::event_count(&db.pool).await, 1, "the erasure event is not written");
    assert_eq!(Vault::status(&db.pool, id).await.unwrap().unwrap().erased_at, None);
    let mut events = store.read_stream(id, 1).await.unwrap();
    ledger_store::vault::open(&db.pool, &POLICY, &mut events).await.unwrap();
    assert_eq!(events[0].payload.to_value()["personal"]["full_name"], "Ada");
    // Once the cause is gone, the same erasure goes through.
    sqlx::query("drop trigger fail_midway on ledger.subject_keys").execute(&db.pool).await.unwrap();
    store.append(&erase).await.unwrap();
    assert!(Vault::status(&db.pool, id).await.unwrap().unwrap().erased_at.is_some());
}
