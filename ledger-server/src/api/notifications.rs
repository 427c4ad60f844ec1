//! Notifications: listed and read by their recipients, rendered from the organization's
//! templates, delivered to its webhook (`crate::delivery`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use ledger_core::notification::{
    Channel, KINDS, NotificationAggregate, NotificationCommand, default_template, placeholders,
};
use ledger_core::organization::{OrganizationAggregate, OrganizationCommand};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{Path, Query};
use super::schema::{Entity, Problems, WrittenView, written};
use super::{AppState, Auth, Command, Consistency, page_limit, parse_cursor, parse_id, require_row};

/// Finds a notification of the reader's organization by id.
const NOTIFICATION_SQL: &str = "select notification_id from notification.notifications where notification_id = $1";
use crate::error::{AppError, AppResult};
use crate::keys::Permission;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// Only those for this recipient (`employee:<id>`, `organization:<id>:approvers`,
    /// `organization:<id>:payroll:employee:<id>`).
    #[param(min_length = 1, max_length = 300)]
    pub recipient: Option<String>,
    /// Only this kind: `run_awaiting_approval`, `payslip_ready`, `payment_failed`,
    /// `payment_held` or `run_completed`.
    #[param(pattern = "^(run_awaiting_approval|payslip_ready|payment_failed|payment_held|run_completed)$")]
    pub kind: Option<String>,
    /// `true`: only those not read yet; `false`: only those read.
    pub unread: Option<bool>,
    /// Made at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Made before this time.
    pub to: Option<DateTime<Utc>>,
    /// The cursor: the `next_after` of the page before (`<position>~<notification_id>`).
    #[param(pattern = r"^\d{1,18}~[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub after: Option<String>,
    /// Rows per page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    #[param(minimum = 0)]
    pub wait_for_position: Option<i64>,
    #[param(maximum = 30000)]
    pub wait_timeout_ms: Option<u32>,
}

/// A notification as rendered, with whether it was read and how its delivery went.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct NotificationView {
    pub notification_id: Uuid,
    pub recipient: String,
    pub kind: String,
    pub organization_id: Uuid,
    /// The facts the text was rendered from (amounts as decimal strings).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// The template version it was rendered with (0: the default).
    pub template_version: i32,
    /// `webhook` or `in_app`.
    pub channel: String,
    pub subject: String,
    pub body: String,
    pub read_at: Option<DateTime<Utc>>,
    pub read_by: Option<String>,
    /// `pending`, `delivered`, `failed` (given up), `in_app` (read in the API only) or
    /// `no_webhook` (none configured when it was made).
    pub delivery_status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The log position of the event it tells of.
    pub global_position: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationPage {
    pub notifications: Vec<NotificationView>,
    /// Pass as `after` for the next page; null after the last.
    pub next_after: Option<String>,
}

/// `GET /v1/notifications`: the organization's notifications in log order, filtered.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(NotificationQuery),
    responses((status = 200, body = NotificationPage), Problems))]
