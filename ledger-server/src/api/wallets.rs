use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ledger_core::employee::EmployeeAggregate;
use ledger_core::ids::{EmployeeId, OrganizationId, WalletId};
use ledger_core::transaction::{TransactionAggregate, TransactionCommand};
use ledger_core::wallet::{WalletAggregate, WalletCommand};
use serde::Deserialize;
use uuid::Uuid;

use super::employees::ListQuery;
use super::{AppState, Auth, Command, Consistency, MoneyInput, currency, parse_id, read_page, read_row, written};
use crate::error::{AppError, AppResult};
use crate::keys::Permission;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenInput {
    wallet_id: Option<Uuid>,
    employee_id: Uuid,
    public_key: String,
    currency: String,
}

/// `POST /v1/wallets`: opens a wallet for an employee.
pub async fn open(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    let input: OpenInput = command.json()?;
    let organization_id = command.context.organization_id();
    let employee = state.ledger.load::<EmployeeAggregate>(organization_id, input.employee_id).await?.state;
    if employee.is_none() {
        return Err(AppError::NotFound(format!("no employee {}", input.employee_id)));
    }
    let wallet_id = input.wallet_id.unwrap_or_else(|| command.context.new_id("wallet"));
    let open = WalletCommand::Open {
        wallet_id: WalletId::from_uuid(wallet_id),
        organization_id: OrganizationId::from_uuid(organization_id),
        employee_id: EmployeeId::from_uuid(input.employee_id),
        public_key: input.public_key,
        currency: currency(&state.ledger, organization_id, &input.currency, "currency").await?,
    };
    let done = state.ledger.execute::<WalletAggregate>(&command.context, wallet_id, open).await?;
    Ok(written(StatusCode::CREATED, "wallet_id", wallet_id, done))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WithdrawInput {
    amount: MoneyInput,
    destination: String,
}

/// `POST /v1/wallets/{id}/withdrawals`: pays out of a wallet (never below zero).
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
    Ok(written(StatusCode::CREATED, "transaction_id", transaction_id, done))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleInput {
    signature: String,
    block_hash: String,
}

/// `POST /v1/transactions/{id}/settle`: the payout rail confirmed the payment.
pub async fn settle(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let transaction_id = parse_id(&id, "transaction id")?;
    let input: SettleInput = command.json()?;
    let existing =
        state.ledger.load::<TransactionAggregate>(command.context.organization_id(), transaction_id).await?.state;
    if existing.is_none() {
        return Err(AppError::NotFound(format!("no transaction {transaction_id}")));
    }
    let settle = TransactionCommand::Settle { signature: input.signature, block_hash: input.block_hash };
    let done = state.ledger.execute::<TransactionAggregate>(&command.context, transaction_id, settle).await?;
    Ok(written(StatusCode::OK, "transaction_id", transaction_id, done))
}

/// `GET /v1/wallets`: a page of wallets with balances.
pub async fn list(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<ListQuery>,
) -> AppResult<Json<serde_json::Value>> {
    let sql =
        "select to_jsonb(w) from wallet.wallets w where $1::uuid is null or wallet_id > $1 order by wallet_id limit $2";
    let (rows, next) = read_page(&state, &identity, &query, sql, "wallet_id").await?;
    Ok(Json(serde_json::json!({ "wallets": rows, "next_after": next })))
}

/// `GET /v1/wallets/{id}`: the wallet and its balance.
pub async fn show(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<serde_json::Value>> {
    let wallet_id = parse_id(&id, "wallet id")?;
    let sql = "select to_jsonb(w) from wallet.wallets w where wallet_id = $1";
    read_row(&state, &identity, consistency, sql, wallet_id, format!("no wallet {wallet_id}")).await
}

/// `GET /v1/wallets/{id}/statement?after=<position>`: movements with running balance.
pub async fn statement(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(query): Query<StatementQuery>,
) -> AppResult<Response> {
    identity.require(Permission::Read)?;
    let wallet_id = parse_id(&id, "wallet id")?;
    Consistency { wait_for_position: query.wait_for_position, wait_timeout_ms: None }.wait(&state.ledger).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, super::employees::PAGE_ROWS_MAX);
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(
        "select to_jsonb(t) from wallet.wallet_transactions t where wallet_id = $1 and global_position > coalesce($2, 0) \
         order by global_position limit $3",
    )
    .bind(wallet_id)
    .bind(query.after)
    .bind(limit)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    let next =
        if rows.len() as i64 == limit { rows.last().and_then(|row| row.get("global_position").cloned()) } else { None };
    Ok(Json(serde_json::json!({ "wallet_id": wallet_id, "movements": rows, "next_after": next })).into_response())
}

#[derive(Debug, Deserialize)]
pub struct StatementQuery {
    after: Option<i64>,
    limit: Option<i64>,
    wait_for_position: Option<i64>,
}

/// `GET /v1/transactions/{id}`: a transaction, its postings and its status log.
pub async fn transaction(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<serde_json::Value>> {
    let transaction_id = parse_id(&id, "transaction id")?;
    let sql = "select to_jsonb(t) || jsonb_build_object( \
           'postings', (select jsonb_agg(to_jsonb(p) order by line) from transaction.postings p where p.transaction_id = t.transaction_id), \
           'log', (select jsonb_agg(to_jsonb(l) order by global_position) from transaction.transaction_logs l where l.transaction_id = t.transaction_id)) \
         from transaction.transactions t where transaction_id = $1";
    read_row(&state, &identity, consistency, sql, transaction_id, format!("no transaction {transaction_id}")).await
}
