//! The HTTP API (axum, JSON). Commands for processors, reads of the projected tables,
//! the event stream for auditors. See `docs/api.md` and `docs/openapi.json`.

pub mod audit;
pub mod employees;
pub mod extract;
pub mod journal;
pub mod notifications;
pub mod openapi;
mod organization;
mod payroll;
pub mod payslips;
pub mod privacy;
mod schedules;
pub mod schema;
mod system;
pub mod telemetry;
pub mod transparency;
pub mod views;
mod wallets;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ledger_core::money::{Currency, Money};
use ledger_core::organization::OrganizationAggregate;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::keys::{Identity, Permission, authenticate};
use ledger_app::{Context, Idempotency, Ledger, Written};
use ledger_core::event::Aggregate;

/// The largest request body accepted.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// The longest an idempotency key may be.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 200;

#[derive(Debug, Clone)]
pub struct AppState {
    pub ledger: Ledger,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The projector runners of this process (none when they run elsewhere).
    pub runners: Arc<Vec<Arc<ledger_projections::RunnerHealth>>>,
    /// See `ServerOptions::stall_after`.
    pub stall_after: std::time::Duration,
    /// See `ServerOptions::checkpoint_key`.
    pub checkpoint_key: Option<Arc<ledger_store::signing::LogKey>>,
    /// Whether this server's checkpoint signing works (with a key).
    pub signing: Option<Arc<crate::transparency::SigningHealth>>,
}

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/organization", post(organization::register).get(organization::show))
        .route("/organization/settings", post(organization::change_settings))
        .route("/organization/rules/{rule_id}", put(organization::configure_rule).delete(organization::remove_rule))
        .route("/organization/currencies", post(organization::define_currency))
        .route("/employees", post(employees::hire).get(employees::list))
        .route("/employees/{id}", get(employees::show))
        .route("/employees/{id}/history", get(employees::history))
        .route("/employees/{id}/pay-rate", post(employees::change_pay_rate))
        .route("/employees/{id}/position", post(employees::change_position))
        .route("/employees/{id}/kyc", post(employees::change_kyc))
        .route("/employees/{id}/terminate", post(employees::terminate))
        .route("/employees/{id}/rehire", post(employees::rehire))
        .route("/employees/{id}/erase", post(privacy::erase))
        .route("/employees/{id}/personal-data", get(privacy::personal_data))
        .route("/organization/retention", put(privacy::set_retention))
        .route("/organization/tax-year", put(organization::set_tax_year))
        .route("/organization/gl-accounts", put(organization::map_gl_accounts))
        .route(
            "/organization/webhook",
            put(notifications::set_webhook).get(notifications::show_webhook).delete(notifications::remove_webhook),
        )
        .route("/notifications", get(notifications::list))
        .route("/notifications/{id}/read", post(notifications::read))
        .route("/notifications/{id}/deliveries", get(notifications::deliveries))
        .route("/notification-templates", get(notifications::templates))
        .route("/notification-templates/{kind}", put(notifications::set_template))
        .route("/compliance/erasure-due", get(privacy::erasure_due))
        .route("/compliance/reports", get(audit::reports))
        .route("/wallets", post(wallets::open).get(wallets::list))
        .route("/wallets/{id}", get(wallets::show))
        .route("/wallets/{id}/statement", get(wallets::statement))
        .route("/wallets/{id}/withdrawals", post(wallets::withdraw))
        .route("/pay-schedules", post(schedules::create).get(schedules::list))
        .route("/pay-schedules/{id}", get(schedules::show))
        .route("/pay-schedules/{id}/periods", get(schedules::periods))
        .route("/payroll-runs", post(payroll::create).get(payroll::list))
        .route("/payroll-runs/{id}", get(payroll::show))
        .route("/payroll-runs/{id}/items", get(payroll::items))
        .route("/payroll-runs/{id}/items/{employee_id}/release", post(payroll::release))
        .route("/payroll-runs/{id}/items/{employee_id}/payslip", get(payslips::show))
        .route("/employees/{id}/payslips", get(payslips::list))
        .route("/employees/{id}/year-to-date", get(payslips::year_to_date))
        .route("/payroll-runs/{id}/lines", post(payroll::add_lines))
        .route("/payroll-runs/{id}/preview", post(payroll::preview))
        .route("/payroll-runs/{id}/calculate", post(payroll::calculate))
        .route("/payroll-runs/{id}/approve", post(payroll::approve))
        .route("/payroll-runs/{id}/process", post(payroll::process))
        .route("/payroll-runs/{id}/void", post(payroll::void))
        .route("/payroll-runs/{id}/reverse", post(payroll::reverse))
        .route("/payroll-runs/{id}/register", get(audit::register))
        .route("/payroll-runs/{id}/journal", get(audit::journal))
        .route("/transactions/{id}", get(wallets::transaction))
        .route("/transactions/settlements", post(wallets::settle_many))
        .route("/transactions/{id}/settle", post(wallets::settle))
        .route("/transactions/{id}/fail", post(wallets::fail))
        .route("/audit-logs", get(audit::audit_logs))
        .route("/events", get(audit::events))
        .route("/events/export", get(audit::export))
        .route("/verify", get(audit::verify))
        .route("/checkpoints/latest", get(transparency::latest_checkpoint))
        .route("/checkpoints/public-key", get(transparency::public_key))
        .route("/proofs/inclusion", get(transparency::inclusion))
        .route("/proofs/consistency", get(transparency::consistency))
        .route("/payroll-runs/{id}/evidence", get(transparency::run_evidence))
        .route("/replay/{kind}/{id}", get(audit::replay));
    let router = Router::new()
        .nest("/v1", v1)
        .route("/health", get(system::health))
        .route("/ready", get(system::ready))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .fallback(system::not_found)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX));
    telemetry::layers(router, state.metrics.clone()).with_state(state)
}

