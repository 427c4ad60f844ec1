use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;
use ledger_core::calendar::PayFrequency;
use ledger_core::gross_to_net::{DeductionRule, RuleCalculation, RuleParty};
use ledger_core::ids::OrganizationId;
use ledger_core::organization::{OrganizationAggregate, OrganizationCommand, PaySchedule};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{AppState, Auth, Command, Consistency, MoneyInput, currency, written};
use crate::error::{AppError, AppResult};
use crate::keys::Permission;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    pub frequency: PayFrequency,
    pub anchor_date: NaiveDate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterInput {
    name: String,
    base_currency: String,
    pay_schedule: ScheduleInput,
}

/// `POST /v1/organization`: registers the key's organization.
pub async fn register(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let input: RegisterInput = command.json()?;
    let organization_id = command.context.organization_id();
    let base_currency = currency(&state.ledger, organization_id, &input.base_currency, "base_currency").await?;
    let register = OrganizationCommand::Register {
        organization_id: OrganizationId::from_uuid(organization_id),
        name: input.name,
        base_currency,
        pay_schedule: PaySchedule {
            frequency: input.pay_schedule.frequency,
            anchor_date: input.pay_schedule.anchor_date,
        },
    };
    let done = state.ledger.execute::<OrganizationAggregate>(&command.context, organization_id, register).await?;
    Ok(written(StatusCode::CREATED, "organization_id", organization_id, done))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsInput {
    name: Option<String>,
    pay_schedule: Option<ScheduleInput>,
}

/// `POST /v1/organization/settings`.
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
    Ok(written(StatusCode::OK, "organization_id", organization_id, done))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "kind")]
enum CalculationInput {
    Percentage { rate: Decimal },
    Fixed { amount: MoneyInput },
    PercentageCapped { rate: Decimal, cap: MoneyInput },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleInput {
    name: String,
    party: RuleParty,
    calculation: CalculationInput,
    liability_account: String,
}

/// `PUT /v1/organization/rules/{rule_id}`: adds or replaces a deduction or contribution rule.
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
    Ok(written(StatusCode::OK, "organization_id", organization_id, done))
}

/// `DELETE /v1/organization/rules/{rule_id}`.
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
    Ok(written(StatusCode::OK, "organization_id", organization_id, done))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CurrencyInput {
    code: String,
    scale: u32,
}

/// `POST /v1/organization/currencies`: defines a currency of the organization's own.
pub async fn define_currency(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let input: CurrencyInput = command.json()?;
    let organization_id = command.context.organization_id();
    let define = OrganizationCommand::DefineCurrency { code: input.code, scale: input.scale };
    let done = state.ledger.execute::<OrganizationAggregate>(&command.context, organization_id, define).await?;
    Ok(written(StatusCode::CREATED, "organization_id", organization_id, done))
}

/// `GET /v1/organization`: the organization, its settings and rules (read tables).
pub async fn show(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<serde_json::Value>> {
    identity.require(Permission::Read)?;
    consistency.wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let organization: Option<serde_json::Value> = sqlx::query_scalar(
        "select to_jsonb(o) || jsonb_build_object( \
           'settings', (select coalesce(jsonb_object_agg(key, value), '{}') from organization.organization_settings), \
           'rules', (select coalesce(jsonb_agg(to_jsonb(r) order by rule_id), '[]') from organization.deduction_rules r)) \
         from organization.organizations o",
    )
    .fetch_optional(&mut *read)
    .await?;
    read.commit().await?;
    organization
        .map(Json)
        .ok_or_else(|| AppError::NotFound("the organization is not registered: POST /v1/organization".to_owned()))
}
