//! The webhook delivery worker: every notification of the webhook channel, made while the
//! organization had a webhook, is POSTed to it (JSON, signed with an HMAC-SHA256 of the
//! body under the webhook's secret), at least once: retried with doubling backoff until the
//! receiver answers 2xx or `attempts_max` attempts failed. Each attempt is an event of the
//! notification's stream (`NotificationDeliveryAttempted`), recorded after the POST: a
//! worker killed in between sends it again. It reads the notification projection's due rows
//! and never holds up a projector.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledger_app::{Context, Ledger};
use ledger_core::notification::{Channel, DeliveryStatus, NotificationAggregate, NotificationCommand};
use ledger_store::vault::{Vault, hmac_sha256};
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

/// The signature header: `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-payroll-ledger-signature";
/// The notification's id (a receiver drops what it has seen: delivery is at least once).
pub const NOTIFICATION_HEADER: &str = "x-payroll-ledger-notification";

/// How the worker delivers.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryOptions {
    /// Attempts before a notification is marked failed.
    pub attempts_max: u32,
    /// The wait after the first failed attempt; it doubles after each, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// How long a receiver has to answer.
    pub timeout: Duration,
    /// How often the worker looks for due notifications.
    pub poll: Duration,
    /// Notifications sent per look.
    pub batch: i64,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            attempts_max: 8,
            backoff: Duration::from_secs(30),
            backoff_max: Duration::from_secs(6 * 3600),
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            batch: 100,
        }
    }
}

/// The secret a webhook configuration's deliveries are signed with: derived from the master
/// key, the organization and the configuration's version (never stored).
pub fn signing_secret(vault: &Vault, organization_id: Uuid, version: u32) -> String {
    hex::encode(vault.derive(&format!("webhook-signing/{organization_id}/{version}")))
}

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), body)))
}

#[derive(sqlx::FromRow)]
struct Due {
    notification_id: Uuid,
    organization_id: Uuid,
    recipient: String,
    kind: String,
    subject: String,
    body: String,
    payload: serde_json::Value,
    created_at: DateTime<Utc>,
    attempts: i32,
    url: String,
    version: i32,
}

/// What a receiver gets.
#[derive(Serialize)]
struct Delivery<'a> {
    notification_id: Uuid,
    organization_id: Uuid,
    kind: &'a str,
    recipient: &'a str,
    subject: &'a str,
    body: &'a str,
    payload: &'a serde_json::Value,
    created_at: DateTime<Utc>,
    attempt: u32,
}

/// Runs until `stopped`: delivers what is due, then waits `options.poll`.
pub async fn deliver_periodically(ledger: Ledger, options: DeliveryOptions, mut stopped: watch::Receiver<bool>) {
    // A receiver answers; it does not send the delivery elsewhere (no redirects followed).
    let client =
        match reqwest::Client::builder().timeout(options.timeout).redirect(reqwest::redirect::Policy::none()).build() {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "no HTTP client: webhooks are not delivered");
                return;
            }
        };
    loop {
        match deliver_due(&ledger, &client, &options).await {
            Ok(0) => {}
            Ok(sent) => tracing::debug!(sent, "delivered notifications"),
            Err(error) => tracing::warn!(%error, "webhook delivery failed; trying again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(options.poll) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Sends every due notification once (to the webhook in force, if it is still the one the
/// notification was made under or a later one) and records each attempt; how many were sent.
pub async fn deliver_due(
    ledger: &Ledger,
    client: &reqwest::Client,
    options: &DeliveryOptions,
) -> anyhow::Result<usize> {
    let Some(vault) = Vault::installed() else { anyhow::bail!("no master key: webhook secrets cannot be derived") };
    let due: Vec<Due> = sqlx::query_as(
        "select n.notification_id, n.organization_id, n.recipient, n.kind, n.subject, n.body, n.payload, n.created_at, n.attempts, \
                w.url, w.version \
         from notification.notifications n join notification.webhooks w using (organization_id) \
         where n.delivery_status = 'pending' and n.next_attempt_at <= now() \
         order by n.next_attempt_at, n.notification_id limit $1",
    )
    .bind(options.batch)
    .fetch_all(ledger.pool())
    .await?;
    let sent = due.len();
    let mut recorded = 0;
    for notification in due {
        let attempt = notification.attempts as u32 + 1;
        let delivery = Delivery {
            notification_id: notification.notification_id,
            organization_id: notification.organization_id,
            kind: &notification.kind,
            recipient: &notification.recipient,
            subject: &notification.subject,
            body: &notification.body,
            payload: &notification.payload,
            created_at: notification.created_at,
            attempt,
        };
        let body = serde_json::to_vec(&delivery)?;
        let secret = signing_secret(vault, notification.organization_id, notification.version as u32);
        let outcome = client
            .post(&notification.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&secret, &body))
            .header(NOTIFICATION_HEADER, notification.notification_id.to_string())
            .body(body)
            .send()
            .await;
        let error = match outcome {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("the receiver answered {}", response.status())),
            Err(error) => Some(format!("could not reach the receiver: {error}")),
        };
        let attempted_at = Utc::now();
        let (status, next_attempt_at) = match &error {
            None => (DeliveryStatus::Delivered, None),
            Some(_) if attempt >= options.attempts_max => (DeliveryStatus::Failed, None),
            Some(_) => {
                let wait = options.backoff.saturating_mul(1 << (attempt - 1).min(20)).min(options.backoff_max);
                (DeliveryStatus::Retrying, Some(attempted_at + chrono::Duration::from_std(wait)?))
            }
        };
        let record = NotificationCommand::RecordDelivery {
            attempt,
            channel: Channel::Webhook,
            webhook_version: notification.version as u32,
            status,
            error,
            attempted_at,
            next_attempt_at,
        };
        let context = Context::system(notification.organization_id, "service:notification-delivery");
        match ledger.execute::<NotificationAggregate>(&context, notification.notification_id, record).await {
            Ok(written) => recorded = recorded.max(written.position),
            // Another worker recorded this attempt first: the notification moves on either way.
            Err(error) => tracing::info!(%error, notification = %notification.notification_id, "attempt not recorded"),
        }
    }
    // The next look sees these attempts (not the same notifications again).
    if recorded > 0 {
        let _ = ledger.wait_for_position(recorded, Duration::from_secs(5)).await;
    }
    Ok(sent)
}
