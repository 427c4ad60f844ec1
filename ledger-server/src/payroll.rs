//! Payroll operations that span several aggregates: calculating a run from the organization's
//! employees, processing it (paying every item: run, transaction and wallet in one atomic
//! append per batch), reversing it, withdrawals.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::NaiveDate;
use ledger_core::Aggregate;
use ledger_core::calendar::PayPeriod;
use ledger_core::employee::{Employee, EmployeeAggregate};
use ledger_core::gross_to_net::{DeductionRule, ItemInput, PaidPeriod, PayrollItem};
use ledger_core::ids::{EmployeeId, OrganizationId, PayrollRunId, TransactionId, WalletId};
use ledger_core::money::Money;
use ledger_core::organization::OrganizationAggregate;
use ledger_core::payroll::{
    Calculation, ItemStatus, PayrollRun, PayrollRunAggregate, PayrollRunCommand, PayrollRunEvent, RunStatus,
};
use ledger_core::transaction::{
    Direction, LedgerTransaction, Posting, TransactionAggregate, TransactionCommand, TransactionReference,
    payroll_item_postings, reversed_postings, wallet_account,
};
use ledger_core::wallet::{Wallet, WalletAggregate, WalletCommand};
use ledger_projections::Projection;
use ledger_projections::decode::{decode_recorded, new_event};
use ledger_projections::projections::{EmployeeProjection, PayrollProjection, WalletProjection};
use ledger_store::{NewEvent, StoreError};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::ledger::{Context, Ledger, Written, fold_stream, stream_append};

/// Items paid per atomic append.
pub const PAY_BATCH_ITEMS: usize = 500;
/// Streams loaded per query.
pub const LOAD_BATCH_STREAMS: usize = 1_000;
/// How long a command waits for the read tables it looks facts up in (after a bulk import
/// the projections may be minutes behind).
const LOOKUP_WAIT: Duration = Duration::from_secs(300);
/// Attempts of one payment batch that conflicts with another processor.
const BATCH_ATTEMPTS_MAX: usize = 5;

/// Loads many aggregates of one type in few queries.
pub async fn load_many<A: Aggregate>(
    ledger: &Ledger,
    organization_id: Uuid,
    ids: &[Uuid],
) -> AppResult<HashMap<Uuid, (A::State, u64)>> {
    let mut states = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(LOAD_BATCH_STREAMS) {
        let recorded = ledger.store().read_streams(chunk).await?;
        let mut by_stream: HashMap<Uuid, Vec<ledger_store::RecordedEvent>> = HashMap::new();
        for event in recorded {
            by_stream.entry(event.stream_id).or_default().push(event);
        }
        for id in chunk {
            let events = by_stream.remove(id).unwrap_or_default();
            states.insert(*id, fold_stream::<A>(organization_id, *id, &events)?);
        }
    }
    Ok(states)
}

async fn load_run(ledger: &Ledger, context: &Context, run_id: Uuid) -> AppResult<(PayrollRun, u64)> {
    let (state, version) = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
    let run = state.ok_or_else(|| AppError::NotFound(format!("no payroll run {run_id}")))?;
    Ok((run, version))
}

/// A run's calculation read and calculated a chunk of employees at a time: the organization's
/// employees employed in the period at the run's frequency and currency, their payment
/// history, and the organization's rules. Only the candidates' ids are read up front; a chunk's
/// employees, history and items are dropped once its event is produced, so a calculation of
/// any size holds one chunk. The run (and its version) is folded on as the events are
/// produced, so that the state after the calculation needs no reload.
struct CalculationSource<'a> {
    ledger: &'a Ledger,
    organization_id: Uuid,
    run: &'a mut (Option<PayrollRun>, u64),
    rules: Vec<DeductionRule>,
    candidates: Vec<Uuid>,
    next: usize,
    calculation: Option<Calculation>,
}

