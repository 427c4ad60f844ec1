//! A run's life outside its calculation and payment: created for a period of a pay schedule
//! (a regular run claims the period in the schedule's stream in the same append), given its
//! one-off lines (an off-cycle run), voided (the period released in the same append).

use ledger_codec::stream_append;
use ledger_core::Aggregate;
use ledger_core::calendar::{PayFrequency, PayPeriod};
use ledger_core::employee::EmployeeAggregate;
use ledger_core::ids::{OrganizationId, PayScheduleId, PayrollRunId};
use ledger_core::money::Currency;
use ledger_core::organization::OrganizationAggregate;
use ledger_core::payroll::{OneOffEntry, PayrollRun, PayrollRunAggregate, PayrollRunCommand, RunKind};
use ledger_core::schedule::{PayCalendarAggregate, PayCalendarCommand};
use ledger_store::StreamAppend;
use uuid::Uuid;

use super::{load_entries, load_run};
use crate::context::{Context, Written};
use crate::error::{Error, Result};
use crate::ledger::{COMMAND_ATTEMPTS_MAX, KeyUse, Ledger, Loaded};
use crate::retry::Attempts;

/// What a new run is: regular (for a period of a schedule) or off-cycle (its lines given).
#[derive(Debug, Clone)]
pub enum NewRunKind {
    /// `pay_schedule_id` defaults to the organization's default schedule.
    Regular {
        pay_schedule_id: Option<Uuid>,
    },
    OffCycle {
        reason: String,
        entries: Vec<OneOffEntry>,
    },
}

/// A run to create; `frequency` and `currency` default to the schedule's and the
/// organization's.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub payroll_run_id: Uuid,
    pub period: PayPeriod,
    /// The period's last day when none is given.
    pub pay_date: Option<chrono::NaiveDate>,
    pub kind: NewRunKind,
    pub frequency: Option<PayFrequency>,
    pub currency: Option<Currency>,
}

/// Creates a run. A regular run's period must be one of its schedule's, and no other live
/// regular run may pay it: the claim is appended with the run, atomically, expecting the
/// schedule stream's version, so of racing creates one wins and the others are refused
/// (`DomainError::PeriodTaken`, naming the winner).
#[tracing::instrument(name = "create_run", skip_all, fields(run_id = %new.payroll_run_id))]
pub async fn create_run(ledger: &Ledger, context: &Context, new: NewRun) -> Result<Written> {
    if let Some(written) = ledger.replayed(context).await? {
        return Ok(written);
    }
    let mut attempts = Attempts::up_to(COMMAND_ATTEMPTS_MAX);
    loop {
        let outcome = create_once(ledger, context, &new).await;
        if !attempts.retry(&outcome) {
            return ledger.or_replayed(context, outcome, |written| written).await;
        }
    }
}

async fn create_once(ledger: &Ledger, context: &Context, new: &NewRun) -> Result<Written> {
    let organization_id = context.organization_id();
    let organization = ledger.load::<OrganizationAggregate>(organization_id, organization_id).await?.state;
    let organization = organization
        .ok_or_else(|| Error::NotFound("register the organization first: POST /v1/organization".to_owned()))?;
    let schedule = match &new.kind {
        NewRunKind::Regular { pay_schedule_id: Some(id) } => {
            organization.pay_schedules.get(&PayScheduleId::from_uuid(*id)).ok_or_else(|| {
                Error::NotFound(format!("no pay schedule {id} in this organization (GET /v1/pay-schedules)"))
            })?
        }
        _ => organization.default_schedule(),
    };
    let frequency = new.frequency.unwrap_or(schedule.schedule.frequency);
    let currency = new.currency.clone().unwrap_or_else(|| organization.base_currency.clone());
    let run_id = PayrollRunId::from_uuid(new.payroll_run_id);
    let organization = OrganizationId::from_uuid(organization_id);
    let (kind, pay_schedule_id, entries) = match &new.kind {
        NewRunKind::Regular { .. } => {
            if frequency != schedule.schedule.frequency {
                return Err(Error::Invalid(format!(
                    "frequency: the run pays schedule {} ({:?}), not {frequency:?}",
                    schedule.id, schedule.schedule.frequency
                )));
            }
            if !schedule.schedule.has_period(new.period) {
                let near = schedule.schedule.period_containing(new.period.start(), "period.start")?;
                return Err(Error::Invalid(format!(
                    "period: {} is not a period of pay schedule {} ({:?} from {}); the period holding {} is {near} \
                     (GET /v1/pay-schedules/{}/periods)",
                    new.period,
                    schedule.id,
                    schedule.schedule.frequency,
                    schedule.schedule.anchor_date,
                    new.period.start(),
                    schedule.id
                )));
            }
            (RunKind::Regular, Some(schedule.id), Vec::new())
        }
        NewRunKind::OffCycle { reason, entries } => {
            (RunKind::OffCycle { reason: reason.clone() }, None, entries.clone())
        }
    };
    let create = PayrollRunCommand::Create {
        payroll_run_id: run_id,
        organization_id: organization,
        period: new.period,
        pay_date: new.pay_date,
        frequency,
        currency,
        kind,
        pay_schedule_id,
        actor: context.actor(),
    };
    let run_state = ledger.load::<PayrollRunAggregate>(organization_id, new.payroll_run_id).await?;
    let mut events = PayrollRunAggregate::decide(&run_state.state, create)?;
    if !entries.is_empty() {
        let created = PayrollRunAggregate::fold(&events);
        let add = PayrollRunCommand::AddOneOffLines { entries: entries.clone(), actor: context.actor() };
        let added = PayrollRunAggregate::decide(&created, add)?;
        check_employees(ledger, organization_id, created.as_ref().expect("created"), &entries).await?;
        events.extend(added);
    }
    let mut streams = vec![stream_append::<PayrollRunAggregate>(organization_id, new.payroll_run_id, 0, &events)];
    if let Some(schedule_id) = pay_schedule_id {
        let calendar = ledger.load::<PayCalendarAggregate>(organization_id, schedule_id.as_uuid()).await?;
        let claim = PayCalendarCommand::Claim {
            pay_schedule_id: schedule_id,
            organization_id: organization,
            period: new.period,
            run: run_id,
        };
        let claimed = PayCalendarAggregate::decide(&calendar.state, claim)?;
        streams.push(stream_append::<PayCalendarAggregate>(
            organization_id,
            schedule_id.as_uuid(),
            calendar.version,
            &claimed,
        ));
    }
    Ok(ledger.append(context, streams, KeyUse::Record).await?.into())
}

