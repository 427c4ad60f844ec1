//! Reversing a paid run, bounded like its payment: the reversal is started
//! (`PayrollRunReversalStarted`), then the paid items are reversed a batch at a time, each
//! batch one atomic append of the run's `PayrollItemsReversed` (at most
//! [`CALCULATION_CHUNK_ITEMS`] items), a transaction per item with the postings turned
//! around, and a wallet debit of what the wallet still holds of the net; then
//! `PayrollRunReversed` closes it, releasing the run's pay period in the same append. No event
//! grows with the run. Resumable: after a crash, `reverse` again goes on from the run's
//! state (an item reversed is not paid any more), and reverses nobody twice.

use ledger_codec::stream_append;
use ledger_core::Aggregate;
use ledger_core::DomainError;
use ledger_core::employee::EmployeeAggregate;
use ledger_core::ids::{EmployeeId, OrganizationId, PayrollRunId, TransactionId};
use ledger_core::money::Money;
use ledger_core::payroll::{
    CALCULATION_CHUNK_ITEMS, ItemStatus, PayrollRun, PayrollRunAggregate, PayrollRunCommand, RunStatus,
};
use ledger_core::transaction::{
    LedgerTransaction, TransactionAggregate, TransactionCommand, TransactionReference, reversed_postings,
};
use ledger_core::wallet::{Wallet, WalletAggregate, WalletCommand};
use ledger_store::StreamAppend;
use uuid::Uuid;

use super::{BATCH_ATTEMPTS_MAX, load_many, load_run};
use crate::context::{Context, Written};
use crate::error::{Error, Result};
use crate::ledger::{KeyUse, Ledger, Loaded};
use crate::retry::Attempts;

/// One paid item to reverse: its employee, its payment, and the net the payment credited.
struct Paid<'a> {
    employee: EmployeeId,
    payment: &'a LedgerTransaction,
    net: Money,
}

type RunState = Loaded<Option<PayrollRun>>;

/// Reverses a completed run, or resumes a reversal in progress (after a crash, or another
/// request's). The idempotency key is recorded with the append that closes the reversal: of
/// racing requests, the one that closes it succeeds, the others learn that the run is
/// reversed (or, with its key, get its answer); a request that stopped midway, repeated,
/// finishes the reversal.
#[tracing::instrument(name = "reverse", skip_all, fields(%run_id))]
pub async fn reverse(ledger: &Ledger, context: &Context, run_id: Uuid, reason: String) -> Result<Written> {
    if let Some(written) = ledger.replayed(context).await? {
        return Ok(written);
    }
    let outcome = async {
        let Loaded { state: run, version } = load_run(ledger, context, run_id).await?;
        let mut loaded = Loaded { state: Some(run), version };
        if loaded.state.as_ref().is_some_and(|run| run.status != RunStatus::Reversing) {
            let start = PayrollRunCommand::Reverse { reason, actor: context.actor() };
            let unkeyed = context.without_idempotency();
            match ledger.execute_loaded::<PayrollRunAggregate>(&unkeyed, run_id, &mut loaded, start).await {
                Ok(_) => {}
                // Another request started it meanwhile: help finish it.
                Err(Error::Domain(DomainError::WrongStatus { .. }))
                    if loaded.state.as_ref().is_some_and(|run| run.status == RunStatus::Reversing) => {}
                Err(error) => return Err(error),
            }
        }
        finish(ledger, context, run_id, loaded).await
    }
    .await;
    ledger.or_replayed(context, outcome, |written| written).await
}

/// Reverses every item still paid, a batch at a time, then closes the reversal (with the
/// period's release and the context's idempotency key). A run reversed by another request
/// meanwhile is a `WrongStatus`.
async fn finish(ledger: &Ledger, context: &Context, run_id: Uuid, mut loaded: RunState) -> Result<Written> {
    let unkeyed = context.without_idempotency();
    let batch_items = ledger.pay_batch_items().min(CALCULATION_CHUNK_ITEMS);
    loop {
        let run = loaded.state.as_ref().ok_or_else(|| Error::NotFound(format!("no payroll run {run_id}")))?;
        if run.status != RunStatus::Reversing {
            let status = format!("{:?}", run.status);
            return Err(Error::Domain(DomainError::WrongStatus { entity: "payroll run", action: "reverse", status }));
        }
        let paid: Vec<EmployeeId> = run
            .items
            .iter()
            .filter(|(_, item)| matches!(item.status, ItemStatus::Paid { .. }))
            .map(|(employee, _)| *employee)
            .take(batch_items)
            .collect();
        let outcome = if paid.is_empty() {
            complete(ledger, context, run_id, &loaded).await
        } else {
            reverse_batch(ledger, &unkeyed, run_id, &loaded, &paid).await
        };
        match outcome {
            Ok(written) if paid.is_empty() => return Ok(written),
            // Another reverser went first: go on from the run as it is now.
            Ok(_) | Err(Error::VersionConflict(_)) => {}
            Err(error) => return Err(error),
        }
        loaded = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
    }
}

