//! Bad input: a problem+json answer naming the problem, and nothing written.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::World;

fn hire_body(amount: &str, currency: &str) -> Value {
    json!({
        "personal": { "full_name": "Ada", "email": null, "address": null },
        "position": "Engineer", "department": "R&D",
        "rate": { "amount": { "amount": amount, "currency": currency }, "basis": "monthly" },
        "pay_frequency": "monthly", "start_date": "2026-01-01"
    })
}

/// A table of bad requests and the field each must name: longer than 70 lines on purpose,
/// one case per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_with_a_problem_and_writes_nothing() {
    let world = World::new().await;
    world.register().await;
    let before = world.event_count().await;
    let raw = |body: &'static str| {
        let world = &world;
        async move {
            let response = world
                .client
                .post(world.url("/v1/employees"))
                .bearer_auth(&world.processor)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            assert_eq!(response.headers()["content-type"], "application/problem+json");
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, problem) = raw("{not json").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_body")));

    let (status, problem) = world.post("/v1/employees", &world.processor, json!({ "position": "x" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("missing field"), "{problem}");

    for (amount, currency, field) in [
        ("-5.00", "USD", "rate.amount"),
        ("5000.001", "USD", "rate.amount"),
        ("5000", "XXX", "rate.amount.currency"),
        ("five", "USD", "rate.amount"),
    ] {
        let (status, problem) = world.post("/v1/employees", &world.processor, hire_body(amount, currency)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{amount} {currency}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{amount} {currency}: {problem}");
    }
    let (status, problem) = world
        .post(
            "/v1/employees",
            &world.processor,
            json!({ "rate": { "amount": { "amount": 5000.5, "currency": "USD" } } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a JSON number is not an exact amount: {problem}");

    let unknown = uuid::Uuid::new_v4();
    let (status, _) =
        world.post(&format!("/v1/employees/{unknown}/kyc"), &world.processor, json!({ "status": "approved" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = world
        .post("/v1/wallets", &world.processor, json!({ "employee_id": unknown, "public_key": "k", "currency": "USD" }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        world.post("/v1/employees/not-a-uuid/kyc", &world.processor, json!({ "status": "approved" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, problem) = world
        .post("/v1/payroll-runs", &world.processor, json!({ "period": { "start": "2026-01-31", "end": "2026-01-01" } }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("before it starts"), "{problem}");

    let (status_line, headers) = send_huge_body(&world).await;
    assert!(status_line.contains(" 413 "), "{status_line}");
    assert!(headers.to_ascii_lowercase().contains("content-type: application/problem+json"), "{headers}");

    // Page sizes outside the documented 1 to 1,000 are refused naming `limit`, not clamped
    // or ignored (the export too, which streams every page).
    for path in [
        "/v1/events?limit=0",
        "/v1/events?limit=1001",
        "/v1/events/export?limit=0",
        "/v1/audit-logs?limit=0",
        "/v1/audit-logs?limit=1001",
        "/v1/compliance/reports?limit=1001",
    ] {
        let (status, problem) = world.call(Method::GET, path, &world.auditor, None, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
        assert!(problem["detail"].as_str().unwrap().starts_with("limit"), "{path}: {problem}");
    }
    for path in ["/v1/events?limit=1000", "/v1/audit-logs?limit=1000", "/v1/compliance/reports?limit=1"] {
        let (status, problem) = world.call(Method::GET, path, &world.auditor, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {problem}");
    }
    let long = "k".repeat(201);
    for key in ["tab\there", long.as_str()] {
        let (status, problem) = world
            .call(Method::POST, "/v1/organization/settings", &world.admin, Some(json!({ "name": "x" })), Some(key))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("Idempotency-Key"), "{problem}");
    }
    assert_eq!(world.event_count().await, before, "nothing was written");
    world.stop().await;
}

/// Posts a 10 MB body over a raw connection: the server answers 413 after the first
/// megabyte and may close the connection while the rest is still being sent, which an HTTP
/// client reports as a broken pipe instead of the answer. Returns the status line and headers.
async fn send_huge_body(world: &World) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = world.url("").trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let body_bytes = 10 * 1024 * 1024;
    let head = format!(
        "POST /v1/employees HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {body_bytes}\r\n\r\n",
        world.processor
    );
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..body_bytes / chunk.len() {
            writer.write_all(&chunk).await?;
        }
        Ok::<(), std::io::Error>(())
    });
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    while !response.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = reader.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the connection closed without an answer");
        response.extend_from_slice(&buffer[..read]);
    }
    sender.abort();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").unwrap();
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status_line.to_owned(), headers.to_owned())
}

/// What PostgreSQL cannot store, amounts written other than canonically or beyond the
/// largest one, malformed query strings and paths: each a 400 problem naming where, and
/// nothing written. (Each was a 500, or a panic of every later calculation.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_input_reaches_a_500_and_amounts_are_canonical_and_bounded() {
    let world = World::new().await;
    world.register().await;
    let (employee, wallet) = world.hire("5000.00", true).await;
    let before = world.event_count().await;
    let mut nul_name = hire_body("5000.00", "USD");
    nul_name["personal"]["full_name"] = json!("a\u{0}b");
    let nul_cases = [
        ("/v1/employees".to_owned(), nul_name, "personal.full_name"),
        (
            format!("/v1/employees/{employee}/terminate"),
            json!({ "end_date": "2026-02-01", "reason": "x\u{0}" }),
            "reason",
        ),
        (
            format!("/v1/wallets/{wallet}/withdrawals"),
            json!({ "amount": { "amount": "1.00", "currency": "USD" }, "destination": "\u{0}" }),
            "destination",
        ),
    ];
    for (path, body, field) in nul_cases {
        let (status, problem) = world.post(&path, &world.processor, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
        assert!(problem["detail"].as_str().unwrap().starts_with(field), "{path}: {problem}");
    }
    for (amount, problem_word) in [
        ("1e3", "not a decimal"),
        (" 5000.00 ", "not a decimal"),
        ("+5000", "not a decimal"),
        ("05000", "not a decimal"),
        ("792281625142643375935439503.35", "beyond the largest"),
        ("1000000000000000.00", "beyond the largest"),
    ] {
        let (status, problem) = world.post("/v1/employees", &world.processor, hire_body(amount, "USD")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{amount:?}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.starts_with("rate.amount.amount") && detail.contains(problem_word), "{amount:?}: {problem}");
    }
    // The largest amount is taken, and the organization's calculations go on.
    world.post("/v1/employees", &world.processor, hire_body("999999999999999.99", "USD")).await;
    let run = world.calculated_run().await;
    let preview =
        world.call(Method::POST, &format!("/v1/payroll-runs/{run}/preview"), &world.processor, None, None).await;
    assert_eq!(preview.0, StatusCode::OK, "{}", preview.1);
    let after_largest = world.event_count().await;
    assert!(after_largest > before);

    for path in [
        "/v1/employees?limit=lots".to_owned(),
        "/v1/audit-logs?after=x".to_owned(),
        "/v1/events?from=yesterday".to_owned(),
        "/v1/audit-logs?actor=a%00b".to_owned(),
        "/v1/wallets/%00".to_owned(),
        format!("/v1/employees?after={employee}&limit=1&wait_for_position=-1"),
        "/v1/employees?wait_timeout_ms=30001".to_owned(),
    ] {
        let key = if path.starts_with("/v1/audit-logs") || path.starts_with("/v1/events") {
            &world.auditor
        } else {
            &world.processor
        };
        let response = world.client.get(world.url(&path)).bearer_auth(key).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{path}");
    }
    // A rate is a decimal string, like an amount: a JSON number is refused.
    let rule = json!({ "name": "Tax", "party": "employee", "calculation": { "kind": "percentage", "rate": 0.1 }, "liability_account": "tax" });
    let (status, _) = world.call(Method::PUT, "/v1/organization/rules/tax", &world.admin, Some(rule), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, problem) =
        world.call(Method::PUT, "/v1/organization/rules/a%00b", &world.admin, Some(json!({})), None).await;
    assert_eq!(
        (status, problem["detail"].as_str().map(|detail| detail.starts_with("path"))),
        (StatusCode::BAD_REQUEST, Some(true))
    );
    assert_eq!(world.event_count().await, after_largest, "nothing written by the refused requests");
    world.stop().await;
}

/// `wait_for_position` returns at once for 0 or a position passed, refuses one beyond the
/// log, and never waits out its timeout for a position that will not come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_position_never_hangs_on_one_that_will_not_come() {
    let world = World::new().await;
    world.register().await;
    let (employee, _) = world.hire("5000.00", true).await;
    let last = world.head_position().await;
    // Each answers 200 within the longest wait (a position that never comes answered 504 at
    // the end of it). How soon is not asserted: other tests share the cluster's horizon. The
    // last position first: 0 and 1 return at once, and the employee is projected by then.
    for position in [last, 0, 1] {
        let path = format!("/v1/employees/{employee}?wait_for_position={position}&wait_timeout_ms=30000");
        let (status, body) = world.get(&path, &world.processor).await;
        assert_eq!(status, StatusCode::OK, "{position}: {body}");
    }
    let (status, problem) =
        world.get(&format!("/v1/employees/{employee}?wait_for_position={}", last + 1_000), &world.processor).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(problem["detail"].as_str().unwrap().starts_with("wait_for_position"), "{problem}");
    // An append refused after it reserved its positions leaves a gap: waiting for one of
    // them returns too, once the events around it are applied.
    let gaps: Vec<i64> =
        sqlx::query_scalar("select nextval('ledger.events_global_position_seq') from generate_series(1, 3)")
            .fetch_all(&world.db.pool)
            .await
            .unwrap();
    let (_, hired) =
        world.call(Method::POST, "/v1/employees", &world.processor, Some(hire_body("10.00", "USD")), None).await;
    assert!(hired["position"].as_i64().unwrap() > gaps[2], "{hired}");
    for gap in &gaps {
        let path = format!("/v1/employees/{employee}?wait_for_position={gap}&wait_timeout_ms=30000");
        assert_eq!(world.get(&path, &world.processor).await.0, StatusCode::OK, "gap {gap}");
    }
    world.stop().await;
}

/// JSON has one kind of number: `7.0` is the integer 7 (as the OpenAPI document's JSON Schema
/// reads it), so an integer field takes it; `7.5` is refused naming the field and writes
/// nothing; an amount stays a decimal string, a number of any form refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_number_written_as_a_float_is_that_integer() {
    let world = World::new().await;
    world.register().await;
    let retention = |years: Value| json!({ "years_after_termination": years });
    let before = world.event_count().await;
    for bad in [json!(7.5), json!(0.0), json!(1e300), json!("7")] {
        let (status, problem) = world
            .call(Method::PUT, "/v1/organization/retention", &world.admin, Some(retention(bad.clone())), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("years_after_termination"), "{bad}: {problem}");
    }
    for amount in [json!(5000.0), json!(5000)] {
        let body = json!({ "personal": { "full_name": "Ada", "email": null, "address": null },
            "position": "Engineer", "department": "R&D",
            "rate": { "amount": { "amount": amount, "currency": "USD" }, "basis": "monthly" },
            "pay_frequency": "monthly", "start_date": "2026-01-01" });
        let (status, problem) = world.post("/v1/employees", &world.processor, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{amount}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("rate.amount.amount"), "{amount}: {problem}");
    }
    assert_eq!(world.event_count().await, before, "nothing was written");
    for years in [json!(7.0), json!(8)] {
        let (status, problem) = world
            .call(Method::PUT, "/v1/organization/retention", &world.admin, Some(retention(years.clone())), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{years}: {problem}");
    }
    assert_eq!(world.event_count().await, before + 2, "one event per change");
    world.stop().await;
}
