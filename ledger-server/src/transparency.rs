//! The log's checkpoint key and the server's checkpoint schedule.
//!
//! The key (`PRIVATE+KEY+...`, from `payroll-ledger keygen`) is read from a file or from the
//! environment, never from the database. With a key, the server signs a checkpoint of the
//! log's tree every [`CHECKPOINT_EVERY`] (when the tree has grown), and evidence packs are
//! made against a fresh one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ledger_store::signing::{LogKey, Signed, sign_checkpoint};
use sqlx::PgPool;
use tokio::sync::watch;

/// How often a server with a key signs a checkpoint (if the tree grew).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// Where the checkpoint key comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeySource {
    /// The file holding the log's checkpoint signing key (`payroll-ledger keygen` writes one).
    #[arg(long, env = "PAYROLL_LEDGER_CHECKPOINT_KEY_FILE")]
    pub checkpoint_key_file: Option<PathBuf>,
    /// The key itself, for environments that pass secrets as variables (prefer the file).
    #[arg(long, env = "PAYROLL_LEDGER_CHECKPOINT_KEY", hide_env_values = true)]
    pub checkpoint_key: Option<String>,
}

impl KeySource {
    /// The key, if one is configured; an error saying what is wrong with a configured one.
    pub fn load(&self) -> anyhow::Result<Option<LogKey>> {
        let text = match (&self.checkpoint_key_file, &self.checkpoint_key) {
            (Some(path), _) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the checkpoint key file {}", path.display()))?,
            (None, Some(text)) => text.clone(),
            (None, None) => return Ok(None),
        };
        let key = LogKey::parse(&text).context(
            "the checkpoint key is not a signing key: create one with `payroll-ledger keygen --name <log name> --out <file>`",
        )?;
        Ok(Some(key))
    }

    /// The key, or an error saying how to configure one.
    pub fn require(&self) -> anyhow::Result<LogKey> {
        self.load()?.context(
            "no checkpoint key: pass --checkpoint-key-file FILE (or set PAYROLL_LEDGER_CHECKPOINT_KEY_FILE); \
             `payroll-ledger keygen` makes one",
        )
    }
}

/// Whether the server's checkpoint signing works, for `/ready`.
#[derive(Debug, Default)]
pub struct SigningHealth {
    failing: std::sync::Mutex<Option<(String, chrono::DateTime<chrono::Utc>)>>,
}

impl SigningHealth {
    /// The error of the last try and since when tries fail; `None` while signing works.
    pub fn failing(&self) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
        self.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn record(&self, outcome: Result<(), String>) {
        let mut failing = self.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *failing = match (outcome, failing.take()) {
            (Ok(()), _) => None,
            (Err(error), Some((_, since))) => Some((error, since)),
            (Err(error), None) => Some((error, chrono::Utc::now())),
        };
    }
}

/// Signs a checkpoint every `every` until `stopped` turns true. A failure is logged, shown
/// by `/ready` (through `health`) and tried again next time: a tree that does not extend the
/// last checkpoint is never signed.
pub async fn sign_periodically(
    pool: PgPool,
    key: Arc<LogKey>,
    every: Duration,
    health: Arc<SigningHealth>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        match sign_checkpoint(&pool, &key).await {
            Ok(Signed::New(checkpoint)) => {
                health.record(Ok(()));
                tracing::info!(tree_size = checkpoint.tree_size, root = %checkpoint.root, "signed a checkpoint")
            }
            Ok(Signed::Unchanged(_)) => health.record(Ok(())),
            Err(error) => {
                tracing::error!(%error, "could not sign a checkpoint");
                health.record(Err(error.to_string()));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// How long an evidence pack waits for the log's tree to take in the run's last event.
pub const TREE_WAIT: Duration = Duration::from_secs(5);

/// Why an evidence pack could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{0}")]
    NoCheckpoint(String),
    #[error(transparent)]
    Store(#[from] ledger_store::StoreError),
}

/// The evidence pack of a payroll run: its stream's events and those of its payments (the
/// transaction of each paid item: postings, settlement), with their proofs against a
/// checkpoint signed now with `key` (when given), or the latest signed one.
pub async fn run_evidence(
    pool: &PgPool,
    run_id: uuid::Uuid,
    key: Option<&LogKey>,
) -> Result<ledger_store::evidence::EvidencePack, EvidenceError> {
    let payments: Vec<uuid::Uuid> = sqlx::query_scalar(
        "select distinct (payload->>'transaction_id')::uuid from ledger.events \
         where stream_id = $1 and event_type = 'PayrollItemPaid' and payload ? 'transaction_id'",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .map_err(ledger_store::StoreError::from)?;
    let mut streams = vec![run_id];
    streams.extend(&payments);
    let checkpoint = match key {
        Some(key) => {
            // The tree lets events gather for a moment: give it the last event first.
            let last: Option<i64> =
                sqlx::query_scalar("select max(global_position) from ledger.events where stream_id = any($1)")
                    .bind(&streams)
                    .fetch_one(pool)
                    .await
                    .map_err(ledger_store::StoreError::from)?;
            let deadline = std::time::Instant::now() + TREE_WAIT;
            while let Some(last) = last
                && !ledger_store::checkpoint::projected(pool, last, &["log_tree"]).await?
                && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            sign_checkpoint(pool, key).await?.checkpoint().clone()
        }
        None => ledger_store::signing::latest(pool).await?.ok_or_else(|| {
            EvidenceError::NoCheckpoint(
                "no signed checkpoint yet: run `payroll-ledger checkpoint` with the log's key, or serve with one"
                    .to_owned(),
            )
        })?,
    };
    let subject = format!("payroll run {run_id} and its {} payments", payments.len());
    Ok(ledger_store::evidence::build(pool, subject, &streams, &checkpoint).await?)
}
