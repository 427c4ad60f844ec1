//! Processing a run: every pending item paid, in batches; each batch one atomic append of
//! the run, the transactions and the wallets. Resumable: run again after a crash, it pays
//! the rest and nobody twice (a paid item is not pending). Completes the run when nothing
//! is pending.
//!
//! Each batch is a pure decision ([`decide_batch`]: given the run, the items and the wallets,
//! which events) and its I/O ([`pay_batch`]: reading, appending, retrying a conflict with
//! another processor).

use std::collections::HashMap;

use ledger_codec::stream_append;
use ledger_core::Aggregate;
use ledger_core::DomainError;
use ledger_core::employee::{Employee, EmployeeAggregate, EmployeeCommand};
use ledger_core::gross_to_net::PayrollItem;
use ledger_core::ids::{EmployeeId, OrganizationId, PayrollRunId, TransactionId, WalletId};
use ledger_core::payroll::{
    ItemStatus, PayrollRun, PayrollRunAggregate, PayrollRunCommand, PayrollRunEvent, RunStatus, STALE_CALCULATION,
};
use ledger_core::transaction::{TransactionAggregate, TransactionCommand, TransactionReference, payroll_item_postings};
use ledger_core::wallet::{Wallet, WalletAggregate, WalletCommand};
use ledger_store::StreamAppend;
use uuid::Uuid;

use super::{BATCH_ATTEMPTS_MAX, LOOKUP_WAIT, RecordedItems, load_many, read_tables};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ledger::{KeyUse, Ledger, Loaded};
use crate::retry::Attempts;

/// The outcome of processing a run.
#[derive(Debug, Clone)]
pub struct ProcessReport {
    pub status: RunStatus,
    pub paid_now: u64,
    pub failed_now: u64,
    pub paid: u64,
    pub failed: u64,
    pub held: u64,
    pub position: i64,
    /// Whether this request repeats an earlier one with the same idempotency key (which
    /// started the run's processing).
    pub replayed: bool,
}

/// What this processor did to a run: items paid and failed, the last position written.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    paid: u64,
    failed: u64,
    position: i64,
}

impl Progress {
    fn add(&mut self, other: Progress) {
        self.paid += other.paid;
        self.failed += other.failed;
        self.position = self.position.max(other.position);
    }
}

type RunState = Loaded<Option<PayrollRun>>;
type WalletStates = HashMap<Uuid, Loaded<Option<Wallet>>>;
type EmployeeStates = HashMap<Uuid, Loaded<Option<Employee>>>;

/// The streams a payment batch writes besides the run, read before it is decided: the
/// wallets it credits and the employees whose pay history it records.
struct BatchStates {
    wallets: WalletStates,
    employees: EmployeeStates,
}

impl BatchStates {
    async fn read(ledger: &Ledger, organization_id: Uuid, batch: Batch<'_>, employees: &[Uuid]) -> Result<BatchStates> {
        let wallet_ids = batch.wallet_ids(employees);
        let (wallets, employees) = tokio::try_join!(
            load_many::<WalletAggregate>(ledger, organization_id, &wallet_ids),
            load_many::<EmployeeAggregate>(ledger, organization_id, employees)
        )?;
        Ok(BatchStates { wallets, employees })
    }
}

