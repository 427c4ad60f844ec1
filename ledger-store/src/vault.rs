//! Personal data sealed per data subject (crypto-shredding).
//!
//! Each data subject (a stream whose events carry personal data: an employee) has a data key
//! of its own in `ledger.subject_keys`, wrapped (XChaCha20-Poly1305) by the operator's
//! master key, which never enters the database. The store is told which top-level payload
//! fields of which event types are personal ([`PersonalDataPolicy`]); an append seals them
//! under their stream's data key before the rows are chained, so the log and its hashes
//! hold only ciphertext:
//!
//! ```json
//! {"sealed": {"v": 1, "subject": "<stream id>", "nonce": "<base64>", "ciphertext": "<base64>"}}
//! ```
//!
//! An append of an erasure event (also named by the policy) destroys its stream's data key
//! in the same transaction: the ciphertext stays, chained and verifiable, and nobody can read
//! it again. Reading opens sealed fields where the key exists ([`open`], [`open_values`]) and shows
//! `{"erased": {"at": "<time>"}}` where it was destroyed.
//!
//! The master key is the process's, installed once at start ([`Vault::install`]) after
//! [`Vault::unlock`] has checked it against the database's check value (a wrong key is
//! refused before anything is written).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload as AeadPayload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::event::{Payload, RecordedEvent, StreamAppend};

/// Bytes of a master key and of a data key.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
/// The sealed form's version.
const SEALED_VERSION: u64 = 1;
/// What the check value seals: opening it proves the master key is the database's.
const CHECK_PLAINTEXT: &[u8] = b"payroll-ledger master key check v1";
const CHECK_AAD: &[u8] = b"payroll-ledger master key check";
const WRAP_AAD: &[u8] = b"payroll-ledger data key";

/// Which payload fields are personal data, and which events erase their stream's subject:
/// the domain's list, given to the store by whoever builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonalDataPolicy {
    /// (stream type, event type, top-level payload field) sealed under the stream's key.
    pub sealed: &'static [(&'static str, &'static str, &'static str)],
    /// (stream type, event type) whose append destroys the stream's data key.
    pub erasures: &'static [(&'static str, &'static str)],
}

impl PersonalDataPolicy {
    fn seals<'a>(&'a self, stream_type: &'a str, event_type: &'a str) -> impl Iterator<Item = &'static str> + 'a {
        self.sealed
            .iter()
            .filter(move |(stream, event, _)| *stream == stream_type && *event == event_type)
            .map(|(_, _, field)| *field)
    }

    /// Whether an append of these streams needs the master key (it seals a field).
    pub fn needs_sealing(&self, streams: &[StreamAppend]) -> bool {
        streams.iter().any(|stream| {
            stream.events.iter().any(|event| self.seals(&stream.stream_type, &event.event_type).next().is_some())
        })
    }

    /// The subjects whose keys an append of these streams destroys.
    pub fn erased_subjects(&self, streams: &[StreamAppend]) -> Vec<Uuid> {
        streams
            .iter()
            .filter(|stream| {
                stream
                    .events
                    .iter()
                    .any(|event| self.erasures.iter().any(|(s, e)| *s == stream.stream_type && *e == event.event_type))
            })
            .map(|stream| stream.stream_id)
            .collect()
    }
}

/// The operator's master key: 32 bytes, written as base64 or hex.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_BYTES]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> MasterKey {
        MasterKey(XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    /// A key from its text (base64 or hex of 32 bytes; surrounding whitespace ignored).
    pub fn parse(text: &str) -> std::result::Result<MasterKey, String> {
        let text = text.trim();
        let bytes = if text.len() == KEY_BYTES * 2 && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|error| error.to_string())?
        } else {
            BASE64.decode(text).map_err(|_| "is neither base64 nor hex".to_owned())?
        };
        let bytes: [u8; KEY_BYTES] =
            bytes.try_into().map_err(|bytes: Vec<u8>| format!("has {} bytes, not {KEY_BYTES}", bytes.len()))?;
        Ok(MasterKey(bytes))
    }

    /// The key as base64 text (what `parse` reads).
    pub fn to_text(&self) -> String {
        BASE64.encode(self.0)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

/// The master key's cipher, checked against a database, and installed for the process.
#[derive(Clone)]
pub struct Vault {
    master: Arc<XChaCha20Poly1305>,
    /// HMAC-SHA256 of a fixed label under the master key: the root of [`Vault::derive`].
    derivation: Arc<[u8; KEY_BYTES]>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Vault(..)")
    }
}

