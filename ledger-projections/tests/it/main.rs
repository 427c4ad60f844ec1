//! Projection tests against a real PostgreSQL, one database each.

mod workload;

mod as_of;
mod catalog;
mod crash;
mod history;
mod leadership;
mod rebuild;
mod tree;
mod year_to_date;

use std::collections::BTreeMap;

use ledger_projections::projections::all;
use ledger_projections::schema::{quote, tables};
use ledger_projections::{Runner, RunnerOptions};
use ledger_store::EventStore;

/// Every row of every read table, as sorted JSON text, by `schema.table`.
pub async fn snapshot(store: &EventStore) -> BTreeMap<String, Vec<String>> {
    let mut connection = store.pool().acquire().await.unwrap();
    let mut snapshot = BTreeMap::new();
    for projection in all() {
        for table in tables(&mut connection, projection.schema()).await.unwrap() {
            let name = format!("{}.{}", quote(projection.schema()), quote(&table));
            let rows: Vec<String> = sqlx::query_scalar(&format!("select to_jsonb(t)::text from {name} t order by 1"))
                .fetch_all(&mut *connection)
                .await
                .unwrap();
            snapshot.insert(name, rows);
        }
    }
    snapshot
}

/// Catches every projection up with the log.
pub async fn catch_up_all(store: &EventStore) {
    for projection in all() {
        Runner::new(store.pool().clone(), projection, RunnerOptions::default()).catch_up().await.unwrap();
    }
}

/// Waits until every projection's checkpoint has reached the log's head position.
pub async fn wait_until_projected(store: &EventStore) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let lags = ledger_projections::lag(store, &ledger_projections::projections::names()).await.unwrap();
        if lags.len() == all().len() && lags.iter().all(|lag| lag.events_behind == 0) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "projections did not catch up: {lags:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
