use axum::Json;
use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use ledger_core::employee::EmployeeAggregate;
use ledger_core::ids::{EmployeeId, OrganizationId, WalletId};
use ledger_core::transaction::{TransactionAggregate, TransactionCommand};
use ledger_core::wallet::{WalletAggregate, WalletCommand};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::employees::ListQuery;
use super::schema::{Amounts, Entity, Problems, WrittenView, pad, written};
use super::{AppState, Auth, Command, Consistency, MoneyInput, currency, parse_id, read_page, read_row};
use crate::error::{AppError, AppResult};
use crate::keys::Permission;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenInput {
    wallet_id: Option<Uuid>,
    employee_id: Uuid,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    public_key: String,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    currency: String,
}

/// `POST /v1/wallets`: opens a wallet for an employee.
#[utoipa::path(post, path = "/v1/wallets", tag = "wallets", request_body = OpenInput, params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 201, body = WrittenView), (status = 200, description = "A repeat", body = WrittenView), Problems))]
pub async fn open(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    let input: OpenInput = command.json()?;
    let organization_id = command.context.organization_id();
    let employee = state.ledger.load::<EmployeeAggregate>(organization_id, input.employee_id).await?.state;
    if employee.is_none() {
        return Err(AppError::NotFound(format!("no employee {}", input.employee_id)));
    }
    let wallet_id = match input.wallet_id {
        Some(id) => id,
        None => state.ledger.new_id(&command.context, "wallet").await?,
    };
    let open = WalletCommand::Open {
        wallet_id: WalletId::from_uuid(wallet_id),
        organization_id: OrganizationId::from_uuid(organization_id),
        employee_id: EmployeeId::from_uuid(input.employee_id),
        public_key: input.public_key,
        currency: currency(&state.ledger, organization_id, &input.currency, "currency").await?,
    };
    let done = state.ledger.execute::<WalletAggregate>(&command.context, wallet_id, open).await?;
    Ok(written(StatusCode::CREATED, Entity::Wallet, wallet_id, done))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawInput {
    amount: MoneyInput,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    destination: String,
}

/// `POST /v1/wallets/{id}/withdrawals`: pays out of a wallet (never below zero).
#[utoipa::path(post, path = "/v1/wallets/{id}/withdrawals", tag = "wallets", request_body = WithdrawInput,
    params(("id" = uuid::Uuid, Path, description = "The wallet's id (a UUID)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 201, body = WrittenView), (status = 200, description = "A repeat", body = WrittenView), Problems))]
pub async fn withdraw(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let wallet_id = parse_id(&id, "wallet id")?;
    let input: WithdrawInput = command.json()?;
    if input.destination.trim().is_empty() {
        return Err(AppError::bad_request("destination", "must name where the money goes"));
    }
    let amount = input.amount.resolve(&state.ledger, command.context.organization_id(), "amount").await?;
    let (transaction_id, done) =
        ledger_app::operations::withdraw(&state.ledger, &command.context, wallet_id, amount, &input.destination)
            .await?;
    Ok(written(StatusCode::CREATED, Entity::Transaction, transaction_id, done))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettleInput {
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    signature: String,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    block_hash: String,
}

/// `POST /v1/transactions/{id}/settle`: the payout rail confirmed the payment.
#[utoipa::path(post, path = "/v1/transactions/{id}/settle", tag = "transactions", request_body = SettleInput,
    params(("id" = uuid::Uuid, Path, description = "The transaction's id (a UUID)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn settle(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let transaction_id = parse_id(&id, "transaction id")?;
    let input: SettleInput = command.json()?;
    let settle = TransactionCommand::Settle { signature: input.signature, block_hash: input.block_hash };
    let done = super::execute_existing::<TransactionAggregate, _>(
        &state.ledger,
        &command.context,
        transaction_id,
        settle,
        || format!("no transaction {transaction_id}"),
    )
    .await?;
    Ok(written(StatusCode::OK, Entity::Transaction, transaction_id, done))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailInput {
    /// What the rail said.
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    reason: String,
}

/// `POST /v1/transactions/{id}/fail`: the rail refused a payroll payment not yet settled. The
/// transaction fails, the wallet gives back what it was credited (422 `insufficient_funds`,
/// nothing written, when it no longer holds it), and the run's item is failed: processing the
/// run again (or releasing the item) pays it anew.
#[utoipa::path(post, path = "/v1/transactions/{id}/fail", tag = "transactions", request_body = FailInput,
    params(("id" = uuid::Uuid, Path, description = "The transaction's id (a UUID)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn fail(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let transaction_id = parse_id(&id, "transaction id")?;
    let input: FailInput = command.json()?;
    let done =
        ledger_app::operations::fail_payment(&state.ledger, &command.context, transaction_id, input.reason).await?;
    Ok(written(StatusCode::OK, Entity::Transaction, transaction_id, done))
}

/// One payment's confirmation by the rail.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementInput {
    transaction_id: Uuid,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    signature: String,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    block_hash: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementsInput {
    #[schema(min_items = 1, max_items = 1000)]
    settlements: Vec<SettlementInput>,
}

/// `POST /v1/transactions/settlements`: settles up to 1,000 payments in one atomic append:
/// all or none (the problem names the entry at fault). A payment settled before with the same
/// signature and block is left as it is: a repeated batch writes nothing more.
#[utoipa::path(post, path = "/v1/transactions/settlements", tag = "transactions", request_body = SettlementsInput,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn settle_many(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    let input: SettlementsInput = command.json()?;
    let settlements = input
        .settlements
        .into_iter()
        .map(|entry| {
            let settlement =
                ledger_app::operations::Settlement { signature: entry.signature, block_hash: entry.block_hash };
            (entry.transaction_id, settlement)
        })
        .collect::<Vec<_>>();
    let first = settlements.first().map(|(id, _)| *id).unwrap_or_default();
    let done = ledger_app::operations::settle_many(&state.ledger, &command.context, settlements).await?;
    Ok(written(StatusCode::OK, Entity::Transaction, first, done))
}

/// A wallet and its balance.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WalletView {
    pub wallet_id: Uuid,
    pub organization_id: Uuid,
    pub employee_id: Uuid,
    pub public_key: String,
    pub currency: String,
    /// A decimal string in `currency`.
    #[schema(value_type = String, example = "4500.00")]
    pub balance: Decimal,
    /// `active`, `frozen` or `closed`.
    pub status: String,
    pub last_position: i64,
}

impl Amounts for WalletView {
    fn pad_amounts(&mut self) {
        pad(&mut self.balance, &self.currency);
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WalletPage {
    pub wallets: Vec<WalletView>,
    /// Pass as `after` for the next page; null after the last.
    pub next_after: Option<Uuid>,
}

/// `GET /v1/wallets`: a page of wallets with balances.
#[utoipa::path(get, path = "/v1/wallets", tag = "wallets", params(ListQuery),
    responses((status = 200, body = WalletPage), Problems))]
pub async fn list(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<ListQuery>,
) -> AppResult<Json<WalletPage>> {
    let sql = "select * from wallet.wallets w where $1::uuid is null or wallet_id > $1 order by wallet_id limit $2";
    let (wallets, next_after) =
        read_page(&state, &identity, &query, sql, |wallet: &WalletView| wallet.wallet_id).await?;
    Ok(Json(WalletPage { wallets, next_after }))
}

/// `GET /v1/wallets/{id}`: the wallet and its balance.
#[utoipa::path(get, path = "/v1/wallets/{id}", tag = "wallets",
    params(("id" = uuid::Uuid, Path, description = "The wallet's id (a UUID)"), Consistency),
    responses((status = 200, body = WalletView), Problems))]
pub async fn show(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<WalletView>> {
    let wallet_id = parse_id(&id, "wallet id")?;
    let sql = "select * from wallet.wallets w where wallet_id = $1";
    read_row(&state, &identity, consistency, sql, wallet_id, format!("no wallet {wallet_id}")).await
}

/// One movement of a wallet, with the balance after it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MovementView {
    pub wallet_id: Uuid,
    pub global_position: i64,
    pub organization_id: Uuid,
    pub transaction_id: Uuid,
    /// `credit` (money in) or `debit` (money out).
    pub direction: String,
    /// A decimal string in `currency`.
    #[schema(value_type = String, example = "4500.00")]
    pub amount: Decimal,
    #[schema(value_type = String, example = "4500.00")]
    pub balance_after: Decimal,
    pub recorded_at: DateTime<Utc>,
    pub last_position: i64,
    pub currency: String,
}

impl Amounts for MovementView {
    fn pad_amounts(&mut self) {
        pad(&mut self.amount, &self.currency);
        pad(&mut self.balance_after, &self.currency);
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatementPage {
    pub wallet_id: Uuid,
    pub movements: Vec<MovementView>,
    /// Pass as `after` for the next page; null after the last.
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// The cursor: the `next_after` of the page before (a position).
    after: Option<i64>,
    /// Rows per page, 1 to 1,000 (default 100).
    limit: Option<i64>,
    /// Wait until every projection has applied the event at this position.
    #[param(minimum = 0)]
    wait_for_position: Option<i64>,
}

/// `GET /v1/wallets/{id}/statement?after=<position>`: movements with running balance.
#[utoipa::path(get, path = "/v1/wallets/{id}/statement", tag = "wallets",
    params(("id" = uuid::Uuid, Path, description = "The wallet's id (a UUID)"), StatementQuery),
    responses((status = 200, body = StatementPage), Problems))]
pub async fn statement(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(query): Query<StatementQuery>,
) -> AppResult<Json<StatementPage>> {
    identity.require(Permission::Read)?;
    let wallet_id = parse_id(&id, "wallet id")?;
    Consistency { wait_for_position: query.wait_for_position, wait_timeout_ms: None }.wait(&state.ledger).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, super::employees::PAGE_ROWS_MAX);
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let mut movements: Vec<MovementView> = sqlx::query_as(
        "select t.*, w.currency from wallet.wallet_transactions t join wallet.wallets w using (wallet_id) \
         where t.wallet_id = $1 and t.global_position > coalesce($2, 0) order by t.global_position limit $3",
    )
    .bind(wallet_id)
    .bind(query.after)
    .bind(limit)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    movements.iter_mut().for_each(Amounts::pad_amounts);
    let next_after =
        if movements.len() as i64 == limit { movements.last().map(|row| row.global_position) } else { None };
    Ok(Json(StatementPage { wallet_id, movements, next_after }))
}

/// A double-entry transaction: its status, what it pays, its postings and its status log.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TransactionView {
    pub transaction_id: Uuid,
    pub organization_id: Uuid,
    /// `pending`, `settled`, `failed` or `voided`.
    pub status: String,
    /// `payroll_item`, `payroll_reversal` or `withdrawal`.
    pub reference_kind: String,
    pub payroll_run_id: Option<Uuid>,
    pub employee_id: Option<Uuid>,
    pub wallet_id: Option<Uuid>,
    pub signature: Option<String>,
    pub block_hash: Option<String>,
    pub failure_reason: Option<String>,
    pub recorded_at: DateTime<Utc>,
    pub last_position: i64,
    #[sqlx(skip)]
    pub postings: Vec<PostingView>,
    #[sqlx(skip)]
    pub log: Vec<LogView>,
}

/// One line of a transaction.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PostingView {
    pub transaction_id: Uuid,
    pub line: i32,
    pub organization_id: Uuid,
    pub account: String,
    /// `debit` (money in) or `credit` (money out).
    pub direction: String,
    /// A decimal string in `currency`.
    #[schema(value_type = String, example = "4500.00")]
    pub amount: Decimal,
    pub currency: String,
    pub last_position: i64,
}

