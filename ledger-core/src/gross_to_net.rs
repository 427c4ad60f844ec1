//! Gross to net for one employee and one pay period.
//!
//! Not a tax engine: deductions and employer contributions are rules the organization
//! configures (percentage, fixed, percentage with a cap).
//!
//! **Proration.** A full period's amount is the rate's yearly amount divided by the periods
//! per year of the pay frequency. Each day of the period the employee is employed earns
//! `1 / days in period` of the full amount at the rate in force that day. The earnings are
//! summed exactly and rounded once with the domain's rounding rule; the lines per rate are
//! then allocated from that total, so they always add up to it.
//!
//! **Retro adjustments.** For every earlier period already paid, the regular earnings are
//! recomputed with today's rate history; a difference from what was paid for that period
//! becomes a retro line in this run.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar::{PayFrequency, PayPeriod};
use crate::employee::{Employee, KycStatus, PayRate};
use crate::error::{DomainError, require_currency, require_text};
use crate::ids::EmployeeId;
use crate::money::{Currency, Money, MoneyError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleParty {
    /// Taken from the employee's gross: lowers the net.
    Employee,
    /// Paid by the employer on top of the gross.
    Employer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RuleCalculation {
    /// `rate` of the gross, a fraction (0.062 is 6.2%).
    Percentage {
        rate: Decimal,
    },
    Fixed {
        amount: Money,
    },
    /// `rate` of the gross, at most `cap` per period.
    PercentageCapped {
        rate: Decimal,
        cap: Money,
    },
}

/// A deduction (employee) or contribution (employer) rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeductionRule {
    pub id: String,
    pub name: String,
    pub party: RuleParty,
    pub calculation: RuleCalculation,
    /// Where the money goes, e.g. `liability:tax-withholding`.
    pub liability_account: String,
}

impl DeductionRule {
    pub fn validate(&self) -> Result<(), DomainError> {
        require_text("rule.id", &self.id)?;
        require_text("rule.name", &self.name)?;
        require_text("rule.liability_account", &self.liability_account)?;
        let check_rate = |rate: Decimal| {
            if rate < Decimal::ZERO || rate > Decimal::ONE {
                return Err(DomainError::invalid("rule.rate", format!("{rate} is not a fraction between 0 and 1")));
            }
            Ok(())
        };
        let check_positive = |field: &str, money: &Money| {
            if !money.is_positive() {
                return Err(DomainError::invalid(field, format!("must be positive, not {money}")));
            }
            Ok(())
        };
        match &self.calculation {
            RuleCalculation::Percentage { rate } => check_rate(*rate),
            RuleCalculation::Fixed { amount } => check_positive("rule.amount", amount),
            RuleCalculation::PercentageCapped { rate, cap } => {
                check_rate(*rate)?;
                check_positive("rule.cap", cap)
            }
        }
    }

    /// The currency of the rule's fixed amount or cap, if it has one.
    pub fn currency(&self) -> Option<&Currency> {
        match &self.calculation {
            RuleCalculation::Percentage { .. } => None,
            RuleCalculation::Fixed { amount } => Some(amount.currency()),
            RuleCalculation::PercentageCapped { cap, .. } => Some(cap.currency()),
        }
    }

    /// The rule's amount on `base` (a non-negative gross).
    fn amount_on(&self, base: &Money) -> Result<Money, DomainError> {
        let field = format!("rule {}", self.id);
        match &self.calculation {
            RuleCalculation::Percentage { rate } => Ok(Money::round(share(base, *rate)?, base.currency().clone())),
            RuleCalculation::Fixed { amount } => {
                require_currency(&field, amount, base.currency())?;
                Ok(amount.clone())
            }
            RuleCalculation::PercentageCapped { rate, cap } => {
                require_currency(&field, cap, base.currency())?;
                Ok(Money::round(share(base, *rate)?, base.currency().clone()).min(cap.clone())?)
            }
        }
    }
}

/// `rate` (a fraction) of `base`, exact.
fn share(base: &Money, rate: Decimal) -> Result<Decimal, MoneyError> {
    base.amount().checked_mul(rate).ok_or(MoneyError::Overflow)
}

/// What was paid for an earlier period (regular and retro earnings together).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidPeriod {
    pub period: PayPeriod,
    pub earnings: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EarningKind {
    /// Days `from..=to` of this period at one rate.
    Regular { from: NaiveDate, to: NaiveDate },
    /// The correction of an earlier, paid period.
    Retro { period: PayPeriod },
    /// A one-off earning an off-cycle run lists (a bonus, a commission, a correction, final
    /// pay): not regular earnings of any day.
    OneOff { category: OneOffCategory, code: String, taxable: bool },
}

/// What a one-off earning is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OneOffCategory {
    Bonus,
    Commission,
    /// May be negative: takes back what was paid in error.
    Correction,
    FinalPay,
}

