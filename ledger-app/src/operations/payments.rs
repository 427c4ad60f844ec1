//! What happens to payments after a run is paid: an item held or failed is released and paid
//! once its cause clears, a payment the rail refused is failed (the wallet credit taken back),
//! and many payments are settled at once.

use ledger_codec::stream_append;
use ledger_core::Aggregate;
use ledger_core::DomainError;
use ledger_core::employee::{EmployeeAggregate, EmployeeCommand, KycStatus};
use ledger_core::gross_to_net::HoldReason;
use ledger_core::ids::{EmployeeId, TransactionId};
use ledger_core::payroll::{
    CALCULATION_CHUNK_ITEMS, ItemStatus, PayrollRun, PayrollRunAggregate, PayrollRunCommand, RunStatus,
    STALE_CALCULATION,
};
use ledger_core::transaction::{
    LedgerTransaction, TransactionAggregate, TransactionCommand, TransactionReference, TransactionStatus,
    wallet_of_account,
};
use ledger_core::wallet::{WalletAggregate, WalletCommand};
use uuid::Uuid;

use super::process::{ProcessReport, wallets_of};
use super::{Settlement, load_entries, load_many};
use crate::context::{Context, Written};
use crate::error::{Error, Result};
use crate::ledger::{COMMAND_ATTEMPTS_MAX, KeyUse, Ledger, Loaded};
use crate::retry::Attempts;

/// The items of `run` (among `candidates`, all held or failed ones when `None`) whose cause
/// has cleared: held for KYC that is approved now, failed for want of a wallet that exists
/// now (or failed on the rail, with a wallet to pay again).
pub(crate) async fn releasable(
    ledger: &Ledger,
    context: &Context,
    run: &PayrollRun,
    candidates: Option<&[EmployeeId]>,
) -> Result<Vec<EmployeeId>> {
    let waiting: Vec<(EmployeeId, &ItemStatus)> = run
        .items
        .iter()
        .filter(|(employee, _)| candidates.is_none_or(|wanted| wanted.contains(employee)))
        .filter(|(_, item)| match &item.status {
            ItemStatus::Held { hold: HoldReason::KycNotApproved { .. } } => true,
            // Out of date: the next regular run pays what is owed for the period.
            ItemStatus::Failed { reason } => !reason.starts_with(STALE_CALCULATION),
            _ => false,
        })
        .map(|(employee, item)| (*employee, &item.status))
        .collect();
    if waiting.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = waiting.iter().map(|(employee, _)| employee.as_uuid()).collect();
    let employees = load_many::<EmployeeAggregate>(ledger, context.organization_id(), &ids).await?;
    let wallets = wallets_of(ledger, context, run, &ids).await?;
    Ok(waiting
        .into_iter()
        .filter(|(employee, status)| {
            let kyc_approved = matches!(
                employees.get(&employee.as_uuid()),
                Some(Loaded { state: Some(found), .. }) if found.kyc == KycStatus::Approved
            );
            let has_wallet = wallets.contains_key(&employee.as_uuid());
            match status {
                ItemStatus::Held { .. } => kyc_approved,
                _ => kyc_approved && has_wallet,
            }
        })
        .map(|(employee, _)| employee)
        .collect())
}

/// Puts `employees`' items back to be paid, a bounded event at a time; `loaded` is kept
/// current. Returns the last position written.
pub(crate) async fn release_items(
    ledger: &Ledger,
    context: &Context,
    run_id: Uuid,
    loaded: &mut Loaded<Option<PayrollRun>>,
    employees: &[EmployeeId],
) -> Result<i64> {
    let mut position = 0;
    for chunk in employees.chunks(CALCULATION_CHUNK_ITEMS) {
        let release = PayrollRunCommand::ReleaseItems { employee_ids: chunk.to_vec(), actor: context.actor() };
        let written = ledger.execute_loaded::<PayrollRunAggregate>(context, run_id, loaded, release).await?;
        position = position.max(written.position);
    }
    Ok(position)
}

/// Releases one held or failed item whose cause has cleared and pays it (the run completes
/// again). A KYC still not approved, or still no wallet, is a 422 naming it; an item paid
/// already (a repeated or racing release) pays nothing more.
#[tracing::instrument(name = "release", skip_all, fields(%run_id, %employee_id))]
pub async fn release(ledger: &Ledger, context: &Context, run_id: Uuid, employee_id: Uuid) -> Result<ProcessReport> {
    let employee = EmployeeId::from_uuid(employee_id);
    if ledger.replayed(context).await?.is_none() {
        let mut loaded = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
        let run = loaded.state.as_ref().ok_or_else(|| Error::NotFound(format!("no payroll run {run_id}")))?;
        let item = run
            .items
            .get(&employee)
            .ok_or_else(|| Error::NotFound(format!("no item of employee {employee_id} in run {run_id}")))?;
        match &item.status {
            ItemStatus::Held { .. } | ItemStatus::Failed { .. } => {
                if releasable(ledger, context, run, Some(&[employee])).await?.is_empty() {
                    let cause = match &item.status {
                        ItemStatus::Held { hold } => hold.to_string(),
                        ItemStatus::Failed { reason } if reason.starts_with(STALE_CALCULATION) => reason.clone(),
                        ItemStatus::Failed { reason } => {
                            format!("{reason}, still (a wallet in the run's currency and approved KYC pay it)")
                        }
                        _ => unreachable!("only a held or failed item comes here"),
                    };
                    return Err(Error::Domain(DomainError::ItemHeld { employee_id: employee, reason: cause }));
                }
                if let Err(error) = release_items(ledger, context, run_id, &mut loaded, &[employee]).await {
                    // A racing release (or processing) went first: the item is pending or paid
                    // now, and processing pays what is pending, nobody twice.
                    let now = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
                    let moved_on = now
                        .state
                        .as_ref()
                        .and_then(|run| run.items.get(&employee))
                        .is_some_and(|item| matches!(item.status, ItemStatus::Pending | ItemStatus::Paid { .. }));
                    if !moved_on {
                        return Err(error);
                    }
                }
            }
            // Released already (pending) or paid: processing pays what is pending, nobody twice.
            _ => {}
        }
    }
    super::process(ledger, &context.without_idempotency(), run_id).await
}

