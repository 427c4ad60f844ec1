//! A randomized payroll workload for the projections' tests, written through the service's
//! own command side (`ledger_app::Ledger`). The facts a calculation looks up in read tables
//! (whom to pay, what was paid before) the workload supplies itself, so that it needs no
//! projection to run while it writes: the tests decide when projections see the log.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use ledger_app::{CommandMetrics, Context, KeyUse, Ledger, Written};
use ledger_codec::{decode_stream, stream_append};
use ledger_core::Aggregate;
use ledger_core::calendar::{PayFrequency, PayPeriod};
use ledger_core::employee::{Employee, EmployeeAggregate, EmployeeCommand, KycStatus, PayBasis, PayRate, PersonalData};
use ledger_core::gross_to_net::{DeductionRule, ItemInput, PaidPeriod, PayrollItem, RuleCalculation, RuleParty};
use ledger_core::ids::{EmployeeId, OrganizationId, PayrollRunId, TransactionId, WalletId};
use ledger_core::money::{Currency, Money};
use ledger_core::organization::{OrganizationAggregate, OrganizationCommand, PaySchedule, legacy_default_schedule_id};
use ledger_core::payroll::{ItemStatus, PayrollRunAggregate, PayrollRunCommand, PayrollRunEvent};
use ledger_core::transaction::{TransactionAggregate, TransactionCommand, TransactionReference, payroll_item_postings};
use ledger_core::wallet::{WalletAggregate, WalletCommand};
use ledger_store::{EventStore, StreamAppend};
use uuid::Uuid;