/// Closes the reversal: `PayrollRunReversed`, and the period released.
async fn complete(ledger: &Ledger, context: &Context, run_id: Uuid, loaded: &RunState) -> Result<Written> {
    let organization_id = context.organization_id();
    let run = loaded.state.as_ref().expect("the run exists");
    let events = PayrollRunAggregate::decide(&loaded.state, PayrollRunCommand::CompleteReversal)?;
    let mut streams = vec![stream_append::<PayrollRunAggregate>(organization_id, run_id, loaded.version, &events)];
    streams.extend(super::runs::release_period(ledger, organization_id, run, "reversed").await?);
    Ok(ledger.append(context, streams, KeyUse::Record).await?.into())
}

/// Reverses `employees`' paid items in one append.
async fn reverse_batch(
    ledger: &Ledger,
    context: &Context,
    run_id: Uuid,
    loaded: &RunState,
    employees: &[EmployeeId],
) -> Result<Written> {
    let mut attempts = Attempts::up_to(BATCH_ATTEMPTS_MAX);
    loop {
        let outcome = reverse_batch_once(ledger, context, run_id, loaded, employees).await;
        // A wallet that moved meanwhile (a withdrawal): read it again. The run itself
        // conflicting means another reverser: the caller reloads it.
        if !attempts.retry(&outcome) {
            return outcome;
        }
        let fresh = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
        if fresh.version != loaded.version {
            return outcome;
        }
    }
}

async fn reverse_batch_once(
    ledger: &Ledger,
    context: &Context,
    run_id: Uuid,
    loaded: &RunState,
    employees: &[EmployeeId],
) -> Result<Written> {
    let organization_id = context.organization_id();
    let run = loaded.state.as_ref().expect("the run exists");
    let paid: Vec<(EmployeeId, TransactionId, Money)> = employees
        .iter()
        .filter_map(|employee| match run.items[employee].status {
            ItemStatus::Paid { transaction_id } => {
                Some((*employee, transaction_id, run.money(run.items[employee].net)))
            }
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
    let mut wallets = load_many::<WalletAggregate>(ledger, organization_id, &wallet_ids).await?;
    let mut reversed = Vec::with_capacity(payments.len());
    let mut streams = Vec::with_capacity(payments.len() * 2 + 1);
    let employee_ids: Vec<Uuid> = payments.iter().map(|paid| paid.employee.as_uuid()).collect();
    let employees = load_many::<EmployeeAggregate>(ledger, organization_id, &employee_ids).await?;
    for paid in &payments {
        let reversal = TransactionId::from_uuid(Uuid::now_v7());
        let wallet = paid.payment.wallet().and_then(|id| wallets.get_mut(&id.as_uuid()));
        streams.extend(reversal_streams(organization_id, run_id, paid, wallet, reversal)?);
        // The employee's pay history: the run's periods are unpaid again (a payment made
        // before payments were recorded there has no record to take back).
        if let Some(employee) = employees.get(&paid.employee.as_uuid()) {
            let run = PayrollRunId::from_uuid(run_id);
            streams.extend(super::payments::take_back_stream(
                organization_id,
                paid.employee,
                employee,
                run,
                "reversed",
            )?);
        }
        reversed.push((paid.employee, reversal));
    }
    let events = PayrollRunAggregate::decide(&loaded.state, PayrollRunCommand::ReverseItems { items: reversed })?;
    streams.insert(0, stream_append::<PayrollRunAggregate>(organization_id, run_id, loaded.version, &events));
    Ok(ledger.append(context, streams, KeyUse::Without).await?.into())
}

/// The streams that reverse one paid item: its transaction turned around, and a debit of
/// what the wallet it credited still holds of the net (the rest is owed outside the ledger).
/// The wallet's state is moved on, so that two items paid into one wallet debit it in turn.
fn reversal_streams(
    organization_id: Uuid,
    run_id: Uuid,
    paid: &Paid<'_>,
    wallet: Option<&mut Loaded<Option<Wallet>>>,
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
    if let Some(loaded) = wallet
        && let Some(wallet) = &loaded.state
    {
        let take_back = wallet.reclaimable(&paid.net)?;
        if take_back.is_positive() {
            let debit = WalletCommand::Debit { amount: take_back, transaction_id: reversal };
            let events = WalletAggregate::decide(&loaded.state, debit)?;
            let wallet_id = wallet.id.as_uuid();
            streams.push(stream_append::<WalletAggregate>(organization_id, wallet_id, loaded.version, &events));
            loaded.state = events.iter().fold(loaded.state.take(), WalletAggregate::evolve);
            loaded.version += events.len() as u64;
        }
    }
    Ok(streams)
}
