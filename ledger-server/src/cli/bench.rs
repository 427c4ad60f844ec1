//! `payroll-ledger bench`: the engine measured against raw PostgreSQL on the same server, in
//! one invocation. Each figure is the median of `--repeat` runs, with min and max.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::NaiveDate;
use clap::Args;
use ledger_app::operations::{Settlement, process, settle_run};
use ledger_app::{Context, Ledger};
use ledger_core::calendar::{PayFrequency, PayPeriod};
use ledger_core::employee::EmployeeAggregate;
use ledger_core::ids::{OrganizationId, TransactionId};
use ledger_core::money::{Currency, Money};
use ledger_core::organization::{OrganizationAggregate, OrganizationCommand, PaySchedule};
use ledger_core::payroll::{PayrollRunAggregate, PayrollRunCommand};
use ledger_core::wallet::WalletAggregate;
use ledger_projections::Projection as _;
use ledger_projections::projections::LogTreeProjection;
use ledger_projections::replay::{AsOf, aggregate_as_of};
use ledger_projections::{Runner, RunnerOptions};
use ledger_store::checkpoint::{lock_checkpoint, reset_checkpoint};
use ledger_store::signing::{LogKey, sign_checkpoint};
use ledger_store::{AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::database::Database;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Events per batched append (and rows per COPY).
    #[arg(long, default_value_t = 30_000)]
    events: usize,
    /// Runs per figure; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Appends per writer for the single-command latency.
    #[arg(long, default_value_t = 300)]
    appends_per_writer: usize,
    /// Payroll sizes to run end to end, comma-separated.
    #[arg(long, default_value = "10000", value_delimiter = ',')]
    employees: Vec<usize>,
    /// Replays per as-of latency figure.
    #[arg(long, default_value_t = 200)]
    replays: usize,
    /// Write the figures as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Measure only these parts (all when not given); rebuild and replay run over whatever
    /// the earlier parts wrote.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Run the payrolls without the log's tree runner (to measure what it costs them).
    #[arg(long)]
    payroll_without_tree: bool,
    /// Events the log holds (filled with batched appends) when the tree's proofs are timed.
    #[arg(long, default_value_t = 1_000_000)]
    tree_events: usize,
    /// Keep the events an earlier run left in `payroll_ledger_bench` (with `--only
    /// rebuild,replay`: measure again over the same log) instead of starting empty.
    #[arg(long)]
    keep_database: bool,
}

/// The parts of the benchmark, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Append,
    Latency,
    Commands,
    Payroll,
    Rebuild,
    Replay,
    Audit,
    Tree,
}

/// Median, min and max of several runs of one figure.
#[derive(Debug, Clone, Serialize)]
struct Figure {
    name: String,
    unit: &'static str,
    median: f64,
    min: f64,
    max: f64,
}

