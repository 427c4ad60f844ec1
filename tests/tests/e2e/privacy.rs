//! Personal data over HTTP: sealed in the log, erased (crypto-shredding) with retention and
//! overrides, nowhere in a dump afterwards while pay and payments stay, the subject-access
//! export, erasure racing other writes, repeated and refused erasures, keys that come back.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::World;

/// A person's identifying data, unique to the test so that a dump can be searched for it.
struct Person {
    name: String,
    email: String,
    address: String,
    /// Not personal data: in clear in the log and the read tables (a dump shows it).
    position: String,
}

impl Person {
    fn new() -> Person {
        let tag = Uuid::new_v4().simple().to_string();
        Person {
            name: format!("Ada Quillfeather {}", &tag[..12]),
            email: format!("ada.{}@example.org", &tag[12..24]),
            address: format!("{} Byron Lane, London", &tag[24..]),
            position: format!("Engineer {}", &tag[..16]),
        }
    }

    fn texts(&self) -> [&str; 3] {
        [&self.name, &self.email, &self.address]
    }
}

/// Hires `person` from `start` with a wallet and approved KYC; returns the employee id.
async fn hire(world: &World, person: &Person, start: &str) -> String {
    let body = json!({
        "personal": { "full_name": person.name, "email": person.email, "address": person.address },
        "position": person.position, "department": "R&D",
        "rate": { "amount": { "amount": "5000.00", "currency": "USD" }, "basis": "monthly" },
        "pay_frequency": "monthly", "start_date": start
    });
    let employee = world.ok(Method::POST, "/v1/employees", &world.processor, Some(body)).await["employee_id"]
        .as_str()
        .unwrap()
        .to_owned();
    world
        .ok(
            Method::POST,
            &format!("/v1/employees/{employee}/kyc"),
            &world.processor,
            Some(json!({ "status": "approved" })),
        )
        .await;
    let wallet = json!({ "employee_id": employee, "public_key": format!("pk-{employee}"), "currency": "USD" });
    world.ok(Method::POST, "/v1/wallets", &world.processor, Some(wallet)).await;
    employee
}

async fn terminate(world: &World, employee: &str, end_date: &str) {
    let body = json!({ "end_date": end_date, "reason": "resigned" });
    world.ok(Method::POST, &format!("/v1/employees/{employee}/terminate"), &world.processor, Some(body)).await;
}