/// Pays every pending item of an approved or processing run, in batches, then completes it.
#[tracing::instrument(name = "process", skip_all, fields(%run_id))]
pub async fn process(ledger: &Ledger, context: &Context, run_id: Uuid) -> Result<ProcessReport> {
    // The run is loaded once and kept current as this processor writes it (reloaded after a
    // conflict with another processor): a run of many items costs more to load than a batch.
    let mut loaded = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
    let status = |loaded: &RunState| loaded.state.as_ref().map(|run| run.status);
    let started = match status(&loaded) {
        None => return Err(Error::NotFound(format!("no payroll run {run_id}"))),
        Some(RunStatus::Approved) => {
            let start = PayrollRunCommand::StartProcessing { actor: context.actor() };
            match ledger.execute_loaded::<PayrollRunAggregate>(context, run_id, &mut loaded, start).await {
                Ok(written) => Some(written),
                Err(Error::Domain(DomainError::WrongStatus { .. })) => None,
                Err(error) => return Err(error),
            }
        }
        Some(_) => None,
    };
    // A request that did not start the run repeats the one that did when it carries its key.
    let replayed = match started {
        Some(written) => written.replayed,
        None => ledger.replayed(context).await?.is_some(),
    };
    // A completed run processed again pays the items whose cause has cleared since: held for
    // a KYC approved now, failed for a wallet opened now (or a payment the rail refused).
    if !replayed && let Some(run) = loaded.state.as_ref().filter(|run| super::payments::has_waiting_items(run)) {
        let released = super::payments::releasable(ledger, context, run, None).await?;
        if !released.is_empty() {
            let context = context.without_idempotency();
            // `loaded` is kept current by the release.
            match super::payments::release_items(ledger, &context, run_id, &mut loaded, &released).await {
                Ok(_) => {}
                // Another processor released or paid them meanwhile (the rule says they are
                // pending or paid now): go on from the run as it is.
                Err(Error::Domain(_) | Error::Invalid(_)) => {
                    loaded = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
                }
                Err(error) => return Err(error),
            }
        }
    }
    // The idempotency key stands for starting the run; the payments and the completion are
    // idempotent by the run's own state.
    let context = &context.without_idempotency();
    let mut progress = Progress::default();
    match status(&loaded).expect("the run exists") {
        RunStatus::Processing => {
            progress = pay_pending(ledger, context, run_id, &mut loaded).await?;
            let complete = PayrollRunCommand::Complete;
            match ledger.execute_loaded::<PayrollRunAggregate>(context, run_id, &mut loaded, complete).await {
                Ok(written) => progress.position = progress.position.max(written.position),
                // Another processor completed it meanwhile.
                Err(Error::Domain(DomainError::WrongStatus { .. })) => {
                    loaded = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
                }
                Err(error) => return Err(error),
            }
        }
        RunStatus::Completed | RunStatus::PartiallyFailed => {}
        status => {
            let status = format!("{status:?}");
            return Err(Error::Domain(DomainError::WrongStatus { entity: "payroll run", action: "process", status }));
        }
    }
    ledger.remember::<PayrollRunAggregate>(context.organization_id(), run_id, &loaded);
    Ok(report(&loaded.state.expect("the run exists"), progress, replayed))
}

fn report(run: &PayrollRun, progress: Progress, replayed: bool) -> ProcessReport {
    let count = |wanted: fn(&ItemStatus) -> bool| run.items.values().filter(|item| wanted(&item.status)).count() as u64;
    ProcessReport {
        status: run.status,
        paid_now: progress.paid,
        failed_now: progress.failed,
        paid: count(|status| matches!(status, ItemStatus::Paid { .. })),
        failed: count(|status| matches!(status, ItemStatus::Failed { .. })),
        held: count(|status| matches!(status, ItemStatus::Held { .. })),
        position: progress.position,
        replayed,
    }
}

/// Pays the pending items of a processing run a batch at a time, reading each batch's items
/// and wallets while the one before is appended.
async fn pay_pending(ledger: &Ledger, context: &Context, run_id: Uuid, loaded: &mut RunState) -> Result<Progress> {
    let run = loaded.state.as_ref().expect("the run exists");
    let pending: Vec<Uuid> =
        run.items.iter().filter(|(_, item)| item.status == ItemStatus::Pending).map(|(id, _)| id.as_uuid()).collect();
    let wallets = wallets_of(ledger, context, run, &pending).await?;
    let mut items = RecordedItems::default();
    let batches: Vec<&[Uuid]> = pending.chunks(ledger.pay_batch_items()).collect();
    let (mut progress, mut read_ahead) = (Progress::default(), None);
    for (index, batch) in batches.iter().enumerate() {
        let batch = Batch { employees: batch, next: batches.get(index + 1).copied(), wallets: &wallets };
        let paid = pay_batch(ledger, context, run_id, loaded, batch, &mut items, read_ahead.take()).await?;
        read_ahead = paid.next_states;
        progress.add(paid.progress);
    }
    Ok(progress)
}