impl<'a> CalculationSource<'a> {
    async fn prepare(
        ledger: &'a Ledger,
        context: &Context,
        loaded: &'a mut (Option<PayrollRun>, u64),
    ) -> AppResult<CalculationSource<'a>> {
        let organization_id = context.organization_id();
        let run = loaded.0.as_ref().expect("a loaded run exists");
        // Reads the employee table and the payroll projection's paid earnings.
        ledger.wait_for_head_of(&[EmployeeProjection.name(), PayrollProjection.name()], LOOKUP_WAIT).await?;
        let (organization, _) = ledger.load::<OrganizationAggregate>(organization_id, organization_id).await?;
        let organization = organization
            .ok_or_else(|| AppError::NotFound("register the organization first: POST /v1/organization".to_owned()))?;
        let rules: Vec<DeductionRule> = organization.rules.into_values().collect();
        let calculation = Calculation::start(run, rules.clone(), context.actor())?;
        let mut read = ledger.tenant_read(organization_id).await?;
        let frequency = serde_json::to_value(run.frequency).expect("frequencies serialize");
        // In the order a calculation takes them: ascending id (uuid order is byte order in
        // PostgreSQL and in Rust alike).
        let candidates: Vec<Uuid> = sqlx::query_scalar(
            "select employee_id from employee.employees where pay_frequency = $1 and currency = $2 and start_date <= $3 order by employee_id",
        )
        .bind(frequency.as_str())
        .bind(run.currency.code())
        .bind(run.period.end())
        .fetch_all(&mut *read)
        .await?;
        read.commit().await?;
        Ok(CalculationSource {
            ledger,
            organization_id,
            run: loaded,
            rules,
            candidates,
            next: 0,
            calculation: Some(calculation),
        })
    }

    fn run(&self) -> &PayrollRun {
        self.run.0.as_ref().expect("a loaded run exists")
    }

    /// The inputs of some candidates: those owed pay in the run, with their history.
    async fn inputs(&self, candidates: &[Uuid]) -> AppResult<Vec<ItemInput>> {
        let run = self.run();
        let mut read = self.ledger.tenant_read(self.organization_id).await?;
        let paid: Vec<(Uuid, NaiveDate, NaiveDate, Decimal)> = sqlx::query_as(
            "select employee_id, period_start, period_end, sum(amount) from payroll.paid_earnings \
             where employee_id = any($1) and payroll_run_id <> $2 and currency = $3 group by 1, 2, 3 order by 1, 2",
        )
        .bind(candidates)
        .bind(run.id.as_uuid())
        .bind(run.currency.code())
        .fetch_all(&mut *read)
        .await?;
        read.commit().await?;
        let mut history: HashMap<Uuid, Vec<PaidPeriod>> = HashMap::new();
        for (employee_id, start, end, amount) in paid {
            let period = PayPeriod::new(start, end)?;
            let earnings = Money::new(amount, run.currency.clone())?;
            history.entry(employee_id).or_default().push(PaidPeriod { period, earnings });
        }
        let mut employees = load_many::<EmployeeAggregate>(self.ledger, self.organization_id, candidates).await?;
        let mut inputs = Vec::with_capacity(candidates.len());
        for id in candidates {
            let Some((Some(employee), _)) = employees.remove(id) else { continue };
            let input = ItemInput { employee, paid_periods: history.remove(id).unwrap_or_default() };
            if is_owed(&input, run, &self.rules) {
                inputs.push(input);
            }
        }
        Ok(inputs)
    }

    /// The calculation's next events: the chunks the next candidates fill, then the last
    /// chunk and the header; `None` when it is done.
    async fn next_events(&mut self) -> AppResult<Option<Vec<PayrollRunEvent>>> {
        if self.calculation.is_none() {
            return Ok(None);
        }
        if self.next < self.candidates.len() {
            let end = (self.next + LOAD_BATCH_STREAMS).min(self.candidates.len());
            let inputs = self.inputs(&self.candidates[self.next..end]).await?;
            self.next = end;
            let calculation = self.calculation.as_mut().expect("checked above");
            let mut events = Vec::new();
            for input in &inputs {
                events.extend(calculation.add(input)?);
            }
            return Ok(Some(events));
        }
        let calculation = self.calculation.take().expect("checked above");
        Ok(Some(calculation.finish()?))
    }

    /// The calculation's events encoded for the append, produced as it asks for them.
    fn into_events(self) -> impl futures_util::Stream<Item = AppResult<NewEvent>> + Send + 'a {
        futures_util::stream::try_unfold((self, VecDeque::new()), |(mut source, mut ready)| async move {
            loop {
                if let Some(event) = ready.pop_front() {
                    let encoded = new_event::<PayrollRunEvent>(&event);
                    let run = &mut source.run;
                    run.0 = PayrollRunAggregate::evolve_owned(run.0.take(), event);
                    run.1 += 1;
                    return Ok(Some((encoded, (source, ready))));
                }
                match source.next_events().await? {
                    Some(events) => ready.extend(events),
                    None => return Ok(None),
                }
            }
        })
    }
}

