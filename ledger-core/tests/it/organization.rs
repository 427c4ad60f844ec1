use ledger_core::Aggregate;
use ledger_core::DomainError;
use ledger_core::calendar::PayFrequency;
use ledger_core::gross_to_net::{DeductionRule, RuleCalculation, RuleParty};
use ledger_core::ids::PayScheduleId;
use ledger_core::money::{Currency, Money};
use ledger_core::organization::{OrganizationAggregate, OrganizationCommand, OrganizationEvent, PaySchedule};
use rust_decimal_macros::dec;
use uuid::Uuid;

use crate::{day, organization_id, usd, when};

type Organization = OrganizationAggregate;

fn registered() -> Vec<OrganizationEvent> {
    when::<Organization>(
        &[],
        OrganizationCommand::Register {
            organization_id: organization_id(),
            name: "Acme".into(),
            base_currency: Currency::usd(),
            pay_schedule: PaySchedule { frequency: PayFrequency::Monthly, anchor_date: day(2026, 1, 1) },
            default_pay_schedule_id: PayScheduleId::from_uuid(Uuid::from_u128(0x5c)),
        },
    )
    .unwrap()
}

pub fn tax_rule() -> DeductionRule {
    DeductionRule {
        id: "tax".into(),
        name: "Withholding".into(),
        party: RuleParty::Employee,
        calculation: RuleCalculation::Percentage { rate: dec!(0.10) },
        liability_account: "tax".into(),
    }
}

#[test]
fn register_then_change_settings() {
    let given = registered();
    let organization = Organization::fold(&given).unwrap();
    assert_eq!(organization.name, "Acme");
    let change = OrganizationCommand::ChangeSettings { name: Some("Acme Inc".into()), pay_schedule: None };
    let events = when::<Organization>(&given, change).unwrap();
    assert_eq!(Organization::fold(given.iter().chain(&events)).unwrap().name, "Acme Inc");
    let nothing = when::<Organization>(&given, OrganizationCommand::ChangeSettings { name: None, pay_schedule: None });
    assert!(matches!(nothing, Err(DomainError::Invalid { .. })));
    let twice = when::<Organization>(
        &given,
        OrganizationCommand::Register {
            organization_id: organization_id(),
            name: "Acme".into(),
            base_currency: Currency::usd(),
            pay_schedule: PaySchedule { frequency: PayFrequency::Monthly, anchor_date: day(2026, 1, 1) },
            default_pay_schedule_id: PayScheduleId::from_uuid(Uuid::from_u128(0x5c)),
        },
    );
    assert!(matches!(twice, Err(DomainError::AlreadyExists { .. })));
}

#[test]
fn rules_are_configured_replaced_and_removed() {
    let mut events = registered();
    events.extend(when::<Organization>(&events, OrganizationCommand::ConfigureRule { rule: tax_rule() }).unwrap());
    let mut higher = tax_rule();
    higher.calculation = RuleCalculation::Percentage { rate: dec!(0.2) };
    events.extend(when::<Organization>(&events, OrganizationCommand::ConfigureRule { rule: higher.clone() }).unwrap());
    assert_eq!(Organization::fold(&events).unwrap().rules["tax"], higher);
    events.extend(when::<Organization>(&events, OrganizationCommand::RemoveRule { rule_id: "tax".into() }).unwrap());
    assert!(Organization::fold(&events).unwrap().rules.is_empty());
    let missing = when::<Organization>(&events, OrganizationCommand::RemoveRule { rule_id: "tax".into() });
    assert!(matches!(missing, Err(DomainError::NotFound { .. })));
}

#[test]
fn a_bad_rule_is_rejected_with_the_field_named() {
    let given = registered();
    let mut over = tax_rule();
    over.calculation = RuleCalculation::Percentage { rate: dec!(1.5) };
    let mut negative_cap = tax_rule();
    negative_cap.calculation = RuleCalculation::PercentageCapped { rate: dec!(0.1), cap: usd("-1.00") };
    let mut unnamed = tax_rule();
    unnamed.liability_account = "".into();
    let mut unknown_currency = tax_rule();
    let points = Currency::custom("POINTS", 0).unwrap();
    unknown_currency.calculation = RuleCalculation::Fixed { amount: Money::parse("5", points).unwrap() };
    for (rule, field) in [(over, "rule.rate"), (negative_cap, "rule.cap"), (unnamed, "rule.liability_account")] {
        let result = when::<Organization>(&given, OrganizationCommand::ConfigureRule { rule });
        assert!(matches!(&result, Err(DomainError::Invalid { field: f, .. }) if f == field), "{result:?}");
    }
    let result = when::<Organization>(&given, OrganizationCommand::ConfigureRule { rule: unknown_currency });
    assert!(matches!(result, Err(DomainError::Money(_))), "{result:?}");
}