/// One earning of an off-cycle run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneOffLine {
    pub category: OneOffCategory,
    /// The organization's own earning code (e.g. `BON-Q4`), carried to the payslip and
    /// journal.
    pub code: String,
    pub amount: Money,
    /// Whether the organization's percentage rules apply to it.
    pub taxable: bool,
}

/// The most lines one employee has in an off-cycle run.
pub const ONE_OFF_LINES_MAX: usize = 20;

impl OneOffLine {
    /// Checks a line of `currency`; `field` names it in an error.
    pub fn validate(&self, field: &str, currency: &Currency) -> Result<(), DomainError> {
        require_text(&format!("{field}.code"), &self.code)?;
        if self.code.chars().count() > 64 {
            return Err(DomainError::invalid(format!("{field}.code"), "must be at most 64 characters"));
        }
        require_currency(&format!("{field}.amount"), &self.amount, currency)?;
        let negative_allowed = self.category == OneOffCategory::Correction;
        if self.amount.is_zero() || (self.amount.is_negative() && !negative_allowed) {
            let allowed = if negative_allowed { "must not be zero" } else { "must be positive" };
            return Err(DomainError::invalid(format!("{field}.amount"), format!("{allowed}, not {}", self.amount)));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarningLine {
    #[serde(flatten)]
    pub kind: EarningKind,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleLine {
    pub rule_id: String,
    pub name: String,
    pub liability_account: String,
    pub amount: Money,
}

/// Why an item is calculated but not paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum HoldReason {
    KycNotApproved {
        status: KycStatus,
    },
    /// Retro corrections took more than this period's earnings.
    NegativeNet,
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldReason::KycNotApproved { status } => write!(formatter, "KYC is {status:?}, not approved"),
            HoldReason::NegativeNet => formatter.write_str("net pay is negative"),
        }
    }
}

/// One employee's pay in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayrollItem {
    pub employee_id: EmployeeId,
    pub earnings: Vec<EarningLine>,
    pub deductions: Vec<RuleLine>,
    pub contributions: Vec<RuleLine>,
    pub gross: Money,
    pub deductions_total: Money,
    pub contributions_total: Money,
    pub net: Money,
    pub hold: Option<HoldReason>,
    /// What had been paid, per period, when the item was calculated, for its own period and
    /// each period it corrects: its payment is refused if that has changed since (another run
    /// paid one of those periods meanwhile). Empty for one-off items and items recorded
    /// before it was kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub basis: Vec<PaidPeriod>,
}

impl PayrollItem {
    /// What the item pays per period (regular earnings for the run's `period`, retro lines
    /// for theirs), as the employee's pay history records it; one-off lines are no period's.
    pub fn earnings_by_period(&self, period: PayPeriod) -> Vec<PaidPeriod> {
        let mut by_period: Vec<PaidPeriod> = Vec::new();
        for line in &self.earnings {
            let line_period = match &line.kind {
                EarningKind::Regular { .. } => period,
                EarningKind::Retro { period } => *period,
                EarningKind::OneOff { .. } => continue,
            };
            match by_period.iter_mut().find(|paid| paid.period == line_period) {
                Some(paid) => paid.earnings = paid.earnings.checked_add(&line.amount).expect("one currency per item"),
                None => by_period.push(PaidPeriod { period: line_period, earnings: line.amount.clone() }),
            }
        }
        by_period
    }

    /// What the employer pays out in all: gross plus contributions.
    pub fn employer_cost(&self) -> Money {
        self.gross.checked_add(&self.contributions_total).expect("one currency per item")
    }

    /// Asserts the item's arithmetic: a programmer error if it does not hold.
    pub fn assert_consistent(&self) {
        let currency = self.gross.currency();
        let sum = |lines: &mut dyn Iterator<Item = &Money>| Money::sum(currency, lines).expect("one currency per item");
        assert_eq!(sum(&mut self.earnings.iter().map(|line| &line.amount)), self.gross, "gross is the sum of earnings");
        assert_eq!(sum(&mut self.deductions.iter().map(|line| &line.amount)), self.deductions_total);
        assert_eq!(sum(&mut self.contributions.iter().map(|line| &line.amount)), self.contributions_total);
        assert_eq!(
            self.gross.checked_sub(&self.deductions_total).expect("one currency"),
            self.net,
            "net = gross - deductions"
        );
    }
}

/// An employee to pay in a run, with what was paid to them before: every period paid (its
/// amount), and every earlier period left unpaid that is to be caught up (amount 0).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemInput {
    pub employee: Employee,
    pub paid_periods: Vec<PaidPeriod>,
}

