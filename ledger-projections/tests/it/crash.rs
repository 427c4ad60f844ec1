//! Crash safety: a projection that fails, or whose task is aborted, in the middle of a batch
//! resumes without losing or repeating an event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use ledger_core::ids::TransactionId;
use ledger_core::wallet::{WalletAggregate, WalletCommand};
use ledger_projections::projections::WalletProjection;
use ledger_projections::{AnyEvent, Projection, ProjectionError, Runner, RunnerOptions, StepOutcome};
use ledger_store::testkit::TestDatabase;
use ledger_store::{EventStore, RecordedEvent};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::workload::{Payroll, day, execute, usd_cents};

/// The wallet projection, but the `fail_at`-th apply fails once, and every apply may dawdle.
#[derive(Debug)]
struct Flaky {
    applies: AtomicUsize,
    fail_at: usize,
    delay: std::time::Duration,
}

#[async_trait]
impl Projection for Flaky {
    fn name(&self) -> &'static str {
        "wallet"
    }

    fn schema(&self) -> &'static str {
        "wallet"
    }

    fn event_types(&self) -> Vec<&'static str> {
        WalletProjection.event_types()
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &RecordedEvent,
        decoded: &AnyEvent,
    ) -> ledger_projections::Result<()> {
        if self.applies.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            return Err(ProjectionError::Replay("injected failure".into()));
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        WalletProjection.apply(connection, event, decoded).await
    }
}

/// Five wallets with twelve credits each.
async fn credited_wallets(store: &EventStore) {
    let mut payroll = Payroll::register(store.clone()).await;
    for n in 0..5 {
        let (_, wallet) = payroll.hire(100_000, day(2026, 1, 1), true).await;
        for credit in 0..12 {
            let command = WalletCommand::Credit {
                amount: usd_cents(100 + n * 10 + credit),
                transaction_id: TransactionId::from_uuid(Uuid::new_v4()),
            };
            execute::<WalletAggregate>(store, payroll.organization, wallet.as_uuid(), command).await;
        }
    }
}

