//! The domain's errors: each a rule of payroll that a command broke. Nothing was decided.

use chrono::NaiveDate;

use crate::ids::{EmployeeId, PayrollRunId, WalletId};
use crate::money::{Money, MoneyError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    #[error(transparent)]
    Money(#[from] MoneyError),

    /// A field of a command is malformed; `field` names it.
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },

    #[error("{entity} {id} does not exist")]
    NotFound { entity: &'static str, id: String },

    #[error("{entity} {id} exists already")]
    AlreadyExists { entity: &'static str, id: String },

    /// The command does not apply in the aggregate's current status.
    #[error("cannot {action} {entity} in status {status}")]
    WrongStatus { entity: &'static str, action: &'static str, status: String },

    #[error("employee {employee_id} left on {end_date}: nothing is owed for {period}")]
    EmployeeTerminated { employee_id: EmployeeId, end_date: NaiveDate, period: String },

    #[error("employee {employee_id}'s payment is held: {reason}")]
    ItemHeld { employee_id: EmployeeId, reason: String },

    #[error("wallet {wallet_id} holds {balance}, less than the {requested} asked for")]
    InsufficientFunds { wallet_id: WalletId, balance: Money, requested: Money },

    #[error("postings do not balance in {currency}: debits {debits}, credits {credits}")]
    UnbalancedPostings { currency: String, debits: String, credits: String },

    /// Four eyes: the approver submitted the run (created or calculated it).
    #[error("{actor} submitted this run and cannot approve it: a second person must")]
    SelfApproval { actor: String },

    #[error("employee {employee_id} is paid already in this run")]
    AlreadyPaid { employee_id: EmployeeId },

    /// One regular run per pay period: a live (not voided, not reversed) run pays it.
    #[error(
        "payroll run {payroll_run_id} pays {period} already: void or reverse it first, or make this an off-cycle run"
    )]
    PeriodTaken { period: String, payroll_run_id: PayrollRunId },

    /// An item's calculation is out of date: another run paid one of its periods since.
    #[error(
        "employee {employee_id}'s item was calculated when {calculated_on} was paid for {period}; {paid_now} is paid now: the next regular run corrects it"
    )]
    StaleCalculation { employee_id: EmployeeId, period: String, calculated_on: String, paid_now: String },

    #[error("{field} is in {found}, expected {expected}")]
    WrongCurrency { field: String, expected: String, found: String },

    /// Payroll records must be kept until `erasable_from` (the organization's retention
    /// period after the employee left); `None` when the organization has set no period.
    #[error("{}", retention_message(*employee_id, *erasable_from))]
    RetentionNotPassed { employee_id: EmployeeId, erasable_from: Option<NaiveDate> },
    /// A journal for the general ledger needs a chart-of-accounts code for an account the
    /// organization has not mapped.
    #[error(
        "account {account:?} has no code in the organization's chart of accounts: map it with PUT /v1/organization/gl-accounts"
    )]
    UnmappedAccount { account: String },
}

fn retention_message(employee_id: EmployeeId, erasable_from: Option<NaiveDate>) -> String {
    match erasable_from {
        Some(day) => format!(
            "employee {employee_id}'s payroll records are kept until {day} (the retention period): erasure is possible from then on, or now with an override naming its legal basis"
        ),
        None => format!(
            "the organization has set no retention period: employee {employee_id}'s data can be erased only with an override naming its legal basis (or set one: PUT /v1/organization/retention)"
        ),
    }
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> DomainError {
        DomainError::Invalid { field: field.into(), problem: problem.into() }
    }
}

/// Fails with `Invalid` when `text` is blank.
pub(crate) fn require_text(field: &str, text: &str) -> Result<(), DomainError> {
    if text.trim().is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    Ok(())
}

/// Fails with `WrongCurrency` unless `money` is in `expected`.
pub(crate) fn require_currency(
    field: &str,
    money: &Money,
    expected: &crate::money::Currency,
) -> Result<(), DomainError> {
    if money.currency() != expected {
        return Err(DomainError::WrongCurrency {
            field: field.to_owned(),
            expected: expected.code().to_owned(),
            found: money.currency().code().to_owned(),
        });
    }
    Ok(())
}

/// A stored event that does not become a domain event: an unknown type, a schema version
/// newer than this build, or a payload of the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("{event_type} schema version {found} is newer than this build knows ({current})")]
    FutureVersion { event_type: String, found: i32, current: i32 },
    #[error("{event_type} v{version} payload does not decode: {problem}")]
    Payload { event_type: String, version: i32, problem: String },
}
