use ledger_codec::DecodeFailed;
use ledger_store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Decode(#[from] DecodeFailed),
    #[error("unknown projection {0:?}; known: {1}")]
    UnknownProjection(String, String),
    #[error("{0}")]
    Replay(String),
}

pub type Result<T, E = ProjectionError> = std::result::Result<T, E>;
