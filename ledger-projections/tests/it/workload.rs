//! A driver for tests: decides domain commands and appends their events, like the service
//! does, and a randomized payroll workload built on it.

use std::collections::HashMap;

use chrono::NaiveDate;
use ledger_codec::{decode_stream, stream_append};
use ledger_core::Aggregate;
use ledger_core::calendar::{PayFrequency, PayPeriod};
use ledger_core::employee::{Employee, EmployeeAggregate, EmployeeCommand, KycStatus, PayBasis, PayRate, PersonalData};
use ledger_core::gross_to_net::{DeductionRule, ItemInput, PaidPeriod, PayrollItem, RuleCalculation, RuleParty};
use ledger_core::ids::{EmployeeId, OrganizationId, PayrollRunId, TransactionId, WalletId};
use ledger_core::money::{Currency, Money};
use ledger_core::organization::{OrganizationAggregate, OrganizationCommand, PaySchedule};
use ledger_core::payroll::{ItemStatus, PayrollRunAggregate, PayrollRunCommand, PayrollRunEvent, RunKind};
use ledger_core::transaction::{
    TransactionAggregate, TransactionCommand, TransactionReference, payroll_item_postings, reversed_postings,
    wallet_account,
};
use ledger_core::wallet::{WalletAggregate, WalletCommand};
use ledger_store::{AppendRequest, AppendResult, EventStore, Metadata, StreamAppend};
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

/// The events of a stream, decoded, and its version.
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

pub async fn load<A: Aggregate>(store: &EventStore, stream_id: Uuid) -> (A::State, u64) {
    let recorded = store.read_stream(stream_id, 1).await.unwrap();
    let events: Vec<A::Event> = decode_stream(&recorded).unwrap();
    (A::fold(&events), recorded.len() as u64)
}

/// One stream's share of an append: decide on the loaded state, expect its version.
pub async fn decided<A: Aggregate>(
    store: &EventStore,
    organization: Uuid,
    stream_id: Uuid,
    command: A::Command,
) -> StreamAppend {
    let (state, version) = load::<A>(store, stream_id).await;
    let events = A::decide(&state, command).unwrap_or_else(|error| panic!("{} {stream_id}: {error}", A::STREAM_TYPE));
    stream_append::<A>(organization, stream_id, version, &events)
}

pub async fn append(store: &EventStore, actor: &str, streams: Vec<StreamAppend>) -> AppendResult {
    store
        .append(&AppendRequest { streams, metadata: Metadata::by(actor), idempotency_key: None, fingerprint: None })
        .await
        .unwrap()
}

