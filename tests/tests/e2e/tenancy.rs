//! Roles and tenants: an auditor cannot write; one organization sees nothing of another, and
//! the database itself enforces it.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;

use crate::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_cannot_write_and_a_compliance_key_cannot_command() {
    let world = World::new().await;
    world.register().await;
    let before = world.event_count().await;
    for key in [&world.auditor, &world.compliance] {
        let (status, problem) = world.post("/v1/employees", key, json!({})).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    }
    let (status, _) = world.post("/v1/organization/settings", &world.processor, json!({ "name": "Renamed" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a processor cannot change the organization");
    let (status, _) = world.get("/v1/events", &world.processor).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a processor does not read the raw event stream");
    let (status, _) = world.get("/v1/employees", "plk_00000000000000000000000000000000_nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) =
        world.client.get(world.url("/v1/employees")).send().await.map(|response| (response.status(), ())).unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(world.event_count().await, before);
    world.stop().await;
}

/// Every read endpoint, asked by another organization's key: a table of cases longer than
/// 70 lines on purpose, so that a new endpoint is added next to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_organization_reads_nothing_of_another() {
    let world = World::new().await;
    world.register().await;
    let (employee, wallet) = world.hire("5000.00", true).await;
    let run = world.calculated_run().await;
    let body = json!({ "name": "Other", "base_currency": "USD", "pay_schedule": { "frequency": "monthly", "anchor_date": "2026-01-01" } });
    world.ok(Method::POST, "/v1/organization", &world.other_admin, Some(body)).await;
    let last = world.head_position().await;
    world.ok(Method::GET, &format!("/v1/employees?wait_for_position={last}"), &world.admin, None).await;

    let other = &world.other_admin;
    for path in [
        format!("/v1/employees/{employee}"),
        format!("/v1/wallets/{wallet}"),
        format!("/v1/payroll-runs/{run}"),
        format!("/v1/replay/employee/{employee}"),
        format!("/v1/verify?stream_id={employee}"),
    ] {
        let (status, _) = world.get(&path, other).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let employees = world.ok(Method::GET, "/v1/employees", other, None).await;
    assert_eq!(employees["employees"].as_array().unwrap().len(), 0);
    let events = world.ok(Method::GET, "/v1/events?limit=1000", other, None).await;
    let events = events["events"].as_array().unwrap();
    assert!(events.iter().all(|event| event["organization_id"] == world.other_organization.to_string()));
    // Commands on another organization's streams are refused too.
    let (status, _) =
        world.post(&format!("/v1/employees/{employee}/kyc"), other, json!({ "status": "rejected" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The rows are invisible in the database itself, not merely filtered by the handler.
    let mut connection = sqlx::PgConnection::connect(world.db.url()).await.unwrap();
    sqlx::query("begin").execute(&mut connection).await.unwrap();
    sqlx::query("set local role ledger_api_reader").execute(&mut connection).await.unwrap();
    let unscoped: i64 =
        sqlx::query_scalar("select count(*) from employee.employees").fetch_one(&mut connection).await.unwrap();
    assert_eq!(unscoped, 0, "without an organization the reader sees no row");
    sqlx::query("select set_config('ledger.organization_id', $1, true)")
        .bind(world.other_organization.to_string())
        .execute(&mut connection)
        .await
        .unwrap();
    for table in
        ["employee.employees", "wallet.wallets", "payroll.payroll_runs", "compliance.audit_logs", "ledger.events"]
    {
        let rows: i64 = sqlx::query_scalar(&format!(
            "select count(*) from {table} where organization_id = '{}'",
            world.organization
        ))
        .fetch_one(&mut connection)
        .await
        .unwrap();
        assert_eq!(rows, 0, "{table} shows another organization's rows");
    }
    sqlx::query("select set_config('ledger.organization_id', $1, true)")
        .bind(world.organization.to_string())
        .execute(&mut connection)
        .await
        .unwrap();
    let own: i64 =
        sqlx::query_scalar("select count(*) from employee.employees").fetch_one(&mut connection).await.unwrap();
    assert_eq!(own, 1);
    sqlx::query("rollback").execute(&mut connection).await.unwrap();

    // A rebuild swaps in new tables: they are guarded the same way.
    let employee_projection = ledger_projections::projections::by_name("employee").unwrap();
    ledger_projections::rebuild(&world.db.pool, employee_projection.as_ref(), &mut |_| {}).await.unwrap();
    let (status, _) = world.get(&format!("/v1/employees/{employee}"), other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mine = world.ok(Method::GET, &format!("/v1/employees/{employee}"), &world.admin, None).await;
    assert_eq!(mine["employee_id"], employee.as_str());
    sqlx::query("begin").execute(&mut connection).await.unwrap();
    sqlx::query("set local role ledger_api_reader").execute(&mut connection).await.unwrap();
    sqlx::query("select set_config('ledger.organization_id', $1, true)")
        .bind(world.other_organization.to_string())
        .execute(&mut connection)
        .await
        .unwrap();
    let rebuilt: i64 =
        sqlx::query_scalar("select count(*) from employee.employees").fetch_one(&mut connection).await.unwrap();
    assert_eq!(rebuilt, 0, "the rebuilt table shows another organization's rows");
    world.stop().await;
}

/// Another tenant who knows an organization's id and one of its idempotency keys cannot
/// take, ahead of it, the id its command will derive: derived ids are in a namespace of the
/// database's own. A retry still names the same entity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_take_the_id_a_command_will_derive() {
    let world = World::new().await;
    world.register().await;
    let other = json!({ "name": "Other", "base_currency": "USD", "pay_schedule": { "frequency": "monthly", "anchor_date": "2026-01-01" } });
    world.ok(Method::POST, "/v1/organization", &world.other_admin, Some(other)).await;
    let hire = |employee_id: Option<String>| {
        let mut body = json!({
            "personal": { "full_name": "Grace Hopper", "email": null, "address": null },
            "position": "Engineer", "department": "R&D",
            "rate": { "amount": { "amount": "5000.00", "currency": "USD" }, "basis": "monthly" },
            "pay_frequency": "monthly", "start_date": "2025-06-01"
        });
        if let Some(id) = employee_id {
            body["employee_id"] = json!(id);
        }
        body
    };
    // What the id would be were it derived in a public namespace, as it was.
    let guessed =
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{}:hire-1:employee", world.organization).as_bytes());
    let (status, _) = world
        .call(Method::POST, "/v1/employees", &world.other_admin, Some(hire(Some(guessed.to_string()))), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, first) =
        world.call(Method::POST, "/v1/employees", &world.processor, Some(hire(None)), Some("hire-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_ne!(first["employee_id"], json!(guessed.to_string()));
    let (status, again) =
        world.call(Method::POST, "/v1/employees", &world.processor, Some(hire(None)), Some("hire-1")).await;
    assert_eq!(
        (status, &again["employee_id"], again["replayed"].as_bool()),
        (StatusCode::OK, &first["employee_id"], Some(true))
    );
    world.stop().await;
}
