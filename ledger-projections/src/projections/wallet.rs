use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_core::wallet::WalletEvent;
use ledger_store::RecordedEvent;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;
use crate::projection::Projection;
use ledger_codec::AnyEvent;

/// `wallet.wallets` (with balance) and `wallet.wallet_transactions` (with running balance).
#[derive(Debug, Clone, Copy)]
pub struct WalletProjection;

async fn set_status(connection: &mut PgConnection, event: &RecordedEvent, status: &str) -> Result<()> {
    sqlx::query("update wallets set status = $2, last_position = $3 where wallet_id = $1")
        .bind(event.stream_id)
        .bind(status)
        .bind(event.global_position)
        .execute(connection)
        .await?;
    Ok(())
}

#[async_trait]
impl Projection for WalletProjection {
    fn name(&self) -> &'static str {
        "wallet"
    }

    fn schema(&self) -> &'static str {
        "wallet"
    }

    fn event_types(&self) -> Vec<&'static str> {
        <WalletEvent as ledger_core::DomainEvent>::EVENT_TYPES.to_vec()
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        self.apply_all(connection, &[(event, decoded.clone())]).await
    }

    /// Openings and movements are gathered and written together; a status change first
    /// writes what was gathered before it.
    async fn apply_all(&self, connection: &mut PgConnection, events: &[(&RecordedEvent, AnyEvent)]) -> Result<()> {
        let mut rows = Rows::default();
        for (event, decoded) in events {
            let AnyEvent::Wallet(wallet_event) = decoded else { continue };
            let status = match wallet_event {
                WalletEvent::WalletOpened { wallet_id, organization_id, employee_id, public_key, currency } => {
                    let opened = &mut rows.opened;
                    opened.ids.push(wallet_id.as_uuid());
                    opened.organizations.push(organization_id.as_uuid());
                    opened.employees.push(employee_id.as_uuid());
                    opened.keys.push(public_key.clone());
                    opened.currencies.push(currency.code().to_owned());
                    opened.positions.push(event.global_position);
                    continue;
                }
                WalletEvent::WalletCredited { amount, transaction_id, balance_after } => {
                    rows.moved(event, "credit", amount.amount(), transaction_id.as_uuid(), balance_after.amount());
                    continue;
                }
                WalletEvent::WalletDebited { amount, transaction_id, balance_after } => {
                    rows.moved(event, "debit", amount.amount(), transaction_id.as_uuid(), balance_after.amount());
                    continue;
                }
                WalletEvent::WalletFrozen { .. } => "frozen",
                WalletEvent::WalletUnfrozen {} => "active",
                WalletEvent::WalletClosed {} => "closed",
            };
            std::mem::take(&mut rows).write(connection).await?;
            set_status(connection, event, status).await?;
        }
        rows.write(connection).await
    }
}

/// Wallet rows of a run of openings and movements.
#[derive(Default)]
struct Rows {
    opened: OpenedColumns,
    /// wallet -> (balance after its last movement, that movement's position)
    balances: BTreeMap<Uuid, (Decimal, i64)>,
    movements: MovementColumns,
}

#[derive(Default)]
struct OpenedColumns {
    ids: Vec<Uuid>,
    organizations: Vec<Uuid>,
    employees: Vec<Uuid>,
    keys: Vec<String>,
    currencies: Vec<String>,
    positions: Vec<i64>,
}

#[derive(Default)]
struct MovementColumns {
    wallets: Vec<Uuid>,
    positions: Vec<i64>,
    organizations: Vec<Uuid>,
    transactions: Vec<Uuid>,
    directions: Vec<&'static str>,
    amounts: Vec<Decimal>,
    balances: Vec<Decimal>,
    times: Vec<DateTime<Utc>>,
}

impl Rows {
    fn moved(
        &mut self,
        event: &RecordedEvent,
        direction: &'static str,
        amount: Decimal,
        transaction_id: Uuid,
        balance_after: Decimal,
    ) {
        self.balances.insert(event.stream_id, (balance_after, event.global_position));
        let movements = &mut self.movements;
        movements.wallets.push(event.stream_id);
        movements.positions.push(event.global_position);
        movements.organizations.push(event.organization_id);
        movements.transactions.push(transaction_id);
        movements.directions.push(direction);
        movements.amounts.push(amount);
        movements.balances.push(balance_after);
        movements.times.push(event.recorded_at);
    }

    /// Openings first: a wallet opened and credited in one batch gets its balance.
    async fn write(self, connection: &mut PgConnection) -> Result<()> {
        let Rows { opened, balances, movements } = self;
        if !opened.ids.is_empty() {
            sqlx::query(
                "insert into wallets (wallet_id, organization_id, employee_id, public_key, currency, balance, status, last_position) \
                 select id, o, e, k, c, 0, 'active', p \
                 from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int8[]) as rows(id, o, e, k, c, p)",
            )
            .bind(&opened.ids)
            .bind(&opened.organizations)
            .bind(&opened.employees)
            .bind(&opened.keys)
            .bind(&opened.currencies)
            .bind(&opened.positions)
            .execute(&mut *connection)
            .await?;
        }
        if !balances.is_empty() {
            let (mut ids, mut amounts, mut positions) = (Vec::new(), Vec::new(), Vec::new());
            for (id, (balance, position)) in balances {
                ids.push(id);
                amounts.push(balance);
                positions.push(position);
            }
            sqlx::query(
                "update wallets w set balance = b, last_position = p \
                 from unnest($1::uuid[], $2::numeric[], $3::int8[]) as rows(id, b, p) where w.wallet_id = rows.id",
            )
            .bind(&ids)
            .bind(&amounts)
            .bind(&positions)
            .execute(&mut *connection)
            .await?;
        }
        if !movements.wallets.is_empty() {
            sqlx::query(
                "insert into wallet_transactions (wallet_id, global_position, organization_id, transaction_id, direction, amount, \
                   balance_after, recorded_at, last_position) \
                 select w, p, o, t, d, a, b, r, p \
                 from unnest($1::uuid[], $2::int8[], $3::uuid[], $4::uuid[], $5::text[], $6::numeric[], $7::numeric[], \
                             $8::timestamptz[]) as rows(w, p, o, t, d, a, b, r)",
            )
            .bind(&movements.wallets)
            .bind(&movements.positions)
            .bind(&movements.organizations)
            .bind(&movements.transactions)
            .bind(&movements.directions)
            .bind(&movements.amounts)
            .bind(&movements.balances)
            .bind(&movements.times)
            .execute(connection)
            .await?;
        }
        Ok(())
    }
}
