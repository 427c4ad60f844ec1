use axum::Json;
use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;
use chrono::{DateTime, Utc};
use ledger_core::calendar::PayFrequency;
use ledger_core::gross_to_net::{DeductionRule, RuleCalculation, RuleParty};
use ledger_core::ids::{OrganizationId, PayScheduleId};
use ledger_core::organization::{OrganizationAggregate, OrganizationCommand, PaySchedule};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::schema::{Entity, Problems, WrittenView, written};
use super::{AppState, Auth, Command, Consistency, MoneyInput, currency};
use crate::error::{AppError, AppResult};
use crate::keys::Permission;

/// The organization's default pay schedule, given when it registers or changes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultScheduleInput {
    #[schema(value_type = super::schema::PayFrequency)]
    pub frequency: PayFrequency,
    pub anchor_date: NaiveDate,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterInput {
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    name: String,
    /// A known currency code (ISO 4217) or one this organization defined.
    #[schema(pattern = r"^[A-Z0-9]{3,12}$")]
    base_currency: String,
    pay_schedule: DefaultScheduleInput,
}

/// `POST /v1/organization`: registers the key's organization.
#[utoipa::path(post, path = "/v1/organization", tag = "organization", request_body = RegisterInput, params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 201, body = WrittenView), (status = 200, description = "A repeat", body = WrittenView), Problems))]
pub async fn register(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let input: RegisterInput = command.json()?;
    let organization_id = command.context.organization_id();
    let base_currency = currency(&state.ledger, organization_id, &input.base_currency, "base_currency").await?;
    let default_pay_schedule_id = state.ledger.new_id(&command.context, "pay_schedule").await?;
    let register = OrganizationCommand::Register {
        default_pay_schedule_id: PayScheduleId::from_uuid(default_pay_schedule_id),
        organization_id: OrganizationId::from_uuid(organization_id),
        name: input.name,
        base_currency,
        pay_schedule: PaySchedule {
            frequency: input.pay_schedule.frequency,
            anchor_date: input.pay_schedule.anchor_date,
        },
    };
    let done = state.ledger.execute::<OrganizationAggregate>(&command.context, organization_id, register).await?;
    Ok(written(StatusCode::CREATED, Entity::Organization, organization_id, done))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsInput {
    name: Option<String>,
    pay_schedule: Option<DefaultScheduleInput>,
}

/// `POST /v1/organization/settings`.
#[utoipa::path(post, path = "/v1/organization/settings", tag = "organization", request_body = SettingsInput, params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn change_settings(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let input: SettingsInput = command.json()?;
    let organization_id = command.context.organization_id();
    let change = OrganizationCommand::ChangeSettings {
        name: input.name,
        pay_schedule: input
            .pay_schedule
            .map(|schedule| PaySchedule { frequency: schedule.frequency, anchor_date: schedule.anchor_date }),
    };
    let done = state.ledger.execute::<OrganizationAggregate>(&command.context, organization_id, change).await?;
    Ok(written(StatusCode::OK, Entity::Organization, organization_id, done))
}

/// How a rule computes its amount: a share of the gross (`rate` a decimal string, `0.15`
/// for 15 %), a fixed amount, or a share up to a cap.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "kind")]
pub enum CalculationInput {
    Percentage {
        #[schema(value_type = String, example = "0.15")]
        #[serde(with = "rust_decimal::serde::str")]
        rate: Decimal,
    },
    Fixed {
        amount: MoneyInput,
    },
    PercentageCapped {
        #[schema(value_type = String, example = "0.05")]
        #[serde(with = "rust_decimal::serde::str")]
        rate: Decimal,
        cap: MoneyInput,
    },
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    name: String,
    #[schema(value_type = super::schema::RuleParty)]
    party: RuleParty,
    calculation: CalculationInput,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    liability_account: String,
}

/// `PUT /v1/organization/rules/{rule_id}`: adds or replaces a deduction or contribution rule.
#[utoipa::path(put, path = "/v1/organization/rules/{rule_id}", tag = "organization", request_body = RuleInput, params(("rule_id" = String, Path, description = "The rule's own name, e.g. `income_tax`"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn configure_rule(
    State(state): State<AppState>,
    Path(rule_id): Path<String>,
    command: Command,
) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let input: RuleInput = command.json()?;
    let organization_id = command.context.organization_id();
    let ledger = &state.ledger;
    let calculation = match input.calculation {
        CalculationInput::Percentage { rate } => RuleCalculation::Percentage { rate },
        CalculationInput::Fixed { amount } => {
            RuleCalculation::Fixed { amount: amount.resolve(ledger, organization_id, "calculation.amount").await? }
        }
        CalculationInput::PercentageCapped { rate, cap } => RuleCalculation::PercentageCapped {
            rate,
            cap: cap.resolve(ledger, organization_id, "calculation.cap").await?,
        },
    };
    let rule = DeductionRule {
        id: rule_id,
        name: input.name,
        party: input.party,
        calculation,
        liability_account: input.liability_account,
    };
    let done = ledger
        .execute::<OrganizationAggregate>(
            &command.context,
            organization_id,
            OrganizationCommand::ConfigureRule { rule },
        )
        .await?;
    Ok(written(StatusCode::OK, Entity::Organization, organization_id, done))
}

