//! Domain tests: given events, when a command, then events or an error.

mod employee;
mod events;
mod gross_to_net;
mod model;
mod money;
mod organization;
mod payroll;
mod properties;
mod schedule;
mod transaction;
mod wallet;

use chrono::NaiveDate;
use ledger_core::Aggregate;
use ledger_core::calendar::{PayFrequency, PayPeriod};
use ledger_core::employee::{
    EmployeeAggregate, EmployeeCommand, EmployeeEvent, KycStatus, PayBasis, PayRate, PersonalData,
};
use ledger_core::ids::{EmployeeId, OrganizationId};
use ledger_core::money::{Currency, Money};
use uuid::Uuid;

pub fn day(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

pub fn usd(amount: &str) -> Money {
    Money::parse(amount, Currency::usd()).unwrap()
}

pub fn january() -> PayPeriod {
    PayPeriod::new(day(2026, 1, 1), day(2026, 1, 31)).unwrap()
}

pub fn february() -> PayPeriod {
    PayPeriod::new(day(2026, 2, 1), day(2026, 2, 28)).unwrap()
}

pub fn monthly(amount: &str) -> PayRate {
    PayRate { amount: usd(amount), basis: PayBasis::Monthly }
}

pub fn annual(amount: &str) -> PayRate {
    PayRate { amount: usd(amount), basis: PayBasis::Annual }
}

pub fn organization_id() -> OrganizationId {
    OrganizationId::from_uuid(Uuid::from_u128(0x0a))
}

/// Given `events`, when `command`: the new events, or the error.
pub fn when<A: Aggregate>(given: &[A::Event], command: A::Command) -> Result<Vec<A::Event>, ledger_core::DomainError> {
    A::decide(&A::fold(given), command)
}

/// Decides `command` on `state` and folds the result in, panicking on a rule broken.
pub fn apply<A: Aggregate>(state: A::State, command: A::Command) -> A::State {
    let events = A::decide(&state, command).unwrap_or_else(|error| panic!("{error}"));
    events.iter().fold(state, A::evolve)
}

pub fn hire_command(employee_id: EmployeeId, rate: PayRate, start_date: NaiveDate) -> EmployeeCommand {
    EmployeeCommand::Hire {
        employee_id,
        organization_id: organization_id(),
        personal: PersonalData {
            full_name: "Ada Lovelace".to_owned(),
            email: Some("ada@example.com".to_owned()),
            address: None,
        },
        position: "Engineer".to_owned(),
        department: "R&D".to_owned(),
        rate,
        pay_frequency: PayFrequency::Monthly,
        pay_schedule_id: None,
        start_date,
    }
}

/// The events of an employee hired on `start_date` at `rate` with approved KYC.
pub fn hired(employee_id: EmployeeId, rate: PayRate, start_date: NaiveDate) -> Vec<EmployeeEvent> {
    let mut events = when::<EmployeeAggregate>(&[], hire_command(employee_id, rate, start_date)).unwrap();
    events.push(EmployeeEvent::EmployeeKycStatusChanged { status: KycStatus::Approved, note: None });
    events
}

pub fn employee_id(n: u128) -> EmployeeId {
    EmployeeId::from_uuid(Uuid::from_u128(0xe000 + n))
}