impl Figure {
    fn of(name: impl Into<String>, unit: &'static str, mut samples: Vec<f64>) -> Figure {
        samples.sort_by(f64::total_cmp);
        Figure {
            name: name.into(),
            unit,
            median: percentile(&samples, 0.5),
            min: samples[0],
            max: samples[samples.len() - 1],
        }
    }
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

#[derive(Debug, Default, Serialize)]
struct Report {
    machine: serde_json::Value,
    figures: Vec<Figure>,
}

impl Report {
    fn add(&mut self, figure: Figure) {
        println!(
            "{:<58} {:>14.1} {:<10} (min {:.1}, max {:.1})",
            figure.name, figure.median, figure.unit, figure.min, figure.max
        );
        self.figures.push(figure);
    }
}

pub async fn run(database: &Database, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.repeat >= 1 && args.events >= 3, "--repeat must be at least 1 and --events at least 3");
    let pool = bench_database(&database.pool, args.keep_database).await?;
    let mut report = Report { machine: machine(&pool).await?, ..Report::default() };
    println!("{}", serde_json::to_string_pretty(&report.machine)?);
    let runs = |part: Part| args.only.is_empty() || args.only.contains(&part);
    if runs(Part::Append) {
        append_against_copy(&pool, &args, &mut report).await?;
    }
    if runs(Part::Latency) {
        single_command_latency(&pool, &args, &mut report).await?;
    }
    if runs(Part::Commands) {
        command_path(&pool, &args, &mut report).await?;
    }
    if runs(Part::Payroll) {
        for employees in &args.employees {
            // Small runs are repeated like the other figures; a large one is run once.
            let repeat = if *employees <= PAYROLL_REPEAT_EMPLOYEES_MAX { args.repeat.min(3) } else { 1 };
            let mut samples: Vec<(&'static str, Vec<f64>)> = Vec::new();
            let mut peaks = Vec::new();
            for _ in 0..repeat {
                let (phases, peak) = payroll_end_to_end(&pool, *employees, !args.payroll_without_tree).await?;
                peaks.extend(peak);
                for (index, (phase, seconds)) in phases.into_iter().enumerate() {
                    match samples.get_mut(index) {
                        Some((_, phase_samples)) => phase_samples.push(seconds),
                        None => samples.push((phase, vec![seconds])),
                    }
                }
            }
            for (phase, phase_samples) in samples {
                report.add(Figure::of(format!("payroll run {employees} employees: {phase}"), "s", phase_samples));
            }
            if !peaks.is_empty() {
                report.add(Figure::of(
                    format!("payroll run {employees} employees: peak RSS of the process"),
                    "MB",
                    peaks,
                ));
            }
        }
    }
    if runs(Part::Rebuild) {
        projection_throughput(&pool, &mut report).await?;
    }
    if runs(Part::Replay) {
        replay_latency(&pool, &args, &mut report).await?;
    }
    if runs(Part::Audit) {
        audit_page_latency(&pool, &args, &mut report).await?;
    }
    if runs(Part::Tree) {
        tree_figures(&pool, &args, &mut report).await?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("figures written to {}", path.display());
    }
    pool.close().await;
    Ok(())
}

/// The database `payroll_ledger_bench` on the same server, new (or kept), migrated.
async fn bench_database(admin: &PgPool, keep: bool) -> anyhow::Result<PgPool> {
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = 'payroll_ledger_bench')")
            .fetch_one(admin)
            .await?;
    if !(keep && exists) {
        sqlx::query("drop database if exists payroll_ledger_bench with (force)").execute(admin).await?;
        sqlx::query("create database payroll_ledger_bench").execute(admin).await?;
    }
    let options = admin.connect_options().as_ref().clone().database("payroll_ledger_bench");
    let pool = ledger_store::pool_options().max_connections(24).connect_with(options).await?;
    ledger_store::cluster::prepare(&pool).await?;
    // Synthetic people: the bench seals them under a fixed key of its own (its database is
    // kept between runs with --keep).
    let key = ledger_store::vault::MasterKey::parse(BENCH_MASTER_KEY).expect("the bench key parses");
    ledger_store::vault::Vault::install(&pool, &key).await?;
    Ok(pool)
}

/// The master key of the bench's own database: synthetic data only.
const BENCH_MASTER_KEY: &str = "cGF5cm9sbC1sZWRnZXIgYmVuY2gsIHN5bnRoZXRpYyE=";

async fn machine(pool: &PgPool) -> anyhow::Result<serde_json::Value> {
    let mut settings = serde_json::Map::new();
    for name in
        ["server_version", "shared_buffers", "synchronous_commit", "fsync", "wal_level", "max_wal_size", "work_mem"]
    {
        let value: String = sqlx::query_scalar(&format!("show {name}")).fetch_one(pool).await?;
        settings.insert(name.to_owned(), value.into());
    }
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| info.lines().next().map(str::to_owned))
        .unwrap_or_default();
    Ok(serde_json::json!({
        "cores": std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(0),
        "memory": memory,
        "postgres": settings,
    }))
}

/// A payload the size of a payroll payment event.
fn payload(n: usize) -> serde_json::Value {
    serde_json::json!({
        "employee_id": Uuid::from_u128(n as u128),
        "transaction_id": Uuid::from_u128(n as u128 + 7),
        "net": { "amount": format!("{}.{:02}", 3000 + n % 5000, n % 100), "currency": { "code": "USD", "scale": 2 } },
    })
}

/// `events` events over `events / 3` new streams, three each.
fn batch(organization: Uuid, events: usize) -> AppendRequest {
    let streams = (0..events / 3)
        .map(|stream| StreamAppend {
            organization_id: organization,
            stream_type: "bench".to_owned(),
            stream_id: Uuid::new_v4(),
            expected_version: ExpectedVersion::NoStream,
            events: (0..3).map(|n| NewEvent::new("BenchEvent", 1, payload(stream * 3 + n))).collect(),
        })
        .collect();
    AppendRequest {
        streams,
        metadata: Metadata::by("bench"),
        idempotency_key: Some(Uuid::new_v4().to_string()),
        fingerprint: None,
    }
}

