use async_trait::async_trait;
use ledger_core::wallet::WalletEvent;
use ledger_store::RecordedEvent;
use sqlx::PgConnection;

use crate::decode::AnyEvent;
use crate::error::Result;
use crate::projection::Projection;

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
        let AnyEvent::Wallet(wallet_event) = decoded else { return Ok(()) };
        let movement = match wallet_event {
            WalletEvent::WalletOpened { wallet_id, organization_id, employee_id, public_key, currency } => {
                sqlx::query(
                    "insert into wallets (wallet_id, organization_id, employee_id, public_key, currency, balance, status, last_position) \
                     values ($1, $2, $3, $4, $5, 0, 'active', $6)",
                )
                .bind(wallet_id.as_uuid())
                .bind(organization_id.as_uuid())
                .bind(employee_id.as_uuid())
                .bind(public_key)
                .bind(currency.code())
                .bind(event.global_position)
                .execute(connection)
                .await?;
                return Ok(());
            }
            WalletEvent::WalletCredited { amount, transaction_id, balance_after } => {
                ("credit", amount, transaction_id, balance_after)
            }
            WalletEvent::WalletDebited { amount, transaction_id, balance_after } => {
                ("debit", amount, transaction_id, balance_after)
            }
            WalletEvent::WalletFrozen { .. } => return set_status(connection, event, "frozen").await,
            WalletEvent::WalletUnfrozen {} => return set_status(connection, event, "active").await,
            WalletEvent::WalletClosed {} => return set_status(connection, event, "closed").await,
        };
        let (direction, amount, transaction_id, balance_after) = movement;
        sqlx::query("update wallets set balance = $2, last_position = $3 where wallet_id = $1")
            .bind(event.stream_id)
            .bind(balance_after.amount())
            .bind(event.global_position)
            .execute(&mut *connection)
            .await?;
        sqlx::query(
            "insert into wallet_transactions (wallet_id, global_position, organization_id, transaction_id, direction, amount, balance_after, recorded_at, last_position) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $2)",
        )
        .bind(event.stream_id)
        .bind(event.global_position)
        .bind(event.organization_id)
        .bind(transaction_id.as_uuid())
        .bind(direction)
        .bind(amount.amount())
        .bind(balance_after.amount())
        .bind(event.recorded_at)
        .execute(connection)
        .await?;
        Ok(())
    }
}
