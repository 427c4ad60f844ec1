//! Calculating a run: its items, one per employee owed pay, recorded in one streamed append
//! a chunk of employees at a time, so that the run's size does not decide the memory it
//! takes.

use std::collections::{HashMap, VecDeque};

use chrono::NaiveDate;
use ledger_codec::new_event;
use ledger_core::Aggregate;
use ledger_core::calendar::PayPeriod;
use ledger_core::employee::EmployeeAggregate;
use ledger_core::gross_to_net::{DeductionRule, ItemInput, PaidPeriod, PayrollItem};
use ledger_core::money::Money;
use ledger_core::organization::OrganizationAggregate;
use ledger_core::payroll::{Calculation, PayrollRun, PayrollRunAggregate, PayrollRunEvent};
use ledger_store::NewEvent;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{LOAD_BATCH_STREAMS, LOOKUP_WAIT, load_many, load_run, read_tables};
use crate::context::{Context, Written};
use crate::error::{Error, Result};
use crate::ledger::{COMMAND_ATTEMPTS_MAX, Ledger, Loaded};
use crate::retry::Attempts;

/// A run's calculation read and calculated a chunk of employees at a time: the organization's
/// employees employed in the period at the run's frequency and currency, their payment
/// history, and the organization's rules. Only the candidates' ids are read up front; a chunk's
/// employees, history and items are dropped once its event is produced, so a calculation of
/// any size holds one chunk. The run (and its version) is folded on as the events are
/// produced, so that the state after the calculation needs no reload.
struct CalculationSource<'a> {
    ledger: &'a Ledger,
    organization_id: Uuid,
    run: &'a mut Loaded<Option<PayrollRun>>,
    rules: Vec<DeductionRule>,
    candidates: Vec<Uuid>,
    next: usize,
    calculation: Option<Calculation>,
}