/// `DELETE /v1/organization/rules/{rule_id}`.
#[utoipa::path(delete, path = "/v1/organization/rules/{rule_id}", tag = "organization", params(("rule_id" = String, Path, description = "The rule's own name, e.g. `income_tax`"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn remove_rule(
    State(state): State<AppState>,
    Path(rule_id): Path<String>,
    command: Command,
) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let organization_id = command.context.organization_id();
    let done = state
        .ledger
        .execute::<OrganizationAggregate>(
            &command.context,
            organization_id,
            OrganizationCommand::RemoveRule { rule_id },
        )
        .await?;
    Ok(written(StatusCode::OK, Entity::Organization, organization_id, done))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CurrencyInput {
    /// 3 to 12 capital letters or digits.
    #[schema(pattern = r"^[A-Z0-9]{3,12}$")]
    code: String,
    /// Decimal places, 0 to 18.
    #[schema(maximum = 18)]
    scale: u32,
}

/// `POST /v1/organization/currencies`: defines a currency of the organization's own.
#[utoipa::path(post, path = "/v1/organization/currencies", tag = "organization", request_body = CurrencyInput, params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 201, body = WrittenView), (status = 200, description = "A repeat", body = WrittenView), Problems))]
pub async fn define_currency(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let input: CurrencyInput = command.json()?;
    let organization_id = command.context.organization_id();
    let define = OrganizationCommand::DefineCurrency { code: input.code, scale: input.scale };
    let done = state.ledger.execute::<OrganizationAggregate>(&command.context, organization_id, define).await?;
    Ok(written(StatusCode::CREATED, Entity::Organization, organization_id, done))
}

/// The organization, its settings and its rules.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrganizationView {
    pub organization_id: Uuid,
    pub name: String,
    pub base_currency: String,
    pub registered_at: DateTime<Utc>,
    pub last_position: i64,
    /// Setting name to value (the pay schedule among them).
    #[sqlx(skip)]
    #[schema(value_type = Object)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    #[sqlx(skip)]
    pub rules: Vec<RuleView>,
}

/// A deduction or employer contribution rule.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RuleView {
    pub organization_id: Uuid,
    pub rule_id: String,
    pub name: String,
    #[schema(value_type = super::schema::RuleParty)]
    pub party: String,
    /// `{"kind": "percentage", "rate": "0.15"}`, `{"kind": "fixed", "amount": {...}}` or
    /// `{"kind": "percentage_capped", "rate": "0.05", "cap": {...}}`.
    #[schema(value_type = Object)]
    pub calculation: sqlx::types::Json<serde_json::Value>,
    pub liability_account: String,
    pub last_position: i64,
}

/// `GET /v1/organization`: the organization, its settings and rules (read tables).
#[utoipa::path(get, path = "/v1/organization", tag = "organization", params(Consistency),
    responses((status = 200, body = OrganizationView), Problems))]
pub async fn show(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<OrganizationView>> {
    identity.require(Permission::Read)?;
    consistency.wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let organization: Option<OrganizationView> =
        sqlx::query_as("select * from organization.organizations").fetch_optional(&mut *read).await?;
    let Some(mut organization) = organization else {
        return Err(AppError::NotFound("the organization is not registered: POST /v1/organization".to_owned()));
    };
    let settings: Vec<(String, serde_json::Value)> =
        sqlx::query_as("select key, value from organization.organization_settings order by key")
            .fetch_all(&mut *read)
            .await?;
    organization.settings = settings.into_iter().collect();
    organization.rules =
        sqlx::query_as("select * from organization.deduction_rules order by rule_id").fetch_all(&mut *read).await?;
    read.commit().await?;
    Ok(Json(organization))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaxYearInput {
    /// The month the tax year starts in, 1 to 12.
    #[schema(minimum = 1, maximum = 12, example = 4)]
    month: u32,
    /// The day of that month, a day every year has (never 29 February).
    #[schema(minimum = 1, maximum = 31, example = 6)]
    day: u32,
}

/// `PUT /v1/organization/tax-year`: the day the organization's tax year starts (1 January
/// until set). A payment counts in the tax year of its run's pay date, by the start in force
/// when it is paid: set it before the first run is paid.
#[utoipa::path(put, path = "/v1/organization/tax-year", tag = "organization", request_body = TaxYearInput,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn set_tax_year(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let input: TaxYearInput = command.json()?;
    let organization_id = command.context.organization_id();
    let start = ledger_core::calendar::TaxYearStart::new(input.month, input.day)?;
    let set = OrganizationCommand::SetTaxYear { start };
    let done = state.ledger.execute::<OrganizationAggregate>(&command.context, organization_id, set).await?;
    Ok(written(StatusCode::OK, Entity::Organization, organization_id, done))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GlAccountsInput {
    /// Ledger account to chart-of-accounts code: `funding`, `wages_expense`,
    /// `employer_contributions_expense`, `wallets` (net pay) and `liability:<name>` for each
    /// rule's liability account. Replaces the whole mapping.
    #[schema(example = json!({"funding": "1010", "wages_expense": "6000",
        "employer_contributions_expense": "6100", "wallets": "2100", "liability:tax": "2200"}))]
    accounts: std::collections::BTreeMap<String, String>,
}

/// `PUT /v1/organization/gl-accounts`: maps the ledger's accounts to the organization's
/// chart of accounts, for the journal its general ledger imports
/// (`GET /v1/payroll-runs/{id}/journal?format=csv`).
#[utoipa::path(put, path = "/v1/organization/gl-accounts", tag = "organization", request_body = GlAccountsInput,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn map_gl_accounts(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let input: GlAccountsInput = command.json()?;
    let organization_id = command.context.organization_id();
    let map = OrganizationCommand::MapGeneralLedgerAccounts { accounts: input.accounts };
    let done = state.ledger.execute::<OrganizationAggregate>(&command.context, organization_id, map).await?;
    Ok(written(StatusCode::OK, Entity::Organization, organization_id, done))
}