/// Whether an employee belongs in a run: employed on a day of its period, or owed a
/// correction for an earlier one.
fn is_owed(input: &ItemInput, run: &PayrollRun, rules: &[DeductionRule]) -> bool {
    let employee: &Employee = &input.employee;
    run.period.each_day().any(|day| employee.employed_on(day))
        || (!input.paid_periods.is_empty()
            && ledger_core::gross_to_net::calculate_item(input, run.period, run.frequency, &run.currency, rules)
                .is_ok())
}

/// Calculates (or recalculates) a run and records it: its chunks are appended as they are
/// calculated (one append, streamed), so the run's size does not decide the memory it takes.
pub async fn calculate(ledger: &Ledger, context: &Context, run_id: Uuid) -> AppResult<Written> {
    if let Some(written) = ledger.replayed(context).await? {
        return Ok(written);
    }
    for attempt in 1..=crate::ledger::COMMAND_ATTEMPTS_MAX {
        let (run, version) = load_run(ledger, context, run_id).await?;
        let mut loaded = (Some(run), version);
        let source = CalculationSource::prepare(ledger, context, &mut loaded).await?;
        match ledger.append_streamed::<PayrollRunAggregate, _>(context, run_id, version, source.into_events()).await {
            Ok(result) => {
                // The run as calculated, for whoever loads it next (the approval).
                if !result.replayed && result.streams.first().map(|head| head.version) == Some(loaded.1) {
                    ledger.remember::<PayrollRunAggregate>(context.organization_id(), run_id, &loaded);
                }
                return Ok(result.into());
            }
            // Another writer changed the run first (the version is checked before anything is
            // calculated): calculate again from the run as it is now.
            Err(AppError::Conflict { code: "version_conflict", .. })
                if attempt < crate::ledger::COMMAND_ATTEMPTS_MAX =>
            {
                continue;
            }
            Err(error) => return Err(error),
        }
    }
    unreachable!("the last attempt returns")
}

/// What a calculation would give, without recording it.
pub async fn preview(ledger: &Ledger, context: &Context, run_id: Uuid) -> AppResult<Vec<PayrollItem>> {
    let (run, version) = load_run(ledger, context, run_id).await?;
    let mut loaded = (Some(run), version);
    let mut source = CalculationSource::prepare(ledger, context, &mut loaded).await?;
    let mut items = Vec::new();
    while let Some(events) = source.next_events().await? {
        for event in events {
            if let PayrollRunEvent::PayrollItemsCalculated { items: chunk, .. } = event {
                items.extend(chunk);
            }
        }
    }
    Ok(items)
}

/// The whole items of a run, read back from the calculation events that record them: a
/// payment needs an item's lines, which the run does not keep. Holds the events of the last
/// items asked for (a payment batch's items are in one or two chunks, and the next batch
/// starts where the last one ended).
#[derive(Debug, Default)]
pub struct RecordedItems {
    events: Vec<(u64, HashMap<EmployeeId, PayrollItem>)>,
}

