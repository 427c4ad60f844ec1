//! What the HTTP contract is made of besides each area's requests and responses: amounts,
//! the answer to a command, the problems every route may answer, and the names of the
//! domain's enums as the API spells them (the domain's types are not the API's: they carry
//! no OpenAPI schema).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ledger_app::Written;
use ledger_core::money::Currency;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};
use uuid::Uuid;

use crate::error::Problem;

/// Pads an amount to its currency's decimals (`4500` USD answers `"4500.00"`); never drops
/// a digit. An organization's own currency is answered as stored, which is at its scale.
pub fn pad(amount: &mut Decimal, currency: &str) {
    if let Ok(currency) = Currency::known(currency)
        && amount.scale() < currency.scale()
    {
        amount.rescale(currency.scale());
    }
}

/// A response row whose amounts are padded to their currency's decimals before it is sent.
pub trait Amounts {
    fn pad_amounts(&mut self) {}
}

/// Which entity a command's answer names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Organization,
    Employee,
    Wallet,
    Transaction,
    PayrollRun,
    PaySchedule,
}

/// What a command answers: the entity it wrote (one of the ids) and where in the log.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct WrittenView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub employee_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wallet_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payroll_run_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_schedule_id: Option<Uuid>,
    /// The last global position written: pass it as `wait_for_position` to read your write.
    pub position: i64,
    /// True when this repeats an earlier request with the same `Idempotency-Key` (then the
    /// status is 200, whatever the first answered).
    pub replayed: bool,
}

/// The answer to a command: `status` (201 for a creation), or 200 for a replay.
pub fn written(status: StatusCode, entity: Entity, id: Uuid, written: Written) -> Response {
    let status = if written.replayed { StatusCode::OK } else { status };
    // A replay names the entity the first request wrote (its append's first stream), even if
    // this request would have derived another id.
    let id = if written.replayed { written.first_stream.unwrap_or(id) } else { id };
    let mut view = WrittenView { position: written.position, replayed: written.replayed, ..WrittenView::default() };
    let slot = match entity {
        Entity::Organization => &mut view.organization_id,
        Entity::Employee => &mut view.employee_id,
        Entity::Wallet => &mut view.wallet_id,
        Entity::Transaction => &mut view.transaction_id,
        Entity::PayrollRun => &mut view.payroll_run_id,
        Entity::PaySchedule => &mut view.pay_schedule_id,
    };
    *slot = Some(id);
    (status, Json(view)).into_response()
}

/// The problems any route may answer, as `application/problem+json`.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only its OpenAPI description is used: handlers answer `AppError`.
pub enum Problems {
    /// Malformed input: `detail` names the field; nothing was written.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// No API key, or not a valid one.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The key's role may not do this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such entity in the key's organization, or no such route.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// A conflict: the entity exists, another writer came first (retry), another request
    /// is writing the same resource (`busy`, with `Retry-After`), or the idempotency key was
    /// used for another request.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The request body is larger than 1 MiB.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// A rule of payroll said no (`code` names it).
    #[response(status = 422, content_type = "application/problem+json")]
    Rule(Problem),
    /// The projections did not reach the position asked for (`wait_for_position`) in time.
    #[response(status = 504, content_type = "application/problem+json")]
    Timeout(Problem),
    /// Overloaded: no database connection came free in time (`Retry-After` says when to
    /// retry); nothing was written.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// How often an employee is paid, or a run pays.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayFrequency {
    Weekly,
    Biweekly,
    SemiMonthly,
    Monthly,
}

/// Where an employee's identity check stands; pay is held until it is approved.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KycStatus {
    Pending,
    UnderReview,
    Approved,
    Rejected,
}

/// Who bears a rule: the employee (a deduction from the gross) or the employer (a
/// contribution on top of it).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleParty {
    Employee,
    Employer,
}

/// A payroll run's status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Draft,
    Calculated,
    Approved,
    Processing,
    Completed,
    PartiallyFailed,
    Voided,
    /// A reversal in progress (its paid items are reversed in batches): `reverse` again
    /// resumes it.
    Reversing,
    Reversed,
}

/// A person's data: kept apart from payroll facts in events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonalData {
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    pub full_name: String,
    pub email: Option<String>,
    pub address: Option<String>,
}

// Exhaustive: a value the domain adds fails to compile here until the API names it.
impl From<ledger_core::calendar::PayFrequency> for PayFrequency {
    fn from(frequency: ledger_core::calendar::PayFrequency) -> Self {
        use ledger_core::calendar::PayFrequency as Domain;
        match frequency {
            Domain::Weekly => PayFrequency::Weekly,
            Domain::Biweekly => PayFrequency::Biweekly,
            Domain::SemiMonthly => PayFrequency::SemiMonthly,
            Domain::Monthly => PayFrequency::Monthly,
        }
    }
}

impl From<ledger_core::employee::KycStatus> for KycStatus {
    fn from(status: ledger_core::employee::KycStatus) -> Self {
        use ledger_core::employee::KycStatus as Domain;
        match status {
            Domain::Pending => KycStatus::Pending,
            Domain::UnderReview => KycStatus::UnderReview,
            Domain::Approved => KycStatus::Approved,
            Domain::Rejected => KycStatus::Rejected,
        }
    }
}

impl From<ledger_core::gross_to_net::RuleParty> for RuleParty {
    fn from(party: ledger_core::gross_to_net::RuleParty) -> Self {
        use ledger_core::gross_to_net::RuleParty as Domain;
        match party {
            Domain::Employee => RuleParty::Employee,
            Domain::Employer => RuleParty::Employer,
        }
    }
}

impl From<ledger_core::payroll::RunStatus> for RunStatus {
    fn from(status: ledger_core::payroll::RunStatus) -> Self {
        use ledger_core::payroll::RunStatus as Domain;
        match status {
            Domain::Draft => RunStatus::Draft,
            Domain::Calculated => RunStatus::Calculated,
            Domain::Approved => RunStatus::Approved,
            Domain::Processing => RunStatus::Processing,
            Domain::Completed => RunStatus::Completed,
            Domain::PartiallyFailed => RunStatus::PartiallyFailed,
            Domain::Voided => RunStatus::Voided,
            Domain::Reversing => RunStatus::Reversing,
            Domain::Reversed => RunStatus::Reversed,
        }
    }
}
