//! Signed checkpoints: the tree's size and root, signed with the operator's Ed25519 key.
//!
//! A checkpoint is a C2SP `tlog-checkpoint` (origin, tree size, base64 root, one per line)
//! inside a C2SP `signed-note` (the text, a blank line, `— <key name> <base64 of key id and
//! signature>`), which Go's `sumdb/note`, `tlog_tiles`/`signed_note` and transparency-log
//! witnesses read. The key's name is the log's origin. The private key (`PRIVATE+KEY+name+
//! id+base64`, as `payroll-ledger keygen` or Go's `note.GenerateKey` write it) comes from a
//! file or the environment and never enters the database; the verifier key (`name+id+
//! base64`) is stored beside each note so that the API can serve it.
//!
//! [`sign_checkpoint`] never signs a tree that is not an extension of the last one it signed:
//! it checks an RFC 9162 consistency proof from that checkpoint to the tree first.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use sqlx::{PgConnection, PgExecutor, PgPool};
use tlog_tiles::checkpoint::Checkpoint as CheckpointText;

use crate::error::{Result, StoreError};
use crate::tree::{self, Hash, TreeHead};

/// The operator's checkpoint key: signs notes, knows its verifier key.
#[derive(Clone)]
pub struct LogKey {
    signer: StandardSigner,
    name: String,
    verifier_key: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey").field("verifier_key", &self.verifier_key).finish_non_exhaustive()
    }
}

const KEY_FORMAT: &str = "PRIVATE+KEY+<name>+<8 hex digits>+<base64>, as `payroll-ledger keygen` writes it";

impl LogKey {
    /// Reads a private key (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<LogKey> {
        let text = text.trim();
        let invalid = |problem: String| StoreError::invalid("checkpoint key", problem);
        let signer = StandardSigner::new(text).map_err(|error| invalid(format!("{error}: expected {KEY_FORMAT}")))?;
        let mut parts = text.splitn(5, '+');
        let (name, key) = match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(_), Some(_), Some(name), Some(_), Some(key)) => (name.to_owned(), key),
            _ => return Err(invalid(format!("expected {KEY_FORMAT}"))),
        };
        let bytes = BASE64_STANDARD.decode(key).map_err(|error| invalid(error.to_string()))?;
        let signing = ed25519_dalek::SigningKey::try_from(bytes.get(1..).unwrap_or_default())
            .map_err(|error| invalid(error.to_string()))?;
        let verifier_key = signed_note::new_ed25519_verifier_key(&name, &signing.verifying_key());
        Ok(LogKey { signer, name, verifier_key })
    }

    /// A new key for the log named `name` (e.g. `payroll.example.com/ledger`): the private
    /// key's text and the verifier key's.
    pub fn generate(name: &str) -> Result<(String, String)> {
        if !signed_note::is_key_name_valid(name) {
            return Err(StoreError::invalid("name", "must be non-empty, without spaces or `+`"));
        }
        Ok(signed_note::generate_key(&mut rand_core::OsRng, name))
    }

    /// The log's origin: the key's name.
    pub fn origin(&self) -> &str {
        &self.name
    }

    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Signs the checkpoint of `head`.
    pub fn sign(&self, head: TreeHead) -> Result<SignedCheckpoint> {
        let text = CheckpointText::new(&self.name, head.size, head.root, "")
            .map_err(|_| StoreError::invalid("origin", "is not a valid checkpoint origin"))?;
        let mut note = Note::new(&text.to_bytes(), &[]).map_err(|error| StoreError::Tree(error.to_string()))?;
        note.add_sigs(&[&self.signer]).map_err(|error| StoreError::Tree(error.to_string()))?;
        let note = String::from_utf8(note.to_bytes()).expect("a note is UTF-8");
        Ok(SignedCheckpoint {
            origin: self.name.clone(),
            tree_size: head.size,
            root: head.root,
            key_id: key_id_of(&self.verifier_key),
            verifier_key: self.verifier_key.clone(),
            note,
            signed_at: None,
        })
    }
}

fn key_id_of(verifier_key: &str) -> String {
    verifier_key.split('+').nth(1).unwrap_or_default().to_owned()
}

/// A checkpoint as signed and stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignedCheckpoint {
    pub origin: String,
    pub tree_size: u64,
    #[serde(serialize_with = "base64_hash")]
    pub root: Hash,
    /// The signing key's id, 8 hex digits.
    pub key_id: String,
    /// The verifier (public) key: `name+id+base64`.
    pub verifier_key: String,
    /// The signed note, exactly as signed.
    pub note: String,
    /// When it was stored; `None` before.
    pub signed_at: Option<DateTime<Utc>>,
}

fn base64_hash<S: serde::Serializer>(hash: &Hash, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_str(hash)
}

/// What a checkpoint says, once its signature is checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenedCheckpoint {
    pub head: TreeHead,
}

