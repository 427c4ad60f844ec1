//! For auditors and compliance teams: the event stream, verification, replay as of a point,
//! reports and the audit log.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use ledger_core::employee::EmployeeAggregate;
use ledger_core::payroll::PayrollRunAggregate;
use ledger_core::transaction::TransactionAggregate;
use ledger_core::wallet::WalletAggregate;
use ledger_projections::replay::{AsOf, account_balance_as_of, aggregate_as_of};
use ledger_store::{Checkpoint, EventQuery, EventStore, VerifyScope};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::schema::Problems;
use super::{AppState, Auth, Consistency, parse_id, views};
use crate::error::{AppError, AppResult};
use crate::keys::{Identity, Permission};
use ledger_app::Ledger;

/// The most events one page of `GET /v1/events` returns.
pub const EVENTS_PAGE_MAX: usize = 1_000;
/// Events per page while exporting NDJSON.
const EXPORT_PAGE: usize = 5_000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    stream_id: Option<Uuid>,
    /// `organization`, `employee`, `wallet`, `payroll_run` or `transaction`.
    stream_type: Option<String>,
    /// Comma-separated event types.
    event_type: Option<String>,
    /// Recorded at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Recorded at or before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// The cursor: the `next_cursor` of the page before, or `<transaction_id>-<global_position>`
    /// of the last event seen (every event carries both); a bare position names the event
    /// there. Pages follow the log's commit order and never skip an event that commits late.
    #[param(pattern = r"^([0-9]{1,18}-[0-9]{1,18}|[0-9]{1,18})$")]
    after: Option<String>,
    /// Positions up to this one.
    to_position: Option<i64>,
    /// Events per page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Payloads as stored, personal fields sealed (to recompute the hashes); by default
    /// they are opened (in clear, or `{"erased": ...}` once erased).
    as_stored: Option<bool>,
}

/// A cursor as the API writes it: the log checkpoint of the last event seen.
fn cursor_text(checkpoint: Checkpoint) -> String {
    format!("{}-{}", checkpoint.transaction_id, checkpoint.global_position)
}

/// The checkpoint `after` names: a cursor, or the event at a bare position (of the key's
/// organization).
async fn cursor(ledger: &Ledger, identity: &Identity, after: Option<&str>) -> AppResult<Checkpoint> {
    let Some(after) = after else { return Ok(Checkpoint::START) };
    let invalid =
        || AppError::bad_request("after", format!("{after:?} is not a cursor: pass a next_cursor, or a position"));
    if let Some((transaction_id, global_position)) = after.split_once('-') {
        let transaction_id = transaction_id.parse().map_err(|_| invalid())?;
        let global_position = global_position.parse().map_err(|_| invalid())?;
        return Ok(Checkpoint { transaction_id, global_position });
    }
    let position: i64 = after.parse().map_err(|_| invalid())?;
    if position <= 0 {
        return Ok(Checkpoint::START);
    }
    let at = EventQuery::at_position(position);
    let found = page(ledger, identity, &at).await?;
    found.first().map(|event| event.checkpoint()).ok_or_else(|| {
        AppError::bad_request(
            "after",
            format!("no event of this organization at position {position}: pass a next_cursor"),
        )
    })
}

/// A page's size from its `limit` (default 100), or a 400 naming it when out of 1 to `most`.
fn page_limit<T: Copy + Into<i128>>(limit: Option<T>, most: usize) -> AppResult<usize> {
    match limit.map(Into::into) {
        None => Ok(100.min(most)),
        Some(limit) if (1..=most as i128).contains(&limit) => Ok(limit as usize),
        Some(_) => Err(AppError::bad_request("limit", format!("must be 1 to {most}"))),
    }
}

impl EventFilter {
    fn page_limit(&self) -> AppResult<usize> {
        page_limit(self.limit.map(|limit| limit as u64), EVENTS_PAGE_MAX)
    }

    fn query(&self, identity: &Identity, after: Checkpoint, limit: usize) -> EventQuery {
        EventQuery {
            organization_id: Some(identity.organization_id),
            stream_id: self.stream_id,
            stream_type: self.stream_type.clone(),
            event_types: EventQuery::event_types_listed(self.event_type.as_deref()),
            recorded_from: self.from,
            recorded_to: self.to,
            position_after: None,
            log_after: Some(after),
            position_to: self.to_position,
            payload_contains: None,
            limit,
        }
    }
}

