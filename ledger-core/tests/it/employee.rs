use ledger_core::DomainError;
use ledger_core::employee::{EmployeeAggregate, EmployeeCommand, EmployeeEvent, KycStatus, PayBasis, PayRate};
use ledger_core::money::{Currency, Money};
use ledger_core::{Aggregate, DomainEvent};
use rust_decimal_macros::dec;

use crate::{annual, day, employee_id, hire_command, hired, monthly, usd, when};

type Employee = EmployeeAggregate;

#[test]
fn hire_records_the_employee_with_pending_kyc() {
    let events = when::<Employee>(&[], hire_command(employee_id(1), annual("60000.00"), day(2026, 1, 5))).unwrap();
    assert!(matches!(&events[..], [EmployeeEvent::EmployeeHired { start_date, .. }] if *start_date == day(2026, 1, 5)));
    let employee = Employee::fold(&events).unwrap();
    assert_eq!(employee.kyc, KycStatus::Pending);
    assert_eq!(employee.rate_on(day(2026, 1, 5)), Some(&annual("60000.00")));
    assert_eq!(employee.rate_on(day(2026, 1, 4)), None);
    assert!(employee.employed_on(day(2030, 1, 1)));
}

#[test]
fn hire_twice_or_with_a_bad_rate_is_an_error() {
    let given = hired(employee_id(1), annual("60000.00"), day(2026, 1, 5));
    let again = when::<Employee>(&given, hire_command(employee_id(1), annual("1.00"), day(2026, 1, 5)));
    assert!(matches!(again, Err(DomainError::AlreadyExists { entity: "employee", .. })));
    let zero = when::<Employee>(&[], hire_command(employee_id(2), annual("0.00"), day(2026, 1, 5)));
    assert!(matches!(zero, Err(DomainError::Invalid { field, .. }) if field == "rate.amount"));
    let hours = PayRate { amount: usd("20.00"), basis: PayBasis::Hourly { hours_per_week: dec!(100) } };
    let too_many = when::<Employee>(&[], hire_command(employee_id(3), hours, day(2026, 1, 5)));
    assert!(matches!(too_many, Err(DomainError::Invalid { field, .. }) if field == "rate.hours_per_week"));
    let mut no_name = hire_command(employee_id(4), annual("1.00"), day(2026, 1, 5));
    if let EmployeeCommand::Hire { personal, .. } = &mut no_name {
        personal.full_name = " ".to_owned();
    }
    assert!(
        matches!(when::<Employee>(&[], no_name), Err(DomainError::Invalid { field, .. }) if field == "personal.full_name")
    );
}

#[test]
fn a_pay_rate_change_is_effective_dated_and_may_be_backdated() {
    let given = hired(employee_id(1), monthly("5000.00"), day(2026, 1, 1));
    let command = EmployeeCommand::ChangePayRate {
        rate: monthly("5500.00"),
        effective_from: day(2026, 1, 16),
        reason: "promotion".into(),
    };
    let events = when::<Employee>(&given, command).unwrap();
    let employee = Employee::fold(given.iter().chain(&events)).unwrap();
    assert_eq!(employee.rate_on(day(2026, 1, 15)), Some(&monthly("5000.00")));
    assert_eq!(employee.rate_on(day(2026, 1, 16)), Some(&monthly("5500.00")));
}

#[test]
fn a_pay_rate_change_in_another_currency_or_before_the_start_is_an_error() {
    let given = hired(employee_id(1), monthly("5000.00"), day(2026, 1, 1));
    let euros =
        PayRate { amount: Money::parse("10.00", Currency::known("EUR").unwrap()).unwrap(), basis: PayBasis::Monthly };
    let wrong_currency =
        EmployeeCommand::ChangePayRate { rate: euros, effective_from: day(2026, 2, 1), reason: "x".into() };
    assert!(matches!(when::<Employee>(&given, wrong_currency), Err(DomainError::WrongCurrency { .. })));
    let too_early =
        EmployeeCommand::ChangePayRate { rate: monthly("1.00"), effective_from: day(2025, 12, 31), reason: "x".into() };
    assert!(
        matches!(when::<Employee>(&given, too_early), Err(DomainError::Invalid { field, .. }) if field == "effective_from")
    );
    let no_reason =
        EmployeeCommand::ChangePayRate { rate: monthly("1.00"), effective_from: day(2026, 2, 1), reason: "".into() };
    assert!(
        matches!(when::<Employee>(&given, no_reason), Err(DomainError::Invalid { field, .. }) if field == "reason")
    );
}

