//! The operator's master key (never in the database): where it comes from, and opening the
//! process's vault with it at start, after which the log's erasures are applied to the key
//! table again (a restored backup may hold keys the log says are destroyed).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use ledger_store::vault::{MasterKey, Vault};
use sqlx::PgPool;

/// The file `payroll-ledger` keeps a master key it made in, beside the private server's
/// data (`.payroll-ledger/master.key` by default).
pub const MASTER_KEY_FILE_NAME: &str = "master.key";

/// Where the master key comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MasterKeySource {
    /// The file holding the master key personal data is sealed under (base64 or hex of 32
    /// bytes; `payroll-ledger master-key --out FILE` makes one). Default: `master.key` beside
    /// --data-dir, made on a database that has none yet.
    #[arg(long, env = "PAYROLL_LEDGER_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<PathBuf>,
    /// The master key itself, for environments that pass secrets as variables (prefer the file).
    #[arg(long, env = "PAYROLL_LEDGER_MASTER_KEY", global = true, hide_env_values = true)]
    pub master_key: Option<String>,
}

impl MasterKeySource {
    /// A source with the key's text.
    pub fn of_text(text: impl Into<String>) -> MasterKeySource {
        MasterKeySource { master_key_file: None, master_key: Some(text.into()) }
    }

    /// The configured key; else the one in `default_file`; else, on a database that has
    /// sealed nothing yet, a new key written there (announced on stderr).
    pub async fn resolve(&self, pool: &PgPool, default_file: &Path) -> anyhow::Result<MasterKey> {
        if let Some(path) = &self.master_key_file {
            return read_key(path);
        }
        if let Some(text) = &self.master_key {
            return MasterKey::parse(text).map_err(|problem| {
                anyhow::anyhow!("PAYROLL_LEDGER_MASTER_KEY {problem}: it must be base64 or hex of 32 bytes")
            });
        }
        if default_file.exists() {
            return read_key(default_file);
        }
        if Vault::has_check(pool).await? {
            bail!(
                "this database's personal data is sealed under a master key that was not given: set \
                 PAYROLL_LEDGER_MASTER_KEY_FILE (or --master-key-file) to the file holding it, or \
                 PAYROLL_LEDGER_MASTER_KEY; nothing was written"
            );
        }
        let key = MasterKey::generate();
        write_key(default_file, &key)?;
        eprintln!(
            "made a master key for personal data in {}: keep it safe and apart from the database's backups (without it \
             nobody can read the names in the ledger; with it, anyone with a backup can)",
            default_file.display()
        );
        Ok(key)
    }
}

/// The master key a file holds.
pub fn read_key(path: &Path) -> anyhow::Result<MasterKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the master key file {}", path.display()))?;
    MasterKey::parse(&text).map_err(|problem| {
        anyhow::anyhow!("the master key file {} {problem}: it must hold base64 or hex of 32 bytes", path.display())
    })
}

/// Writes a new key file (mode 0600, never over an existing file).
pub fn write_key(path: &Path, key: &MasterKey) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating the master key file {} (it must not exist)", path.display()))?;
    writeln!(file, "{}", key.to_text())?;
    Ok(())
}

/// Whether a master key is given (by `source`, or in `default_file`).
pub fn is_given(source: &MasterKeySource, default_file: &Path) -> bool {
    source.master_key_file.is_some() || source.master_key.is_some() || default_file.exists()
}

/// Opens the process's vault on `pool` with the key from `source` (refusing a key that is
/// not the database's, with nothing written), then applies the log's erasures to the key
/// table again.
pub async fn open_vault(pool: &PgPool, source: &MasterKeySource, default_file: &Path) -> anyhow::Result<()> {
    unlock(pool, source, default_file).await?;
    reapply_erasures(pool).await
}

/// Makes the key from `source` the process's vault (refusing a key that is not the
/// database's, with nothing written): what `serve` does, whose server re-applies the
/// erasures itself as it starts.
pub async fn unlock(pool: &PgPool, source: &MasterKeySource, default_file: &Path) -> anyhow::Result<()> {
    let key = source.resolve(pool, default_file).await?;
    Vault::install(pool, &key).await?;
    Ok(())
}

/// Makes again the erasures of `file` (NDJSON of erasure events, as `payroll-ledger events
/// --event-type EmployeePersonalDataErased` or `GET /v1/events/export` write them) that the
/// restored log lacks: a backup taken before an erasure brings the person back, log and key.
/// Each is recorded anew with an override naming the erasure it repeats. Returns how many
/// were made again (a person hired after the backup is not in it: nothing to erase).
pub async fn reapply_erasure_file(pool: &PgPool, file: &Path) -> anyhow::Result<u64> {
    use ledger_app::operations::{EraseRequest, erase};
    let text = std::fs::read_to_string(file).with_context(|| format!("reading the erasures in {}", file.display()))?;
    let ledger = crate::server::unobserved_ledger(pool.clone());
    let today = chrono::Utc::now().date_naive();
    let mut reapplied = 0;
    for (number, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let at = || format!("{}:{}", file.display(), number + 1);
        let event: ledger_store::RecordedEvent = serde_json::from_str(line)
            .with_context(|| format!("{}: not an event as `payroll-ledger events` writes it", at()))?;
        if !ledger_core::employee::ERASURE_EVENTS
            .iter()
            .any(|(stream_type, event_type)| *stream_type == event.stream_type && *event_type == event.event_type)
        {
            bail!(
                "{}: a {} event, not an erasure (export them with --event-type EmployeePersonalDataErased)",
                at(),
                event.event_type
            );
        }
        let payload = event.payload.to_value();
        let erased_on = payload["erased_on"].as_str().unwrap_or("an earlier day").to_owned();
        let reason = payload["reason"].as_str().unwrap_or("erased").to_owned();
        let request = EraseRequest {
            employee_id: event.stream_id,
            reason: format!("{reason} (re-applied after a restore)"),
            override_basis: Some(ledger_core::employee::ErasureOverride {
                legal_basis: format!(
                    "the erasure of {erased_on} (event {} at position {}) re-applied after restoring an older backup",
                    event.event_id, event.global_position
                ),
            }),
            today,
            reapplied: true,
        };
        let context = ledger_app::Context::system(event.organization_id, "restore");
        match erase(&ledger, &context, request).await {
            Ok(done) if done.written.is_some() => reapplied += 1,
            Ok(_) | Err(ledger_app::Error::NotFound(_)) => {}
            Err(error) => return Err(anyhow::Error::from(error).context(format!("{}: re-applying the erasure", at()))),
        }
    }
    Ok(reapplied)
}

/// Destroys the keys of every person whose erasure is in the log (announced when any was
/// still there).
pub async fn reapply_erasures(pool: &PgPool) -> anyhow::Result<()> {
    let destroyed = ledger_app::operations::reapply_erasures(&ledger_store::EventStore::new(pool.clone()))
        .await
        .context("re-applying the log's erasures to the data keys")?;
    if destroyed > 0 {
        tracing::warn!(destroyed, "destroyed data keys the log says were erased (restored from a backup?)");
        eprintln!("re-applied {destroyed} erasure(s) from the log: their data keys had come back (a restore?)");
    }
    Ok(())
}