async fn page(ledger: &Ledger, identity: &Identity, query: &EventQuery) -> AppResult<Vec<ledger_store::RecordedEvent>> {
    let mut read = ledger.tenant_read(identity.organization_id).await?;
    let events = EventStore::query_events_in(&mut read, query).await?;
    read.commit().await?;
    Ok(events)
}

/// `events` with their personal fields opened (in clear, or shown erased), unless the caller
/// asked for them as stored.
async fn opened(
    ledger: &Ledger,
    mut events: Vec<ledger_store::RecordedEvent>,
    as_stored: Option<bool>,
) -> AppResult<Vec<ledger_store::RecordedEvent>> {
    if as_stored != Some(true) {
        ledger_store::vault::open(ledger.pool(), &ledger_codec::PERSONAL_DATA, &mut events).await?;
    }
    Ok(events)
}

/// An event as stored: its envelope, payload, metadata and hashes.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // The schema of `ledger_store::RecordedEvent`'s JSON, which is what is sent.
pub struct RecordedEventView {
    global_position: i64,
    transaction_id: u64,
    event_id: Uuid,
    organization_id: Uuid,
    stream_type: String,
    stream_id: Uuid,
    stream_version: u64,
    event_type: String,
    schema_version: i32,
    /// The event's fields (`docs/events.md`); amounts are decimal strings.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    /// Who acted: actor, role, correlation id, idempotency key.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    recorded_at: DateTime<Utc>,
    /// Hex; null for a stream's first event.
    prev_hash: Option<String>,
    /// Hex SHA-256 of the previous hash and the event's canonical form.
    hash: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<RecordedEventView>)]
    pub events: Vec<ledger_store::RecordedEvent>,
    /// Pass as `after` for the next page; null when this page is not full (the last for
    /// now: poll again from the last event's `<transaction_id>-<global_position>` to tail).
    pub next_cursor: Option<String>,
}

/// `GET /v1/events`: a page of the organization's events by position; `next_cursor` is the
/// `after` of the next page.
#[utoipa::path(get, path = "/v1/events", tag = "audit", params(EventFilter),
    responses((status = 200, body = EventPage), Problems))]
pub async fn events(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(filter): Query<EventFilter>,
) -> AppResult<Json<EventPage>> {
    identity.require(Permission::Audit)?;
    let limit = filter.page_limit()?;
    let after = cursor(&state.ledger, &identity, filter.after.as_deref()).await?;
    let events = page(&state.ledger, &identity, &filter.query(&identity, after, limit)).await?;
    let events = opened(&state.ledger, events, filter.as_stored).await?;
    let next_cursor =
        if events.len() == limit { events.last().map(|event| cursor_text(event.checkpoint())) } else { None };
    Ok(Json(EventPage { events, next_cursor }))
}

/// `GET /v1/events/export`: every matching event as NDJSON, streamed page by page.
#[utoipa::path(get, path = "/v1/events/export", tag = "audit", params(EventFilter),
    responses((status = 200, description = "One event (as in `GET /v1/events`) per line", content_type = "application/x-ndjson", body = String), Problems))]
