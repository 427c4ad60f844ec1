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

    let (status, problem) = world.call(Method::GET, "/v1/events?limit=0", &world.auditor, None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
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
