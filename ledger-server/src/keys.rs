//! API keys: created by the CLI, shown once, stored as a SHA-256 of the secret.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use ledger_codec::{decode_stream, stream_append};
use ledger_core::Aggregate;
use ledger_core::access::{ApiKey, ApiKeyAggregate, ApiKeyCommand, ApiKeyEvent, HolderKind, holder};
use ledger_core::ids::OrganizationId;
use ledger_store::{AppendRequest, EventStore, Metadata};

use crate::error::{AppError, AppResult};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, the organization's settings and rules included.
    Admin,
    /// Commands (hire, pay, ...) and reads.
    Processor,
    /// Reads, replay, reports, audit logs.
    Compliance,
    /// The event stream, verification, replay and audit logs. Never writes.
    Auditor,
}

/// A kind of request, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Change the organization itself: settings, rules, currencies.
    Manage,
    /// Run commands: employees, wallets, payroll runs.
    Write,
    /// Read the projected tables.
    Read,
    /// Events, verify, replay, reports, audit logs.
    Audit,
    /// A person's data: erasure, who is due for it, the subject-access export.
    PersonalData,
}

impl Role {
    pub fn parse(text: &str) -> Result<Role, String> {
        match text {
            "admin" => Ok(Role::Admin),
            "processor" => Ok(Role::Processor),
            "compliance" => Ok(Role::Compliance),
            "auditor" => Ok(Role::Auditor),
            other => Err(format!("unknown role {other:?}: admin, processor, compliance or auditor")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Processor => "processor",
            Role::Compliance => "compliance",
            Role::Auditor => "auditor",
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        matches!(
            (self, permission),
            (Role::Admin, _)
                | (Role::Processor, Permission::Write | Permission::Read)
                | (Role::Compliance, Permission::Read | Permission::Audit | Permission::PersonalData)
                | (Role::Auditor, Permission::Audit)
        )
    }
}

/// Who holds a key: a person or a service account, named when the key is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Person(String),
    Service(String),
    /// Nobody named: the key stands for a person of its own (as every key made before
    /// holders were recorded does).
    Unnamed,
}

impl Holder {
    /// The holder as recorded (`person:<name>`, `service:<name>`).
    fn recorded(&self, key_id: Uuid) -> AppResult<String> {
        let recorded = match self {
            Holder::Person(name) => holder(HolderKind::Person, name),
            Holder::Service(name) => holder(HolderKind::Service, name),
            Holder::Unnamed => Ok(unnamed_holder(key_id)),
        };
        recorded.map_err(|error| AppError::bad_request("holder", error))
    }
}

/// The holder recorded for a key nobody was named for (and every key made before holders
/// were recorded): a person of its own.
fn unnamed_holder(key_id: Uuid) -> String {
    format!("person:unnamed holder of key {key_id}")
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub key_id: Uuid,
    pub organization_id: Uuid,
    pub role: Role,
    pub label: String,
    /// `person:<name>` or `service:<name>`: the actor recorded in events, and what four eyes
    /// compares.
    pub holder: String,
}

impl Identity {
    /// The actor recorded in events: the key's holder (the key's id is in the metadata too).
    pub fn actor(&self) -> String {
        self.holder.clone()
    }

    /// Whether a person (not a service account) holds the key.
    pub fn is_person(&self) -> bool {
        HolderKind::of(&self.holder) == Some(HolderKind::Person)
    }

    /// The command context of a request made with this key.
    pub fn context(&self, correlation_id: Uuid, idempotency: Option<ledger_app::Idempotency>) -> ledger_app::Context {
        let actor = ledger_app::Actor {
            name: self.actor(),
            role: self.role.as_str().to_owned(),
            api_key_id: Some(self.key_id),
        };
        ledger_app::Context { organization_id: self.organization_id, actor, correlation_id, idempotency }
    }