/// Records that the rail refused a payroll payment not yet settled: the transaction fails,
/// the wallet gives back what the payment credited (a 422 and nothing written when it no
/// longer holds it), and the run's item is failed, to be released and paid again; one
/// atomic append.
#[tracing::instrument(name = "fail_payment", skip_all, fields(%transaction_id))]
pub async fn fail_payment(ledger: &Ledger, context: &Context, transaction_id: Uuid, reason: String) -> Result<Written> {
    if let Some(written) = ledger.replayed(context).await? {
        return Ok(written);
    }
    let mut attempts = Attempts::up_to(COMMAND_ATTEMPTS_MAX);
    loop {
        let outcome = fail_payment_once(ledger, context, transaction_id, &reason).await;
        if !attempts.retry(&outcome) {
            return ledger.or_replayed(context, outcome, |written| written).await;
        }
    }
}

async fn fail_payment_once(ledger: &Ledger, context: &Context, transaction_id: Uuid, reason: &str) -> Result<Written> {
    let organization_id = context.organization_id();
    let Loaded { state: transaction, version } =
        ledger.load::<TransactionAggregate>(organization_id, transaction_id).await?;
    let transaction = transaction.ok_or_else(|| Error::NotFound(format!("no transaction {transaction_id}")))?;
    let TransactionReference::PayrollItem { payroll_run_id, employee_id } = transaction.reference else {
        return Err(Error::Invalid(format!(
            "transaction_id: {transaction_id} is not a payroll payment (only a payment of a run's item is failed here)"
        )));
    };
    if matches!(transaction.status, TransactionStatus::Settled { .. }) {
        return Err(Error::Domain(DomainError::WrongStatus {
            entity: "transaction",
            action: "fail",
            status: "Settled: the rail confirmed it; reverse the run instead".to_owned(),
        }));
    }
    let failed = TransactionAggregate::decide(
        &Some(transaction.clone()),
        TransactionCommand::Fail { reason: reason.to_owned() },
    )?;
    let run = ledger.load::<PayrollRunAggregate>(organization_id, payroll_run_id.as_uuid()).await?;
    let fail_item = PayrollRunCommand::FailPayment {
        employee_id,
        transaction_id: TransactionId::from_uuid(transaction_id),
        reason: reason.to_owned(),
    };
    let item_failed = PayrollRunAggregate::decide(&run.state, fail_item)?;
    let mut streams = vec![stream_append::<TransactionAggregate>(organization_id, transaction_id, version, &failed)];
    if let Some((wallet_id, credited)) = credited_wallet(&transaction) {
        let wallet = ledger.load::<WalletAggregate>(organization_id, wallet_id).await?;
        let take_back =
            WalletCommand::Debit { amount: credited, transaction_id: TransactionId::from_uuid(transaction_id) };
        let debited = WalletAggregate::decide(&wallet.state, take_back)?;
        streams.push(stream_append::<WalletAggregate>(organization_id, wallet_id, wallet.version, &debited));
    }
    streams.push(stream_append::<PayrollRunAggregate>(
        organization_id,
        payroll_run_id.as_uuid(),
        run.version,
        &item_failed,
    ));
    streams.extend(take_back_pay(ledger, organization_id, employee_id, payroll_run_id, reason).await?);
    Ok(ledger.append(context, streams, KeyUse::Record).await?.into())
}

/// The employee stream's part of taking a run's payment back: its periods count as unpaid
/// again. None for a payment made before payments were recorded in the employee's stream.
pub(crate) async fn take_back_pay(
    ledger: &Ledger,
    organization_id: Uuid,
    employee_id: EmployeeId,
    payroll_run_id: ledger_core::ids::PayrollRunId,
    reason: &str,
) -> Result<Option<ledger_store::StreamAppend>> {
    let employee = ledger.load::<EmployeeAggregate>(organization_id, employee_id.as_uuid()).await?;
    take_back_stream(organization_id, employee_id, &employee, payroll_run_id, reason)
}

