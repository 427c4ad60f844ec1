//! What an operator relies on: `/ready` says the truth (roles and grants, the cluster's era,
//! runners, stalled projections), runners survive errors without a restart, and a burst of
//! calculations of one run neither doubles it nor starves anything else.

use std::time::{Duration, Instant};

use ledger_server::server::{Projectors, Server, ServerOptions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::World;

/// Polls `/ready` until `wanted` answers (and returns its body), or fails after 30 s.
pub async fn ready_becomes(world: &World, wanted: StatusCode, reason_has: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Not through `World::call`: a 503 here is a readiness answer, not a problem.
        let response = world.client.get(world.url("/ready")).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        let reason = body["reason"].as_str().unwrap_or_default();
        if status == wanted && reason.contains(reason_has) {
            assert_eq!(body["ready"], json!(wanted == StatusCode::OK), "{body}");
            return body;
        }
        assert!(Instant::now() < deadline, "/ready stayed {status} {body}, wanted {wanted} with {reason_has:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `payroll_ledger_projection_lag_events` of one projection on `/metrics`.
async fn lag_metric(world: &World, projection: &str) -> i64 {
    let text = world.client.get(world.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("payroll_ledger_projection_lag_events{{projection=\"{projection}\"}} ");
    let line = text.lines().find(|line| line.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in {text}"));
    line[prefix.len()..].trim().parse().unwrap()
}

async fn world_with(projectors: Projectors, stall_after: Duration) -> World {
    let mut world = World::new().await;
    // The keys' creation (ApiKeyCreated) projected before the server goes: what follows is
    // the test's own.
    let ledger = ledger_server::server::unobserved_ledger(world.db.pool.clone());
    ledger.wait_for_head(Duration::from_secs(30)).await.unwrap();
    // Reads do not wait for the log's tree (it lingers to gather events): wait for it too.
    ledger.wait_for_head_of(&["log_tree"], Duration::from_secs(30)).await.unwrap();
    world.server.take().unwrap().stop().await.unwrap();
    let options = ServerOptions { stall_after, ..ServerOptions::default() };
    let server =
        Server::start_with(world.db.pool.clone(), "127.0.0.1:0".parse().unwrap(), projectors, options).await.unwrap();
    world.server = Some(server);
    world
}

#[tokio::test]
async fn a_failing_runner_is_reported_and_resumes_without_a_restart() {
    let world = world_with(Projectors::Here, Duration::from_secs(60)).await;
    world.register().await;
    ready_becomes(&world, StatusCode::OK, "").await;
    let pool = &world.db.pool;
    // The employee projection's table goes away under it: every step fails.
    sqlx::query("alter table employee.employees rename to employees_away").execute(pool).await.unwrap();
    world.hire("5000.00", true).await;
    let body = ready_becomes(&world, StatusCode::SERVICE_UNAVAILABLE, "employee projector has failed").await;
    assert!(body["reason"].as_str().unwrap().contains("employees"), "{body}");
    assert!(lag_metric(&world, "employee").await > 0);
    // Back: the runner resumes from its checkpoint, nothing lost, nothing applied twice.
    sqlx::query("alter table employee.employees_away rename to employees").execute(pool).await.unwrap();
    ready_becomes(&world, StatusCode::OK, "").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while lag_metric(&world, "employee").await > 0 {
        assert!(Instant::now() < deadline, "the employee projection did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let employees: i64 = sqlx::query_scalar("select count(*) from employee.employees").fetch_one(pool).await.unwrap();
    assert_eq!(employees, 1);
    world.stop().await;
}

#[tokio::test]
async fn a_projection_nobody_runs_is_reported_stalled_and_counted_in_the_lag() {
    let world = world_with(Projectors::Elsewhere, Duration::from_secs(1)).await;
    let projected: i64 =
        sqlx::query_scalar("select count(*) from ledger.events").fetch_one(&world.db.pool).await.unwrap();
    // Not run since, with events waiting: stalled once they are older than the threshold.
    world.register().await;
    let body = ready_becomes(&world, StatusCode::SERVICE_UNAVAILABLE, "is stalled").await;
    assert!(body["reason"].as_str().unwrap().contains(&format!("checkpoint is at position {projected}")), "{body}");
    let events: i64 = sqlx::query_scalar("select count(*) from ledger.events").fetch_one(&world.db.pool).await.unwrap();
    assert_eq!(lag_metric(&world, "organization").await, events - projected, "it lags by every event since");
    for projection in ledger_projections::projections::all() {
        ledger_projections::Runner::new(world.db.pool.clone(), projection, Default::default())
            .catch_up()
            .await
            .unwrap();
    }
    ready_becomes(&world, StatusCode::OK, "").await;
    assert_eq!(lag_metric(&world, "organization").await, 0);
    world.stop().await;
}

#[tokio::test]
async fn missing_grants_and_a_foreign_era_make_ready_say_what_to_run() {
    let world = world_with(Projectors::Here, Duration::from_secs(60)).await;
    world.register().await;
    ready_becomes(&world, StatusCode::OK, "").await;
    let pool = &world.db.pool;
    sqlx::query("revoke select on employee.employees from ledger_api_reader").execute(pool).await.unwrap();
    let body = ready_becomes(&world, StatusCode::SERVICE_UNAVAILABLE, "grants are missing").await;
    assert!(body["reason"].as_str().unwrap().contains("employee.employees"), "{body}");
    let repaired: i32 = sqlx::query_scalar("select ledger.ensure_access()").fetch_one(pool).await.unwrap();
    assert!(repaired > 0);
    ready_becomes(&world, StatusCode::OK, "").await;

    // The database as if copied from another cluster: the latest era is not this one's.
    sqlx::query("insert into ledger.eras (era, system_identifier, xid_offset, first_position) values (99, 1, 0, 0)")
        .execute(pool)
        .await
        .unwrap();
    ready_becomes(&world, StatusCode::SERVICE_UNAVAILABLE, "has not begun its era").await;
    let body = json!({ "personal": { "full_name": "Ada", "email": "ada@example.com", "address": null },
        "position": "Engineer", "department": "R&D",
        "rate": { "amount": { "amount": "100.00", "currency": "USD" }, "basis": "monthly" },
        "pay_frequency": "monthly", "start_date": "2025-06-01" });
    let (status, refused) = world.post("/v1/employees", &world.processor, body).await;
    assert!(status.is_server_error() || status.is_client_error(), "{status} {refused}");
    let before: i64 = sqlx::query_scalar("select count(*) from ledger.events where event_type = 'EmployeeHired'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(before, 0, "nothing is written in a cluster without its era");
    let era: i32 = sqlx::query_scalar("select ledger.begin_era()").fetch_one(pool).await.unwrap();
    assert_eq!(era, 100);
    ready_becomes(&world, StatusCode::OK, "").await;
    world.hire("100.00", true).await;
    world.stop().await;
}

/// `n` calculations of one run at once: each answered 200 or 409 `busy` (nothing else), each
/// 200 recorded exactly one calculation, writes elsewhere go on meanwhile, no runner is lost.
async fn calculations_at_once(n: usize) {
    let world = World::new().await;
    world.register().await;
    for _ in 0..5 {
        world.hire("5000.00", true).await;
    }
    let created = world
        .ok(
            Method::POST,
            "/v1/payroll-runs",
            &world.processor,
            Some(json!({ "period": { "start": "2026-01-01", "end": "2026-01-31" } })),
        )
        .await;
    let run = created["payroll_run_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/payroll-runs/{run}/calculate");
    let burst: Vec<_> = (0..n)
        .map(|_| {
            let (client, url, key) = (world.client.clone(), world.url(&path), world.processor.clone());
            tokio::spawn(async move {
                let response = client.post(url).bearer_auth(key).send().await.unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (status, body)
            })
        })
        .collect();
    // A write elsewhere during the burst is not held up by it.
    let started = Instant::now();
    world.hire("4000.00", true).await;
    let elsewhere = started.elapsed();
    let mut succeeded = 0;
    for answer in burst {
        let (status, body) = answer.await.unwrap();
        match status {
            StatusCode::OK => succeeded += 1,
            StatusCode::CONFLICT => {
                assert!(["busy", "version_conflict"].contains(&body["code"].as_str().unwrap()), "{body}")
            }
            other => panic!("a calculation answered {other}: {body}"),
        }
    }
    assert!(succeeded >= 1, "one calculation at least is recorded");
    let recorded = world.count_of("PayrollRunCalculated").await;
    assert_eq!(recorded, succeeded, "each 200 recorded one calculation, each 409 none");
    assert!(elsewhere < Duration::from_secs(10), "a hire waited {elsewhere:?} behind the calculations");
    ready_becomes(&world, StatusCode::OK, "").await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.stop().await;
}

#[tokio::test]
async fn twenty_four_calculations_of_one_run_at_once() {
    calculations_at_once(24).await;
}

#[tokio::test]
async fn a_hundred_calculations_of_one_run_at_once() {
    calculations_at_once(100).await;
}

/// Which pool holds a connection shows in `pg_stat_activity`: the served ledger's appends,
/// projectors and listeners each name theirs.
#[tokio::test]
async fn each_pool_names_its_connections_for_the_operator() {
    let world = World::new().await;
    world.register().await;
    world.hire("5000.00", true).await;
    let names = || async {
        sqlx::query_scalar::<_, String>(
            "select distinct application_name from pg_stat_activity where datname = current_database() order by 1",
        )
        .fetch_all(&world.db.pool)
        .await
        .unwrap()
    };
    let wanted =
        ["payroll-ledger listener", "payroll-ledger notifier", "payroll-ledger projector", "payroll-ledger writer"];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = names().await;
        if wanted.iter().all(|name| seen.iter().any(|seen| seen == name)) {
            break;
        }
        assert!(Instant::now() < deadline, "pools not named as wanted {wanted:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
