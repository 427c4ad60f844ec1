//! Hiring in bulk, for benchmarks and tests: monthly employees with approved KYC, each with a
//! wallet in the currency of their rate, a thousand employees per atomic append.

use chrono::NaiveDate;
use ledger_core::Aggregate;
use ledger_core::calendar::PayFrequency;
use ledger_core::employee::{EmployeeAggregate, EmployeeCommand, KycStatus, PayBasis, PayRate, PersonalData};
use ledger_core::ids::{EmployeeId, OrganizationId, WalletId};
use ledger_core::money::Money;
use ledger_core::organization::OrganizationAggregate;
use ledger_core::wallet::{WalletAggregate, WalletCommand};
use uuid::Uuid;

use ledger_codec::stream_append;

use crate::context::Context;
use crate::error::Result;
use crate::ledger::{KeyUse, Ledger};

/// Employees hired per append.
const HIRES_PER_APPEND: usize = 1_000;

/// Hires `count` employees of the context's organization, employee `n` at the monthly rate
/// `monthly(n)`, employed since `start_date`. Returns each one's id and wallet id.
pub async fn hire_in_bulk(
    ledger: &Ledger,
    context: &Context,
    count: usize,
    start_date: NaiveDate,
    monthly: impl Fn(usize) -> Money,
) -> Result<Vec<(Uuid, Uuid)>> {
    let organization = context.organization_id();
    let schedule = ledger
        .load::<OrganizationAggregate>(organization, organization)
        .await?
        .state
        .map(|registered| registered.default_schedule().clone())
        .filter(|default| default.schedule.frequency == PayFrequency::Monthly)
        .ok_or_else(|| {
            crate::error::Error::Invalid("the organization's default pay schedule is not monthly".to_owned())
        })?;
    let mut hired = Vec::with_capacity(count);
    let numbers: Vec<usize> = (0..count).collect();
    for chunk in numbers.chunks(HIRES_PER_APPEND) {
        let mut streams = Vec::with_capacity(chunk.len() * 2);
        for &n in chunk {
            let (employee, wallet) = (Uuid::new_v4(), Uuid::new_v4());
            let rate = monthly(n);
            let currency = rate.currency().clone();
            let hire = EmployeeCommand::Hire {
                employee_id: EmployeeId::from_uuid(employee),
                organization_id: OrganizationId::from_uuid(organization),
                personal: PersonalData { full_name: format!("Employee {n}"), email: None, address: None },
                position: "Clerk".to_owned(),
                department: "Operations".to_owned(),
                rate: PayRate { amount: rate, basis: PayBasis::Monthly },
                pay_frequency: PayFrequency::Monthly,
                pay_schedule_id: Some(schedule.id),
                start_date,
            };
            let mut events = EmployeeAggregate::decide(&None, hire)?;
            let state = EmployeeAggregate::fold(&events);
            let approve = EmployeeCommand::ChangeKycStatus { status: KycStatus::Approved, note: None };
            events.extend(EmployeeAggregate::decide(&state, approve)?);
            let open = WalletCommand::Open {
                wallet_id: WalletId::from_uuid(wallet),
                organization_id: OrganizationId::from_uuid(organization),
                employee_id: EmployeeId::from_uuid(employee),
                public_key: format!("key{n}"),
                currency,
            };
            streams.push(stream_append::<EmployeeAggregate>(organization, employee, 0, &events));
            let opened = WalletAggregate::decide(&None, open)?;
            streams.push(stream_append::<WalletAggregate>(organization, wallet, 0, &opened));
            hired.push((employee, wallet));
        }
        ledger.append(context, streams, KeyUse::Without).await?;
    }
    Ok(hired)
}