impl ItemInput {
    /// What was paid for `period` (0 when nothing).
    pub fn paid_for(&self, period: PayPeriod) -> Result<Money, MoneyError> {
        let currency = &self.employee.currency;
        Money::sum(currency, self.paid_periods.iter().filter(|paid| paid.period == period).map(|paid| &paid.earnings))
    }
}

/// The exact earnings of `period` and their lines (one per stretch at one rate), rounded.
fn regular_earnings(
    employee: &Employee,
    period: PayPeriod,
    frequency: PayFrequency,
) -> Result<Vec<EarningLine>, MoneyError> {
    let mut segments: Vec<(NaiveDate, NaiveDate, &PayRate)> = Vec::new();
    for day in period.each_day() {
        let Some(rate) = employee.rate_on(day).filter(|_| employee.employed_on(day)) else { continue };
        match segments.last_mut() {
            Some((_, to, segment_rate)) if *segment_rate == rate && *to + chrono::Days::new(1) == day => *to = day,
            _ => segments.push((day, day, rate)),
        }
    }
    if segments.is_empty() {
        return Ok(Vec::new());
    }
    let weights = segments
        .iter()
        .map(|(from, to, rate)| {
            let days = Decimal::from((*to - *from).num_days() + 1);
            rate.period_amount(frequency)?.checked_mul(days).ok_or(MoneyError::Overflow)
        })
        .collect::<Result<Vec<Decimal>, MoneyError>>()?;
    let sum =
        weights.iter().try_fold(Decimal::ZERO, |sum, weight| sum.checked_add(*weight)).ok_or(MoneyError::Overflow)?;
    let exact = sum.checked_div(Decimal::from(period.days())).ok_or(MoneyError::Overflow)?;
    let total = Money::round(exact, employee.currency.clone());
    let amounts = if total.is_zero() { vec![total.clone(); segments.len()] } else { total.allocate(&weights)? };
    Ok(segments
        .into_iter()
        .zip(amounts)
        .map(|((from, to, _), amount)| EarningLine { kind: EarningKind::Regular { from, to }, amount })
        .collect())
}

fn retro_earnings(
    input: &ItemInput,
    period: PayPeriod,
    frequency: PayFrequency,
) -> Result<Vec<EarningLine>, DomainError> {
    let currency = &input.employee.currency;
    let mut earlier: Vec<PayPeriod> =
        input.paid_periods.iter().map(|paid| paid.period).filter(|paid| paid.end() < period.start()).collect();
    earlier.sort();
    earlier.dedup();
    let mut lines = Vec::new();
    for paid_period in earlier {
        let paid = input.paid_for(paid_period)?;
        let owed = Money::sum(
            currency,
            regular_earnings(&input.employee, paid_period, frequency)?.iter().map(|line| &line.amount),
        )?;
        let difference = owed.checked_sub(&paid)?;
        if !difference.is_zero() {
            lines.push(EarningLine { kind: EarningKind::Retro { period: paid_period }, amount: difference });
        }
    }
    Ok(lines)
}

/// Checks that the employee can be paid for `period` at all.
fn check_payable(employee: &Employee, frequency: PayFrequency, currency: &Currency) -> Result<(), DomainError> {
    if &employee.currency != currency {
        return Err(DomainError::WrongCurrency {
            field: format!("employee {} pay rate", employee.id),
            expected: currency.code().to_owned(),
            found: employee.currency.code().to_owned(),
        });
    }
    if employee.pay_frequency != frequency {
        return Err(DomainError::invalid(
            format!("employee {}", employee.id),
            format!("is paid {:?}, the run pays {frequency:?}", employee.pay_frequency),
        ));
    }
    Ok(())
}

/// Gross to net for one employee.
///
/// # Errors
/// `WrongCurrency` when the employee or a rule is in another currency than the run;
/// `EmployeeTerminated` when the employee left before the period and nothing is owed;
/// `Invalid` when the employee starts after the period or is paid at another frequency.
pub fn calculate_item(
    input: &ItemInput,
    period: PayPeriod,
    frequency: PayFrequency,
    currency: &Currency,
    rules: &[DeductionRule],
) -> Result<PayrollItem, DomainError> {
    let employee = &input.employee;
    check_payable(employee, frequency, currency)?;
    let mut earnings = regular_earnings(employee, period, frequency)?;
    // Paid already for this very period by another run (one created before periods were
    // claimed, say): taken off. The history is per period: days of another, overlapping
    // period are not seen here, which is why an employee never changes schedule.
    let paid_now = input.paid_for(period)?;
    if !paid_now.is_zero() {
        earnings.push(EarningLine { kind: EarningKind::Retro { period }, amount: paid_now.negated() });
    }
    earnings.extend(retro_earnings(input, period, frequency)?);
    if earnings.is_empty() {
        return Err(match employee.end_date() {
            Some(end_date) if end_date < period.start() => {
                DomainError::EmployeeTerminated { employee_id: employee.id, end_date, period: period.to_string() }
            }
            _ => DomainError::invalid(
                format!("employee {}", employee.id),
                format!("is not employed on any day of {period} and is owed no correction"),
            ),
        });
    }
    let gross = Money::sum(currency, earnings.iter().map(|line| &line.amount))?;
    let base = if gross.is_negative() { Money::zero(currency.clone()) } else { gross.clone() };
    let mut item = with_rules(employee, earnings, base, rules, |_| true)?;
    let mut periods = vec![period];
    periods.extend(item.earnings.iter().filter_map(|line| match &line.kind {
        EarningKind::Retro { period } => Some(*period),
        _ => None,
    }));
    periods.dedup();
    item.basis = periods
        .into_iter()
        .map(|period| Ok(PaidPeriod { period, earnings: input.paid_for(period)? }))
        .collect::<Result<_, MoneyError>>()?;
    Ok(item)
}

