//! The command side's one error type. Each variant is a kind of answer the caller owes its
//! client (the HTTP API maps them to statuses); the retry decision matches
//! [`Error::VersionConflict`], a type, not a message.

use ledger_codec::DecodeFailed;
use ledger_core::{DecodeError, DomainError, MoneyError};
use ledger_store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The entity does not exist in the caller's organization.
    #[error("{0}")]
    NotFound(String),
    /// Another writer changed a stream since it was loaded (the store's `Conflict`): load
    /// and decide again.
    #[error("{0}; retry the request")]
    VersionConflict(StoreError),
    /// The idempotency key was used for another request.
    #[error(transparent)]
    IdempotencyMismatch(StoreError),
    /// Malformed input, naming the field.
    #[error("{0}")]
    Invalid(String),
    /// A rule of payroll said no.
    #[error(transparent)]
    Domain(DomainError),
    /// Another request holds the resource (a calculation or payment in progress); nothing was
    /// written, retry later.
    #[error("{0}")]
    Busy(String),
    /// No database connection came free in time: the service is overloaded, retry later.
    #[error("the service is busy: no database connection came free in time; retry shortly")]
    Unavailable,
    /// The read tables a command looks facts up in did not catch up in time.
    #[error("{0}")]
    Timeout(String),
    /// A failure that is not the caller's: the database, a stored event that does not
    /// decode, a broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn internal(error: impl std::fmt::Display) -> Error {
        Error::Internal(error.to_string())
    }
}

impl From<DomainError> for Error {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::Invalid { .. } | DomainError::Money(_) | DomainError::WrongCurrency { .. } => {
                Error::Invalid(error.to_string())
            }
            DomainError::NotFound { .. } => Error::NotFound(error.to_string()),
            other => Error::Domain(other),
        }
    }
}

impl From<MoneyError> for Error {
    fn from(error: MoneyError) -> Self {
        DomainError::from(error).into()
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { .. } => Error::VersionConflict(error),
            StoreError::IdempotencyMismatch { .. } => Error::IdempotencyMismatch(error),
            StoreError::Invalid { .. } => Error::Invalid(error.to_string()),
            StoreError::StreamMismatch { .. } => Error::NotFound("no such resource in this organization".to_owned()),
            StoreError::Busy(detail) => Error::Busy(detail),
            StoreError::SubjectErased { subject_id, .. } => Error::Domain(DomainError::WrongStatus {
                entity: "employee",
                action: "record personal data of",
                status: format!("erased ({subject_id})"),
            }),
            StoreError::Database(sqlx::Error::PoolTimedOut) => Error::Unavailable,
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<DecodeFailed> for Error {
    fn from(error: DecodeFailed) -> Self {
        Error::Internal(error.to_string())
    }
}

impl From<DecodeError> for Error {
    fn from(error: DecodeError) -> Self {
        Error::Internal(error.to_string())
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if matches!(error, sqlx::Error::PoolTimedOut) {
            return Error::Unavailable;
        }
        Error::Internal(error.to_string())
    }
}
