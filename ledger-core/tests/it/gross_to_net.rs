//! Gross to net, with examples worked by hand.

use ledger_core::Aggregate;
use ledger_core::DomainError;
use ledger_core::calendar::PayFrequency;
use ledger_core::employee::{EmployeeAggregate, EmployeeCommand, EmployeeEvent, KycStatus};
use ledger_core::gross_to_net::{
    DeductionRule, EarningKind, HoldReason, ItemInput, OneOffCategory, OneOffLine, PaidPeriod, RuleCalculation,
    RuleParty, calculate_item, calculate_one_off,
};
use ledger_core::money::{Currency, Money};
use rust_decimal_macros::dec;

use crate::{annual, day, employee_id, february, hired, january, monthly, usd, when};

fn input(events: &[EmployeeEvent], paid_periods: Vec<PaidPeriod>) -> ItemInput {
    ItemInput { employee: EmployeeAggregate::fold(events).unwrap(), paid_periods }
}

fn with(mut events: Vec<EmployeeEvent>, command: EmployeeCommand) -> Vec<EmployeeEvent> {
    let new = when::<EmployeeAggregate>(&events, command).unwrap();
    events.extend(new);
    events
}

fn rule(id: &str, party: RuleParty, calculation: RuleCalculation) -> DeductionRule {
    DeductionRule { id: id.into(), name: id.into(), party, calculation, liability_account: id.into() }
}

#[test]
fn a_full_month_pays_the_full_period_amount() {
    // 60,000.00 a year, paid monthly: 60,000 / 12 = 5,000.00.
    let events = hired(employee_id(1), annual("60000.00"), day(2025, 6, 1));
    let item =
        calculate_item(&input(&events, vec![]), january(), PayFrequency::Monthly, &Currency::usd(), &[]).unwrap();
    assert_eq!(item.gross, usd("5000.00"));
    assert_eq!(item.net, usd("5000.00"));
}

#[test]
fn a_mid_period_raise_is_prorated_by_days() {
    // January has 31 days. 60,000/yr (5,000.00 a month) for Jan 1-16 (16 days), then
    // 72,000/yr (6,000.00 a month) from Jan 17 (15 days):
    //   (5,000 x 16 + 6,000 x 15) / 31 = 170,000 / 31 = 5,483.870967... -> 5,483.87.
    // The lines split 548,387 cents by weights 80,000 : 90,000: 258,064.47 and 290,322.52;
    // rounded down that is 548,386, and the cent left goes to the larger remainder (.52):
    //   2,580.64 + 2,903.23 = 5,483.87.
    let events = with(
        hired(employee_id(1), annual("60000.00"), day(2025, 6, 1)),
        EmployeeCommand::ChangePayRate {
            rate: annual("72000.00"),
            effective_from: day(2026, 1, 17),
            reason: "raise".into(),
        },
    );
    let item =
        calculate_item(&input(&events, vec![]), january(), PayFrequency::Monthly, &Currency::usd(), &[]).unwrap();
    assert_eq!(item.gross, usd("5483.87"));
    let lines: Vec<_> = item.earnings.iter().map(|line| (line.kind.clone(), line.amount.clone())).collect();
    assert_eq!(
        lines,
        vec![
            (EarningKind::Regular { from: day(2026, 1, 1), to: day(2026, 1, 16) }, usd("2580.64")),
            (EarningKind::Regular { from: day(2026, 1, 17), to: day(2026, 1, 31) }, usd("2903.23")),
        ]
    );
}

#[test]
fn a_mid_period_hire_is_paid_from_the_start_date() {
    // 5,000.00 a month, hired Jan 20: Jan 20-31 is 12 of 31 days:
    //   5,000 x 12 / 31 = 1,935.483870... -> 1,935.48.
    let events = hired(employee_id(1), monthly("5000.00"), day(2026, 1, 20));
    let item =
        calculate_item(&input(&events, vec![]), january(), PayFrequency::Monthly, &Currency::usd(), &[]).unwrap();
    assert_eq!(item.gross, usd("1935.48"));
}

#[test]
fn a_termination_pays_up_to_the_end_date_and_nothing_after() {
    // 5,000.00 a month, last day Jan 10: 10 of 31 days: 50,000 / 31 = 1,612.903225... -> 1,612.90.
    let events = with(
        hired(employee_id(1), monthly("5000.00"), day(2025, 6, 1)),
        EmployeeCommand::Terminate { end_date: day(2026, 1, 10), reason: "resigned".into() },
    );
    let item =
        calculate_item(&input(&events, vec![]), january(), PayFrequency::Monthly, &Currency::usd(), &[]).unwrap();
    assert_eq!(item.gross, usd("1612.90"));
    let february = calculate_item(&input(&events, vec![]), february(), PayFrequency::Monthly, &Currency::usd(), &[]);
    assert!(matches!(february, Err(DomainError::EmployeeTerminated { end_date, .. }) if end_date == day(2026, 1, 10)));
}