fn bearer(headers: &HeaderMap) -> AppResult<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| AppError::Unauthorized("missing `Authorization: Bearer <API key>` header".to_owned()))?;
    let value =
        value.to_str().map_err(|_| AppError::Unauthorized("the Authorization header is not text".to_owned()))?;
    value
        .strip_prefix("Bearer ")
        .ok_or_else(|| AppError::Unauthorized("the Authorization header must be `Bearer <API key>`".to_owned()))
}

/// The API key of a read request.
#[derive(Debug, Clone)]
pub struct Auth(pub Identity);

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        let token = bearer(&parts.headers)?;
        let identity = authenticate(state.ledger.pool(), token).await?;
        telemetry::record_actor(&identity.actor());
        Ok(Auth(identity))
    }
}

/// A command: who sends it, its idempotency key bound to a fingerprint of the request, and
/// its JSON body.
#[derive(Debug)]
pub struct Command {
    /// The key that sent it: what it may do.
    pub identity: crate::keys::Identity,
    pub context: Context,
    body: Bytes,
}

impl FromRequest<AppState> for Command {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> AppResult<Self> {
        Command::extract(request, state, Permission::Write).await
    }
}

/// A command on a person's data (erasure): sent by a key that may handle personal data
/// (admin or compliance), which need not run other commands.
#[derive(Debug)]
pub struct PersonalDataCommand(pub Command);

impl FromRequest<AppState> for PersonalDataCommand {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> AppResult<Self> {
        Command::extract(request, state, Permission::PersonalData).await.map(PersonalDataCommand)
    }
}

