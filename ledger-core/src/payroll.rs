//! The payroll run: draft -> calculated -> approved -> processing -> completed (or partially
//! failed); void before payment, reverse after it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar::{PayFrequency, PayPeriod};
use crate::error::{DomainError, require_text};
use crate::event::{Aggregate, DomainEvent};
use crate::gross_to_net::{
    DeductionRule, HoldReason, ItemInput, OneOffLine, PayrollItem, calculate_item, calculate_one_off,
};
use crate::ids::{EmployeeId, OrganizationId, PayScheduleId, PayrollRunId, TransactionId};
use crate::money::{Currency, Money};

/// How many days after its period's last day a run's pay date may be.
pub const PAY_DATE_DAYS_AFTER_MAX: u64 = 366;

/// The most items one run may hold.
pub const RUN_ITEMS_MAX: usize = 200_000;
/// The most items one `PayrollItemsCalculated` event carries: a calculation is recorded as
/// bounded chunks of items and a header with the totals, so no event grows with the payroll.
pub const CALCULATION_CHUNK_ITEMS: usize = 1_000;
/// The most employees one `OffCycleLinesAdded` event lists (an off-cycle run of more is
/// given its lines in several requests).
pub const ONE_OFF_ENTRIES_MAX: usize = 1_000;

/// How the failure of an item whose calculation went out of date begins (another run paid
/// one of its periods since it was calculated): never released, the next regular run
/// corrects the period.
pub const STALE_CALCULATION: &str = "calculation out of date";

/// One employee's lines in an off-cycle run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneOffEntry {
    pub employee_id: EmployeeId,
    pub lines: Vec<OneOffLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RunKind {
    Regular,
    OffCycle { reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Draft,
    Calculated,
    Approved,
    Processing,
    Completed,
    PartiallyFailed,
    Voided,
    /// A reversal started: paid items are reversed in bounded batches; resumable.
    Reversing,
    Reversed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ItemStatus {
    Pending,
    Held {
        hold: HoldReason,
    },
    Paid {
        transaction_id: TransactionId,
    },
    Failed {
        reason: String,
    },
    /// Paid, then reversed by `reversal` (absent in reversals recorded before it was kept).
    Reversed {
        reversal: Option<TransactionId>,
    },
}

/// What a run keeps of one item: its amounts in the run's currency, the stream version of
/// the event that records the whole item (its calculation chunk) and its status. The lines
/// (earnings, deductions, contributions) stay in that event: at 100,000 employees the whole
/// items would be hundreds of megabytes, this is ~150 bytes an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunItem {
    pub gross: Decimal,
    pub deductions: Decimal,
    pub contributions: Decimal,
    pub net: Decimal,
    pub recorded_at_version: u64,
    pub status: ItemStatus,
}

impl RunItem {
    fn of(item: &PayrollItem, recorded_at_version: u64) -> RunItem {
        RunItem {
            gross: item.gross.amount(),
            deductions: item.deductions_total.amount(),
            contributions: item.contributions_total.amount(),
            net: item.net.amount(),
            recorded_at_version,
            status: match &item.hold {
                Some(hold) => ItemStatus::Held { hold: hold.clone() },
                None => ItemStatus::Pending,
            },
        }
    }
}

/// Sums over all items of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTotals {
    pub items: u64,
    pub gross: Money,
    pub deductions: Money,
    pub contributions: Money,
    pub net: Money,
    pub employer_cost: Money,
}

impl RunTotals {
    /// No items yet.
    pub fn zero(currency: &Currency) -> RunTotals {
        let zero = Money::zero(currency.clone());
        RunTotals {
            items: 0,
            gross: zero.clone(),
            deductions: zero.clone(),
            contributions: zero.clone(),
            net: zero.clone(),
            employer_cost: zero,
        }
    }

    pub fn of<'a>(
        currency: &Currency,
        items: impl IntoIterator<Item = &'a PayrollItem>,
    ) -> Result<RunTotals, DomainError> {
        let mut totals = RunTotals::zero(currency);
        for item in items {
            totals.add(item)?;
        }
        Ok(totals)
    }

    /// Counts one more item.
    pub fn add(&mut self, item: &PayrollItem) -> Result<(), DomainError> {
        self.items += 1;
        self.gross = self.gross.checked_add(&item.gross)?;
        self.deductions = self.deductions.checked_add(&item.deductions_total)?;
        self.contributions = self.contributions.checked_add(&item.contributions_total)?;
        self.net = self.net.checked_add(&item.net)?;
        self.employer_cost = self.employer_cost.checked_add(&item.employer_cost())?;
        Ok(())
    }

    /// The totals of the items a run keeps (amounts in `currency`).
    pub fn of_run_items<'a>(
        currency: &Currency,
        items: impl IntoIterator<Item = &'a RunItem>,
    ) -> Result<RunTotals, DomainError> {
        let mut totals = RunTotals::zero(currency);
        let money = |amount: Decimal| Money::new(amount, currency.clone());
        for item in items {
            totals.items += 1;
            totals.gross = totals.gross.checked_add(&money(item.gross)?)?;
            totals.deductions = totals.deductions.checked_add(&money(item.deductions)?)?;
            totals.contributions = totals.contributions.checked_add(&money(item.contributions)?)?;
            totals.net = totals.net.checked_add(&money(item.net)?)?;
            totals.employer_cost = totals.employer_cost.checked_add(&money(item.gross + item.contributions)?)?;
        }
        Ok(totals)
    }
}