/// The read tables agree with the log: one movement row per event, balances equal to the
/// credits less the debits computed from `ledger.events` directly.
async fn assert_wallets_match_the_log(db: &TestDatabase) {
    let (events, total): (i64, Decimal) = sqlx::query_as(
        "select count(*), coalesce(sum((payload->'amount'->>'amount')::numeric * case event_type when 'WalletCredited' then 1 else -1 end), 0) \
         from ledger.events where event_type in ('WalletCredited', 'WalletDebited')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let (rows, projected): (i64, Decimal) =
        sqlx::query_as("select count(*), coalesce(sum(amount * case direction when 'credit' then 1 else -1 end), 0) from wallet.wallet_transactions")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let balances: Decimal =
        sqlx::query_scalar("select coalesce(sum(balance), 0) from wallet.wallets").fetch_one(&db.pool).await.unwrap();
    assert_eq!((rows, projected), (events, total));
    assert_eq!(balances, total);
    let opened: i64 = sqlx::query_scalar("select count(*) from ledger.events where event_type = 'WalletOpened'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let wallets: i64 = sqlx::query_scalar("select count(*) from wallet.wallets").fetch_one(&db.pool).await.unwrap();
    assert_eq!(wallets, opened);
}

#[tokio::test]
async fn a_failure_in_the_middle_of_a_batch_rolls_it_back_and_the_retry_applies_it_once() {
    let db = TestDatabase::new().await;
    let store = db.store();
    credited_wallets(&store).await;
    let flaky = Arc::new(Flaky { applies: AtomicUsize::new(0), fail_at: 7, delay: std::time::Duration::ZERO });
    let runner =
        Runner::new(db.pool.clone(), flaky.clone(), RunnerOptions { batch_size: 40, ..RunnerOptions::default() });
    // The first batch must hold the failing event: wait until another test's transaction
    // (the log's horizon is the cluster's) no longer holds any of the events back.
    while store.read_all(ledger_store::Checkpoint::START, 40).await.unwrap().len() < 40 {
        tokio::time::sleep(ledger_projections::runner::HELD_BACK_RETRY).await;
    }

    let error = runner.step().await.unwrap_err();
    assert!(error.to_string().contains("injected"), "{error}");
    let rows: i64 = sqlx::query_scalar("select count(*) from wallet.wallets").fetch_one(&db.pool).await.unwrap();
    assert_eq!(rows, 0, "the failed batch left nothing behind");
    let checkpoint = ledger_store::checkpoint::checkpoints(&db.pool).await.unwrap();
    assert!(checkpoint.iter().all(|stored| stored.events_applied == 0), "{checkpoint:?}");

    assert!(matches!(runner.step().await.unwrap(), StepOutcome::Progressed { .. }));
    runner.catch_up().await.unwrap();
    assert_wallets_match_the_log(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_runner_task_resumes_without_losing_or_repeating() {
    let db = TestDatabase::new().await;
    let store = db.store();
    credited_wallets(&store).await;
    let options = RunnerOptions {
        batch_size: 15,
        poll_interval: std::time::Duration::from_millis(50),
        ..RunnerOptions::default()
    };
    for attempt in 0..5u64 {
        let flaky =
            Arc::new(Flaky { applies: AtomicUsize::new(0), fail_at: 0, delay: std::time::Duration::from_millis(2) });
        let runner = Runner::new(db.pool.clone(), flaky, options);
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move { runner.run(stopped).await });
        // Kill it part way through a batch (each batch takes about 30 ms).
        tokio::time::sleep(std::time::Duration::from_millis(20 + attempt * 7)).await;
        task.abort();
        let _ = task.await;
    }
    let runner = Runner::new(db.pool.clone(), Arc::new(WalletProjection), options);
    runner.catch_up().await.unwrap();
    assert_wallets_match_the_log(&db).await;
}

/// A transaction that began before committed events holds the gap-free read back (it may
/// still append events that come first): the runner reports that it is held back, not
/// caught up, so it steps again soon instead of sleeping until the poll interval; once the
/// transaction ends, everything is applied.
#[tokio::test]
async fn a_runner_held_back_by_an_older_transaction_says_so_and_catches_up_after_it() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let runner = Runner::new(db.pool.clone(), Arc::new(WalletProjection), RunnerOptions::default());
    let mut payroll = Payroll::register(store.clone()).await;
    let (_, wallet) = payroll.hire(100_000, day(2026, 1, 1), true).await;
    runner.catch_up().await.unwrap();
    let balance = || sqlx::query_scalar::<_, Decimal>("select balance from wallet.wallets").fetch_one(&db.pool);
    let before = balance().await.unwrap();

    // The older transaction is kept short: the log's horizon is the cluster's, so it holds
    // back every other test's readers too while it runs.
    let mut older = db.pool.begin().await.unwrap();
    sqlx::query("select pg_current_xact_id()").execute(&mut *older).await.unwrap();
    let credit =
        WalletCommand::Credit { amount: usd_cents(250), transaction_id: TransactionId::from_uuid(Uuid::new_v4()) };
    execute::<WalletAggregate>(&store, payroll.organization, wallet.as_uuid(), credit).await;
    let held = runner.step().await.unwrap();
    older.commit().await.unwrap();
    assert_eq!(held, StepOutcome::HeldBack);
    assert_eq!(balance().await.unwrap(), before, "nothing after the older transaction is applied while it runs");

    assert_eq!(runner.catch_up().await.unwrap(), 1);
    assert_eq!(balance().await.unwrap(), before + Decimal::new(250, 2));
    assert_eq!(runner.step().await.unwrap(), StepOutcome::CaughtUp);
    assert_wallets_match_the_log(&db).await;
}
