//! The employee: employment spans, effective-dated pay rates, position and KYC status.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar::PayFrequency;
use crate::error::{DomainError, require_currency, require_text};
use crate::event::{Aggregate, DomainEvent};
use crate::gross_to_net::PaidPeriod;
use crate::ids::{EmployeeId, OrganizationId, PayScheduleId, PayrollRunId};
use crate::money::{Currency, Money};

/// Personal data, kept in one field of its own in every event that carries it, apart from
/// amounts, ids and dates, so that it can be encrypted per person and erased by deleting
/// the key while the log stays intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalData {
    pub full_name: String,
    pub email: Option<String>,
    pub address: Option<String>,
}

/// Personal data as an event holds it: in clear (a command, an event written before personal
/// data was sealed, or an event read through the vault), sealed under the person's data key
/// (as the log stores it; the domain never needs to read it), or erased (read after the key
/// was destroyed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Personal {
    Sealed { sealed: serde_json::Value },
    Erased { erased: Erasure },
    Clear(PersonalData),
}

/// When a person's data was erased (`None`: unknown, the key was never kept here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Personal {
    /// The data in clear, when it is.
    pub fn clear(&self) -> Option<&PersonalData> {
        match self {
            Personal::Clear(data) => Some(data),
            Personal::Sealed { .. } | Personal::Erased { .. } => None,
        }
    }
}

/// The employee's personal-data fields the store seals under the employee's data key:
/// (stream type, event type, payload field). `docs/events.md` lists them. `name` and `email`
/// are where version 1 of `EmployeeHired` kept them (never written since: nothing to seal,
/// but read as erased once the person is).
pub const PERSONAL_FIELDS: &[(&str, &str, &str)] = &[
    ("employee", "EmployeeHired", "personal"),
    ("employee", "EmployeeHired", "name"),
    ("employee", "EmployeeHired", "email"),
];
/// The events whose append destroys their stream's data key.
pub const ERASURE_EVENTS: &[(&str, &str)] = &[("employee", "EmployeePersonalDataErased")];

/// The most years an organization may keep payroll records after an employee left.
pub const RETENTION_YEARS_MAX: u32 = 100;

/// An erasure before the retention period has passed: the legal basis that allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureOverride {
    pub legal_basis: String,
}

/// What an erasure request must say: a reason, and the legal basis of an override. Checked
/// before anything else: a request for a person erased already is refused for it too,
/// rather than answered as a repeat.
pub fn erasure_request_valid(reason: &str, override_basis: Option<&ErasureOverride>) -> Result<(), DomainError> {
    require_text("reason", reason)?;
    if let Some(basis) = override_basis {
        require_text("override.legal_basis", &basis.legal_basis)?;
    }
    Ok(())
}

/// What a pay rate's amount is per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "basis")]
pub enum PayBasis {
    Annual,
    Monthly,
    /// Paid for a standard week of `hours_per_week`.
    Hourly {
        hours_per_week: Decimal,
    },
}

/// A pay rate: an amount per basis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayRate {
    pub amount: Money,
    #[serde(flatten)]
    pub basis: PayBasis,
}

/// The most standard hours a week an hourly rate may assume.
pub const HOURS_PER_WEEK_MAX: u32 = 80;

impl PayRate {
    pub fn validate(&self, field: &str) -> Result<(), DomainError> {
        if !self.amount.is_positive() {
            return Err(DomainError::invalid(
                format!("{field}.amount"),
                format!("must be positive, not {}", self.amount),
            ));
        }
        if let PayBasis::Hourly { hours_per_week } = self.basis
            && (hours_per_week <= Decimal::ZERO || hours_per_week > Decimal::from(HOURS_PER_WEEK_MAX))
        {
            return Err(DomainError::invalid(
                format!("{field}.hours_per_week"),
                format!("must be above 0 and at most {HOURS_PER_WEEK_MAX}"),
            ));
        }
        Ok(())
    }

