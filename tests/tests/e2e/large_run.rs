//! A run of several calculation chunks through the server: the calculation is streamed into
//! one append and the payments read the items back from its chunks.

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use ledger_app::Context;
use ledger_app::staff::hire_in_bulk;
use ledger_core::money::{Currency, Money};
use ledger_core::payroll::{CALCULATION_CHUNK_ITEMS, PayrollRunAggregate, RunStatus};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use crate::World;

const EMPLOYEES: usize = 2 * CALCULATION_CHUNK_ITEMS + 100;

/// Whether a COPY into the log is running in some session.
async fn copying(world: &World) -> bool {
    sqlx::query_scalar(
        "select exists (select 1 from pg_stat_activity where state = 'active' and query ilike 'copy ledger.events%')",
    )
    .fetch_one(&world.db.pool)
    .await
    .unwrap()
}

/// One run's story, each step on the state the last left (a crash mid-calculation, racing
/// calculators, repeated approvals and payments, a fresh process): longer than 70 lines on
/// purpose, since split the steps would have to hand a world of state to each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calculation_of_several_chunks_is_written_whole_under_a_crash_races_and_retries_and_pays_exactly() {
    let world = World::new().await;
    world.register().await;
    let ledger = ledger_server::server::unobserved_ledger(world.db.pool.clone());
    let hr = Context::system(world.organization, "hr");
    hire_in_bulk(&ledger, &hr, EMPLOYEES, NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(), |n| {
        Money::new(Decimal::new(250_000 + (n as i64 % 97) * 1_001, 2), Currency::usd()).unwrap()
    })
    .await
    .unwrap();
    let body = json!({ "period": { "start": "2026-01-01", "end": "2026-01-31" } });
    let created = world.ok(Method::POST, "/v1/payroll-runs", &world.processor, Some(body)).await;
    let run = created["payroll_run_id"].as_str().unwrap().to_owned();
    let run_id: Uuid = run.parse().unwrap();
    let calculate = format!("/v1/payroll-runs/{run}/calculate");

    // Killed while its chunks are being copied: nothing of it is written.
    let task = {
        let (ledger, context) = (ledger.clone(), Context::system(world.organization, "processor-1"));
        tokio::spawn(async move { ledger_app::operations::calculate(&ledger, &context, run_id).await })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !copying(&world).await {
        assert!(Instant::now() < deadline && !task.is_finished(), "the calculation's copy was never seen running");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!task.is_finished(), "the kill came in the middle");
    task.abort();
    let _ = task.await;
    assert_eq!(world.count_of("PayrollItemsCalculated").await, 0);
    assert_eq!(world.count_of("PayrollRunCalculated").await, 0);
    // The killed calculation's backend goes when PostgreSQL notices its client left; until
    // then the run is busy (409 with Retry-After). Racing begins once it has gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while copying(&world).await {
        assert!(Instant::now() < deadline, "the killed calculation's backend never went");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Two processors calculating at once: one calculation is recorded whole; the other is
    // told the run is busy (a calculation does not wait for another's), or, arriving after
    // it, recalculates and is recorded whole too.
    let racing: Vec<_> = [world.processor.clone(), world.third_processor.clone()]
        .into_iter()
        .map(|key| {
            let (client, url) = (world.client.clone(), world.url(&calculate));
            tokio::spawn(async move { client.post(url).bearer_auth(key).send().await.unwrap().status() })
        })
        .collect();
    let mut recorded = 0;
    for calculation in racing {
        let status = calculation.await.unwrap();
        assert!(status.is_success() || status == StatusCode::CONFLICT, "{status}");
        recorded += i64::from(status.is_success());
    }
    assert!(recorded >= 1);
    let chunks = EMPLOYEES.div_ceil(CALCULATION_CHUNK_ITEMS) as i64;
    assert_eq!(world.count_of("PayrollItemsCalculated").await, recorded * chunks);
    assert_eq!(world.count_of("PayrollRunCalculated").await, recorded);

    // The same request twice under one key: recorded once.
    let (first, _) = world.call(Method::POST, &calculate, &world.processor, None, Some("recalculate")).await;
    let (again, replayed) = world.call(Method::POST, &calculate, &world.processor, None, Some("recalculate")).await;
    assert!(first.is_success() && again.is_success(), "{first} {again}");
    assert_eq!(replayed["replayed"].as_bool(), Some(true), "{replayed}");
    assert_eq!(world.count_of("PayrollItemsCalculated").await, (recorded + 1) * chunks);
    assert_eq!(world.count_of("PayrollRunCalculated").await, recorded + 1);
    // A calculation keeps the run it folded as it wrote: loaded next, it is the run a fresh
    // fold of the log gives.
    let calculator = Context::system(world.organization, "processor-9");
    ledger_app::operations::calculate(&ledger, &calculator, run_id).await.unwrap();
    let fresh = ledger_server::server::unobserved_ledger(world.db.pool.clone());
    let remembered = ledger.load::<PayrollRunAggregate>(world.organization, run_id).await.unwrap();
    assert_eq!(remembered, fresh.load::<PayrollRunAggregate>(world.organization, run_id).await.unwrap());
    assert_eq!(remembered.state.as_ref().unwrap().calculated_by.as_deref(), Some("processor-9"));
    assert_eq!(world.count_of("PayrollRunCalculated").await, recorded + 2);
    let verified = ledger.store().verify_all().await.unwrap();
    assert!(verified.is_intact(), "{verified:?}");

    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    // Two processors paying it at once, each batch read ahead while the one before is
    // appended: the loser of each batch reloads, and nobody is paid twice.
    let processing: Vec<_> = [world.processor.clone(), world.third_processor.clone()]
        .into_iter()
        .map(|key| {
            let (client, url) = (world.client.clone(), world.url(&format!("/v1/payroll-runs/{run}/process")));
            tokio::spawn(async move {
                let response = client.post(url).bearer_auth(key).send().await.unwrap();
                (response.status(), response.json::<serde_json::Value>().await.unwrap())
            })
        })
        .collect();
    let mut paid_now = 0;
    for processor in processing {
        let (status, processed) = processor.await.unwrap();
        assert!(status.is_success(), "{status} {processed}");
        assert_eq!(processed["report"]["paid"].as_u64(), Some(EMPLOYEES as u64), "{processed}");
        paid_now += processed["report"]["paid_now"].as_u64().unwrap();
    }
    assert_eq!(paid_now, EMPLOYEES as u64);
    assert_eq!(world.count_of("PayrollItemPaid").await, EMPLOYEES as i64);
    assert_eq!(world.count_of("WalletCredited").await, EMPLOYEES as i64);

    // Settling: one settler killed half way, then two at once; every payment settled once.
    let settle = |actor: &'static str| {
        let ledger = ledger.clone();
        let context = Context::system(world.organization, actor);
        tokio::spawn(async move {
            ledger_app::operations::settle_run(&ledger, &context, run_id, |transaction| {
                ledger_app::operations::Settlement {
                    signature: format!("sig-{transaction}"),
                    block_hash: "block-1".to_owned(),
                }
            })
            .await
        })
    };
    let killed = settle("settler-1");
    while world.count_of("TransactionSettled").await == 0 {
        assert!(!killed.is_finished(), "the settler finished before it was killed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    killed.abort();
    let _ = killed.await;
    let before = world.count_of("TransactionSettled").await;
    assert!(before < EMPLOYEES as i64, "the kill came half way ({before} settled)");
    let (first, second) = (settle("settler-2"), settle("settler-3"));
    let settled = first.await.unwrap().unwrap() + second.await.unwrap().unwrap();
    let after = world.count_of("TransactionSettled").await;
    if after != EMPLOYEES as i64 {
        let cached = ledger.load::<PayrollRunAggregate>(world.organization, run_id).await.unwrap();
        let fresh = ledger_server::server::unobserved_ledger(world.db.pool.clone());
        let fresh = fresh.load::<PayrollRunAggregate>(world.organization, run_id).await.unwrap();
        let paid = |run: &ledger_core::payroll::PayrollRun| {
            run.items
                .values()
                .filter(|item| matches!(item.status, ledger_core::payroll::ItemStatus::Paid { .. }))
                .count()
        };
        let recorded = world.count_of("TransactionRecorded").await;
        panic!(
            "settled {after} of {EMPLOYEES}: before {before}, now {settled}; cached run v{} paid {}, fresh v{} paid {}; {recorded} transactions",
            cached.version,
            paid(cached.state.as_ref().unwrap()),
            fresh.version,
            paid(fresh.state.as_ref().unwrap())
        );
    }
    // A settlement in flight when the first was killed may have committed after `before`.
    assert!(settled as i64 <= EMPLOYEES as i64 - before && settled > 0, "settled {settled} after {before}");
    assert_eq!(settle("settler-4").await.unwrap().unwrap(), 0, "nothing is left to settle");

    // Each payment was made from its own item's lines: the wallets hold the run's net, the
    // tax account its deductions, and the funding account paid its employer cost.
    ledger.wait_for_head(Duration::from_secs(120)).await.unwrap();
    let totals: (i64, Decimal, Decimal, Decimal) = sqlx::query_as(
        "select item_count, net, deductions, employer_cost from payroll.payroll_runs where payroll_run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&world.db.pool)
    .await
    .unwrap();
    assert_eq!(totals.0, EMPLOYEES as i64);
    let wallets: Decimal = sqlx::query_scalar("select sum(balance) from wallet.wallets where organization_id = $1")
        .bind(world.organization)
        .fetch_one(&world.db.pool)
        .await
        .unwrap();
    let balance = |account: String| {
        let pool = world.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Decimal>("select balance from transaction.account_balances where account = $1")
                .bind(account)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(wallets, totals.1);

    // `ledger` keeps the run as it calculated it: folded on from there over everything the
    // server wrote since, it is the run a fresh fold gives.
    let fresh = ledger_server::server::unobserved_ledger(world.db.pool.clone());
    let folded_on = ledger.load::<PayrollRunAggregate>(world.organization, run_id).await.unwrap();
    let from_scratch = fresh.load::<PayrollRunAggregate>(world.organization, run_id).await.unwrap();
    assert_eq!(folded_on.version, from_scratch.version);
    assert_eq!(folded_on.state, from_scratch.state);
    assert_eq!(folded_on.state.as_ref().unwrap().status, RunStatus::Completed);
    // Cached or not, the run is another organization's nothing.
    let foreign = ledger.load::<PayrollRunAggregate>(world.other_organization, run_id).await;
    assert!(matches!(foreign, Err(ledger_app::Error::NotFound(_))), "{foreign:?}");
    assert_eq!(balance(format!("liability:{}:tax", world.organization)).await, totals.2);
    assert_eq!(balance(format!("funding:{}", world.organization)).await, -totals.3);
    world.stop().await;
}
