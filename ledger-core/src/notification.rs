//! Notifications: what people are told (run awaiting approval, payslip ready, a payment held
//! or failed, a run completed), rendered from the organization's templates, read by their
//! recipients and delivered to the organization's webhook.
//!
//! A notification is made by the notification projection from the event it tells of; its
//! own stream (`notification`, id = the notification's id) records what happened to it
//! since: read, and each delivery attempt with its outcome. Templates and the webhook are
//! the organization's (`OrganizationEvent::NotificationTemplateSet`, `WebhookConfigured`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, require_text};
use crate::event::{Aggregate, DomainEvent};

/// Every kind of notification with the placeholders its templates may use.
pub const KINDS: &[(&str, &[&str])] = &[
    ("run_awaiting_approval", &["payroll_run_id", "items", "net"]),
    ("payslip_ready", &["payroll_run_id", "employee_id", "net", "currency", "payslip"]),
    ("payment_failed", &["payroll_run_id", "employee_id", "reason"]),
    ("payment_held", &["payroll_run_id", "employee_id", "reason"]),
    ("run_completed", &["payroll_run_id", "status", "paid", "failed", "held"]),
];

/// The templates every organization starts with (version 0).
pub const DEFAULT_TEMPLATES: &[(&str, &str, &str)] = &[
    (
        "run_awaiting_approval",
        "Payroll run awaiting approval",
        "Payroll run {payroll_run_id} is calculated: {items} items, net {net}. A second person must approve it.",
    ),
    ("payslip_ready", "Your payslip is ready", "You were paid {net} {currency}. Your payslip: {payslip}"),
    (
        "payment_failed",
        "A payment failed",
        "The payment to employee {employee_id} in run {payroll_run_id} failed: {reason}.",
    ),
    (
        "payment_held",
        "A payment is held",
        "The payment to employee {employee_id} in run {payroll_run_id} is held: {reason}.",
    ),
    (
        "run_completed",
        "Payroll run completed",
        "Payroll run {payroll_run_id} ended {status}: {paid} paid, {failed} failed, {held} held.",
    ),
];

/// The default subject and body of `kind` (version 0, webhook channel).
pub fn default_template(kind: &str) -> Option<(&'static str, &'static str)> {
    DEFAULT_TEMPLATES.iter().find(|(known, ..)| *known == kind).map(|(_, subject, body)| (*subject, *body))
}

/// The longest subject and body a template may have.
pub const SUBJECT_CHARS_MAX: usize = 200;
pub const BODY_CHARS_MAX: usize = 4_000;
/// The longest webhook URL accepted.
pub const WEBHOOK_URL_CHARS_MAX: usize = 2_000;

/// Where a notification goes: to the organization's webhook, or only to be read in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Webhook,
    InApp,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::InApp => "in_app",
        }
    }
}

/// The placeholders of `kind`, or an error naming the field.
pub fn placeholders(kind: &str) -> Result<&'static [&'static str], DomainError> {
    KINDS.iter().find(|(known, _)| *known == kind).map(|(_, names)| *names).ok_or_else(|| {
        let kinds: Vec<&str> = KINDS.iter().map(|(kind, _)| *kind).collect();
        DomainError::invalid("kind", format!("{kind:?} is not a kind of notification ({})", kinds.join(", ")))
    })
}

/// Checks a template's text: not blank, not too long, no control characters but line
/// breaks, and only `{placeholders}` of its kind.
pub fn validate_text(field: &str, text: &str, most: usize, kind: &str) -> Result<(), DomainError> {
    require_text(field, text)?;
    if text.chars().count() > most || text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(DomainError::invalid(
            field,
            format!("1 to {most} characters, no control characters but line breaks"),
        ));
    }
    let allowed = placeholders(kind)?;
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(DomainError::invalid(field, "a `{` without its `}`"));
        };
        let name = &after[..close];
        if !allowed.contains(&name) {
            return Err(DomainError::invalid(
                field,
                format!("{{{name}}} is not a placeholder of {kind} ({})", allowed.join(", ")),
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// `text` with each `{name}` replaced by the payload's value (strings as they are, other
/// values as JSON); a name the payload lacks is left as written.
pub fn render(text: &str, payload: &serde_json::Value) -> String {
    let mut rendered = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        rendered.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').map(|close| (&after[..close], close)) {
            Some((name, close)) if payload.get(name).is_some() => {
                match &payload[name] {
                    serde_json::Value::String(value) => rendered.push_str(value),
                    value => rendered.push_str(&value.to_string()),
                }
                rest = &after[close + 1..];
            }
            _ => {
                rendered.push('{');
                rest = after;
            }
        }
    }
    rendered.push_str(rest);
    rendered
}

/// Checks a webhook URL as far as the domain can: http(s), not too long, printable ASCII
/// only (an international domain name in its `xn--` form).
pub fn validate_webhook_url(url: &str) -> Result<(), DomainError> {
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok || url.len() > WEBHOOK_URL_CHARS_MAX || !url.chars().all(|c| c.is_ascii_graphic()) {
        return Err(DomainError::invalid(
            "url",
            format!(
                "an http:// or https:// URL of at most {WEBHOOK_URL_CHARS_MAX} characters, printable ASCII without spaces"
            ),
        ));
    }
    Ok(())
}

/// What a notification's stream says of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationState {
    pub read_by: Option<String>,
    /// Delivery attempts recorded so far.
    pub attempts: u32,
    /// Delivered, or given up on after the last attempt.
    pub settled: bool,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// The receiver answered 2xx.
    Delivered,
    /// It did not; another attempt follows at `next_attempt_at`.
    Retrying,
    /// It did not, and this was the last attempt.
    Failed,
}