/// The same rows as COPY text into a scratch table with the event table's columns, defaults
/// (but the transaction id's), constraints and indexes (and no triggers).
fn copy_text(request: &AppendRequest) -> String {
    let metadata = serde_json::to_string(&request.metadata).expect("metadata serializes");
    let mut text = String::with_capacity(request.event_count() * 400);
    for stream in &request.streams {
        for (index, event) in stream.events.iter().enumerate() {
            let hash = hex::encode(Uuid::new_v4().as_bytes()).repeat(2);
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t\\\\x{hash}\n",
                event.event_id,
                stream.organization_id,
                stream.stream_type,
                stream.stream_id,
                index + 1,
                event.event_type,
                event.schema_version,
                event.payload.text().replace('\\', "\\\\"),
                metadata.replace('\\', "\\\\"),
            ));
        }
    }
    text
}

async fn append_against_copy(pool: &PgPool, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    sqlx::query("create schema bench_raw").execute(pool).await?;
    sqlx::query("create table bench_raw.events (like ledger.events including all)").execute(pool).await?;
    // The copied default, ledger.current_transaction_id(), looks the cluster's era up for
    // every row (a store's append reads it once per transaction): raw rows take the
    // transaction's own id, as a table without eras would.
    sqlx::query("alter table bench_raw.events alter column transaction_id set default pg_current_xact_id()")
        .execute(pool)
        .await?;
    let store = EventStore::new(pool.clone());
    let organization = Uuid::new_v4();
    let (mut copy_rates, mut append_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for repeat in 0..args.repeat {
        let request = batch(organization, args.events);
        let text = copy_text(&request);
        let raw_copy = async {
            let started = Instant::now();
            let mut connection = pool.acquire().await?;
            let mut copy = connection
                .copy_in_raw(
                    "copy bench_raw.events (event_id, organization_id, stream_type, stream_id, stream_version, event_type, schema_version, payload, metadata, hash) from stdin",
                )
                .await?;
            copy.send(text.as_bytes()).await?;
            copy.finish().await?;
            anyhow::Ok(request.event_count() as f64 / started.elapsed().as_secs_f64())
        };
        let append = async {
            let started = Instant::now();
            store.append(&request).await?;
            anyhow::Ok(request.event_count() as f64 / started.elapsed().as_secs_f64())
        };
        // Each goes first every other time: whatever the first leaves behind (dirty pages
        // to write, a checkpoint) falls on both alike.
        let (copy_rate, append_rate) = if repeat % 2 == 0 {
            let copy_rate = raw_copy.await?;
            (copy_rate, append.await?)
        } else {
            let append_rate = append.await?;
            (raw_copy.await?, append_rate)
        };
        copy_rates.push(copy_rate);
        append_rates.push(append_rate);
        ratios.push(100.0 * append_rate / copy_rate);
    }
    report.add(Figure::of(format!("raw COPY of {} event rows", args.events), "events/s", copy_rates));
    report.add(Figure::of(
        format!("batched append of {} events (chain, idempotency)", args.events),
        "events/s",
        append_rates,
    ));
    report.add(Figure::of("batched append as a share of raw COPY", "%", ratios));
    Ok(())
}

/// `writers` tasks each appending `appends` single events to a stream of its own: every
/// append's latency (ms) and the events per second of the whole.
async fn concurrent_single_appends(
    store: &EventStore,
    writers: usize,
    appends: usize,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let (organization, stream) = (Uuid::new_v4(), Uuid::new_v4());
                let mut latencies = Vec::with_capacity(appends);
                for version in 0..appends as u64 {
                    let expected =
                        if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
                    let request = AppendRequest::single(
                        StreamAppend {
                            organization_id: organization,
                            stream_type: "bench".to_owned(),
                            stream_id: stream,
                            expected_version: expected,
                            events: vec![NewEvent::new("BenchEvent", 1, payload(version as usize))],
                        },
                        Metadata::by("bench"),
                    );
                    let started = Instant::now();
                    store.append(&request).await?;
                    latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                Ok::<_, ledger_store::StoreError>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok((latencies, rate))
}

async fn single_command_latency(pool: &PgPool, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let store = EventStore::new(pool.clone());
    for writers in [1usize, 16] {
        let (mut p50s, mut p99s, mut rates) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.repeat {
            let (latencies, rate) = concurrent_single_appends(&store, writers, args.appends_per_writer).await?;
            p50s.push(percentile(&latencies, 0.5));
            p99s.push(percentile(&latencies, 0.99));
            rates.push(rate);
        }
        report.add(Figure::of(format!("single-event append, {writers} writer(s): p50"), "ms", p50s));
        report.add(Figure::of(format!("single-event append, {writers} writer(s): p99"), "ms", p99s));
        report.add(Figure::of(format!("single-event append, {writers} writer(s): throughput"), "appends/s", rates));
    }
    Ok(())
}

/// Employees each command task changes in turn.
const COMMAND_STREAMS_PER_TASK: usize = 4;

/// The command path every HTTP command takes: through `Ledger` (decide a pay rate change on
/// the employee's state and append one event at its exact version; the state is read from the
/// log the first time and held after), at 1 and 16 tasks, each on employees of its own, next
/// to raw PostgreSQL on a table shaped like the log doing BEGIN, INSERT one row, COMMIT (the
/// floor), and the same after reading the stream's rows (a command that reads its stream
/// every time); interleaved, `--appends-per-writer` commands per task.
async fn command_path(pool: &PgPool, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let ledger = super::ledger_over(pool.clone());
    let (context, employees) = staff(&ledger, 16 * COMMAND_STREAMS_PER_TASK).await?;
    sqlx::query("create schema if not exists bench_raw").execute(pool).await?;
    sqlx::query("drop table if exists bench_raw.command_events").execute(pool).await?;
    sqlx::query(
        "create table bench_raw.command_events (stream_id uuid not null, stream_version bigint not null, \
           event_type text not null, payload jsonb not null, metadata jsonb not null, \
           recorded_at timestamptz not null default now(), primary key (stream_id, stream_version))",
    )
    .execute(pool)
    .await?;
    let mut day = 0u32;
    for tasks in [1usize, 16] {
        let (mut ours, mut raw, mut raw_read, mut ratios) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.repeat {
            day += 1;
            let started = Instant::now();
            let commands = futures_util::future::try_join_all((0..tasks).map(|task| {
                let (ledger, context) = (&ledger, &context);
                let streams = &employees[task * COMMAND_STREAMS_PER_TASK..(task + 1) * COMMAND_STREAMS_PER_TASK];
                async move {
                    for n in 0..args.appends_per_writer {
                        let change = ledger_core::employee::EmployeeCommand::ChangePayRate {
                            rate: ledger_core::employee::PayRate {
                                amount: usd(400_000 + n as i64),
                                basis: ledger_core::employee::PayBasis::Monthly,
                            },
                            effective_from: date(2025, 1, 1) + chrono::Days::new(u64::from(day)),
                            reason: "bench".to_owned(),
                        };
                        ledger.execute::<EmployeeAggregate>(context, streams[n % streams.len()], change).await?;
                    }
                    anyhow::Ok(())
                }
            }));
            commands.await?;
            let our_rate = (tasks * args.appends_per_writer) as f64 / started.elapsed().as_secs_f64();
            let raw_rate = raw_commands(pool, &employees, tasks, args.appends_per_writer, false).await?;
            let raw_read_rate = raw_commands(pool, &employees, tasks, args.appends_per_writer, true).await?;
            ours.push(our_rate);
            raw.push(raw_rate);
            raw_read.push(raw_read_rate);
            ratios.push(our_rate / raw_rate * 100.0);
        }
        report.add(Figure::of(format!("command path, {tasks} task(s): Ledger::execute"), "commands/s", ours));
        report.add(Figure::of(format!("command path, {tasks} task(s): raw BEGIN/INSERT/COMMIT"), "commands/s", raw));
        report.add(Figure::of(
            format!("command path, {tasks} task(s): raw read + BEGIN/INSERT/COMMIT"),
            "commands/s",
            raw_read,
        ));
        report.add(Figure::of(
            format!("command path, {tasks} task(s): ours as a share of raw BEGIN/INSERT/COMMIT"),
            "%",
            ratios,
        ));
    }
    Ok(())
}

/// Raw PostgreSQL's side of [`command_path`]: commands per second of `tasks` tasks, each on a
/// connection of its own inserting one row per command in a transaction of its own, after
/// reading the stream's rows when `read` says so.
async fn raw_commands(
    pool: &PgPool,
    employees: &[Uuid],
    tasks: usize,
    commands_per_task: usize,
    read: bool,
) -> anyhow::Result<f64> {
    // Without the read, each task knows its streams' versions, as a held state does.
    let heads: std::collections::HashMap<Uuid, i64> =
        sqlx::query_as("select stream_id, max(stream_version) from bench_raw.command_events group by stream_id")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let started = Instant::now();
    futures_util::future::try_join_all((0..tasks).map(|task| {
        let streams = &employees[task * COMMAND_STREAMS_PER_TASK..(task + 1) * COMMAND_STREAMS_PER_TASK];
        let mut versions: Vec<i64> = streams.iter().map(|stream| heads.get(stream).copied().unwrap_or(0)).collect();
        async move {
            let mut connection = pool.acquire().await?;
            for n in 0..commands_per_task {
                let stream = streams[n % streams.len()];
                let version: i64 = if read {
                    let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
                        "select stream_version, payload from bench_raw.command_events where stream_id = $1 \
                         order by stream_version",
                    )
                    .bind(stream)
                    .fetch_all(&mut *connection)
                    .await?;
                    rows.len() as i64 + 1
                } else {
                    versions[n % streams.len()] + 1
                };
                versions[n % streams.len()] = version;
                let mut transaction = sqlx::Connection::begin(&mut *connection).await?;
                sqlx::query(
                    "insert into bench_raw.command_events (stream_id, stream_version, event_type, payload, metadata) \
                     values ($1, $2, 'EmployeePayRateChanged', $3, $4)",
                )
                .bind(stream)
                .bind(version)
                .bind(serde_json::json!({ "rate": { "amount": { "amount": format!("{}.00", 4000 + n), "currency": { "code": "USD", "scale": 2 } }, "basis": "monthly" }, "effective_from": "2025-01-02", "reason": "bench" }))
                .bind(serde_json::json!({ "actor": "bench:processor", "role": "admin", "correlation_id": Uuid::new_v4() }))
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
            }
            anyhow::Ok(())
        }
    }))
    .await?;
    Ok((tasks * commands_per_task) as f64 / started.elapsed().as_secs_f64())
}

/// The log's Merkle tree: what its runner costs appends (16 writers with the runner on and
/// off, interleaved), how fast it catches up, and proofs and a checkpoint at `--tree-events`.
async fn tree_figures(pool: &PgPool, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let store = EventStore::new(pool.clone());
    super::transparency::catch_up_tree(pool).await?;
    let (mut off_rates, mut on_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.repeat {
        let mut pair = [0.0; 2];
        for (index, runner_on) in [false, true].into_iter().enumerate() {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let runner = runner_on.then(|| {
                let runner = Runner::new(pool.clone(), Arc::new(LogTreeProjection), RunnerOptions::default());
                tokio::spawn(async move { runner.run(stopped).await })
            });
            let (_, rate) = concurrent_single_appends(&store, 16, args.appends_per_writer).await?;
            // (Without a runner nobody listens.)
            let _ = stop.send(true);
            if let Some(runner) = runner {
                runner.await??;
            }
            // Untimed: the tree takes in what the round wrote before the next round.
            super::transparency::catch_up_tree(pool).await?;
            pair[index] = rate;
        }
        off_rates.push(pair[0]);
        on_rates.push(pair[1]);
        ratios.push(pair[1] / pair[0] * 100.0);
    }
    report.add(Figure::of("single-event append, 16 writers, tree runner off", "appends/s", off_rates));
    report.add(Figure::of("single-event append, 16 writers, tree runner on", "appends/s", on_rates));
    report.add(Figure::of("appends with the tree runner on, share of off", "%", ratios));

    // Grow the log to --tree-events (untimed), then time the tree taking it all in.
    let mut events = store.count_after(ledger_store::Checkpoint::START).await? as usize;
    if events < args.tree_events {
        let mut progress = super::Progress::new("filling the log", Some(args.tree_events as u64));
        let organization = Uuid::new_v4();
        while events < args.tree_events {
            let request = batch(organization, args.events.min(args.tree_events - events).max(3));
            store.append(&request).await?;
            events += request.event_count();
            progress.set(events as u64);
        }
        progress.finish();
    }
    let started = Instant::now();
    let added = super::transparency::catch_up_tree(pool).await?;
    let seconds = started.elapsed().as_secs_f64();
    report.add(Figure::of(format!("tree catch-up over {added} new events"), "events/s", vec![added as f64 / seconds]));

    let mut connection = pool.acquire().await?;
    let size = ledger_store::tree::head(&mut connection).await?.size;
    let positions: Vec<i64> = sqlx::query_scalar(
        "select global_position from ledger.events tablesample system (1) order by random() limit $1",
    )
    .bind(args.replays as i64)
    .fetch_all(&mut *connection)
    .await?;
    let (mut inclusion, mut consistency) = (Vec::new(), Vec::new());
    for (n, position) in positions.iter().enumerate() {
        // As the API does it: the event's leaf, the proof, the root.
        let started = Instant::now();
        let leaf = ledger_store::tree::leaf_index(&mut connection, *position).await?.expect("a leaf");
        ledger_store::tree::inclusion_proof(&mut connection, size, leaf).await?;
        inclusion.push(started.elapsed().as_secs_f64() * 1000.0);
        let from = (leaf + n as u64) % size + 1;
        let started = Instant::now();
        ledger_store::tree::consistency_proof(&mut connection, from, size).await?;
        consistency.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    drop(connection);
    for (name, mut samples) in [("inclusion", inclusion), ("consistency", consistency)] {
        samples.sort_by(f64::total_cmp);
        report.add(Figure::of(format!("{name} proof at {size} events: p50"), "ms", vec![percentile(&samples, 0.5)]));
        report.add(Figure::of(format!("{name} proof at {size} events: p99"), "ms", vec![percentile(&samples, 0.99)]));
    }
    let key = LogKey::parse(&LogKey::generate("bench.payroll-ledger/log")?.0)?;
    let started = Instant::now();
    sign_checkpoint(pool, &key).await?;
    report.add(Figure::of(
        format!("sign a checkpoint at {size} events"),
        "ms",
        vec![started.elapsed().as_secs_f64() * 1000.0],
    ));
    Ok(())
}

fn usd(cents: i64) -> Money {
    Money::new(Decimal::new(cents, 2), Currency::usd()).expect("cents fit USD")
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("a valid date")
}

/// An organization with `employees` employees (monthly, KYC approved) and wallets, hired
/// in bulk appends (not timed).
async fn staff(ledger: &Ledger, employees: usize) -> anyhow::Result<(Context, Vec<Uuid>)> {
    let organization = Uuid::new_v4();
    let context = Context::system(organization, "bench:processor");
    let register = OrganizationCommand::Register {
        organization_id: OrganizationId::from_uuid(organization),
        name: "Bench".to_owned(),
        base_currency: Currency::usd(),
        pay_schedule: PaySchedule { frequency: PayFrequency::Monthly, anchor_date: date(2026, 1, 1) },
        default_pay_schedule_id: ledger_core::ids::PayScheduleId::from_uuid(Uuid::new_v4()),
    };
    ledger.execute::<OrganizationAggregate>(&context, organization, register).await?;
    let rule = ledger_core::gross_to_net::DeductionRule {
        id: "tax".to_owned(),
        name: "tax".to_owned(),
        party: ledger_core::gross_to_net::RuleParty::Employee,
        calculation: ledger_core::gross_to_net::RuleCalculation::Percentage { rate: Decimal::new(15, 2) },
        liability_account: "tax".to_owned(),
    };
    ledger
        .execute::<OrganizationAggregate>(&context, organization, OrganizationCommand::ConfigureRule { rule })
        .await?;
    let hired = ledger_app::staff::hire_in_bulk(ledger, &context, employees, date(2025, 1, 1), |n| {
        usd(300_000 + (n as i64 % 5_000) * 100)
    })
    .await?;
    Ok((context, hired.into_iter().map(|(employee, _)| employee).collect()))
}

/// Payroll runs up to this size are repeated (at most 3 times) for a median.
const PAYROLL_REPEAT_EMPLOYEES_MAX: usize = 20_000;

/// Starts measuring the process's peak resident memory afresh (Linux: the peak becomes the
/// current RSS). False where that is not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak resident memory since the last reset, in MB (Linux `VmHWM`).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kilobytes: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes / 1024.0)
}

/// One payroll run end to end: the seconds of each phase, then the total; and the process's
/// peak memory during the run (projectors included, the hiring before it not).
async fn payroll_end_to_end(
    pool: &PgPool,
    employees: usize,
    with_tree: bool,
) -> anyhow::Result<(Vec<(&'static str, f64)>, Option<f64>)> {
    let ledger = super::ledger_over(pool.clone()).with_pay_batch_items(1_000);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let projections = ledger_projections::projections::all()
        .into_iter()
        .filter(|projection| with_tree || projection.name() != LogTreeProjection.name())
        .collect();
    let projectors = ledger_server::server::start_runners(
        pool,
        ledger_projections::RunnerOptions { batch_size: 2_000, ..Default::default() },
        projections,
        &stopped,
    );
    let (context, _) = staff(&ledger, employees).await?;
    ledger.wait_for_head(Duration::from_secs(3_600)).await?;
    let measures_memory = reset_peak_rss();
    let approver = Context::system(context.organization_id(), "bench:approver");
    let run = Uuid::new_v4();
    let mut phases: Vec<(&str, f64)> = Vec::new();
    let started = Instant::now();
    let mut mark = Instant::now();
    let mut phase = |name: &'static str, mark: &mut Instant| {
        phases.push((name, mark.elapsed().as_secs_f64()));
        *mark = Instant::now();
    };
    let create = ledger_app::operations::NewRun {
        payroll_run_id: run,
        period: PayPeriod::new(date(2026, 1, 1), date(2026, 1, 31))?,
        pay_date: None,
        kind: ledger_app::operations::NewRunKind::Regular { pay_schedule_id: None },
        frequency: None,
        currency: None,
    };
    ledger_app::operations::create_run(&ledger, &context, create).await?;
    ledger_app::operations::calculate(&ledger, &context, run).await?;
    phase("calculate", &mut mark);
    ledger
        .execute::<PayrollRunAggregate>(&approver, run, PayrollRunCommand::Approve { actor: approver.actor() })
        .await?;
    phase("approve", &mut mark);
    let processed = process(&ledger, &context, run).await?;
    anyhow::ensure!(processed.paid == employees as u64, "paid {} of {employees}", processed.paid);
    phase("pay", &mut mark);
    settle_run(&ledger, &context, run, |transaction: TransactionId| Settlement {
        signature: format!("sig-{transaction}"),
        block_hash: "bench-block".to_owned(),
    })
    .await?;
    phase("settle", &mut mark);
    ledger.wait_for_head(Duration::from_secs(3_600)).await?;
    phase("projections caught up", &mut mark);
    if with_tree {
        // Reads do not wait for the log's tree (it lingers); a proof of the run does.
        ledger.wait_for_head_of(&[LogTreeProjection.name()], Duration::from_secs(3_600)).await?;
        phase("log's tree caught up", &mut mark);
    }
    phases.push(("total", started.elapsed().as_secs_f64()));
    // Then the whole run reversed (bounded batches, each one append), outside the total.
    let reversing = Instant::now();
    let reversal = Context::system(context.organization_id(), "bench:reverser");
    ledger_app::operations::reverse(&ledger, &reversal, run, "bench: paid in error".to_owned()).await?;
    phases.push(("reverse the paid run (not in the total)", reversing.elapsed().as_secs_f64()));
    let peak = measures_memory.then(peak_rss_mb).flatten();
    stop.send(true)?;
    for projector in projectors {
        projector.await??;
    }
    Ok((phases, peak))
}

async fn projection_throughput(pool: &PgPool, report: &mut Report) -> anyhow::Result<()> {
    let store = EventStore::new(pool.clone());
    let events = store.count_after(ledger_store::Checkpoint::START).await? as f64;
    let started = Instant::now();
    for projection in ledger_projections::projections::all() {
        let one = Instant::now();
        ledger_projections::rebuild(pool, projection.as_ref(), &mut |_| {}).await?;
        report.add(Figure::of(
            format!("rebuild {} over {events} events", projection.name()),
            "events/s",
            vec![events / one.elapsed().as_secs_f64()],
        ));
    }
    report.add(Figure::of(
        format!("rebuild of all projections one after another over {events} events"),
        "s",
        vec![started.elapsed().as_secs_f64()],
    ));

    // All seven at once, as an operator rebuilding everything after a restore would.
    let started = Instant::now();
    let projections = ledger_projections::projections::all();
    let rebuilds = projections
        .iter()
        .map(|projection| async move { ledger_projections::rebuild(pool, projection.as_ref(), &mut |_| {}).await });
    for result in futures_util::future::join_all(rebuilds).await {
        result?;
    }
    report.add(Figure::of(
        format!("rebuild of all projections at once over {events} events"),
        "s",
        vec![started.elapsed().as_secs_f64()],
    ));

    // Catch-up: every projection emptied and its checkpoint reset, then the server's seven
    // runners (one per projection, as `serve` starts them) until all reach the head.
    for projection in &projections {
        let mut transaction = pool.begin().await?;
        lock_checkpoint(&mut transaction, projection.name()).await?;
        projection.reset(&mut transaction).await?;
        reset_checkpoint(&mut transaction, projection.name(), ledger_store::Checkpoint::START, 0).await?;
        transaction.commit().await?;
    }
    let started = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runners = ledger_server::server::start_projectors(
        pool,
        ledger_projections::RunnerOptions { batch_size: 5_000, ..Default::default() },
        None,
        &stopped,
    );
    super::ledger_over(pool.clone()).wait_for_head(Duration::from_secs(3_600)).await?;
    let seconds = started.elapsed().as_secs_f64();
    stop.send(true)?;
    for runner in runners {
        runner.await??;
    }
    report.add(Figure::of(
        format!("catch-up of all projections at once over {events} events"),
        "events/s",
        vec![events / seconds],
    ));
    report.add(Figure::of(format!("catch-up of all projections at once over {events} events"), "s", vec![seconds]));
    Ok(())
}

async fn replay_latency(pool: &PgPool, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let store = EventStore::new(pool.clone());
    let (head, _) = store.head().await?.context("the log is not empty")?;
    let employees: Vec<Uuid> =
        sqlx::query_scalar("select employee_id from employee.employees order by random() limit $1")
            .bind(args.replays as i64)
            .fetch_all(pool)
            .await?;
    let wallets: Vec<Uuid> = sqlx::query_scalar("select wallet_id from wallet.wallets order by random() limit $1")
        .bind(args.replays as i64)
        .fetch_all(pool)
        .await?;
    let point = AsOf::Position(head / 2 + head / 4);
    let events = store.count_after(ledger_store::Checkpoint::START).await?;
    for (kind, ids) in [("employee", &employees), ("wallet", &wallets)] {
        let mut latencies = Vec::with_capacity(ids.len());
        for id in ids {
            let started = Instant::now();
            match kind {
                "employee" => drop(aggregate_as_of::<EmployeeAggregate>(&store, *id, point).await?),
                _ => drop(aggregate_as_of::<WalletAggregate>(&store, *id, point).await?),
            }
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        if latencies.is_empty() {
            continue;
        }
        latencies.sort_by(f64::total_cmp);
        report.add(Figure::of(
            format!("replay {kind} as of a position ({events} events): p50"),
            "ms",
            vec![percentile(&latencies, 0.5)],
        ));
        report.add(Figure::of(
            format!("replay {kind} as of a position ({events} events): p99"),
            "ms",
            vec![percentile(&latencies, 0.99)],
        ));
    }
    Ok(())
}

/// Rows per audit log page, as a client asks for them.
const AUDIT_PAGE_ROWS: i64 = 100;

/// A page of `GET /v1/audit-logs` (its statement, as the API reader of the organization with
/// the most rows) after a cursor at a random row, `--replays` times: p50 and p99.
async fn audit_page_latency(pool: &PgPool, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let ledger = super::ledger_over(pool.clone());
    let events = EventStore::new(pool.clone()).count_after(ledger_store::Checkpoint::START).await?;
    let Some((organization, rows)): Option<(Uuid, i64)> = sqlx::query_as(
        "select organization_id, count(*) from compliance.audit_logs group by 1 order by 2 desc limit 1",
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(());
    };
    let cursors: Vec<(i64, i64)> = sqlx::query_as(
        "select transaction_id, global_position from compliance.audit_logs where organization_id = $1 order by random() limit $2",
    )
    .bind(organization)
    .bind(args.replays as i64)
    .fetch_all(pool)
    .await?;
    let mut latencies = Vec::with_capacity(cursors.len());
    for (transaction_id, global_position) in cursors {
        let started = Instant::now();
        let mut read = ledger.tenant_read(organization).await?;
        let page: Vec<sqlx::postgres::PgRow> = sqlx::query(ledger_server::api::audit::AUDIT_PAGE_SQL)
            .bind(None::<String>)
            .bind(None::<Uuid>)
            .bind(None::<String>)
            .bind(None::<chrono::DateTime<chrono::Utc>>)
            .bind(None::<chrono::DateTime<chrono::Utc>>)
            .bind(transaction_id)
            .bind(global_position)
            .bind(organization)
            .bind(AUDIT_PAGE_ROWS)
            .fetch_all(&mut *read)
            .await?;
        read.commit().await?;
        drop(page);
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    for (label, fraction) in [("p50", 0.5), ("p99", 0.99)] {
        report.add(Figure::of(
            format!("audit log page of {AUDIT_PAGE_ROWS} ({rows} rows of one organization, {events} events): {label}"),
            "ms",
            vec![percentile(&latencies, fraction)],
        ));
    }
    Ok(())
}
