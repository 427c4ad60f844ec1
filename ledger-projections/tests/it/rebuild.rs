//! Rebuild equals live: a randomized workload projected live, then every projection
//! rebuilt from scratch; every read table is identical, row for row.

use ledger_projections::projections::all;
use ledger_projections::{Runner, RunnerOptions, rebuild};
use ledger_store::testkit::TestDatabase;
use tokio::sync::watch;

use crate::workload::{Dice, random_payroll, seed};
use crate::{snapshot, wait_until_projected};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_every_projection_gives_the_live_tables_row_for_row() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (stop, stopped) = watch::channel(false);
    let options = RunnerOptions { batch_size: 50, poll_interval: std::time::Duration::from_millis(100) };
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
