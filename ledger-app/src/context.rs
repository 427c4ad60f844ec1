//! Who acts, in which organization, under which idempotency key; and what a command wrote.

use ledger_store::{AppendResult, Metadata};
use sha2::Digest;
use uuid::Uuid;

/// Who acts: recorded in every event's metadata, compared by four eyes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The name recorded as `metadata.actor`: `key:<id>` for an API key, a label for the
    /// system (CLI, demo).
    pub name: String,
    /// The role it acts in: `admin`, `processor`, `compliance` or `auditor`.
    pub role: String,
    /// The API key it acts through, if any.
    pub api_key_id: Option<Uuid>,
}

/// Who acts, in which organization, under which idempotency key.
#[derive(Debug, Clone)]
pub struct Context {
    pub organization_id: Uuid,
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub idempotency: Option<Idempotency>,
}

/// A client's idempotency key (scoped by organization) and the fingerprint of its request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: Vec<u8>,
}

impl Context {
    pub fn organization_id(&self) -> Uuid {
        self.organization_id
    }

    /// A system context (CLI, demo) acting as `actor` with the admin role for an
    /// organization.
    pub fn system(organization_id: Uuid, actor: &str) -> Context {
        Context {
            organization_id,
            actor: Actor { name: actor.to_owned(), role: "admin".to_owned(), api_key_id: None },
            correlation_id: Uuid::new_v4(),
            idempotency: None,
        }
    }

    /// The same context under an idempotency key, for a request that is the same every time
    /// it is sent with this key.
    pub fn idempotent(&self, key: &str) -> Context {
        let mut context = self.clone();
        let scoped = format!("{}:{key}", self.organization_id);
        let fingerprint = sha2::Sha256::digest(format!("{scoped}:{}", self.actor()).as_bytes()).to_vec();
        context.idempotency = Some(Idempotency { key: scoped, fingerprint });
        context
    }

    /// The same context without its idempotency key: for the appends of an operation after
    /// the first, which the key stands for.
    pub fn without_idempotency(&self) -> Context {
        Context { idempotency: None, ..self.clone() }
    }

    /// The actor name recorded in events.
    pub fn actor(&self) -> String {
        self.actor.name.clone()
    }

    pub(crate) fn metadata(&self) -> Metadata {
        let mut metadata = Metadata::by(self.actor());
        metadata.role = Some(self.actor.role.clone());
        metadata.correlation_id = Some(self.correlation_id);
        if let Some(key_id) = self.actor.api_key_id {
            metadata.extra.insert("api_key_id".to_owned(), serde_json::json!(key_id));
        }
        metadata
    }

    /// An id for a new entity: derived from the idempotency key (already scoped by the
    /// organization) in `namespace` when there is one, so that a retried request names the
    /// same entity; a random one otherwise. See [`crate::Ledger::new_id`].
    pub fn new_id_in(&self, namespace: Uuid, purpose: &str) -> Uuid {
        match &self.idempotency {
            Some(idempotency) => Uuid::new_v5(&namespace, format!("{}:{purpose}", idempotency.key).as_bytes()),
            None => Uuid::new_v4(),
        }
    }
}

/// What a command wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The last global position written: pass it as `wait_for_position` to read your write.
    pub position: i64,
    /// True when this repeats an earlier request with the same idempotency key.
    pub replayed: bool,
    /// The first stream the append wrote: the entity a creating command created (for a
    /// replay, the one the first request created).
    pub first_stream: Option<Uuid>,
}

impl From<AppendResult> for Written {
    fn from(result: AppendResult) -> Self {
        let first_stream = result.streams.first().map(|head| head.stream_id);
        Written { position: result.last_position(), replayed: result.replayed, first_stream }
    }
}
