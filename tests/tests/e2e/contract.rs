//! The HTTP contract is the served OpenAPI document: every read answers what its schema
//! says, and no amount is ever a JSON number.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::World;

/// The schema of an operation's 200 answer, with the document's components beside it so
/// that its `$ref`s resolve.
fn answer_schema(document: &Value, path: &str, method: &str) -> Value {
    let content = &document["paths"][path][method]["responses"]["200"]["content"];
    let schema = content["application/json"]["schema"].clone();
    assert!(!schema.is_null(), "{method} {path} documents no JSON answer: {content}");
    json!({ "allOf": [schema], "components": document["components"] })
}

/// Every number in an answer is an integer (a position, a count, a version): amounts and
/// rates are decimal strings, never floats.
fn assert_no_fractional_numbers(value: &Value, at: &str) {
    match value {
        Value::Number(number) => assert!(number.is_i64() || number.is_u64(), "{at} is the number {number}"),
        Value::Array(items) => items.iter().enumerate().for_each(|(index, item)| {
            assert_no_fractional_numbers(item, &format!("{at}[{index}]"));
        }),
        Value::Object(fields) => {
            fields.iter().for_each(|(name, field)| assert_no_fractional_numbers(field, &format!("{at}.{name}")))
        }
        _ => {}
    }
}

