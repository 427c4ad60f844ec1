//! Four eyes per person: approval compares the holders of keys, never the keys; keys are
//! created and revoked as facts of the log.

use ledger_server::keys::{self, Holder, Role};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_key_of_the_same_person_does_not_approve_their_run() {
    let world = World::new().await;
    world.register().await;
    world.hire("5000.00", true).await;
    let pool = &world.db.pool;
    let alice_laptop = keys::create(
        pool,
        world.organization,
        Role::Processor,
        "alice's laptop",
        &Holder::Person("alice".into()),
        "test",
    )
    .await
    .unwrap();
    let robot = keys::create(
        pool,
        world.organization,
        Role::Admin,
        "scheduler",
        &Holder::Service("payroll-bot".into()),
        "test",
    )
    .await
    .unwrap();
    // Alice creates and calculates with one key ...
    let run = world.calculated_run().await;
    let approve = format!("/v1/payroll-runs/{run}/approve");
    let before = world.event_count().await;
    // ... and cannot approve with her other key: the same person.
    let (status, problem) = world.post(&approve, &alice_laptop.token, json!(null)).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("self_approval")),
        "{problem}"
    );
    assert!(problem["detail"].as_str().unwrap().contains("person:alice"), "{problem}");
    // A service account never approves, even as admin.
    let (status, problem) = world.post(&approve, &robot.token, json!(null)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(world.event_count().await, before, "nothing written");
    // Bob, another person, approves; the run records holders, not keys.
    world.ok(Method::POST, &approve, &world.second_processor, None).await;
    let position = world.head_position().await;
    let shown = world
        .ok(Method::GET, &format!("/v1/payroll-runs/{run}?wait_for_position={position}"), &world.processor, None)
        .await;
    assert_eq!(
        (shown["created_by"].as_str(), shown["approved_by"].as_str()),
        (Some("person:alice"), Some("person:bob"))
    );

    // Keys are facts of the log, in the organization's audit log; a revoked key stops working.
    assert!(keys::revoke(pool, alice_laptop.key_id, "laptop lost", "test").await.unwrap());
    assert!(!keys::revoke(pool, alice_laptop.key_id, "laptop lost", "test").await.unwrap(), "revoked once");
    let (status, _) = world.get("/v1/employees", &alice_laptop.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let position = world.head_position().await;
    let created = world
        .ok(
            Method::GET,
            &format!("/v1/audit-logs?action=ApiKeyCreated&wait_for_position={position}"),
            &world.auditor,
            None,
        )
        .await;
    // The world's six keys of this organization, and the two made here.
    assert_eq!(created["audit_logs"].as_array().unwrap().len(), 8, "{created}");
    let revoked = world
        .ok(Method::GET, &format!("/v1/audit-logs?resource_id={}", alice_laptop.key_id), &world.auditor, None)
        .await;
    let actions: Vec<&str> =
        revoked["audit_logs"].as_array().unwrap().iter().map(|row| row["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["ApiKeyCreated", "ApiKeyRevoked"]);
    world.stop().await;
}
