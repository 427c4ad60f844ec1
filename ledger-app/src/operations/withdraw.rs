//! A withdrawal: an employee takes money out of their wallet to an external account, as a
//! balanced transaction and the wallet's debit in one append.

use ledger_codec::stream_append;
use ledger_core::Aggregate;
use ledger_core::ids::{OrganizationId, TransactionId, WalletId};
use ledger_core::money::Money;
use ledger_core::transaction::{TransactionAggregate, TransactionCommand, TransactionReference, withdrawal_postings};
use ledger_core::wallet::{WalletAggregate, WalletCommand};
use uuid::Uuid;

use crate::context::{Context, Written};
use crate::error::{Error, Result};
use crate::ledger::{COMMAND_ATTEMPTS_MAX, KeyUse, Ledger};
use crate::retry::Attempts;

/// Withdraws `amount` from a wallet to `destination`; returns the transaction's id.
#[tracing::instrument(name = "withdraw", skip_all, fields(%wallet_id))]
pub async fn withdraw(
    ledger: &Ledger,
    context: &Context,
    wallet_id: Uuid,
    amount: Money,
    destination: &str,
) -> Result<(Uuid, Written)> {
    if let Some(written) = ledger.replayed(context).await? {
        return replayed(written);
    }
    let mut attempts = Attempts::up_to(COMMAND_ATTEMPTS_MAX);
    loop {
        let outcome = withdraw_once(ledger, context, wallet_id, &amount, destination).await;
        if !attempts.retry(&outcome) {
            return ledger.or_replayed(context, outcome.map(Ok), replayed).await?;
        }
    }
}

/// A repeated withdrawal answers the transaction the first one wrote (its append's first
/// stream).
fn replayed(written: Written) -> Result<(Uuid, Written)> {
    let id = written.first_stream.ok_or_else(|| Error::internal("a replayed withdrawal names no transaction"))?;
    Ok((id, written))
}

async fn withdraw_once(
    ledger: &Ledger,
    context: &Context,
    wallet_id: Uuid,
    amount: &Money,
    destination: &str,
) -> Result<(Uuid, Written)> {
    let organization_id = context.organization_id();
    let wallet = ledger.load::<WalletAggregate>(organization_id, wallet_id).await?;
    if wallet.state.is_none() {
        return Err(Error::NotFound(format!("no wallet {wallet_id}")));
    }
    let transaction_id = TransactionId::from_uuid(ledger.new_id(context, "withdrawal").await?);
    let record = TransactionCommand::Record {
        transaction_id,
        organization_id: OrganizationId::from_uuid(organization_id),
        postings: withdrawal_postings(WalletId::from_uuid(wallet_id), amount, destination),
        reference: TransactionReference::Withdrawal { wallet_id: WalletId::from_uuid(wallet_id) },
    };
    let debit = WalletCommand::Debit { amount: amount.clone(), transaction_id };
    let debit = WalletAggregate::decide(&wallet.state, debit)?;
    let record = TransactionAggregate::decide(&None, record)?;
    let streams = vec![
        stream_append::<TransactionAggregate>(organization_id, transaction_id.as_uuid(), 0, &record),
        stream_append::<WalletAggregate>(organization_id, wallet_id, wallet.version, &debit),
    ];
    let result = ledger.append(context, streams, KeyUse::Record).await?;
    Ok((transaction_id.as_uuid(), result.into()))
}
