//! Backups restored into a new cluster (whose transaction counter is far below the source's),
//! into the same cluster, and a physical copy of a data folder: the log verifies, the read
//! tables equal the source's, new commands of every kind are projected, `wait_for_position`
//! waits for them, and a rebuild equals the live tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ledger_server::server::{Projectors, Server};
use ledger_store::local_postgres::LocalPostgres;
use ledger_store::testkit::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::World;

/// The master key the test databases' personal data is sealed under.
fn test_keys() -> ledger_server::backup::RestoreKeys<'static> {
    static MASTER: std::sync::OnceLock<ledger_server::privacy::MasterKeySource> = std::sync::OnceLock::new();
    let master =
        MASTER.get_or_init(|| ledger_server::privacy::MasterKeySource::of_text(ledger_store::testkit::TEST_MASTER_KEY));
    ledger_server::backup::RestoreKeys {
        master,
        default_master_file: Path::new("/nonexistent/master.key"),
        erasures: None,
    }
}

/// A checksum of every row of every table the ledger keeps: the log, keys, eras aside (a
/// restore into a new cluster adds one, and the era's check is recorded per run of a
/// cluster), checkpoints aside (their times differ), and every read table.
async fn checksums(pool: &PgPool) -> BTreeMap<String, String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "select format('%I.%I', schemaname, tablename) from pg_tables \
         where (schemaname = any(ledger.read_schemas()) or schemaname in ('ledger', 'auth')) \
           and tablename not in ('eras', 'era_checked', 'projection_checkpoints') order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut sums = BTreeMap::new();
    for table in tables {
        let sum: String = sqlx::query_scalar(&format!(
            "select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        sums.insert(table, sum);
    }
    sums
}

/// Waits until every projection has applied every committed event.
async fn caught_up(pool: &PgPool) {
    let store = ledger_store::EventStore::new(pool.clone());
    let names = ledger_projections::projections::names();
    for _ in 0..600 {
        let lags = ledger_projections::lag(&store, &names).await.unwrap();
        if lags.iter().all(|lag| lag.events_behind == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the projections did not catch up");
}

/// Burns transaction ids in the source's cluster, so that its events' ids lie far above a
/// freshly made cluster's counter.
async fn burn_transaction_ids(pool: &PgPool, count: i32) {
    sqlx::query(&format!(
        "do $$ begin for i in 1..{count} loop perform pg_current_xact_id(); commit; end loop; end $$"
    ))
    .execute(pool)
    .await
    .unwrap();
}

/// Fills the world: a payroll with a paid and a held item, and a second organization.
async fn fill(world: &World) -> (String, String) {
    world.register().await;
    world.hire("5000.00", true).await;
    let (held, _) = world.hire("4000.00", false).await;
    let run = world.calculated_run().await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    let other = json!({ "name": "Globex", "base_currency": "EUR", "pay_schedule": { "frequency": "monthly", "anchor_date": "2026-01-01" } });
    world.ok(Method::POST, "/v1/organization", &world.other_admin, Some(other)).await;
    (held, run)
}

/// New commands of every kind on the restored ledger, each projected, and read back with
/// `wait_for_position`.
async fn write_and_read_back(world: &World, pool: &PgPool, held: &str) {
    let (employee, wallet) = world.hire("6000.00", true).await;
    let body = json!({ "rate": { "amount": { "amount": "6500.00", "currency": "USD" }, "basis": "monthly" }, "effective_from": "2026-02-01", "reason": "promotion" });
    world.ok(Method::POST, &format!("/v1/employees/{employee}/pay-rate"), &world.processor, Some(body)).await;
    let kyc = json!({ "status": "approved" });
    world.ok(Method::POST, &format!("/v1/employees/{held}/kyc"), &world.processor, Some(kyc)).await;
    let created = world
        .ok(
            Method::POST,
            "/v1/payroll-runs",
            &world.processor,
            Some(json!({ "period": { "start": "2026-02-01", "end": "2026-02-28" } })),
        )
        .await;
    let run = created["payroll_run_id"].as_str().unwrap().to_owned();
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/calculate"), &world.processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    let position: i64 =
        sqlx::query_scalar("select max(global_position) from ledger.events").fetch_one(pool).await.unwrap();
    let (status, read) = world
        .get(&format!("/v1/wallets/{wallet}?wait_for_position={position}&wait_timeout_ms=20000"), &world.processor)
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["balance"], "5850.00", "February's pay, less 10 % tax, is in the new wallet: {read}");
    let (status, read) = world
        .get(&format!("/v1/employees/{held}?wait_for_position={position}&wait_timeout_ms=20000"), &world.processor)
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["kyc_status"], "approved", "{read}");
}

/// Checks the restored database `pool` against the source's checksums, then serves it and
/// writes to it; returns the era it is in.
async fn check_restored(world: &mut World, source: &BTreeMap<String, String>, pool: &PgPool, held: &str) -> i32 {
    assert!(ledger_store::EventStore::new(pool.clone()).verify_all().await.unwrap().is_intact());
    assert_eq!(&checksums(pool).await, source, "every table equals the source's");
    let server = Server::start(pool.clone(), "127.0.0.1:0".parse().unwrap(), Projectors::Here).await.unwrap();
    if let Some(previous) = world.server.replace(server) {
        previous.stop().await.unwrap();
    }
    crate::operations::ready_becomes(world, StatusCode::OK, "").await;
    write_and_read_back(world, pool, held).await;
    caught_up(pool).await;
    let live = checksums(pool).await;
    for projection in ledger_projections::projections::all() {
        ledger_projections::rebuild(pool, projection.as_ref(), &mut |_| {}).await.unwrap();
    }
    assert_eq!(checksums(pool).await, live, "a rebuild equals the live tables");
    sqlx::query_scalar("select max(era) from ledger.eras").fetch_one(pool).await.unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("payroll-ledger-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_backup_restored_into_a_new_cluster_is_read_and_written_in_order() {
    let mut world = World::new().await;
    burn_transaction_ids(&world.db.pool, 3_000).await;
    let (held, _) = fill(&world).await;
    caught_up(&world.db.pool).await;
    let source = checksums(&world.db.pool).await;
    let source_top: i64 = sqlx::query_scalar("select max(transaction_id)::text::int8 from ledger.events")
        .fetch_one(&world.db.pool)
        .await
        .unwrap();
    let dir = scratch("restore");
    let file = dir.join("ledger.dump");
    ledger_server::backup::backup(world.db.url(), &file, &mut |_| {}).await.unwrap();

    let cluster = tokio::task::spawn_blocking({
        let data = dir.join("data");
        move || LocalPostgres::ensure_running(&data).unwrap()
    })
    .await
    .unwrap();
    let url = cluster.url("restored");
    let outcome = async {
        let report = ledger_server::backup::restore(&file, &url, test_keys(), &mut |_| {}).await.unwrap();
        assert!(report.preparation.era_begun, "{report:?}");
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(20).connect(&url).await.unwrap();
        // pg_restore --no-owner gives the append functions to the restoring login; the restore's
        // preparation gives them back to ledger_appender, whose rows the chain check skips.
        assert!(report.preparation.access_repaired >= 2, "{report:?}");
        let owners: Vec<String> = sqlx::query_scalar(
            "select pg_get_userbyid(proowner)::text from pg_proc \
             where pronamespace = 'ledger'::regnamespace and proname in ('append', 'append_group')",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(owners, ["ledger_appender", "ledger_appender"]);
        assert_eq!(ledger_store::cluster::access_problems(&pool).await.unwrap(), Vec::<String>::new());
        // The planner has the restored tables' statistics before anything reads them.
        let unanalyzed: Vec<String> = sqlx::query_scalar(
            "select schemaname || '.' || relname from pg_stat_user_tables \
             where schemaname in ('ledger', 'employee', 'payroll', 'wallet') and n_live_tup > 0 \
                 and last_analyze is null and last_autoanalyze is null order by 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(unanalyzed, Vec::<String>::new());
        let events_described: bool = sqlx::query_scalar(
            "select exists (select 1 from pg_stats where schemaname = 'ledger' and tablename = 'events' and attname = 'stream_id')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(events_described, "ledger.events has statistics on stream_id");
        let counter: i64 =
            sqlx::query_scalar("select pg_current_xact_id()::text::int8").fetch_one(&pool).await.unwrap();
        assert!(counter < source_top, "the new cluster's counter ({counter}) is below the source's ids ({source_top})");
        let era = check_restored(&mut world, &source, &pool, &held).await;
        assert_eq!(era, 2, "the new cluster writes in an era of its own");
        let below: i64 = sqlx::query_scalar(
            "select count(*) from ledger.events where global_position > (select first_position from ledger.eras where era = 2) \
             and transaction_id::text::numeric <= $1",
        )
        .bind(source_top)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(below, 0, "every event written after the restore sorts after every restored one");
        world.server.take().unwrap().stop().await.unwrap();
        pool.close().await;
    };
    outcome.await;
    tokio::task::spawn_blocking(move || cluster.stop().unwrap()).await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_backup_restored_into_the_same_cluster_keeps_its_era() {
    let mut world = World::new().await;
    let (held, _) = fill(&world).await;
    caught_up(&world.db.pool).await;
    let source = checksums(&world.db.pool).await;
    let dir = scratch("same-cluster");
    let file = dir.join("ledger.dump");
    ledger_server::backup::backup(world.db.url(), &file, &mut |_| {}).await.unwrap();
    let copy = format!("{}_copy", world.db.name());
    let url = world.db.url().replace(world.db.name(), &copy);
    let report = ledger_server::backup::restore(&file, &url, test_keys(), &mut |_| {}).await.unwrap();
    assert!(!report.preparation.era_begun, "{report:?}");
    // Restoring over a database that holds tables is refused, and changes nothing.
    let again = ledger_server::backup::restore(&file, &url, test_keys(), &mut |_| {}).await.unwrap_err();
    assert!(again.to_string().contains("is not empty"), "{again}");
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(20).connect(&url).await.unwrap();
    assert_eq!(check_restored(&mut world, &source, &pool, &held).await, 1);
    world.server.take().unwrap().stop().await.unwrap();
    pool.close().await;
    sqlx::query(&format!("drop database {copy} with (force)")).execute(&world.db.pool).await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_physical_copy_of_the_data_folder_keeps_its_era() {
    let dir = scratch("physical");
    let source = tokio::task::spawn_blocking({
        let data = dir.join("source");
        move || LocalPostgres::ensure_running(&data).unwrap()
    })
    .await
    .unwrap();
    let mut world = World::on(TestDatabase::new_on(&source.url("postgres")).await).await;
    let (pool, name) = (world.db.pool.clone(), world.db.name().to_owned());
    let (held, _) = fill(&world).await;
    caught_up(&pool).await;
    let sums = checksums(&pool).await;
    world.server.take().unwrap().stop().await.unwrap();
    pool.close().await;
    tokio::task::spawn_blocking(move || source.stop().unwrap()).await.unwrap();
    let status = std::process::Command::new("cp")
        .args(["-a", &dir.join("source").to_string_lossy(), &dir.join("copy").to_string_lossy()])
        .status()
        .unwrap();
    assert!(status.success());
    let copy = tokio::task::spawn_blocking({
        let data = dir.join("copy");
        move || LocalPostgres::ensure_running(&data).unwrap()
    })
    .await
    .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(20).connect(&copy.url(&name)).await.unwrap();
    let prepared = ledger_store::cluster::prepare(&pool).await.unwrap();
    assert!(!prepared.era_begun, "{prepared:?}");
    assert_eq!(check_restored(&mut world, &sums, &pool, &held).await, 1);
    world.server.take().unwrap().stop().await.unwrap();
    pool.close().await;
    tokio::task::spawn_blocking(move || copy.stop().unwrap()).await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