impl Command {
    async fn extract(request: Request, state: &AppState, permission: Permission) -> AppResult<Command> {
        let (mut parts, body) = request.into_parts();
        let Auth(identity) = Auth::from_request_parts(&mut parts, state).await?;
        identity.require(permission)?;
        let body = Bytes::from_request(Request::from_parts(parts.clone(), body), state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::TooLarge(format!("the request body is larger than {BODY_BYTES_MAX} bytes"))
            } else {
                AppError::bad_request("body", rejection.body_text())
            }
        })?;
        let idempotency = match parts.headers.get("idempotency-key") {
            None => None,
            Some(value) => {
                let key = value
                    .to_str()
                    .ok()
                    // Visible ASCII and spaces, as the document says (a tab is a header's too).
                    .filter(|key| {
                        !key.is_empty()
                            && key.len() <= IDEMPOTENCY_KEY_BYTES_MAX
                            && key.bytes().all(|byte| (b' '..=b'~').contains(&byte))
                    })
                    .ok_or_else(|| {
                        AppError::bad_request(
                            "Idempotency-Key",
                            format!("must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible characters"),
                        )
                    })?;
                let mut fingerprint = Sha256::new();
                for part in [
                    parts.method.as_str().as_bytes(),
                    parts.uri.path().as_bytes(),
                    &body[..],
                    identity.actor().as_bytes(),
                ] {
                    fingerprint.update((part.len() as u64).to_be_bytes());
                    fingerprint.update(part);
                }
                // Keys are per organization: two tenants may pick the same one.
                Some(Idempotency {
                    key: format!("{}:{key}", identity.organization_id),
                    fingerprint: fingerprint.finalize().to_vec(),
                })
            }
        };
        let correlation_id = parts
            .headers
            .get("x-correlation-id")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(Uuid::new_v4);
        let context = identity.context(correlation_id, idempotency);
        Ok(Command { identity, context, body })
    }

    /// The body as `T`; malformed JSON, a missing field or a string with a NUL character
    /// (which PostgreSQL cannot store) is a 400 naming it.
    pub fn json<T: DeserializeOwned>(&self) -> AppResult<T> {
        let body: &[u8] = if self.body.is_empty() { b"{}" } else { &self.body };
        // A NUL can only be written `\u0000` in JSON: only then is the body searched for it.
        if body.windows(6).any(|window| window == b"\\u0000")
            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
            && let Some(field) = extract::nul_in(&value, "")
        {
            let field = if field.is_empty() { "body".to_owned() } else { field };
            return Err(AppError::bad_request(
                &field,
                "contains a NUL character (\\u0000), which the ledger cannot store",
            ));
        }
        // The error names the field at fault (`accounts.funding: invalid type ...`).
        let malformed = |detail: String| AppError::BadRequest { code: "malformed_body", detail };
        let described = |error: serde_path_to_error::Error<serde_json::Error>| {
            let path = error.path().to_string();
            malformed(if path == "." {
                format!("request body: {}", error.inner())
            } else {
                format!("request body: {path}: {}", error.inner())
            })
        };
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(value) => {
                deserializer.end().map_err(|error| malformed(format!("request body: {error}")))?;
                Ok(value)
            }
            // JSON has one kind of number: `7.0` is the integer 7 (as JSON Schema reads the
            // document), which serde refuses for an integer field. Read once more with such
            // numbers written as integers; a body that still fails is answered with the first
            // error, about what the client sent.
            Err(error) if error.inner().to_string().starts_with("invalid type: floating point") => {
                let retried = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|mut value| {
                    extract::integral_floats_as_integers(&mut value)
                        .then(|| serde_path_to_error::deserialize(value).ok())
                        .flatten()
                });
                retried.ok_or_else(|| described(error))
            }
            Err(error) => Err(described(error)),
        }
    }

    pub fn require(&self, permission: Permission) -> AppResult<()> {
        self.identity.require(permission)
    }
}

/// An amount as the API takes it: a decimal string (no more decimals than the currency
/// has) and a currency code.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyInput {
    /// A canonical decimal string: at most 15 digits before the point, no more decimals
    /// than the currency has.
    #[schema(example = "5000.00", pattern = r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,9})?$")]
    pub amount: String,
    /// A known code (USD, EUR, JPY, USDC, SOL, ...) or one the organization defined.
    #[schema(example = "USD", pattern = r"^[A-Z0-9]{3,12}$")]
    pub currency: String,
}

/// Executes `command` on a stream that must exist (a 404 saying `missing` when it has no
/// events): decided on the state this process holds when it holds one (a held state is of a
/// stream that exists), else with one load for the check and the command.
pub async fn execute_existing<A, T>(
    ledger: &Ledger,
    context: &Context,
    stream_id: Uuid,
    command: A::Command,
    missing: impl FnOnce() -> String,
) -> AppResult<Written>
where
    A: Aggregate<State = Option<T>>,
    A::Command: Clone,
{
    if let Some(written) = ledger.execute_cached::<A>(context, stream_id, &command).await? {
        return Ok(written);
    }
    let mut loaded = ledger.load::<A>(context.organization_id(), stream_id).await?;
    if loaded.state.is_none() {
        return Err(AppError::NotFound(missing()));
    }
    Ok(ledger.execute_loaded::<A>(context, stream_id, &mut loaded, command).await?)
}

/// Resolves a currency: a known one, or one the organization defined.
pub async fn currency(ledger: &Ledger, organization_id: Uuid, code: &str, field: &str) -> AppResult<Currency> {
    if let Ok(currency) = Currency::known(code) {
        return Ok(currency);
    }
    let organization = ledger.load::<OrganizationAggregate>(organization_id, organization_id).await?.state;
    organization.and_then(|organization| organization.currencies.get(code).cloned()).ok_or_else(|| {
        AppError::bad_request(
            field,
            format!("unknown currency {code:?}: use a known code or define it in POST /v1/organization/currencies"),
        )
    })
}

impl MoneyInput {
    /// The exact amount; more decimals than the currency has, or not a number, is a 400.
    pub async fn resolve(&self, ledger: &Ledger, organization_id: Uuid, field: &str) -> AppResult<Money> {
        let currency = currency(ledger, organization_id, &self.currency, &format!("{field}.currency")).await?;
        Money::parse(&self.amount, currency).map_err(|error| AppError::bad_request(&format!("{field}.amount"), error))
    }
}

