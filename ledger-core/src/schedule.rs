//! A pay schedule's calendar: which regular run pays each of the schedule's periods. One
//! stream per schedule (its id is the schedule's). Creating a regular run appends the claim
//! of its period to this stream in the same atomic append as the run's creation, expecting
//! the stream's version: of two runs created at once for one period, one append conflicts,
//! decides again and is refused. Voiding or reversing the run releases the period the same
//! way, so a period has at most one live regular run, and that is a fact of the log.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::calendar::PayPeriod;
use crate::error::{DomainError, require_text};
use crate::event::{Aggregate, DomainEvent};
use crate::ids::{OrganizationId, PayScheduleId, PayrollRunId};

/// The periods of one schedule that live regular runs pay, by the period's first day (a
/// schedule's periods never overlap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayCalendar {
    pub pay_schedule_id: PayScheduleId,
    pub organization_id: OrganizationId,
    pub claims: BTreeMap<NaiveDate, (PayPeriod, PayrollRunId)>,
}

impl PayCalendar {
    /// The live regular run that pays `period`, if one does.
    pub fn run_paying(&self, period: PayPeriod) -> Option<PayrollRunId> {
        self.claims.get(&period.start()).map(|(_, run)| *run)
    }
}

#[derive(Debug, Clone)]
pub enum PayCalendarCommand {
    /// A regular run pays `period` (a period of the schedule: the caller checked it).
    Claim { pay_schedule_id: PayScheduleId, organization_id: OrganizationId, period: PayPeriod, run: PayrollRunId },
    /// The run that pays `period` was voided or reversed: the period is free again.
    Release { period: PayPeriod, run: PayrollRunId, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum PayCalendarEvent {
    PayPeriodClaimed {
        pay_schedule_id: PayScheduleId,
        organization_id: OrganizationId,
        period: PayPeriod,
        payroll_run_id: PayrollRunId,
    },
    PayPeriodReleased {
        period: PayPeriod,
        payroll_run_id: PayrollRunId,
        reason: String,
    },
}

impl DomainEvent for PayCalendarEvent {
    const EVENT_TYPES: &'static [&'static str] = &["PayPeriodClaimed", "PayPeriodReleased"];
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PayCalendarAggregate;

impl Aggregate for PayCalendarAggregate {
    const STREAM_TYPE: &'static str = "pay_schedule";
    type State = Option<PayCalendar>;
    type Command = PayCalendarCommand;
    type Event = PayCalendarEvent;

    fn decide(state: &Self::State, command: PayCalendarCommand) -> Result<Vec<PayCalendarEvent>, DomainError> {
        match command {
            PayCalendarCommand::Claim { pay_schedule_id, organization_id, period, run } => {
                if let Some(calendar) = state
                    && let Some(other) = calendar.run_paying(period)
                {
                    return Err(DomainError::PeriodTaken { period: period.to_string(), payroll_run_id: other });
                }
                Ok(vec![PayCalendarEvent::PayPeriodClaimed {
                    pay_schedule_id,
                    organization_id,
                    period,
                    payroll_run_id: run,
                }])
            }
            PayCalendarCommand::Release { period, run, reason } => {
                require_text("reason", &reason)?;
                match state.as_ref().and_then(|calendar| calendar.run_paying(period)) {
                    Some(claimed) if claimed == run => {
                        Ok(vec![PayCalendarEvent::PayPeriodReleased { period, payroll_run_id: run, reason }])
                    }
                    _ => Err(DomainError::NotFound { entity: "claim of pay period", id: format!("{period} by {run}") }),
                }
            }
        }
    }

    fn evolve(state: Self::State, event: &PayCalendarEvent) -> Self::State {
        match event {
            PayCalendarEvent::PayPeriodClaimed { pay_schedule_id, organization_id, period, payroll_run_id } => {
                let mut calendar = state.unwrap_or_else(|| PayCalendar {
                    pay_schedule_id: *pay_schedule_id,
                    organization_id: *organization_id,
                    claims: BTreeMap::new(),
                });
                calendar.claims.insert(period.start(), (*period, *payroll_run_id));
                Some(calendar)
            }
            PayCalendarEvent::PayPeriodReleased { period, .. } => {
                let mut calendar = state.expect("a period is released after it was claimed");
                calendar.claims.remove(&period.start());
                Some(calendar)
            }
        }
    }
}
