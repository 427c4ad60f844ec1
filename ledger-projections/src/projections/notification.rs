use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_core::gross_to_net::PayrollItem;
use ledger_core::payroll::PayrollRunEvent;
use ledger_store::RecordedEvent;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::serde_name;
use crate::error::Result;
use crate::projection::Projection;
use ledger_codec::AnyEvent;

/// `notification.notifications`: what people should be told, rendered from
/// `notification_templates` by whoever delivers them.
#[derive(Debug, Clone, Copy)]
pub struct NotificationProjection;

/// The notifications of a batch, inserted in one statement.
#[derive(Default)]
struct Notifications {
    positions: Vec<i64>,
    recipients: Vec<String>,
    kinds: Vec<&'static str>,
    organizations: Vec<Uuid>,
    payloads: Vec<serde_json::Value>,
    times: Vec<DateTime<Utc>>,
}

impl Notifications {
    fn notify(&mut self, event: &RecordedEvent, recipient: String, kind: &'static str, payload: serde_json::Value) {
        self.positions.push(event.global_position);
        self.recipients.push(recipient);
        self.kinds.push(kind);
        self.organizations.push(event.organization_id);
        self.payloads.push(payload);
        self.times.push(event.recorded_at);
    }

    /// The payroll team hears of every held item of a calculation.
    fn held(&mut self, event: &RecordedEvent, payroll_team: &str, items: &[PayrollItem]) {
        for item in items {
            if let Some(hold) = &item.hold {
                let payload = json!({ "payroll_run_id": event.stream_id, "employee_id": item.employee_id, "reason": hold.to_string() });
                let recipient = format!("{payroll_team}:employee:{}", item.employee_id);
                self.notify(event, recipient, "payment_held", payload);
            }
        }
    }

    /// What people should be told about one event.
    fn of(&mut self, event: &RecordedEvent, run_event: &PayrollRunEvent) {
        let run = event.stream_id;
        let payroll_team = format!("organization:{}:payroll", event.organization_id);
        match run_event {
            PayrollRunEvent::PayrollItemsCalculated { items, .. } => self.held(event, &payroll_team, items),
            PayrollRunEvent::PayrollRunCalculated { items, totals, .. } => {
                let payload = json!({ "payroll_run_id": run, "items": totals.items, "net": totals.net.amount() });
                let approvers = format!("organization:{}:approvers", event.organization_id);
                self.notify(event, approvers, "run_awaiting_approval", payload);
                self.held(event, &payroll_team, items);
            }
            PayrollRunEvent::PayrollItemPaid { employee_id, net, .. } => {
                let payload = json!({ "payroll_run_id": run, "net": net.amount(), "currency": net.currency().code() });
                self.notify(event, format!("employee:{employee_id}"), "payslip_ready", payload);
            }
            PayrollRunEvent::PayrollItemFailed { employee_id, reason } => {
                let payload = json!({ "payroll_run_id": run, "employee_id": employee_id, "reason": reason });
                self.notify(event, payroll_team, "payment_failed", payload);
            }
            PayrollRunEvent::PayrollRunCompleted { status, paid, failed, held } => {
                let payload = json!({ "payroll_run_id": run, "status": serde_name(status), "paid": paid, "failed": failed, "held": held });
                self.notify(event, payroll_team, "run_completed", payload);
            }
            _ => {}
        }
    }

    async fn write(self, connection: &mut PgConnection) -> Result<()> {
        if self.positions.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "insert into notifications (global_position, recipient, kind, organization_id, payload, created_at, last_position) \
             select p, r, k, o, d, t, p \
             from unnest($1::int8[], $2::text[], $3::text[], $4::uuid[], $5::jsonb[], $6::timestamptz[]) as rows(p, r, k, o, d, t)",
        )
        .bind(&self.positions)
        .bind(&self.recipients)
        .bind(&self.kinds)
        .bind(&self.organizations)
        .bind(&self.payloads)
        .bind(&self.times)
        .execute(connection)
        .await?;
        Ok(())
    }
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
        vec![
            "PayrollItemsCalculated",
            "PayrollRunCalculated",
            "PayrollItemPaid",
            "PayrollItemFailed",
            "PayrollRunCompleted",
        ]
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        self.apply_all(connection, &[(event, decoded.clone())]).await
    }

    /// Only inserts: a batch's notifications go in one statement.
    async fn apply_all(&self, connection: &mut PgConnection, events: &[(&RecordedEvent, AnyEvent)]) -> Result<()> {
        let mut notifications = Notifications::default();
        for (event, decoded) in events {
            if let AnyEvent::PayrollRun(run_event) = decoded {
                notifications.of(event, run_event);
            }
        }
        notifications.write(connection).await
    }
}