#[test]
fn a_backdated_raise_into_a_paid_period_is_a_retro_line_in_the_next_run() {
    // January was paid at 5,000.00. In February a raise to 5,500.00 a month is backdated to
    // Jan 16. January at today's rates: (5,000 x 15 + 5,500 x 16) / 31 = 163,000 / 31
    // = 5,258.064516... -> 5,258.06; 258.06 more than was paid. February: 5,500.00.
    // Gross: 5,758.06.
    let events = with(
        hired(employee_id(1), monthly("5000.00"), day(2025, 6, 1)),
        EmployeeCommand::ChangePayRate {
            rate: monthly("5500.00"),
            effective_from: day(2026, 1, 16),
            reason: "backdated raise".into(),
        },
    );
    let paid = vec![PaidPeriod { period: january(), earnings: usd("5000.00") }];
    let item = calculate_item(&input(&events, paid), february(), PayFrequency::Monthly, &Currency::usd(), &[]).unwrap();
    let retro: Vec<_> = item.earnings.iter().filter(|line| matches!(line.kind, EarningKind::Retro { .. })).collect();
    assert_eq!(retro.len(), 1);
    assert_eq!(retro[0].kind, EarningKind::Retro { period: january() });
    assert_eq!(retro[0].amount, usd("258.06"));
    assert_eq!(item.gross, usd("5758.06"));

    // Once the retro is paid too, the next run owes no more for January.
    let paid = vec![
        PaidPeriod { period: january(), earnings: usd("5000.00") },
        PaidPeriod { period: january(), earnings: usd("258.06") },
        PaidPeriod { period: february(), earnings: usd("5500.00") },
    ];
    let march = ledger_core::calendar::PayPeriod::new(day(2026, 3, 1), day(2026, 3, 31)).unwrap();
    let item = calculate_item(&input(&events, paid), march, PayFrequency::Monthly, &Currency::usd(), &[]).unwrap();
    assert!(item.earnings.iter().all(|line| matches!(line.kind, EarningKind::Regular { .. })));
}

#[test]
fn deductions_and_contributions_follow_the_rules() {
    // Gross 5,483.87 (the mid-period raise above).
    //   tax 10%:                 548.387   -> 548.39 (half to even: .387 rounds up)
    //   pension 5% capped 200:   274.1935  -> capped at 200.00
    //   health fixed:            150.00
    //   deductions: 898.39; net: 5,483.87 - 898.39 = 4,585.48
    //   employer social 7.65%:   419.516055 -> 419.52
    let events = with(
        hired(employee_id(1), annual("60000.00"), day(2025, 6, 1)),
        EmployeeCommand::ChangePayRate {
            rate: annual("72000.00"),
            effective_from: day(2026, 1, 17),
            reason: "raise".into(),
        },
    );
    let rules = vec![
        rule("tax", RuleParty::Employee, RuleCalculation::Percentage { rate: dec!(0.10) }),
        rule(
            "pension",
            RuleParty::Employee,
            RuleCalculation::PercentageCapped { rate: dec!(0.05), cap: usd("200.00") },
        ),
        rule("health", RuleParty::Employee, RuleCalculation::Fixed { amount: usd("150.00") }),
        rule("social", RuleParty::Employer, RuleCalculation::Percentage { rate: dec!(0.0765) }),
    ];
    let item =
        calculate_item(&input(&events, vec![]), january(), PayFrequency::Monthly, &Currency::usd(), &rules).unwrap();
    let amounts: Vec<_> = item.deductions.iter().map(|line| line.amount.clone()).collect();
    assert_eq!(amounts, vec![usd("548.39"), usd("200.00"), usd("150.00")]);
    assert_eq!(item.deductions_total, usd("898.39"));
    assert_eq!(item.net, usd("4585.48"));
    assert_eq!(item.contributions_total, usd("419.52"));
    assert_eq!(item.employer_cost(), usd("5903.39"));
}

#[test]
fn deductions_never_take_more_than_the_gross() {
    // Hired Jan 31: one day of 3,100.00 a month is 100.00; a fixed 150.00 takes only 100.00.
    let events = hired(employee_id(1), monthly("3100.00"), day(2026, 1, 31));
    let rules = vec![rule("health", RuleParty::Employee, RuleCalculation::Fixed { amount: usd("150.00") })];
    let item =
        calculate_item(&input(&events, vec![]), january(), PayFrequency::Monthly, &Currency::usd(), &rules).unwrap();
    assert_eq!(item.gross, usd("100.00"));
    assert_eq!(item.deductions_total, usd("100.00"));
    assert_eq!(item.net, usd("0.00"));
}