/// Deterministic dice for a workload; the seed is printed so a failure can be replayed.
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Self {
        Dice(seed.max(1))
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A test seed: `LEDGER_TEST_SEED` or the clock.
pub fn seed() -> u64 {
    let seed = std::env::var("LEDGER_TEST_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("workload seed: {seed} (set LEDGER_TEST_SEED={seed} to replay)");
    seed
}

pub fn day(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

pub fn usd_cents(cents: i64) -> Money {
    Money::new(rust_decimal::Decimal::new(cents, 2), Currency::usd()).unwrap()
}

/// A run's items as its calculation events record them (the run keeps only their amounts).
async fn calculated_items(store: &EventStore, run: Uuid) -> HashMap<EmployeeId, PayrollItem> {
    let events: Vec<PayrollRunEvent> = decode_stream(&store.read_stream(run, 1).await.unwrap()).unwrap();
    let mut items = HashMap::new();
    for event in events {
        if let PayrollRunEvent::PayrollItemsCalculated { chunk, items: chunk_items } = event {
            if chunk == 0 {
                items.clear();
            }
            items.extend(chunk_items.into_iter().map(|item| (item.employee_id, item)));
        }
    }
    items
}

/// The service's command side over `store`. It waits for no projection: the workload never
/// asks it to.
pub fn ledger(store: &EventStore) -> Ledger {
    Ledger::new(store.clone(), Arc::new(CommandMetrics::unregistered()), Vec::new())
}

fn context(organization: Uuid) -> Context {
    Context::system(organization, "tester")
}

/// Decides `command` on one aggregate and appends it, as the service does.
pub async fn execute<A: Aggregate>(
    store: &EventStore,
    organization: Uuid,
    stream_id: Uuid,
    command: A::Command,
) -> Written
where
    A::Command: Clone,
{
    let ledger = ledger(store);
    ledger
        .execute::<A>(&context(organization), stream_id, command)
        .await
        .unwrap_or_else(|error| panic!("{} {stream_id}: {error}", A::STREAM_TYPE))
}

/// One stream's share of a multi-stream append: decided on its state as loaded now.
pub async fn decided<A: Aggregate>(
    store: &EventStore,
    organization: Uuid,
    stream_id: Uuid,
    command: A::Command,
) -> StreamAppend {
    let loaded = ledger(store).load::<A>(organization, stream_id).await.unwrap();
    let events =
        A::decide(&loaded.state, command).unwrap_or_else(|error| panic!("{} {stream_id}: {error}", A::STREAM_TYPE));
    stream_append::<A>(organization, stream_id, loaded.version, &events)
}

/// An organization with employees and wallets, and what was paid to whom.
pub struct Payroll {
    pub store: EventStore,
    pub organization: Uuid,
    pub employees: Vec<(EmployeeId, WalletId)>,
    pub paid: HashMap<EmployeeId, Vec<PaidPeriod>>,
}

pub fn month(number: u32) -> PayPeriod {
    let start = day(2026, number, 1);
    let end = if number == 12 { day(2026, 12, 31) } else { day(2026, number + 1, 1).pred_opt().unwrap() };
    PayPeriod::new(start, end).unwrap()
}

impl Payroll {
    pub async fn register(store: EventStore) -> Payroll {
        let organization = Uuid::new_v4();
        let register = OrganizationCommand::Register {
            organization_id: OrganizationId::from_uuid(organization),
            name: "Acme".into(),
            base_currency: Currency::usd(),
            pay_schedule: PaySchedule { frequency: PayFrequency::Monthly, anchor_date: day(2026, 1, 1) },
            default_pay_schedule_id: legacy_default_schedule_id(OrganizationId::from_uuid(organization)),
        };
        execute::<OrganizationAggregate>(&store, organization, organization, register).await;
        let rules = [
            ("tax", RuleParty::Employee, RuleCalculation::Percentage { rate: rust_decimal::Decimal::new(15, 2) }),
            (
                "pension",
                RuleParty::Employee,
                RuleCalculation::PercentageCapped { rate: rust_decimal::Decimal::new(5, 2), cap: usd_cents(30_000) },
            ),
            ("social", RuleParty::Employer, RuleCalculation::Percentage { rate: rust_decimal::Decimal::new(765, 4) }),
        ];
        for (id, party, calculation) in rules {
            let rule =
                DeductionRule { id: id.into(), name: id.into(), party, calculation, liability_account: id.into() };
            execute::<OrganizationAggregate>(
                &store,
                organization,
                organization,
                OrganizationCommand::ConfigureRule { rule },
            )
            .await;
        }
        Payroll { store, organization, employees: Vec::new(), paid: HashMap::new() }
    }

    /// Hires an employee at `monthly_cents`, opens a wallet, and approves KYC unless told not to.
    pub async fn hire(&mut self, monthly_cents: i64, start: NaiveDate, approve_kyc: bool) -> (EmployeeId, WalletId) {
        let (employee, wallet) = (EmployeeId::from_uuid(Uuid::new_v4()), WalletId::from_uuid(Uuid::new_v4()));
        let hire = EmployeeCommand::Hire {
            employee_id: employee,
            organization_id: OrganizationId::from_uuid(self.organization),
            personal: PersonalData {
                full_name: format!("Employee {}", self.employees.len()),
                email: None,
                address: None,
            },
            position: "Clerk".into(),
            department: "Ops".into(),
            rate: PayRate { amount: usd_cents(monthly_cents), basis: PayBasis::Monthly },
            pay_frequency: PayFrequency::Monthly,
            pay_schedule_id: Some(legacy_default_schedule_id(OrganizationId::from_uuid(self.organization))),
            start_date: start,
        };
        execute::<EmployeeAggregate>(&self.store, self.organization, employee.as_uuid(), hire).await;
        if approve_kyc {
            let approve = EmployeeCommand::ChangeKycStatus { status: KycStatus::Approved, note: None };
            execute::<EmployeeAggregate>(&self.store, self.organization, employee.as_uuid(), approve).await;
        }
        let open = WalletCommand::Open {
            wallet_id: wallet,
            organization_id: OrganizationId::from_uuid(self.organization),
            employee_id: employee,
            public_key: format!("key-{wallet}"),
            currency: Currency::usd(),
        };
        execute::<WalletAggregate>(&self.store, self.organization, wallet.as_uuid(), open).await;
        self.employees.push((employee, wallet));
        (employee, wallet)
    }

    pub async fn raise(&self, employee: EmployeeId, monthly_cents: i64, effective_from: NaiveDate) {
        let command = EmployeeCommand::ChangePayRate {
            rate: PayRate { amount: usd_cents(monthly_cents), basis: PayBasis::Monthly },
            effective_from,
            reason: "raise".into(),
        };
        execute::<EmployeeAggregate>(&self.store, self.organization, employee.as_uuid(), command).await;
    }

    pub async fn employee(&self, employee: EmployeeId) -> Employee {
        ledger(&self.store)
            .load::<EmployeeAggregate>(self.organization, employee.as_uuid())
            .await
            .unwrap()
            .state
            .unwrap()
    }

    /// Runs a payroll for `period`: create, calculate, approve, process, pay every payable
    /// item (settling most, failing some as `dice` says), complete.
    pub async fn run(&mut self, period: PayPeriod, dice: &mut Dice) -> PayrollRunId {
        let run = PayrollRunId::from_uuid(Uuid::new_v4());
        let store = self.store.clone();
        // As the service creates it: the run and its period's claim in the schedule's stream.
        let create = ledger_app::operations::NewRun {
            payroll_run_id: run.as_uuid(),
            period,
            pay_date: None,
            kind: ledger_app::operations::NewRunKind::Regular { pay_schedule_id: None },
            frequency: None,
            currency: None,
        };
        ledger_app::operations::create_run(&ledger(&store), &context(self.organization), create).await.unwrap();
        let inputs = self.inputs(period).await;
        let rules: Vec<DeductionRule> = self.rules().await;
        let calculate = PayrollRunCommand::Calculate { inputs: inputs.into(), rules, actor: "alice".into() };
        execute::<PayrollRunAggregate>(&store, self.organization, run.as_uuid(), calculate).await;
        execute::<PayrollRunAggregate>(
            &store,
            self.organization,
            run.as_uuid(),
            PayrollRunCommand::Approve { actor: "bob".into() },
        )
        .await;
        execute::<PayrollRunAggregate>(
            &store,
            self.organization,
            run.as_uuid(),
            PayrollRunCommand::StartProcessing { actor: "alice".into() },
        )
        .await;
        self.pay_items(run, period, dice).await;
        execute::<PayrollRunAggregate>(&store, self.organization, run.as_uuid(), PayrollRunCommand::Complete).await;
        run
    }

    /// Pays the run's pending items one append each, failing some first and retrying a few
    /// of those, settling most payments and failing or voiding some.
    async fn pay_items(&mut self, run: PayrollRunId, period: PayPeriod, dice: &mut Dice) {
        let store = self.store.clone();
        let state = ledger(&store).load::<PayrollRunAggregate>(self.organization, run.as_uuid()).await.unwrap().state;
        let items = calculated_items(&store, run.as_uuid()).await;
        for (employee, run_item) in state.unwrap().items {
            let item = &items[&employee];
            if run_item.status != ItemStatus::Pending {
                continue;
            }
            if dice.chance(10) {
                let fail = PayrollRunCommand::MarkItemFailed { employee_id: employee, reason: "rail rejected".into() };
                execute::<PayrollRunAggregate>(&store, self.organization, run.as_uuid(), fail).await;
                // Most failed items stay failed; some are retried and paid.
                if !dice.chance(30) {
                    continue;
                }
            }
            let transaction = self.pay(run, employee, item).await;
            if dice.chance(5) {
                // The rail rejected the payment, or it was voided: out of the balances again.
                let cancel = if dice.chance(50) {
                    TransactionCommand::Fail { reason: "rail rejected".into() }
                } else {
                    TransactionCommand::Void { reason: "entered twice".into() }
                };
                execute::<TransactionAggregate>(&store, self.organization, transaction.as_uuid(), cancel).await;
            } else if dice.chance(80) {
                let settle = TransactionCommand::Settle {
                    signature: format!("sig-{transaction}"),
                    block_hash: format!("block-{}", dice.below(1000)),
                };
                execute::<TransactionAggregate>(&store, self.organization, transaction.as_uuid(), settle).await;
            }
            let mut earned: Vec<PaidPeriod> = item
                .earnings
                .iter()
                .filter_map(|line| {
                    let period = match &line.kind {
                        ledger_core::gross_to_net::EarningKind::Regular { .. } => period,
                        ledger_core::gross_to_net::EarningKind::Retro { period } => *period,
                        ledger_core::gross_to_net::EarningKind::OneOff { .. } => return None,
                    };
                    Some(PaidPeriod { period, earnings: line.amount.clone() })
                })
                .collect();
            self.paid.entry(employee).or_default().append(&mut earned);
        }
    }

    /// The calculation's inputs, as the service would look them up: employees employed in
    /// the period, with what was paid to them before.
    async fn inputs(&self, period: PayPeriod) -> Vec<ItemInput> {
        let mut inputs = Vec::new();
        for (employee, _) in &self.employees {
            let employee_state = self.employee(*employee).await;
            let employed = period.each_day().any(|day| employee_state.employed_on(day));
            if employed {
                inputs.push(ItemInput {
                    employee: employee_state,
                    paid_periods: self.paid.get(employee).cloned().unwrap_or_default(),
                });
            }
        }
        inputs
    }

    async fn rules(&self) -> Vec<DeductionRule> {
        let organization =
            ledger(&self.store).load::<OrganizationAggregate>(self.organization, self.organization).await;
        organization.unwrap().state.unwrap().rules.into_values().collect()
    }

    fn wallet_of(&self, employee: EmployeeId) -> WalletId {
        self.employees.iter().find(|(id, _)| *id == employee).unwrap().1
    }

    /// Pays one item: run, transaction and wallet in one atomic append.
    async fn pay(
        &self,
        run: PayrollRunId,
        employee: EmployeeId,
        item: &ledger_core::gross_to_net::PayrollItem,
    ) -> TransactionId {
        let transaction = TransactionId::from_uuid(Uuid::new_v4());
        let wallet = self.wallet_of(employee);
        let organization = OrganizationId::from_uuid(self.organization);
        let mut streams = vec![
            decided::<PayrollRunAggregate>(
                &self.store,
                self.organization,
                run.as_uuid(),
                PayrollRunCommand::MarkItemPaid { employee_id: employee, transaction_id: transaction },
            )
            .await,
            decided::<TransactionAggregate>(
                &self.store,
                self.organization,
                transaction.as_uuid(),
                TransactionCommand::Record {
                    transaction_id: transaction,
                    organization_id: organization,
                    postings: payroll_item_postings(organization, wallet, item),
                    reference: TransactionReference::PayrollItem { payroll_run_id: run, employee_id: employee },
                },
            )
            .await,
        ];
        if item.net.is_positive() {
            let credit = WalletCommand::Credit { amount: item.net.clone(), transaction_id: transaction };
            streams.push(decided::<WalletAggregate>(&self.store, self.organization, wallet.as_uuid(), credit).await);
        }
        let context = Context::system(self.organization, "processor");
        ledger(&self.store).append(&context, streams, KeyUse::Without).await.unwrap();
        transaction
    }

    /// Reverses a completed run, as the service does: the run, and for each paid item a
    /// reversing transaction and a wallet debit (as far as the wallet holds the money).
    pub async fn reverse(&mut self, run: PayrollRunId) {
        let context = context(self.organization);
        let ledger = ledger(&self.store);
        ledger_app::operations::reverse(&ledger, &context, run.as_uuid(), "paid in error".into()).await.unwrap();
        let period =
            ledger.load::<PayrollRunAggregate>(self.organization, run.as_uuid()).await.unwrap().state.unwrap().period;
        // What the reversed run paid is no longer paid.
        for paid in self.paid.values_mut() {
            paid.retain(|paid| paid.period != period);
        }
    }

    /// An employee withdraws part of their wallet, as the service does; `false` when the
    /// wallet does not hold that much.
    pub async fn withdraw(&self, wallet: WalletId, cents: i64) -> bool {
        let (ledger, context) = (ledger(&self.store), context(self.organization));
        let withdrawn =
            ledger_app::operations::withdraw(&ledger, &context, wallet.as_uuid(), usd_cents(cents), "bank").await;
        match withdrawn {
            Ok(_) => true,
            Err(ledger_app::Error::Domain(ledger_core::DomainError::InsufficientFunds { .. })) => false,
            Err(error) => panic!("withdrawing from {wallet}: {error}"),
        }
    }
}
/// A randomized workload: hires (some with KYC pending), raises (some backdated), three
/// monthly runs paid, one reversed, withdrawals.
pub async fn random_payroll(store: EventStore, dice: &mut Dice, employees: usize) -> Payroll {
    let mut payroll = Payroll::register(store).await;
    for _ in 0..employees {
        let start = day(2026, 1, 1 + dice.below(28) as u32);
        payroll.hire(300_000 + dice.below(900_000) as i64, start, dice.chance(85)).await;
    }
    let runs = [month(1), month(2), month(3)];
    let mut paid_runs = Vec::new();
    for (index, period) in runs.iter().enumerate() {
        for (employee, _) in payroll.employees.clone() {
            if dice.chance(20) {
                // Sometimes backdated into a month already paid.
                let effective = day(
                    2026,
                    (index as u32 + 1).saturating_sub(dice.below(2) as u32).max(1),
                    1 + dice.below(28) as u32,
                );
                let start = payroll.employee(employee).await.first_start();
                payroll.raise(employee, 300_000 + dice.below(900_000) as i64, effective.max(start)).await;
            }
        }
        paid_runs.push(payroll.run(*period, dice).await);
        for (_, wallet) in payroll.employees.clone() {
            if dice.chance(30) {
                payroll.withdraw(wallet, 1 + dice.below(100_000) as i64).await;
            }
        }
    }
    payroll.reverse(paid_runs[1]).await;
    payroll
}