/// A payroll paid end to end, then every read of it checked against the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_answers_what_its_schema_says_and_amounts_are_strings() {
    let world = World::new().await;
    world.register().await;
    let (employee, wallet) = world.hire("5000.00", true).await;
    world.hire("4000.00", false).await;
    let raise = json!({ "rate": { "amount": { "amount": "6000.00", "currency": "USD" }, "basis": "monthly" }, "effective_from": "2026-01-17", "reason": "promotion" });
    world.ok(Method::POST, &format!("/v1/employees/{employee}/pay-rate"), &world.processor, Some(raise)).await;
    let run = world.calculated_run().await;
    let preview = world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/preview"), &world.processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    let processed = world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    let wait = format!("wait_for_position={}", processed["position"]);
    let items = world.ok(Method::GET, &format!("/v1/payroll-runs/{run}/items?{wait}"), &world.processor, None).await;
    let transaction = items["items"].as_array().unwrap().iter().find_map(|item| item["transaction_id"].as_str());
    let transaction = transaction.expect("a paid item").to_owned();
    let settle = json!({ "signature": "sig", "block_hash": "block" });
    let settled =
        world.ok(Method::POST, &format!("/v1/transactions/{transaction}/settle"), &world.processor, Some(settle)).await;
    let wait = format!("wait_for_position={}", settled["position"]);

    let document: Value = world.client.get(world.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let reads = [
        ("/v1/organization", format!("/v1/organization?{wait}"), &world.processor),
        ("/v1/employees", format!("/v1/employees?{wait}"), &world.processor),
        ("/v1/employees/{id}", format!("/v1/employees/{employee}"), &world.processor),
        ("/v1/employees/{id}/history", format!("/v1/employees/{employee}/history"), &world.processor),
        ("/v1/wallets", "/v1/wallets".to_owned(), &world.processor),
        ("/v1/wallets/{id}", format!("/v1/wallets/{wallet}"), &world.processor),
        ("/v1/wallets/{id}/statement", format!("/v1/wallets/{wallet}/statement"), &world.processor),
        ("/v1/transactions/{id}", format!("/v1/transactions/{transaction}"), &world.processor),
        ("/v1/payroll-runs", "/v1/payroll-runs".to_owned(), &world.processor),
        ("/v1/payroll-runs/{id}", format!("/v1/payroll-runs/{run}"), &world.processor),
        ("/v1/payroll-runs/{id}/items", format!("/v1/payroll-runs/{run}/items"), &world.processor),
        ("/v1/payroll-runs/{id}/register", format!("/v1/payroll-runs/{run}/register"), &world.compliance),
        ("/v1/payroll-runs/{id}/journal", format!("/v1/payroll-runs/{run}/journal"), &world.compliance),
        ("/v1/audit-logs", "/v1/audit-logs".to_owned(), &world.auditor),
        ("/v1/events", "/v1/events".to_owned(), &world.auditor),
        ("/v1/verify", "/v1/verify".to_owned(), &world.auditor),
        ("/v1/replay/{kind}/{id}", format!("/v1/replay/wallet/{wallet}"), &world.auditor),
        ("/v1/replay/{kind}/{id}", format!("/v1/replay/employee/{employee}"), &world.auditor),
        ("/v1/replay/{kind}/{id}", format!("/v1/replay/payroll_run/{run}"), &world.auditor),
        ("/v1/replay/{kind}/{id}", format!("/v1/replay/transaction/{transaction}"), &world.auditor),
        ("/v1/replay/{kind}/{id}", format!("/v1/replay/account/wallet:{wallet}"), &world.auditor),
        ("/ready", "/ready".to_owned(), &world.auditor),
    ];
    let mut answers = vec![
        ("/v1/payroll-runs/{id}/preview", "post", preview),
        ("/v1/payroll-runs/{id}/process", "post", processed),
        ("/v1/transactions/{id}/settle", "post", settled),
    ];
    for (path, concrete, key) in reads {
        let (status, body) = world.get(&concrete, key).await;
        assert_eq!(status, StatusCode::OK, "GET {concrete}: {body}");
        answers.push((path, "get", body));
    }
    for (path, method, body) in &answers {
        let schema = answer_schema(&document, path, method);
        let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(body).map(|error| format!("{error} at {}", error.instance_path())).collect();
        assert!(errors.is_empty(), "{method} {path} answers outside its schema: {errors:#?}\n{body:#}");
        assert_no_fractional_numbers(body, path);
    }
    // The check can fail: a balance as a number, or a wallet without its currency, is not a
    // wallet.
    let wallet_schema = answer_schema(&document, "/v1/wallets/{id}", "get");
    let validator = jsonschema::options().should_validate_formats(true).build(&wallet_schema).unwrap();
    let (_, mut wrong) = world.get(&format!("/v1/wallets/{wallet}"), &world.processor).await;
    assert!(validator.is_valid(&wrong));
    wrong["balance"] = json!(4935.48);
    assert!(!validator.is_valid(&wrong));
    wrong["balance"] = json!("4935.48");
    wrong.as_object_mut().unwrap().remove("currency");
    assert!(!validator.is_valid(&wrong));
    // Amounts carry their currency's decimals.
    let balance = world.ok(Method::GET, &format!("/v1/wallets/{wallet}"), &world.processor, None).await;
    assert_eq!(balance["balance"], json!("4935.48"), "{balance}");
    let run = world.ok(Method::GET, &format!("/v1/payroll-runs/{run}"), &world.processor, None).await;
    assert!(run["gross"].as_str().is_some_and(|gross| gross.ends_with(".87")), "{run}");
    let run_id = run["payroll_run_id"].as_str().unwrap();
    let register = world.ok(Method::GET, &format!("/v1/payroll-runs/{run_id}/register"), &world.compliance, None).await;
    assert_eq!((&register["currency"], &register["content"]["gross"]), (&json!("USD"), &run["gross"]), "{register}");
    world.stop().await;
}

/// All pages of `/v1/events` from `after` on, following `next_cursor`; returns the events and
/// the cursor of the last one.
async fn page_events(world: &World, mut after: Option<String>) -> (Vec<Value>, Option<String>) {
    let mut events = Vec::new();
    loop {
        let path = match &after {
            Some(after) => format!("/v1/events?limit=5&after={after}"),
            None => "/v1/events?limit=5".to_owned(),
        };
        let (status, page) = world.get(&path, &world.auditor).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page_events = page["events"].as_array().unwrap().clone();
        if let Some(last) = page_events.last() {
            after = Some(format!("{}-{}", last["transaction_id"], last["global_position"]));
        }
        let full = !page["next_cursor"].is_null();
        if full {
            assert_eq!(page["next_cursor"].as_str(), after.as_deref(), "next_cursor names the last event");
        }
        events.extend(page_events);
        if !full {
            return (events, after);
        }
    }
}