/// The active wallet of each employee in the run's currency, from the wallet read table.
pub(crate) async fn wallets_of(
    ledger: &Ledger,
    context: &Context,
    run: &PayrollRun,
    employees: &[Uuid],
) -> Result<HashMap<Uuid, Uuid>> {
    // The wallets as of their last event: not every event since (a calculation's, still
    // being applied by other projectors).
    let organization_id = context.organization_id();
    ledger
        .wait_for_stream_type_of(&[read_tables::WALLET], organization_id, WalletAggregate::STREAM_TYPE, LOOKUP_WAIT)
        .await?;
    let mut read = ledger.tenant_read(organization_id).await?;
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "select distinct on (employee_id) employee_id, wallet_id from wallet.wallets \
         where employee_id = any($1) and currency = $2 and status = 'active' order by employee_id, last_position",
    )
    .bind(employees)
    .bind(run.currency.code())
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    Ok(rows.into_iter().collect())
}

/// One payment batch: its employees, the next batch's (read while this one is appended) and
/// every employee's wallet.
#[derive(Clone, Copy)]
struct Batch<'a> {
    employees: &'a [Uuid],
    next: Option<&'a [Uuid]>,
    wallets: &'a HashMap<Uuid, Uuid>,
}

impl Batch<'_> {
    fn wallet_ids(&self, employees: &[Uuid]) -> Vec<Uuid> {
        employees.iter().filter_map(|employee| self.wallets.get(employee).copied()).collect()
    }
}

/// Reads what the next batch needs (its items' calculation chunks, its wallets) while this
/// batch is appended: the append waits on PostgreSQL, the reads need not wait for it. The
/// wallets read ahead are only a first guess (the append checks their versions); a failed
/// read is left to the next batch to make again.
async fn read_ahead(
    ledger: &Ledger,
    organization_id: Uuid,
    run: &PayrollRun,
    batch: Batch<'_>,
    items: &mut RecordedItems,
) -> Option<BatchStates> {
    let next = batch.next?;
    let employees: Vec<EmployeeId> = next.iter().map(|employee| EmployeeId::from_uuid(*employee)).collect();
    let read = async {
        items.load(ledger, run, &employees).await?;
        BatchStates::read(ledger, organization_id, batch, next).await
    };
    match read.await {
        Ok(states) => Some(states),
        Err(error) => {
            tracing::debug!(%error, "reading the next payment batch ahead failed; it reads again");
            None
        }
    }
}

/// What paying a batch did, with the next batch's wallets and employees read meanwhile.
#[derive(Default)]
struct BatchPaid {
    progress: Progress,
    next_states: Option<BatchStates>,
}

/// Pays the still-pending items of `batch` in one append; on a conflict with another
/// processor, reloads and tries again (items it paid meanwhile are skipped).
///
/// `loaded` is the run and its version as this processor last wrote it, kept current; the
/// run is moved out for the batch rather than copied (a run of many items is large), and
/// after a conflict it is reloaded.
async fn pay_batch(
    ledger: &Ledger,
    context: &Context,
    run_id: Uuid,
    loaded: &mut RunState,
    batch: Batch<'_>,
    items: &mut RecordedItems,
    mut read_ahead_states: Option<BatchStates>,
) -> Result<BatchPaid> {
    let mut attempts = Attempts::up_to(BATCH_ATTEMPTS_MAX);
    loop {
        if !attempts.is_first() {
            *loaded = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
        }
        let read = read_ahead_states.take();
        let outcome = pay_batch_once(ledger, context, run_id, loaded, batch, items, read).await;
        if !attempts.retry(&outcome) {
            return outcome;
        }
    }
}