#[test]
fn without_approved_kyc_the_item_is_held() {
    let mut events = hired(employee_id(1), monthly("5000.00"), day(2025, 6, 1));
    events.pop(); // No KYC approval.
    let item =
        calculate_item(&input(&events, vec![]), january(), PayFrequency::Monthly, &Currency::usd(), &[]).unwrap();
    assert_eq!(item.hold, Some(HoldReason::KycNotApproved { status: KycStatus::Pending }));
    assert_eq!(item.gross, usd("5000.00"), "a held item is still calculated");
}

#[test]
fn the_wrong_currency_or_frequency_is_an_error() {
    let events = hired(employee_id(1), monthly("5000.00"), day(2025, 6, 1));
    let euros = Currency::known("EUR").unwrap();
    let currency = calculate_item(&input(&events, vec![]), january(), PayFrequency::Monthly, &euros, &[]);
    assert!(matches!(currency, Err(DomainError::WrongCurrency { .. })));
    let weekly = calculate_item(&input(&events, vec![]), january(), PayFrequency::Weekly, &Currency::usd(), &[]);
    assert!(matches!(weekly, Err(DomainError::Invalid { .. })));
    let euro_rule = rule(
        "x",
        RuleParty::Employee,
        RuleCalculation::Fixed { amount: ledger_core::Money::parse("1.00", euros).unwrap() },
    );
    let rule_currency =
        calculate_item(&input(&events, vec![]), january(), PayFrequency::Monthly, &Currency::usd(), &[euro_rule]);
    assert!(matches!(rule_currency, Err(DomainError::WrongCurrency { .. })));
}

#[test]
fn an_employee_starting_after_the_period_is_owed_nothing_and_says_so() {
    let events = hired(employee_id(1), monthly("5000.00"), day(2026, 2, 1));
    let result = calculate_item(&input(&events, vec![]), january(), PayFrequency::Monthly, &Currency::usd(), &[]);
    assert!(matches!(result, Err(DomainError::Invalid { .. })));
}

fn bonus(category: OneOffCategory, amount: &str, taxable: bool) -> OneOffLine {
    OneOffLine { category, code: "BON".into(), amount: usd(amount), taxable }
}

#[test]
fn a_one_off_item_pays_its_lines_under_the_percentage_rules_only() {
    let employee = EmployeeAggregate::fold(&hired(employee_id(1), monthly("5000.00"), day(2025, 1, 1))).unwrap();
    let rules = [
        rule("a-tax", RuleParty::Employee, RuleCalculation::Percentage { rate: dec!(0.20) }),
        rule("b-health", RuleParty::Employee, RuleCalculation::Fixed { amount: usd("100.00") }),
        rule("c-social", RuleParty::Employer, RuleCalculation::Percentage { rate: dec!(0.05) }),
    ];
    let lines = [bonus(OneOffCategory::Bonus, "1000.00", true), bonus(OneOffCategory::Commission, "200.00", false)];
    let item = calculate_one_off(&employee, &lines, &Currency::usd(), &rules).unwrap();
    // Gross 1,200.00; tax 20 % of the taxable 1,000.00 only; no fixed health deduction.
    assert_eq!(item.gross, usd("1200.00"));
    assert_eq!(item.deductions.iter().map(|line| line.rule_id.as_str()).collect::<Vec<_>>(), ["a-tax"]);
    assert_eq!(item.deductions_total, usd("200.00"));
    assert_eq!(item.contributions_total, usd("50.00"));
    assert_eq!(item.net, usd("1000.00"));
    assert!(item.earnings.iter().all(|line| matches!(line.kind, EarningKind::OneOff { .. })));
    assert_eq!(item.hold, None);

    // A negative correction larger than the rest is held, not paid negative.
    let lines = [bonus(OneOffCategory::Correction, "-300.00", true), bonus(OneOffCategory::Bonus, "100.00", true)];
    let item = calculate_one_off(&employee, &lines, &Currency::usd(), &rules).unwrap();
    assert_eq!(item.net, usd("-200.00"));
    assert_eq!(item.hold, Some(HoldReason::NegativeNet));

    // Only a correction may be negative; no line is zero; lines are bounded.
    for (lines, field) in [
        (vec![bonus(OneOffCategory::Bonus, "-1.00", true)], "amount"),
        (vec![bonus(OneOffCategory::FinalPay, "0.00", true)], "amount"),
        (vec![], "lines"),
        (vec![bonus(OneOffCategory::Bonus, "1.00", true); 21], "lines"),
    ] {
        let error = calculate_one_off(&employee, &lines, &Currency::usd(), &rules).unwrap_err();
        assert!(matches!(&error, DomainError::Invalid { field: named, .. } if named.contains(field)), "{error}");
    }
    let euros =
        [OneOffLine { amount: Money::parse("1.00", Currency::known("EUR").unwrap()).unwrap(), ..lines[0].clone() }];
    assert!(matches!(
        calculate_one_off(&employee, &euros, &Currency::usd(), &rules),
        Err(DomainError::WrongCurrency { .. })
    ));
}