static INSTALLED: OnceLock<Vault> = OnceLock::new();

/// What [`Vault::derive`]'s key is derived under.
const DERIVATION_LABEL: &[u8] = b"payroll-ledger derived secrets v1";

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; KEY_BYTES] {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}
static INSTALLED_KEY: OnceLock<[u8; KEY_BYTES]> = OnceLock::new();

fn seal_bytes(cipher: &XChaCha20Poly1305, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut sealed = nonce.to_vec();
    sealed.extend(cipher.encrypt(&nonce, AeadPayload { msg: plaintext, aad }).expect("sealing never fails"));
    sealed
}

fn open_bytes(cipher: &XChaCha20Poly1305, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_BYTES {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
    cipher.decrypt(XNonce::from_slice(nonce), AeadPayload { msg: ciphertext, aad }).ok()
}

/// What a data key's ciphertext is bound to: its subject and organization.
fn subject_aad(subject: Uuid, organization: Uuid) -> [u8; 32] {
    let mut aad = [0; 32];
    aad[..16].copy_from_slice(subject.as_bytes());
    aad[16..].copy_from_slice(organization.as_bytes());
    aad
}

/// A subject's data key, or the time it was erased.
#[derive(Clone)]
enum SubjectKey {
    Live { organization_id: Uuid, cipher: XChaCha20Poly1305 },
    Erased { at: DateTime<Utc> },
}

/// A row of `ledger.subject_keys`: subject, organization, wrapped key, erased at.
type KeyRow = (Uuid, Uuid, Option<Vec<u8>>, Option<DateTime<Utc>>);

/// A subject's key as the table has it, for the subject-access export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectKeyStatus {
    pub created_at: DateTime<Utc>,
    pub erased_at: Option<DateTime<Utc>>,
}

impl Vault {
    /// Checks `master` against the database's check value (recording one when the database
    /// has none yet): a wrong key is refused with nothing written.
    pub async fn unlock(pool: &PgPool, master: &MasterKey) -> Result<Vault> {
        let cipher = master.cipher();
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("select sealed from ledger.master_key_check").fetch_optional(pool).await?;
        let stored = match stored {
            Some(stored) => stored,
            None => {
                let sealed = seal_bytes(&cipher, CHECK_PLAINTEXT, CHECK_AAD);
                sqlx::query("insert into ledger.master_key_check (sealed) values ($1) on conflict do nothing")
                    .bind(&sealed)
                    .execute(pool)
                    .await?;
                sqlx::query_scalar("select sealed from ledger.master_key_check").fetch_one(pool).await?
            }
        };
        if open_bytes(&cipher, &stored, CHECK_AAD).as_deref() != Some(CHECK_PLAINTEXT) {
            return Err(StoreError::Vault(
                "the master key is not the one this database's personal data is sealed under (check \
                 PAYROLL_LEDGER_MASTER_KEY_FILE / PAYROLL_LEDGER_MASTER_KEY); nothing was written"
                    .to_owned(),
            ));
        }
        Ok(Vault { master: Arc::new(cipher), derivation: Arc::new(hmac_sha256(&master.0, DERIVATION_LABEL)) })
    }

    /// A secret for `purpose` (e.g. a webhook's signing key), derived from the master key
    /// (HMAC-SHA256 under a key itself derived from it): never stored, the same for every
    /// process with this master key, another after the master key is rotated.
    pub fn derive(&self, purpose: &str) -> [u8; KEY_BYTES] {
        hmac_sha256(self.derivation.as_ref(), purpose.as_bytes())
    }