pub async fn export(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(filter): Query<EventFilter>,
) -> AppResult<Response> {
    identity.require(Permission::Audit)?;
    // The export streams every page; a `limit` is refused as on `GET /v1/events` when out of
    // its range, not ignored silently.
    filter.page_limit()?;
    let after = cursor(&state.ledger, &identity, filter.after.as_deref()).await?;
    let query = filter.query(&identity, after, EXPORT_PAGE);
    // Fail before the first byte when the filter itself is wrong.
    let first = page(&state.ledger, &identity, &query).await?;
    let first = opened(&state.ledger, first, filter.as_stored).await?;
    let (ledger, as_stored) = (state.ledger.clone(), filter.as_stored);
    let pages = futures_util::stream::unfold(Some((first, query)), move |cursor| {
        let (ledger, identity) = (ledger.clone(), identity.clone());
        async move {
            let (events, mut query) = cursor?;
            if events.is_empty() {
                return None;
            }
            let mut lines = Vec::with_capacity(events.len() * 512);
            for event in &events {
                serde_json::to_writer(&mut lines, event).expect("events serialize");
                lines.push(b'\n');
            }
            let next = if events.len() == EXPORT_PAGE {
                query.log_after = events.last().map(|event| event.checkpoint());
                let next = match page(&ledger, &identity, &query).await {
                    Ok(events) => opened(&ledger, events, as_stored).await,
                    Err(error) => Err(error),
                };
                match next {
                    Ok(next) => Some((next, query)),
                    Err(error) => {
                        tracing::error!(%error, "export stopped");
                        return Some((Err(std::io::Error::other("export failed; see the server log")), None));
                    }
                }
            } else {
                None
            };
            Some((Ok::<Bytes, std::io::Error>(Bytes::from(lines)), next))
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(pages)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// One stream of the organization; all of them without it.
    stream_id: Option<Uuid>,
}

/// The first bad event of a stream.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // The schema of `ledger_store::ChainBreak`'s JSON.
pub struct ChainBreakView {
    stream_id: Uuid,
    stream_version: u64,
    global_position: i64,
    /// `hash_mismatch` (the event was changed), `prev_hash_mismatch` (a hash was rewritten) or
    /// `missing_version` (an event was removed; `expected_version` names it).
    kind: String,
    expected_version: Option<u64>,
}

#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // The schema of `ledger_store::VerifyReport`'s JSON.
pub struct VerifyReportView {
    streams_checked: u64,
    events_checked: u64,
    /// The first break of each broken stream.
    breaks: Vec<ChainBreakView>,
}

/// What recomputing the hash chains found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyView {
    pub intact: bool,
    #[schema(value_type = Option<ChainBreakView>)]
    pub first_break: Option<ledger_store::ChainBreak>,
    #[schema(value_type = VerifyReportView)]
    pub report: ledger_store::VerifyReport,
}

/// `GET /v1/verify[?stream_id=]`: recomputes the hash chains of the organization (or one of
/// its streams) and names the first event that does not match.
#[utoipa::path(get, path = "/v1/verify", tag = "audit", params(VerifyQuery),
    responses((status = 200, body = VerifyView), Problems))]
pub async fn verify(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<VerifyQuery>,
) -> AppResult<Json<VerifyView>> {
    identity.require(Permission::Audit)?;
    let scope = match query.stream_id {
        Some(stream_id) => {
            let owned = page(
                &state.ledger,
                &identity,
                &EventQuery { stream_id: Some(stream_id), limit: 1, ..EventQuery::default() },
            )
            .await?;
            if owned.is_empty() {
                return Err(AppError::NotFound(format!("no stream {stream_id} in this organization")));
            }
            VerifyScope::Stream(stream_id)
        }
        None => VerifyScope::Organization(identity.organization_id),
    };
    let report = state.ledger.store().verify(scope, &mut |_| {}).await?;
    Ok(Json(VerifyView { intact: report.is_intact(), first_break: report.first_break().cloned(), report }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AsOfQuery {
    /// As recorded at this time (RFC 3339); not with `as_of_position`.
    as_of_time: Option<DateTime<Utc>>,
    /// As of this position; not with `as_of_time`. Neither: now.
    as_of_position: Option<i64>,
}

/// An entity as it was at a point, from the events alone.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayView {
    pub kind: String,
    /// `{"position": n}` or `{"time": "..."}`.
    #[schema(value_type = Object)]
    pub as_of: AsOf,
    /// The entity's state then; amounts are decimal strings.
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
}

fn as_of(query: &AsOfQuery) -> AppResult<AsOf> {
    match (query.as_of_time, query.as_of_position) {
        (Some(time), None) => Ok(AsOf::Time(time)),
        (None, Some(position)) => Ok(AsOf::Position(position)),
        (None, None) => Ok(AsOf::Position(i64::MAX)),
        (Some(_), Some(_)) => Err(AppError::bad_request("as_of_time", "give as_of_time or as_of_position, not both")),
    }
}

/// `GET /v1/replay/{kind}/{id}?as_of_time=|as_of_position=`: an entity as it was then,
/// from the events alone. Kinds: employee, wallet, payroll_run, transaction, account.
#[utoipa::path(get, path = "/v1/replay/{kind}/{id}", tag = "audit",
    params(("kind" = String, Path, description = "`employee`, `wallet`, `payroll_run`, `transaction` or `account`",
        pattern = "^(employee|wallet|payroll_run|transaction|account)$"),
        ("id" = String, Path, description = "The entity's id (a UUID), or an account name (`wallet:<id>`, `funding:<organization>`)"),
        AsOfQuery),
    responses((status = 200, body = ReplayView), Problems))]