pub async fn list(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<NotificationQuery>,
) -> AppResult<Json<NotificationPage>> {
    identity.require(Permission::Read)?;
    if let Some(kind) = &query.kind {
        placeholders(kind)?;
    }
    let after: Option<(i64, Uuid)> =
        query.after.as_deref().map(|cursor| parse_cursor(cursor, "<position>~<notification_id>")).transpose()?;
    let limit = page_limit(query.limit)?;
    if let Some(recipient) = &query.recipient
        && (recipient.is_empty() || recipient.len() > 300 || recipient.contains('\0'))
    {
        return Err(AppError::bad_request("recipient", "1 to 300 characters"));
    }
    Consistency { wait_for_position: query.wait_for_position, wait_timeout_ms: query.wait_timeout_ms }
        .wait(&state.ledger)
        .await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let notifications: Vec<NotificationView> = sqlx::query_as(
        "select notification_id, recipient, kind, organization_id, payload, created_at, template_version, channel, subject, body, \
                read_at, read_by, delivery_status, attempts, next_attempt_at, last_error, delivered_at, global_position \
         from notification.notifications \
         where ($1::text is null or recipient = $1) and ($2::text is null or kind = $2) \
           and ($3::bool is null or (read_at is null) = $3) \
           and ($4::timestamptz is null or created_at >= $4) and ($5::timestamptz is null or created_at < $5) \
           and ($6::int8 is null or (global_position, notification_id) > ($6, $7)) \
         order by global_position, notification_id limit $8",
    )
    .bind(&query.recipient)
    .bind(&query.kind)
    .bind(query.unread)
    .bind(query.from)
    .bind(query.to)
    .bind(after.map(|(position, _)| position))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    let next_after = if notifications.len() as i64 == limit {
        notifications.last().map(|last| format!("{}~{}", last.global_position, last.notification_id))
    } else {
        None
    };
    Ok(Json(NotificationPage { notifications, next_after }))
}

/// What marking a notification read did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadView {
    pub notification_id: Uuid,
    /// True when it was read before (this request changed nothing).
    pub already_read: bool,
    /// The event's position (pass as `wait_for_position`); absent when already read.
    pub position: Option<i64>,
}

/// `POST /v1/notifications/{id}/read`: marks a notification read (once; a repeat answers
/// `already_read`).
#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "notifications",
    params(("id" = uuid::Uuid, Path, description = "The notification's id (a UUID)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = ReadView), Problems))]
pub async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    command: Command,
) -> AppResult<Json<ReadView>> {
    command.require(Permission::Read)?;
    let notification_id = parse_id(&id, "notification id")?;
    let organization_id = command.context.organization_id();
    let mut tenant = state.ledger.tenant_read(organization_id).await?;
    require_row(&mut tenant, NOTIFICATION_SQL, notification_id, || format!("no notification {notification_id}"))
        .await?;
    tenant.commit().await?;
    let already =
        |position: Option<i64>| Json(ReadView { notification_id, already_read: position.is_none(), position });
    let is_read = |state: &AppState| {
        let ledger = state.ledger.clone();
        async move {
            let loaded = ledger.load::<NotificationAggregate>(organization_id, notification_id).await?;
            Ok::<bool, AppError>(loaded.state.read_by.is_some())
        }
    };
    if is_read(&state).await? {
        return Ok(already(None));
    }
    let mark = NotificationCommand::MarkRead { actor: command.context.actor() };
    match state.ledger.execute::<NotificationAggregate>(&command.context, notification_id, mark).await {
        Ok(written) => Ok(already(Some(written.position))),
        // A racing read got there first: the same answer as a repeat.
        Err(error) => match is_read(&state).await? {
            true => Ok(already(None)),
            false => Err(error.into()),
        },
    }
}

/// A kind's template in force.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    pub kind: String,
    /// 0 for the default.
    pub version: i32,
    /// `webhook` or `in_app`.
    pub channel: String,
    pub subject: String,
    pub body: String,
    /// The `{placeholders}` its text may use.
    pub placeholders: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TemplatePage {
    pub templates: Vec<TemplateView>,
}

/// `GET /v1/notification-templates`: each kind's template in force (the organization's
/// latest version, or the default).
#[utoipa::path(get, path = "/v1/notification-templates", tag = "notifications", params(Consistency),
    responses((status = 200, body = TemplatePage), Problems))]