impl<'a> CalculationSource<'a> {
    async fn prepare(
        ledger: &'a Ledger,
        context: &Context,
        loaded: &'a mut Loaded<Option<PayrollRun>>,
    ) -> Result<CalculationSource<'a>> {
        let organization_id = context.organization_id();
        let run = loaded.state.as_ref().expect("a loaded run exists");
        // Reads the employee table and the payroll projection's paid earnings.
        ledger.wait_for_head_of(&[read_tables::EMPLOYEE, read_tables::PAYROLL], LOOKUP_WAIT).await?;
        let organization = ledger.load::<OrganizationAggregate>(organization_id, organization_id).await?.state;
        let organization = organization
            .ok_or_else(|| Error::NotFound("register the organization first: POST /v1/organization".to_owned()))?;
        let rules: Vec<DeductionRule> = organization.rules.values().cloned().collect();
        let calculation = Calculation::start(run, rules.clone(), context.actor())?;
        let candidates = if run.is_off_cycle() {
            // Ascending, as a calculation takes them.
            run.one_off.keys().map(|id| id.as_uuid()).collect()
        } else {
            let default = organization.default_pay_schedule_id;
            candidates(ledger, organization_id, run, run.pay_schedule_id == Some(default)).await?
        };
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
        self.run.state.as_ref().expect("a loaded run exists")
    }

    /// The inputs of some candidates: those owed pay in the run, with their history.
    async fn inputs(&self, candidates: &[Uuid]) -> Result<Vec<ItemInput>> {
        let run = self.run();
        let mut employees = load_many::<EmployeeAggregate>(self.ledger, self.organization_id, candidates).await?;
        let mut history = history_outside_log(self.ledger, self.organization_id, run, &employees).await?;
        let mut inputs = Vec::with_capacity(candidates.len());
        for id in candidates {
            let Some(Loaded { state: Some(employee), .. }) = employees.remove(id) else { continue };
            // The employee's own pay history (their stream records every payment and take
            // back), and what it does not hold.
            let mut paid_periods = employee.paid_periods_except(run.id);
            paid_periods.extend(history.remove(id).unwrap_or_default());
            let input = ItemInput { employee, paid_periods };
            if run.owes(&input, &self.rules) {
                inputs.push(input);
            }
        }
        Ok(inputs)
    }

    /// The calculation's next events: the chunks the next candidates fill, then the last
    /// chunk and the header; `None` when it is done.
    async fn next_events(&mut self) -> Result<Option<Vec<PayrollRunEvent>>> {
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
    fn into_events(self) -> impl futures_util::Stream<Item = Result<NewEvent>> + Send + 'a {
        futures_util::stream::try_unfold((self, VecDeque::new()), |(mut source, mut ready)| async move {
            loop {
                if let Some(event) = ready.pop_front() {
                    let encoded = new_event::<PayrollRunEvent>(&event);
                    let run = &mut source.run;
                    run.state = PayrollRunAggregate::evolve_owned(run.state.take(), event);
                    run.version += 1;
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

/// The ids of the organization's employees a regular run may pay (on its schedule, in its
/// currency, started by the period's end), in the order a calculation takes them: ascending
/// (uuid order is byte order in PostgreSQL and in Rust alike). An employee hired before
/// schedules had ids is on the default schedule when its frequency is theirs; a run created
/// before then pays its frequency's employees.
async fn candidates(
    ledger: &Ledger,
    organization_id: Uuid,
    run: &PayrollRun,
    on_default_schedule: bool,
) -> Result<Vec<Uuid>> {
    let mut read = ledger.tenant_read(organization_id).await?;
    let frequency = serde_json::to_value(run.frequency).expect("frequencies serialize");
    let candidates: Vec<Uuid> = sqlx::query_scalar(
        "select employee_id from employee.employees where currency = $2 and start_date <= $3 \
           and (pay_schedule_id = $4 or ((pay_schedule_id is null or $4 is null) and pay_frequency = $1 and ($5 or $4 is null))) \
         order by employee_id",
    )
    .bind(frequency.as_str())
    .bind(run.currency.code())
    .bind(run.period.end())
    .bind(run.pay_schedule_id.map(|id| id.as_uuid()))
    .bind(on_default_schedule)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    Ok(candidates)
}

/// What an employee's stream does not say of their pay history, from the payroll read
/// table: what runs paid before payments were recorded in the employee's stream (runs the
/// stream has no record of), and the earlier periods whose completed regular run left the
/// employee's item unpaid (held, failed), as 0 paid, so that the calculation catches them up.
/// A payment checks its item against the employee's stream: a history read here that is out
/// of date can make an item's payment refused, never paid twice.
async fn history_outside_log(
    ledger: &Ledger,
    organization_id: Uuid,
    run: &PayrollRun,
    employees: &HashMap<Uuid, Loaded<Option<ledger_core::employee::Employee>>>,
) -> Result<HashMap<Uuid, Vec<PaidPeriod>>> {
    let ids: Vec<Uuid> = employees.keys().copied().collect();
    let mut read = ledger.tenant_read(organization_id).await?;
    let paid: Vec<(Uuid, Uuid, NaiveDate, NaiveDate, Decimal)> = sqlx::query_as(
        "select employee_id, payroll_run_id, period_start, period_end, sum(amount) from payroll.paid_earnings \
         where employee_id = any($1) and payroll_run_id <> $2 and currency = $3 group by 1, 2, 3, 4 order by 1, 3",
    )
    .bind(&ids)
    .bind(run.id.as_uuid())
    .bind(run.currency.code())
    .fetch_all(&mut *read)
    .await?;
    let left_behind: Vec<(Uuid, NaiveDate, NaiveDate)> = sqlx::query_as(
        "select i.employee_id, r.period_start, r.period_end from payroll.payroll_items i \
         join payroll.payroll_runs r using (payroll_run_id) \
         where i.employee_id = any($1) and i.payroll_run_id <> $2 and r.currency = $3 and r.kind = 'regular' \
           and r.status in ('completed', 'partially_failed') and i.status in ('held', 'failed')",
    )
    .bind(&ids)
    .bind(run.id.as_uuid())
    .bind(run.currency.code())
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    let recorded = |employee: &Uuid, paid_by: Uuid| {
        employees
            .get(employee)
            .and_then(|loaded| loaded.state.as_ref())
            .is_some_and(|state| state.paid.contains_key(&ledger_core::ids::PayrollRunId::from_uuid(paid_by)))
    };
    let mut history: HashMap<Uuid, Vec<PaidPeriod>> = HashMap::new();
    for (employee_id, paid_by, start, end, amount) in paid {
        // Recorded in the stream, or paid and taken back (reversed): nothing outside the log.
        if recorded(&employee_id, paid_by) || amount.is_zero() {
            continue;
        }
        let period = PayPeriod::new(start, end)?;
        let earnings = Money::new(amount, run.currency.clone())?;
        history.entry(employee_id).or_default().push(PaidPeriod { period, earnings });
    }
    for (employee_id, start, end) in left_behind {
        let period = PayPeriod::new(start, end)?;
        history
            .entry(employee_id)
            .or_default()
            .push(PaidPeriod { period, earnings: Money::zero(run.currency.clone()) });
    }
    Ok(history)
}

/// Calculates (or recalculates) a run and records it: its chunks are appended as they are
/// calculated (one append, streamed), so the run's size does not decide the memory it takes.
/// Another writer that changed the run first is found before anything is calculated; the
/// calculation starts again from the run as it now is.
#[tracing::instrument(name = "calculate", skip_all, fields(%run_id))]
pub async fn calculate(ledger: &Ledger, context: &Context, run_id: Uuid) -> Result<Written> {
    if let Some(written) = ledger.replayed(context).await? {
        return Ok(written);
    }
    let mut attempts = Attempts::up_to(COMMAND_ATTEMPTS_MAX);
    loop {
        let outcome = calculate_once(ledger, context, run_id).await;
        if !attempts.retry(&outcome) {
            return ledger.or_replayed(context, outcome, |written| written).await;
        }
    }
}

async fn calculate_once(ledger: &Ledger, context: &Context, run_id: Uuid) -> Result<Written> {
    let Loaded { state: run, version } = load_run(ledger, context, run_id).await?;
    let mut loaded = Loaded { state: Some(run), version };
    let source = CalculationSource::prepare(ledger, context, &mut loaded).await?;
    let result =
        ledger.append_streamed::<PayrollRunAggregate, _>(context, run_id, version, source.into_events()).await?;
    // The run as calculated, for whoever loads it next (the approval).
    if !result.replayed && result.streams.first().map(|head| head.version) == Some(loaded.version) {
        ledger.remember::<PayrollRunAggregate>(context.organization_id(), run_id, &loaded);
    }
    Ok(result.into())
}

/// What a calculation would give, without recording it.
pub async fn preview(ledger: &Ledger, context: &Context, run_id: Uuid) -> Result<Vec<PayrollItem>> {
    let Loaded { state: run, version } = load_run(ledger, context, run_id).await?;
    let mut loaded = Loaded { state: Some(run), version };
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
