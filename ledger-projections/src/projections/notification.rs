use async_trait::async_trait;
use ledger_core::payroll::PayrollRunEvent;
use ledger_store::RecordedEvent;
use serde_json::json;
use sqlx::PgConnection;

use super::serde_name;
use crate::decode::AnyEvent;
use crate::error::Result;
use crate::projection::Projection;

/// `notification.notifications`: what people should be told, rendered from
/// `notification_templates` by whoever delivers them.
#[derive(Debug, Clone, Copy)]
pub struct NotificationProjection;

async fn notify(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    recipient: String,
    kind: &str,
    payload: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "insert into notifications (global_position, recipient, kind, organization_id, payload, created_at, last_position) \
         values ($1, $2, $3, $4, $5, $6, $1)",
    )
    .bind(event.global_position)
    .bind(recipient)
    .bind(kind)
    .bind(event.organization_id)
    .bind(payload)
    .bind(event.recorded_at)
    .execute(connection)
    .await?;
    Ok(())
}

#[async_trait]
impl Projection for NotificationProjection {
    fn name(&self) -> &'static str {
        "notification"
    }

    fn schema(&self) -> &'static str {
        "notification"
    }

    fn event_types(&self) -> Vec<&'static str> {
        vec!["PayrollRunCalculated", "PayrollItemPaid", "PayrollItemFailed", "PayrollRunCompleted"]
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        let AnyEvent::PayrollRun(run_event) = decoded else { return Ok(()) };
        let run = event.stream_id;
        let payroll_team = format!("organization:{}:payroll", event.organization_id);
        match run_event {
            PayrollRunEvent::PayrollRunCalculated { items, totals, .. } => {
                let payload = json!({ "payroll_run_id": run, "items": totals.items, "net": totals.net.amount() });
                notify(
                    connection,
                    event,
                    format!("organization:{}:approvers", event.organization_id),
                    "run_awaiting_approval",
                    payload,
                )
                .await?;
                for item in items {
                    if let Some(hold) = &item.hold {
                        let payload = json!({ "payroll_run_id": run, "employee_id": item.employee_id, "reason": hold.to_string() });
                        notify(
                            connection,
                            event,
                            format!("{payroll_team}:employee:{}", item.employee_id),
                            "payment_held",
                            payload,
                        )
                        .await?;
                    }
                }
            }
            PayrollRunEvent::PayrollItemPaid { employee_id, net, .. } => {
                let payload = json!({ "payroll_run_id": run, "net": net.amount(), "currency": net.currency().code() });
                notify(connection, event, format!("employee:{employee_id}"), "payslip_ready", payload).await?;
            }
            PayrollRunEvent::PayrollItemFailed { employee_id, reason } => {
                let payload = json!({ "payroll_run_id": run, "employee_id": employee_id, "reason": reason });
                notify(connection, event, payroll_team, "payment_failed", payload).await?;
            }
            PayrollRunEvent::PayrollRunCompleted { status, paid, failed, held } => {
                let payload = json!({ "payroll_run_id": run, "status": serde_name(status), "paid": paid, "failed": failed, "held": held });
                notify(connection, event, payroll_team, "run_completed", payload).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