#[test]
fn position_and_department_change() {
    let given = hired(employee_id(1), monthly("5000.00"), day(2026, 1, 1));
    let command = EmployeeCommand::ChangePosition {
        position: "Lead".into(),
        department: "Platform".into(),
        effective_from: day(2026, 3, 1),
    };
    let events = when::<Employee>(&given, command).unwrap();
    let employee = Employee::fold(given.iter().chain(&events)).unwrap();
    assert_eq!((employee.position.as_str(), employee.department.as_str()), ("Lead", "Platform"));
    let blank = EmployeeCommand::ChangePosition {
        position: "".into(),
        department: "x".into(),
        effective_from: day(2026, 3, 1),
    };
    assert!(when::<Employee>(&given, blank).is_err());
}

#[test]
fn kyc_moves_between_statuses_but_not_to_the_same_one() {
    let given = when::<Employee>(&[], hire_command(employee_id(1), monthly("1.00"), day(2026, 1, 1))).unwrap();
    for (status, ok) in [
        (KycStatus::UnderReview, true),
        (KycStatus::Approved, true),
        (KycStatus::Rejected, true),
        (KycStatus::Pending, false),
    ] {
        let result = when::<Employee>(&given, EmployeeCommand::ChangeKycStatus { status, note: None });
        assert_eq!(result.is_ok(), ok, "{status:?}");
    }
}

#[test]
fn terminate_then_rehire() {
    let given = hired(employee_id(1), monthly("5000.00"), day(2026, 1, 1));
    let mut events = given.clone();
    events.extend(
        when::<Employee>(&events, EmployeeCommand::Terminate { end_date: day(2026, 3, 31), reason: "resigned".into() })
            .unwrap(),
    );
    let terminated = Employee::fold(&events).unwrap();
    assert_eq!(terminated.end_date(), Some(day(2026, 3, 31)));
    assert!(!terminated.employed_on(day(2026, 4, 1)));

    let again = when::<Employee>(&events, EmployeeCommand::Terminate { end_date: day(2026, 4, 1), reason: "x".into() });
    assert!(matches!(again, Err(DomainError::WrongStatus { action: "terminate", .. })));
    let too_soon = when::<Employee>(&events, EmployeeCommand::Rehire { start_date: day(2026, 3, 31), rate: None });
    assert!(matches!(too_soon, Err(DomainError::Invalid { field, .. }) if field == "start_date"));

    events.extend(
        when::<Employee>(
            &events,
            EmployeeCommand::Rehire { start_date: day(2026, 6, 1), rate: Some(monthly("6000.00")) },
        )
        .unwrap(),
    );
    let rehired = Employee::fold(&events).unwrap();
    assert!(rehired.employed_on(day(2026, 6, 1)));
    assert!(!rehired.employed_on(day(2026, 5, 1)));
    assert_eq!(rehired.rate_on(day(2026, 6, 1)), Some(&monthly("6000.00")));
    assert_eq!(rehired.end_date(), None);
}

#[test]
fn terminate_before_the_start_or_rehire_while_employed_is_an_error() {
    let given = hired(employee_id(1), monthly("5000.00"), day(2026, 1, 10));
    let early = when::<Employee>(&given, EmployeeCommand::Terminate { end_date: day(2026, 1, 9), reason: "x".into() });
    assert!(matches!(early, Err(DomainError::Invalid { field, .. }) if field == "end_date"));
    let rehire = when::<Employee>(&given, EmployeeCommand::Rehire { start_date: day(2026, 6, 1), rate: None });
    assert!(matches!(rehire, Err(DomainError::WrongStatus { action: "rehire", .. })));
}

#[test]
fn a_command_on_an_employee_never_hired_is_not_found() {
    let result = when::<Employee>(&[], EmployeeCommand::Terminate { end_date: day(2026, 1, 1), reason: "x".into() });
    assert!(matches!(result, Err(DomainError::NotFound { entity: "employee", .. })));
}

