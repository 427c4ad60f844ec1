//! One `Idempotency-Key`, many identical requests at once: one effect, the first answer
//! once and the same answer with `replayed: true` for all the others; never a 409 or a 5xx.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::World;

/// Concurrent requests per race.
const RACERS: usize = 20;

/// Sends `RACERS` identical requests at once; asserts one first answer and replays of it.
async fn race(world: &Arc<World>, method: Method, path: &str, key: &str, body: Option<Value>, name: &str) -> Value {
    let idempotency_key = format!("race-{name}");
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let answers: Vec<(StatusCode, Value)> = futures_util::future::join_all((0..RACERS).map(|_| {
        let (world, method, path, key, body, idempotency_key, barrier) = (
            world.clone(),
            method.clone(),
            path.to_owned(),
            key.to_owned(),
            body.clone(),
            idempotency_key.clone(),
            barrier.clone(),
        );
        tokio::spawn(async move {
            barrier.wait().await;
            world.call(method, &path, &key, body, Some(&idempotency_key)).await
        })
    }))
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    for (status, answer) in &answers {
        assert!(status.is_success(), "{name}: {status} {answer}");
    }
    let first: Vec<&Value> =
        answers.iter().filter(|(_, answer)| answer["replayed"] == false).map(|(_, answer)| answer).collect();
    assert_eq!(first.len(), 1, "{name}: one first answer, the rest replays: {answers:?}");
    // A command's replay answers the first's position; a processing's replay reports what
    // it found (and may have paid alongside the first).
    let position = &first[0]["position"];
    for (_, answer) in answers.iter().filter(|(_, answer)| answer.get("report").is_none()) {
        assert_eq!(&answer["position"], position, "{name}: every replay answers the first's position: {answers:?}");
    }
    first[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_raced_with_one_key_has_one_effect_and_replays() {
    let world = World::new().await;
    world.register().await;
    let world = Arc::new(world);
    let processor = world.processor.clone();
    let hire = json!({
        "personal": { "full_name": "Grace Hopper", "email": null, "address": null },
        "position": "Engineer", "department": "R&D",
        "rate": { "amount": { "amount": "5000.00", "currency": "USD" }, "basis": "monthly" },
        "pay_frequency": "monthly", "start_date": "2025-06-01"
    });
    let hired = race(&world, Method::POST, "/v1/employees", &processor, Some(hire), "hire").await;
    let employee = hired["employee_id"].as_str().unwrap().to_owned();
    assert_eq!(world.count_of("EmployeeHired").await, 1);
    let kyc = json!({ "status": "approved" });
    race(&world, Method::POST, &format!("/v1/employees/{employee}/kyc"), &processor, Some(kyc), "kyc").await;
    let opened = race(
        &world,
        Method::POST,
        "/v1/wallets",
        &processor,
        Some(json!({ "employee_id": employee, "public_key": "pk", "currency": "USD" })),
        "wallet",
    )
    .await;
    let wallet = opened["wallet_id"].as_str().unwrap().to_owned();
    let raise = json!({ "rate": { "amount": { "amount": "6000.00", "currency": "USD" }, "basis": "monthly" }, "effective_from": "2026-01-17", "reason": "promotion" });
    race(&world, Method::POST, &format!("/v1/employees/{employee}/pay-rate"), &processor, Some(raise), "raise").await;
    let period = json!({ "period": { "start": "2026-01-01", "end": "2026-01-31" } });
    let created = race(&world, Method::POST, "/v1/payroll-runs", &processor, Some(period), "run").await;
    let run = created["payroll_run_id"].as_str().unwrap().to_owned();
    race(&world, Method::POST, &format!("/v1/payroll-runs/{run}/calculate"), &processor, None, "calculate").await;
    assert_eq!(world.count_of("PayrollRunCalculated").await, 1);
    let second = world.second_processor.clone();
    race(&world, Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &second, None, "approve").await;
    race(&world, Method::POST, &format!("/v1/payroll-runs/{run}/process"), &processor, None, "process").await;
    assert_eq!(world.count_of("PayrollItemPaid").await, 1);
    let withdraw = json!({ "amount": { "amount": "1.00", "currency": "USD" }, "destination": "bank" });
    race(&world, Method::POST, &format!("/v1/wallets/{wallet}/withdrawals"), &processor, Some(withdraw), "withdraw")
        .await;
    assert_eq!(world.count_of("WalletDebited").await, 1);
    let reverse = json!({ "reason": "paid in error" });
    race(&world, Method::POST, &format!("/v1/payroll-runs/{run}/reverse"), &processor, Some(reverse), "reverse").await;
    assert_eq!(world.count_of("PayrollRunReversed").await, 1);
    let admin = world.admin.clone();
    let rule = json!({ "name": "Pension", "party": "employee", "calculation": { "kind": "percentage", "rate": "0.05" }, "liability_account": "pension" });
    race(&world, Method::PUT, "/v1/organization/rules/pension", &admin, Some(rule), "rule").await;
    race(&world, Method::DELETE, "/v1/organization/rules/pension", &admin, None, "remove rule").await;
    let currency = json!({ "code": "ACME", "scale": 3 });
    race(&world, Method::POST, "/v1/organization/currencies", &admin, Some(currency), "currency").await;
    let settings = json!({ "name": "Acme Inc." });
    race(&world, Method::POST, "/v1/organization/settings", &admin, Some(settings), "settings").await;
    let position = json!({ "position": "Lead", "department": "R&D", "effective_from": "2026-03-01" });
    race(&world, Method::POST, &format!("/v1/employees/{employee}/position"), &processor, Some(position), "position")
        .await;
    let terminate = json!({ "end_date": "2026-06-30", "reason": "moved" });
    race(
        &world,
        Method::POST,
        &format!("/v1/employees/{employee}/terminate"),
        &processor,
        Some(terminate),
        "terminate",
    )
    .await;
    let rehire = json!({ "start_date": "2026-09-01" });
    race(&world, Method::POST, &format!("/v1/employees/{employee}/rehire"), &processor, Some(rehire), "rehire").await;
    let other = json!({ "period": { "start": "2026-02-01", "end": "2026-02-28" } });
    let other_run = race(&world, Method::POST, "/v1/payroll-runs", &processor, Some(other), "second run").await;
    let other_run = other_run["payroll_run_id"].as_str().unwrap().to_owned();
    let void = json!({ "reason": "entered twice" });
    race(&world, Method::POST, &format!("/v1/payroll-runs/{other_run}/void"), &processor, Some(void), "void").await;
    // The same key with another body is a mismatch, not a replay.
    let (status, problem) = world
        .call(
            Method::POST,
            "/v1/organization/settings",
            &admin,
            Some(json!({ "name": "Other" })),
            Some("race-settings"),
        )
        .await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("idempotency_mismatch")));
    Arc::try_unwrap(world).ok().expect("no request is left").stop().await;
}