/// One attempt of [`pay_batch`].
async fn pay_batch_once(
    ledger: &Ledger,
    context: &Context,
    run_id: Uuid,
    loaded: &mut RunState,
    batch: Batch<'_>,
    items: &mut RecordedItems,
    read_ahead_states: Option<BatchStates>,
) -> Result<BatchPaid> {
    let organization_id = context.organization_id();
    let run_version = loaded.version;
    let run = loaded.state.take().ok_or_else(|| Error::NotFound(format!("no payroll run {run_id}")))?;
    if run.status != RunStatus::Processing {
        loaded.state = Some(run);
        return Ok(BatchPaid::default());
    }
    // Each payment is recorded in the employee's pay history too, checked against the history
    // the item was calculated from (the employee's stream version serializes payments).
    let states = match read_ahead_states {
        Some(read) => read,
        None => BatchStates::read(ledger, organization_id, batch, batch.employees).await?,
    };
    let employees: Vec<EmployeeId> = batch.employees.iter().map(|id| EmployeeId::from_uuid(*id)).collect();
    items.load(ledger, &run, &employees).await?;
    let facts = BatchFacts {
        organization_id,
        run_id,
        items,
        wallets: batch.wallets,
        wallet_states: &states.wallets,
        employee_states: &states.employees,
    };
    let decided = decide_batch(run, batch.employees, &facts, &mut || TransactionId::from_uuid(Uuid::now_v7()))?;
    if decided.run_events.is_empty() {
        loaded.state = decided.run;
        return Ok(BatchPaid::default());
    }
    let mut streams = decided.payments;
    streams.insert(0, stream_append::<PayrollRunAggregate>(organization_id, run_id, run_version, &decided.run_events));
    let run = decided.run.as_ref().expect("the run exists");
    let (appended, next_states) = tokio::join!(
        ledger.append(context, streams, KeyUse::Without),
        read_ahead(ledger, organization_id, run, batch, items)
    );
    let position = appended?.last_position();
    *loaded = Loaded { state: decided.run, version: run_version + decided.run_events.len() as u64 };
    Ok(BatchPaid { progress: Progress { paid: decided.paid, failed: decided.failed, position }, next_states })
}

/// What deciding a batch needs besides the run: the items' lines and where each goes.
struct BatchFacts<'a> {
    organization_id: Uuid,
    run_id: Uuid,
    items: &'a RecordedItems,
    /// Each employee's active wallet.
    wallets: &'a HashMap<Uuid, Uuid>,
    wallet_states: &'a WalletStates,
    employee_states: &'a EmployeeStates,
}

/// What paying one batch decided: the run as it will be, its events, and the transaction
/// and wallet streams of the payments.
struct BatchDecision {
    run: Option<PayrollRun>,
    run_events: Vec<PayrollRunEvent>,
    payments: Vec<StreamAppend>,
    paid: u64,
    failed: u64,
}

/// Decides the payment of `employees`' still-pending items: paid into their wallet, or
/// failed for want of one. Pure: the facts are read, the transaction ids given.
fn decide_batch(
    run: PayrollRun,
    employees: &[Uuid],
    facts: &BatchFacts<'_>,
    new_transaction_id: &mut dyn FnMut() -> TransactionId,
) -> Result<BatchDecision> {
    let mut decision =
        BatchDecision { run: Some(run), run_events: Vec::new(), payments: Vec::new(), paid: 0, failed: 0 };
    for employee in employees.iter().map(|id| EmployeeId::from_uuid(*id)) {
        let run = decision.run.as_ref().expect("the run exists");
        if run.items[&employee].status != ItemStatus::Pending {
            continue;
        }
        let item = facts.items.get(run, employee)?;
        let wallet = facts.wallets.get(&employee.as_uuid()).and_then(|id| Some((*id, facts.wallet_states.get(id)?)));
        let recorded = match wallet {
            Some(_) => record_pay(facts, run, item)?,
            None => Ok(None),
        };
        let command = match (wallet, recorded) {
            (_, Err(stale)) => {
                decision.failed += 1;
                PayrollRunCommand::MarkItemFailed {
                    employee_id: employee,
                    reason: format!("{STALE_CALCULATION}: {stale}"),
                }
            }
            (Some((wallet_id, Loaded { state: Some(wallet), version })), Ok(pay_history)) => {
                let transaction_id = new_transaction_id();
                let wallet = (WalletId::from_uuid(wallet_id), wallet, *version);
                decision.payments.extend(payment_streams(facts, item, wallet, transaction_id)?);
                decision.payments.extend(pay_history);
                decision.paid += 1;
                PayrollRunCommand::MarkItemPaid { employee_id: employee, transaction_id }
            }
            _ => {
                decision.failed += 1;
                let reason = format!("employee has no active wallet in {}", run.currency);
                PayrollRunCommand::MarkItemFailed { employee_id: employee, reason }
            }
        };
        let events = PayrollRunAggregate::decide(&decision.run, command)?;
        decision.run = events.iter().fold(decision.run, PayrollRunAggregate::evolve);
        decision.run_events.extend(events);
    }
    Ok(decision)
}

