//! Notifications: listed, filtered and read; rendered from the organization's templates;
//! delivered to its webhook, signed, at least once: a receiver that fails twice and then
//! accepts gets the notification three times and it is delivered; one that always fails
//! has it marked failed after the last attempt.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use ledger_server::delivery::{DeliveryOptions, SIGNATURE_HEADER, signature};
use ledger_server::server::{Projectors, Server, ServerOptions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::World;

/// What the receiver got: each delivery's signature header and body.
#[derive(Default)]
struct Received {
    deliveries: Vec<(String, Vec<u8>)>,
    /// Run-awaiting-approval deliveries refused so far (the first two are).
    refused: usize,
}

async fn receive(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> AxumStatus {
    let mut received = received.lock().await;
    let signature = headers.get(SIGNATURE_HEADER).map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default();
    received.deliveries.push((signature, body.to_vec()));
    let delivery: Value = serde_json::from_slice(&body).unwrap();
    match delivery["kind"].as_str().unwrap() {
        // A receiver that is down for good for this kind.
        "payment_held" => AxumStatus::SERVICE_UNAVAILABLE,
        "run_awaiting_approval" if received.refused < 2 => {
            received.refused += 1;
            AxumStatus::INTERNAL_SERVER_ERROR
        }
        _ => AxumStatus::NO_CONTENT,
    }
}

/// A local webhook receiver; its URL.
async fn receiver(received: Arc<Mutex<Received>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(received);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/hook")
}

/// The notifications of `kind` once `done` holds for all of them (or panics after 30 s).
async fn notifications_when(world: &World, kind: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let position = world.head_position().await;
        let page = world
            .ok(
                Method::GET,
                &format!("/v1/notifications?kind={kind}&wait_for_position={position}"),
                &world.processor,
                None,
            )
            .await;
        let notifications = page["notifications"].as_array().unwrap().clone();
        if !notifications.is_empty() && notifications.iter().all(&done) {
            return notifications;
        }
        assert!(std::time::Instant::now() < deadline, "{kind}: {notifications:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_rendered_read_and_delivered_at_least_once_with_retries() {
    let mut world = World::new().await;
    let delivery = DeliveryOptions {
        attempts_max: 4,
        backoff: Duration::from_millis(200),
        poll: Duration::from_millis(100),
        ..DeliveryOptions::default()
    };
    let options = ServerOptions { delivery: Some(delivery), ..ServerOptions::default() };
    let server = Server::start_with(world.db.pool.clone(), "127.0.0.1:0".parse().unwrap(), Projectors::Here, options)
        .await
        .unwrap();
    world.server.replace(server).unwrap().stop().await.unwrap();
    world.register().await;
    let received = Arc::new(Mutex::new(Received::default()));
    let url = receiver(received.clone()).await;

    // Bad input first: nothing written.
    let before = world.event_count().await;
    for (method, path, body, field) in [
        (Method::PUT, "/v1/organization/webhook", json!({ "url": "ftp://example.com/hook" }), "url"),
        (Method::PUT, "/v1/organization/webhook", json!({ "url": "not a url" }), "url"),
        (
            Method::PUT,
            "/v1/notification-templates/payslip_ready",
            json!({ "channel": "in_app", "subject": "Paid", "body": "You got {salary}" }),
            "body",
        ),
        (
            Method::PUT,
            "/v1/notification-templates/payslip_ready",
            json!({ "channel": "pigeon", "subject": "Paid", "body": "Paid" }),
            "channel",
        ),
        (
            Method::PUT,
            "/v1/notification-templates/payslip_ready",
            json!({ "channel": "in_app", "subject": " ", "body": "Paid" }),
            "subject",
        ),
        (
            Method::PUT,
            "/v1/notification-templates/bonus_day",
            json!({ "channel": "in_app", "subject": "Paid", "body": "Paid" }),
            "kind",
        ),
    ] {
        let (status, problem) = world.call(method, path, &world.admin, Some(body), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{field}: {problem}");
    }
    for path in [
        "/v1/notifications?kind=bonus_day",
        "/v1/notifications?after=yesterday",
        "/v1/notifications?limit=0",
        "/v1/notifications?unread=maybe",
    ] {
        let (status, problem) = world.get(path, &world.processor).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
    }
    let (status, _) =
        world.call(Method::PUT, "/v1/organization/webhook", &world.processor, Some(json!({ "url": url })), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(world.event_count().await, before, "nothing written");

    let webhook = world.ok(Method::PUT, "/v1/organization/webhook", &world.admin, Some(json!({ "url": url }))).await;
    let secret = webhook["signing_secret"].as_str().unwrap().to_owned();
    assert_eq!(webhook["version"], 1);
    let shown = world.ok(Method::GET, "/v1/organization/webhook", &world.admin, None).await;
    assert_eq!(shown["signing_secret"], secret.as_str());
    // Payslips are told in the app, in the organization's words.
    let template = json!({ "channel": "in_app", "subject": "Pay for you", "body": "Net {net} {currency}: {payslip}" });
    world.ok(Method::PUT, "/v1/notification-templates/payslip_ready", &world.admin, Some(template)).await;
    let templates = world
        .ok(
            Method::GET,
            &format!("/v1/notification-templates?wait_for_position={}", world.head_position().await),
            &world.processor,
            None,
        )
        .await;
    let payslip_template =
        templates["templates"].as_array().unwrap().iter().find(|t| t["kind"] == "payslip_ready").unwrap().clone();
    assert_eq!((payslip_template["version"].as_i64(), payslip_template["channel"].as_str()), (Some(1), Some("in_app")));

    let (paid, _) = world.hire("5000.00", true).await;
    let (_held, _) = world.hire("3000.00", false).await;
    let run = world.calculated_run().await;

    // Refused twice, accepted the third time: delivered, three attempts on record.
    let awaiting = notifications_when(&world, "run_awaiting_approval", |n| n["delivery_status"] == "delivered").await;
    assert_eq!(awaiting.len(), 1);
    let awaiting = &awaiting[0];
    assert_eq!(awaiting["attempts"], 3);
    assert_eq!(awaiting["channel"], "webhook");
    assert!(awaiting["body"].as_str().unwrap().contains(&run), "{awaiting}");
    let id = awaiting["notification_id"].as_str().unwrap();
    let attempts = world.ok(Method::GET, &format!("/v1/notifications/{id}/deliveries"), &world.processor, None).await;
    let statuses: Vec<&str> =
        attempts["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["retrying", "retrying", "delivered"]);
    assert!(attempts["attempts"][0]["error"].as_str().unwrap().contains("500"));

    // Each delivery is signed with the webhook's secret over its exact body.
    {
        let received = received.lock().await;
        let of_awaiting: Vec<&(String, Vec<u8>)> = received
            .deliveries
            .iter()
            .filter(|(_, body)| serde_json::from_slice::<Value>(body).unwrap()["notification_id"] == id)
            .collect();
        assert_eq!(of_awaiting.len(), 3, "at least once: every attempt reached the receiver");
        for (signed, body) in &of_awaiting {
            assert_eq!(signed, &signature(&secret, body));
        }
        let attempt_numbers: Vec<i64> = of_awaiting
            .iter()
            .map(|(_, body)| serde_json::from_slice::<Value>(body).unwrap()["attempt"].as_i64().unwrap())
            .collect();
        assert_eq!(attempt_numbers, [1, 2, 3]);
    }

    // A receiver that never accepts: failed after the last attempt, never sent again.
    let held = notifications_when(&world, "payment_held", |n| n["delivery_status"] == "failed").await;
    assert_eq!(held[0]["attempts"], 4);
    assert!(held[0]["last_error"].as_str().unwrap().contains("503"));

    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    let payslips = notifications_when(&world, "payslip_ready", |_| true).await;
    assert_eq!(payslips.len(), 1);
    let payslip = &payslips[0];
    assert_eq!((payslip["delivery_status"].as_str(), payslip["template_version"].as_i64()), (Some("in_app"), Some(1)));
    assert_eq!(payslip["subject"], "Pay for you");
    assert_eq!(payslip["body"], format!("Net 4500.00 USD: /v1/payroll-runs/{run}/items/{paid}/payslip"));
    assert_eq!(payslip["recipient"], format!("employee:{paid}"));

    // Read once; a repeat says so; unread filters it out; another organization sees none.
    let payslip_id = payslip["notification_id"].as_str().unwrap();
    let first = world.ok(Method::POST, &format!("/v1/notifications/{payslip_id}/read"), &world.processor, None).await;
    assert_eq!(first["already_read"], false);
    let again = world.ok(Method::POST, &format!("/v1/notifications/{payslip_id}/read"), &world.processor, None).await;
    assert_eq!((again["already_read"].as_bool(), again["position"].is_null()), (Some(true), true));
    assert_eq!(world.count_of("NotificationRead").await, 1);
    let position = first["position"].as_i64().unwrap();
    let unread = world
        .ok(
            Method::GET,
            &format!("/v1/notifications?unread=true&recipient=employee:{paid}&wait_for_position={position}"),
            &world.processor,
            None,
        )
        .await;
    assert!(unread["notifications"].as_array().unwrap().is_empty(), "{unread}");
    let read = world
        .ok(
            Method::GET,
            &format!("/v1/notifications?unread=false&wait_for_position={position}"),
            &world.processor,
            None,
        )
        .await;
    assert_eq!(read["notifications"][0]["read_by"], "person:alice");
    let (status, _) =
        world.call(Method::POST, &format!("/v1/notifications/{payslip_id}/read"), &world.other_admin, None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let theirs = world.ok(Method::GET, "/v1/notifications", &world.other_admin, None).await;
    assert!(theirs["notifications"].as_array().unwrap().is_empty());

    // Racing reads record one read.
    let first_held = held[0]["notification_id"].as_str().unwrap().to_owned();
    let racers = (0..4).map(|_| {
        let path = format!("/v1/notifications/{first_held}/read");
        let world = &world;
        async move { world.call(Method::POST, &path, &world.processor, None, None).await }
    });
    let answers = futures_util::future::join_all(racers).await;
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK), "{answers:?}");
    assert_eq!(answers.iter().filter(|(_, body)| body["already_read"] == false).count(), 1, "{answers:?}");
    assert_eq!(world.count_of("NotificationRead").await, 2);

    // A rebuild from the log gives the same notifications, read and delivered as they were.
    let snapshot = |world: &World| {
        let pool = world.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select string_agg(to_jsonb(n)::text, ',' order by notification_id) from notification.notifications n",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // The delivery worker may still be sending one that is due (it appends an attempt): the
    // snapshot is taken once none is due and the projection has what the worker wrote.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        crate::payslips::wait_projected(&world).await;
        let due: i64 = sqlx::query_scalar(
            "select count(*) from notification.notifications where delivery_status = 'pending' and next_attempt_at <= now()",
        )
        .fetch_one(&world.db.pool)
        .await
        .unwrap();
        if due == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{due} notifications still due after 20 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let live = snapshot(&world).await;
    let projection = ledger_projections::projections::by_name("notification").unwrap();
    ledger_projections::rebuild(&world.db.pool, projection.as_ref(), &mut |_| {}).await.unwrap();
    assert_eq!(snapshot(&world).await, live);
    world.stop().await;
}