pub async fn replay(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path((kind, id)): Path<(String, String)>,
    Query(query): Query<AsOfQuery>,
) -> AppResult<Json<ReplayView>> {
    identity.require(Permission::Audit)?;
    let point = as_of(&query)?;
    let store = state.ledger.store();
    let organization = identity.organization_id;
    let missing = || AppError::NotFound(format!("no {kind} {id} as of {point:?}"));
    let state_json = match kind.as_str() {
        "employee" => {
            let employee = aggregate_as_of::<EmployeeAggregate>(store, parse_id(&id, "id")?, point).await?;
            employee
                .filter(|employee| employee.organization_id.as_uuid() == organization)
                .map(|employee| views::employee(&employee))
        }
        "wallet" => {
            let wallet = aggregate_as_of::<WalletAggregate>(store, parse_id(&id, "id")?, point).await?;
            wallet
                .filter(|wallet| wallet.organization_id.as_uuid() == organization)
                .map(|wallet| views::wallet(&wallet))
        }
        "payroll_run" => {
            let run = aggregate_as_of::<PayrollRunAggregate>(store, parse_id(&id, "id")?, point).await?;
            run.filter(|run| run.organization_id.as_uuid() == organization).map(|run| views::payroll_run(&run))
        }
        "transaction" => {
            let transaction = aggregate_as_of::<TransactionAggregate>(store, parse_id(&id, "id")?, point).await?;
            transaction
                .filter(|transaction| transaction.organization_id.as_uuid() == organization)
                .map(|transaction| views::transaction(&transaction))
        }
        "account" => {
            check_account(&state.ledger, &identity, &id).await?;
            Some(serde_json::json!({ "account": id, "balances": account_balance_as_of(store, &id, point).await? }))
        }
        other => {
            return Err(AppError::bad_request(
                "kind",
                format!("{other:?} is not employee, wallet, payroll_run, transaction or account"),
            ));
        }
    };
    let state_json = state_json.ok_or_else(missing)?;
    Ok(Json(ReplayView { kind, as_of: point, state: state_json }))
}

/// An account is the organization's when it names the organization or one of its wallets.
async fn check_account(ledger: &Ledger, identity: &Identity, account: &str) -> AppResult<()> {
    let organization = identity.organization_id.to_string();
    let owned = match account.split_once(':') {
        Some(("funding", owner)) => owner == organization,
        Some(("liability", rest)) => rest.split(':').next() == Some(organization.as_str()),
        Some(("wallet", wallet)) => {
            let wallet: Uuid = parse_id(wallet, "account")?;
            !page(ledger, identity, &EventQuery { stream_id: Some(wallet), limit: 1, ..EventQuery::default() })
                .await?
                .is_empty()
        }
        _ => false,
    };
    if !owned {
        return Err(AppError::NotFound(format!(
            "no account {account:?} in this organization (funding:<org>, liability:<org>:<name>, wallet:<id>)"
        )));
    }
    Ok(())
}

/// A report of a completed run.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ComplianceReportView {
    pub payroll_run_id: Uuid,
    /// `payroll_register` or `journal`.
    pub kind: String,
    pub organization_id: Uuid,
    /// The register's lines or the journal's postings by account; amounts are decimal
    /// strings.
    #[schema(value_type = Object)]
    pub content: sqlx::types::Json<serde_json::Value>,
    pub generated_at: DateTime<Utc>,
    pub last_position: i64,
    /// The run's currency: the register's amounts are in it (the journal's accounts name
    /// theirs). Null while the payroll projection has not seen the run.
    pub currency: Option<String>,
}