/// The whole database as `pg_dump` writes it in plain SQL (every table's rows as text).
fn plain_dump(url: &str) -> String {
    let program = ledger_store::local_postgres::find_bin_dir()
        .map(|dir| dir.join("pg_dump"))
        .ok()
        .filter(|path| path.is_file())
        .unwrap_or_else(|| "pg_dump".into());
    // (Without the query parameters only sqlx reads.)
    let url = url.split('?').next().unwrap();
    let output = std::process::Command::new(program).args(["--format=plain", "--dbname", url]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

async fn wait(world: &World) -> String {
    format!("wait_for_position={}", world.head_position().await)
}

/// The story a compliance team lives: a paid employee leaves, erasure is refused until the
/// retention period passes (or an override names its legal basis), then the person is
/// nowhere: not in the log's bytes (never were), the read tables, a replay, the export or a
/// dump; the hash chains verify; the pay, payments and amounts stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_is_in_no_table_view_or_dump_and_the_log_still_verifies() {
    let world = World::new().await;
    world.register().await;
    let (ada, kept) = (Person::new(), Person::new());
    let erased = hire(&world, &ada, "2025-06-01").await;
    let stays = hire(&world, &kept, "2025-06-01").await;
    let run = world.calculated_run().await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    terminate(&world, &erased, "2026-01-31").await;

    // The log never held the names: only ciphertext, from the first append on.
    for text in ada.texts() {
        let in_log: i64 =
            sqlx::query_scalar("select count(*) from ledger.events where payload::text like '%' || $1 || '%'")
                .bind(text)
                .fetch_one(&world.db.pool)
                .await
                .unwrap();
        assert_eq!(in_log, 0, "{text} is in the log");
    }
    // Nor do the read tables: only the API opens them, with the master key. A dump of the
    // database alone shows the person's position (the search works) and nothing personal.
    let shown =
        world.ok(Method::GET, &format!("/v1/employees/{erased}?{}", wait(&world).await), &world.processor, None).await;
    assert_eq!((&shown["full_name"], &shown["address"]), (&json!(ada.name), &json!(ada.address)), "{shown}");
    let listed = world.ok(Method::GET, "/v1/employees", &world.processor, None).await;
    assert!(listed["employees"].as_array().unwrap().iter().any(|row| row["email"] == ada.email.as_str()), "{listed}");
    let before = plain_dump(world.db.url());
    assert!(before.contains(&ada.position) && before.contains(&kept.position));
    for text in ada.texts().into_iter().chain(kept.texts()) {
        assert!(!before.contains(text), "{text} is in a dump of the database");
    }
    let export = world.ok(Method::GET, &format!("/v1/employees/{erased}/personal-data"), &world.compliance, None).await;
    assert_eq!(
        export["personal_data"],
        json!({ "full_name": ada.name, "email": ada.email, "address": ada.address }),
        "{export}"
    );

    // Retention: 7 years after the last day. Not passed: 422 naming the day; nothing written.
    world
        .ok(Method::PUT, "/v1/organization/retention", &world.admin, Some(json!({ "years_after_termination": 7 })))
        .await;
    let events = world.event_count().await;
    let (status, body) =
        world.post(&format!("/v1/employees/{erased}/erase"), &world.compliance, json!({ "reason": "asked" })).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("retention_not_passed")),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains("2033-01-31"), "{body}");
    assert_eq!(world.event_count().await, events);

    // With an override naming its legal basis, it goes.
    let request = json!({ "reason": "data subject's request", "override": { "legal_basis": "GDPR Art. 17(1)(d)" } });
    let done = world.ok(Method::POST, &format!("/v1/employees/{erased}/erase"), &world.compliance, Some(request)).await;
    assert_eq!((done["already_erased"].as_bool(), done["erased_on"].is_string()), (Some(false), true), "{done}");
    let after = wait(&world).await;

    let shown = world.ok(Method::GET, &format!("/v1/employees/{erased}?{after}"), &world.processor, None).await;
    assert_eq!((&shown["full_name"], &shown["email"]), (&Value::Null, &Value::Null), "{shown}");
    assert!(shown["erased_at"].is_string(), "{shown}");
    let hire_event = |events: &Value| {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|event| event["event_type"] == "EmployeeHired")
            .unwrap()
            .clone()
    };
    let opened = world.ok(Method::GET, &format!("/v1/events?stream_id={erased}"), &world.auditor, None).await;
    assert!(hire_event(&opened)["payload"]["personal"]["erased"]["at"].is_string(), "{opened}");
    let stored =
        world.ok(Method::GET, &format!("/v1/events?stream_id={erased}&as_stored=true"), &world.auditor, None).await;
    assert!(hire_event(&stored)["payload"]["personal"]["sealed"]["ciphertext"].is_string(), "{stored}");
    let replayed = world.ok(Method::GET, &format!("/v1/replay/employee/{erased}"), &world.auditor, None).await;
    assert!(replayed["state"]["personal"]["erased"].is_object(), "{replayed}");
    let verified = world.ok(Method::GET, "/v1/verify", &world.auditor, None).await;
    assert_eq!(verified["intact"], true, "{verified}");

    // The pay stays: the item, its payment, the wallet's movement, with their amounts.
    let export =
        world.ok(Method::GET, &format!("/v1/employees/{erased}/personal-data?{after}"), &world.compliance, None).await;
    assert_eq!(export["personal_data"], Value::Null);
    assert_eq!(export["erasure"]["override_legal_basis"], "GDPR Art. 17(1)(d)");
    assert!(export["erasure"]["key_destroyed_at"].is_string(), "{export}");
    assert_eq!(export["pay_items"][0]["gross"], "5000.00", "{export}");
    assert_eq!(export["pay_items"][0]["status"], "paid");
    assert_eq!(export["wallet_movements"][0]["amount"], "4500.00", "{export}");
    assert_eq!(export["payments"].as_array().unwrap().len(), 1);

    // Still nowhere in the database; the pay records stay (the search works).
    let dump = plain_dump(world.db.url());
    for text in ada.texts().into_iter().chain(kept.texts()) {
        assert!(!dump.contains(text), "{text} is in the dump");
    }
    assert!(dump.contains(&ada.position));
    let shown = world.ok(Method::GET, &format!("/v1/employees/{stays}"), &world.processor, None).await;
    assert_eq!(shown["full_name"], kept.name.as_str(), "the other person is still readable: {shown}");
    let export_text = export.to_string();
    assert!(ada.texts().iter().all(|text| !export_text.contains(text)));

    // A rebuild from the log alone gives the same: erased, and the other person kept.
    let projection = ledger_projections::projections::by_name("employee").unwrap();
    ledger_projections::rebuild(&world.db.pool, projection.as_ref(), &mut |_| {}).await.unwrap();
    let rows: Vec<(Uuid, bool, bool)> = sqlx::query_as(
        "select employee_id, personal_sealed is not null, erased_at is not null from employee.employees order by 2",
    )
    .fetch_all(&world.db.pool)
    .await
    .unwrap();
    assert_eq!(rows, vec![(erased.parse().unwrap(), false, true), (stays.parse().unwrap(), true, false)]);
    let shown = world.ok(Method::GET, &format!("/v1/employees/{stays}"), &world.processor, None).await;
    assert_eq!(shown["full_name"], kept.name.as_str());
    let shown = world.ok(Method::GET, &format!("/v1/employees/{erased}"), &world.processor, None).await;
    assert_eq!(shown["full_name"], Value::Null);
    world.stop().await;
}