    /// Re-wraps every data key under `new` and records `new`'s check value, in one
    /// transaction (the keys locked meanwhile: sealing and erasure wait): after it only `new`
    /// unlocks the database. `self` must be the database's current key ([`Vault::unlock`]).
    /// Returns how many data keys were re-wrapped. Ciphertext in the log is untouched (it is
    /// under the data keys, which do not change).
    pub async fn rotate(&self, pool: &PgPool, new: &MasterKey) -> Result<u64> {
        let mut transaction = pool.begin().await?;
        sqlx::query("lock table ledger.master_key_check, ledger.subject_keys in exclusive mode")
            .execute(&mut *transaction)
            .await?;
        let stored: Vec<u8> =
            sqlx::query_scalar("select sealed from ledger.master_key_check").fetch_one(&mut *transaction).await?;
        if open_bytes(&self.master, &stored, CHECK_AAD).as_deref() != Some(CHECK_PLAINTEXT) {
            return Err(StoreError::Vault(
                "the current master key is not this database's: nothing was rotated".to_owned(),
            ));
        }
        let rows: Vec<(Uuid, Uuid, Vec<u8>)> = sqlx::query_as(
            "select subject_id, organization_id, wrapped_key from ledger.subject_keys where wrapped_key is not null",
        )
        .fetch_all(&mut *transaction)
        .await?;
        let cipher = new.cipher();
        let mut ids = Vec::with_capacity(rows.len());
        let mut wrapped = Vec::with_capacity(rows.len());
        for (subject, organization, old) in rows {
            let mut aad = WRAP_AAD.to_vec();
            aad.extend(subject_aad(subject, organization));
            let key = open_bytes(&self.master, &old, &aad).ok_or_else(|| {
                StoreError::Vault(format!(
                    "the data key of subject {subject} does not open (altered?): nothing was rotated"
                ))
            })?;
            ids.push(subject);
            wrapped.push(seal_bytes(&cipher, &key, &aad));
        }
        sqlx::query(
            "update ledger.subject_keys k set wrapped_key = n.wrapped from unnest($1::uuid[], $2::bytea[]) as n(id, wrapped) \
             where k.subject_id = n.id",
        )
        .bind(&ids)
        .bind(&wrapped)
        .execute(&mut *transaction)
        .await?;
        sqlx::query("update ledger.master_key_check set sealed = $1, created_at = now()")
            .bind(seal_bytes(&cipher, CHECK_PLAINTEXT, CHECK_AAD))
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(ids.len() as u64)
    }

    /// Whether the database has a master key check value (personal data was sealed, or a
    /// key was unlocked, before).
    pub async fn has_check(pool: &PgPool) -> Result<bool> {
        Ok(sqlx::query_scalar("select exists (select from ledger.master_key_check)").fetch_one(pool).await?)
    }

    /// Unlocks `master` on `pool` and makes it the process's vault. A process has one master
    /// key: installing another is refused.
    pub async fn install(pool: &PgPool, master: &MasterKey) -> Result<Vault> {
        let vault = Vault::unlock(pool, master).await?;
        let installed_key = INSTALLED_KEY.get_or_init(|| master.0);
        if *installed_key != master.0 {
            return Err(StoreError::Vault("this process has another master key installed".to_owned()));
        }
        Ok(INSTALLED.get_or_init(|| vault).clone())
    }