/// Checks `note`'s signature by `verifier_key` and reads the checkpoint in it. Says what is
/// wrong: not a note, another key, a bad signature, not a checkpoint, another origin.
pub fn open(note: &str, verifier_key: &str) -> Result<OpenedCheckpoint> {
    let invalid = |problem: String| StoreError::invalid("checkpoint", problem);
    let verifier = StandardVerifier::new(verifier_key.trim()).map_err(|error| {
        StoreError::invalid("public key", format!("{error}: expected <name>+<8 hex digits>+<base64>"))
    })?;
    let origin = verifier_key.trim().split('+').next().unwrap_or_default().to_owned();
    let parsed = Note::from_bytes(note.as_bytes()).map_err(|error| invalid(format!("not a signed note: {error}")))?;
    parsed.verify(&VerifierList::new(vec![Box::new(verifier)])).map_err(|error| {
        invalid(match error {
            signed_note::NoteError::UnverifiedNote => format!("it is not signed by the key {}", verifier_key.trim()),
            other => format!("its signature does not verify: {other}"),
        })
    })?;
    let text = CheckpointText::from_bytes(parsed.text()).map_err(|error| invalid(error.to_string()))?;
    if text.origin() != origin {
        return Err(invalid(format!("its origin is {:?}, the key's is {origin:?}", text.origin())));
    }
    Ok(OpenedCheckpoint { head: TreeHead { size: text.size(), root: *text.hash() } })
}

type Row = (String, i64, Vec<u8>, String, String, String, DateTime<Utc>);

const COLUMNS: &str = "origin, tree_size, root_hash, key_id, verifier_key, note, signed_at";

fn from_row((origin, tree_size, root, key_id, verifier_key, note, signed_at): Row) -> Result<SignedCheckpoint> {
    let root = tree::hash_from_bytes(&root).ok_or_else(|| StoreError::Tree("a stored root is not 32 bytes".into()))?;
    Ok(SignedCheckpoint {
        origin,
        tree_size: tree_size as u64,
        root,
        key_id,
        verifier_key,
        note,
        signed_at: Some(signed_at),
    })
}

/// The checkpoint of the largest tree signed (by any key); `None` before the first.
pub async fn latest(executor: impl PgExecutor<'_>) -> Result<Option<SignedCheckpoint>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "select {COLUMNS} from ledger.signed_checkpoints order by tree_size desc, signed_at desc limit 1"
    ))
    .fetch_optional(executor)
    .await?;
    row.map(from_row).transpose()
}

/// A checkpoint of exactly `tree_size` leaves, the latest signed; `None` if none was.
pub async fn of_size(executor: impl PgExecutor<'_>, tree_size: u64) -> Result<Option<SignedCheckpoint>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "select {COLUMNS} from ledger.signed_checkpoints where tree_size = $1 order by signed_at desc limit 1"
    ))
    .bind(tree_size as i64)
    .fetch_optional(executor)
    .await?;
    row.map(from_row).transpose()
}

/// Every checkpoint stored as `verifier_key`'s, smallest tree first (their signatures
/// unchecked: [`open`] each).
pub async fn all_by(executor: impl PgExecutor<'_>, verifier_key: &str) -> Result<Vec<SignedCheckpoint>> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "select {COLUMNS} from ledger.signed_checkpoints where origin = $1 and key_id = $2 and verifier_key = $3 \
         order by tree_size"
    ))
    .bind(verifier_key.split('+').next().unwrap_or_default())
    .bind(key_id_of(verifier_key))
    .bind(verifier_key)
    .fetch_all(executor)
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// The largest checkpoint `verifier_key` signed.
async fn latest_by(executor: impl PgExecutor<'_>, verifier_key: &str) -> Result<Option<SignedCheckpoint>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "select {COLUMNS} from ledger.signed_checkpoints \
         where origin = $1 and key_id = $2 and verifier_key = $3 order by tree_size desc limit 1"
    ))
    .bind(verifier_key.split('+').next().unwrap_or_default())
    .bind(key_id_of(verifier_key))
    .bind(verifier_key)
    .fetch_optional(executor)
    .await?;
    row.map(from_row).transpose()
}

/// What [`sign_checkpoint`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Signed {
    /// A new checkpoint, stored.
    New(SignedCheckpoint),
    /// The tree has not grown since this key's last checkpoint, which is returned.
    Unchanged(SignedCheckpoint),
}

impl Signed {
    pub fn checkpoint(&self) -> &SignedCheckpoint {
        match self {
            Signed::New(checkpoint) | Signed::Unchanged(checkpoint) => checkpoint,
        }
    }
}

/// Signs and stores a checkpoint of the tree as its runner left it, after checking that the
/// tree extends the last checkpoint this key signed (its signature verified, then an RFC 9162
/// consistency proof from it to the tree). Refuses, saying why, when it does not: the log or
/// its tree lost or changed events since.
pub async fn sign_checkpoint(pool: &PgPool, key: &LogKey) -> Result<Signed> {
    sign_checkpoint_extending(pool, key, None).await
}