/// Who may erase, what is refused with nothing written, and a repeat answering the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_is_refused_to_others_and_a_repeat_answers_the_first() {
    let world = World::new().await;
    world.register().await;
    let person = Person::new();
    let employee = hire(&world, &person, "2015-01-01").await;
    let path = format!("/v1/employees/{employee}/erase");
    let body = json!({ "reason": "retention period passed" });
    let events = world.event_count().await;

    let (status, _) = world.post(&path, &world.processor, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = world.post(&path, &world.auditor, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = world.post(&path, &world.other_admin, body.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = world.post(&format!("/v1/employees/{}/erase", Uuid::new_v4()), &world.admin, body.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body_of) = world.post("/v1/employees/not-a-uuid/erase", &world.admin, body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body_of}");
    let (status, refused) = world.post(&path, &world.admin, body.clone()).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("wrong_status")),
        "{refused}"
    );
    for (bad, field) in [
        (json!({}), "reason"),
        (json!({ "reason": " " }), "reason"),
        (json!({ "reason": "r", "override": { "legal_basis": "" } }), "legal_basis"),
        (json!({ "reason": "r", "overide": {} }), "overide"),
    ] {
        let (status, problem) = world.post(&path, &world.compliance, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{bad}: {problem}");
    }
    for bad in [json!({ "years_after_termination": 0 }), json!({ "years_after_termination": 101 }), json!({})] {
        let (status, _) = world.call(Method::PUT, "/v1/organization/retention", &world.admin, Some(bad), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(world.event_count().await, events);

    // Left in 2018, kept 7 years: due since 2025-12-31, listed, erased without an override.
    terminate(&world, &employee, "2018-12-31").await;
    let (status, _) = world.post(&path, &world.compliance, body.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no retention period set: an override is needed");
    world
        .ok(Method::PUT, "/v1/organization/retention", &world.admin, Some(json!({ "years_after_termination": 7 })))
        .await;
    let due = world
        .ok(Method::GET, &format!("/v1/compliance/erasure-due?{}", wait(&world).await), &world.compliance, None)
        .await;
    assert_eq!(
        due["employees"],
        json!([{ "employee_id": employee, "end_date": "2018-12-31", "erasable_from": "2025-12-31", "retention_years": 7 }])
    );
    let (status, _) = world.get("/v1/compliance/erasure-due", &world.processor).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let first = world.call(Method::POST, &path, &world.compliance, Some(body.clone()), Some("erase-1")).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let replay = world.call(Method::POST, &path, &world.compliance, Some(body.clone()), Some("erase-1")).await;
    assert_eq!((replay.0, replay.1["replayed"].as_bool()), (StatusCode::OK, Some(true)), "{}", replay.1);
    let again = world.ok(Method::POST, &path, &world.admin, Some(json!({ "reason": "again" }))).await;
    assert_eq!((again["already_erased"].as_bool(), &again["erased_on"]), (Some(true), &first.1["erased_on"]));
    // A bad request is refused as such even for a person erased already, not answered as a
    // repeat (found by schemathesis' stateful phase).
    for (bad, field) in [
        (json!({ "reason": " " }), "reason"),
        (json!({ "reason": "again", "override": { "legal_basis": "" } }), "override.legal_basis"),
    ] {
        let (status, problem) = world.call(Method::POST, &path, &world.admin, Some(bad.clone()), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
        assert!(problem["detail"].as_str().unwrap().starts_with(field), "{bad}: {problem}");
    }
    assert_eq!(world.count_of("EmployeePersonalDataErased").await, 1);
    let due = world
        .ok(Method::GET, &format!("/v1/compliance/erasure-due?{}", wait(&world).await), &world.compliance, None)
        .await;
    assert_eq!(due["employees"], json!([]));

    // Nothing more is recorded about an erased person but pay.
    let (status, problem) = world
        .post(&format!("/v1/employees/{employee}/rehire"), &world.processor, json!({ "start_date": "2027-01-01" }))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("wrong_status")),
        "{problem}"
    );
    world.stop().await;
}

/// An erasure racing changes of the same employee: one erasure, and no change recorded after
/// it; every request answered without a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_racing_changes_of_the_same_employee_is_recorded_once_and_last() {
    let world = World::new().await;
    world.register().await;
    let employee = hire(&world, &Person::new(), "2015-01-01").await;
    terminate(&world, &employee, "2016-12-31").await;
    world
        .ok(Method::PUT, "/v1/organization/retention", &world.admin, Some(json!({ "years_after_termination": 3 })))
        .await;
    let erase = json!({ "reason": "retention period passed" });
    let change = json!({ "rate": { "amount": { "amount": "5100.00", "currency": "USD" }, "basis": "monthly" }, "effective_from": "2016-06-01", "reason": "late correction" });
    let mut requests = Vec::new();
    let world_ref = &world;
    for n in 0..12 {
        let (path, key, body) = if n % 3 == 0 {
            (format!("/v1/employees/{employee}/erase"), world.compliance.clone(), erase.clone())
        } else {
            (format!("/v1/employees/{employee}/pay-rate"), world.processor.clone(), change.clone())
        };
        requests.push(async move { world_ref.post(&path, &key, body).await });
    }
    let answers = futures_util::future::join_all(requests).await;
    for (status, body) in &answers {
        assert!(
            status.is_success() || *status == StatusCode::UNPROCESSABLE_ENTITY || *status == StatusCode::CONFLICT,
            "{status} {body}"
        );
    }
    let types: Vec<String> =
        sqlx::query_scalar("select event_type from ledger.events where stream_id = $1 order by stream_version")
            .bind(employee.parse::<Uuid>().unwrap())
            .fetch_all(&world.db.pool)
            .await
            .unwrap();
    assert_eq!(types.iter().filter(|kind| *kind == "EmployeePersonalDataErased").count(), 1, "{types:?}");
    assert_eq!(types.last().unwrap(), "EmployeePersonalDataErased", "{types:?}");
    let accepted_changes =
        answers.iter().enumerate().filter(|(n, (status, _))| n % 3 != 0 && status.is_success()).count();
    assert_eq!(types.iter().filter(|kind| *kind == "EmployeePayRateChanged").count(), accepted_changes);
    world.stop().await;
}

/// A key the log says is destroyed comes back (a key table restored from an older backup):
/// the next start destroys it again before anything is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_comes_back_is_destroyed_again_at_start() {
    let world = World::new().await;
    world.register().await;
    let person = Person::new();
    let employee = hire(&world, &person, "2015-01-01").await;
    terminate(&world, &employee, "2016-12-31").await;
    let id: Uuid = employee.parse().unwrap();
    let saved: (Vec<u8>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("select wrapped_key, created_at from ledger.subject_keys where subject_id = $1")
            .bind(id)
            .fetch_one(&world.db.pool)
            .await
            .unwrap();
    let erase = json!({ "reason": "asked", "override": { "legal_basis": "consent withdrawn" } });
    world.ok(Method::POST, &format!("/v1/employees/{employee}/erase"), &world.admin, Some(erase)).await;
    let pool = world.db.pool.clone();
    let url = world.db.url().to_owned();
    let db = {
        let World { db, server, .. } = world;
        server.unwrap().stop().await.unwrap();
        db
    };
    // The old key table's row, as a restore of an older backup of it would bring back.
    sqlx::query("update ledger.subject_keys set wrapped_key = $2, erased_at = null where subject_id = $1")
        .bind(id)
        .bind(&saved.0)
        .execute(&pool)
        .await
        .unwrap();
    let world = World::on(db).await;
    let wrapped: Option<Vec<u8>> =
        sqlx::query_scalar("select wrapped_key from ledger.subject_keys where subject_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(wrapped, None, "the start destroyed the key again");
    // (This world's keys are of new organizations: the log is read as the projections do.)
    let mut events = ledger_store::EventStore::new(pool.clone()).read_stream(id, 1).await.unwrap();
    ledger_store::vault::open(&pool, &ledger_codec::PERSONAL_DATA, &mut events).await.unwrap();
    assert!(events[0].payload.to_value()["personal"]["erased"]["at"].is_string(), "{:?}", events[0].payload);
    assert!(!plain_dump(&url).contains(&person.name));
    world.stop().await;
}

/// A whole backup older than an erasure brings the person back, key and log; restored with
/// the erasures kept apart, the erasure is made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_older_than_an_erasure_is_restored_with_the_erasure_made_again() {
    let world = World::new().await;
    world.register().await;
    let person = Person::new();
    let employee = hire(&world, &person, "2025-06-01").await;
    let id: Uuid = employee.parse().unwrap();
    let dir = std::env::temp_dir().join(format!("payroll-ledger-privacy-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ledger.dump");
    ledger_server::backup::backup(world.db.url(), &file, &mut |_| {}).await.unwrap();
    terminate(&world, &employee, "2026-01-31").await;
    let erase = json!({ "reason": "asked", "override": { "legal_basis": "consent withdrawn" } });
    world.ok(Method::POST, &format!("/v1/employees/{employee}/erase"), &world.compliance, Some(erase)).await;
    // The erasures, kept apart from the backups (as `payroll-ledger events` writes them).
    let query = ledger_store::EventQuery {
        event_types: vec!["EmployeePersonalDataErased".to_owned()],
        limit: 100,
        ..ledger_store::EventQuery::default()
    };
    let erasures = ledger_store::EventStore::new(world.db.pool.clone()).query_events(&query).await.unwrap();
    let lines: String = erasures.iter().map(|event| serde_json::to_string(event).unwrap() + "\n").collect();
    let erasures_file = dir.join("erasures.ndjson");
    std::fs::write(&erasures_file, lines).unwrap();

    let master = ledger_server::privacy::MasterKeySource::of_text(ledger_store::testkit::TEST_MASTER_KEY);
    let restore =
        |name: &str, erasures: Option<std::path::PathBuf>, master: ledger_server::privacy::MasterKeySource| {
            let copy = format!("{}_{name}", world.db.name());
            let url = world.db.url().replace(world.db.name(), &copy);
            let file = file.clone();
            async move {
                let keys = ledger_server::backup::RestoreKeys {
                    master: &master,
                    default_master_file: std::path::Path::new("/nonexistent/master.key"),
                    erasures: erasures.as_deref(),
                };
                let report = ledger_server::backup::restore(&file, &url, keys, &mut |_| {}).await.unwrap();
                let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
                (copy, url, pool, report)
            }
        };
    // The name the restored read table keeps (sealed), opened.
    let name_in = |pool: sqlx::PgPool| async move {
        let (organization, sealed): (Uuid, Option<Value>) =
            sqlx::query_as("select organization_id, personal_sealed from employee.employees where employee_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        let mut value = sealed?;
        ledger_store::vault::open_values(&pool, &mut [(organization, &mut value)]).await.unwrap();
        value["full_name"].as_str().map(str::to_owned)
    };
    // Without the erasures: the person is back (the case this is for). (Without a master
    // key too: a restore seals and opens nothing.)
    let (old, _, pool, report) = restore("old", None, Default::default()).await;
    assert_eq!(report.erasures_reapplied, 0);
    assert_eq!(name_in(pool.clone()).await, Some(person.name.clone()));
    pool.close().await;
    // With them: erased again, recorded, the chains intact, nowhere in a dump.
    let (again, url, pool, report) = restore("again", Some(erasures_file), master.clone()).await;
    assert_eq!(report.erasures_reapplied, 1);
    assert_eq!(name_in(pool.clone()).await, None);
    let basis: String = sqlx::query_scalar(
        "select payload->'override_basis'->>'legal_basis' from ledger.events \
         where stream_id = $1 and event_type = 'EmployeePersonalDataErased'",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(basis.contains("re-applied after restoring"), "{basis}");
    let store = ledger_store::EventStore::new(pool.clone());
    assert!(store.verify(ledger_store::VerifyScope::All, &mut |_| {}).await.unwrap().is_intact());
    assert!(!plain_dump(&url).contains(&person.name));
    pool.close().await;
    for copy in [old, again] {
        sqlx::query(&format!("drop database {copy} with (force)")).execute(&world.db.pool).await.unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
    world.stop().await;
}