    /// The process's vault, once installed.
    pub fn installed() -> Option<&'static Vault> {
        INSTALLED.get()
    }

    /// The process's vault, or an error saying how to give the master key.
    pub fn required() -> Result<&'static Vault> {
        Vault::installed().ok_or_else(|| {
            StoreError::Vault(
                "no master key: personal data cannot be sealed or opened (give one with \
                 PAYROLL_LEDGER_MASTER_KEY_FILE or PAYROLL_LEDGER_MASTER_KEY)"
                    .to_owned(),
            )
        })
    }

    /// The data keys of `subjects` (subject, organization), made for those that have none.
    /// A subject of another organization, or one erased, is refused. One round trip when
    /// the subjects are new (hires): the keys are made first, and only those a row existed
    /// for already (a racing writer's, an erased subject's) are read back.
    async fn keys_for_sealing(&self, pool: &PgPool, subjects: &[(Uuid, Uuid)]) -> Result<HashMap<Uuid, SubjectKey>> {
        let (ids, organizations): (Vec<Uuid>, Vec<Uuid>) = subjects.iter().copied().unzip();
        let wrapped: Vec<Vec<u8>> = subjects
            .iter()
            .map(|(subject, organization)| {
                let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                let mut aad = WRAP_AAD.to_vec();
                aad.extend(subject_aad(*subject, *organization));
                seal_bytes(&self.master, &key, &aad)
            })
            .collect();
        // A key that exists wins (a racing writer's, or the row an erasure left).
        let made: Vec<KeyRow> = sqlx::query_as(
            "insert into ledger.subject_keys (subject_id, organization_id, wrapped_key) \
             select * from unnest($1::uuid[], $2::uuid[], $3::bytea[]) on conflict (subject_id) do nothing \
             returning subject_id, organization_id, wrapped_key, erased_at",
        )
        .bind(&ids)
        .bind(&organizations)
        .bind(&wrapped)
        .fetch_all(pool)
        .await?;
        let mut keys = self.unwrap(made)?;
        let existing: Vec<Uuid> = ids.iter().filter(|id| !keys.contains_key(id)).copied().collect();
        if !existing.is_empty() {
            keys.extend(self.keys(pool, existing.into_iter()).await?);
        }
        for (subject, organization) in subjects {
            match keys.get(subject) {
                Some(SubjectKey::Live { organization_id, .. }) if organization_id == organization => {}
                Some(SubjectKey::Live { .. }) | None => {
                    return Err(StoreError::invalid("stream_id", format!("subject {subject} has no data key here")));
                }
                Some(SubjectKey::Erased { at }) => {
                    return Err(StoreError::SubjectErased { subject_id: *subject, erased_at: *at });
                }
            }
        }
        Ok(keys)
    }

    /// The keys the table has for `subjects`, unwrapped (erased ones as such).
    async fn keys(&self, pool: &PgPool, subjects: impl Iterator<Item = Uuid>) -> Result<HashMap<Uuid, SubjectKey>> {
        self.unwrap(key_rows(pool, subjects).await?)
    }

    /// Rows of the key table, their keys unwrapped (erased ones as such).
    fn unwrap(&self, rows: Vec<KeyRow>) -> Result<HashMap<Uuid, SubjectKey>> {
        rows.into_iter()
            .map(|(subject, organization_id, wrapped, erased_at)| {
                let key = match (wrapped, erased_at) {
                    (Some(wrapped), None) => {
                        let mut aad = WRAP_AAD.to_vec();
                        aad.extend(subject_aad(subject, organization_id));
                        let key = open_bytes(&self.master, &wrapped, &aad).ok_or_else(|| {
                            StoreError::Vault(format!(
                                "the data key of subject {subject} does not open under the master key (altered?)"
                            ))
                        })?;
                        SubjectKey::Live {
                            organization_id,
                            cipher: XChaCha20Poly1305::new_from_slice(&key).expect("32 bytes"),
                        }
                    }
                    (_, Some(at)) => SubjectKey::Erased { at },
                    (None, None) => SubjectKey::Erased { at: DateTime::<Utc>::UNIX_EPOCH },
                };
                Ok((subject, key))
            })
            .collect()
    }

    /// Seals the personal fields of `streams` under their streams' data keys (made when
    /// missing), in place. Already sealed fields are left as they are.
    pub async fn seal(&self, pool: &PgPool, policy: &PersonalDataPolicy, streams: &mut [StreamAppend]) -> Result<()> {
        let subjects: Vec<(Uuid, Uuid)> = streams
            .iter()
            .filter(|stream| {
                stream.events.iter().any(|event| policy.seals(&stream.stream_type, &event.event_type).next().is_some())
            })
            .map(|stream| (stream.stream_id, stream.organization_id))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if subjects.is_empty() {
            return Ok(());
        }
        let keys = self.keys_for_sealing(pool, &subjects).await?;
        for stream in streams {
            let Some(SubjectKey::Live { cipher, .. }) = keys.get(&stream.stream_id) else { continue };
            for (index, event) in stream.events.iter_mut().enumerate() {
                let fields: Vec<&str> = policy.seals(&stream.stream_type, &event.event_type).collect();
                if fields.is_empty() {
                    continue;
                }
                let mut payload: Map<String, Value> = serde_json::from_str(event.payload.text())
                    .map_err(|_| StoreError::invalid(format!("events[{index}].payload"), "must be a JSON object"))?;
                for field in fields {
                    let Some(value) = payload.get_mut(field) else { continue };
                    if value.is_null() || sealed_of(value).is_some() {
                        continue;
                    }
                    *value = seal_value(cipher, stream.stream_id, stream.organization_id, value);
                }
                event.payload = Payload::from(Value::Object(payload));
            }
        }
        Ok(())
    }

    /// A subject's key: when it was made and erased; `None` when it has none.
    pub async fn status(pool: &PgPool, subject: Uuid) -> Result<Option<SubjectKeyStatus>> {
        let row: Option<(DateTime<Utc>, Option<DateTime<Utc>>)> =
            sqlx::query_as("select created_at, erased_at from ledger.subject_keys where subject_id = $1")
                .bind(subject)
                .fetch_optional(pool)
                .await?;
        Ok(row.map(|(created_at, erased_at)| SubjectKeyStatus { created_at, erased_at }))
    }
}

