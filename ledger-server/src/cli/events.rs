//! `payroll-ledger events`: query and export the log as NDJSON or CSV.

use std::io::Write;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use ledger_store::{Checkpoint, EventQuery, EventStore, RecordedEvent};
use uuid::Uuid;

use super::Progress;
use super::database::Database;

/// Events per query while exporting.
const EXPORT_PAGE: usize = 5_000;

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[arg(long)]
    org: Option<Uuid>,
    #[arg(long)]
    stream_id: Option<Uuid>,
    /// employee, wallet, payroll_run, transaction, organization.
    #[arg(long)]
    stream_type: Option<String>,
    /// Comma-separated event types, e.g. EmployeeHired,EmployeePayRateChanged.
    #[arg(long)]
    event_type: Option<String>,
    /// Recorded at or after (RFC 3339).
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// Recorded at or before (RFC 3339).
    #[arg(long)]
    to: Option<DateTime<Utc>>,
    /// Positions after this one.
    #[arg(long)]
    after: Option<i64>,
    /// Positions up to this one.
    #[arg(long)]
    to_position: Option<i64>,
    /// At most this many events (all when omitted).
    #[arg(long)]
    limit: Option<u64>,
    #[arg(long, value_enum, default_value = "ndjson")]
    format: Format,
    /// Payloads as stored, personal fields sealed (to recompute hashes); by default they are
    /// opened with the master key (or shown erased).
    #[arg(long)]
    as_stored: bool,
    /// Write to this file instead of standard output.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Ndjson,
    Csv,
}

pub async fn run(database: &Database, args: EventsArgs) -> anyhow::Result<()> {
    let store = EventStore::new(database.pool.clone());
    // Pages follow the log's gap-free order; `--after` names the event to start after.
    let after = match args.after {
        None | Some(..=0) => Checkpoint::START,
        Some(position) => {
            let at = EventQuery::at_position(position);
            let found = store.query_events(&at).await?;
            found.first().map(|event| event.checkpoint()).with_context(|| format!("no event at position {position}"))?
        }
    };
    let mut query = EventQuery {
        organization_id: args.org,
        stream_id: args.stream_id,
        stream_type: args.stream_type.clone(),
        event_types: EventQuery::event_types_listed(args.event_type.as_deref()),
        recorded_from: args.from,
        recorded_to: args.to,
        position_after: None,
        log_after: Some(after),
        position_to: args.to_position,
        payload_contains: None,
        limit: EXPORT_PAGE,
    };
    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::fs::File::create(path)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = Writer::new(args.format, std::io::BufWriter::new(sink));
    let mut progress = Progress::new("export", args.limit);
    let mut written = 0u64;
    'pages: loop {
        let mut page = store.query_events(&query).await?;
        if !args.as_stored {
            ledger_store::vault::open(store.pool(), &ledger_codec::PERSONAL_DATA, &mut page).await?;
        }
        for event in &page {
            if args.limit.is_some_and(|limit| written >= limit) {
                break 'pages;
            }
            writer.write(event)?;
            written += 1;
        }
        progress.set(written);
        if page.len() < EXPORT_PAGE {
            break;
        }
        query.log_after = page.last().map(|event| event.checkpoint());
    }
    writer.finish()?;
    progress.finish();
    eprintln!("{written} events");
    Ok(())
}

enum Writer<W: Write> {
    Ndjson(W),
    Csv(Box<csv::Writer<W>>),
}

impl<W: Write> Writer<W> {
    fn new(format: Format, sink: W) -> Self {
        match format {
            Format::Ndjson => Writer::Ndjson(sink),
            Format::Csv => Writer::Csv(Box::new(csv::Writer::from_writer(sink))),
        }
    }

    fn write(&mut self, event: &RecordedEvent) -> anyhow::Result<()> {
        match self {
            Writer::Ndjson(sink) => {
                serde_json::to_writer(&mut *sink, event)?;
                sink.write_all(b"\n")?;
            }
            Writer::Csv(sink) => {
                sink.serialize(CsvRow {
                    global_position: event.global_position,
                    recorded_at: event.recorded_at,
                    organization_id: event.organization_id,
                    stream_type: &event.stream_type,
                    stream_id: event.stream_id,
                    stream_version: event.stream_version,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    actor: event.metadata.get("actor").and_then(|actor| actor.as_str()).unwrap_or_default(),
                    payload: event.payload.text().to_owned(),
                    hash: hex::encode(&event.hash),
                })?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Writer::Ndjson(mut sink) => sink.flush()?,
            Writer::Csv(mut sink) => sink.flush()?,
        }
        Ok(())
    }
}

#[derive(serde::Serialize)]
struct CsvRow<'a> {
    global_position: i64,
    recorded_at: DateTime<Utc>,
    organization_id: Uuid,
    stream_type: &'a str,
    stream_id: Uuid,
    stream_version: u64,
    event_type: &'a str,
    schema_version: i32,
    actor: &'a str,
    payload: String,
    hash: String,
}
