//! Backups and restores of a whole ledger database, into the same or another PostgreSQL
//! cluster, with nothing to do by hand: `payroll-ledger backup` and `restore`.
//!
//! A backup is `pg_dump --format=custom` of the database: the log, the read tables with
//! their checkpoints, the keys, the id namespace and the eras. Roles are the cluster's and not
//! in it. A restore makes the ledger's group roles first (so every grant and policy of the
//! dump restores), restores in one transaction (all or nothing) with the restoring login as
//! the owner, then does what every start does (migrations, the cluster's era, access), checks
//! every hash chain and catches every projection up.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use ledger_projections::{Runner, RunnerOptions};
use ledger_store::cluster::{Preparation, prepare};
use ledger_store::{EventStore, VerifyScope};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

/// The group roles the ledger's grants and policies name (`ledger_appender` owns the append
/// functions; `pg_restore --no-owner` drops that, and the start after the restore gives them
/// back to it).
const GROUP_ROLES: [&str; 5] =
    ["ledger_writer", "ledger_projector", "ledger_auditor", "ledger_api_reader", "ledger_appender"];

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub events: i64,
    pub head_position: i64,
    pub bytes: u64,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreReport {
    pub database: String,
    pub preparation: Preparation,
    pub events: i64,
    /// Events the projections applied after the restore (those the dump's read tables did not
    /// hold yet).
    pub projected: u64,
    /// Erasures the backup lacked, made again from the erasures file.
    pub erasures_reapplied: u64,
}

