//! API keys as facts of the log: who was given which role, for whom, and when it was taken
//! back. The secret never enters the log (its hash stays in `auth.api_keys`); the holder does,
//! because four eyes compares holders: two keys of one person are one person.

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, require_text};
use crate::event::{Aggregate, DomainEvent};
use crate::ids::OrganizationId;

/// Who holds a key, as recorded in every event it writes (`metadata.actor`):
/// `person:<name>` or `service:<name>`.
pub fn holder(kind: HolderKind, name: &str) -> Result<String, DomainError> {
    require_text("holder", name)?;
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(DomainError::invalid("holder", "at most 200 characters, none of them control characters"));
    }
    Ok(format!("{}:{}", kind.prefix(), name.trim()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderKind {
    Person,
    /// A program (an integration, a scheduler): never a second pair of eyes.
    Service,
}

impl HolderKind {
    fn prefix(self) -> &'static str {
        match self {
            HolderKind::Person => "person",
            HolderKind::Service => "service",
        }
    }

    /// The kind of a recorded holder.
    pub fn of(holder: &str) -> Option<HolderKind> {
        match holder.split_once(':')?.0 {
            "person" => Some(HolderKind::Person),
            "service" => Some(HolderKind::Service),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub key_id: uuid::Uuid,
    pub organization_id: OrganizationId,
    pub role: String,
    pub holder: String,
    pub revoked: bool,
}

#[derive(Debug, Clone)]
pub enum ApiKeyCommand {
    Create { key_id: uuid::Uuid, organization_id: OrganizationId, role: String, label: String, holder: String },
    Revoke { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum ApiKeyEvent {
    ApiKeyCreated { key_id: uuid::Uuid, organization_id: OrganizationId, role: String, label: String, holder: String },
    ApiKeyRevoked { reason: String },
}

impl DomainEvent for ApiKeyEvent {
    const EVENT_TYPES: &'static [&'static str] = &["ApiKeyCreated", "ApiKeyRevoked"];
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ApiKeyAggregate;

impl Aggregate for ApiKeyAggregate {
    const STREAM_TYPE: &'static str = "api_key";
    type State = Option<ApiKey>;
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;

    fn decide(state: &Self::State, command: ApiKeyCommand) -> Result<Vec<ApiKeyEvent>, DomainError> {
        match (state, command) {
            (None, ApiKeyCommand::Create { key_id, organization_id, role, label, holder }) => {
                require_text("role", &role)?;
                require_text("label", &label)?;
                if HolderKind::of(&holder).is_none() {
                    return Err(DomainError::invalid("holder", "is person:<name> or service:<name>"));
                }
                Ok(vec![ApiKeyEvent::ApiKeyCreated { key_id, organization_id, role, label, holder }])
            }
            (Some(key), ApiKeyCommand::Create { .. }) => {
                Err(DomainError::AlreadyExists { entity: "API key", id: key.key_id.to_string() })
            }
            (None, ApiKeyCommand::Revoke { .. }) => {
                Err(DomainError::NotFound { entity: "API key", id: "(never created)".to_owned() })
            }
            (Some(key), ApiKeyCommand::Revoke { .. }) if key.revoked => {
                Err(DomainError::WrongStatus { entity: "API key", action: "revoke", status: "revoked".to_owned() })
            }
            (Some(_), ApiKeyCommand::Revoke { reason }) => {
                require_text("reason", &reason)?;
                Ok(vec![ApiKeyEvent::ApiKeyRevoked { reason }])
            }
        }
    }

    fn evolve(state: Self::State, event: &ApiKeyEvent) -> Self::State {
        match (state, event) {
            (_, ApiKeyEvent::ApiKeyCreated { key_id, organization_id, role, holder, .. }) => Some(ApiKey {
                key_id: *key_id,
                organization_id: *organization_id,
                role: role.clone(),
                holder: holder.clone(),
                revoked: false,
            }),
            (Some(mut key), ApiKeyEvent::ApiKeyRevoked { .. }) => {
                key.revoked = true;
                Some(key)
            }
            (None, ApiKeyEvent::ApiKeyRevoked { .. }) => panic!("a key is revoked after it was created"),
        }
    }
}