/// An off-cycle item: the lines given, no regular or retro earnings. The organization's
/// percentage rules (capped or not) apply to the taxable lines; fixed-amount rules are per
/// regular period and do not.
///
/// # Errors
/// `WrongCurrency` when the employee or a line is in another currency than the run;
/// `Invalid` for no lines, too many, or a line that is not valid.
pub fn calculate_one_off(
    employee: &Employee,
    lines: &[OneOffLine],
    currency: &Currency,
    rules: &[DeductionRule],
) -> Result<PayrollItem, DomainError> {
    let field = format!("employee {}", employee.id);
    if &employee.currency != currency {
        return Err(DomainError::WrongCurrency {
            field: format!("{field} pay rate"),
            expected: currency.code().to_owned(),
            found: employee.currency.code().to_owned(),
        });
    }
    if lines.is_empty() || lines.len() > ONE_OFF_LINES_MAX {
        return Err(DomainError::invalid(
            format!("{field} lines"),
            format!("an employee has 1 to {ONE_OFF_LINES_MAX} lines, not {}", lines.len()),
        ));
    }
    for line in lines {
        line.validate(&format!("{field} line"), currency)?;
    }
    let earnings: Vec<EarningLine> = lines
        .iter()
        .map(|line| EarningLine {
            kind: EarningKind::OneOff { category: line.category, code: line.code.clone(), taxable: line.taxable },
            amount: line.amount.clone(),
        })
        .collect();
    let taxable = Money::sum(currency, lines.iter().filter(|line| line.taxable).map(|line| &line.amount))?;
    let base = if taxable.is_negative() { Money::zero(currency.clone()) } else { taxable };
    with_rules(employee, earnings, base, rules, |rule| !matches!(rule.calculation, RuleCalculation::Fixed { .. }))
}

/// The item of `earnings`: the rules `applies` lets through taken on `base` (deductions never
/// more than what is left of it), the totals, and a hold when KYC is not approved or the net
/// is negative.
fn with_rules(
    employee: &Employee,
    earnings: Vec<EarningLine>,
    base: Money,
    rules: &[DeductionRule],
    applies: impl Fn(&DeductionRule) -> bool,
) -> Result<PayrollItem, DomainError> {
    let currency = base.currency().clone();
    let currency = &currency;
    let gross = Money::sum(currency, earnings.iter().map(|line| &line.amount))?;
    let mut deductions = Vec::new();
    let mut contributions = Vec::new();
    let mut remaining = base.clone();
    for rule in rules.iter().filter(|rule| applies(rule)) {
        let mut amount = rule.amount_on(&base)?;
        if rule.party == RuleParty::Employee {
            // A deduction never takes more than what is left of the gross.
            amount = amount.min(remaining.clone())?;
            remaining = remaining.checked_sub(&amount)?;
        }
        let line = RuleLine {
            rule_id: rule.id.clone(),
            name: rule.name.clone(),
            liability_account: rule.liability_account.clone(),
            amount,
        };
        match rule.party {
            RuleParty::Employee => deductions.push(line),
            RuleParty::Employer => contributions.push(line),
        }
    }
    let deductions_total = Money::sum(currency, deductions.iter().map(|line| &line.amount))?;
    let contributions_total = Money::sum(currency, contributions.iter().map(|line| &line.amount))?;
    let net = gross.checked_sub(&deductions_total)?;
    let hold = if employee.kyc != KycStatus::Approved {
        Some(HoldReason::KycNotApproved { status: employee.kyc })
    } else if net.is_negative() {
        Some(HoldReason::NegativeNet)
    } else {
        None
    };
    let item = PayrollItem {
        employee_id: employee.id,
        earnings,
        deductions,
        contributions,
        gross,
        deductions_total,
        contributions_total,
        net,
        hold,
        basis: Vec::new(),
    };
    item.assert_consistent();
    Ok(item)
}