pub async fn templates(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<TemplatePage>> {
    identity.require(Permission::Read)?;
    consistency.wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let set: Vec<(String, i32, String, String, String)> = sqlx::query_as(
        "select distinct on (kind) kind, version, channel, subject, body from notification.notification_templates \
         order by kind, version desc",
    )
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    let templates = KINDS
        .iter()
        .map(|(kind, placeholders)| {
            let placeholders = placeholders.iter().map(|name| (*name).to_owned()).collect();
            match set.iter().find(|(set_kind, ..)| set_kind == kind) {
                Some((_, version, channel, subject, body)) => TemplateView {
                    kind: (*kind).to_owned(),
                    version: *version,
                    channel: channel.clone(),
                    subject: subject.clone(),
                    body: body.clone(),
                    placeholders,
                },
                None => {
                    let (subject, body) = default_template(kind).expect("a default per kind");
                    TemplateView {
                        kind: (*kind).to_owned(),
                        version: 0,
                        channel: Channel::Webhook.name().to_owned(),
                        subject: (*subject).to_owned(),
                        body: (*body).to_owned(),
                        placeholders,
                    }
                }
            }
        })
        .collect();
    Ok(Json(TemplatePage { templates }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    /// `webhook` (delivered to the organization's webhook) or `in_app` (read in the API).
    #[schema(pattern = "^(webhook|in_app)$")]
    channel: String,
    /// At most 200 characters, not blank, no control characters but line breaks;
    /// `{placeholders}` of the kind only.
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x09\x0b-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x09\x0b-\x1f\x7f-\x9f]*$"
    )]
    subject: String,
    /// At most 4,000 characters, not blank, no control characters but line breaks;
    /// `{placeholders}` of the kind only.
    #[schema(
        max_length = 4000,
        pattern = r"^[^\x00-\x09\x0b-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x09\x0b-\x1f\x7f-\x9f]*$"
    )]
    body: String,
}

/// `PUT /v1/notification-templates/{kind}`: a new version of a kind's template; notifications
/// made from now on are rendered with it.
#[utoipa::path(put, path = "/v1/notification-templates/{kind}", tag = "notifications", request_body = TemplateInput,
    params(("kind" = String, Path, description = "The kind of notification", pattern = "^(run_awaiting_approval|payslip_ready|payment_failed|payment_held|run_completed)$"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn set_template(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    command: Command,
) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    placeholders(&kind)?;
    let input: TemplateInput = command.json()?;
    let channel = match input.channel.as_str() {
        "webhook" => Channel::Webhook,
        "in_app" => Channel::InApp,
        other => return Err(AppError::bad_request("channel", format!("{other:?} is not webhook or in_app"))),
    };
    let organization_id = command.context.organization_id();
    let set = OrganizationCommand::SetNotificationTemplate { kind, channel, subject: input.subject, body: input.body };
    let done = state.ledger.execute::<OrganizationAggregate>(&command.context, organization_id, set).await?;
    Ok(written(StatusCode::OK, Entity::Organization, organization_id, done))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// Where notifications are POSTed: an http:// or https:// URL.
    #[schema(example = "https://payroll.example.com/hooks/ledger", pattern = r"^https?://[!-~]+$", max_length = 2000)]
    url: String,
}

/// The organization's webhook and the secret its deliveries are signed with.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub url: String,
    pub version: i32,
    /// Hex; each delivery carries `x-payroll-ledger-signature: sha256=<hex of
    /// HMAC-SHA256(secret, body)>`. Derived from the master key (rotating it changes this).
    pub signing_secret: String,
    /// The position of the event that configured it (on a change).
    pub position: Option<i64>,
}