async fn report(
    state: &AppState,
    identity: &Identity,
    id: &str,
    kind: &str,
    consistency: Consistency,
) -> AppResult<Json<ComplianceReportView>> {
    identity.require(Permission::Audit)?;
    let run_id = parse_id(id, "payroll run id")?;
    consistency.wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let row: Option<ComplianceReportView> = sqlx::query_as(
        "select r.*, p.currency from compliance.compliance_reports r \
             left join payroll.payroll_runs p using (payroll_run_id) where r.payroll_run_id = $1 and r.kind = $2",
    )
    .bind(run_id)
    .bind(kind)
    .fetch_optional(&mut *read)
    .await?;
    read.commit().await?;
    row.map(Json).ok_or_else(|| {
        AppError::NotFound(format!("no {kind} for payroll run {run_id} (it is written when the run completes)"))
    })
}

/// `GET /v1/payroll-runs/{id}/register`: the payroll register, written when the run completes.
#[utoipa::path(get, path = "/v1/payroll-runs/{id}/register", tag = "audit", params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"), Consistency),
    responses((status = 200, body = ComplianceReportView), Problems))]
pub async fn register(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<ComplianceReportView>> {
    report(&state, &identity, &id, "payroll_register", consistency).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JournalQuery {
    /// `json` (default): the run's postings by ledger account; `csv`: the journal for the
    /// organization's general ledger, on its chart of accounts.
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
    #[param(minimum = 0)]
    pub wait_for_position: Option<i64>,
    #[param(maximum = 30000)]
    pub wait_timeout_ms: Option<u32>,
}

/// `GET /v1/payroll-runs/{id}/journal`: the run's postings by account, with its balance
/// check; with `format=csv`, a balanced journal a general ledger imports (date, account
/// code, description, debit, credit, currency, run, reference): per payment an accrual on
/// the pay date (wages and contributions expense against net pay and liabilities) and the
/// payment from funding as recorded; a reversal swaps both. 422 `unmapped_account` names an
/// account without a code (`PUT /v1/organization/gl-accounts`).
#[utoipa::path(get, path = "/v1/payroll-runs/{id}/journal", tag = "audit", params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"), JournalQuery),
    responses((status = 200, description = "The journal; CSV with `format=csv`",
        content((ComplianceReportView = "application/json"), (String = "text/csv"))), Problems))]
pub async fn journal(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(query): Query<JournalQuery>,
) -> AppResult<Response> {
    let consistency =
        Consistency { wait_for_position: query.wait_for_position, wait_timeout_ms: query.wait_timeout_ms };
    match query.format.as_deref() {
        None | Some("json") => Ok(report(&state, &identity, &id, "journal", consistency).await?.into_response()),
        Some("csv") => {
            // The report exists once the run completed: the same 404 before, as for JSON.
            let run_id = parse_id(&id, "payroll run id")?;
            // The journal exists once the run completed: 404 before, as for JSON.
            let _report = report(&state, &identity, &id, "journal", consistency).await?;
            let csv = super::journal::csv(&state, &identity, run_id).await?;
            let filename = format!("attachment; filename=\"journal-{run_id}.csv\"");
            Ok((
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, filename)],
                csv,
            )
                .into_response())
        }
        Some(other) => Err(AppError::bad_request("format", format!("{other:?} is not json or csv"))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Who acted: the holder of the API key (`person:<name>`, `service:<name>`), or a system
    /// component (`cli:<user>`, `demo:processor`).
    actor: Option<String>,
    /// The stream acted on.
    resource_id: Option<Uuid>,
    /// The event type.
    action: Option<String>,
    /// Recorded at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Recorded at or before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// The cursor: the `next_cursor` of the page before, or `<transaction_id>-<global_position>`
    /// of the last row seen; a bare position names the event there. Pages follow the order
    /// rows appear in and never skip one that appears late.
    #[param(pattern = r"^([0-9]{1,18}-[0-9]{1,18}|[0-9]{1,18})$")]
    after: Option<String>,
    /// Rows per page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Wait until every projection has applied the event at this position.
    #[param(minimum = 0)]
    wait_for_position: Option<i64>,
}