/// An auditor tailing `/v1/events` by cursor sees every event once: events whose
/// transaction is younger than one still open are held back, not skipped, and come once it
/// ends. The export streams the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_cursor_misses_nothing_that_commits_late_and_the_export_has_it_all() {
    let world = World::new().await;
    world.register().await;
    // Everything so far, once the cluster's horizon (other tests' transactions) lets it.
    let (mut first_pages, mut after) = page_events(&world, None).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while first_pages.len() < world.organization_event_count().await as usize && std::time::Instant::now() < deadline {
        let (more, next) = page_events(&world, after).await;
        first_pages.extend(more);
        after = next;
    }
    // An older transaction still open: what commits after it waits behind it.
    let mut older = world.db.pool.begin().await.unwrap();
    sqlx::query("select pg_current_xact_id()").execute(&mut *older).await.unwrap();
    world.hire("5000.00", true).await;
    let (held, after) = page_events(&world, after).await;
    assert!(held.is_empty(), "events younger than an open transaction are held back: {held:?}");
    older.commit().await.unwrap();
    let mut seen = first_pages;
    let mut after = after;
    let total = world.organization_event_count().await as usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.len() < total && std::time::Instant::now() < deadline {
        let (more, next) = page_events(&world, after).await;
        seen.extend(more);
        after = next;
    }
    let positions: std::collections::HashSet<i64> =
        seen.iter().map(|event| event["global_position"].as_i64().unwrap()).collect();
    assert_eq!((seen.len(), positions.len()), (total, total), "every event once");
    // A bare position names the event there; anything else is a 400 naming `after`.
    let second = seen[1]["global_position"].as_i64().unwrap();
    let (status, from_position) = world.get(&format!("/v1/events?after={second}"), &world.auditor).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(from_position["events"].as_array().unwrap().len(), total - 2);
    let (status, problem) = world.get("/v1/events?after=yesterday", &world.auditor).await;
    assert_eq!(
        (status, problem["detail"].as_str().map(|detail| detail.starts_with("after"))),
        (StatusCode::BAD_REQUEST, Some(true))
    );
    let export = world.client.get(world.url("/v1/events/export")).bearer_auth(&world.auditor).send().await.unwrap();
    let lines = export.text().await.unwrap().lines().count();
    assert_eq!(lines, total);
    world.stop().await;
}

/// An auditor paging `/v1/audit-logs` by cursor while hires race sees every event's row
/// once: rows appear in the order the compliance projection applies the log, and the cursor
/// follows that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_cursor_sees_every_row_once_while_writers_race() {
    let world = std::sync::Arc::new(World::new().await);
    world.register().await;
    let hires: Vec<_> = (0..6)
        .map(|_| {
            let world = world.clone();
            tokio::spawn(async move {
                for _ in 0..3 {
                    world.hire("1000.00", true).await;
                }
            })
        })
        .collect();
    let (mut seen, mut after): (Vec<Value>, Option<String>) = (Vec::new(), None);
    let page = |after: &Option<String>| {
        let path = match after {
            Some(after) => format!("/v1/audit-logs?limit=4&after={after}"),
            None => "/v1/audit-logs?limit=4".to_owned(),
        };
        let world = world.clone();
        async move { world.get(&path, &world.auditor).await }
    };
    let mut writers_done = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = page(&after).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rows = body["audit_logs"].as_array().unwrap().clone();
        if let Some(last) = rows.last() {
            after = Some(format!("{}-{}", last["transaction_id"], last["global_position"]));
        }
        seen.extend(rows);
        if !writers_done && hires.iter().all(|hire| hire.is_finished()) {
            writers_done = true;
        }
        let total = world.organization_event_count().await as usize;
        if writers_done && seen.len() >= total || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for hire in hires {
        hire.await.unwrap();
    }
    let positions: std::collections::HashSet<i64> =
        seen.iter().map(|row| row["global_position"].as_i64().unwrap()).collect();
    let total = world.organization_event_count().await as usize;
    assert_eq!((seen.len(), positions.len()), (total, total), "every row once");
    std::sync::Arc::try_unwrap(world).ok().expect("no request left").stop().await;
}