/// `?wait_for_position=N`: read your own write.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Consistency {
    /// Wait until every projection has applied the event at this position (a command's
    /// `position`) before reading.
    #[param(minimum = 0)]
    pub wait_for_position: Option<i64>,
    /// How long to wait, in milliseconds (default 5,000; at most 30,000).
    #[param(maximum = 30000)]
    pub wait_timeout_ms: Option<u32>,
}

impl Consistency {
    pub async fn wait(&self, ledger: &Ledger) -> AppResult<()> {
        let timeout = Duration::from_millis(self.wait_timeout_ms.unwrap_or(5_000).into());
        if timeout > ledger_app::WAIT_FOR_POSITION_MAX {
            let most = ledger_app::WAIT_FOR_POSITION_MAX.as_millis();
            return Err(AppError::bad_request("wait_timeout_ms", format!("at most {most}")));
        }
        if let Some(position) = self.wait_for_position {
            ledger.wait_for_position(position, timeout).await?;
        }
        Ok(())
    }
}

/// A path id that is not a UUID is a 400 naming it.
/// A two-part keyset cursor `<first>~<second>` (the `next_after` of a page); `shape` names
/// the parts in the error.
pub fn parse_cursor<A: std::str::FromStr, B: std::str::FromStr>(cursor: &str, shape: &str) -> AppResult<(A, B)> {
    let bad = || AppError::bad_request("after", format!("{cursor:?} is not a cursor ({shape})"));
    let (first, second) = cursor.split_once('~').ok_or_else(bad)?;
    Ok((first.parse().map_err(|_| bad())?, second.parse().map_err(|_| bad())?))
}

/// Rows a page may have: 1 to 1,000, 100 when not given.
pub fn page_limit(limit: Option<i64>) -> AppResult<i64> {
    let limit = limit.unwrap_or(100);
    if !(1..=employees::PAGE_ROWS_MAX).contains(&limit) {
        return Err(AppError::bad_request(
            "limit",
            format!("must be from 1 to {}, not {limit}", employees::PAGE_ROWS_MAX),
        ));
    }
    Ok(limit)
}

/// 404 with `missing` unless `sql` (taking the id as `$1`) finds a row in `read`.
pub async fn require_row(
    read: &mut sqlx::PgConnection,
    sql: &str,
    id: Uuid,
    missing: impl FnOnce() -> String,
) -> AppResult<()> {
    let found: Option<(Uuid,)> = sqlx::query_as(sql).bind(id).fetch_optional(read).await?;
    found.map(|_| ()).ok_or_else(|| AppError::NotFound(missing()))
}

/// Whether the request asks for `media` rather than JSON (`Accept` names it and not
/// `application/json`).
pub fn prefers(headers: &axum::http::HeaderMap, media: &str) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains(media) && !accept.contains("application/json"))
}

pub fn parse_id(text: &str, field: &str) -> AppResult<Uuid> {
    text.parse().map_err(|_| AppError::bad_request(field, format!("{text:?} is not a UUID")))
}

/// One row, read as the organization's API reader (row-level security), or 404 with
/// `missing`. `sql` takes the id as `$1`.
pub async fn read_row<T>(
    state: &AppState,
    identity: &Identity,
    consistency: Consistency,
    sql: &str,
    id: Uuid,
    missing: String,
) -> AppResult<Json<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + schema::Amounts + Send + Unpin,
{
    identity.require(Permission::Read)?;
    consistency.wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let row: Option<T> = sqlx::query_as(sql).bind(id).fetch_optional(&mut *read).await?;
    read.commit().await?;
    let mut row = row.ok_or(AppError::NotFound(missing))?;
    row.pad_amounts();
    Ok(Json(row))
}

/// A page of rows, read as the organization's API reader. `sql` takes the cursor (the last
/// `key` of the previous page, or null) as `$1` and the limit as `$2`. Returns the rows and
/// the next cursor (none after the last page).
pub async fn read_page<T, K>(
    state: &AppState,
    identity: &Identity,
    query: &employees::ListQuery,
    sql: &str,
    key: impl Fn(&T) -> K,
) -> AppResult<(Vec<T>, Option<K>)>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + schema::Amounts + Send + Unpin,
{
    identity.require(Permission::Read)?;
    query.consistency().wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let mut rows: Vec<T> = sqlx::query_as(sql).bind(query.after).bind(query.limit()).fetch_all(&mut *read).await?;
    read.commit().await?;
    rows.iter_mut().for_each(schema::Amounts::pad_amounts);
    let next = if rows.len() as i64 == query.limit() { rows.last().map(key) } else { None };
    Ok((rows, next))
}