/// Checks that every entry's employee is one of the organization's, paid in the run's
/// currency; names the entry that is not.
async fn check_employees(
    ledger: &Ledger,
    organization_id: Uuid,
    run: &PayrollRun,
    entries: &[OneOffEntry],
) -> Result<()> {
    let ids: Vec<Uuid> = entries.iter().map(|entry| entry.employee_id.as_uuid()).collect();
    let field = |index| format!("lines[{index}].employee_id");
    let employees = load_entries::<EmployeeAggregate>(ledger, organization_id, &ids, field).await?;
    for (index, id) in ids.iter().enumerate() {
        match employees.get(id) {
            Some(Loaded { state: Some(employee), .. }) if employee.currency == run.currency => {}
            Some(Loaded { state: Some(employee), .. }) => {
                return Err(Error::Invalid(format!(
                    "lines[{index}].employee_id: employee {id} is paid in {}, the run pays {}",
                    employee.currency, run.currency
                )));
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "lines[{index}].employee_id: no employee {id} in this organization"
                )));
            }
        }
    }
    Ok(())
}

/// Adds employees' lines to an off-cycle run (not yet approved).
#[tracing::instrument(name = "add_lines", skip_all, fields(%run_id))]
pub async fn add_lines(ledger: &Ledger, context: &Context, run_id: Uuid, entries: Vec<OneOffEntry>) -> Result<Written> {
    if let Some(written) = ledger.replayed(context).await? {
        return Ok(written);
    }
    let Loaded { state: run, version } = load_run(ledger, context, run_id).await?;
    let add = PayrollRunCommand::AddOneOffLines { entries, actor: context.actor() };
    // The lines' own rules first (an employee listed twice, a bad amount), then whose they are.
    let mut loaded = Loaded { state: Some(run), version };
    PayrollRunAggregate::decide(&loaded.state, add.clone())?;
    let PayrollRunCommand::AddOneOffLines { entries, .. } = &add else { unreachable!("built above") };
    check_employees(ledger, context.organization_id(), loaded.state.as_ref().expect("loaded"), entries).await?;
    ledger.execute_loaded::<PayrollRunAggregate>(context, run_id, &mut loaded, add).await
}

/// Voids a run before payment; a regular run's period is released in the same append.
#[tracing::instrument(name = "void", skip_all, fields(%run_id))]
pub async fn void(ledger: &Ledger, context: &Context, run_id: Uuid, reason: String) -> Result<Written> {
    if let Some(written) = ledger.replayed(context).await? {
        return Ok(written);
    }
    let mut attempts = Attempts::up_to(COMMAND_ATTEMPTS_MAX);
    loop {
        let outcome = async {
            let Loaded { state: run, version } = load_run(ledger, context, run_id).await?;
            let void = PayrollRunCommand::Void { reason: reason.clone(), actor: context.actor() };
            let events = PayrollRunAggregate::decide(&Some(run.clone()), void)?;
            let organization_id = context.organization_id();
            let mut streams = vec![stream_append::<PayrollRunAggregate>(organization_id, run_id, version, &events)];
            streams.extend(release_period(ledger, organization_id, &run, "voided").await?);
            Ok(ledger.append(context, streams, KeyUse::Record).await?.into())
        }
        .await;
        if !attempts.retry(&outcome) {
            return ledger.or_replayed(context, outcome, |written| written).await;
        }
    }
}

/// The schedule stream's part of voiding or reversing `run`: its period released, when it
/// claimed one (a regular run created since schedules have ids).
pub(crate) async fn release_period(
    ledger: &Ledger,
    organization_id: Uuid,
    run: &PayrollRun,
    reason: &str,
) -> Result<Option<StreamAppend>> {
    let (RunKind::Regular, Some(schedule_id)) = (&run.kind, run.pay_schedule_id) else { return Ok(None) };
    let calendar = ledger.load::<PayCalendarAggregate>(organization_id, schedule_id.as_uuid()).await?;
    if calendar.state.as_ref().and_then(|calendar| calendar.run_paying(run.period)) != Some(run.id) {
        // Released by another writer that voided or reversed this run since it was loaded:
        // the run's own append (expecting its version) conflicts and decides again.
        return Ok(None);
    }
    let release = PayCalendarCommand::Release { period: run.period, run: run.id, reason: reason.to_owned() };
    let released = PayCalendarAggregate::decide(&calendar.state, release)?;
    Ok(Some(stream_append::<PayCalendarAggregate>(organization_id, schedule_id.as_uuid(), calendar.version, &released)))
}
