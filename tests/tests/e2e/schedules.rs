//! Pay schedules and runs over HTTP: one live regular run per schedule period (racing and
//! repeated creates included), periods listed with the run that pays them, off-cycle runs
//! paying only the lines they list.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::World;

/// A biweekly schedule anchored on Monday 2026-01-05; its id.
async fn biweekly(world: &World) -> String {
    let body = json!({ "name": "Hourly staff", "frequency": "biweekly", "anchor_date": "2026-01-05" });
    let (status, created) = world.call(Method::POST, "/v1/pay-schedules", &world.admin, Some(body), Some("bw")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["pay_schedule_id"].as_str().unwrap().to_owned()
}

async fn hire_on(world: &World, schedule: &str) -> String {
    let body = json!({
        "personal": { "full_name": "Ada Lovelace", "email": null, "address": null },
        "position": "Engineer", "department": "R&D",
        "rate": { "amount": { "amount": "52000.00", "currency": "USD" }, "basis": "annual" },
        "pay_schedule_id": schedule, "start_date": "2025-06-01"
    });
    let hired = world.ok(Method::POST, "/v1/employees", &world.processor, Some(body)).await;
    let employee = hired["employee_id"].as_str().unwrap().to_owned();
    let kyc = json!({ "status": "approved" });
    world.ok(Method::POST, &format!("/v1/employees/{employee}/kyc"), &world.processor, Some(kyc)).await;
    let wallet = json!({ "employee_id": employee, "public_key": format!("pk-{employee}"), "currency": "USD" });
    world.ok(Method::POST, "/v1/wallets", &world.processor, Some(wallet)).await;
    employee
}

fn run_body(schedule: &str, start: &str, end: &str) -> Value {
    json!({ "pay_schedule_id": schedule, "period": { "start": start, "end": end } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_lists_its_periods_and_a_period_has_one_live_regular_run() {
    let world = World::new().await;
    world.register().await;
    let schedule = biweekly(&world).await;
    let monthly_employee = world.hire("5000.00", true).await.0;
    let biweekly_employee = hire_on(&world, &schedule).await;
    let position = world.head_position().await;

    let periods = world
        .ok(
            Method::GET,
            &format!("/v1/pay-schedules/{schedule}/periods?from=2026-01-10&to=2026-02-28&limit=3&wait_for_position={position}"),
            &world.processor,
            None,
        )
        .await;
    let starts: Vec<&str> =
        periods["periods"].as_array().unwrap().iter().map(|p| p["start"].as_str().unwrap()).collect();
    assert_eq!(starts, ["2026-01-05", "2026-01-19", "2026-02-02"]);
    assert_eq!(periods["periods"][0]["end"], "2026-01-18");
    assert_eq!(periods["next_from"], "2026-02-16");

    // Not a period of the schedule: refused, naming the period that holds its start.
    let before = world.event_count().await;
    let (status, problem) =
        world.post("/v1/payroll-runs", &world.processor, run_body(&schedule, "2026-01-01", "2026-01-14")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("2025-12-22..2026-01-04"), "{problem}");
    assert_eq!(world.event_count().await, before, "nothing written");

    // Racing creates for one period, each its own run: exactly one is created.
    let body = run_body(&schedule, "2026-01-05", "2026-01-18");
    let racers = (0..6).map(|_| world.post("/v1/payroll-runs", &world.processor, body.clone()));
    let answers = futures_util::future::join_all(racers).await;
    let created: Vec<&Value> =
        answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).map(|(_, body)| body).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let winner = created[0]["payroll_run_id"].as_str().unwrap().to_owned();
    for (status, problem) in answers.iter().filter(|(status, _)| *status != StatusCode::CREATED) {
        assert_eq!((*status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("period_taken")), "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains(&winner), "the problem names the other run: {problem}");
    }
    assert_eq!(world.count_of("PayPeriodClaimed").await, 1);

    // The same request repeated with its key is answered once.
    let next = run_body(&schedule, "2026-01-19", "2026-02-01");
    let first = world.call(Method::POST, "/v1/payroll-runs", &world.processor, Some(next.clone()), Some("r2")).await;
    let again = world.call(Method::POST, "/v1/payroll-runs", &world.processor, Some(next), Some("r2")).await;
    assert_eq!((first.0, again.0), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(first.1["payroll_run_id"], again.1["payroll_run_id"]);
    assert_eq!(world.count_of("PayPeriodClaimed").await, 2);

    // The biweekly run pays the biweekly employee only; the monthly run the monthly one.
    world.ok(Method::POST, &format!("/v1/payroll-runs/{winner}/calculate"), &world.processor, None).await;
    let position = world.head_position().await;
    let items = world
        .ok(
            Method::GET,
            &format!("/v1/payroll-runs/{winner}/items?wait_for_position={position}"),
            &world.processor,
            None,
        )
        .await;
    let paid: Vec<&str> =
        items["items"].as_array().unwrap().iter().map(|i| i["employee_id"].as_str().unwrap()).collect();
    assert_eq!(paid, [biweekly_employee.as_str()]);
    // 52,000 a year over 26 periods.
    assert_eq!(items["items"][0]["gross"], "2000.00");
    let monthly = world.calculated_run().await;
    let position = world.head_position().await;
    let items = world
        .ok(
            Method::GET,
            &format!("/v1/payroll-runs/{monthly}/items?wait_for_position={position}"),
            &world.processor,
            None,
        )
        .await;
    assert_eq!(items["items"].as_array().unwrap().len(), 1);
    assert_eq!(items["items"][0]["employee_id"], monthly_employee.as_str());

    // A second monthly run for January: refused, naming the first.
    let (status, problem) = world
        .post("/v1/payroll-runs", &world.processor, json!({ "period": { "start": "2026-01-01", "end": "2026-01-31" } }))
        .await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("period_taken")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains(&monthly), "{problem}");

    // Voided, the period is free again; the periods list shows who pays what.
    let void = json!({ "reason": "wrong rates" });
    world.ok(Method::POST, &format!("/v1/payroll-runs/{winner}/void"), &world.processor, Some(void)).await;
    let again = world.post("/v1/payroll-runs", &world.processor, run_body(&schedule, "2026-01-05", "2026-01-18")).await;
    assert_eq!(again.0, StatusCode::CREATED, "{}", again.1);
    let replacement = again.1["payroll_run_id"].as_str().unwrap().to_owned();
    let position = world.head_position().await;
    let periods = world
        .ok(
            Method::GET,
            &format!("/v1/pay-schedules/{schedule}/periods?from=2026-01-05&to=2026-01-31&wait_for_position={position}"),
            &world.processor,
            None,
        )
        .await;
    assert_eq!(periods["periods"][0]["payroll_run_id"], replacement.as_str());
    assert_eq!(periods["periods"][0]["run_status"], "draft");
    assert_eq!(periods["periods"][1]["payroll_run_id"], first.1["payroll_run_id"]);
    assert_eq!(periods["next_from"], Value::Null);

    // Another organization sees none of it.
    let (status, _) = world.get(&format!("/v1/pay-schedules/{schedule}"), &world.other_admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = world.get(&format!("/v1/pay-schedules/{schedule}/periods"), &world.other_admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_off_cycle_run_pays_only_its_lines() {
    let world = World::new().await;
    world.register().await;
    let health = json!({ "name": "Health", "party": "employee", "calculation": { "kind": "fixed", "amount": { "amount": "100.00", "currency": "USD" } }, "liability_account": "health" });
    world.ok(Method::PUT, "/v1/organization/rules/zhealth", &world.admin, Some(health)).await;
    let (alice, _) = world.hire("5000.00", true).await;
    let (bob, _) = world.hire("4000.00", true).await;
    let bonus = |employee: &str, amount: &str, taxable: bool| json!({ "employee_id": employee, "lines": [{ "category": "bonus", "code": "BON-Q4", "amount": { "amount": amount, "currency": "USD" }, "taxable": taxable }] });

    // Bad input: each refused naming the field, nothing written.
    let before = world.event_count().await;
    let period = json!({ "start": "2026-01-01", "end": "2026-01-31" });
    for (lines, field) in [
        (json!([{ "employee_id": alice, "lines": [] }]), "lines"),
        (json!([bonus(&alice, "-5.00", true)]), "lines[0].lines[0].amount"),
        (json!([bonus(&alice, "0.001", true)]), "lines[0].lines[0].amount"),
        (json!([bonus(&alice, "10.00", true), bonus(&alice, "10.00", true)]), "lines[1].employee_id"),
        (json!([bonus(&uuid::Uuid::new_v4().to_string(), "10.00", true)]), "lines[0].employee_id"),
    ] {
        let body = json!({ "period": period, "off_cycle_reason": "Q4 bonus", "lines": lines });
        let (status, problem) = world.post("/v1/payroll-runs", &world.processor, body).await;
        assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY, "{status} {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{field}: {problem}");
    }
    assert_eq!(world.event_count().await, before, "nothing written");

    // Another organization's employee is not found in this one.
    let other = json!({ "name": "Other", "base_currency": "USD", "pay_schedule": { "frequency": "monthly", "anchor_date": "2026-01-01" } });
    world.ok(Method::POST, "/v1/organization", &world.other_admin, Some(other)).await;
    let stranger = json!({
        "personal": { "full_name": "Eve", "email": null, "address": null }, "position": "Spy", "department": "X",
        "rate": { "amount": { "amount": "1000.00", "currency": "USD" }, "basis": "monthly" }, "start_date": "2025-06-01"
    });
    let stranger = world.ok(Method::POST, "/v1/employees", &world.other_admin, Some(stranger)).await;
    let body = json!({ "period": period, "off_cycle_reason": "Q4 bonus", "lines": [bonus(stranger["employee_id"].as_str().unwrap(), "10.00", true)] });
    let (status, problem) = world.post("/v1/payroll-runs", &world.processor, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("lines[0].employee_id"), "{problem}");

    // A bonus for alice (taxed at 10 %, no fixed health deduction) and a non-taxable one for
    // bob; January's regular run is not touched.
    let body = json!({ "period": period, "off_cycle_reason": "Q4 bonus", "lines": [bonus(&alice, "1000.00", true)] });
    let created = world.ok(Method::POST, "/v1/payroll-runs", &world.processor, Some(body)).await;
    let run = created["payroll_run_id"].as_str().unwrap().to_owned();
    world
        .ok(
            Method::POST,
            &format!("/v1/payroll-runs/{run}/lines"),
            &world.processor,
            Some(json!({ "lines": [bonus(&bob, "250.00", false)] })),
        )
        .await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/calculate"), &world.processor, None).await;
    let position = world.head_position().await;
    let items = world
        .ok(Method::GET, &format!("/v1/payroll-runs/{run}/items?wait_for_position={position}"), &world.processor, None)
        .await;
    let items = items["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let of = |employee: &str| items.iter().find(|item| item["employee_id"] == employee).unwrap();
    assert_eq!((of(&alice)["gross"].as_str(), of(&alice)["net"].as_str()), (Some("1000.00"), Some("900.00")));
    assert_eq!((of(&bob)["gross"].as_str(), of(&bob)["net"].as_str()), (Some("250.00"), Some("250.00")));
    assert_eq!(of(&alice)["earnings"][0]["kind"], "one_off");
    assert_eq!(of(&alice)["earnings"][0]["code"], "BON-Q4");
    // The regular January run is still free and pays the full month.
    let regular = world.calculated_run().await;
    let position = world.head_position().await;
    let regular_items = world
        .ok(
            Method::GET,
            &format!("/v1/payroll-runs/{regular}/items?wait_for_position={position}"),
            &world.processor,
            None,
        )
        .await;
    let alice_regular = regular_items["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["employee_id"] == alice.as_str())
        .unwrap()
        .clone();
    assert_eq!(alice_regular["gross"], "5000.00");

    // Paid end to end with a second approver.
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    let processed = world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    assert_eq!(
        (processed["report"]["paid"].as_u64(), processed["report"]["status"].as_str()),
        (Some(2), Some("completed"))
    );
    world.stop().await;
}