pub async fn execute<A: Aggregate>(
    store: &EventStore,
    organization: Uuid,
    stream_id: Uuid,
    command: A::Command,
) -> AppendResult {
    let stream = decided::<A>(store, organization, stream_id, command).await;
    append(store, "tester", vec![stream]).await
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
        load::<EmployeeAggregate>(&self.store, employee.as_uuid()).await.0.unwrap()
    }

    /// Runs a payroll for `period`: create, calculate, approve, process, pay every payable
    /// item (settling most, failing some as `dice` says), complete.
    pub async fn run(&mut self, period: PayPeriod, dice: &mut Dice) -> PayrollRunId {
        let run = PayrollRunId::from_uuid(Uuid::new_v4());
        let store = self.store.clone();
        let create = PayrollRunCommand::Create {
            payroll_run_id: run,
            organization_id: OrganizationId::from_uuid(self.organization),
            period,
            frequency: PayFrequency::Monthly,
            currency: Currency::usd(),
            kind: RunKind::Regular,
            actor: "alice".into(),
        };
        execute::<PayrollRunAggregate>(&store, self.organization, run.as_uuid(), create).await;
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
        let (organization_state, _) = load::<OrganizationAggregate>(&store, self.organization).await;
        let rules: Vec<DeductionRule> = organization_state.unwrap().rules.into_values().collect();
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
        let (state, _) = load::<PayrollRunAggregate>(&store, run.as_uuid()).await;
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
                .map(|line| PaidPeriod {
                    period: match &line.kind {
                        ledger_core::gross_to_net::EarningKind::Regular { .. } => period,
                        ledger_core::gross_to_net::EarningKind::Retro { period } => *period,
                    },
                    earnings: line.amount.clone(),
                })
                .collect();
            self.paid.entry(employee).or_default().append(&mut earned);
        }
        execute::<PayrollRunAggregate>(&store, self.organization, run.as_uuid(), PayrollRunCommand::Complete).await;
        run
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
        append(&self.store, "processor", streams).await;
        transaction
    }

    /// Reverses a completed run: the run, then for each paid item a reversing transaction and
    /// a wallet debit (as far as the wallet holds the money).
    pub async fn reverse(&mut self, run: PayrollRunId) {
        let store = self.store.clone();
        let reverse = PayrollRunCommand::Reverse { reason: "paid in error".into(), actor: "bob".into() };
        execute::<PayrollRunAggregate>(&store, self.organization, run.as_uuid(), reverse).await;
        let (state, _) = load::<PayrollRunAggregate>(&store, run.as_uuid()).await;
        let state = state.unwrap();
        let organization = OrganizationId::from_uuid(self.organization);
        for (employee, run_item) in &state.items {
            let employee = *employee;
            let ItemStatus::Paid { transaction_id } = run_item.status else { continue };
            let (original, _) = load::<TransactionAggregate>(&store, transaction_id.as_uuid()).await;
            let reversal = TransactionId::from_uuid(Uuid::new_v4());
            let wallet = self.wallet_of(employee);
            let mut streams = vec![
                decided::<TransactionAggregate>(
                    &store,
                    self.organization,
                    reversal.as_uuid(),
                    TransactionCommand::Record {
                        transaction_id: reversal,
                        organization_id: organization,
                        postings: reversed_postings(&original.unwrap().postings),
                        reference: TransactionReference::PayrollReversal { payroll_run_id: run, employee_id: employee },
                    },
                )
                .await,
            ];
            let (wallet_state, _) = load::<WalletAggregate>(&store, wallet.as_uuid()).await;
            let take_back = state.money(run_item.net).min(wallet_state.unwrap().balance).unwrap();
            if take_back.is_positive() {
                let debit = WalletCommand::Debit { amount: take_back, transaction_id: reversal };
                streams.push(decided::<WalletAggregate>(&store, self.organization, wallet.as_uuid(), debit).await);
            }
            append(&store, "processor", streams).await;
        }
        // What the reversed run paid is no longer paid.
        for paid in self.paid.values_mut() {
            paid.retain(|paid| paid.period != state.period);
        }
    }

    /// An employee withdraws part of their wallet: a balanced transaction and a debit.
    pub async fn withdraw(&self, wallet: WalletId, cents: i64) -> bool {
        let (state, _) = load::<WalletAggregate>(&self.store, wallet.as_uuid()).await;
        if state.as_ref().is_none_or(|wallet| wallet.balance.amount() < rust_decimal::Decimal::new(cents, 2)) {
            return false;
        }
        let transaction = TransactionId::from_uuid(Uuid::new_v4());
        let postings = vec![
            ledger_core::transaction::Posting {
                account: wallet_account(wallet),
                direction: ledger_core::transaction::Direction::Credit,
                amount: usd_cents(cents),
            },
            ledger_core::transaction::Posting {
                account: "external:bank".into(),
                direction: ledger_core::transaction::Direction::Debit,
                amount: usd_cents(cents),
            },
        ];
        let record = TransactionCommand::Record {
            transaction_id: transaction,
            organization_id: OrganizationId::from_uuid(self.organization),
            postings,
            reference: TransactionReference::Withdrawal { wallet_id: wallet },
        };
        let streams = vec![
            decided::<TransactionAggregate>(&self.store, self.organization, transaction.as_uuid(), record).await,
            decided::<WalletAggregate>(
                &self.store,
                self.organization,
                wallet.as_uuid(),
                WalletCommand::Debit { amount: usd_cents(cents), transaction_id: transaction },
            )
            .await,
        ];
        append(&self.store, "employee", streams).await;
        true
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
