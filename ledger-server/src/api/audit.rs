//! For auditors and compliance teams: the event stream, verification, replay as of a point,
//! reports and the audit log.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ledger_core::employee::EmployeeAggregate;
use ledger_core::payroll::PayrollRunAggregate;
use ledger_core::transaction::TransactionAggregate;
use ledger_core::wallet::WalletAggregate;
use ledger_projections::replay::{AsOf, account_balance_as_of, aggregate_as_of};
use ledger_store::{EventQuery, EventStore, VerifyScope};
use serde::Deserialize;
use uuid::Uuid;

use super::{AppState, Auth, Consistency, parse_id, views};
use crate::error::{AppError, AppResult};
use crate::keys::{Identity, Permission};
use ledger_app::Ledger;

/// The most events one page of `GET /v1/events` returns.
pub const EVENTS_PAGE_MAX: usize = 1_000;
/// Events per page while exporting NDJSON.
const EXPORT_PAGE: usize = 5_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    stream_id: Option<Uuid>,
    stream_type: Option<String>,
    /// Comma-separated event types.
    event_type: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// Cursor: positions after this one.
    after: Option<i64>,
    to_position: Option<i64>,
    limit: Option<usize>,
}

impl EventFilter {
    fn query(&self, identity: &Identity, limit: usize) -> EventQuery {
        EventQuery {
            organization_id: Some(identity.organization_id),
            stream_id: self.stream_id,
            stream_type: self.stream_type.clone(),
            event_types: self
                .event_type
                .iter()
                .flat_map(|types| types.split(','))
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
                .collect(),
            recorded_from: self.from,
            recorded_to: self.to,
            position_after: self.after,
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

/// `GET /v1/events`: a page of the organization's events by position; `next_cursor` is the
/// `after` of the next page.
pub async fn events(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(filter): Query<EventFilter>,
) -> AppResult<Json<serde_json::Value>> {
    identity.require(Permission::Audit)?;
    let limit = filter.limit.unwrap_or(100);
    if limit == 0 || limit > EVENTS_PAGE_MAX {
        return Err(AppError::bad_request("limit", format!("must be 1 to {EVENTS_PAGE_MAX}")));
    }
    let events = page(&state.ledger, &identity, &filter.query(&identity, limit)).await?;
    let next_cursor = if events.len() == limit { events.last().map(|event| event.global_position) } else { None };
    Ok(Json(serde_json::json!({ "events": events, "next_cursor": next_cursor })))
}

/// `GET /v1/events/export`: every matching event as NDJSON, streamed page by page.
pub async fn export(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(filter): Query<EventFilter>,
) -> AppResult<Response> {
    identity.require(Permission::Audit)?;
    let query = filter.query(&identity, EXPORT_PAGE);
    // Fail before the first byte when the filter itself is wrong.
    let first = page(&state.ledger, &identity, &query).await?;
    let ledger = state.ledger.clone();
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
                query.position_after = events.last().map(|event| event.global_position);
                match page(&ledger, &identity, &query).await {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    stream_id: Option<Uuid>,
}

/// `GET /v1/verify[?stream_id=]`: recomputes the hash chains of the organization (or one of
/// its streams) and names the first event that does not match.
pub async fn verify(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<VerifyQuery>,
) -> AppResult<Json<serde_json::Value>> {
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
    Ok(Json(serde_json::json!({ "intact": report.is_intact(), "first_break": report.first_break(), "report": report })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    as_of_time: Option<DateTime<Utc>>,
    as_of_position: Option<i64>,
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
pub async fn replay(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path((kind, id)): Path<(String, String)>,
    Query(query): Query<AsOfQuery>,
) -> AppResult<Json<serde_json::Value>> {
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
    Ok(Json(serde_json::json!({ "kind": kind, "as_of": point, "state": state_json })))
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

async fn report(
    state: &AppState,
    identity: &Identity,
    id: &str,
    kind: &str,
    consistency: Consistency,
) -> AppResult<Json<serde_json::Value>> {
    identity.require(Permission::Audit)?;
    let run_id = parse_id(id, "payroll run id")?;
    consistency.wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let row: Option<serde_json::Value> = sqlx::query_scalar(
        "select to_jsonb(r) from compliance.compliance_reports r where payroll_run_id = $1 and kind = $2",
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
pub async fn register(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<serde_json::Value>> {
    report(&state, &identity, &id, "payroll_register", consistency).await
}

/// `GET /v1/payroll-runs/{id}/journal`: the run's postings by account, with its balance check.
pub async fn journal(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<serde_json::Value>> {
    report(&state, &identity, &id, "journal", consistency).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    resource_id: Option<Uuid>,
    action: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    after: Option<i64>,
    limit: Option<i64>,
    wait_for_position: Option<i64>,
}

/// `GET /v1/audit-logs`: who did what, by position.
pub async fn audit_logs(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<AuditQuery>,
) -> AppResult<Json<serde_json::Value>> {
    identity.require(Permission::Audit)?;
    Consistency { wait_for_position: query.wait_for_position, wait_timeout_ms: None }.wait(&state.ledger).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, super::employees::PAGE_ROWS_MAX);
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(
        "select to_jsonb(a) from compliance.audit_logs a \
         where ($1::text is null or actor = $1) and ($2::uuid is null or resource_id = $2) and ($3::text is null or action = $3) \
           and ($4::timestamptz is null or recorded_at >= $4) and ($5::timestamptz is null or recorded_at <= $5) \
           and global_position > coalesce($6, 0) \
         order by global_position limit $7",
    )
    .bind(&query.actor)
    .bind(query.resource_id)
    .bind(&query.action)
    .bind(query.from)
    .bind(query.to)
    .bind(query.after)
    .bind(limit)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    let next =
        if rows.len() as i64 == limit { rows.last().and_then(|row| row.get("global_position").cloned()) } else { None };
    Ok(Json(serde_json::json!({ "audit_logs": rows, "next_cursor": next })))
}
