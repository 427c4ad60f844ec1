//! The one error type of the service, and its HTTP form: `application/problem+json` with a
//! stable `code`, a `detail` naming the field at fault, and the right status. Database
//! internals are logged, never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ledger_core::{DecodeError, DomainError};
use ledger_projections::ProjectionError;
use ledger_store::StoreError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed input: bad JSON, a missing or invalid field.
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// A rule of payroll said no.
    #[error(transparent)]
    Domain(DomainError),
    #[error("{0}")]
    Timeout(String),
    /// Another request holds the resource: 409 with `Retry-After`.
    #[error("{0}")]
    Busy(String),
    /// No database connection came free in time: 503 with `Retry-After`.
    #[error("the service is busy: no database connection came free in time; retry shortly")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn bad_request(field: &str, problem: impl std::fmt::Display) -> AppError {
        AppError::BadRequest { code: "invalid_field", detail: format!("{field}: {problem}") }
    }

    pub fn internal(error: impl std::fmt::Display) -> AppError {
        AppError::Internal(error.to_string())
    }
}

impl From<DomainError> for AppError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::Invalid { .. } | DomainError::Money(_) | DomainError::WrongCurrency { .. } => {
                AppError::BadRequest { code: "invalid_field", detail: error.to_string() }
            }
            DomainError::NotFound { .. } => AppError::NotFound(error.to_string()),
            DomainError::AlreadyExists { .. } => {
                AppError::Conflict { code: "already_exists", detail: error.to_string() }
            }
            DomainError::PeriodTaken { .. } => AppError::Conflict { code: "period_taken", detail: error.to_string() },
            other => AppError::Domain(other),
        }
    }
}

impl From<ledger_core::MoneyError> for AppError {
    fn from(error: ledger_core::MoneyError) -> Self {
        DomainError::from(error).into()
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { .. } => {
                AppError::Conflict { code: "version_conflict", detail: format!("{error}; retry the request") }
            }
            StoreError::IdempotencyMismatch { .. } => {
                AppError::Conflict { code: "idempotency_mismatch", detail: error.to_string() }
            }
            StoreError::Invalid { .. } => AppError::BadRequest { code: "invalid_field", detail: error.to_string() },
            StoreError::StreamMismatch { .. } => AppError::NotFound("no such resource in this organization".to_owned()),
            StoreError::Busy(detail) => AppError::Busy(detail),
            StoreError::NotInTree(detail) => AppError::NotFound(detail),
            StoreError::SubjectErased { .. } => AppError::Conflict { code: "erased", detail: error.to_string() },
            StoreError::Database(error) => error.into(),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<ledger_app::Error> for AppError {
    fn from(error: ledger_app::Error) -> Self {
        use ledger_app::Error;
        match error {
            Error::NotFound(detail) => AppError::NotFound(detail),
            Error::VersionConflict(_) => AppError::Conflict { code: "version_conflict", detail: error.to_string() },
            Error::IdempotencyMismatch(_) => {
                AppError::Conflict { code: "idempotency_mismatch", detail: error.to_string() }
            }
            Error::Invalid(detail) => AppError::BadRequest { code: "invalid_field", detail },
            Error::Domain(domain) => domain.into(),
            Error::Timeout(detail) => AppError::Timeout(detail),
            Error::Busy(detail) => AppError::Busy(detail),
            Error::Unavailable => AppError::Unavailable,
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<ProjectionError> for AppError {
    fn from(error: ProjectionError) -> Self {
        match error {
            ProjectionError::Store(store) => store.into(),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<DecodeError> for AppError {
    fn from(error: DecodeError) -> Self {
        AppError::Internal(error.to_string())
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        if matches!(error, sqlx::Error::PoolTimedOut) {
            return AppError::Unavailable;
        }
        AppError::Internal(error.to_string())
    }
}

/// RFC 9457 problem details: every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem's kind.
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    /// Stable and machine-readable: `invalid_field`, `version_conflict`, `self_approval`, ...
    code: String,
    /// What went wrong, naming the field at fault; what to do about it.
    detail: String,
}

fn domain_code(error: &DomainError) -> &'static str {
    match error {
        DomainError::WrongStatus { .. } => "wrong_status",
        DomainError::EmployeeTerminated { .. } => "employee_terminated",
        DomainError::ItemHeld { .. } => "item_held",
        DomainError::InsufficientFunds { .. } => "insufficient_funds",
        DomainError::UnbalancedPostings { .. } => "unbalanced_postings",
        DomainError::SelfApproval { .. } => "self_approval",
        DomainError::AlreadyPaid { .. } => "already_paid",
        DomainError::RetentionNotPassed { .. } => "retention_not_passed",
        DomainError::UnmappedAccount { .. } => "unmapped_account",
        _ => "domain_rule",
    }
}

impl AppError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            AppError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, "Bad request", (*code).to_owned()),
            AppError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "Payload too large", "body_too_large".to_owned()),
            AppError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "Unauthorized", "unauthorized".to_owned()),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden", "forbidden".to_owned()),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found", "not_found".to_owned()),
            AppError::Conflict { code, .. } => (StatusCode::CONFLICT, "Conflict", (*code).to_owned()),
            AppError::Domain(error) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "Rule violated", domain_code(error).to_owned())
            }
            AppError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "Timeout", "timeout".to_owned()),
            AppError::Busy(_) => (StatusCode::CONFLICT, "Busy", "busy".to_owned()),
            AppError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Busy", "unavailable".to_owned()),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error", "internal".to_owned()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, title, code) = self.parts();
        let detail = match &self {
            AppError::Internal(internal) => {
                tracing::error!(error = %internal, "internal error");
                "an internal error occurred; it is logged on the server".to_owned()
            }
            other => other.to_string(),
        };
        let problem = Problem {
            kind: format!("https://payroll-ledger.dev/problems/{code}"),
            title,
            status: status.as_u16(),
            code,
            detail,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if matches!(self, AppError::Busy(_) | AppError::Unavailable) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
