//! The lifecycle over HTTP, idempotency, racing processors and an interrupted payment run.

use std::sync::Arc;

use ledger_app::Context;
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::World;

/// An amount as the API answers it: a decimal string, never a JSON number.
fn decimal(value: &Value) -> Decimal {
    match value {
        Value::String(text) => text.parse().unwrap(),
        other => panic!("not a decimal string: {other}"),
    }
}

/// The lifecycle as a client drives it, request after request on what the last answered:
/// longer than 70 lines on purpose (one story, read top to bottom like docs/api.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_lifecycle_over_http() {
    let world = World::new().await;
    world.register().await;
    let (raised, raised_wallet) = world.hire("5000.00", true).await;
    let (_, steady_wallet) = world.hire("3100.00", true).await;
    let (pending, _) = world.hire("4000.00", false).await;
    // A raise from Jan 17: (5,000 x 16 + 6,000 x 15) / 31 = 5,483.87; 10% tax 548.39.
    let raise = json!({ "rate": { "amount": { "amount": "6000.00", "currency": "USD" }, "basis": "monthly" }, "effective_from": "2026-01-17", "reason": "promotion" });
    world.ok(Method::POST, &format!("/v1/employees/{raised}/pay-rate"), &world.processor, Some(raise)).await;

    let run = world.calculated_run().await;
    let (status, body) = world.post(&format!("/v1/payroll-runs/{run}/approve"), &world.processor, json!({})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("self_approval")), "{body}");
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    let processed = world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    assert_eq!(processed["report"]["status"], "completed");
    assert_eq!((processed["report"]["paid"].as_u64(), processed["report"]["held"].as_u64()), (Some(2), Some(1)));
    let position = processed["position"].as_i64().unwrap();

    let items = world
        .ok(Method::GET, &format!("/v1/payroll-runs/{run}/items?wait_for_position={position}"), &world.processor, None)
        .await;
    let items = items["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3);
    for item in items.iter().filter(|item| item["status"] == "paid") {
        let transaction = item["transaction_id"].as_str().unwrap();
        let settle = json!({ "signature": format!("sig-{transaction}"), "block_hash": "EkSnNWid2cvwEVnVx9aBqawnmiCNiDgp3gUdkDPTKN1N" });
        world.ok(Method::POST, &format!("/v1/transactions/{transaction}/settle"), &world.processor, Some(settle)).await;
    }
    let held = items.iter().find(|item| item["employee_id"] == pending.as_str()).unwrap();
    assert_eq!(held["status"], "held");

    let last = world.head_position().await;
    let wait = format!("wait_for_position={last}");
    let register =
        world.ok(Method::GET, &format!("/v1/payroll-runs/{run}/register?{wait}"), &world.compliance, None).await;
    assert_eq!(decimal(&register["content"]["gross"]), "12583.87".parse::<Decimal>().unwrap(), "{register}");
    assert_eq!(register["content"]["items"], 3);
    // A line per item: its amounts as the item's text (scale kept), the hold named.
    let lines = register["content"]["lines"].as_array().unwrap();
    let line = |employee: &str| lines.iter().find(|line| line["employee_id"] == employee).unwrap();
    let raised_line = line(raised.as_str());
    assert_eq!(
        (&raised_line["gross"], &raised_line["deductions"], &raised_line["net"], &raised_line["hold"]),
        (&json!("5483.87"), &json!("548.39"), &json!("4935.48"), &json!(null)),
        "{register}"
    );
    assert_eq!(raised_line["status"], "paid");
    let held_line = line(pending.as_str());
    assert_eq!(
        (&held_line["status"], &held_line["hold"]["reason"]),
        (&json!("held"), &json!("kyc_not_approved")),
        "{register}"
    );
    let journal = world.ok(Method::GET, &format!("/v1/payroll-runs/{run}/journal"), &world.compliance, None).await;
    assert_eq!(journal["content"]["balanced"], true);

    let raised_balance =
        world.ok(Method::GET, &format!("/v1/wallets/{raised_wallet}?{wait}"), &world.processor, None).await;
    assert_eq!(decimal(&raised_balance["balance"]), "4935.48".parse::<Decimal>().unwrap()); // 5,483.87 - 548.39
    let steady_balance = world.ok(Method::GET, &format!("/v1/wallets/{steady_wallet}"), &world.processor, None).await;
    assert_eq!(decimal(&steady_balance["balance"]), "2790.00".parse::<Decimal>().unwrap());
    let paid = items.iter().find(|item| item["status"] == "paid").unwrap();
    let transaction = world
        .ok(
            Method::GET,
            &format!("/v1/transactions/{}", paid["transaction_id"].as_str().unwrap()),
            &world.processor,
            None,
        )
        .await;
    assert_eq!(transaction["status"], "settled");
    assert_eq!(transaction["log"].as_array().unwrap().len(), 2, "pending, then settled");

    let audit = world.ok(Method::GET, &format!("/v1/audit-logs?resource_id={run}&{wait}"), &world.auditor, None).await;
    let actions: Vec<&str> =
        audit["audit_logs"].as_array().unwrap().iter().map(|row| row["action"].as_str().unwrap()).collect();
    assert!(
        actions.starts_with(&[
            "PayrollRunCreated",
            "PayrollItemsCalculated",
            "PayrollRunCalculated",
            "PayrollRunApproved",
            "PayrollRunProcessingStarted"
        ]),
        "{actions:?}"
    );
    let approvals: Vec<&Value> =
        audit["audit_logs"].as_array().unwrap().iter().filter(|row| row["action"] == "PayrollRunApproved").collect();
    assert_eq!(approvals[0]["actor"], "person:bob", "the key's holder is recorded");
    assert_eq!(approvals[0]["role"], "processor");

    let verify = world.ok(Method::GET, "/v1/verify", &world.auditor, None).await;
    assert_eq!(verify["intact"], true, "{verify}");
    assert!(verify["report"]["events_checked"].as_u64().unwrap() > 20);

    // The replay of the raised employee before the raise shows the old rate.
    let (_, raise_events) =
        world.get(&format!("/v1/events?stream_id={raised}&event_type=EmployeePayRateChanged"), &world.auditor).await;
    let raise_position = raise_events["events"][0]["global_position"].as_i64().unwrap();
    let before = world
        .ok(
            Method::GET,
            &format!("/v1/replay/employee/{raised}?as_of_position={}", raise_position - 1),
            &world.auditor,
            None,
        )
        .await;
    assert_eq!(before["state"]["rates"].as_array().unwrap().len(), 1);
    // Every answer carries the request's correlation id: the client's, or a new one.
    let correlation = "0b6c8f0e-6a43-4c1e-9a43-5d0f2ab4c001";
    let echoed =
        world.client.get(world.url("/v1/nowhere")).header("x-correlation-id", correlation).send().await.unwrap();
    assert_eq!(echoed.headers()["x-correlation-id"], correlation);
    let minted = world.client.get(world.url("/health")).send().await.unwrap();
    assert!(minted.headers()["x-correlation-id"].to_str().unwrap().parse::<uuid::Uuid>().is_ok());
    let metrics = world.client.get(world.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("payroll_ledger_append_seconds_bucket")
            && metrics.contains("payroll_ledger_projection_lag_events{projection=\"wallet\"}"),
        "{metrics}"
    );
    // Requests by method, route (its template, not the path) and status.
    for series in [
        "payroll_ledger_http_requests_total{method=\"GET\",route=\"/v1/replay/{kind}/{id}\",status=\"200\"} 1",
        "payroll_ledger_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "payroll_ledger_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/replay/{kind}/{id}\",status=\"200\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing from {metrics}");
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_one_run_and_one_payment_per_item() {
    let world = World::new().await;
    world.register().await;
    world.hire("5000.00", true).await;
    world.hire("4000.00", true).await;
    let body = json!({ "period": { "start": "2026-01-01", "end": "2026-01-31" } });
    let (first_status, first) =
        world.call(Method::POST, "/v1/payroll-runs", &world.processor, Some(body.clone()), Some("january-run")).await;
    let (second_status, second) =
        world.call(Method::POST, "/v1/payroll-runs", &world.processor, Some(body.clone()), Some("january-run")).await;
    assert_eq!((first_status, second_status), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(first["payroll_run_id"], second["payroll_run_id"]);
    assert_eq!((first["replayed"].as_bool(), second["replayed"].as_bool()), (Some(false), Some(true)));
    assert_eq!(world.count_of("PayrollRunCreated").await, 1);

    let before = world.event_count().await;
    let other = json!({ "period": { "start": "2026-02-01", "end": "2026-02-28" } });
    let (status, problem) =
        world.call(Method::POST, "/v1/payroll-runs", &world.processor, Some(other), Some("january-run")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("idempotency_mismatch")));
    assert_eq!(world.event_count().await, before, "nothing written");

    let run = first["payroll_run_id"].as_str().unwrap();
    for _ in 0..2 {
        world
            .call(
                Method::POST,
                &format!("/v1/payroll-runs/{run}/calculate"),
                &world.processor,
                None,
                Some("january-calc"),
            )
            .await;
    }
    assert_eq!(world.count_of("PayrollRunCalculated").await, 1);
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    for _ in 0..2 {
        let (status, body) = world
            .call(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None, Some("january-pay"))
            .await;
        assert!(status.is_success(), "{body}");
    }
    assert_eq!(world.count_of("PayrollItemPaid").await, 2);
    assert_eq!(world.count_of("WalletCredited").await, 2);
    assert_eq!(world.count_of("TransactionRecorded").await, 2);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_approving_or_processing_at_once_have_one_effect() {
    let world = Arc::new(World::new().await);
    world.register().await;
    for _ in 0..6 {
        world.hire("3000.00", true).await;
    }
    let run = world.calculated_run().await;
    let approvals: Vec<_> = [world.second_processor.clone(), world.third_processor.clone()]
        .into_iter()
        .map(|key| {
            let (world, run) = (world.clone(), run.clone());
            tokio::spawn(async move { world.post(&format!("/v1/payroll-runs/{run}/approve"), &key, json!({})).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for approval in approvals {
        statuses.push(approval.await.unwrap().0);
    }
    statuses.sort();
    assert_eq!(statuses, vec![StatusCode::OK, StatusCode::UNPROCESSABLE_ENTITY]);
    assert_eq!(world.count_of("PayrollRunApproved").await, 1);

    let processes: Vec<_> = [world.processor.clone(), world.second_processor.clone()]
        .into_iter()
        .map(|key| {
            let (world, run) = (world.clone(), run.clone());
            tokio::spawn(async move { world.post(&format!("/v1/payroll-runs/{run}/process"), &key, json!({})).await })
        })
        .collect();
    for process in processes {
        let (status, body) = process.await.unwrap();
        assert!(status.is_success(), "{body}");
    }
    assert_eq!(world.count_of("PayrollItemPaid").await, 6);
    assert_eq!(world.count_of("WalletCredited").await, 6);
    assert_eq!(world.count_of("PayrollRunCompleted").await, 1);
    let world = Arc::into_inner(world).unwrap();
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_killed_half_way_pays_everyone_exactly_once_when_run_again() {
    let world = World::new().await;
    world.register().await;
    for _ in 0..30 {
        world.hire("2500.00", true).await;
    }
    let run = world.calculated_run().await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;

    // A processor paying one item per append, killed after its first payments.
    let ledger = ledger_server::server::unobserved_ledger(world.db.pool.clone()).with_pay_batch_items(1);
    let context = Context::system(world.organization, "processor-1");
    let run_id: uuid::Uuid = run.parse().unwrap();
    let task = {
        let (ledger, context) = (ledger.clone(), context.clone());
        tokio::spawn(async move { ledger_app::operations::process(&ledger, &context, run_id).await })
    };
    while world.count_of("PayrollItemPaid").await < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    task.abort();
    let _ = task.await;
    let paid_before = world.count_of("PayrollItemPaid").await;
    assert!(paid_before < 30, "the kill came half way ({paid_before} paid)");
    assert_eq!(world.count_of("PayrollRunCompleted").await, 0);

    let processed = world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    assert_eq!(processed["report"]["paid"].as_u64(), Some(30));
    // An append in flight when the task was killed may still commit after `paid_before` was
    // counted, so the second run pays at most the rest.
    let paid_now = processed["report"]["paid_now"].as_u64().unwrap();
    assert!(paid_now > 0 && paid_now <= 30 - paid_before as u64, "paid now {paid_now}, before {paid_before}");
    assert_eq!(world.count_of("PayrollItemPaid").await, 30);
    assert_eq!(world.count_of("WalletCredited").await, 30);
    let credited_twice: i64 = sqlx::query_scalar(
        "select count(*) from (select stream_id from ledger.events where event_type = 'WalletCredited' group by stream_id having count(*) > 1) twice",
    )
    .fetch_one(&world.db.pool)
    .await
    .unwrap();
    assert_eq!(credited_twice, 0, "nobody paid twice");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_and_names_every_route() {
    let world = World::new().await;
    let served: Value = world.client.get(world.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let checked_in: Value = serde_json::from_str(include_str!("../../../docs/openapi.json")).unwrap();
    assert_eq!(served, checked_in);
    let paths = served["paths"].as_object().unwrap();
    // Every route answers something other than the router's fallback, and is documented.
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", &uuid::Uuid::new_v4().to_string())
                .replace("{kind}", "employee")
                .replace("{rule_id}", "tax");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = world.client.request(method.clone(), world.url(&concrete)).send().await.unwrap();
            assert_ne!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed"
            );
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                !body["detail"].as_str().unwrap_or_default().contains("no such route"),
                "{method} {path} is documented but not routed"
            );
        }
    }
    let (status, body) = world.get("/v1/no-such-thing", &world.admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["detail"].as_str().unwrap().contains("no such route"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_run_is_reversed_once_under_races_and_retries() {
    let world = Arc::new(World::new().await);
    world.register().await;
    let mut wallets = Vec::new();
    for _ in 0..3 {
        wallets.push(world.hire("3000.00", true).await.1);
    }
    let run = world.calculated_run().await;
    let reason = json!({ "reason": "paid the wrong month" });
    let (status, problem) =
        world.post(&format!("/v1/payroll-runs/{run}/reverse"), &world.processor, reason.clone()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("wrong_status")),
        "not paid yet"
    );
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    let (status, _) = world.post(&format!("/v1/payroll-runs/{run}/reverse"), &world.processor, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a reversal needs a reason");

    let reversals: Vec<_> = ["reverse-a", "reverse-b"]
        .into_iter()
        .map(|key| {
            let (world, run, reason) = (world.clone(), run.clone(), reason.clone());
            tokio::spawn(async move {
                let path = format!("/v1/payroll-runs/{run}/reverse");
                (key, world.call(Method::POST, &path, &world.processor, Some(reason), Some(key)).await)
            })
        })
        .collect();
    let mut winner = None;
    for reversal in reversals {
        let (key, (status, body)) = reversal.await.unwrap();
        if status.is_success() {
            assert!(winner.replace(key).is_none(), "only one reversal succeeds");
        } else {
            assert!(matches!(status, StatusCode::UNPROCESSABLE_ENTITY | StatusCode::CONFLICT), "{status} {body}");
        }
    }
    let winner = winner.expect("one reversal succeeds");
    let (status, again) = world
        .call(Method::POST, &format!("/v1/payroll-runs/{run}/reverse"), &world.processor, Some(reason), Some(winner))
        .await;
    assert_eq!((status, again["replayed"].as_bool()), (StatusCode::OK, Some(true)));

    assert_eq!(world.count_of("PayrollRunReversed").await, 1);
    assert_eq!(world.count_of("TransactionRecorded").await, 6, "three payments, three reversals");
    assert_eq!(world.count_of("WalletDebited").await, 3);
    let position = again["position"].as_i64().unwrap();
    for wallet in &wallets {
        let balance = world
            .ok(Method::GET, &format!("/v1/wallets/{wallet}?wait_for_position={position}"), &world.processor, None)
            .await;
        assert_eq!(decimal(&balance["balance"]), Decimal::ZERO, "the net was taken back");
    }
    let world = Arc::into_inner(world).unwrap();
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_never_overdraw_under_races_retries_and_bad_input() {
    let world = Arc::new(World::new().await);
    world.register().await;
    let (_, wallet) = world.hire("1000.00", true).await;
    let run = world.calculated_run().await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    // Net pay: 1,000.00 less 10% tax = 900.00.
    let path = format!("/v1/wallets/{wallet}/withdrawals");
    let withdraw = |amount: &str| json!({ "amount": { "amount": amount, "currency": "USD" }, "destination": "bank:DE89370400440532013000" });

    let (status, problem) = world.post(&path, &world.processor, withdraw("900.01")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient_funds")));
    let (status, _) = world.post(&path, &world.processor, withdraw("0.001")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = world
        .post(&path, &world.processor, json!({ "amount": { "amount": "1.00", "currency": "USD" }, "destination": " " }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (first, once) =
        world.call(Method::POST, &path, &world.processor, Some(withdraw("100.00")), Some("payout-1")).await;
    let (second, twice) =
        world.call(Method::POST, &path, &world.processor, Some(withdraw("100.00")), Some("payout-1")).await;
    assert_eq!((first, second), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(once["transaction_id"], twice["transaction_id"]);
    assert_eq!(world.count_of("WalletDebited").await, 1);

    // 800.00 left: two withdrawals of 500.00 at once, only one fits.
    let racers: Vec<_> = ["payout-2", "payout-3"]
        .into_iter()
        .map(|key| {
            let (world, path, body) = (world.clone(), path.clone(), withdraw("500.00"));
            tokio::spawn(async move { world.call(Method::POST, &path, &world.processor, Some(body), Some(key)).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for racer in racers {
        statuses.push(racer.await.unwrap().0);
    }
    assert_eq!(statuses.iter().filter(|status| status.is_success()).count(), 1, "{statuses:?}");
    assert_eq!(world.count_of("WalletDebited").await, 2);
    let last = world.head_position().await;
    let balance =
        world.ok(Method::GET, &format!("/v1/wallets/{wallet}?wait_for_position={last}"), &world.processor, None).await;
    assert_eq!(decimal(&balance["balance"]), "300.00".parse::<Decimal>().unwrap());
    let world = Arc::into_inner(world).unwrap();
    world.stop().await;
}

/// The reports a completed run generated, listed with kind, status and time, paged and
/// filtered; another organization sees none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_reports_are_listed_with_kind_status_and_time() {
    let world = World::new().await;
    world.register().await;
    world.hire("5000.00", true).await;
    let run = world.calculated_run().await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    let processed = world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    let wait = format!("wait_for_position={}", processed["position"]);
    let listed = world.ok(Method::GET, &format!("/v1/compliance/reports?{wait}"), &world.compliance, None).await;
    let reports = listed["reports"].as_array().unwrap();
    let kinds: Vec<&str> = reports.iter().map(|report| report["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["journal", "payroll_register"], "{listed}");
    for report in reports {
        assert_eq!((&report["payroll_run_id"], &report["status"]), (&json!(run), &json!("generated")), "{report}");
        assert_eq!((&report["run_status"], &report["period_start"]), (&json!("completed"), &json!("2026-01-01")));
        assert!(report["generated_at"].is_string());
        let content = world.ok(Method::GET, report["href"].as_str().unwrap(), &world.compliance, None).await;
        assert_eq!(content["kind"], report["kind"], "{content}");
    }
    assert_eq!(listed["next_cursor"], Value::Null);

    // A page at a time, and filtered.
    let first = world.ok(Method::GET, "/v1/compliance/reports?limit=1", &world.auditor, None).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second =
        world.ok(Method::GET, &format!("/v1/compliance/reports?limit=1&after={cursor}"), &world.auditor, None).await;
    assert_eq!(
        (first["reports"][0]["kind"].as_str(), second["reports"][0]["kind"].as_str()),
        (Some("journal"), Some("payroll_register"))
    );
    let after_last = second["next_cursor"].as_str().unwrap().to_owned();
    let third = world
        .ok(Method::GET, &format!("/v1/compliance/reports?limit=1&after={after_last}"), &world.auditor, None)
        .await;
    assert_eq!((third["reports"].as_array().unwrap().len(), &third["next_cursor"]), (0, &Value::Null));
    let journals = world.ok(Method::GET, "/v1/compliance/reports?kind=journal", &world.auditor, None).await;
    assert_eq!(journals["reports"].as_array().unwrap().len(), 1);
    let none = world
        .ok(
            Method::GET,
            &format!("/v1/compliance/reports?payroll_run_id={}", uuid::Uuid::new_v4()),
            &world.auditor,
            None,
        )
        .await;
    assert_eq!(none["reports"], json!([]));

    for bad in ["kind=payslip", "limit=0", "after=yesterday"] {
        let (status, problem) = world.get(&format!("/v1/compliance/reports?{bad}"), &world.auditor).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }
    let (status, _) = world.get("/v1/compliance/reports", &world.processor).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let theirs = world.ok(Method::GET, "/v1/compliance/reports", &world.other_admin, None).await;
    assert_eq!(theirs["reports"], json!([]), "another organization's reports are not listed");
    world.stop().await;
}