/// The employee stream's part of paying `item`: what it pays per period, checked against the
/// history it was calculated from. `Err` (inside `Ok`) when another run paid one of its
/// periods since: the item is not paid (the next regular run corrects the period). None for
/// an item that pays no period (one-off lines only).
fn record_pay(
    facts: &BatchFacts<'_>,
    run: &PayrollRun,
    item: &PayrollItem,
) -> Result<std::result::Result<Option<StreamAppend>, DomainError>> {
    let earnings = item.earnings_by_period(run.period);
    if earnings.is_empty() && item.basis.is_empty() {
        return Ok(Ok(None));
    }
    let employee_id = item.employee_id.as_uuid();
    let Some(Loaded { state, version }) = facts.employee_states.get(&employee_id) else {
        return Err(Error::NotFound(format!("no employee {employee_id}")));
    };
    if state.as_ref().is_some_and(|employee| employee.paid.contains_key(&run.id)) {
        // Another processor paid it after this one read the run: read the run again.
        return Err(Error::VersionConflict(ledger_store::StoreError::Conflict {
            stream_id: facts.run_id,
            expected: ledger_store::ExpectedVersion::Exact(0),
            actual: None,
        }));
    }
    let record = EmployeeCommand::RecordPay {
        payroll_run_id: PayrollRunId::from_uuid(facts.run_id),
        earnings,
        basis: item.basis.clone(),
    };
    match EmployeeAggregate::decide(state, record) {
        Ok(events) => {
            Ok(Ok(Some(stream_append::<EmployeeAggregate>(facts.organization_id, employee_id, *version, &events))))
        }
        Err(stale @ DomainError::StaleCalculation { .. }) => Ok(Err(stale)),
        Err(error) => Err(error.into()),
    }
}

/// The transaction and wallet streams that pay one item into `wallet` (id, state, version).
fn payment_streams(
    facts: &BatchFacts<'_>,
    item: &PayrollItem,
    (wallet_id, wallet, wallet_version): (WalletId, &Wallet, u64),
    transaction_id: TransactionId,
) -> Result<Vec<StreamAppend>> {
    let organization = OrganizationId::from_uuid(facts.organization_id);
    let record = TransactionCommand::Record {
        transaction_id,
        organization_id: organization,
        postings: payroll_item_postings(organization, wallet_id, item),
        reference: TransactionReference::PayrollItem {
            payroll_run_id: PayrollRunId::from_uuid(facts.run_id),
            employee_id: item.employee_id,
        },
    };
    let transaction_events = TransactionAggregate::decide(&None, record)?;
    let organization_id = facts.organization_id;
    let mut streams =
        vec![stream_append::<TransactionAggregate>(organization_id, transaction_id.as_uuid(), 0, &transaction_events)];
    if item.net.is_positive() {
        let credit = WalletCommand::Credit { amount: item.net.clone(), transaction_id };
        let wallet_events = WalletAggregate::decide(&Some(wallet.clone()), credit)?;
        streams.push(stream_append::<WalletAggregate>(
            organization_id,
            wallet_id.as_uuid(),
            wallet_version,
            &wallet_events,
        ));
    }
    Ok(streams)
}
