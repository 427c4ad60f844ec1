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

fn read_key(path: &Path) -> anyhow::Result<MasterKey> {
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

/// Opens the process's vault on `pool` with the key from `source` (refusing a key that is
/// not the database's, with nothing written), then applies the log's erasures to the key
/// table again.
pub async fn open_vault(pool: &PgPool, source: &MasterKeySource, default_file: &Path) -> anyhow::Result<()> {
    let key = source.resolve(pool, default_file).await?;
    Vault::install(pool, &key).await?;
    reapply_erasures(pool).await
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