impl RecordedItems {
    /// Reads the events that record `employees`' items of `run` (those not held already).
    pub async fn load(&mut self, ledger: &Ledger, run: &PayrollRun, employees: &[EmployeeId]) -> AppResult<()> {
        let mut versions: Vec<u64> = employees
            .iter()
            .filter_map(|employee| run.items.get(employee))
            .map(|item| item.recorded_at_version)
            .collect();
        versions.sort_unstable();
        versions.dedup();
        self.events.retain(|(version, _)| versions.binary_search(version).is_ok());
        versions.retain(|version| !self.events.iter().any(|(held, _)| held == version));
        if versions.is_empty() {
            return Ok(());
        }
        for recorded in ledger.store().read_stream_versions(run.id.as_uuid(), &versions).await? {
            let items = match decode_recorded::<PayrollRunEvent>(&recorded)? {
                PayrollRunEvent::PayrollItemsCalculated { items, .. }
                | PayrollRunEvent::PayrollRunCalculated { items, .. } => items,
                other => {
                    return Err(AppError::internal(format!(
                        "version {} of run {} records no items but {other:?}",
                        recorded.stream_version, run.id
                    )));
                }
            };
            self.events
                .push((recorded.stream_version, items.into_iter().map(|item| (item.employee_id, item)).collect()));
        }
        Ok(())
    }

    /// An item [`RecordedItems::load`] read.
    pub fn get(&self, run: &PayrollRun, employee: EmployeeId) -> AppResult<&PayrollItem> {
        let version = run.items.get(&employee).map(|item| item.recorded_at_version);
        self.events
            .iter()
            .filter(|(held, _)| Some(*held) == version)
            .find_map(|(_, items)| items.get(&employee))
            .ok_or_else(|| {
                AppError::internal(format!(
                    "the item of employee {employee} in run {} was not read (version {version:?})",
                    run.id
                ))
            })
    }
}

/// The outcome of processing a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    pub status: RunStatus,
    pub paid_now: u64,
    pub failed_now: u64,
    pub paid: u64,
    pub failed: u64,
    pub held: u64,
    pub position: i64,
}

fn count(run: &PayrollRun, wanted: fn(&ItemStatus) -> bool) -> u64 {
    run.items.values().filter(|item| wanted(&item.status)).count() as u64
}