/// Opens the personal fields of `events` in place: a sealed field in clear where its
/// subject's key exists, `{"erased": {"at": ...}}` where it was destroyed; a field `policy`
/// names that was written in clear (before personal data was sealed) also reads as erased
/// once its subject is. One query for the batch; the master key is needed only when a field
/// is sealed.
pub async fn open(
    executor: impl PgExecutor<'_>,
    policy: &PersonalDataPolicy,
    events: &mut [RecordedEvent],
) -> Result<()> {
    open_with(Vault::installed(), executor, policy, events).await
}

/// [`open`] with `vault` rather than the process's (`None`: fails when a field is sealed).
pub async fn open_with(
    vault: Option<&Vault>,
    executor: impl PgExecutor<'_>,
    policy: &PersonalDataPolicy,
    events: &mut [RecordedEvent],
) -> Result<()> {
    let mut work = Vec::new();
    let mut subjects = HashSet::new();
    for (index, event) in events.iter().enumerate() {
        let named: Vec<&str> = policy.seals(&event.stream_type, &event.event_type).collect();
        if named.is_empty() && !may_be_sealed(&event.payload) {
            continue;
        }
        let Ok(payload) = serde_json::from_str::<Map<String, Value>>(event.payload.text()) else { continue };
        let sealed: Vec<(String, Sealed)> = payload
            .iter()
            .filter_map(|(field, value)| sealed_of(value).map(|sealed| (field.clone(), sealed)))
            .collect();
        let clear: Vec<String> = named
            .into_iter()
            .filter(|field| payload.get(*field).is_some_and(|value| !value.is_null() && sealed_of(value).is_none()))
            .map(str::to_owned)
            .collect();
        if sealed.is_empty() && clear.is_empty() {
            continue;
        }
        subjects.extend(sealed.iter().map(|(_, sealed)| sealed.subject));
        if !clear.is_empty() {
            subjects.insert(event.stream_id);
        }
        work.push((index, payload, sealed, clear));
    }
    if work.is_empty() {
        return Ok(());
    }
    let rows = key_rows(executor, subjects.into_iter()).await?;
    let erased: HashMap<Uuid, DateTime<Utc>> =
        rows.iter().filter_map(|(subject, _, _, erased_at)| erased_at.map(|at| (*subject, at))).collect();
    let keys = if work.iter().any(|(_, _, sealed, _)| !sealed.is_empty()) {
        match vault {
            Some(vault) => vault.unwrap(rows)?,
            None => Vault::required()?.unwrap(rows)?,
        }
    } else {
        HashMap::new()
    };
    for (index, mut payload, sealed, clear) in work {
        let event = &events[index];
        for (field, sealed) in sealed {
            let opened = match keys.get(&sealed.subject) {
                Some(SubjectKey::Live { organization_id, cipher }) if *organization_id == event.organization_id => {
                    open_value(cipher, *organization_id, &sealed).ok_or_else(|| {
                        StoreError::Vault(format!(
                            "the sealed field {field} of the event at position {} does not open (altered?)",
                            event.global_position
                        ))
                    })?
                }
                Some(SubjectKey::Erased { at }) => serde_json::json!({ "erased": { "at": at } }),
                // No key here (a restore without it), or another organization's: unreadable.
                Some(SubjectKey::Live { .. }) | None => serde_json::json!({ "erased": { "at": null } }),
            };
            payload.insert(field, opened);
        }
        if let Some(at) = erased.get(&event.stream_id) {
            for field in clear {
                payload.insert(field, serde_json::json!({ "erased": { "at": at } }));
            }
        }
        events[index].payload = Payload::from(Value::Object(payload));
    }
    Ok(())
}

