//! After a run is paid: a reversal killed half way and resumed, held and failed items paid
//! once their cause clears, payments the rail refuses, settlements in bulk. Each write path
//! raced, repeated, and fed bad input.

use std::sync::Arc;

use ledger_app::Context;
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::World;

fn decimal(value: &Value) -> Decimal {
    value.as_str().unwrap().parse().unwrap()
}

async fn wallet_balance(world: &World, wallet: &str) -> Decimal {
    let position = world.head_position().await;
    let body = world
        .ok(Method::GET, &format!("/v1/wallets/{wallet}?wait_for_position={position}"), &world.processor, None)
        .await;
    decimal(&body["balance"])
}

async fn items(world: &World, run: &str) -> Vec<Value> {
    let position = world.head_position().await;
    let page = world
        .ok(Method::GET, &format!("/v1/payroll-runs/{run}/items?wait_for_position={position}"), &world.processor, None)
        .await;
    page["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_killed_half_way_is_resumed_and_reverses_everyone_once() {
    let world = World::new().await;
    world.register().await;
    let mut wallets = Vec::new();
    for _ in 0..12 {
        wallets.push(world.hire("2500.00", true).await.1);
    }
    let run = world.calculated_run().await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;

    // A reverser taking one item per append, killed after its first batches.
    let ledger = ledger_server::server::unobserved_ledger(world.db.pool.clone()).with_pay_batch_items(1);
    let context = Context::system(world.organization, "reverser-1");
    let run_id: uuid::Uuid = run.parse().unwrap();
    let task = {
        let (ledger, context) = (ledger.clone(), context.clone());
        tokio::spawn(async move {
            ledger_app::operations::reverse(&ledger, &context, run_id, "paid the wrong month".into()).await
        })
    };
    while world.count_of("PayrollItemsReversed").await < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    task.abort();
    let _ = task.await;
    assert_eq!(world.count_of("PayrollRunReversed").await, 0, "killed before the end");
    let position = world.head_position().await;
    let shown = world
        .ok(Method::GET, &format!("/v1/payroll-runs/{run}?wait_for_position={position}"), &world.processor, None)
        .await;
    assert_eq!(shown["status"], "reversing");
    // While it is reversing, its period is not free.
    let (status, _) = world
        .post("/v1/payroll-runs", &world.processor, json!({ "period": { "start": "2026-01-01", "end": "2026-01-31" } }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Any request resumes it; every item is reversed once, by bounded events.
    let reason = json!({ "reason": "paid the wrong month" });
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/reverse"), &world.processor, Some(reason.clone())).await;
    assert_eq!(world.count_of("PayrollRunReversed").await, 1);
    assert_eq!(world.count_of("PayPeriodReleased").await, 1);
    let reversed_items: i64 = sqlx::query_scalar(
        "select coalesce(sum(jsonb_array_length(payload -> 'items')), 0) from ledger.events where event_type = 'PayrollItemsReversed'",
    )
    .fetch_one(&world.db.pool)
    .await
    .unwrap();
    assert_eq!(reversed_items, 12, "each paid item reversed once");
    let largest: i32 = sqlx::query_scalar(
        "select max(jsonb_array_length(payload -> 'items')) from ledger.events where event_type = 'PayrollItemsReversed'",
    )
    .fetch_one(&world.db.pool)
    .await
    .unwrap();
    assert!(largest <= 500, "a batch is bounded: {largest}");
    assert_eq!(world.count_of("TransactionRecorded").await, 24, "twelve payments, twelve reversals");
    assert_eq!(world.count_of("WalletDebited").await, 12);
    for wallet in &wallets {
        assert_eq!(wallet_balance(&world, wallet).await, Decimal::ZERO, "the net was taken back once");
    }
    assert!(items(&world, &run).await.iter().all(|item| item["status"] == "reversed"));
    // Reversed: a second reversal is refused, and January can be paid by a new run.
    let (status, problem) = world.post(&format!("/v1/payroll-runs/{run}/reverse"), &world.processor, reason).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("wrong_status")));
    let again = world
        .post("/v1/payroll-runs", &world.processor, json!({ "period": { "start": "2026-01-01", "end": "2026-01-31" } }))
        .await;
    assert_eq!(again.0, StatusCode::CREATED, "{}", again.1);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_and_failed_items_are_paid_once_their_cause_clears() {
    let world = Arc::new(World::new().await);
    world.register().await;
    let (paid, _) = world.hire("3000.00", true).await;
    let (pending_kyc, pending_wallet) = world.hire("4000.00", false).await;
    // No wallet for this one: its payment fails.
    let hire = json!({
        "personal": { "full_name": "Walter", "email": null, "address": null }, "position": "Clerk", "department": "Ops",
        "rate": { "amount": { "amount": "2000.00", "currency": "USD" }, "basis": "monthly" }, "start_date": "2025-06-01"
    });
    let walletless = world.ok(Method::POST, "/v1/employees", &world.processor, Some(hire)).await;
    let walletless = walletless["employee_id"].as_str().unwrap().to_owned();
    world
        .ok(
            Method::POST,
            &format!("/v1/employees/{walletless}/kyc"),
            &world.processor,
            Some(json!({ "status": "approved" })),
        )
        .await;

    let run = world.calculated_run().await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    let report = world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    assert_eq!(
        (report["report"]["paid"].as_u64(), report["report"]["held"].as_u64(), report["report"]["failed"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(report["report"]["status"], "partially_failed");

    // Still held: releasing it is refused, naming why; nothing written.
    let release = format!("/v1/payroll-runs/{run}/items/{pending_kyc}/release");
    let before = world.event_count().await;
    let (status, problem) = world.post(&release, &world.processor, json!(null)).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("item_held")), "{problem}");
    assert_eq!(world.event_count().await, before);
    let (status, _) =
        world.post(&format!("/v1/payroll-runs/{run}/items/{paid}/release"), &world.processor, json!(null)).await;
    assert_eq!(status, StatusCode::OK, "a paid item released pays nothing more");
    assert_eq!(world.count_of("PayrollItemPaid").await, 1);

    // KYC approved: racing releases pay it once.
    world
        .ok(
            Method::POST,
            &format!("/v1/employees/{pending_kyc}/kyc"),
            &world.processor,
            Some(json!({ "status": "approved" })),
        )
        .await;
    let racers: Vec<_> = (0..4)
        .map(|n| {
            let (world, release) = (world.clone(), release.clone());
            tokio::spawn(async move {
                world.call(Method::POST, &release, &world.processor, None, Some(&format!("release-{n}"))).await
            })
        })
        .collect();
    for racer in racers {
        let (status, body) = racer.await.unwrap();
        assert!(status.is_success() || status == StatusCode::CONFLICT, "{status} {body}");
    }
    assert_eq!(world.count_of("PayrollItemPaid").await, 2);
    assert_eq!(wallet_balance(&world, &pending_wallet).await, "3600.00".parse::<Decimal>().unwrap());

    // A wallet opened for the other: processing the completed run again pays it, once.
    let wallet = json!({ "employee_id": walletless, "public_key": "pk-walter", "currency": "USD" });
    let opened = world.ok(Method::POST, "/v1/wallets", &world.processor, Some(wallet)).await;
    let report = world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    assert_eq!(
        (report["report"]["paid_now"].as_u64(), report["report"]["status"].as_str()),
        (Some(1), Some("completed"))
    );
    let again = world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    assert_eq!(again["report"]["paid_now"].as_u64(), Some(0));
    assert_eq!(world.count_of("PayrollItemPaid").await, 3);
    assert_eq!(
        wallet_balance(&world, opened["wallet_id"].as_str().unwrap()).await,
        "1800.00".parse::<Decimal>().unwrap()
    );
    assert!(items(&world, &run).await.iter().all(|item| item["status"] == "paid"));

    // The register and journal are regenerated and the journal still balances.
    let journal = world.ok(Method::GET, &format!("/v1/payroll-runs/{run}/journal"), &world.compliance, None).await;
    assert_eq!(journal["content"]["balanced"], true, "{journal}");
    let world = Arc::into_inner(world).unwrap();
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_the_rail_refuses_is_taken_back_and_paid_again_and_settlements_go_in_bulk() {
    let world = World::new().await;
    world.register().await;
    let (first, first_wallet) = world.hire("3000.00", true).await;
    let (second, second_wallet) = world.hire("2000.00", true).await;
    let run = world.calculated_run().await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    let paid = items(&world, &run).await;
    let payment = |employee: &str| {
        let item = paid.iter().find(|item| item["employee_id"] == employee).unwrap();
        item["transaction_id"].as_str().unwrap().to_owned()
    };
    let (first_tx, second_tx) = (payment(&first), payment(&second));
    let wallet_of = |tx: &str| if tx == first_tx { &first_wallet } else { &second_wallet };

    // Bad input, nothing written: no reason, an unknown transaction, a wallet that spent it.
    let before = world.event_count().await;
    let (status, _) = world.post(&format!("/v1/transactions/{first_tx}/fail"), &world.processor, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let unknown = uuid::Uuid::new_v4();
    let (status, _) =
        world.post(&format!("/v1/transactions/{unknown}/fail"), &world.processor, json!({ "reason": "x" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let spender = wallet_of(&second_tx).clone();
    let withdraw = json!({ "amount": { "amount": "100.00", "currency": "USD" }, "destination": "bank" });
    world.ok(Method::POST, &format!("/v1/wallets/{spender}/withdrawals"), &world.processor, Some(withdraw)).await;
    let before_spent = world.event_count().await;
    let (status, problem) = world
        .post(&format!("/v1/transactions/{second_tx}/fail"), &world.processor, json!({ "reason": "bounced" }))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient_funds")),
        "{problem}"
    );
    assert_eq!(world.event_count().await, before_spent, "nothing written");
    assert!(before_spent > before);

    // The rail refuses the first payment: repeated with its key, recorded once.
    let fail = format!("/v1/transactions/{first_tx}/fail");
    let body = json!({ "reason": "account closed at the bank" });
    let one = world.call(Method::POST, &fail, &world.processor, Some(body.clone()), Some("fail-1")).await;
    let two = world.call(Method::POST, &fail, &world.processor, Some(body.clone()), Some("fail-1")).await;
    assert_eq!((one.0, two.0, two.1["replayed"].as_bool()), (StatusCode::OK, StatusCode::OK, Some(true)));
    assert_eq!(world.count_of("TransactionFailed").await, 1);
    assert_eq!(world.count_of("PayrollItemPaymentFailed").await, 1);
    assert_eq!(wallet_balance(&world, wallet_of(&first_tx)).await, Decimal::ZERO);
    let (status, _) = world.post(&fail, &world.processor, body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "failed already");
    let position = world.head_position().await;
    let shown = world
        .ok(Method::GET, &format!("/v1/payroll-runs/{run}?wait_for_position={position}"), &world.processor, None)
        .await;
    assert_eq!(shown["status"], "partially_failed");

    // Processing again pays it by a new transaction.
    let report = world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    assert_eq!(
        (report["report"]["paid_now"].as_u64(), report["report"]["status"].as_str()),
        (Some(1), Some("completed"))
    );
    let repaid = items(&world, &run).await;
    let transactions: Vec<String> =
        repaid.iter().map(|item| item["transaction_id"].as_str().unwrap().to_owned()).collect();
    assert!(!transactions.contains(&first_tx), "a new payment");
    // 3,000.00 less the 10 % tax, once.
    assert_eq!(wallet_balance(&world, wallet_of(&first_tx)).await, "2700.00".parse::<Decimal>().unwrap());

    // Bulk settlement: all or nothing, naming the bad entry; repeated, nothing more.
    let entry = |tx: &str| json!({ "transaction_id": tx, "signature": format!("sig-{tx}"), "block_hash": "block-1" });
    let before = world.event_count().await;
    let bad = json!({ "settlements": [entry(&transactions[0]), entry(&uuid::Uuid::new_v4().to_string())] });
    let (status, problem) = world.post("/v1/transactions/settlements", &world.processor, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("settlements[1]"), "{problem}");
    let failed_one = json!({ "settlements": [entry(&first_tx)] });
    let (status, problem) = world.post("/v1/transactions/settlements", &world.processor, failed_one).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a failed payment is not settled: {problem}");
    assert_eq!(world.event_count().await, before, "nothing written");
    let all = json!({ "settlements": transactions.iter().map(|tx| entry(tx)).collect::<Vec<_>>() });
    world.ok(Method::POST, "/v1/transactions/settlements", &world.processor, Some(all.clone())).await;
    world.ok(Method::POST, "/v1/transactions/settlements", &world.processor, Some(all)).await;
    assert_eq!(world.count_of("TransactionSettled").await, 2);
    // A settled payment cannot be failed.
    let (status, problem) = world
        .post(&format!("/v1/transactions/{}/fail", transactions[0]), &world.processor, json!({ "reason": "x" }))
        .await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("wrong_status")));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retro_line_two_runs_calculated_at_once_both_carry_is_paid_once() {
    let world = World::new().await;
    world.register().await;
    let (employee, wallet) = world.hire("5000.00", true).await;
    let month = |m: u32| {
        let end = chrono::NaiveDate::from_ymd_opt(2026, m + 1, 1).unwrap().pred_opt().unwrap();
        json!({ "period": { "start": format!("2026-{m:02}-01"), "end": end.to_string() } })
    };
    let january = create_and_calculate(&world, month(1)).await;
    pay(&world, &january).await;
    // A raise backdated into January, then February and March calculated before either is
    // paid: both carry January's retro line.
    let raise = json!({ "rate": { "amount": { "amount": "6000.00", "currency": "USD" }, "basis": "monthly" }, "effective_from": "2026-01-01", "reason": "backdated" });
    world.ok(Method::POST, &format!("/v1/employees/{employee}/pay-rate"), &world.processor, Some(raise)).await;
    let february = create_and_calculate(&world, month(2)).await;
    let march = create_and_calculate(&world, month(3)).await;
    pay(&world, &february).await;
    let report = pay(&world, &march).await;
    // March's item is out of date: refused, not paid; the retro line was paid once.
    assert_eq!((report["report"]["paid"].as_u64(), report["report"]["failed"].as_u64()), (Some(0), Some(1)));
    let march_items = items(&world, &march).await;
    assert!(
        march_items[0]["failure_reason"].as_str().unwrap().starts_with("calculation out of date"),
        "{march_items:?}"
    );
    // Processing again does not retry it.
    let again = world.ok(Method::POST, &format!("/v1/payroll-runs/{march}/process"), &world.processor, None).await;
    assert_eq!(again["report"]["paid_now"].as_u64(), Some(0));
    // January 6,000 (5,000 + 1,000 retro once), February 6,000; April pays March and April.
    let april = create_and_calculate(&world, month(4)).await;
    pay(&world, &april).await;
    // 6,000 × 4 months less 10 % tax.
    assert_eq!(wallet_balance(&world, &wallet).await, "21600.00".parse::<Decimal>().unwrap());
    world.stop().await;
}

async fn pay(world: &World, run: &str) -> Value {
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await
}

async fn create_and_calculate(world: &World, body: Value) -> String {
    let created = world.ok(Method::POST, "/v1/payroll-runs", &world.processor, Some(body)).await;
    let run = created["payroll_run_id"].as_str().unwrap().to_owned();
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/calculate"), &world.processor, None).await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_refusals_settlements_and_line_additions_each_have_one_effect() {
    let world = Arc::new(World::new().await);
    world.register().await;
    let (alice, _) = world.hire("3000.00", true).await;
    let run = world.calculated_run().await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    let paid = items(&world, &run).await;
    let transaction = paid[0]["transaction_id"].as_str().unwrap().to_owned();

    // Four refusals of one payment at once, each its own request: one is recorded.
    let refusals: Vec<_> = (0..4)
        .map(|n| {
            let (world, path) = (world.clone(), format!("/v1/transactions/{transaction}/fail"));
            tokio::spawn(async move {
                let body = json!({ "reason": format!("refused {n}") });
                world.call(Method::POST, &path, &world.processor, Some(body), Some(&format!("refuse-{n}"))).await
            })
        })
        .collect();
    let mut recorded = 0;
    for refusal in refusals {
        let (status, body) = refusal.await.unwrap();
        if status.is_success() {
            recorded += 1;
        } else {
            assert!(matches!(status, StatusCode::UNPROCESSABLE_ENTITY | StatusCode::CONFLICT), "{status} {body}");
        }
    }
    assert_eq!((recorded, world.count_of("TransactionFailed").await), (1, 1));
    assert_eq!(world.count_of("PayrollItemPaymentFailed").await, 1);
    assert_eq!(world.count_of("EmployeePayTakenBack").await, 1);

    // Paid anew; the same settlements sent twice at once: each payment settled once.
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    let repaid = items(&world, &run).await[0]["transaction_id"].as_str().unwrap().to_owned();
    let body = json!({ "settlements": [{ "transaction_id": repaid, "signature": "sig", "block_hash": "block" }] });
    let settlers: Vec<_> = (0..2)
        .map(|_| {
            let (world, body) = (world.clone(), body.clone());
            tokio::spawn(async move {
                world.call(Method::POST, "/v1/transactions/settlements", &world.processor, Some(body), None).await
            })
        })
        .collect();
    for settler in settlers {
        let (status, body) = settler.await.unwrap();
        assert!(status.is_success() || status == StatusCode::CONFLICT, "{status} {body}");
    }
    assert_eq!(world.count_of("TransactionSettled").await, 1);

    // An off-cycle run's lines added with one key twice: added once.
    let created = world
        .ok(
            Method::POST,
            "/v1/payroll-runs",
            &world.processor,
            Some(json!({ "period": { "start": "2026-01-01", "end": "2026-01-31" }, "off_cycle_reason": "bonus" })),
        )
        .await;
    let bonus = created["payroll_run_id"].as_str().unwrap().to_owned();
    let lines = json!({ "lines": [{ "employee_id": alice, "lines": [{ "category": "bonus", "code": "B", "amount": { "amount": "100.00", "currency": "USD" } }] }] });
    for _ in 0..2 {
        let (status, _) = world
            .call(
                Method::POST,
                &format!("/v1/payroll-runs/{bonus}/lines"),
                &world.processor,
                Some(lines.clone()),
                Some("lines-1"),
            )
            .await;
        assert!(status.is_success());
    }
    assert_eq!(world.count_of("OffCycleLinesAdded").await, 1);
    let world = Arc::into_inner(world).unwrap();
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_processors_of_a_completed_run_pay_a_released_item_once() {
    let world = Arc::new(World::new().await);
    world.register().await;
    let hire = json!({
        "personal": { "full_name": "Walter", "email": null, "address": null }, "position": "Clerk", "department": "Ops",
        "rate": { "amount": { "amount": "2000.00", "currency": "USD" }, "basis": "monthly" }, "start_date": "2025-06-01"
    });
    let walletless = world.ok(Method::POST, "/v1/employees", &world.processor, Some(hire)).await;
    let walletless = walletless["employee_id"].as_str().unwrap().to_owned();
    let kyc = json!({ "status": "approved" });
    world.ok(Method::POST, &format!("/v1/employees/{walletless}/kyc"), &world.processor, Some(kyc)).await;
    let run = world.calculated_run().await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    assert_eq!(world.count_of("PayrollItemFailed").await, 1);
    let wallet = json!({ "employee_id": walletless, "public_key": "pk-walter", "currency": "USD" });
    world.ok(Method::POST, "/v1/wallets", &world.processor, Some(wallet)).await;
    // The wallet's read row is what the release looks at.
    let position = world.head_position().await;
    world.ok(Method::GET, &format!("/v1/wallets?wait_for_position={position}"), &world.processor, None).await;
    let processors: Vec<_> = (0..3)
        .map(|_| {
            let (world, path) = (world.clone(), format!("/v1/payroll-runs/{run}/process"));
            tokio::spawn(async move { world.call(Method::POST, &path, &world.processor, None, None).await })
        })
        .collect();
    for processor in processors {
        let (status, body) = processor.await.unwrap();
        assert!(status.is_success() || status == StatusCode::CONFLICT, "{status} {body}");
    }
    assert_eq!(world.count_of("PayrollItemPaid").await, 1, "paid once");
    assert_eq!(world.count_of("WalletCredited").await, 1);
    let world = Arc::into_inner(world).unwrap();
    world.stop().await;
}
