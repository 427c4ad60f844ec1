//! Reversing a paid run: the run's reversal event, then per paid item a transaction with the
//! postings turned around and a wallet debit of what the wallet still holds of the net, all
//! in one append.

use ledger_codec::stream_append;
use ledger_core::Aggregate;
use ledger_core::ids::{EmployeeId, OrganizationId, PayrollRunId, TransactionId};
use ledger_core::money::Money;
use ledger_core::payroll::{ItemStatus, PayrollRunAggregate, PayrollRunCommand};
use ledger_core::transaction::{
    LedgerTransaction, TransactionAggregate, TransactionCommand, TransactionReference, reversed_postings,
};
use ledger_core::wallet::{Wallet, WalletAggregate, WalletCommand};
use ledger_store::StreamAppend;
use uuid::Uuid;

use super::{load_many, load_run};
use crate::context::{Context, Written};
use crate::error::Result;
use crate::ledger::{COMMAND_ATTEMPTS_MAX, KeyUse, Ledger, Loaded};
use crate::retry::Attempts;

/// One paid item to reverse: its employee, its payment, and the net the payment credited.
struct Paid<'a> {
    employee: EmployeeId,
    payment: &'a LedgerTransaction,
    net: Money,
}

#[tracing::instrument(name = "reverse", skip_all, fields(%run_id))]
pub async fn reverse(ledger: &Ledger, context: &Context, run_id: Uuid, reason: String) -> Result<Written> {
    if let Some(written) = ledger.replayed(context).await? {
        return Ok(written);
    }
    let mut attempts = Attempts::up_to(COMMAND_ATTEMPTS_MAX);
    loop {
        let outcome = reverse_once(ledger, context, run_id, reason.clone()).await;
        if !attempts.retry(&outcome) {
            return ledger.or_replayed(context, outcome, |written| written).await;
        }
    }
}

async fn reverse_once(ledger: &Ledger, context: &Context, run_id: Uuid, reason: String) -> Result<Written> {
    let organization_id = context.organization_id();
    let Loaded { state: run, version: run_version } = load_run(ledger, context, run_id).await?;
    let reverse = PayrollRunCommand::Reverse { reason, actor: context.actor() };
    let run_events = PayrollRunAggregate::decide(&Some(run.clone()), reverse)?;
    let paid: Vec<(EmployeeId, TransactionId, Money)> = run
        .items
        .iter()
        .filter_map(|(employee, item)| match item.status {
            ItemStatus::Paid { transaction_id } => Some((*employee, transaction_id, run.money(item.net))),
            _ => None,
        })
        .collect();
    let transaction_ids: Vec<Uuid> = paid.iter().map(|(_, id, _)| id.as_uuid()).collect();
    let originals = load_many::<TransactionAggregate>(ledger, organization_id, &transaction_ids).await?;
    let payments: Vec<Paid> = paid
        .into_iter()
        .filter_map(|(employee, original, net)| {
            let payment = originals.get(&original.as_uuid())?.state.as_ref()?;
            Some(Paid { employee, payment, net })
        })
        .collect();
    let wallet_ids: Vec<Uuid> =
        payments.iter().filter_map(|paid| paid.payment.wallet()).map(|id| id.as_uuid()).collect();
    let wallets = load_many::<WalletAggregate>(ledger, organization_id, &wallet_ids).await?;
    let mut streams = vec![stream_append::<PayrollRunAggregate>(organization_id, run_id, run_version, &run_events)];
    streams.extend(super::runs::release_period(ledger, organization_id, &run, "reversed").await?);
    for paid in payments {
        let wallet = paid.payment.wallet().and_then(|id| wallets.get(&id.as_uuid()));
        let reversal = TransactionId::from_uuid(Uuid::new_v4());
        streams.extend(reversal_streams(organization_id, run_id, &paid, wallet, reversal)?);
    }
    Ok(ledger.append(context, streams, KeyUse::Record).await?.into())
}

/// The streams that reverse one paid item: its transaction turned around, and a debit of
/// what the wallet it credited still holds of the net (the rest is owed outside the ledger).
fn reversal_streams(
    organization_id: Uuid,
    run_id: Uuid,
    paid: &Paid<'_>,
    wallet: Option<&Loaded<Option<Wallet>>>,
    reversal: TransactionId,
) -> Result<Vec<StreamAppend>> {
    let record = TransactionCommand::Record {
        transaction_id: reversal,
        organization_id: OrganizationId::from_uuid(organization_id),
        postings: reversed_postings(&paid.payment.postings),
        reference: TransactionReference::PayrollReversal {
            payroll_run_id: PayrollRunId::from_uuid(run_id),
            employee_id: paid.employee,
        },
    };
    let record = TransactionAggregate::decide(&None, record)?;
    let mut streams = vec![stream_append::<TransactionAggregate>(organization_id, reversal.as_uuid(), 0, &record)];
    if let Some(Loaded { state: Some(wallet), version }) = wallet {
        let take_back = wallet.reclaimable(&paid.net)?;
        if take_back.is_positive() {
            let debit = WalletCommand::Debit { amount: take_back, transaction_id: reversal };
            let events = WalletAggregate::decide(&Some(wallet.clone()), debit)?;
            streams.push(stream_append::<WalletAggregate>(organization_id, wallet.id.as_uuid(), *version, &events));
        }
    }
    Ok(streams)
}
