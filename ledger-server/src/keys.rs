//! API keys: created by the CLI, shown once, stored as a SHA-256 of the secret.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

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
                | (Role::Compliance, Permission::Read | Permission::Audit)
                | (Role::Auditor, Permission::Audit)
        )
    }
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub key_id: Uuid,
    pub organization_id: Uuid,
    pub role: Role,
    pub label: String,
}

impl Identity {
    /// The actor recorded in events: stable per key.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_id)
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
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub async fn create(pool: &PgPool, organization_id: Uuid, role: Role, label: &str) -> AppResult<CreatedKey> {
    if label.trim().is_empty() {
        return Err(AppError::bad_request("label", "must not be empty"));
    }
    let key_id = Uuid::new_v4();
    // 244 random bits from the operating system's generator, through two v4 UUIDs.
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    sqlx::query(
        "insert into auth.api_keys (key_id, organization_id, role, label, secret_hash) values ($1, $2, $3, $4, $5)",
    )
    .bind(key_id)
    .bind(organization_id)
    .bind(role.as_str())
    .bind(label)
    .bind(hash(&secret))
    .execute(pool)
    .await?;
    let token = format!("{TOKEN_PREFIX}_{}_{secret}", key_id.simple());
    Ok(CreatedKey { key_id, organization_id, role, label: label.to_owned(), token })
}

pub async fn list(pool: &PgPool, organization_id: Option<Uuid>) -> AppResult<Vec<KeyInfo>> {
    let keys = sqlx::query_as(
        "select key_id, organization_id, role, label, created_at, revoked_at from auth.api_keys \
         where $1::uuid is null or organization_id = $1 order by created_at",
    )
    .bind(organization_id)
    .fetch_all(pool)
    .await?;
    Ok(keys)
}

/// Revokes a key; false when there is no such key or it was revoked already.
pub async fn revoke(pool: &PgPool, key_id: Uuid) -> AppResult<bool> {
    let revoked = sqlx::query("update auth.api_keys set revoked_at = now() where key_id = $1 and revoked_at is null")
        .bind(key_id)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(revoked == 1)
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
    type KeyRow = (Uuid, String, String, Vec<u8>, Option<chrono::DateTime<chrono::Utc>>);
    let row: Option<KeyRow> = sqlx::query_as(
        "select organization_id, role, label, secret_hash, revoked_at from auth.api_keys where key_id = $1",
    )
    .bind(key_id)
    .fetch_optional(pool)
    .await?;
    let Some((organization_id, role, label, secret_hash, revoked_at)) = row else { return Err(invalid()) };
    if secret_hash != hash(secret) {
        return Err(invalid());
    }
    if revoked_at.is_some() {
        return Err(AppError::Unauthorized(format!("API key {key_id} was revoked")));
    }
    let role = Role::parse(&role).map_err(AppError::internal)?;
    Ok(Identity { key_id, organization_id, role, label })
}
