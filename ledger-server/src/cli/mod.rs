//! The subcommands.

pub mod bench;
mod database;
mod demo;
pub mod events;
mod progress;
mod transparency;

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chrono::{DateTime, NaiveDate, Utc};
use ledger_core::employee::EmployeeAggregate;
use ledger_core::payroll::PayrollRunAggregate;
use ledger_core::transaction::TransactionAggregate;
use ledger_core::wallet::WalletAggregate;
use ledger_projections::replay::{AsOf, account_balance_as_of, aggregate_as_of};
use ledger_server::api::views;
use ledger_server::server::{Projectors, Server, ServerOptions, start_projectors};
use ledger_store::{EventStore, VerifyScope};
use uuid::Uuid;

use crate::{Cli, Command, KeysCommand, ProofCommand};
use database::{Database, Migrations, ServerAfter};
pub use progress::Progress;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The document needs no database.
    if matches!(cli.command, Command::Openapi) {
        print!("{}", ledger_server::api::openapi::document());
        return Ok(ExitCode::SUCCESS);
    }
    // Keys and evidence need no database.
    if let Command::Keygen { name, out } = &cli.command {
        return transparency::keygen(name, out);
    }
    if let Command::VerifyEvidence { file, public_key } = &cli.command {
        return transparency::verify_evidence(file, public_key.as_deref());
    }
    // A restore makes its database.
    if let Command::Restore { file, reapply_erasures } = &cli.command {
        let keys = ledger_server::backup::RestoreKeys {
            master: &cli.master_key,
            default_master_file: &master_key_file(&cli.data_dir),
            erasures: reapply_erasures.as_deref(),
        };
        return restore(cli.database_url.as_deref(), &cli.data_dir, keys, file).await;
    }
    if let Command::MasterKey { out } = &cli.command {
        ledger_server::privacy::write_key(out, &ledger_store::vault::MasterKey::generate())?;
        println!("wrote a new master key to {}: give it as PAYROLL_LEDGER_MASTER_KEY_FILE", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    // The bench migrates a database of its own, not the one it connects to; a backup takes
    // the database as it is.
    let migrations = match cli.command {
        Command::Migrate { status: true } | Command::Bench(_) | Command::Backup { .. } => Migrations::Leave,
        _ => Migrations::Apply,
    };
    let database = Database::open(cli.database_url.as_deref(), &cli.data_dir, migrations).await?;
    // Commands that seal or read personal data open the vault and re-apply the log's erasures
    // (`serve`'s server re-applies them itself as it starts); the bench opens its own
    // database's.
    let key_file = master_key_file(&cli.data_dir);
    let opened = match cli.command {
        Command::Serve { .. } => ledger_server::privacy::unlock(&database.pool, &cli.master_key, &key_file).await,
        Command::Replay { .. }
        | Command::Events(_)
        | Command::Demo { .. }
        | Command::EraseDue { .. }
        | Command::Payslip { .. } => {
            ledger_server::privacy::open_vault(&database.pool, &cli.master_key, &key_file).await
        }
        _ => Ok(()),
    };
    if let Err(error) = opened {
        database.close(ServerAfter::Stop).await?;
        return Err(error);
    }
    if let Command::RotateMasterKey { new_master_key_file } = &cli.command {
        let outcome = rotate_master_key(&database, &cli, new_master_key_file).await;
        database.close(ServerAfter::Stop).await?;
        return outcome;
    }
    let server_after = if matches!(cli.command, Command::Serve { .. }) { ServerAfter::Keep } else { ServerAfter::Stop };
    let outcome = dispatch(cli.command, &database).await;
    database.close(server_after).await?;
    outcome
}

async fn dispatch(command: Command, database: &Database) -> anyhow::Result<ExitCode> {
    let pool = &database.pool;
    match command {
        Command::Serve { bind, no_projectors, checkpoint_every, key } => {
            let projectors = if no_projectors { Projectors::Elsewhere } else { Projectors::Here };
            let options = ServerOptions {
                checkpoint_key: key.load()?.map(std::sync::Arc::new),
                checkpoint_every: std::time::Duration::from_secs(checkpoint_every.max(1)),
                ..ServerOptions::default()
            };
            if let Some(key) = &options.checkpoint_key {
                eprintln!("signing a checkpoint of the log every {checkpoint_every} s with key {}", key.verifier_key());
            }
            let server = Server::start_with(pool.clone(), bind, projectors, options).await?;
            eprintln!(
                "serving the API on {} (projectors: {}); Ctrl-C stops",
                server.url(),
                if no_projectors { "off" } else { "on" }
            );
            server.run_until_signal().await?;
        }
        Command::Migrate { status } => migrate(database, status).await?,
        Command::Project { only } => {
            if let Some(name) = &only {
                ledger_projections::projections::by_name(name)?;
            }
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let tasks = start_projectors(pool, ledger_projections::RunnerOptions::default(), only.as_deref(), &stopped);
            eprintln!("running {} projector(s); Ctrl-C stops", tasks.len());
            tokio::signal::ctrl_c().await?;
            stop.send(true)?;
            for task in tasks {
                task.await??;
            }
        }
        Command::Rebuild { name } => rebuild(database, name).await?,
        Command::Replay { as_of, entity } => replay(database, &as_of, &entity).await?,
        Command::Events(args) => events::run(database, args).await?,
        Command::Verify { checkpoint: Some(checkpoint), public_key, key, .. } => {
            return transparency::verify_checkpoint(database, &checkpoint, public_key.as_deref(), &key).await;
        }
        Command::Verify { stream_id: None, public_key, key, .. } => {
            return transparency::verify_log(database, public_key.as_deref(), &key).await;
        }
        Command::Verify { stream_id: Some(stream_id), .. } => return verify(database, stream_id).await,
        Command::Checkpoint { out, extends, key } => {
            transparency::checkpoint(database, out.as_deref(), extends.as_deref(), &key).await?
        }
        Command::Proof { command } => match command {
            ProofCommand::Inclusion { event_id, tree_size } => {
                transparency::prove_inclusion(database, event_id, tree_size).await?
            }
            ProofCommand::Consistency { from, to } => transparency::prove_consistency(database, from, to).await?,
        },
        Command::Evidence { run, out, key } => transparency::evidence(database, run, &out, &key).await?,
        Command::EraseDue { org, dry_run, reason } => return erase_due(database, org, dry_run, &reason).await,
        Command::RotateMasterKey { .. } => unreachable!("answered before dispatch"),
        Command::Keygen { .. } | Command::VerifyEvidence { .. } | Command::MasterKey { .. } => {
            unreachable!("answered before the database is opened")
        }
        Command::Backup { out } => backup(database, &out).await?,
        Command::Restore { .. } => unreachable!("answered before the database is opened"),
        Command::Keys { command } => keys(database, command).await?,
        Command::Payslip { run, employee, out } => payslip(database, run, employee, &out).await?,
        Command::Demo { employees } => demo::run(database, employees).await?,
        Command::Openapi => unreachable!("answered before the database is opened"),
        Command::Bench(args) => bench::run(database, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn migrate(database: &Database, status: bool) -> anyhow::Result<()> {
    if !status {
        println!("migrations applied to {}", database.location);
    }
    let applied = EventStore::new(database.pool.clone()).applied_migrations().await?;
    for migration in ledger_store::MIGRATOR.iter() {
        let state = if applied.contains(&migration.version) { "applied" } else { "pending" };
        println!("{state:>8}  {}  {}", migration.version, migration.description);
    }
    Ok(())
}

async fn backup(database: &Database, out: &std::path::Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let report = ledger_server::backup::backup(&database.url, out, &mut |step| eprintln!("== {step}")).await?;
    println!(
        "backed up {} events (head position {}) and the read tables of {} into {} ({} bytes) in {:.1} s",
        report.events,
        report.head_position,
        database.location,
        out.display(),
        report.bytes,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where a master key the CLI made is kept: beside the private server's data.
fn master_key_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.parent().unwrap_or(std::path::Path::new(".")).join(ledger_server::privacy::MASTER_KEY_FILE_NAME)
}

async fn restore(
    url: Option<&str>,
    data_dir: &std::path::Path,
    keys: ledger_server::backup::RestoreKeys<'_>,
    file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let located = database::Located::find(url, data_dir).await?;
    let started = std::time::Instant::now();
    let outcome = ledger_server::backup::restore(file, &located.url, keys, &mut |step| eprintln!("== {step}")).await;
    located.close().await?;
    let report = outcome?;
    let era = if report.preparation.era_begun {
        format!("began era {} of the log on this cluster", report.preparation.era)
    } else {
        format!("same cluster, era {}", report.preparation.era)
    };
    println!(
        "restored {} events into {}: every hash chain intact, {era}, projections caught up ({} events applied), in {:.1} s",
        report.events,
        report.database,
        report.projected,
        started.elapsed().as_secs_f64()
    );
    if report.erasures_reapplied > 0 {
        println!("made again {} erasure(s) made since the backup", report.erasures_reapplied);
    }
    Ok(ExitCode::SUCCESS)
}

async fn rebuild(database: &Database, name: Option<String>) -> anyhow::Result<()> {
    let projections = match name {
        Some(name) => vec![ledger_projections::projections::by_name(&name)?],
        None => ledger_projections::projections::all(),
    };
    let total = EventStore::new(database.pool.clone()).count_after(ledger_store::Checkpoint::START).await? as u64;
    for projection in projections {
        let mut progress = Progress::new(projection.name(), Some(total));
        let started = std::time::Instant::now();
        let report =
            ledger_projections::rebuild(&database.pool, projection.as_ref(), &mut |events| progress.set(events))
                .await?;
        progress.finish();
        println!(
            "rebuilt {}: {} events read, {} applied, in {:.1} s",
            projection.name(),
            report.events_read,
            report.events_applied,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// A position, an RFC 3339 time, or a date (the end of that day, UTC).
pub fn parse_as_of(text: &str) -> anyhow::Result<AsOf> {
    if let Ok(position) = text.parse::<i64>() {
        return Ok(AsOf::Position(position));
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(AsOf::Time(time.with_timezone(&Utc)));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let end = date.and_hms_micro_opt(23, 59, 59, 999_999).expect("a valid time").and_utc();
        return Ok(AsOf::Time(end));
    }
    bail!("--as-of {text:?} is not a position, an RFC 3339 time or a YYYY-MM-DD date")
}

async fn replay(database: &Database, as_of: &str, entity: &str) -> anyhow::Result<()> {
    let point = parse_as_of(as_of)?;
    let store = EventStore::new(database.pool.clone());
    let (kind, id) = entity.split_once(':').context("--entity must be KIND:ID, e.g. wallet:6f1c...")?;
    let id_uuid = || id.parse::<Uuid>().with_context(|| format!("{id:?} is not a UUID"));
    let state = match kind {
        "employee" => {
            aggregate_as_of::<EmployeeAggregate>(&store, id_uuid()?, point).await?.map(|state| views::employee(&state))
        }
        "wallet" => {
            aggregate_as_of::<WalletAggregate>(&store, id_uuid()?, point).await?.map(|state| views::wallet(&state))
        }
        "payroll_run" => aggregate_as_of::<PayrollRunAggregate>(&store, id_uuid()?, point)
            .await?
            .map(|state| views::payroll_run(&state)),
        "transaction" => aggregate_as_of::<TransactionAggregate>(&store, id_uuid()?, point)
            .await?
            .map(|state| views::transaction(&state)),
        "account" => {
            Some(serde_json::json!({ "account": id, "balances": account_balance_as_of(&store, id, point).await? }))
        }
        other => bail!("unknown entity kind {other:?}: employee, wallet, payroll_run, transaction or account"),
    };
    let state = state.with_context(|| format!("{entity} did not exist as of {as_of}"))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "entity": entity, "as_of": point, "state": state }))?
    );
    Ok(())
}

async fn verify(database: &Database, stream_id: Uuid) -> anyhow::Result<ExitCode> {
    let store = EventStore::new(database.pool.clone());
    let scope = VerifyScope::Stream(stream_id);
    let total = store.count_after(ledger_store::Checkpoint::START).await? as u64;
    let mut progress = Progress::new("verify", Some(total));
    let report = store.verify(scope, &mut |events| progress.set(events)).await?;
    progress.finish();
    match report.first_break() {
        None => {
            println!(
                "intact: {} events in {} streams, every hash chain recomputed and matching",
                report.events_checked, report.streams_checked
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(first) => {
            println!(
                "BROKEN: {} stream(s) with a bad event; first at position {}:",
                report.breaks.len(),
                first.global_position
            );
            for chain_break in &report.breaks {
                println!(
                    "  stream {} version {} (position {}): {:?}",
                    chain_break.stream_id, chain_break.stream_version, chain_break.global_position, chain_break.kind
                );
            }
            Ok(ExitCode::from(1))
        }
    }
}

async fn keys(database: &Database, command: KeysCommand) -> anyhow::Result<()> {
    use ledger_server::keys;
    let pool = &database.pool;
    match command {
        KeysCommand::Create { org, role, label, holder, service_account } => {
            let holder = match (holder, service_account, &label) {
                (Some(person), _, _) => keys::Holder::Person(person),
                (None, Some(service), _) => keys::Holder::Service(service),
                (None, None, Some(label)) => keys::Holder::Person(label.clone()),
                (None, None, None) => {
                    eprintln!(
                        "warning: no --holder: this key stands for a person of its own; name the person \
                         (--holder) so that four eyes knows two keys of one person"
                    );
                    keys::Holder::Unnamed
                }
            };
            let label = label.unwrap_or_else(|| match &holder {
                keys::Holder::Person(name) | keys::Holder::Service(name) => name.clone(),
                keys::Holder::Unnamed => "cli".to_owned(),
            });
            let key = keys::create(pool, org, role.into(), &label, &holder, &operator())
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            eprintln!(
                "created {} key {} for organization {org}; the token is shown this once:",
                key.role.as_str(),
                key.key_id
            );
            println!("{}", key.token);
        }
        KeysCommand::List { org } => {
            for key in keys::list(pool, org).await.map_err(|error| anyhow::anyhow!("{error}"))? {
                let state = match (key.revoked_at.is_some(), key.activated) {
                    (true, _) => "revoked",
                    (false, true) => "active",
                    (false, false) => "unrecorded",
                };
                let holder = key.holder.as_deref().unwrap_or("(none recorded)");
                println!(
                    "{}  {}  {:<10}  {:<10}  {}  {}",
                    key.key_id, key.organization_id, key.role, state, holder, key.label
                );
            }
        }
        KeysCommand::Revoke { key_id, reason } => {
            if !keys::revoke(pool, key_id, &reason, &operator()).await.map_err(|error| anyhow::anyhow!("{error}"))? {
                bail!("no active key {key_id}");
            }
            println!("revoked {key_id}");
        }
    }
    Ok(())
}

/// Who runs the CLI, as recorded in the events it writes about keys.
fn operator() -> String {
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(user) if !user.trim().is_empty() => format!("cli:{user}"),
        _ => "cli".to_owned(),
    }
}

/// A ledger over the database, for commands that act.
pub fn ledger(database: &Database) -> ledger_app::Ledger {
    ledger_over(database.pool.clone())
}

pub fn ledger_over(pool: sqlx::PgPool) -> ledger_app::Ledger {
    ledger_server::server::unobserved_ledger(pool)
}

/// `erase-due`: erases (or with --dry-run lists) everyone whose retention period has passed.
async fn erase_due(database: &Database, org: Option<Uuid>, dry_run: bool, reason: &str) -> anyhow::Result<ExitCode> {
    let ledger = ledger(database);
    // The read tables choose whom (caught up here: no server need run); the domain checks
    // each erasure again against the log.
    for name in ["organization", "employee"] {
        let projection = ledger_projections::projections::by_name(name)?;
        ledger_projections::Runner::new(
            database.pool.clone(),
            projection,
            ledger_projections::RunnerOptions::default(),
        )
        .catch_up()
        .await?;
    }
    let due: Vec<(Uuid, Uuid, NaiveDate, NaiveDate, i32)> =
        sqlx::query_as(ledger_server::api::privacy::ERASURE_DUE_SQL)
            .bind(None::<Uuid>)
            .bind(None::<i64>)
            .bind(org)
            .fetch_all(&database.pool)
            .await?;
    if due.is_empty() {
        println!("nobody is due for erasure");
        return Ok(ExitCode::SUCCESS);
    }
    let today = Utc::now().date_naive();
    let (mut erased, mut failed) = (0, 0);
    for (organization_id, employee_id, end_date, erasable_from, _) in &due {
        let what = format!("employee {employee_id} of {organization_id} (left {end_date}, kept until {erasable_from})");
        if dry_run {
            println!("would erase {what}");
            continue;
        }
        let context = ledger_app::Context::system(*organization_id, &operator());
        let request = ledger_app::operations::EraseRequest {
            employee_id: *employee_id,
            reason: reason.to_owned(),
            override_basis: None,
            today,
            reapplied: false,
        };
        match ledger_app::operations::erase(&ledger, &context, request).await {
            Ok(_) => {
                erased += 1;
                println!("erased {what}");
            }
            Err(error) => {
                failed += 1;
                eprintln!("could not erase {what}: {error}");
            }
        }
    }
    if dry_run {
        println!("{} due for erasure; run without --dry-run to erase them", due.len());
        return Ok(ExitCode::SUCCESS);
    }
    println!("erased {erased} of {} due", due.len());
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `rotate-master-key`: every data key re-wrapped under the new master key, in one transaction.
async fn rotate_master_key(
    database: &Database,
    cli: &crate::Cli,
    new_file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let current = cli.master_key.resolve(&database.pool, &master_key_file(&cli.data_dir)).await?;
    let vault = ledger_store::vault::Vault::unlock(&database.pool, &current).await?;
    let new = ledger_server::privacy::read_key(new_file)?;
    let rewrapped = vault.rotate(&database.pool, &new).await?;
    println!(
        "re-wrapped {rewrapped} data key(s) under the master key in {}: start every process with it now \
         (PAYROLL_LEDGER_MASTER_KEY_FILE); the old key opens nothing any more",
        new_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes a payslip as the API gives it (`GET /v1/payroll-runs/{id}/items/{employee}/payslip`).
async fn payslip(database: &Database, run: Uuid, employee: Uuid, out: &std::path::Path) -> anyhow::Result<()> {
    let organization: Option<Uuid> =
        sqlx::query_scalar("select organization_id from payroll.payroll_runs where payroll_run_id = $1")
            .bind(run)
            .fetch_optional(&database.pool)
            .await?;
    let organization = organization
        .ok_or_else(|| anyhow::anyhow!("no payroll run {run} (payroll-ledger events --stream-id {run})"))?;
    let ledger = ledger_server::server::unobserved_ledger(database.pool.clone());
    let payslip = ledger_server::api::payslips::payslip(&ledger, organization, run, employee)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let bytes = if out.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("pdf")) {
        ledger_server::payslip_pdf::render(&payslip)
    } else {
        serde_json::to_vec_pretty(&payslip)?
    };
    std::fs::write(out, bytes).map_err(|error| anyhow::anyhow!("cannot write {}: {error}", out.display()))?;
    eprintln!(
        "payslip of employee {employee} in run {run} ({}, net {} {}) written to {}",
        payslip.status,
        payslip.net,
        payslip.currency,
        out.display()
    );
    Ok(())
}
