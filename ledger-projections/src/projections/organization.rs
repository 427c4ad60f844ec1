use async_trait::async_trait;
use ledger_core::access::ApiKeyEvent;
use ledger_core::organization::OrganizationEvent;
use ledger_store::RecordedEvent;
use sqlx::PgConnection;

use super::{serde_name, to_json};
use crate::error::Result;
use crate::projection::Projection;
use ledger_codec::AnyEvent;

/// `organization.organizations`, `organization_settings`, `deduction_rules`.
#[derive(Debug, Clone, Copy)]
pub struct OrganizationProjection;

async fn set_setting(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    key: &str,
    value: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "insert into organization_settings (organization_id, key, value, last_position) values ($1, $2, $3, $4) \
         on conflict (organization_id, key) do update set value = excluded.value, last_position = excluded.last_position",
    )
    .bind(event.organization_id)
    .bind(key)
    .bind(value)
    .bind(event.global_position)
    .execute(connection)
    .await?;
    Ok(())
}

/// `api_keys`: the organization's keys as the log records them.
async fn apply_key(connection: &mut PgConnection, event: &RecordedEvent, key_event: &ApiKeyEvent) -> Result<()> {
    let actor = event.metadata.get("actor").and_then(|actor| actor.as_str()).unwrap_or("unknown");
    match key_event {
        ApiKeyEvent::ApiKeyCreated { key_id, role, label, holder, .. } => {
            sqlx::query(
                "insert into api_keys (key_id, organization_id, role, label, holder, created_by, created_at, last_position) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(key_id)
            .bind(event.organization_id)
            .bind(role)
            .bind(label)
            .bind(holder)
            .bind(actor)
            .bind(event.recorded_at)
            .bind(event.global_position)
            .execute(connection)
            .await?;
        }
        ApiKeyEvent::ApiKeyRevoked { reason } => {
            sqlx::query(
                "update api_keys set revoked_by = $2, revoked_at = $3, revoke_reason = $4, last_position = $5 where key_id = $1",
            )
            .bind(event.stream_id)
            .bind(actor)
            .bind(event.recorded_at)
            .bind(reason)
            .bind(event.global_position)
            .execute(connection)
            .await?;
        }
    }
    Ok(())
}

#[async_trait]
impl Projection for OrganizationProjection {
    fn name(&self) -> &'static str {
        "organization"
    }

    fn schema(&self) -> &'static str {
        "organization"
    }

    fn event_types(&self) -> Vec<&'static str> {
        let mut types = <OrganizationEvent as ledger_core::DomainEvent>::EVENT_TYPES.to_vec();
        types.extend(<ApiKeyEvent as ledger_core::DomainEvent>::EVENT_TYPES);
        types
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        if let AnyEvent::ApiKey(key_event) = decoded {
            return apply_key(connection, event, key_event).await;
        }
        let AnyEvent::Organization(organization_event) = decoded else { return Ok(()) };
        match organization_event {
            OrganizationEvent::OrganizationRegistered {
                organization_id, name, base_currency, pay_schedule, ..
            } => {
                sqlx::query(
                    "insert into organizations (organization_id, name, base_currency, registered_at, last_position) values ($1, $2, $3, $4, $5)",
                )
                .bind(organization_id.as_uuid())
                .bind(name)
                .bind(base_currency.code())
                .bind(event.recorded_at)
                .bind(event.global_position)
                .execute(&mut *connection)
                .await?;
                set_setting(connection, event, "pay_schedule", to_json(pay_schedule)).await?;
                set_setting(connection, event, "base_currency", to_json(base_currency)).await?;
            }
            OrganizationEvent::OrganizationSettingsChanged { name, pay_schedule } => {
                if let Some(name) = name {
                    sqlx::query("update organizations set name = $2, last_position = $3 where organization_id = $1")
                        .bind(event.organization_id)
                        .bind(name)
                        .bind(event.global_position)
                        .execute(&mut *connection)
                        .await?;
                }
                if let Some(pay_schedule) = pay_schedule {
                    set_setting(connection, event, "pay_schedule", to_json(pay_schedule)).await?;
                }
            }
            OrganizationEvent::RetentionPeriodSet { years_after_termination } => {
                sqlx::query(
                    "update organizations set retention_years = $2, last_position = $3 where organization_id = $1",
                )
                .bind(event.organization_id)
                .bind(*years_after_termination as i32)
                .bind(event.global_position)
                .execute(&mut *connection)
                .await?;
            }
            OrganizationEvent::DeductionRuleConfigured { rule } => {
                sqlx::query(
                    "insert into deduction_rules (organization_id, rule_id, name, party, calculation, liability_account, last_position) \
                     values ($1, $2, $3, $4, $5, $6, $7) \
                     on conflict (organization_id, rule_id) do update set name = excluded.name, party = excluded.party, \
                       calculation = excluded.calculation, liability_account = excluded.liability_account, last_position = excluded.last_position",
                )
                .bind(event.organization_id)
                .bind(&rule.id)
                .bind(&rule.name)
                .bind(serde_name(&rule.party))
                .bind(to_json(&rule.calculation))
                .bind(&rule.liability_account)
                .bind(event.global_position)
                .execute(connection)
                .await?;
            }
            OrganizationEvent::DeductionRuleRemoved { rule_id } => {
                sqlx::query("delete from deduction_rules where organization_id = $1 and rule_id = $2")
                    .bind(event.organization_id)
                    .bind(rule_id)
                    .execute(connection)
                    .await?;
            }
            OrganizationEvent::CurrencyDefined { currency } => {
                set_setting(connection, event, &format!("currency:{}", currency.code()), to_json(currency)).await?;
            }
            OrganizationEvent::TaxYearStartSet { start } => {
                set_setting(connection, event, "tax_year_start", to_json(start)).await?;
            }
            OrganizationEvent::GeneralLedgerAccountsMapped { accounts } => {
                set_setting(connection, event, "gl_accounts", to_json(accounts)).await?;
            }
            OrganizationEvent::WebhookConfigured { url, version } => {
                let webhook = serde_json::json!({ "url": url, "version": version });
                set_setting(connection, event, "webhook", webhook).await?;
            }
            OrganizationEvent::WebhookRemoved { .. } => {
                sqlx::query("delete from organization_settings where organization_id = $1 and key = 'webhook'")
                    .bind(event.organization_id)
                    .execute(connection)
                    .await?;
            }
            // The notification projection keeps the templates.
            OrganizationEvent::NotificationTemplateSet { .. } => {}
            // The payroll projection keeps the schedules (and the tax year, for its totals).
            OrganizationEvent::PayScheduleAdded { .. } => {}
        }
        Ok(())
    }
}
