//! Rebuild equals live: a randomized workload projected live, then every projection
//! rebuilt from scratch; every read table is identical, row for row.

use ledger_projections::projections::all;
use ledger_projections::{Runner, RunnerOptions, rebuild};
use ledger_store::testkit::TestDatabase;
use tokio::sync::watch;

use ledger_core::wallet::WalletAggregate;

use crate::workload::{Dice, execute, random_payroll, seed};
use crate::{snapshot, wait_until_projected};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_every_projection_gives_the_live_tables_row_for_row() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (stop, stopped) = watch::channel(false);
    let options = RunnerOptions {
        batch_size: 50,
        poll_interval: std::time::Duration::from_millis(100),
        ..RunnerOptions::default()
    };
    let runners: Vec<_> = all()
        .into_iter()
        .map(|projection| {
            let runner = Runner::new(db.pool.clone(), projection, options);
            let stopped = stopped.clone();
            tokio::spawn(async move { runner.run(stopped).await })
        })
        .collect();

    let mut dice = Dice::new(seed());
    let payroll = random_payroll(store.clone(), &mut dice, 12).await;
    wait_until_projected(&store).await;
    let live = snapshot(&store).await;

    let total_events: i64 = sqlx::query_scalar("select count(*) from ledger.events").fetch_one(&db.pool).await.unwrap();
    for projection in all() {
        let mut progress = Vec::new();
        let report = rebuild(&db.pool, projection.as_ref(), &mut |events| progress.push(events)).await.unwrap();
        assert_eq!(report.events_read as i64, total_events, "{}", projection.name());
        assert_eq!(progress.last().copied(), Some(total_events as u64));
    }
    let rebuilt = snapshot(&store).await;
    assert_eq!(live.keys().collect::<Vec<_>>(), rebuilt.keys().collect::<Vec<_>>());
    for (table, rows) in &live {
        assert_eq!(rows, &rebuilt[table], "{table} differs after the rebuild");
    }
    assert!(live["\"payroll\".\"payroll_runs\""].len() == 3);
    assert!(live["\"compliance\".\"audit_logs\""].len() as i64 == total_events);
    assert!(!live["\"wallet\".\"wallet_transactions\""].is_empty());

    // The live runners go on over the swapped-in tables.
    payroll.withdraw(payroll.employees[0].1, 1).await;
    let mut extra = payroll;
    extra.hire(500_000, crate::workload::day(2026, 4, 1), true).await;
    wait_until_projected(&store).await;
    let employees: i64 =
        sqlx::query_scalar("select count(*) from employee.employees").fetch_one(&db.pool).await.unwrap();
    assert_eq!(employees, 13);

    stop.send(true).unwrap();
    for runner in runners {
        runner.await.unwrap().unwrap();
    }
}

/// Projections gather a batch's rows and write them in a few statements; applied one event
/// per transaction instead, every table comes out the same, row for row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_at_a_time_gives_the_same_tables_as_whole_batches() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let mut dice = Dice::new(seed());
    let payroll = random_payroll(store.clone(), &mut dice, 12).await;
    // Status changes between movements of one wallet, inside one batch.
    let wallet = payroll.employees[1].1.as_uuid();
    let freeze = ledger_core::wallet::WalletCommand::Freeze { reason: "review".into() };
    execute::<WalletAggregate>(&store, payroll.organization, wallet, freeze).await;
    execute::<WalletAggregate>(&store, payroll.organization, wallet, ledger_core::wallet::WalletCommand::Unfreeze)
        .await;
    payroll.withdraw(payroll.employees[1].1, 1).await;
    // A payment the rail rejects after the run: its postings come out of the balances.
    let pending: uuid::Uuid = sqlx::query_scalar(
        "select stream_id from ledger.events where stream_type = 'transaction' group by stream_id having count(*) = 1 limit 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let fail = ledger_core::transaction::TransactionCommand::Fail { reason: "returned by the bank".into() };
    execute::<ledger_core::transaction::TransactionAggregate>(&store, payroll.organization, pending, fail).await;

    let one_at_a_time = RunnerOptions { batch_size: 1, ..RunnerOptions::default() };
    for projection in all() {
        let events = Runner::new(db.pool.clone(), projection, one_at_a_time).catch_up().await.unwrap();
        assert!(events > 0);
    }
    let single = snapshot(&store).await;
    for projection in all() {
        rebuild(&db.pool, projection.as_ref(), &mut |_| {}).await.unwrap();
    }
    let batched = snapshot(&store).await;
    for (table, rows) in &single {
        assert_eq!(rows, &batched[table], "{table} differs between one event per step and whole batches");
    }
    let count = |table: &str, status: &str| single[table].iter().filter(|row| row.contains(status)).count();
    // The workload's seed decides how many; these kinds must be there to compare.
    assert!(count("\"transaction\".\"transactions\"", "settled") > 0);
    assert!(count("\"transaction\".\"transactions\"", "returned by the bank") == 1);
    assert!(count("\"wallet\".\"wallets\"", "active") == 12);
    assert!(count("\"payroll\".\"payroll_items\"", "paid") > 0);
    assert!(!single["\"payroll\".\"paid_earnings\""].is_empty());
}