/// The active wallet of each employee in the run's currency, from the wallet read table.
async fn wallets_of(
    ledger: &Ledger,
    context: &Context,
    run: &PayrollRun,
    employees: &[Uuid],
) -> AppResult<HashMap<Uuid, Uuid>> {
    ledger.wait_for_head_of(&[WalletProjection.name()], LOOKUP_WAIT).await?;
    let mut read = ledger.tenant_read(context.organization_id()).await?;
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

/// Pays every pending item of an approved or processing run, in batches; each batch is one
/// atomic append of the run, the transactions and the wallets. Resumable: run again after a
/// crash, it pays the rest and nobody twice. Completes the run when nothing is pending.
pub async fn process(ledger: &Ledger, context: &Context, run_id: Uuid) -> AppResult<ProcessReport> {
    // The run is loaded once and kept current as this processor writes it (reloaded after a
    // conflict with another processor): a run of many items costs more to load than a batch.
    let started = std::time::Instant::now();
    let mut loaded = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
    tracing::debug!(load_ms = started.elapsed().as_millis() as u64, "processing: run loaded");
    let status = |loaded: &(Option<PayrollRun>, u64)| loaded.0.as_ref().map(|run| run.status);
    match status(&loaded) {
        None => return Err(AppError::NotFound(format!("no payroll run {run_id}"))),
        Some(RunStatus::Approved) => {
            let start = PayrollRunCommand::StartProcessing { actor: context.actor() };
            match ledger.execute_loaded::<PayrollRunAggregate>(context, run_id, &mut loaded, start).await {
                Ok(_) | Err(AppError::Domain(ledger_core::DomainError::WrongStatus { .. })) => {}
                Err(error) => return Err(error),
            }
        }
        Some(_) => {}
    }
    // The idempotency key stands for starting the run; the payments and the completion are
    // idempotent by the run's own state.
    let context = &context.without_idempotency();
    let (mut paid_now, mut failed_now, mut position) = (0, 0, 0);
    match status(&loaded) {
        Some(RunStatus::Processing) => {
            let run = loaded.0.as_ref().expect("the run exists");
            let pending: Vec<Uuid> = run
                .items
                .iter()
                .filter(|(_, item)| item.status == ItemStatus::Pending)
                .map(|(id, _)| id.as_uuid())
                .collect();
            let wallets = wallets_of(ledger, context, run, &pending).await?;
            tracing::debug!(since_start_ms = started.elapsed().as_millis() as u64, "processing: wallets looked up");
            let mut items = RecordedItems::default();
            let batches: Vec<&[Uuid]> = pending.chunks(ledger.pay_batch_items()).collect();
            let mut read_ahead = None;
            for (index, batch) in batches.iter().enumerate() {
                let batch = Batch { employees: batch, next: batches.get(index + 1).copied(), wallets: &wallets };
                let (paid, failed, written, next_wallets) =
                    pay_batch(ledger, context, run_id, &mut loaded, batch, &mut items, read_ahead.take()).await?;
                read_ahead = next_wallets;
                paid_now += paid;
                failed_now += failed;
                position = position.max(written);
            }
            let complete = PayrollRunCommand::Complete;
            match ledger.execute_loaded::<PayrollRunAggregate>(context, run_id, &mut loaded, complete).await {
                Ok(written) => position = position.max(written.position),
                // Another processor completed it meanwhile.
                Err(AppError::Domain(ledger_core::DomainError::WrongStatus { .. })) => {
                    loaded = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
                }
                Err(error) => return Err(error),
            }
        }
        Some(RunStatus::Completed | RunStatus::PartiallyFailed) => {}
        Some(status) => {
            return Err(AppError::Domain(ledger_core::DomainError::WrongStatus {
                entity: "payroll run",
                action: "process",
                status: format!("{status:?}"),
            }));
        }
        None => unreachable!("the run exists"),
    }
    ledger.remember::<PayrollRunAggregate>(context.organization_id(), run_id, &loaded);
    let run = loaded.0.expect("the run exists");
    Ok(ProcessReport {
        status: run.status,
        paid_now,
        failed_now,
        paid: count(&run, |status| matches!(status, ItemStatus::Paid { .. })),
        failed: count(&run, |status| matches!(status, ItemStatus::Failed { .. })),
        held: count(&run, |status| matches!(status, ItemStatus::Held { .. })),
        position,
    })
}

/// One payment batch: its employees, the next batch's (read while this one is appended) and
/// every employee's wallet.
#[derive(Clone, Copy)]
struct Batch<'a> {
    employees: &'a [Uuid],
    next: Option<&'a [Uuid]>,
    wallets: &'a HashMap<Uuid, Uuid>,
}

type WalletStates = HashMap<Uuid, (Option<Wallet>, u64)>;

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
) -> Option<WalletStates> {
    let next = batch.next?;
    let employees: Vec<EmployeeId> = next.iter().map(|employee| EmployeeId::from_uuid(*employee)).collect();
    let read = async {
        items.load(ledger, run, &employees).await?;
        load_many::<WalletAggregate>(ledger, organization_id, &batch.wallet_ids(next)).await
    };
    match read.await {
        Ok(wallets) => Some(wallets),
        Err(error) => {
            tracing::debug!(%error, "reading the next payment batch ahead failed; it reads again");
            None
        }
    }
}