/// A PostgreSQL client program (`pg_dump`, `pg_restore`): next to the server binaries the
/// private server uses, else on `PATH`.
fn client_program(name: &str) -> PathBuf {
    ledger_store::local_postgres::find_bin_dir()
        .map(|dir| dir.join(name))
        .ok()
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The URL as libpq reads it: without the query parameters only sqlx knows (which make
/// `pg_dump` refuse the URL).
fn libpq_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let kept: Vec<&str> = query.split('&').filter(|pair| !pair.starts_with("statement-cache-capacity=")).collect();
    if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
}

/// Runs a client program to its end (on a blocking thread); its stderr names what failed.
async fn run_program(name: &'static str, args: Vec<String>) -> anyhow::Result<()> {
    let output = tokio::task::spawn_blocking(move || Command::new(client_program(name)).args(&args).output())
        .await?
        .with_context(|| {
            format!("cannot run {name}: install PostgreSQL's client programs (Debian/Ubuntu: apt-get install postgresql-client)")
        })?;
    if !output.status.success() {
        bail!("{name} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Dumps the database at `url` into `out` (custom format).
pub async fn backup(url: &str, out: &Path, progress: &mut dyn FnMut(&str)) -> anyhow::Result<BackupReport> {
    let mut connection = PgConnection::connect(url).await.context("connecting to the database to back up")?;
    let (events, head_position): (i64, i64) =
        sqlx::query_as("select count(*), coalesce(max(global_position), 0) from ledger.events")
            .fetch_one(&mut connection)
            .await
            .context("reading the log: is this a payroll ledger database?")?;
    connection.close().await?;
    progress(&format!("dumping {events} events (head position {head_position}) and the read tables"));
    let out_text = out.to_string_lossy().into_owned();
    run_program(
        "pg_dump",
        vec!["--format=custom".into(), format!("--file={out_text}"), format!("--dbname={}", libpq_url(url))],
    )
    .await?;
    let bytes = std::fs::metadata(out).with_context(|| format!("reading {out_text}"))?.len();
    Ok(BackupReport { events, head_position, bytes })
}

/// Restores `file` into the database `url` names, which must not exist or be empty (it is
/// created), then prepares, verifies and projects it.
/// The master key a restore opens the personal data with, and erasures to make again.
#[derive(Debug, Clone, Copy)]
pub struct RestoreKeys<'a> {
    pub master: &'a crate::privacy::MasterKeySource,
    /// Where a key made by the CLI is (when `master` names none).
    pub default_master_file: &'a Path,
    /// Erasures made since the backup was taken (NDJSON of erasure events), made again.
    pub erasures: Option<&'a Path>,
}

pub async fn restore(
    file: &Path,
    url: &str,
    keys: RestoreKeys<'_>,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<RestoreReport> {
    if !file.is_file() {
        bail!("{} is not a file: give the file `payroll-ledger backup --out` wrote", file.display());
    }
    let options: PgConnectOptions = url.parse().context("DATABASE_URL is not a postgres:// URL")?;
    let database = options.get_database().unwrap_or("postgres").to_owned();
    if database == "postgres" {
        bail!("name the database to restore into in DATABASE_URL (not the maintenance database `postgres`)");
    }
    let mut admin = options.clone().database("postgres").connect().await.context("connecting to the server")?;
    progress("making the ledger's group roles");
    for role in GROUP_ROLES {
        let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_roles where rolname = $1)")
            .bind(role)
            .fetch_one(&mut admin)
            .await?;
        if !exists {
            sqlx::query(&format!("create role {role} nologin"))
                .execute(&mut admin)
                .await
                .with_context(|| format!("creating role {role}: restore as a role that may create roles"))?;
        }
    }
    let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
        .bind(&database)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        progress(&format!("creating database {database}"));
        sqlx::query(&format!("create database \"{}\"", database.replace('"', "\"\""))).execute(&mut admin).await?;
    }
    admin.close().await?;
    let mut target = PgConnection::connect_with(&options).await?;
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from pg_tables where schemaname not in ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&mut target)
    .await?;
    target.close().await?;
    if tables > 0 {
        bail!(
            "database {database} is not empty ({tables} tables): restore into a new database (set DATABASE_URL to a new \
             name) or drop this one first"
        );
    }
    progress(&format!("restoring {} into {database} (one transaction)", file.display()));
    run_program(
        "pg_restore",
        vec![
            "--no-owner".into(),
            "--single-transaction".into(),
            "--exit-on-error".into(),
            format!("--dbname={}", libpq_url(url)),
            file.to_string_lossy().into_owned(),
        ],
    )
    .await?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect_with(options).await?;
    progress("applying migrations, beginning this cluster's era, checking roles and grants");
    let preparation = prepare(&pool).await?;
    if let Some(missing) = &preparation.access_missing {
        bail!("{missing}");
    }
    // pg_restore leaves every table without planner statistics until autovacuum gets to it
    // (a minute or more): meanwhile a read of many streams at once (`stream_id = any(...)`, a
    // payment batch's) is planned as a scan of the whole log, seconds per read on a large one.
    progress("gathering the planner's statistics of the restored tables (ANALYZE)");
    sqlx::query("analyze").execute(&pool).await?;
    let store = EventStore::new(pool.clone());
    let events = store.count_after(ledger_store::Checkpoint::START).await?;
    progress(&format!("verifying the hash chains of {events} events"));
    let report = store.verify(VerifyScope::All, &mut |_| {}).await?;
    if let Some(first) = report.breaks.first() {
        bail!(
            "the restored log is not intact: stream {} breaks at version {} (position {}); the backup is damaged, \
             restore an older one",
            first.stream_id,
            first.stream_version,
            first.global_position
        );
    }
    progress("opening the personal data with the master key; re-applying the log's erasures to the data keys");
    // A restore seals and opens nothing: the key is checked when given; without it the
    // personal data stays sealed until a process with the key opens it.
    if crate::privacy::is_given(keys.master, keys.default_master_file) {
        crate::privacy::open_vault(&pool, keys.master, keys.default_master_file).await?;
    } else {
        progress("no master key given: personal data stays sealed (serve with the key to read it)");
        crate::privacy::reapply_erasures(&pool).await?;
    }
    let mut erasures_reapplied = 0;
    if let Some(erasures) = keys.erasures {
        progress(&format!("making again the erasures in {} that the backup lacks", erasures.display()));
        erasures_reapplied = crate::privacy::reapply_erasure_file(&pool, erasures).await?;
    }
    progress("catching the projections up");
    let mut projected = 0;
    for projection in ledger_projections::projections::all() {
        projected += Runner::new(pool.clone(), projection, RunnerOptions::default()).catch_up().await?;
    }
    pool.close().await;
    Ok(RestoreReport { database, preparation, events, projected, erasures_reapplied })
}

#[cfg(test)]
mod tests {
    use super::libpq_url;

    #[test]
    fn the_url_for_client_programs_drops_what_only_sqlx_reads() {
        assert_eq!(libpq_url("postgres://u@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(libpq_url("postgres://u@h/db?statement-cache-capacity=100"), "postgres://u@h/db");
        assert_eq!(
            libpq_url("postgres://u@h/db?sslmode=require&statement-cache-capacity=100"),
            "postgres://u@h/db?sslmode=require"
        );
    }
}