#[test]
fn an_organization_defines_its_own_currency_once() {
    let mut events = registered();
    events.extend(
        when::<Organization>(&events, OrganizationCommand::DefineCurrency { code: "POINTS".into(), scale: 4 }).unwrap(),
    );
    let organization = Organization::fold(&events).unwrap();
    assert_eq!(organization.currency("POINTS").unwrap().scale(), 4);
    assert_eq!(organization.currency("JPY").unwrap().scale(), 0);
    assert!(organization.currency("NOPE").is_err());
    let again = when::<Organization>(&events, OrganizationCommand::DefineCurrency { code: "POINTS".into(), scale: 4 });
    assert!(matches!(again, Err(DomainError::AlreadyExists { .. })));
    let known = when::<Organization>(&events, OrganizationCommand::DefineCurrency { code: "USD".into(), scale: 2 });
    assert!(matches!(known, Err(DomainError::AlreadyExists { .. })));
}

#[test]
fn a_retention_period_is_one_to_a_hundred_years() {
    let given = registered();
    for years in [0, 101] {
        let refused =
            when::<OrganizationAggregate>(&given, OrganizationCommand::SetRetention { years_after_termination: years });
        assert!(matches!(refused, Err(DomainError::Invalid { field, .. }) if field == "years_after_termination"));
    }
    let set = when::<OrganizationAggregate>(&given, OrganizationCommand::SetRetention { years_after_termination: 7 })
        .unwrap();
    assert_eq!(set, vec![OrganizationEvent::RetentionPeriodSet { years_after_termination: 7 }]);
}

#[test]
fn a_tax_year_starts_on_a_day_every_year_has_and_holds_the_days_up_to_the_next() {
    use ledger_core::calendar::TaxYearStart;
    let uk = TaxYearStart::new(4, 6).unwrap();
    assert_eq!(uk.year_of(day(2026, 4, 5)), day(2025, 4, 6));
    assert_eq!(uk.year_of(day(2026, 4, 6)), day(2026, 4, 6));
    assert_eq!(uk.year_of(day(2026, 12, 31)), day(2026, 4, 6));
    assert_eq!(uk.end_of(day(2026, 4, 6)), day(2027, 4, 5));
    let calendar = TaxYearStart::default();
    assert_eq!(
        (calendar.year_of(day(2028, 2, 29)), calendar.end_of(day(2028, 1, 1))),
        (day(2028, 1, 1), day(2028, 12, 31))
    );
    for (month, day_of_month, field) in
        [(0, 1, "month"), (13, 1, "month"), (2, 29, "day"), (4, 31, "day"), (1, 0, "day")]
    {
        let refused = when::<OrganizationAggregate>(
            &registered(),
            OrganizationCommand::SetTaxYear { start: TaxYearStart { month, day: day_of_month } },
        );
        assert!(
            matches!(refused, Err(DomainError::Invalid { field: named, .. }) if named == field),
            "{month}-{day_of_month}"
        );
    }
    let set = when::<OrganizationAggregate>(&registered(), OrganizationCommand::SetTaxYear { start: uk }).unwrap();
    let mut events = registered();
    events.extend(set);
    assert_eq!(OrganizationAggregate::fold(&events).unwrap().tax_year_start, uk);
}

#[test]
fn a_general_ledger_mapping_names_known_accounts_with_codes_a_ledger_takes() {
    let accounts = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs.iter().map(|(key, code)| ((*key).to_owned(), (*code).to_owned())).collect()
    };
    let good = accounts(&[("funding", "1010"), ("wages_expense", "6000"), ("liability:tax", "2200")]);
    let mapped = when::<OrganizationAggregate>(
        &registered(),
        OrganizationCommand::MapGeneralLedgerAccounts { accounts: good.clone() },
    )
    .unwrap();
    assert_eq!(mapped, vec![OrganizationEvent::GeneralLedgerAccountsMapped { accounts: good }]);
    for (pairs, field) in [
        (accounts(&[("cash", "1000")]), "accounts.cash"),
        (accounts(&[("liability:", "1000")]), "accounts.liability:"),
        (accounts(&[("funding", " ")]), "accounts.funding"),
        (accounts(&[("funding", "10\n10")]), "accounts.funding"),
        (accounts(&[("wallets", &"9".repeat(65))]), "accounts.wallets"),
    ] {
        let refused = when::<OrganizationAggregate>(
            &registered(),
            OrganizationCommand::MapGeneralLedgerAccounts { accounts: pairs },
        );
        assert!(matches!(refused, Err(DomainError::Invalid { field: named, .. }) if named == field), "{field}");
    }
}