/// Pays the still-pending items of `batch` in one append; on a conflict with another
/// processor, reloads and tries again (items it paid meanwhile are skipped). Returns the
/// next batch's wallets, read while this one was appended.
///
/// `loaded` is the run and its version as this processor last wrote it, kept current; the
/// run is moved out for the batch rather than copied (a run of many items is large), and
/// after a conflict it is reloaded.
async fn pay_batch(
    ledger: &Ledger,
    context: &Context,
    run_id: Uuid,
    loaded: &mut (Option<PayrollRun>, u64),
    batch: Batch<'_>,
    items: &mut RecordedItems,
    mut read_ahead_wallets: Option<WalletStates>,
) -> AppResult<(u64, u64, i64, Option<WalletStates>)> {
    let organization_id = context.organization_id();
    let wallets = batch.wallets;
    for attempt in 1..=BATCH_ATTEMPTS_MAX {
        if attempt > 1 {
            *loaded = ledger.load::<PayrollRunAggregate>(organization_id, run_id).await?;
        }
        let run_version = loaded.1;
        let run = loaded.0.take().ok_or_else(|| AppError::NotFound(format!("no payroll run {run_id}")))?;
        if run.status != RunStatus::Processing {
            loaded.0 = Some(run);
            return Ok((0, 0, 0, None));
        }
        let started = std::time::Instant::now();
        let wallet_states = match read_ahead_wallets.take() {
            Some(read) => read,
            None => load_many::<WalletAggregate>(ledger, organization_id, &batch.wallet_ids(batch.employees)).await?,
        };
        let employees: Vec<EmployeeId> =
            batch.employees.iter().map(|employee| EmployeeId::from_uuid(*employee)).collect();
        items.load(ledger, &run, &employees).await?;
        let mut state = Some(run);
        let mut run_events = Vec::new();
        let mut streams = Vec::new();
        let (mut paid, mut failed) = (0, 0);
        for employee in batch.employees {
            let run = state.as_ref().expect("the run exists");
            if run.items[&EmployeeId::from_uuid(*employee)].status != ItemStatus::Pending {
                continue;
            }
            let item = items.get(run, EmployeeId::from_uuid(*employee))?;
            let wallet =
                wallets.get(employee).and_then(|wallet| wallet_states.get(wallet).map(|state| (*wallet, state)));
            let (command, mut payment) = match wallet {
                Some((wallet_id, (Some(wallet), version))) => {
                    let transaction_id = TransactionId::from_uuid(Uuid::new_v4());
                    let payment = payment_streams(
                        organization_id,
                        run_id,
                        item,
                        WalletId::from_uuid(wallet_id),
                        wallet,
                        *version,
                        transaction_id,
                    )?;
                    (
                        PayrollRunCommand::MarkItemPaid {
                            employee_id: EmployeeId::from_uuid(*employee),
                            transaction_id,
                        },
                        payment,
                    )
                }
                _ => {
                    let reason = format!("employee has no active wallet in {}", run.currency);
                    (
                        PayrollRunCommand::MarkItemFailed { employee_id: EmployeeId::from_uuid(*employee), reason },
                        Vec::new(),
                    )
                }
            };
            let events = PayrollRunAggregate::decide(&state, command)?;
            if payment.is_empty() {
                failed += 1
            } else {
                paid += 1
            }
            state = events.iter().fold(state, PayrollRunAggregate::evolve);
            run_events.extend(events);
            streams.append(&mut payment);
        }
        if run_events.is_empty() {
            loaded.0 = state;
            return Ok((0, 0, 0, None));
        }
        streams.insert(0, stream_append::<PayrollRunAggregate>(organization_id, run_id, run_version, &run_events));
        let decided = started.elapsed();
        let run = state.as_ref().expect("the run exists");
        let (appended, next_wallets) = tokio::join!(
            ledger.append(context, streams, false),
            read_ahead(ledger, organization_id, run, batch, items)
        );
        tracing::debug!(
            items = run_events.len(),
            decide_ms = decided.as_millis() as u64,
            append_ms = (started.elapsed() - decided).as_millis() as u64,
            "payment batch"
        );
        match appended {
            Ok(result) => {
                *loaded = (state, run_version + run_events.len() as u64);
                return Ok((paid, failed, result.last_position(), next_wallets));
            }
            // Another processor wrote the run: it is reloaded.
            Err(StoreError::Conflict { .. }) if attempt < BATCH_ATTEMPTS_MAX => continue,
            Err(error) => return Err(error.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// The transaction and wallet streams that pay one item.
fn payment_streams(
    organization_id: Uuid,
    run_id: Uuid,
    item: &PayrollItem,
    wallet_id: WalletId,
    wallet: &Wallet,
    wallet_version: u64,
    transaction_id: TransactionId,
) -> AppResult<Vec<ledger_store::StreamAppend>> {
    let organization = OrganizationId::from_uuid(organization_id);
    let record = TransactionCommand::Record {
        transaction_id,
        organization_id: organization,
        postings: payroll_item_postings(organization, wallet_id, item),
        reference: TransactionReference::PayrollItem {
            payroll_run_id: PayrollRunId::from_uuid(run_id),
            employee_id: item.employee_id,
        },
    };
    let transaction_events = TransactionAggregate::decide(&None, record)?;
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

/// Reverses a paid run: the run's reversal event, then per paid item a transaction with the
/// postings turned around and a wallet debit of what the wallet still holds of the net.
pub async fn reverse(ledger: &Ledger, context: &Context, run_id: Uuid, reason: String) -> AppResult<Written> {
    if let Some(written) = ledger.replayed(context).await? {
        return Ok(written);
    }
    let organization_id = context.organization_id();
    let (run, run_version) = load_run(ledger, context, run_id).await?;
    let run_events =
        PayrollRunAggregate::decide(&Some(run.clone()), PayrollRunCommand::Reverse { reason, actor: context.actor() })?;
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
    // Each paid item with its payment and the wallet that payment credited.
    let payments: Vec<(EmployeeId, &LedgerTransaction, Option<Uuid>, &Money)> = paid
        .iter()
        .filter_map(|(employee, original, net)| {
            let (Some(transaction), _) = originals.get(&original.as_uuid())? else { return None };
            let wallet = transaction
                .postings
                .iter()
                .find_map(|posting| posting.account.strip_prefix("wallet:"))
                .and_then(|id| id.parse::<Uuid>().ok());
            Some((*employee, transaction, wallet, net))
        })
        .collect();
    let wallet_ids: Vec<Uuid> = payments.iter().filter_map(|(_, _, wallet, _)| *wallet).collect();
    let wallets = load_many::<WalletAggregate>(ledger, organization_id, &wallet_ids).await?;
    let mut streams = vec![stream_append::<PayrollRunAggregate>(organization_id, run_id, run_version, &run_events)];
    for (employee, transaction, wallet, net) in payments {
        let reversal = TransactionId::from_uuid(Uuid::new_v4());
        let record = TransactionCommand::Record {
            transaction_id: reversal,
            organization_id: OrganizationId::from_uuid(organization_id),
            postings: reversed_postings(&transaction.postings),
            reference: TransactionReference::PayrollReversal {
                payroll_run_id: PayrollRunId::from_uuid(run_id),
                employee_id: employee,
            },
        };
        let record = TransactionAggregate::decide(&None, record)?;
        streams.push(stream_append::<TransactionAggregate>(organization_id, reversal.as_uuid(), 0, &record));
        if let Some(wallet_id) = wallet
            && let Some((Some(wallet_state), version)) = wallets.get(&wallet_id)
        {
            // Take back what the wallet still holds of the net; the rest is owed outside.
            let take_back = (*net).clone().min(wallet_state.balance.clone())?;
            if take_back.is_positive() {
                let debit = WalletCommand::Debit { amount: take_back, transaction_id: reversal };
                let events = WalletAggregate::decide(&Some(wallet_state.clone()), debit)?;
                streams.push(stream_append::<WalletAggregate>(organization_id, wallet_id, *version, &events));
            }
        }
    }
    Ok(ledger.append(context, streams, true).await?.into())
}

/// An employee withdraws from their wallet: a balanced transaction (wallet to the external
/// payout account) and the wallet's debit, in one append.
pub async fn withdraw(
    ledger: &Ledger,
    context: &Context,
    wallet_id: Uuid,
    amount: Money,
    destination: &str,
) -> AppResult<(Uuid, Written)> {
    if let Some(written) = ledger.replayed(context).await? {
        return Ok((context.new_id("withdrawal"), written));
    }
    let organization_id = context.organization_id();
    for attempt in 1..=crate::ledger::COMMAND_ATTEMPTS_MAX {
        let (wallet, version) = ledger.load::<WalletAggregate>(organization_id, wallet_id).await?;
        if wallet.is_none() {
            return Err(AppError::NotFound(format!("no wallet {wallet_id}")));
        }
        let transaction_id = TransactionId::from_uuid(context.new_id("withdrawal"));
        let postings = vec![
            Posting {
                account: wallet_account(WalletId::from_uuid(wallet_id)),
                direction: Direction::Credit,
                amount: amount.clone(),
            },
            Posting { account: format!("external:{destination}"), direction: Direction::Debit, amount: amount.clone() },
        ];
        let record = TransactionCommand::Record {
            transaction_id,
            organization_id: OrganizationId::from_uuid(organization_id),
            postings,
            reference: TransactionReference::Withdrawal { wallet_id: WalletId::from_uuid(wallet_id) },
        };
        let debit = WalletAggregate::decide(&wallet, WalletCommand::Debit { amount: amount.clone(), transaction_id })?;
        let streams = vec![
            stream_append::<TransactionAggregate>(
                organization_id,
                transaction_id.as_uuid(),
                0,
                &TransactionAggregate::decide(&None, record)?,
            ),
            stream_append::<WalletAggregate>(organization_id, wallet_id, version, &debit),
        ];
        match ledger.append(context, streams, true).await {
            Ok(result) => return Ok((transaction_id.as_uuid(), result.into())),
            Err(StoreError::Conflict { .. }) if attempt < crate::ledger::COMMAND_ATTEMPTS_MAX => continue,
            Err(error) => return Err(error.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// The payout rail's confirmation of one payment: its signature and the block it landed in.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub signature: String,
    pub block_hash: String,
}

/// Settles every still-pending payment of a run with what `confirm` says the rail reported,
/// a batch of transactions per append. Returns how many were settled now.
pub async fn settle_run(
    ledger: &Ledger,
    context: &Context,
    run_id: Uuid,
    confirm: impl Fn(TransactionId) -> Settlement,
) -> AppResult<u64> {
    let organization_id = context.organization_id();
    let paid: Vec<Uuid> = {
        let (run, _) = load_run(ledger, context, run_id).await?;
        run.items
            .values()
            .filter_map(|item| match item.status {
                ItemStatus::Paid { transaction_id } => Some(transaction_id.as_uuid()),
                _ => None,
            })
            .collect()
    };
    let batches: Vec<&[Uuid]> = paid.chunks(ledger.pay_batch_items()).collect();
    let mut settled = 0;
    let mut read_ahead = None;
    for (index, batch) in batches.iter().enumerate() {
        let next = batches.get(index + 1).copied();
        for attempt in 1..=BATCH_ATTEMPTS_MAX {
            let transactions = match read_ahead.take() {
                Some(read) => read,
                None => load_many::<TransactionAggregate>(ledger, organization_id, batch).await?,
            };
            let mut streams = Vec::new();
            for id in *batch {
                let Some((Some(transaction), version)) = transactions.get(id) else { continue };
                if transaction.status != ledger_core::transaction::TransactionStatus::Pending {
                    continue;
                }
                let confirmation = confirm(transaction.id);
                let settle = TransactionCommand::Settle {
                    signature: confirmation.signature,
                    block_hash: confirmation.block_hash,
                };
                let events = TransactionAggregate::decide(&Some(transaction.clone()), settle)?;
                streams.push(stream_append::<TransactionAggregate>(organization_id, *id, *version, &events));
            }
            if streams.is_empty() {
                break;
            }
            let count = streams.len() as u64;
            // The next batch's transactions are read while this one is appended (a first
            // guess: the append checks their versions).
            let read_next = async {
                let next = next?;
                load_many::<TransactionAggregate>(ledger, organization_id, next).await.ok()
            };
            let (appended, next_read) = tokio::join!(ledger.append(context, streams, false), read_next);
            match appended {
                Ok(_) => {
                    settled += count;
                    read_ahead = next_read;
                    break;
                }
                // Another settler (or a failure, a void) changed one of them: read again.
                Err(StoreError::Conflict { .. }) if attempt < BATCH_ATTEMPTS_MAX => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(settled)
}
