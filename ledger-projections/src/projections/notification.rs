use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_core::gross_to_net::PayrollItem;
use ledger_core::notification::{Channel, DeliveryStatus, NotificationEvent, default_template, render};
use ledger_core::organization::OrganizationEvent;
use ledger_core::payroll::PayrollRunEvent;
use ledger_store::RecordedEvent;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::serde_name;
use crate::error::Result;
use crate::projection::Projection;
use ledger_codec::AnyEvent;

/// The namespace of notification ids: UUID v5 of `<position>:<recipient>:<kind>`.
pub const NOTIFICATION_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7469_6669_6361_7469_6f6e_7300_0001);

/// A notification's id: the same on every rebuild.
pub fn notification_id(position: i64, recipient: &str, kind: &str) -> Uuid {
    Uuid::new_v5(&NOTIFICATION_ID_NAMESPACE, format!("{position}:{recipient}:{kind}").as_bytes())
}

/// `notification.notifications` (what people should be told, rendered with the
/// organization's template in force, read or not, delivered or not),
/// `notification_templates`, `webhooks` and `delivery_attempts`.
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
                let payslip = format!("/v1/payroll-runs/{run}/items/{employee_id}/payslip");
                let payload = json!({ "payroll_run_id": run, "employee_id": employee_id, "net": net.amount(),
                    "currency": net.currency().code(), "payslip": payslip });
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

    /// Renders the gathered notifications with each organization's template and webhook in
    /// force, and inserts them in one statement.
    async fn write(self, connection: &mut PgConnection) -> Result<()> {
        if self.positions.is_empty() {
            return Ok(());
        }
        let mut organizations = self.organizations.clone();
        organizations.sort_unstable();
        organizations.dedup();
        let templates: Vec<(Uuid, String, i32, String, String, String)> = sqlx::query_as(
            "select distinct on (organization_id, kind) organization_id, kind, version, channel, subject, body \
             from notification_templates where organization_id = any($1) order by organization_id, kind, version desc",
        )
        .bind(&organizations)
        .fetch_all(&mut *connection)
        .await?;
        let templates: HashMap<(Uuid, String), (i32, String, String, String)> = templates
            .into_iter()
            .map(|(organization, kind, version, channel, subject, body)| {
                ((organization, kind), (version, channel, subject, body))
            })
            .collect();
        let webhooks: HashMap<Uuid, i32> = sqlx::query_as::<_, (Uuid, i32)>(
            "select organization_id, version from webhooks where organization_id = any($1)",
        )
        .bind(&organizations)
        .fetch_all(&mut *connection)
        .await?
        .into_iter()
        .collect();
        let mut rendered = Rendered::default();
        for index in 0..self.positions.len() {
            let (organization, kind) = (self.organizations[index], self.kinds[index]);
            let (version, channel, subject, body) = match templates.get(&(organization, kind.to_owned())) {
                Some((version, channel, subject, body)) => {
                    (*version, channel.as_str(), subject.as_str(), body.as_str())
                }
                None => {
                    let (subject, body) = default_template(kind).expect("a default template per kind");
                    (0, Channel::Webhook.name(), subject, body)
                }
            };
            let payload = &self.payloads[index];
            let webhook = webhooks.get(&organization).copied();
            let (status, webhook_version, next) = match (channel, webhook) {
                ("webhook", Some(version)) => ("pending", Some(version), Some(self.times[index])),
                ("webhook", None) => ("no_webhook", None, None),
                _ => ("in_app", None, None),
            };
            rendered.ids.push(notification_id(self.positions[index], &self.recipients[index], kind));
            rendered.versions.push(version);
            rendered.channels.push(channel.to_owned());
            rendered.subjects.push(render(subject, payload));
            rendered.bodies.push(render(body, payload));
            rendered.statuses.push(status);
            rendered.webhook_versions.push(webhook_version);
            rendered.next_attempts.push(next);
        }
        sqlx::query(
            "insert into notifications (global_position, recipient, kind, organization_id, payload, created_at, last_position, \
               notification_id, template_version, channel, subject, body, delivery_status, webhook_version, next_attempt_at) \
             select p, r, k, o, d, t, p, i, v, c, s, b, ds, wv, na \
             from unnest($1::int8[], $2::text[], $3::text[], $4::uuid[], $5::jsonb[], $6::timestamptz[], $7::uuid[], $8::int4[], \
                         $9::text[], $10::text[], $11::text[], $12::text[], $13::int4[], $14::timestamptz[]) \
               as rows(p, r, k, o, d, t, i, v, c, s, b, ds, wv, na)",
        )
        .bind(&self.positions)
        .bind(&self.recipients)
        .bind(&self.kinds)
        .bind(&self.organizations)
        .bind(&self.payloads)
        .bind(&self.times)
        .bind(&rendered.ids)
        .bind(&rendered.versions)
        .bind(&rendered.channels)
        .bind(&rendered.subjects)
        .bind(&rendered.bodies)
        .bind(&rendered.statuses)
        .bind(&rendered.webhook_versions)
        .bind(&rendered.next_attempts)
        .execute(connection)
        .await?;
        Ok(())
    }
}