/// `PUT /v1/organization/webhook`: where notifications of the webhook channel are
/// delivered from now on, with the secret that signs them.
#[utoipa::path(put, path = "/v1/organization/webhook", tag = "notifications", request_body = WebhookInput,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WebhookView), Problems))]
pub async fn set_webhook(State(state): State<AppState>, command: Command) -> AppResult<Json<WebhookView>> {
    command.require(Permission::Manage)?;
    let input: WebhookInput = command.json()?;
    let parsed = reqwest::Url::parse(&input.url).map_err(|error| AppError::bad_request("url", error))?;
    if !["http", "https"].contains(&parsed.scheme()) || parsed.host_str().is_none() {
        return Err(AppError::bad_request("url", "an http:// or https:// URL with a host"));
    }
    let organization_id = command.context.organization_id();
    let configure = OrganizationCommand::ConfigureWebhook { url: input.url };
    let done = state.ledger.execute::<OrganizationAggregate>(&command.context, organization_id, configure).await?;
    let organization = state.ledger.load::<OrganizationAggregate>(organization_id, organization_id).await?.state;
    let (url, version) = organization.and_then(|organization| organization.webhook).ok_or_else(|| {
        AppError::Conflict { code: "webhook_changed", detail: "the webhook was removed meanwhile".to_owned() }
    })?;
    Ok(Json(webhook_view(organization_id, url, version, Some(done.position))?))
}

fn webhook_view(organization_id: Uuid, url: String, version: u32, position: Option<i64>) -> AppResult<WebhookView> {
    let vault = ledger_store::vault::Vault::required()?;
    let signing_secret = crate::delivery::signing_secret(vault, organization_id, version);
    Ok(WebhookView { url, version: version as i32, signing_secret, position })
}

/// `GET /v1/organization/webhook`: the webhook in force and its signing secret (as the log
/// says, not a read table: the secret must match what the worker signs with).
#[utoipa::path(get, path = "/v1/organization/webhook", tag = "notifications",
    responses((status = 200, body = WebhookView), Problems))]
pub async fn show_webhook(State(state): State<AppState>, Auth(identity): Auth) -> AppResult<Json<WebhookView>> {
    identity.require(Permission::Manage)?;
    let organization_id = identity.organization_id;
    let organization = state.ledger.load::<OrganizationAggregate>(organization_id, organization_id).await?.state;
    let (url, version) = organization
        .and_then(|organization| organization.webhook)
        .ok_or_else(|| AppError::NotFound("no webhook configured: PUT /v1/organization/webhook".to_owned()))?;
    Ok(Json(webhook_view(organization_id, url, version, None)?))
}

/// `DELETE /v1/organization/webhook`: notifications made from now on are not delivered
/// (those pending are delivered to no one: they stay pending until a webhook is configured).
#[utoipa::path(delete, path = "/v1/organization/webhook", tag = "notifications",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn remove_webhook(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let organization_id = command.context.organization_id();
    let remove = OrganizationCommand::RemoveWebhook;
    let done = state.ledger.execute::<OrganizationAggregate>(&command.context, organization_id, remove).await?;
    Ok(written(StatusCode::OK, Entity::Organization, organization_id, done))
}

/// One attempt to deliver a notification.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AttemptView {
    pub attempt: i32,
    pub channel: String,
    pub webhook_version: i32,
    /// `delivered`, `retrying` or `failed` (the last attempt).
    pub status: String,
    pub error: Option<String>,
    pub attempted_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptPage {
    pub notification_id: Uuid,
    pub attempts: Vec<AttemptView>,
}

/// `GET /v1/notifications/{id}/deliveries`: every attempt to deliver a notification.
#[utoipa::path(get, path = "/v1/notifications/{id}/deliveries", tag = "notifications",
    params(("id" = uuid::Uuid, Path, description = "The notification's id (a UUID)"), Consistency),
    responses((status = 200, body = AttemptPage), Problems))]
pub async fn deliveries(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<AttemptPage>> {
    identity.require(Permission::Read)?;
    let notification_id = parse_id(&id, "notification id")?;
    consistency.wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    require_row(&mut read, NOTIFICATION_SQL, notification_id, || format!("no notification {notification_id}")).await?;
    let attempts: Vec<AttemptView> = sqlx::query_as(
        "select attempt, channel, webhook_version, status, error, attempted_at, next_attempt_at \
         from notification.delivery_attempts where notification_id = $1 order by attempt",
    )
    .bind(notification_id)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    Ok(Json(AttemptPage { notification_id, attempts }))
}