/// One status change of a transaction.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LogView {
    pub transaction_id: Uuid,
    pub global_position: i64,
    pub organization_id: Uuid,
    pub status: String,
    #[schema(value_type = Object)]
    pub detail: sqlx::types::Json<serde_json::Value>,
    pub recorded_at: DateTime<Utc>,
    pub last_position: i64,
}

impl Amounts for TransactionView {
    fn pad_amounts(&mut self) {
        for posting in &mut self.postings {
            pad(&mut posting.amount, &posting.currency);
        }
    }
}

/// `GET /v1/transactions/{id}`: a transaction, its postings and its status log.
#[utoipa::path(get, path = "/v1/transactions/{id}", tag = "transactions",
    params(("id" = uuid::Uuid, Path, description = "The transaction's id (a UUID)"), Consistency),
    responses((status = 200, body = TransactionView), Problems))]
pub async fn transaction(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<TransactionView>> {
    identity.require(Permission::Read)?;
    let transaction_id = parse_id(&id, "transaction id")?;
    consistency.wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let found: Option<TransactionView> =
        sqlx::query_as("select * from transaction.transactions where transaction_id = $1")
            .bind(transaction_id)
            .fetch_optional(&mut *read)
            .await?;
    let Some(mut transaction) = found else {
        return Err(AppError::NotFound(format!("no transaction {transaction_id}")));
    };
    transaction.postings = sqlx::query_as("select * from transaction.postings where transaction_id = $1 order by line")
        .bind(transaction_id)
        .fetch_all(&mut *read)
        .await?;
    transaction.log =
        sqlx::query_as("select * from transaction.transaction_logs where transaction_id = $1 order by global_position")
            .bind(transaction_id)
            .fetch_all(&mut *read)
            .await?;
    read.commit().await?;
    transaction.pad_amounts();
    Ok(Json(transaction))
}
