//! `payroll-ledger`: the CLI of the payroll ledger.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// An event-sourced payroll ledger on PostgreSQL.
///
/// Without DATABASE_URL every command uses a private PostgreSQL that it starts from the
/// installed server binaries, with its data in --data-dir.
#[derive(Debug, Parser)]
#[command(name = "payroll-ledger", version)]
struct Cli {
    /// The PostgreSQL to use, e.g. postgres://user:password@host:5432/db. Unset: a private server.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Where the private server keeps its data (when DATABASE_URL is unset).
    #[arg(long, env = "PAYROLL_LEDGER_DATA_DIR", global = true, default_value = ".payroll-ledger/pg")]
    data_dir: PathBuf,

    #[command(flatten)]
    master_key: ledger_server::privacy::MasterKeySource,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API and run the projectors.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "PAYROLL_LEDGER_BIND", default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// Serve the API only; run projectors elsewhere with `project`.
        #[arg(long)]
        no_projectors: bool,
        /// With a checkpoint key, how often (seconds) to sign a checkpoint of the log.
        #[arg(long, env = "PAYROLL_LEDGER_CHECKPOINT_EVERY", default_value_t = 60)]
        checkpoint_every: u64,
        #[command(flatten)]
        key: ledger_server::transparency::KeySource,
    },
    /// Apply pending migrations, or list applied and pending ones with --status.
    Migrate {
        #[arg(long)]
        status: bool,
    },
    /// Run projector runners only (scale a projection out to another machine with --only).
    Project {
        /// One projection: organization, employee, wallet, payroll, transaction, notification, compliance, log_tree.
        #[arg(long)]
        only: Option<String>,
    },
    /// Rebuild one projection (or all) from the first event, swapping the result in.
    Rebuild {
        /// The projection; all when omitted.
        name: Option<String>,
    },
    /// Show an entity as it was at a past time or position, from the events alone.
    Replay {
        /// A global position (e.g. 1200), an RFC 3339 time (2026-01-15T12:00:00Z) or a date (end of that day, UTC).
        #[arg(long)]
        as_of: String,
        /// KIND:ID with KIND one of employee, wallet, payroll_run, transaction, account (account:wallet:<id>, account:funding:<org>).
        #[arg(long)]
        entity: String,
    },
    /// Query or export events as NDJSON or CSV.
    Events(cli::events::EventsArgs),
    /// Dump the whole ledger database (log, read tables, keys, eras) into one file.
    Backup {
        /// The file to write (pg_dump's custom format).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Restore a backup into the database DATABASE_URL names (created; it must not hold
    /// tables), on this or another cluster: roles, restore, migrations, era, verify, projections.
    Restore {
        /// The file `backup` wrote.
        file: std::path::PathBuf,
        /// Erasures made since the backup was taken, to make again (NDJSON: `payroll-ledger
        /// events --event-type EmployeePersonalDataErased --output erasures.ndjson`, kept
        /// apart from the backups).
        #[arg(long)]
        reapply_erasures: Option<PathBuf>,
    },
    /// Recompute every hash chain and the log's Merkle root, and name the first event that does
    /// not match. Exit 1 if any. With --checkpoint, check the log against a checkpoint saved
    /// earlier instead of against its own stored tree: the root of its first events must be
    /// the checkpoint's, else the first differing place is named.
    Verify {
        /// Verify one stream only.
        #[arg(long, conflicts_with = "checkpoint")]
        stream_id: Option<uuid::Uuid>,
        /// A signed checkpoint (`payroll-ledger checkpoint --out`, or `note` of GET /v1/checkpoints/latest).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The log's verifier key (`name+id+base64`), or a file holding it; default: derived
        /// from the configured checkpoint key.
        #[arg(long)]
        public_key: Option<String>,
        #[command(flatten)]
        key: ledger_server::transparency::KeySource,
    },
    /// Make a new signing key for the log's checkpoints: the private key goes to --out (keep
    /// it off the database host if you can), the verifier key is printed for auditors.
    Keygen {
        /// The log's name (the checkpoints' origin), e.g. payroll.example.com/ledger.
        #[arg(long)]
        name: String,
        /// Where to write the private key (created with mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a checkpoint of the log's Merkle tree (after catching the tree up) and print it.
    /// Refuses when the tree does not extend the last checkpoint this key signed.
    Checkpoint {
        /// Also write the signed checkpoint to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Refuse unless the log extends this checkpoint kept outside (after a restore, pass
        /// the newest one you kept: signing an older log would fork the series).
        #[arg(long)]
        extends: Option<PathBuf>,
        #[command(flatten)]
        key: ledger_server::transparency::KeySource,
    },
    /// RFC 9162 proofs from the log's tree, as JSON (the API's answers, for any organization).
    Proof {
        #[command(subcommand)]
        command: ProofCommand,
    },
    /// Export a payroll run's evidence pack: its events with inclusion proofs against a signed checkpoint.
    Evidence {
        /// The payroll run.
        #[arg(long)]
        run: uuid::Uuid,
        /// The file to write (JSON).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        key: ledger_server::transparency::KeySource,
    },
    /// Check an evidence pack offline (no database): every event hash, chain link, inclusion
    /// proof and the checkpoint's signature. Exit 1 if anything fails.
    VerifyEvidence {
        /// The pack `evidence` wrote.
        file: PathBuf,
        /// The log's verifier key (`name+id+base64`) or a file holding it. Without it the pack's
        /// own key is used, which proves only that the pack agrees with itself.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Make a new master key for personal data (written to --out, mode 0600, never
    /// overwritten); give it to every command as PAYROLL_LEDGER_MASTER_KEY_FILE.
    MasterKey {
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-wrap every person's data key under a new master key (after it, only the new key
    /// opens the database). Stop the servers first; start them again with the new key.
    RotateMasterKey {
        /// The file holding the new key (`payroll-ledger master-key --out FILE`).
        #[arg(long)]
        new_master_key_file: PathBuf,
    },
    /// Erase the personal data of everyone whose retention period has passed (as
    /// `GET /v1/compliance/erasure-due` lists them), with --dry-run only listing them.
    EraseDue {
        /// One organization; every organization without it.
        #[arg(long)]
        org: Option<uuid::Uuid>,
        /// List who would be erased, erase nobody.
        #[arg(long)]
        dry_run: bool,
        /// The reason recorded with each erasure.
        #[arg(long, default_value = "retention period passed")]
        reason: String,
    },
    /// Write an employee's payslip of a run: a PDF when --out ends in .pdf, else JSON.
    Payslip {
        #[arg(long)]
        run: uuid::Uuid,
        #[arg(long)]
        employee: uuid::Uuid,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Create, list or revoke API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Measure the engine against raw PostgreSQL on the same server (see docs/benchmarks.md).
    Bench(cli::bench::BenchArgs),
    /// Print the OpenAPI document the server serves (`payroll-ledger openapi > docs/openapi.json`).
    Openapi,
    /// Run a real payroll end to end: 1,000 employees, a month paid and settled, a report.
    Demo {
        /// Employees to hire.
        #[arg(long, default_value_t = 1_000)]
        employees: usize,
    },
}

#[derive(Debug, Subcommand)]
enum ProofCommand {
    /// That an event is in the log: its leaf, audit path and the root of the tree.
    Inclusion {
        #[arg(long)]
        event_id: uuid::Uuid,
        /// The tree to prove it in (default: the tree as it is now).
        #[arg(long)]
        tree_size: Option<u64>,
    },
    /// That the log of FROM events is a prefix of the log of TO events.
    Consistency {
        #[arg(long)]
        from: u64,
        /// Default: the tree as it is now.
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key; its token is printed once. Name who holds it: four eyes compares
    /// holders, so two keys of one person never approve that person's run.
    Create {
        #[arg(long)]
        org: uuid::Uuid,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// What the key is for (default: the holder's name).
        #[arg(long)]
        label: Option<String>,
        /// The person who holds the key (e.g. an email). Without it (or --service-account),
        /// --label names the person; with neither, the key stands for a person of its own.
        #[arg(long, conflicts_with = "service_account")]
        holder: Option<String>,
        /// A program that holds the key: it may act, never approve a run.
        #[arg(long)]
        service_account: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        org: Option<uuid::Uuid>,
    },
    /// Revoke a key (recorded in the log as `ApiKeyRevoked`).
    Revoke {
        key_id: uuid::Uuid,
        #[arg(long, default_value = "revoked by the operator")]
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Processor,
    Compliance,
    Auditor,
}

impl From<RoleArg> for ledger_server::keys::Role {
    fn from(role: RoleArg) -> Self {
        use ledger_server::keys::Role;
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Processor => Role::Processor,
            RoleArg::Compliance => Role::Compliance,
            RoleArg::Auditor => Role::Auditor,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAYROLL_LEDGER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
            eprintln!("payroll-ledger: {}", chain.join(": "));
            ExitCode::from(2)
        }
    }
}
