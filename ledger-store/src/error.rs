use uuid::Uuid;

use crate::event::ExpectedVersion;

/// Everything that can go wrong in the event store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the version the writer expected. Nothing of the request was
    /// written, on any stream. `actual` is `None` when the stream does not exist.
    #[error("version conflict on stream {stream_id}: expected {expected}, found {}", describe_actual(*.actual))]
    Conflict { stream_id: Uuid, expected: ExpectedVersion, actual: Option<u64> },

    /// The idempotency key was used before for a different request. Nothing was written.
    #[error("idempotency key {key:?} was already used for a different request")]
    IdempotencyMismatch { key: String },

    /// The request is malformed; `field` names the part at fault. Nothing was written.
    #[error("invalid {field}: {problem}")]
    Invalid { field: String, problem: String },

    /// The stream exists with another type or organization than the request says.
    #[error("stream {stream_id} is stored with {field} {stored:?}, the request says {requested:?}")]
    StreamMismatch { stream_id: Uuid, field: &'static str, stored: String, requested: String },

    /// Another writer holds the stream (or the idempotency key) longer than this append may
    /// wait. Nothing was written; retry later.
    #[error("{0}")]
    Busy(String),

    /// The log's Merkle tree (`transparency.*`) is missing hashes it should have, or the
    /// caller asked past its end.
    #[error("{0}")]
    Tree(String),

    /// A tree size, leaf or proof the log's tree does not have (yet): a larger tree than
    /// it has, an event outside the tree asked for, a proof from a larger tree to a smaller.
    #[error("{0}")]
    NotInTree(String),

    /// The master key is missing, wrong, or a sealed value does not open.
    #[error("{0}")]
    Vault(String),

    /// Personal data of an erased subject cannot be sealed again. Nothing was written.
    #[error("the personal data of {subject_id} was erased at {erased_at}; none is recorded for it again")]
    SubjectErased { subject_id: Uuid, erased_at: chrono::DateTime<chrono::Utc> },

    #[error("database error: {0}")]
    Database(sqlx::Error),

    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

fn describe_actual(actual: Option<u64>) -> String {
    match actual {
        Some(version) => format!("version {version}"),
        None => "no stream".to_owned(),
    }
}

/// Every database error the store meets becomes a `StoreError` here: a lock wait that ran out
/// (`lock_timeout`, SQLSTATE 55P03: another writer held the stream or idempotency key too
/// long) is [`StoreError::Busy`], on every path (plain and streamed appends alike).
impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(database) if database.code().as_deref() == Some("55P03") => StoreError::Busy(
                "another request is writing the same resource and did not finish in time; retry shortly".to_owned(),
            ),
            _ => StoreError::Database(error),
        }
    }
}

impl StoreError {
    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        StoreError::Invalid { field: field.into(), problem: problem.into() }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