/// The gathered notifications' rendered columns.
#[derive(Default)]
struct Rendered {
    ids: Vec<Uuid>,
    versions: Vec<i32>,
    channels: Vec<String>,
    subjects: Vec<String>,
    bodies: Vec<String>,
    statuses: Vec<&'static str>,
    webhook_versions: Vec<Option<i32>>,
    next_attempts: Vec<Option<DateTime<Utc>>>,
}

/// An organization's template or webhook changed.
async fn apply_organization(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    changed: &OrganizationEvent,
) -> Result<()> {
    match changed {
        OrganizationEvent::NotificationTemplateSet { kind, version, channel, subject, body } => {
            sqlx::query(
                "insert into notification_templates (organization_id, kind, version, channel, subject, body, created_at, last_position) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(event.organization_id)
            .bind(kind)
            .bind(*version as i32)
            .bind(channel.name())
            .bind(subject)
            .bind(body)
            .bind(event.recorded_at)
            .bind(event.global_position)
            .execute(connection)
            .await?;
        }
        OrganizationEvent::WebhookConfigured { url, version } => {
            sqlx::query(
                "insert into webhooks (organization_id, url, version, configured_at, last_position) values ($1, $2, $3, $4, $5) \
                 on conflict (organization_id) do update set url = excluded.url, version = excluded.version, \
                   configured_at = excluded.configured_at, last_position = excluded.last_position",
            )
            .bind(event.organization_id)
            .bind(url)
            .bind(*version as i32)
            .bind(event.recorded_at)
            .bind(event.global_position)
            .execute(connection)
            .await?;
        }
        OrganizationEvent::WebhookRemoved { .. } => {
            sqlx::query("delete from webhooks where organization_id = $1")
                .bind(event.organization_id)
                .execute(connection)
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// A notification read, or an attempt to deliver it.
async fn apply_notification(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    happened: &NotificationEvent,
) -> Result<()> {
    match happened {
        NotificationEvent::NotificationRead { read_by } => {
            sqlx::query(
                "update notifications set read_at = $2, read_by = $3, last_position = $4 where notification_id = $1",
            )
            .bind(event.stream_id)
            .bind(event.recorded_at)
            .bind(read_by)
            .bind(event.global_position)
            .execute(connection)
            .await?;
        }
        NotificationEvent::NotificationDeliveryAttempted {
            attempt,
            channel,
            webhook_version,
            status,
            error,
            attempted_at,
            next_attempt_at,
        } => {
            sqlx::query(
                "insert into delivery_attempts (notification_id, attempt, organization_id, channel, webhook_version, status, error, \
                   attempted_at, next_attempt_at, last_position) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(event.stream_id)
            .bind(*attempt as i32)
            .bind(event.organization_id)
            .bind(channel.name())
            .bind(*webhook_version as i32)
            .bind(serde_name(status))
            .bind(error)
            .bind(attempted_at)
            .bind(next_attempt_at)
            .bind(event.global_position)
            .execute(&mut *connection)
            .await?;
            let delivery_status = match status {
                DeliveryStatus::Delivered => "delivered",
                DeliveryStatus::Retrying => "pending",
                DeliveryStatus::Failed => "failed",
            };
            sqlx::query(
                "update notifications set attempts = $2, delivery_status = $3, next_attempt_at = $4, last_error = $5, \
                   delivered_at = case when $3 = 'delivered' then $6 else delivered_at end, last_position = $7 \
                 where notification_id = $1",
            )
            .bind(event.stream_id)
            .bind(*attempt as i32)
            .bind(delivery_status)
            .bind(next_attempt_at)
            .bind(error)
            .bind(attempted_at)
            .bind(event.global_position)
            .execute(connection)
            .await?;
        }
    }
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
        let mut types = vec![
            "PayrollItemsCalculated",
            "PayrollRunCalculated",
            "PayrollItemPaid",
            "PayrollItemFailed",
            "PayrollRunCompleted",
            "NotificationTemplateSet",
            "WebhookConfigured",
            "WebhookRemoved",
        ];
        types.extend(<NotificationEvent as ledger_core::DomainEvent>::EVENT_TYPES);
        types
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        self.apply_all(connection, &[(event, decoded.clone())]).await
    }

    /// A batch's new notifications go in one statement; a template, webhook, read or
    /// delivery applies on its own, after the notifications gathered before it.
    async fn apply_all(&self, connection: &mut PgConnection, events: &[(&RecordedEvent, AnyEvent)]) -> Result<()> {
        let mut notifications = Notifications::default();
        for (event, decoded) in events {
            match decoded {
                AnyEvent::PayrollRun(run_event) => notifications.of(event, run_event),
                AnyEvent::Organization(changed) => {
                    std::mem::take(&mut notifications).write(connection).await?;
                    apply_organization(connection, event, changed).await?;
                }
                AnyEvent::Notification(happened) => {
                    std::mem::take(&mut notifications).write(connection).await?;
                    apply_notification(connection, event, happened).await?;
                }
                _ => {}
            }
        }
        notifications.write(connection).await
    }
}