    pub fn require(&self, permission: Permission) -> AppResult<()> {
        if !self.role.allows(permission) {
            return Err(AppError::Forbidden(format!("a {} key may not do this ({permission:?})", self.role.as_str())));
        }
        Ok(())
    }
}

const TOKEN_PREFIX: &str = "plk";

/// A key just created: the token is shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    pub key_id: Uuid,
    pub organization_id: Uuid,
    pub role: Role,
    pub label: String,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyInfo {
    pub key_id: Uuid,
    pub organization_id: Uuid,
    pub role: String,
    pub label: String,
    pub holder: Option<String>,
    pub activated: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Creates a key for `holder`, recorded in the log (`ApiKeyCreated`, by `by`). The key
/// works once the event is appended: a crash before that leaves an inactive row, never a
/// key the log does not know.
pub async fn create(
    pool: &PgPool,
    organization_id: Uuid,
    role: Role,
    label: &str,
    holder: &Holder,
    by: &str,
) -> AppResult<CreatedKey> {
    if label.trim().is_empty() {
        return Err(AppError::bad_request("label", "must not be empty"));
    }
    let key_id = Uuid::new_v4();
    let recorded_holder = holder.recorded(key_id)?;
    // 244 random bits from the operating system's generator, through two v4 UUIDs.
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    sqlx::query(
        "insert into auth.api_keys (key_id, organization_id, role, label, secret_hash, holder, activated) \
         values ($1, $2, $3, $4, $5, $6, false)",
    )
    .bind(key_id)
    .bind(organization_id)
    .bind(role.as_str())
    .bind(label)
    .bind(hash(&secret))
    .bind(&recorded_holder)
    .execute(pool)
    .await?;
    let create = ApiKeyCommand::Create {
        key_id,
        organization_id: OrganizationId::from_uuid(organization_id),
        role: role.as_str().to_owned(),
        label: label.to_owned(),
        holder: recorded_holder,
    };
    record(pool, organization_id, key_id, by, |_| vec![create]).await?;
    sqlx::query("update auth.api_keys set activated = true where key_id = $1").bind(key_id).execute(pool).await?;
    let token = format!("{TOKEN_PREFIX}_{}_{secret}", key_id.simple());
    Ok(CreatedKey { key_id, organization_id, role, label: label.to_owned(), token })
}

/// Appends to a key's stream (`api_key`, id = key id) the commands `commands_for` decides on
/// what the log holds of it; false when it gives none.
async fn record(
    pool: &PgPool,
    organization_id: Uuid,
    key_id: Uuid,
    by: &str,
    commands_for: impl FnOnce(&Option<ApiKey>) -> Vec<ApiKeyCommand>,
) -> AppResult<bool> {
    let store = EventStore::new(pool.clone());
    let recorded = store.read_stream(key_id, 1).await?;
    let version = recorded.len() as u64;
    let mut state = ApiKeyAggregate::fold(&decode_stream::<ApiKeyEvent>(&recorded).map_err(AppError::internal)?);
    let commands = commands_for(&state);
    if commands.is_empty() {
        return Ok(false);
    }
    let mut events = Vec::new();
    for command in commands {
        let decided = ApiKeyAggregate::decide(&state, command)?;
        state = decided.iter().fold(state, ApiKeyAggregate::evolve);
        events.extend(decided);
    }
    let request = AppendRequest {
        streams: vec![stream_append::<ApiKeyAggregate>(organization_id, key_id, version, &events)],
        metadata: Metadata::by(by),
        idempotency_key: None,
        fingerprint: None,
    };
    store.append(&request).await?;
    Ok(true)
}

pub async fn list(pool: &PgPool, organization_id: Option<Uuid>) -> AppResult<Vec<KeyInfo>> {
    let keys = sqlx::query_as(
        "select key_id, organization_id, role, label, holder, activated, created_at, revoked_at from auth.api_keys \
         where $1::uuid is null or organization_id = $1 order by created_at",
    )
    .bind(organization_id)
    .fetch_all(pool)
    .await?;
    Ok(keys)
}

/// Revokes a key (at once: the table first) and records it in the log (`ApiKeyRevoked`, by
/// `by`); false when there is no such key, or it was revoked and recorded already. Run
/// again after a crash between the two, it records what is missing.
pub async fn revoke(pool: &PgPool, key_id: Uuid, reason: &str, by: &str) -> AppResult<bool> {
    type Row = (Uuid, String, String, Option<String>);
    let row: Option<Row> =
        sqlx::query_as("select organization_id, role, label, holder from auth.api_keys where key_id = $1")
            .bind(key_id)
            .fetch_optional(pool)
            .await?;
    let Some((organization_id, role, label, holder)) = row else { return Ok(false) };
    sqlx::query("update auth.api_keys set revoked_at = now() where key_id = $1 and revoked_at is null")
        .bind(key_id)
        .execute(pool)
        .await?;
    record(pool, organization_id, key_id, by, |state| {
        let mut commands = Vec::new();
        match state {
            Some(key) if key.revoked => return commands,
            Some(_) => {}
            // A key made before keys were recorded: its creation is recorded with its revocation.
            None => commands.push(ApiKeyCommand::Create {
                key_id,
                organization_id: OrganizationId::from_uuid(organization_id),
                role,
                label,
                holder: holder.unwrap_or_else(|| unnamed_holder(key_id)),
            }),
        }
        commands.push(ApiKeyCommand::Revoke { reason: reason.to_owned() });
        commands
    })
    .await
}

/// The identity of a bearer token.
pub async fn authenticate(pool: &PgPool, token: &str) -> AppResult<Identity> {
    let invalid = || {
        AppError::Unauthorized(
            "invalid API key: send `Authorization: Bearer plk_...` with a key from `payroll-ledger keys create`"
                .to_owned(),
        )
    };
    let mut parts = token.trim().splitn(3, '_');
    let (Some(TOKEN_PREFIX), Some(key_id), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let key_id: Uuid = key_id.parse().map_err(|_| invalid())?;
    type KeyRow = (Uuid, String, String, Vec<u8>, Option<chrono::DateTime<chrono::Utc>>, Option<String>, bool);
    let row: Option<KeyRow> = sqlx::query_as(
        "select organization_id, role, label, secret_hash, revoked_at, holder, activated from auth.api_keys where key_id = $1",
    )
    .bind(key_id)
    .fetch_optional(pool)
    .await?;
    let Some((organization_id, role, label, secret_hash, revoked_at, holder, activated)) = row else {
        return Err(invalid());
    };
    if secret_hash != hash(secret) || !activated {
        return Err(invalid());
    }
    if revoked_at.is_some() {
        return Err(AppError::Unauthorized(format!("API key {key_id} was revoked")));
    }
    let role = Role::parse(&role).map_err(AppError::internal)?;
    // A key made before holders were recorded stands for a holder of its own.
    let holder = holder.unwrap_or_else(|| unnamed_holder(key_id));
    Ok(Identity { key_id, organization_id, role, label, holder })
}