/// A page of the audit log (the bench measures this statement too): filters `$1` actor, `$2`
/// resource id, `$3` action, `$4`/`$5` time; after the cursor `($6, $7)`; organization `$8`;
/// limit `$9`.
pub const AUDIT_PAGE_SQL: &str = "select * from compliance.audit_logs a \
     where organization_id = $8 and (transaction_id, global_position) > ($6, $7) \
       and ($1::text is null or actor = $1) and ($2::uuid is null or resource_id = $2) and ($3::text is null or action = $3) \
       and ($4::timestamptz is null or recorded_at >= $4) and ($5::timestamptz is null or recorded_at <= $5) \
     order by transaction_id, global_position limit $9";

/// Who did what: one row per event.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditLogView {
    pub global_position: i64,
    /// With `global_position`, the row's cursor: `<transaction_id>-<global_position>`.
    pub transaction_id: i64,
    pub organization_id: Uuid,
    pub actor: String,
    pub role: Option<String>,
    /// The event type.
    pub action: String,
    /// The stream type.
    pub resource: String,
    pub resource_id: Uuid,
    pub stream_version: i64,
    pub correlation_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    pub recorded_at: DateTime<Utc>,
    pub last_position: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditLogPage {
    pub audit_logs: Vec<AuditLogView>,
    /// Pass as `after` for the next page; null when this page is not full (the last for
    /// now: poll again from the last row's cursor to tail).
    pub next_cursor: Option<String>,
}

/// `GET /v1/audit-logs`: who did what, by position.
#[utoipa::path(get, path = "/v1/audit-logs", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditLogPage), Problems))]
pub async fn audit_logs(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<AuditQuery>,
) -> AppResult<Json<AuditLogPage>> {
    identity.require(Permission::Audit)?;
    Consistency { wait_for_position: query.wait_for_position, wait_timeout_ms: None }.wait(&state.ledger).await?;
    let limit = page_limit(query.limit, super::employees::PAGE_ROWS_MAX as usize)? as i64;
    let after = cursor(&state.ledger, &identity, query.after.as_deref()).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    // In the order the compliance projection applies events, which is the log's: a row that
    // appears late (its transaction committed after a later position's) is after the cursor
    // of any row seen before it.
    let rows: Vec<AuditLogView> = sqlx::query_as(AUDIT_PAGE_SQL)
        .bind(&query.actor)
        .bind(query.resource_id)
        .bind(&query.action)
        .bind(query.from)
        .bind(query.to)
        .bind(i64::try_from(after.transaction_id).map_err(|_| AppError::bad_request("after", "is not a cursor"))?)
        .bind(after.global_position)
        .bind(identity.organization_id)
        .bind(limit)
        .fetch_all(&mut *read)
        .await?;
    read.commit().await?;
    let next_cursor = if rows.len() as i64 == limit {
        rows.last().map(|row| format!("{}-{}", row.transaction_id, row.global_position))
    } else {
        None
    };
    Ok(Json(AuditLogPage { audit_logs: rows, next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `payroll_register` or `journal`.
    #[param(pattern = "^(payroll_register|journal)$")]
    kind: Option<String>,
    /// One run's reports.
    payroll_run_id: Option<Uuid>,
    /// Generated at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Generated at or before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// The cursor: the `next_cursor` of the page before.
    #[param(
        pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-][01][0-9]:[0-5][0-9])~[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}~(payroll_register|journal)$"
    )]
    after: Option<String>,
    /// Rows per page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Wait until every projection has applied the event at this position.
    #[param(minimum = 0)]
    wait_for_position: Option<i64>,
    /// How long to wait, in milliseconds (default 5,000; at most 30,000).
    #[param(maximum = 30000)]
    wait_timeout_ms: Option<u32>,
}

