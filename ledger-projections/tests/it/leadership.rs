//! One active runner per projection; the standby takes over; concurrent writers with
//! interleaved commits are projected exactly once.

use std::sync::Arc;

use ledger_core::ids::TransactionId;
use ledger_core::wallet::{WalletAggregate, WalletCommand};
use ledger_projections::projections::WalletProjection;
use ledger_projections::{Runner, RunnerOptions};
use ledger_store::testkit::TestDatabase;
use ledger_store::{EventStore, StoreError};
use rust_decimal::Decimal;
use tokio::sync::watch;
use uuid::Uuid;

use crate::workload::{Payroll, day, decided, usd_cents};

async fn wait_for_wallet_projection(store: &EventStore) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let lags = ledger_projections::lag(store, &ledger_projections::projections::names()).await.unwrap();
        if lags.iter().any(|lag| lag.projection_name == "wallet" && lag.events_behind == 0) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "wallet projection stuck: {lags:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn credit(store: &EventStore, organization: Uuid, wallet: Uuid, cents: i64) -> Result<(), StoreError> {
    let command =
        WalletCommand::Credit { amount: usd_cents(cents), transaction_id: TransactionId::from_uuid(Uuid::new_v4()) };
    let stream = decided::<WalletAggregate>(store, organization, wallet, command).await;
    let request = ledger_store::AppendRequest {
        streams: vec![stream],
        metadata: ledger_store::Metadata::by("writer"),
        idempotency_key: None,
        fingerprint: None,
    };
    store.append(&request).await.map(|_| ())
}

async fn projected_matches_log(db: &TestDatabase) -> (i64, Decimal) {
    let from_log: (i64, Decimal) = sqlx::query_as(
        "select count(*), coalesce(sum((payload->'amount'->>'amount')::numeric), 0) from ledger.events where event_type = 'WalletCredited'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let projected: (i64, Decimal) =
        sqlx::query_as("select count(*), coalesce(sum(amount), 0) from wallet.wallet_transactions")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let balances: Decimal =
        sqlx::query_scalar("select coalesce(sum(balance), 0) from wallet.wallets").fetch_one(&db.pool).await.unwrap();
    assert_eq!(projected, from_log);
    assert_eq!(balances, from_log.1);
    from_log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_apply_once_and_the_standby_takes_over() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let mut payroll = Payroll::register(store.clone()).await;
    let (_, wallet) = payroll.hire(100_000, day(2026, 1, 1), true).await;
    for cents in 1..=20 {
        credit(&store, payroll.organization, wallet.as_uuid(), cents).await.unwrap();
    }
    let options = RunnerOptions {
        batch_size: 3,
        poll_interval: std::time::Duration::from_millis(50),
        ..RunnerOptions::default()
    };
    let (stop_leader, leader_stopped) = watch::channel(false);
    let leader = Runner::new(db.pool.clone(), Arc::new(WalletProjection), options);
    let leader = tokio::spawn(async move { leader.run(leader_stopped).await });
    wait_for_wallet_projection(&store).await;
    let (stop_standby, standby_stopped) = watch::channel(false);
    let standby = Runner::new(db.pool.clone(), Arc::new(WalletProjection), options);
    let standby = tokio::spawn(async move { standby.run(standby_stopped).await });

    for cents in 21..=40 {
        credit(&store, payroll.organization, wallet.as_uuid(), cents).await.unwrap();
    }
    wait_for_wallet_projection(&store).await;
    assert_eq!(projected_matches_log(&db).await.0, 40);

    stop_leader.send(true).unwrap();
    leader.await.unwrap().unwrap();
    for cents in 41..=60 {
        credit(&store, payroll.organization, wallet.as_uuid(), cents).await.unwrap();
    }
    wait_for_wallet_projection(&store).await;
    assert_eq!(projected_matches_log(&db).await, (60, Decimal::from(60 * 61 / 2) / Decimal::from(100)));
    stop_standby.send(true).unwrap();
    standby.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_with_interleaved_commits_are_projected_exactly_once() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let mut payroll = Payroll::register(store.clone()).await;
    let mut wallets = Vec::new();
    for _ in 0..4 {
        wallets.push(payroll.hire(100_000, day(2026, 1, 1), true).await.1.as_uuid());
    }
    let (stop, stopped) = watch::channel(false);
    let runner = Runner::new(
        db.pool.clone(),
        Arc::new(WalletProjection),
        RunnerOptions {
            batch_size: 7,
            poll_interval: std::time::Duration::from_millis(20),
            ..RunnerOptions::default()
        },
    );
    let runner = tokio::spawn(async move { runner.run(stopped).await });
    let organization = payroll.organization;
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let (store, wallets) = (store.clone(), wallets.clone());
            tokio::spawn(async move {
                let mut written = 0;
                for n in 0..25 {
                    // Writers share wallets: stale versions conflict and are retried.
                    let wallet = wallets[(writer + n) % wallets.len()];
                    loop {
                        match credit(&store, organization, wallet, (writer * 100 + n + 1) as i64).await {
                            Ok(()) => break,
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(error) => panic!("{error}"),
                        }
                    }
                    written += 1;
                }
                written
            })
        })
        .collect();
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    wait_for_wallet_projection(&store).await;
    assert_eq!(projected_matches_log(&db).await.0, written);
    stop.send(true).unwrap();
    runner.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_steady_stream_of_appends_a_runner_steps_at_most_once_per_interval() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let mut payroll = Payroll::register(store.clone()).await;
    let (_, wallet) = payroll.hire(100_000, day(2026, 1, 1), true).await;
    let interval = std::time::Duration::from_millis(300);
    let options = RunnerOptions { step_interval_min: interval, ..RunnerOptions::default() };
    let (stop, stopped) = watch::channel(false);
    let runner = Runner::new(db.pool.clone(), Arc::new(WalletProjection), options);
    let runner = tokio::spawn(async move { runner.run(stopped).await });
    wait_for_wallet_projection(&store).await;

    // A credit every 10 ms for 1.5 s, each notified; the wallet projection's checkpoint is
    // watched every 2 ms meanwhile: every value it takes is one step that applied events.
    let writer = {
        let (store, organization) = (store.clone(), payroll.organization);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut credits = 0;
            while started.elapsed() < std::time::Duration::from_millis(1_500) {
                credit(&store, organization, wallet.as_uuid(), 1).await.unwrap();
                credits += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            (credits, started.elapsed())
        })
    };
    let mut checkpoints = std::collections::BTreeSet::new();
    while !writer.is_finished() {
        let position: i64 = sqlx::query_scalar(
            "select global_position from ledger.projection_checkpoints where projection_name = 'wallet'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        checkpoints.insert(position);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (credits, took) = writer.await.unwrap();
    wait_for_wallet_projection(&store).await;
    projected_matches_log(&db).await;
    stop.send(true).unwrap();
    runner.await.unwrap().unwrap();

    // One step per interval at most, plus the one under way when the watch began.
    let most = (took.as_millis() / interval.as_millis()) as usize + 2;
    assert!(credits > 3 * most, "the stream was steady: {credits} credits in {took:?}");
    assert!(
        checkpoints.len() <= most,
        "{} steps for {credits} credits in {took:?}, at most {most} expected",
        checkpoints.len()
    );
}