/// An item of a reversal: the paid item's amounts negated, pointing to its payment and to the
/// transaction that reverses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReversalItem {
    pub employee_id: EmployeeId,
    pub reverses_transaction_id: TransactionId,
    /// Absent in reversals recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<TransactionId>,
    pub gross: Money,
    pub deductions: Money,
    pub contributions: Money,
    pub net: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayrollRun {
    pub id: PayrollRunId,
    pub organization_id: OrganizationId,
    pub period: PayPeriod,
    /// The day the run's pay is dated (its period's last day unless given): a payment
    /// counts in the tax year of its run's pay date.
    pub pay_date: NaiveDate,
    pub frequency: PayFrequency,
    pub currency: Currency,
    pub kind: RunKind,
    /// The schedule whose period a regular run pays (claimed in the schedule's stream); none
    /// for off-cycle runs and for runs created before schedules had ids.
    pub pay_schedule_id: Option<PayScheduleId>,
    /// An off-cycle run's lines, by employee.
    pub one_off: BTreeMap<EmployeeId, Vec<OneOffLine>>,
    pub status: RunStatus,
    pub created_by: String,
    pub calculated_by: Option<String>,
    pub approved_by: Option<String>,
    /// Why and by whom a reversal was started.
    pub reversal: Option<(String, String)>,
    pub items: BTreeMap<EmployeeId, RunItem>,
    pub totals: RunTotals,
    /// Items of a calculation whose header (`PayrollRunCalculated`) is still to come.
    pub calculating: Vec<(EmployeeId, RunItem)>,
    /// The events folded so far: the run stream's version, which locates each item's
    /// calculation chunk.
    pub version: u64,
}

impl PayrollRun {
    /// An amount of this run's currency (an item's amounts are kept as bare decimals).
    pub fn money(&self, amount: Decimal) -> Money {
        Money::new(amount, self.currency.clone()).expect("a run's amounts are in its currency")
    }

    pub fn is_off_cycle(&self) -> bool {
        matches!(self.kind, RunKind::OffCycle { .. })
    }

    /// Whether an employee belongs in this run: employed on a day of its period, or owed a
    /// correction for an earlier one.
    pub fn owes(&self, input: &ItemInput, rules: &[DeductionRule]) -> bool {
        if self.is_off_cycle() {
            return self.one_off.contains_key(&input.employee.id);
        }
        self.period.each_day().any(|day| input.employee.employed_on(day))
            || (!input.paid_periods.is_empty()
                && calculate_item(input, self.period, self.frequency, &self.currency, rules).is_ok())
    }
}