/// A generated report of a run (its content: `GET /v1/payroll-runs/{id}/register` or
/// `/journal`).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReportListing {
    pub payroll_run_id: Uuid,
    /// `payroll_register` or `journal`.
    pub kind: String,
    /// `generated`: written by the compliance projection when the run completed (again after
    /// a later completion: released or refused items paid).
    pub status: String,
    /// The run's status now (`completed`, `partially_failed`, `reversed`, ...); null while
    /// the payroll projection has not seen the run.
    pub run_status: Option<String>,
    pub period_start: Option<NaiveDate>,
    pub period_end: Option<NaiveDate>,
    pub currency: Option<String>,
    pub generated_at: DateTime<Utc>,
    pub last_position: i64,
    /// Where its content is.
    pub href: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportPage {
    pub reports: Vec<ReportListing>,
    /// Pass as `after` for the next page; null after the last.
    pub next_cursor: Option<String>,
}

/// The reports of the key's organization by time generated, then run and kind: filters `$1`
/// kind, `$2` run, `$3`/`$4` time; after the cursor `($5, $6, $7)`; limit `$8`.
const REPORTS_PAGE_SQL: &str = "select r.payroll_run_id, r.kind, 'generated' as status, p.status as run_status, \
       p.period_start, p.period_end, p.currency, r.generated_at, r.last_position, \
       format('/v1/payroll-runs/%s/%s', r.payroll_run_id, case r.kind when 'journal' then 'journal' else 'register' end) as href \
     from compliance.compliance_reports r left join payroll.payroll_runs p on p.payroll_run_id = r.payroll_run_id \
     where ($1::text is null or r.kind = $1) and ($2::uuid is null or r.payroll_run_id = $2) \
       and ($3::timestamptz is null or r.generated_at >= $3) and ($4::timestamptz is null or r.generated_at <= $4) \
       and ($5::timestamptz is null or (r.generated_at, r.payroll_run_id, r.kind) > ($5, $6, $7)) \
     order by r.generated_at, r.payroll_run_id, r.kind limit $8";

/// `GET /v1/compliance/reports`: the reports generated for the organization's runs (payroll
/// registers and journals), with kind, status and time.
#[utoipa::path(get, path = "/v1/compliance/reports", tag = "audit", params(ReportQuery),
    responses((status = 200, body = ReportPage), Problems))]
pub async fn reports(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<ReportQuery>,
) -> AppResult<Json<ReportPage>> {
    identity.require(Permission::Audit)?;
    Consistency { wait_for_position: query.wait_for_position, wait_timeout_ms: query.wait_timeout_ms }
        .wait(&state.ledger)
        .await?;
    if let Some(kind) = &query.kind
        && !["payroll_register", "journal"].contains(&kind.as_str())
    {
        return Err(AppError::bad_request("kind", format!("{kind:?} is not payroll_register or journal")));
    }
    let limit = page_limit(query.limit, super::employees::PAGE_ROWS_MAX as usize)? as i64;
    let after = match query.after.as_deref() {
        None => None,
        Some(text) => Some(report_cursor(text).ok_or_else(|| {
            AppError::bad_request("after", format!("{text:?} is not a cursor: pass the next_cursor of the page before"))
        })?),
    };
    let (after_time, after_run, after_kind) = match after {
        Some((time, run, kind)) => (Some(time), Some(run), Some(kind)),
        None => (None, None, None),
    };
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let rows: Vec<ReportListing> = sqlx::query_as(REPORTS_PAGE_SQL)
        .bind(&query.kind)
        .bind(query.payroll_run_id)
        .bind(query.from)
        .bind(query.to)
        .bind(after_time)
        .bind(after_run)
        .bind(after_kind)
        .bind(limit)
        .fetch_all(&mut *read)
        .await?;
    read.commit().await?;
    let next_cursor = if rows.len() as i64 == limit {
        rows.last().map(|row| {
            format!(
                "{}~{}~{}",
                row.generated_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                row.payroll_run_id,
                row.kind
            )
        })
    } else {
        None
    };
    Ok(Json(ReportPage { reports: rows, next_cursor }))
}

/// A reports cursor: `<generated_at>~<run id>~<kind>`.
fn report_cursor(text: &str) -> Option<(DateTime<Utc>, Uuid, String)> {
    let mut parts = text.splitn(3, '~');
    let time = DateTime::parse_from_rfc3339(parts.next()?).ok()?.with_timezone(&Utc);
    let run = parts.next()?.parse().ok()?;
    let kind = parts.next()?.to_owned();
    Some((time, run, kind))
}