#[test]
fn personal_data_sits_in_one_field_of_its_own() {
    let events = hired(employee_id(1), monthly("5000.00"), day(2026, 1, 1));
    let payload: serde_json::Value = serde_json::from_str(events[0].encode().payload.get()).unwrap();
    assert_eq!(payload["personal"]["full_name"], "Ada Lovelace");
    let text = payload
        .as_object()
        .unwrap()
        .iter()
        .filter(|(key, _)| *key != "personal")
        .map(|(_, v)| v.to_string())
        .collect::<String>();
    assert!(!text.contains("Ada") && !text.contains("example.com"), "no personal data outside `personal`: {text}");
}

fn erase(retention_years: Option<u32>, override_basis: Option<&str>, today: chrono::NaiveDate) -> EmployeeCommand {
    EmployeeCommand::ErasePersonalData {
        reason: "asked".into(),
        retention_years,
        override_basis: override_basis
            .map(|basis| ledger_core::employee::ErasureOverride { legal_basis: basis.into() }),
        today,
        reapplied: false,
    }
}

#[test]
fn erasure_waits_for_the_retention_period_after_the_last_day_unless_overridden() {
    let mut given = hired(employee_id(1), monthly("5000.00"), day(2016, 3, 1));
    // Employed: never, whatever the basis (a re-applied erasure aside).
    let employed = when::<Employee>(&given, erase(Some(1), Some("consent withdrawn"), day(2030, 1, 1)));
    assert!(matches!(employed, Err(DomainError::WrongStatus { .. })), "{employed:?}");
    let mut reapplied = erase(None, Some("the erasure of 2026-01-01 re-applied"), day(2030, 1, 1));
    if let EmployeeCommand::ErasePersonalData { reapplied: flag, .. } = &mut reapplied {
        *flag = true;
    }
    assert!(when::<Employee>(&given, reapplied).is_ok());

    // Left on Feb 29: seven years later is Feb 28 (no Feb 29 in 2027).
    given.extend(
        when::<Employee>(&given, EmployeeCommand::Terminate { end_date: day(2020, 2, 29), reason: "left".into() })
            .unwrap(),
    );
    let early = when::<Employee>(&given, erase(Some(7), None, day(2027, 2, 27)));
    assert!(
        matches!(early, Err(DomainError::RetentionNotPassed { erasable_from: Some(from), .. }) if from == day(2027, 2, 28)),
        "{early:?}"
    );
    let unset = when::<Employee>(&given, erase(None, None, day(2040, 1, 1)));
    assert!(matches!(unset, Err(DomainError::RetentionNotPassed { erasable_from: None, .. })), "{unset:?}");
    let blank = when::<Employee>(&given, erase(Some(7), Some(" "), day(2027, 2, 27)));
    assert!(matches!(blank, Err(DomainError::Invalid { field, .. }) if field == "override.legal_basis"));

    // On the day: no override needed (and none recorded); before it, the override is.
    let due = when::<Employee>(&given, erase(Some(7), Some("not needed"), day(2027, 2, 28))).unwrap();
    assert_eq!(
        due,
        vec![EmployeeEvent::EmployeePersonalDataErased {
            reason: "asked".into(),
            erased_on: day(2027, 2, 28),
            erasable_from: Some(day(2027, 2, 28)),
            override_basis: None,
        }]
    );
    let overridden = when::<Employee>(&given, erase(Some(7), Some("GDPR Art. 17(1)(d)"), day(2026, 1, 1))).unwrap();
    assert!(matches!(
        &overridden[0],
        EmployeeEvent::EmployeePersonalDataErased { override_basis: Some(basis), .. } if basis.legal_basis == "GDPR Art. 17(1)(d)"
    ));

    // Erased: the state shows it, nothing but pay is decided on it any more.
    given.extend(due);
    let erased = Employee::fold(&given).unwrap();
    assert_eq!(erased.erased_on, Some(day(2027, 2, 28)));
    assert!(erased.personal.clear().is_none());
    for command in [
        erase(Some(7), None, day(2030, 1, 1)),
        EmployeeCommand::Rehire { start_date: day(2030, 1, 1), rate: None },
        EmployeeCommand::ChangeKycStatus { status: KycStatus::Rejected, note: None },
        EmployeeCommand::ChangePayRate { rate: monthly("1.00"), effective_from: day(2019, 1, 1), reason: "x".into() },
    ] {
        assert!(matches!(when::<Employee>(&given, command), Err(DomainError::WrongStatus { .. })));
    }
}