    /// The exact (unrounded) amount of one full pay period at `frequency`.
    /// The rate's amount for one period of `frequency` (exact, not rounded).
    ///
    /// # Errors
    /// `MoneyError::Overflow` for a rate beyond `Decimal`'s range once made yearly (only a
    /// rate recorded before amounts were bounded at the edge can be).
    pub fn period_amount(&self, frequency: PayFrequency) -> Result<Decimal, crate::money::MoneyError> {
        let amount = self.amount.amount();
        let per_year = match self.basis {
            PayBasis::Annual => Some(amount),
            PayBasis::Monthly => amount.checked_mul(Decimal::from(12)),
            PayBasis::Hourly { hours_per_week } => {
                amount.checked_mul(hours_per_week).and_then(|weekly| weekly.checked_mul(Decimal::from(52)))
            }
        };
        per_year
            .and_then(|per_year| per_year.checked_div(frequency.periods_per_year()))
            .ok_or(crate::money::MoneyError::Overflow)
    }
}

/// A pay rate in force from a day on, until the next change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateChange {
    pub effective_from: NaiveDate,
    pub rate: PayRate,
    pub reason: String,
}

/// One stretch of employment; `end` is the last day worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmploymentSpan {
    pub start: NaiveDate,
    pub end: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KycStatus {
    Pending,
    UnderReview,
    Approved,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Employee {
    pub id: EmployeeId,
    pub organization_id: OrganizationId,
    pub personal: Personal,
    pub position: String,
    pub department: String,
    pub currency: Currency,
    pub pay_frequency: PayFrequency,
    /// The pay schedule whose regular runs pay the employee; `None` for an employee hired
    /// before schedules had ids (paid on the organization's default schedule when its
    /// frequency is theirs).
    pub pay_schedule_id: Option<PayScheduleId>,
    /// Ordered by `effective_from`; for one day, the later change wins.
    pub rates: Vec<RateChange>,
    /// Ordered; only the last may be open.
    pub employment: Vec<EmploymentSpan>,
    pub kyc: KycStatus,
    /// What each run paid, per period (regular and retro earnings), until taken back (a
    /// reversal, a payment the rail refused): the pay history a calculation and a payment
    /// check against.
    pub paid: std::collections::BTreeMap<PayrollRunId, Vec<PaidPeriod>>,
    /// When the employee's personal data was erased (the day its erasure was decided).
    pub erased_on: Option<NaiveDate>,
}

impl Employee {
    /// The first day the employee's data may be erased without an override: `years` after
    /// the last day worked; `None` while employed (or beyond the calendar).
    pub fn erasable_from(&self, years: u32) -> Option<NaiveDate> {
        self.end_date()?.checked_add_months(chrono::Months::new(years.checked_mul(12)?))
    }

    /// The rate in force on `day`, if any.
    pub fn rate_on(&self, day: NaiveDate) -> Option<&PayRate> {
        self.rates.iter().rev().find(|change| change.effective_from <= day).map(|change| &change.rate)
    }

    pub fn employed_on(&self, day: NaiveDate) -> bool {
        self.employment.iter().any(|span| span.start <= day && span.end.is_none_or(|end| day <= end))
    }

    /// Every period paid by runs other than `run`, with what was paid for it, one entry per
    /// run and period: the history a calculation of `run` starts from.
    pub fn paid_periods_except(&self, run: PayrollRunId) -> Vec<PaidPeriod> {
        self.paid.iter().filter(|(paid_by, _)| **paid_by != run).flat_map(|(_, paid)| paid.iter().cloned()).collect()
    }

    /// What was paid for `period`, by every run.
    pub fn paid_for(&self, period: crate::calendar::PayPeriod) -> Result<Money, crate::money::MoneyError> {
        Money::sum(
            &self.currency,
            self.paid.values().flatten().filter(|paid| paid.period == period).map(|paid| &paid.earnings),
        )
    }

    /// The end date when the employee has left, `None` while employed.
    pub fn end_date(&self) -> Option<NaiveDate> {
        self.employment.last().and_then(|span| span.end)
    }

    pub fn first_start(&self) -> NaiveDate {
        self.employment.first().expect("an employee has been hired").start
    }
}

#[derive(Debug, Clone)]
pub enum EmployeeCommand {
    Hire {
        employee_id: EmployeeId,
        organization_id: OrganizationId,
        personal: PersonalData,
        position: String,
        department: String,
        rate: PayRate,
        pay_frequency: PayFrequency,
        /// The schedule, whose frequency the caller checked is `pay_frequency`.
        pay_schedule_id: Option<PayScheduleId>,
        start_date: NaiveDate,
    },
    ChangePayRate {
        rate: PayRate,
        effective_from: NaiveDate,
        reason: String,
    },
    ChangePosition {
        position: String,
        department: String,
        effective_from: NaiveDate,
    },
    ChangeKycStatus {
        status: KycStatus,
        note: Option<String>,
    },
    Terminate {
        end_date: NaiveDate,
        reason: String,
    },
    Rehire {
        start_date: NaiveDate,
        rate: Option<PayRate>,
    },
    /// A run's item is paid: what it pays per period, checked against `basis`, the history
    /// it was calculated from (refused when another run paid one of its periods since).
    RecordPay {
        payroll_run_id: PayrollRunId,
        earnings: Vec<PaidPeriod>,
        basis: Vec<PaidPeriod>,
    },
    /// A run's payment is taken back (reversed, or refused by the rail).
    TakeBackPay {
        payroll_run_id: PayrollRunId,
        reason: String,
    },
    /// The employee's personal data is erased (its data key destroyed with the event).
    /// `retention_years` is the organization's period (looked up), `today` the caller's day.
    ErasePersonalData {
        reason: String,
        retention_years: Option<u32>,
        override_basis: Option<ErasureOverride>,
        today: NaiveDate,
        /// An erasure decided before (and lost with a restore) made again: the employee need
        /// not have left in the restored log.
        reapplied: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum EmployeeEvent {
    EmployeeHired {
        employee_id: EmployeeId,
        organization_id: OrganizationId,
        personal: Personal,
        position: String,
        department: String,
        rate: PayRate,
        pay_frequency: PayFrequency,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pay_schedule_id: Option<PayScheduleId>,
        start_date: NaiveDate,
    },
    EmployeePayRateChanged {
        rate: PayRate,
        effective_from: NaiveDate,
        reason: String,
    },
    EmployeePositionChanged {
        position: String,
        department: String,
        effective_from: NaiveDate,
    },
    EmployeeKycStatusChanged {
        status: KycStatus,
        note: Option<String>,
    },
    EmployeeTerminated {
        end_date: NaiveDate,
        reason: String,
    },
    EmployeeRehired {
        start_date: NaiveDate,
        rate: Option<PayRate>,
    },
    /// What a run's payment paid per period (in the same append as the payment).
    EmployeePaid {
        payroll_run_id: PayrollRunId,
        earnings: Vec<PaidPeriod>,
    },
    /// A run's payment taken back: its periods count as unpaid again.
    EmployeePayTakenBack {
        payroll_run_id: PayrollRunId,
        reason: String,
    },
    /// The employee's personal data is erased: the append destroys the data key it was
    /// sealed under. `erasable_from` is when the retention period ended (absent with an
    /// override before it, or without a period).
    EmployeePersonalDataErased {
        reason: String,
        erased_on: NaiveDate,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        erasable_from: Option<NaiveDate>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        override_basis: Option<ErasureOverride>,
    },
}

impl DomainEvent for EmployeeEvent {
    const EVENT_TYPES: &'static [&'static str] = &[
        "EmployeeHired",
        "EmployeePayRateChanged",
        "EmployeePositionChanged",
        "EmployeeKycStatusChanged",
        "EmployeeTerminated",
        "EmployeeRehired",
        "EmployeePaid",
        "EmployeePayTakenBack",
        "EmployeePersonalDataErased",
    ];
}

#[derive(Debug, Clone, Copy, Default)]
pub struct EmployeeAggregate;

fn hire(command: EmployeeCommand) -> Result<Vec<EmployeeEvent>, DomainError> {
    let EmployeeCommand::Hire {
        employee_id,
        organization_id,
        personal,
        position,
        department,
        rate,
        pay_frequency,
        pay_schedule_id,
        start_date,
    } = command
    else {
        unreachable!("only Hire comes here")
    };
    require_text("personal.full_name", &personal.full_name)?;
    if let Some(email) = &personal.email {
        require_text("personal.email", email)?;
    }
    require_text("position", &position)?;
    require_text("department", &department)?;
    rate.validate("rate")?;
    Ok(vec![EmployeeEvent::EmployeeHired {
        employee_id,
        organization_id,
        personal: Personal::Clear(personal),
        position,
        department,
        rate,
        pay_frequency,
        pay_schedule_id,
        start_date,
    }])
}

fn decide_existing(employee: &Employee, command: EmployeeCommand) -> Result<Vec<EmployeeEvent>, DomainError> {
    let terminated = employee.end_date().is_some();
    let status = if terminated { "terminated" } else { "employed" };
    let wrong_status = |action| DomainError::WrongStatus { entity: "employee", action, status: status.to_owned() };
    if employee.erased_on.is_some()
        && !matches!(command, EmployeeCommand::RecordPay { .. } | EmployeeCommand::TakeBackPay { .. })
    {
        if let EmployeeCommand::Hire { employee_id, .. } = command {
            return Err(DomainError::AlreadyExists { entity: "employee", id: employee_id.to_string() });
        }
        return Err(DomainError::WrongStatus {
            entity: "employee",
            action: "change the erased record of",
            status: "erased".to_owned(),
        });
    }
    match command {
        EmployeeCommand::Hire { employee_id, .. } => {
            Err(DomainError::AlreadyExists { entity: "employee", id: employee_id.to_string() })
        }
        EmployeeCommand::ErasePersonalData { reason, retention_years, override_basis, today, reapplied } => {
            erasure_request_valid(&reason, override_basis.as_ref())?;
            if !terminated && !reapplied {
                return Err(DomainError::WrongStatus {
                    entity: "employee",
                    action: "erase the personal data of (terminate first)",
                    status: status.to_owned(),
                });
            }
            let erasable_from = retention_years.and_then(|years| employee.erasable_from(years));
            let passed = erasable_from.is_some_and(|day| day <= today);
            if !passed && override_basis.is_none() {
                return Err(DomainError::RetentionNotPassed { employee_id: employee.id, erasable_from });
            }
            Ok(vec![EmployeeEvent::EmployeePersonalDataErased {
                reason,
                erased_on: today,
                erasable_from,
                override_basis: if passed { None } else { override_basis },
            }])
        }
        EmployeeCommand::ChangePayRate { rate, effective_from, reason } => {
            rate.validate("rate")?;
            require_currency("rate.amount", &rate.amount, &employee.currency)?;
            require_text("reason", &reason)?;
            if effective_from < employee.first_start() {
                return Err(DomainError::invalid(
                    "effective_from",
                    format!("{effective_from} is before the employee started on {}", employee.first_start()),
                ));
            }
            Ok(vec![EmployeeEvent::EmployeePayRateChanged { rate, effective_from, reason }])
        }
        EmployeeCommand::ChangePosition { position, department, effective_from } => {
            require_text("position", &position)?;
            require_text("department", &department)?;
            if terminated {
                return Err(wrong_status("change the position of"));
            }
            Ok(vec![EmployeeEvent::EmployeePositionChanged { position, department, effective_from }])
        }
        EmployeeCommand::ChangeKycStatus { status, note } => {
            if status == employee.kyc {
                return Err(DomainError::invalid("status", format!("KYC status is {status:?} already")));
            }
            Ok(vec![EmployeeEvent::EmployeeKycStatusChanged { status, note }])
        }
        EmployeeCommand::Terminate { end_date, reason } => {
            require_text("reason", &reason)?;
            let current = employee.employment.last().expect("an employee has been hired");
            if terminated {
                return Err(wrong_status("terminate"));
            }
            if end_date < current.start {
                return Err(DomainError::invalid(
                    "end_date",
                    format!("{end_date} is before the start on {}", current.start),
                ));
            }
            Ok(vec![EmployeeEvent::EmployeeTerminated { end_date, reason }])
        }
        EmployeeCommand::RecordPay { payroll_run_id, earnings, basis } => {
            if employee.paid.contains_key(&payroll_run_id) {
                return Err(DomainError::invalid(
                    "payroll_run_id",
                    format!("run {payroll_run_id} paid employee {} already", employee.id),
                ));
            }
            for expected in &basis {
                let now = employee.paid_for(expected.period)?;
                if now != expected.earnings {
                    return Err(DomainError::StaleCalculation {
                        employee_id: employee.id,
                        period: expected.period.to_string(),
                        calculated_on: expected.earnings.to_string(),
                        paid_now: now.to_string(),
                    });
                }
            }
            for paid in &earnings {
                require_currency("earnings", &paid.earnings, &employee.currency)?;
            }
            Ok(vec![EmployeeEvent::EmployeePaid { payroll_run_id, earnings }])
        }
        EmployeeCommand::TakeBackPay { payroll_run_id, reason } => {
            require_text("reason", &reason)?;
            if !employee.paid.contains_key(&payroll_run_id) {
                return Err(DomainError::NotFound { entity: "payment of run", id: payroll_run_id.to_string() });
            }
            Ok(vec![EmployeeEvent::EmployeePayTakenBack { payroll_run_id, reason }])
        }
        EmployeeCommand::Rehire { start_date, rate } => {
            let Some(end_date) = employee.end_date() else { return Err(wrong_status("rehire")) };
            if start_date <= end_date {
                return Err(DomainError::invalid(
                    "start_date",
                    format!("{start_date} is not after the last day {end_date}"),
                ));
            }
            if let Some(rate) = &rate {
                rate.validate("rate")?;
                require_currency("rate.amount", &rate.amount, &employee.currency)?;
            }
            Ok(vec![EmployeeEvent::EmployeeRehired { start_date, rate }])
        }
    }
}

impl Aggregate for EmployeeAggregate {
    const STREAM_TYPE: &'static str = "employee";
    type State = Option<Employee>;
    type Command = EmployeeCommand;
    type Event = EmployeeEvent;

    fn decide(state: &Self::State, command: EmployeeCommand) -> Result<Vec<EmployeeEvent>, DomainError> {
        match (state, command) {
            (None, command @ EmployeeCommand::Hire { .. }) => hire(command),
            (None, _) => Err(DomainError::NotFound { entity: "employee", id: "(not hired)".to_owned() }),
            (Some(employee), command) => decide_existing(employee, command),
        }
    }

    fn evolve(state: Self::State, event: &EmployeeEvent) -> Self::State {
        if let EmployeeEvent::EmployeeHired {
            employee_id,
            organization_id,
            personal,
            position,
            department,
            rate,
            pay_frequency,
            pay_schedule_id,
            start_date,
        } = event
        {
            return Some(Employee {
                id: *employee_id,
                organization_id: *organization_id,
                personal: personal.clone(),
                position: position.clone(),
                department: department.clone(),
                currency: rate.amount.currency().clone(),
                pay_frequency: *pay_frequency,
                pay_schedule_id: *pay_schedule_id,
                rates: vec![RateChange { effective_from: *start_date, rate: rate.clone(), reason: "hired".to_owned() }],
                employment: vec![EmploymentSpan { start: *start_date, end: None }],
                kyc: KycStatus::Pending,
                paid: std::collections::BTreeMap::new(),
                erased_on: None,
            });
        }
        let mut employee = state.expect("an employee's later events follow the hire");
        match event {
            EmployeeEvent::EmployeeHired { .. } => unreachable!("handled above"),
            EmployeeEvent::EmployeePayRateChanged { rate, effective_from, reason } => {
                add_rate(&mut employee, *effective_from, rate.clone(), reason.clone());
            }
            EmployeeEvent::EmployeePositionChanged { position, department, .. } => {
                employee.position.clone_from(position);
                employee.department.clone_from(department);
            }
            EmployeeEvent::EmployeeKycStatusChanged { status, .. } => employee.kyc = *status,
            EmployeeEvent::EmployeeTerminated { end_date, .. } => {
                employee.employment.last_mut().expect("an employee has been hired").end = Some(*end_date);
            }
            EmployeeEvent::EmployeeRehired { start_date, rate } => {
                employee.employment.push(EmploymentSpan { start: *start_date, end: None });
                if let Some(rate) = rate {
                    add_rate(&mut employee, *start_date, rate.clone(), "rehired".to_owned());
                }
            }
            EmployeeEvent::EmployeePaid { payroll_run_id, earnings } => {
                employee.paid.insert(*payroll_run_id, earnings.clone());
            }
            EmployeeEvent::EmployeePayTakenBack { payroll_run_id, .. } => {
                employee.paid.remove(payroll_run_id);
            }
            EmployeeEvent::EmployeePersonalDataErased { erased_on, .. } => {
                employee.erased_on = Some(*erased_on);
                if !matches!(employee.personal, Personal::Erased { .. }) {
                    employee.personal = Personal::Erased { erased: Erasure { at: None } };
                }
            }
        }
        Some(employee)
    }
}

/// Inserts a rate change after every change effective on or before the same day, so that
/// for one day the later change wins.
fn add_rate(employee: &mut Employee, effective_from: NaiveDate, rate: PayRate, reason: String) {
    let index = employee.rates.partition_point(|change| change.effective_from <= effective_from);
    employee.rates.insert(index, RateChange { effective_from, rate, reason });
}