#[derive(Debug, Clone)]
pub enum PayrollRunCommand {
    Create {
        payroll_run_id: PayrollRunId,
        organization_id: OrganizationId,
        period: PayPeriod,
        /// The period's last day when none is given.
        pay_date: Option<NaiveDate>,
        frequency: PayFrequency,
        currency: Currency,
        kind: RunKind,
        pay_schedule_id: Option<PayScheduleId>,
        actor: String,
    },
    /// Adds employees' lines to an off-cycle run before it is approved (a calculated run is
    /// to be calculated again).
    AddOneOffLines {
        entries: Vec<OneOffEntry>,
        actor: String,
    },
    /// Calculates, or recalculates while not approved. Employees and their payment history
    /// are looked up by the caller; shared, so that retrying the command after a conflict
    /// does not copy every employee.
    Calculate {
        inputs: Arc<[ItemInput]>,
        rules: Vec<DeductionRule>,
        actor: String,
    },
    Approve {
        actor: String,
    },
    StartProcessing {
        actor: String,
    },
    MarkItemPaid {
        employee_id: EmployeeId,
        transaction_id: TransactionId,
    },
    MarkItemFailed {
        employee_id: EmployeeId,
        reason: String,
    },
    Complete,
    Void {
        reason: String,
        actor: String,
    },
    /// Starts a reversal of a paid run.
    Reverse {
        reason: String,
        actor: String,
    },
    /// Reverses paid items, each by the transaction given (at most
    /// [`CALCULATION_CHUNK_ITEMS`]).
    ReverseItems {
        items: Vec<(EmployeeId, TransactionId)>,
    },
    /// Closes a reversal once no item is paid any more.
    CompleteReversal,
    /// Puts held items whose cause cleared (KYC approved since) and failed items back to be
    /// paid; a completed run is processing again (at most [`CALCULATION_CHUNK_ITEMS`]).
    ReleaseItems {
        employee_ids: Vec<EmployeeId>,
        actor: String,
    },
    /// The rail refused an item's payment after it was paid: the item is failed (and may be
    /// released and paid again).
    FailPayment {
        employee_id: EmployeeId,
        transaction_id: TransactionId,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum PayrollRunEvent {
    PayrollRunCreated {
        payroll_run_id: PayrollRunId,
        organization_id: OrganizationId,
        period: PayPeriod,
        /// Absent when it is the period's last day (and in runs created before pay dates).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pay_date: Option<NaiveDate>,
        frequency: PayFrequency,
        currency: Currency,
        kind: RunKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pay_schedule_id: Option<PayScheduleId>,
        created_by: String,
    },
    /// Employees' lines of an off-cycle run (at most [`ONE_OFF_ENTRIES_MAX`] employees an
    /// event); an employee listed again gets the lines added to theirs.
    OffCycleLinesAdded {
        entries: Vec<OneOffEntry>,
        added_by: String,
    },
    /// One chunk of a calculation's items (at most [`CALCULATION_CHUNK_ITEMS`]); chunk 0
    /// starts a calculation. The `PayrollRunCalculated` header follows the last chunk in
    /// the same append.
    PayrollItemsCalculated {
        chunk: u32,
        items: Vec<PayrollItem>,
    },
    /// Closes a calculation: its totals are the sum of the chunks' items. `items` is empty
    /// since chunks exist; a calculation recorded before carries all its items here.
    PayrollRunCalculated {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        items: Vec<PayrollItem>,
        totals: RunTotals,
        calculated_by: String,
    },
    PayrollRunApproved {
        approved_by: String,
    },
    PayrollRunProcessingStarted {
        started_by: String,
    },
    PayrollItemPaid {
        employee_id: EmployeeId,
        transaction_id: TransactionId,
        net: Money,
    },
    PayrollItemFailed {
        employee_id: EmployeeId,
        reason: String,
    },
    PayrollRunCompleted {
        status: RunStatus,
        paid: u64,
        failed: u64,
        held: u64,
    },
    PayrollRunVoided {
        reason: String,
        voided_by: String,
    },
    /// A reversal started: the run's paid items are reversed in `PayrollItemsReversed`
    /// batches, then `PayrollRunReversed` closes it.
    PayrollRunReversalStarted {
        reason: String,
        reversed_by: String,
    },
    /// Paid items reversed (at most [`CALCULATION_CHUNK_ITEMS`]), in the same append as
    /// their reversing transactions and wallet debits.
    PayrollItemsReversed {
        items: Vec<ReversalItem>,
    },
    /// Closes a reversal. `items` is empty since reversals are batched; a reversal recorded
    /// before carries every item here (and started and ended in this one event).
    PayrollRunReversed {
        reason: String,
        reversed_by: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        items: Vec<ReversalItem>,
    },
    /// Held or failed items put back to be paid (a completed run is processing again).
    PayrollItemsReleased {
        employee_ids: Vec<EmployeeId>,
        released_by: String,
    },
    /// The rail refused a payment after the item was recorded paid; the payment's
    /// transaction failed and the wallet credit was taken back in the same append.
    PayrollItemPaymentFailed {
        employee_id: EmployeeId,
        transaction_id: TransactionId,
        reason: String,
    },
}

impl DomainEvent for PayrollRunEvent {
    const EVENT_TYPES: &'static [&'static str] = &[
        "PayrollRunCreated",
        "OffCycleLinesAdded",
        "PayrollItemsCalculated",
        "PayrollRunCalculated",
        "PayrollRunApproved",
        "PayrollRunProcessingStarted",
        "PayrollItemPaid",
        "PayrollItemFailed",
        "PayrollRunCompleted",
        "PayrollRunVoided",
        "PayrollRunReversalStarted",
        "PayrollItemsReversed",
        "PayrollRunReversed",
        "PayrollItemsReleased",
        "PayrollItemPaymentFailed",
    ];
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PayrollRunAggregate;

fn wrong_status(run: &PayrollRun, action: &'static str) -> DomainError {
    DomainError::WrongStatus { entity: "payroll run", action, status: format!("{:?}", run.status) }
}

fn create(command: PayrollRunCommand) -> Result<Vec<PayrollRunEvent>, DomainError> {
    let PayrollRunCommand::Create {
        payroll_run_id,
        organization_id,
        period,
        pay_date,
        frequency,
        currency,
        kind,
        pay_schedule_id,
        actor,
    } = command
    else {
        unreachable!("only Create comes here")
    };
    require_text("actor", &actor)?;
    if let Some(day) = pay_date
        && (day < period.start() || day > period.end() + chrono::Days::new(PAY_DATE_DAYS_AFTER_MAX))
    {
        return Err(DomainError::invalid(
            "pay_date",
            format!(
                "{day} is not from the period's first day {} to {PAY_DATE_DAYS_AFTER_MAX} days after its last {}",
                period.start(),
                period.end()
            ),
        ));
    }
    let pay_date = pay_date.filter(|day| *day != period.end());
    match &kind {
        RunKind::OffCycle { reason } => require_text("off_cycle_reason", reason)?,
        RunKind::Regular if pay_schedule_id.is_none() => {
            return Err(DomainError::invalid("pay_schedule_id", "a regular run pays a period of a pay schedule"));
        }
        RunKind::Regular => {}
    }
    Ok(vec![PayrollRunEvent::PayrollRunCreated {
        payroll_run_id,
        organization_id,
        period,
        pay_date,
        frequency,
        currency,
        kind,
        pay_schedule_id,
        created_by: actor,
    }])
}

fn add_one_off_lines(
    run: &PayrollRun,
    entries: Vec<OneOffEntry>,
    actor: String,
) -> Result<Vec<PayrollRunEvent>, DomainError> {
    if !run.is_off_cycle() {
        return Err(DomainError::invalid("lines", "only an off-cycle run lists one-off lines"));
    }
    if !matches!(run.status, RunStatus::Draft | RunStatus::Calculated) {
        return Err(wrong_status(run, "add lines to"));
    }
    require_text("actor", &actor)?;
    if entries.is_empty() || entries.len() > ONE_OFF_ENTRIES_MAX {
        return Err(DomainError::invalid(
            "lines",
            format!("lists 1 to {ONE_OFF_ENTRIES_MAX} employees at a time, not {}", entries.len()),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, entry) in entries.iter().enumerate() {
        let field = format!("lines[{index}]");
        if !seen.insert(entry.employee_id) {
            return Err(DomainError::invalid(format!("{field}.employee_id"), "lists an employee twice"));
        }
        let had = run.one_off.get(&entry.employee_id).map_or(0, Vec::len);
        if entry.lines.is_empty() || had + entry.lines.len() > crate::gross_to_net::ONE_OFF_LINES_MAX {
            return Err(DomainError::invalid(
                format!("{field}.lines"),
                format!(
                    "an employee has 1 to {} lines in a run; this gives {} more to the {had} there",
                    crate::gross_to_net::ONE_OFF_LINES_MAX,
                    entry.lines.len()
                ),
            ));
        }
        for (line_index, line) in entry.lines.iter().enumerate() {
            line.validate(&format!("{field}.lines[{line_index}]"), &run.currency)?;
        }
    }
    if run.one_off.len() + entries.iter().filter(|entry| !run.one_off.contains_key(&entry.employee_id)).count()
        > RUN_ITEMS_MAX
    {
        return Err(DomainError::invalid("lines", format!("a run pays at most {RUN_ITEMS_MAX} employees")));
    }
    Ok(vec![PayrollRunEvent::OffCycleLinesAdded { entries, added_by: actor }])
}

/// A calculation built one employee at a time and recorded as it goes: every
/// [`CALCULATION_CHUNK_ITEMS`] items make a `PayrollItemsCalculated` chunk, and
/// [`Calculation::finish`] gives the last chunk and the `PayrollRunCalculated` header with the
/// totals. A caller streams a run of any size through it holding one chunk of employees and
/// items at a time. Employees come in ascending id order (which is how a repeated employee is
/// caught without remembering every id).
#[derive(Debug)]
pub struct Calculation {
    organization_id: OrganizationId,
    period: PayPeriod,
    frequency: PayFrequency,
    currency: Currency,
    rules: Vec<DeductionRule>,
    /// An off-cycle run's lines (`None` for a regular run).
    one_off: Option<BTreeMap<EmployeeId, Vec<OneOffLine>>>,
    pay_schedule_id: Option<PayScheduleId>,
    actor: String,
    chunk: Vec<PayrollItem>,
    chunks: u32,
    totals: RunTotals,
    last: Option<EmployeeId>,
}

impl Calculation {
    /// Starts a calculation (or a recalculation while not approved) of `run`.
    pub fn start(run: &PayrollRun, rules: Vec<DeductionRule>, actor: String) -> Result<Calculation, DomainError> {
        if !matches!(run.status, RunStatus::Draft | RunStatus::Calculated) {
            return Err(wrong_status(run, "recalculate"));
        }
        require_text("actor", &actor)?;
        if run.is_off_cycle() && run.one_off.is_empty() {
            return Err(DomainError::invalid(
                "lines",
                "an off-cycle run pays the lines it lists: add them first (POST /v1/payroll-runs/{id}/lines)",
            ));
        }
        Ok(Calculation {
            organization_id: run.organization_id,
            period: run.period,
            frequency: run.frequency,
            currency: run.currency.clone(),
            rules,
            one_off: run.is_off_cycle().then(|| run.one_off.clone()),
            pay_schedule_id: run.pay_schedule_id,
            actor,
            chunk: Vec::with_capacity(CALCULATION_CHUNK_ITEMS),
            chunks: 0,
            totals: RunTotals::zero(&run.currency),
            last: None,
        })
    }

    /// Items so far.
    pub fn items(&self) -> u64 {
        self.totals.items
    }

    /// Calculates one employee's item; returns a chunk event once one is full.
    pub fn add(&mut self, input: &ItemInput) -> Result<Option<PayrollRunEvent>, DomainError> {
        let employee = &input.employee;
        if employee.organization_id != self.organization_id {
            return Err(DomainError::invalid(format!("employee {}", employee.id), "belongs to another organization"));
        }
        match self.last {
            Some(last) if last == employee.id => {
                return Err(DomainError::invalid(format!("employee {}", employee.id), "appears twice in the run"));
            }
            Some(last) if last > employee.id => {
                return Err(DomainError::invalid(
                    format!("employee {}", employee.id),
                    format!("comes after employee {last}: a calculation takes employees in ascending id order"),
                ));
            }
            _ => {}
        }
        if self.totals.items as usize >= RUN_ITEMS_MAX {
            return Err(DomainError::invalid(
                "employees",
                format!("a run pays 1 to {RUN_ITEMS_MAX} employees, not more"),
            ));
        }
        self.last = Some(employee.id);
        let item = match &self.one_off {
            Some(one_off) => {
                let lines = one_off.get(&employee.id).ok_or_else(|| {
                    DomainError::invalid(format!("employee {}", employee.id), "has no line in this off-cycle run")
                })?;
                calculate_one_off(employee, lines, &self.currency, &self.rules)?
            }
            None => {
                if let (Some(run_schedule), Some(schedule)) = (self.pay_schedule_id, employee.pay_schedule_id)
                    && run_schedule != schedule
                {
                    return Err(DomainError::invalid(
                        format!("employee {}", employee.id),
                        format!("is paid on schedule {schedule}, the run pays schedule {run_schedule}"),
                    ));
                }
                calculate_item(input, self.period, self.frequency, &self.currency, &self.rules)?
            }
        };
        if item.gross.is_zero() && item.deductions_total.is_zero() && item.contributions_total.is_zero() {
            // Owed nothing more (what is owed for its periods was paid): no item.
            return Ok(None);
        }
        self.totals.add(&item)?;
        self.chunk.push(item);
        Ok((self.chunk.len() == CALCULATION_CHUNK_ITEMS).then(|| self.take_chunk()))
    }

    fn take_chunk(&mut self) -> PayrollRunEvent {
        let items = std::mem::replace(&mut self.chunk, Vec::with_capacity(CALCULATION_CHUNK_ITEMS));
        let chunk = self.chunks;
        self.chunks += 1;
        PayrollRunEvent::PayrollItemsCalculated { chunk, items }
    }

    /// The last chunk (if items are left) and the header. A run pays at least one employee.
    pub fn finish(mut self) -> Result<Vec<PayrollRunEvent>, DomainError> {
        if self.totals.items == 0 {
            return Err(DomainError::invalid("employees", format!("a run pays 1 to {RUN_ITEMS_MAX} employees, not 0")));
        }
        let mut events = Vec::with_capacity(2);
        if !self.chunk.is_empty() {
            events.push(self.take_chunk());
        }
        events.push(PayrollRunEvent::PayrollRunCalculated {
            items: Vec::new(),
            totals: self.totals,
            calculated_by: self.actor,
        });
        Ok(events)
    }
}

fn calculate(
    run: &PayrollRun,
    inputs: Arc<[ItemInput]>,
    rules: Vec<DeductionRule>,
    actor: String,
) -> Result<Vec<PayrollRunEvent>, DomainError> {
    let mut calculation = Calculation::start(run, rules, actor)?;
    if inputs.len() > RUN_ITEMS_MAX {
        return Err(DomainError::invalid(
            "employees",
            format!("a run pays 1 to {RUN_ITEMS_MAX} employees, not {}", inputs.len()),
        ));
    }
    let mut sorted: Vec<&ItemInput> = inputs.iter().collect();
    sorted.sort_by_key(|input| input.employee.id);
    let mut events = Vec::with_capacity(inputs.len().div_ceil(CALCULATION_CHUNK_ITEMS) + 1);
    for input in sorted {
        events.extend(calculation.add(input)?);
    }
    events.extend(calculation.finish()?);
    Ok(events)
}

fn approve(run: &PayrollRun, actor: String) -> Result<Vec<PayrollRunEvent>, DomainError> {
    if run.status != RunStatus::Calculated {
        return Err(wrong_status(run, "approve"));
    }
    require_text("actor", &actor)?;
    if actor == run.created_by || run.calculated_by.as_deref() == Some(actor.as_str()) {
        return Err(DomainError::SelfApproval { actor });
    }
    Ok(vec![PayrollRunEvent::PayrollRunApproved { approved_by: actor }])
}

fn item(run: &PayrollRun, employee_id: EmployeeId) -> Result<&RunItem, DomainError> {
    run.items
        .get(&employee_id)
        .ok_or(DomainError::NotFound { entity: "payroll item for employee", id: employee_id.to_string() })
}

fn mark_paid(
    run: &PayrollRun,
    employee_id: EmployeeId,
    transaction_id: TransactionId,
) -> Result<Vec<PayrollRunEvent>, DomainError> {
    if run.status != RunStatus::Processing {
        return Err(wrong_status(run, "pay an item of"));
    }
    let run_item = item(run, employee_id)?;
    match &run_item.status {
        ItemStatus::Held { hold } => Err(DomainError::ItemHeld { employee_id, reason: hold.to_string() }),
        ItemStatus::Paid { .. } | ItemStatus::Reversed { .. } => Err(DomainError::AlreadyPaid { employee_id }),
        // A failed payment may be retried.
        ItemStatus::Pending | ItemStatus::Failed { .. } => {
            Ok(vec![PayrollRunEvent::PayrollItemPaid { employee_id, transaction_id, net: run.money(run_item.net) }])
        }
    }
}

fn mark_failed(run: &PayrollRun, employee_id: EmployeeId, reason: String) -> Result<Vec<PayrollRunEvent>, DomainError> {
    if run.status != RunStatus::Processing {
        return Err(wrong_status(run, "fail an item of"));
    }
    require_text("reason", &reason)?;
    match &item(run, employee_id)?.status {
        ItemStatus::Pending => Ok(vec![PayrollRunEvent::PayrollItemFailed { employee_id, reason }]),
        ItemStatus::Paid { .. } | ItemStatus::Reversed { .. } => Err(DomainError::AlreadyPaid { employee_id }),
        ItemStatus::Held { hold } => Err(DomainError::ItemHeld { employee_id, reason: hold.to_string() }),
        ItemStatus::Failed { .. } => {
            Err(DomainError::invalid("employee_id", format!("employee {employee_id}'s payment failed already")))
        }
    }
}

fn complete(run: &PayrollRun) -> Result<Vec<PayrollRunEvent>, DomainError> {
    if run.status != RunStatus::Processing {
        return Err(wrong_status(run, "complete"));
    }
    let count = |wanted: fn(&ItemStatus) -> bool| run.items.values().filter(|item| wanted(&item.status)).count() as u64;
    let pending = count(|status| matches!(status, ItemStatus::Pending));
    if pending > 0 {
        return Err(DomainError::invalid("items", format!("{pending} items are neither paid nor failed yet")));
    }
    let failed = count(|status| matches!(status, ItemStatus::Failed { .. }));
    let status = if failed > 0 { RunStatus::PartiallyFailed } else { RunStatus::Completed };
    Ok(vec![PayrollRunEvent::PayrollRunCompleted {
        status,
        paid: count(|status| matches!(status, ItemStatus::Paid { .. })),
        failed,
        held: count(|status| matches!(status, ItemStatus::Held { .. })),
    }])
}

fn reverse(run: &PayrollRun, reason: String, actor: String) -> Result<Vec<PayrollRunEvent>, DomainError> {
    if !matches!(run.status, RunStatus::Completed | RunStatus::PartiallyFailed) {
        return Err(wrong_status(run, "reverse"));
    }
    require_text("reason", &reason)?;
    require_text("actor", &actor)?;
    if !run.items.values().any(|item| matches!(item.status, ItemStatus::Paid { .. })) {
        return Err(DomainError::invalid("items", "no item of this run was paid: nothing to reverse"));
    }
    Ok(vec![PayrollRunEvent::PayrollRunReversalStarted { reason, reversed_by: actor }])
}

fn reverse_items(
    run: &PayrollRun,
    items: Vec<(EmployeeId, TransactionId)>,
) -> Result<Vec<PayrollRunEvent>, DomainError> {
    if run.status != RunStatus::Reversing {
        return Err(wrong_status(run, "reverse items of"));
    }
    if items.is_empty() || items.len() > CALCULATION_CHUNK_ITEMS {
        return Err(DomainError::invalid("items", format!("1 to {CALCULATION_CHUNK_ITEMS} items a batch")));
    }
    let mut reversed = Vec::with_capacity(items.len());
    let mut seen = std::collections::BTreeSet::new();
    for (employee_id, reversal) in items {
        let run_item = item(run, employee_id)?;
        let ItemStatus::Paid { transaction_id } = run_item.status else {
            return Err(DomainError::invalid(
                format!("employee {employee_id}"),
                format!("the item is {:?}, not paid: nothing to reverse", run_item.status),
            ));
        };
        if !seen.insert(employee_id) {
            return Err(DomainError::invalid(format!("employee {employee_id}"), "reversed twice in one batch"));
        }
        reversed.push(ReversalItem {
            employee_id,
            reverses_transaction_id: transaction_id,
            transaction_id: Some(reversal),
            gross: run.money(-run_item.gross),
            deductions: run.money(-run_item.deductions),
            contributions: run.money(-run_item.contributions),
            net: run.money(-run_item.net),
        });
    }
    Ok(vec![PayrollRunEvent::PayrollItemsReversed { items: reversed }])
}

fn complete_reversal(run: &PayrollRun) -> Result<Vec<PayrollRunEvent>, DomainError> {
    let Some((reason, reversed_by)) = run.reversal.clone().filter(|_| run.status == RunStatus::Reversing) else {
        return Err(wrong_status(run, "complete the reversal of"));
    };
    let paid = run.items.values().filter(|item| matches!(item.status, ItemStatus::Paid { .. })).count();
    if paid > 0 {
        return Err(DomainError::invalid("items", format!("{paid} paid items are not reversed yet")));
    }
    Ok(vec![PayrollRunEvent::PayrollRunReversed { reason, reversed_by, items: Vec::new() }])
}

fn release_items(
    run: &PayrollRun,
    employee_ids: Vec<EmployeeId>,
    actor: String,
) -> Result<Vec<PayrollRunEvent>, DomainError> {
    if !matches!(run.status, RunStatus::Processing | RunStatus::Completed | RunStatus::PartiallyFailed) {
        return Err(wrong_status(run, "release items of"));
    }
    require_text("actor", &actor)?;
    if employee_ids.is_empty() || employee_ids.len() > CALCULATION_CHUNK_ITEMS {
        return Err(DomainError::invalid("items", format!("1 to {CALCULATION_CHUNK_ITEMS} items a release")));
    }
    let mut seen = std::collections::BTreeSet::new();
    for employee_id in &employee_ids {
        if !seen.insert(*employee_id) {
            return Err(DomainError::invalid(format!("employee {employee_id}"), "released twice"));
        }
        match &item(run, *employee_id)?.status {
            ItemStatus::Failed { reason } if reason.starts_with(STALE_CALCULATION) => {
                return Err(DomainError::invalid(
                    format!("employee {employee_id}"),
                    format!("{reason}; the next regular run pays what is owed for the period"),
                ));
            }
            ItemStatus::Held { hold: HoldReason::KycNotApproved { .. } } | ItemStatus::Failed { .. } => {}
            ItemStatus::Held { hold } => {
                return Err(DomainError::ItemHeld { employee_id: *employee_id, reason: hold.to_string() });
            }
            ItemStatus::Paid { .. } => return Err(DomainError::AlreadyPaid { employee_id: *employee_id }),
            status => {
                return Err(DomainError::invalid(
                    format!("employee {employee_id}"),
                    format!("the item is {status:?}: only a held or failed item is released"),
                ));
            }
        }
    }
    Ok(vec![PayrollRunEvent::PayrollItemsReleased { employee_ids, released_by: actor }])
}

fn fail_payment(
    run: &PayrollRun,
    employee_id: EmployeeId,
    transaction_id: TransactionId,
    reason: String,
) -> Result<Vec<PayrollRunEvent>, DomainError> {
    if !matches!(run.status, RunStatus::Processing | RunStatus::Completed | RunStatus::PartiallyFailed) {
        return Err(wrong_status(run, "fail a payment of"));
    }
    require_text("reason", &reason)?;
    match item(run, employee_id)?.status {
        ItemStatus::Paid { transaction_id: paid } if paid == transaction_id => {
            Ok(vec![PayrollRunEvent::PayrollItemPaymentFailed { employee_id, transaction_id, reason }])
        }
        ItemStatus::Paid { .. } => Err(DomainError::invalid(
            "transaction_id",
            format!("{transaction_id} is not the payment of employee {employee_id}'s item"),
        )),
        // Failed already (a racing refusal), reversed, or paid anew since.
        ref status => Err(DomainError::WrongStatus {
            entity: "payroll item",
            action: "fail the payment of",
            status: format!("{status:?}"),
        }),
    }
}

fn decide_existing(run: &PayrollRun, command: PayrollRunCommand) -> Result<Vec<PayrollRunEvent>, DomainError> {
    match command {
        PayrollRunCommand::Create { payroll_run_id, .. } => {
            Err(DomainError::AlreadyExists { entity: "payroll run", id: payroll_run_id.to_string() })
        }
        PayrollRunCommand::AddOneOffLines { entries, actor } => add_one_off_lines(run, entries, actor),
        PayrollRunCommand::Calculate { inputs, rules, actor } => calculate(run, inputs, rules, actor),
        PayrollRunCommand::Approve { actor } => approve(run, actor),
        PayrollRunCommand::StartProcessing { actor } => {
            if run.status != RunStatus::Approved {
                return Err(wrong_status(run, "start processing"));
            }
            require_text("actor", &actor)?;
            Ok(vec![PayrollRunEvent::PayrollRunProcessingStarted { started_by: actor }])
        }
        PayrollRunCommand::MarkItemPaid { employee_id, transaction_id } => mark_paid(run, employee_id, transaction_id),
        PayrollRunCommand::MarkItemFailed { employee_id, reason } => mark_failed(run, employee_id, reason),
        PayrollRunCommand::Complete => complete(run),
        PayrollRunCommand::Void { reason, actor } => {
            if !matches!(run.status, RunStatus::Draft | RunStatus::Calculated | RunStatus::Approved) {
                return Err(wrong_status(run, "void"));
            }
            require_text("reason", &reason)?;
            require_text("actor", &actor)?;
            Ok(vec![PayrollRunEvent::PayrollRunVoided { reason, voided_by: actor }])
        }
        PayrollRunCommand::Reverse { reason, actor } => reverse(run, reason, actor),
        PayrollRunCommand::ReverseItems { items } => reverse_items(run, items),
        PayrollRunCommand::CompleteReversal => complete_reversal(run),
        PayrollRunCommand::ReleaseItems { employee_ids, actor } => release_items(run, employee_ids, actor),
        PayrollRunCommand::FailPayment { employee_id, transaction_id, reason } => {
            fail_payment(run, employee_id, transaction_id, reason)
        }
    }
}

fn evolve_existing(mut run: PayrollRun, event: &PayrollRunEvent) -> PayrollRun {
    run.version += 1;
    let set_item_status = |run: &mut PayrollRun, employee_id: &EmployeeId, status: ItemStatus| {
        run.items.get_mut(employee_id).expect("a paid or failed item was calculated").status = status;
    };
    match event {
        PayrollRunEvent::PayrollRunCreated { .. } => unreachable!("a run is created once"),
        PayrollRunEvent::OffCycleLinesAdded { entries, .. } => {
            for entry in entries {
                run.one_off.entry(entry.employee_id).or_default().extend(entry.lines.iter().cloned());
            }
            // A calculation before these lines is stale: the run is calculated again.
            run.status = RunStatus::Draft;
        }
        PayrollRunEvent::PayrollItemsCalculated { chunk, items } => {
            if *chunk == 0 {
                run.calculating.clear();
            }
            let version = run.version;
            run.calculating.extend(items.iter().map(|item| (item.employee_id, RunItem::of(item, version))));
        }
        PayrollRunEvent::PayrollRunCalculated { items, totals, calculated_by } => {
            let mut calculated = std::mem::take(&mut run.calculating);
            // A calculation recorded before chunks existed carries its items here.
            calculated.extend(items.iter().map(|item| (item.employee_id, RunItem::of(item, run.version))));
            run.items = calculated.into_iter().collect();
            run.totals = totals.clone();
            // Pair assertion: the totals recorded are the sum of the items recorded.
            assert_eq!(
                RunTotals::of_run_items(&run.currency, run.items.values()).expect("one currency per run"),
                run.totals,
                "run totals = sum of items"
            );
            run.calculated_by = Some(calculated_by.clone());
            run.status = RunStatus::Calculated;
        }
        PayrollRunEvent::PayrollRunApproved { approved_by } => {
            run.approved_by = Some(approved_by.clone());
            run.status = RunStatus::Approved;
        }
        PayrollRunEvent::PayrollRunProcessingStarted { .. } => run.status = RunStatus::Processing,
        PayrollRunEvent::PayrollItemPaid { employee_id, transaction_id, .. } => {
            set_item_status(&mut run, employee_id, ItemStatus::Paid { transaction_id: *transaction_id });
        }
        PayrollRunEvent::PayrollItemFailed { employee_id, reason } => {
            set_item_status(&mut run, employee_id, ItemStatus::Failed { reason: reason.clone() });
        }
        PayrollRunEvent::PayrollRunCompleted { status, .. } => run.status = *status,
        PayrollRunEvent::PayrollRunVoided { .. } => run.status = RunStatus::Voided,
        PayrollRunEvent::PayrollRunReversalStarted { reason, reversed_by } => {
            run.reversal = Some((reason.clone(), reversed_by.clone()));
            run.status = RunStatus::Reversing;
        }
        PayrollRunEvent::PayrollItemsReversed { items } => {
            for reversed in items {
                set_item_status(
                    &mut run,
                    &reversed.employee_id,
                    ItemStatus::Reversed { reversal: reversed.transaction_id },
                );
            }
        }
        PayrollRunEvent::PayrollRunReversed { reason, reversed_by, items } => {
            // A reversal recorded before batches carries its items here.
            for reversed in items {
                set_item_status(
                    &mut run,
                    &reversed.employee_id,
                    ItemStatus::Reversed { reversal: reversed.transaction_id },
                );
            }
            run.reversal = Some((reason.clone(), reversed_by.clone()));
            run.status = RunStatus::Reversed;
        }
        PayrollRunEvent::PayrollItemsReleased { employee_ids, .. } => {
            for employee_id in employee_ids {
                set_item_status(&mut run, employee_id, ItemStatus::Pending);
            }
            run.status = RunStatus::Processing;
        }
        PayrollRunEvent::PayrollItemPaymentFailed { employee_id, reason, .. } => {
            set_item_status(&mut run, employee_id, ItemStatus::Failed { reason: reason.clone() });
            if run.status == RunStatus::Completed {
                run.status = RunStatus::PartiallyFailed;
            }
        }
    }
    run
}

impl Aggregate for PayrollRunAggregate {
    const STREAM_TYPE: &'static str = "payroll_run";
    type State = Option<PayrollRun>;
    type Command = PayrollRunCommand;
    type Event = PayrollRunEvent;

    fn decide(state: &Self::State, command: PayrollRunCommand) -> Result<Vec<PayrollRunEvent>, DomainError> {
        match (state, command) {
            (None, command @ PayrollRunCommand::Create { .. }) => create(command),
            (None, _) => Err(DomainError::NotFound { entity: "payroll run", id: "(not created)".to_owned() }),
            (Some(run), command) => decide_existing(run, command),
        }
    }

    fn evolve(state: Self::State, event: &PayrollRunEvent) -> Self::State {
        match (state, event) {
            (
                None,
                PayrollRunEvent::PayrollRunCreated {
                    payroll_run_id,
                    organization_id,
                    period,
                    pay_date,
                    frequency,
                    currency,
                    kind,
                    pay_schedule_id,
                    created_by,
                },
            ) => Some(PayrollRun {
                id: *payroll_run_id,
                organization_id: *organization_id,
                period: *period,
                pay_date: pay_date.unwrap_or(period.end()),
                frequency: *frequency,
                currency: currency.clone(),
                kind: kind.clone(),
                pay_schedule_id: *pay_schedule_id,
                one_off: BTreeMap::new(),
                status: RunStatus::Draft,
                created_by: created_by.clone(),
                calculated_by: None,
                approved_by: None,
                reversal: None,
                items: BTreeMap::new(),
                totals: RunTotals::zero(currency),
                calculating: Vec::new(),
                version: 1,
            }),
            (Some(run), event) => Some(evolve_existing(run, event)),
            (None, event) => panic!("a payroll run's first event is its creation, not {event:?}"),
        }
    }
}