#[derive(Debug, Clone)]
pub enum NotificationCommand {
    MarkRead {
        actor: String,
    },
    RecordDelivery {
        attempt: u32,
        channel: Channel,
        webhook_version: u32,
        status: DeliveryStatus,
        error: Option<String>,
        attempted_at: DateTime<Utc>,
        next_attempt_at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum NotificationEvent {
    NotificationRead {
        read_by: String,
    },
    /// One attempt to deliver the notification (at least once: a receiver may see an
    /// attempt this does not record, after a crash, and gets it again).
    NotificationDeliveryAttempted {
        attempt: u32,
        channel: Channel,
        /// Which of the organization's webhook configurations it was sent to.
        webhook_version: u32,
        status: DeliveryStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        attempted_at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_attempt_at: Option<DateTime<Utc>>,
    },
}

impl DomainEvent for NotificationEvent {
    const EVENT_TYPES: &'static [&'static str] = &["NotificationRead", "NotificationDeliveryAttempted"];
}

/// The most characters of a receiver's error kept.
pub const DELIVERY_ERROR_CHARS_MAX: usize = 500;

#[derive(Debug, Clone, Copy, Default)]
pub struct NotificationAggregate;

impl Aggregate for NotificationAggregate {
    const STREAM_TYPE: &'static str = "notification";
    type State = NotificationState;
    type Command = NotificationCommand;
    type Event = NotificationEvent;

    fn decide(state: &NotificationState, command: NotificationCommand) -> Result<Vec<NotificationEvent>, DomainError> {
        match command {
            // Read once (the API answers a second read with the first).
            NotificationCommand::MarkRead { actor } => {
                require_text("actor", &actor)?;
                if let Some(reader) = &state.read_by {
                    return Err(DomainError::WrongStatus {
                        entity: "notification",
                        action: "mark read",
                        status: format!("read by {reader}"),
                    });
                }
                Ok(vec![NotificationEvent::NotificationRead { read_by: actor }])
            }
            NotificationCommand::RecordDelivery {
                attempt,
                channel,
                webhook_version,
                status,
                error,
                attempted_at,
                next_attempt_at,
            } => {
                if state.settled || attempt != state.attempts + 1 {
                    return Err(DomainError::WrongStatus {
                        entity: "notification",
                        action: "record a delivery attempt of",
                        status: format!("attempt {} recorded, settled: {}", state.attempts, state.settled),
                    });
                }
                if (status == DeliveryStatus::Retrying) != next_attempt_at.is_some() {
                    return Err(DomainError::invalid("next_attempt_at", "given exactly when another attempt follows"));
                }
                let error = error.map(|error| error.chars().take(DELIVERY_ERROR_CHARS_MAX).collect());
                Ok(vec![NotificationEvent::NotificationDeliveryAttempted {
                    attempt,
                    channel,
                    webhook_version,
                    status,
                    error,
                    attempted_at,
                    next_attempt_at,
                }])
            }
        }
    }

    fn evolve(mut state: NotificationState, event: &NotificationEvent) -> NotificationState {
        match event {
            NotificationEvent::NotificationRead { read_by } => state.read_by = Some(read_by.clone()),
            NotificationEvent::NotificationDeliveryAttempted { attempt, status, .. } => {
                state.attempts = *attempt;
                state.settled = *status != DeliveryStatus::Retrying;
            }
        }
        state
    }
}