/// Opens sealed values kept apart from their events (a read table's copy), each of the
/// organization it is paired with, in place: in clear where the key exists,
/// `{"erased": {"at": ...}}` where it was destroyed. Other values are left as they are.
pub async fn open_values(executor: impl PgExecutor<'_>, values: &mut [(Uuid, &mut Value)]) -> Result<()> {
    let sealed: Vec<Option<Sealed>> = values.iter().map(|(_, value)| sealed_of(value)).collect();
    if sealed.iter().all(Option::is_none) {
        return Ok(());
    }
    let rows = key_rows(executor, sealed.iter().flatten().map(|sealed| sealed.subject)).await?;
    let keys = Vault::required()?.unwrap(rows)?;
    for ((organization, value), sealed) in values.iter_mut().zip(sealed) {
        let Some(sealed) = sealed else { continue };
        **value = match keys.get(&sealed.subject) {
            Some(SubjectKey::Live { organization_id, cipher }) if organization_id == organization => {
                open_value(cipher, *organization_id, &sealed).ok_or_else(|| {
                    StoreError::Vault(format!(
                        "the sealed personal data of {} does not open (altered?)",
                        sealed.subject
                    ))
                })?
            }
            Some(SubjectKey::Erased { at }) => serde_json::json!({ "erased": { "at": at } }),
            Some(SubjectKey::Live { .. }) | None => serde_json::json!({ "erased": { "at": null } }),
        };
    }
    Ok(())
}

/// The key table's rows of `subjects`.
async fn key_rows(executor: impl PgExecutor<'_>, subjects: impl Iterator<Item = Uuid>) -> Result<Vec<KeyRow>> {
    let subjects: Vec<Uuid> = subjects.collect::<HashSet<_>>().into_iter().collect();
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as(
        "select subject_id, organization_id, wrapped_key, erased_at from ledger.subject_keys where subject_id = any($1)",
    )
    .bind(&subjects)
    .fetch_all(executor)
    .await?)
}

/// Destroys the data keys of `subjects` (each of `organization`'s, erased at `at`), and
/// leaves a row saying so where there was none: no key is made for them again. Returns how
/// many keys were destroyed. Needs no master key.
pub async fn destroy_keys(executor: impl PgExecutor<'_>, subjects: &[(Uuid, Uuid, DateTime<Utc>)]) -> Result<u64> {
    let mut ids = Vec::with_capacity(subjects.len());
    let mut organizations = Vec::with_capacity(subjects.len());
    let mut times = Vec::with_capacity(subjects.len());
    for (subject, organization, at) in subjects {
        ids.push(*subject);
        organizations.push(*organization);
        times.push(*at);
    }
    let destroyed: i64 = sqlx::query_scalar(
        "with erased as ( \
             insert into ledger.subject_keys (subject_id, organization_id, wrapped_key, erased_at) \
             select subject_id, organization_id, null, at \
             from unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) as e(subject_id, organization_id, at) \
             on conflict (subject_id) do update set wrapped_key = null, erased_at = excluded.erased_at \
             where ledger.subject_keys.erased_at is null \
             returning 1) \
         select count(*) from erased",
    )
    .bind(&ids)
    .bind(&organizations)
    .bind(&times)
    .fetch_one(executor)
    .await?;
    Ok(destroyed as u64)
}