/// [`sign_checkpoint`], refusing too unless the tree extends `outside`: a checkpoint kept
/// outside the database (after restoring an older backup, the stored checkpoints are older
/// than the ones shipped away; signing the restored log would fork the series).
pub async fn sign_checkpoint_extending(pool: &PgPool, key: &LogKey, outside: Option<TreeHead>) -> Result<Signed> {
    let mut transaction = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *transaction).await?;
    let head = tree::head(&mut transaction).await?;
    let previous = latest_by(&mut *transaction, key.verifier_key()).await?;
    if let Some(previous) = &previous {
        let opened = open(&previous.note, key.verifier_key()).map_err(|error| {
            refuse(format!("the stored checkpoint of size {} is not genuine ({error})", previous.tree_size))
        })?;
        if opened.head.size != previous.tree_size || opened.head.root != previous.root {
            return Err(refuse(format!("the stored checkpoint of size {} differs from its note", previous.tree_size)));
        }
        extends(&mut transaction, opened.head, head, "the last signed checkpoint").await?;
    }
    if let Some(outside) = outside {
        extends(&mut transaction, outside, head, "the checkpoint given").await?;
    }
    transaction.commit().await?;
    match previous {
        Some(previous) if previous.tree_size == head.size => Ok(Signed::Unchanged(previous)),
        _ => {
            let mut signed = key.sign(head)?;
            signed.signed_at = Some(store(pool, &signed).await?);
            Ok(Signed::New(signed))
        }
    }
}

fn refuse(why: String) -> StoreError {
    StoreError::Tree(format!(
        "refusing to sign: {why}; run `payroll-ledger verify --checkpoint` with your last saved checkpoint"
    ))
}

/// Whether the stored tree at `head` extends the tree `earlier` (named `what`).
async fn extends(connection: &mut PgConnection, earlier: TreeHead, head: TreeHead, what: &str) -> Result<()> {
    if head.size < earlier.size {
        return Err(refuse(format!("the tree has {} leaves, fewer than the {} of {what}", head.size, earlier.size)));
    }
    if earlier.size == 0 {
        return Ok(());
    }
    let consistency = tree::consistency_proof(connection, earlier.size, head.size).await?;
    tree::check_tree(&consistency.proof, head.size, head.root, earlier.size, earlier.root).map_err(|_| {
        refuse(format!("the tree of {} leaves does not extend {what} ({} leaves)", head.size, earlier.size))
    })
}

async fn store(pool: &PgPool, checkpoint: &SignedCheckpoint) -> Result<DateTime<Utc>> {
    sqlx::query(
        "insert into ledger.signed_checkpoints (origin, tree_size, root_hash, key_id, verifier_key, note) \
         values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
    )
    .bind(&checkpoint.origin)
    .bind(checkpoint.tree_size as i64)
    .bind(checkpoint.root.0.to_vec())
    .bind(&checkpoint.key_id)
    .bind(&checkpoint.verifier_key)
    .bind(&checkpoint.note)
    .execute(pool)
    .await?;
    let signed_at = sqlx::query_scalar(
        "select signed_at from ledger.signed_checkpoints where origin = $1 and key_id = $2 and tree_size = $3",
    )
    .bind(&checkpoint.origin)
    .bind(&checkpoint.key_id)
    .bind(checkpoint.tree_size as i64)
    .fetch_one(pool)
    .await?;
    Ok(signed_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(size: u64) -> TreeHead {
        TreeHead { size, root: tree::record_hash(&size.to_be_bytes()) }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_and_no_other() {
        let (private, public) = LogKey::generate("payroll.example/ledger").unwrap();
        let key = LogKey::parse(&format!("  {private}\n")).unwrap();
        assert_eq!(key.verifier_key(), public);
        let signed = key.sign(head(42)).unwrap();
        assert!(signed.note.starts_with("payroll.example/ledger\n42\n"), "{}", signed.note);
        assert!(signed.note.contains("\n\n\u{2014} payroll.example/ledger "), "{}", signed.note);
        assert_eq!(open(&signed.note, &public).unwrap().head, head(42));

        let (_, other) = LogKey::generate("payroll.example/ledger").unwrap();
        let error = open(&signed.note, &other).unwrap_err().to_string();
        assert!(error.contains("not signed by the key"), "{error}");

        let forged = signed.note.replacen("\n42\n", "\n43\n", 1);
        let error = open(&forged, &public).unwrap_err().to_string();
        assert!(error.contains("signature does not verify"), "{error}");

        let error = open("not a note", &public).unwrap_err().to_string();
        assert!(error.contains("not a signed note"), "{error}");
    }

    #[test]
    fn malformed_keys_are_refused_with_the_expected_form() {
        for text in ["", "PRIVATE+KEY+name+00000000+AAAA", "name+00000000+AAAA"] {
            let error = LogKey::parse(text).unwrap_err().to_string();
            assert!(error.contains("PRIVATE+KEY+<name>"), "{text}: {error}");
        }
        assert!(LogKey::generate("has space").is_err());
        assert!(open("x\n\n\u{2014} a b\n", "not a key").unwrap_err().to_string().contains("public key"));
    }
}