/// [`take_back_pay`] on an employee loaded already (a reversal loads a batch's at once).
pub(crate) fn take_back_stream(
    organization_id: Uuid,
    employee_id: EmployeeId,
    employee: &Loaded<Option<ledger_core::employee::Employee>>,
    payroll_run_id: ledger_core::ids::PayrollRunId,
    reason: &str,
) -> Result<Option<ledger_store::StreamAppend>> {
    if !employee.state.as_ref().is_some_and(|state| state.paid.contains_key(&payroll_run_id)) {
        return Ok(None);
    }
    let take_back = EmployeeCommand::TakeBackPay { payroll_run_id, reason: reason.to_owned() };
    let events = EmployeeAggregate::decide(&employee.state, take_back)?;
    Ok(Some(stream_append::<EmployeeAggregate>(organization_id, employee_id.as_uuid(), employee.version, &events)))
}

/// The wallet a payment credited, and how much.
fn credited_wallet(transaction: &LedgerTransaction) -> Option<(Uuid, ledger_core::Money)> {
    transaction.postings.iter().find_map(|posting| {
        let wallet = wallet_of_account(&posting.account)?;
        (posting.direction == ledger_core::transaction::Direction::Debit)
            .then(|| (wallet.as_uuid(), posting.amount.clone()))
    })
}

/// The most settlements one request carries.
pub const SETTLEMENTS_MAX: usize = 1_000;

/// Settles many payments in one atomic append: all of them, or (a transaction unknown,
/// failed, voided, or settled before with another signature) none, the problem naming the
/// entry. A payment settled before with the same signature and block is left as it is, so a
/// repeated batch writes nothing more.
#[tracing::instrument(name = "settle_many", skip_all, fields(count = settlements.len()))]
pub async fn settle_many(ledger: &Ledger, context: &Context, settlements: Vec<(Uuid, Settlement)>) -> Result<Written> {
    if settlements.is_empty() || settlements.len() > SETTLEMENTS_MAX {
        return Err(Error::Invalid(format!(
            "settlements: 1 to {SETTLEMENTS_MAX} a request, not {}",
            settlements.len()
        )));
    }
    for (index, (id, _)) in settlements.iter().enumerate() {
        if settlements[..index].iter().any(|(other, _)| other == id) {
            return Err(Error::Invalid(format!("settlements[{index}].transaction_id: {id} is listed twice")));
        }
    }
    if let Some(written) = ledger.replayed(context).await? {
        return Ok(written);
    }
    let mut attempts = Attempts::up_to(COMMAND_ATTEMPTS_MAX);
    loop {
        let outcome = settle_many_once(ledger, context, &settlements).await;
        if !attempts.retry(&outcome) {
            return ledger.or_replayed(context, outcome, |written| written).await;
        }
    }
}

async fn settle_many_once(ledger: &Ledger, context: &Context, settlements: &[(Uuid, Settlement)]) -> Result<Written> {
    let organization_id = context.organization_id();
    let ids: Vec<Uuid> = settlements.iter().map(|(id, _)| *id).collect();
    let field = |index| format!("settlements[{index}].transaction_id");
    let found = load_entries::<TransactionAggregate>(ledger, organization_id, &ids, field).await?;
    let mut streams = Vec::new();
    for (index, (id, settlement)) in settlements.iter().enumerate() {
        let field = format!("settlements[{index}]");
        let Some(Loaded { state: Some(transaction), version }) = found.get(id) else {
            return Err(Error::Invalid(format!("{field}.transaction_id: no transaction {id}")));
        };
        if let TransactionStatus::Settled { signature, block_hash } = &transaction.status {
            let same = *signature == settlement.signature && *block_hash == settlement.block_hash;
            if same {
                continue;
            }
            return Err(Error::Domain(DomainError::WrongStatus {
                entity: "transaction",
                action: "settle",
                status: format!("Settled already with another signature ({field})"),
            }));
        }
        let settle = TransactionCommand::Settle {
            signature: settlement.signature.clone(),
            block_hash: settlement.block_hash.clone(),
        };
        let events = TransactionAggregate::decide(&Some(transaction.clone()), settle).map_err(|error| match error {
            DomainError::WrongStatus { entity, action, status } => {
                DomainError::WrongStatus { entity, action, status: format!("{status} ({field})") }
            }
            DomainError::Invalid { field: inner, problem } => DomainError::invalid(format!("{field}.{inner}"), problem),
            other => other,
        })?;
        streams.push(stream_append::<TransactionAggregate>(organization_id, *id, *version, &events));
    }
    if streams.is_empty() {
        // Every one settled before, exactly so: nothing to write.
        return Ok(Written { position: 0, replayed: false, first_stream: ids.first().copied() });
    }
    Ok(ledger.append(context, streams, KeyUse::Record).await?.into())
}

/// Whether a run has items waiting for their cause to clear (for a completed run's report).
pub fn has_waiting_items(run: &PayrollRun) -> bool {
    matches!(run.status, RunStatus::Completed | RunStatus::PartiallyFailed)
        && run.items.values().any(|item| matches!(item.status, ItemStatus::Held { .. } | ItemStatus::Failed { .. }))
}