/// `value` sealed under a subject's data key, in the form the log stores.
fn seal_value(cipher: &XChaCha20Poly1305, subject: Uuid, organization: Uuid, value: &Value) -> Value {
    let plaintext = serde_json::to_vec(value).expect("a JSON value serializes");
    let sealed = seal_bytes(cipher, &plaintext, &subject_aad(subject, organization));
    let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
    serde_json::json!({ "sealed": {
        "v": SEALED_VERSION,
        "subject": subject,
        "nonce": BASE64.encode(nonce),
        "ciphertext": BASE64.encode(ciphertext),
    }})
}

/// The value a sealed field holds, if it opens under `cipher` for its subject in `organization`.
fn open_value(cipher: &XChaCha20Poly1305, organization: Uuid, sealed: &Sealed) -> Option<Value> {
    let mut bytes = sealed.nonce.clone();
    bytes.extend(&sealed.ciphertext);
    let plaintext = open_bytes(cipher, &bytes, &subject_aad(sealed.subject, organization))?;
    serde_json::from_slice(&plaintext).ok()
}

/// A sealed field's parts.
struct Sealed {
    subject: Uuid,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// Whether a payload's text may hold a sealed field (cheap, before parsing).
fn may_be_sealed(payload: &Payload) -> bool {
    payload.text().contains("\"sealed\"")
}

fn sealed_of(value: &Value) -> Option<Sealed> {
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    let sealed = object.get("sealed")?.as_object()?;
    Some(Sealed {
        subject: sealed.get("subject")?.as_str()?.parse().ok()?,
        nonce: BASE64.decode(sealed.get("nonce")?.as_str()?).ok()?,
        ciphertext: BASE64.decode(sealed.get("ciphertext")?.as_str()?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_key_reads_back_from_its_text_in_base64_or_hex() {
        let key = MasterKey::generate();
        assert_eq!(MasterKey::parse(&key.to_text()).unwrap().0, key.0);
        assert_eq!(MasterKey::parse(&format!(" {}\n", hex::encode(key.0))).unwrap().0, key.0);
        assert!(MasterKey::parse("c2hvcnQ=").unwrap_err().contains("5 bytes"));
        assert!(MasterKey::parse("not a key!").is_err());
    }

    proptest::proptest! {
        /// Any personal value seals into a form that holds none of its text and opens back to
        /// it, under its own key and organization only.
        #[test]
        fn a_sealed_value_holds_none_of_its_text_and_opens_back(
            name in "[A-Za-z]{12,40}",
            email in proptest::option::of("[a-z]{12,20}@[a-z]{3,10}\\.com"),
            address in proptest::option::of("\\PC{0,80}"),
        ) {
            let value = serde_json::json!({ "full_name": name, "email": email, "address": address });
            let cipher = MasterKey::generate().cipher();
            let (subject, organization) = (Uuid::new_v4(), Uuid::new_v4());
            let stored = seal_value(&cipher, subject, organization, &value);
            let text = stored.to_string();
            proptest::prop_assert!(!text.contains(&name));
            if let Some(email) = &email {
                proptest::prop_assert!(!text.contains(email.as_str()));
            }
            let sealed = sealed_of(&stored).expect("the stored form parses");
            proptest::prop_assert_eq!(sealed.subject, subject);
            proptest::prop_assert_eq!(open_value(&cipher, organization, &sealed), Some(value));
            proptest::prop_assert_eq!(open_value(&cipher, Uuid::new_v4(), &sealed), None);
            proptest::prop_assert_eq!(open_value(&MasterKey::generate().cipher(), organization, &sealed), None);
        }
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_binding() {
        let cipher = MasterKey::generate().cipher();
        let sealed = seal_bytes(&cipher, b"Grace", b"aad");
        assert_eq!(open_bytes(&cipher, &sealed, b"aad").as_deref(), Some(&b"Grace"[..]));
        assert_eq!(open_bytes(&cipher, &sealed, b"other"), None);
        assert_eq!(open_bytes(&MasterKey::generate().cipher(), &sealed, b"aad"), None);
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(open_bytes(&cipher, &altered, b"aad"), None);
    }
}
