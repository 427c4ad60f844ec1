//! `payroll-ledger demo`: a real payroll end to end, idempotent when run again.
//!
//! An organization hires employees with wallets and mixed pay (annual, monthly, hourly; a
//! tenth on a biweekly pay schedule of their own; a few with KYC still pending). December
//! is paid first so that January has history: some employees get a raise from mid-January,
//! one a raise backdated into December (a retro line in January). Each month's run is
//! calculated, approved by a second actor, paid and settled; the biweekly employees are paid
//! by biweekly runs over the same weeks, and a few get a year-end bonus in an off-cycle run.
//! Every step carries an idempotency key derived from its content, so a second demo pays
//! nobody twice.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::NaiveDate;
use ledger_app::operations::{NewRun, NewRunKind, Settlement, create_run, process, settle_run};
use ledger_app::{Context, Ledger};
use ledger_codec::stream_append;
use ledger_core::Aggregate;
use ledger_core::calendar::{PayFrequency, PayPeriod};
use ledger_core::employee::{EmployeeAggregate, EmployeeCommand, KycStatus, PayBasis, PayRate, PersonalData};
use ledger_core::gross_to_net::{DeductionRule, OneOffCategory, OneOffLine, RuleCalculation, RuleParty};
use ledger_core::ids::{EmployeeId, OrganizationId, PayScheduleId, TransactionId, WalletId};
use ledger_core::money::{Currency, Money};
use ledger_core::organization::{OrganizationAggregate, OrganizationCommand, PaySchedule};
use ledger_core::payroll::{ItemStatus, OneOffEntry, PayrollRun, PayrollRunAggregate, PayrollRunCommand};
use ledger_core::wallet::{WalletAggregate, WalletCommand};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Progress;
use super::database::Database;

/// Employees hired per atomic append.
const HIRE_BATCH: usize = 250;
/// Held items the report names one by one.
const HELD_LISTED_MAX: usize = 5;

/// The payroll run of one month.
fn run_id(year: i32, month: u32) -> Uuid {
    demo_id(&format!("run:{year}-{month:02}"))
}

/// The monthly schedule (the organization's default) and the biweekly one.
fn schedule_id(frequency: PayFrequency) -> PayScheduleId {
    PayScheduleId::from_uuid(demo_id(&format!("schedule:{frequency:?}")))
}

/// The biweekly schedule's first period starts on this Monday.
fn biweekly_anchor() -> NaiveDate {
    date(2025, 12, 1)
}

/// Employees who get the year-end bonus (every 50th).
const BONUS_EVERY: usize = 50;

fn demo_id(name: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("payroll-ledger demo:{name}").as_bytes())
}

fn usd(cents: i64) -> Money {
    Money::new(Decimal::new(cents, 2), Currency::usd()).expect("cents fit USD")
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("a valid date")
}

fn period(year: i32, month: u32) -> PayPeriod {
    let start = date(year, month, 1);
    let next = if month == 12 { date(year + 1, 1, 1) } else { date(year, month + 1, 1) };
    PayPeriod::new(start, next.pred_opt().expect("a day before")).expect("a month is a period")
}

/// What employee `n` is paid, at which frequency, from when, and whether KYC is approved.
fn staff_member(n: usize) -> (PayRate, PayFrequency, NaiveDate, KycStatus) {
    let spread = (n * 7919 % 1000) as i64;
    let rate = match n % 3 {
        0 => PayRate { amount: usd((40_000 + spread * 100) * 100), basis: PayBasis::Annual },
        1 => PayRate { amount: usd((3_000 + spread * 7) * 100), basis: PayBasis::Monthly },
        _ => PayRate { amount: usd(2_000 + spread * 4), basis: PayBasis::Hourly { hours_per_week: Decimal::from(40) } },
    };
    let frequency = if n % 10 == 9 { PayFrequency::Biweekly } else { PayFrequency::Monthly };
    let start = if n % 97 == 5 { date(2026, 1, 20) } else { date(2025, 6, 1 + (n % 28) as u32) };
    let kyc = if n % 37 == 3 {
        KycStatus::Pending
    } else if n % 151 == 8 {
        KycStatus::UnderReview
    } else {
        KycStatus::Approved
    };
    (rate, frequency, start, kyc)
}

fn employee_id(n: usize) -> Uuid {
    demo_id(&format!("employee:{n}"))
}

fn wallet_id(n: usize) -> Uuid {
    demo_id(&format!("wallet:{n}"))
}

struct Demo {
    ledger: Ledger,
    organization: Uuid,
    processor: Context,
    approver: Context,
    employees: usize,
    phases: Vec<(String, Duration)>,
}

pub async fn run(database: &Database, employees: usize) -> anyhow::Result<()> {
    anyhow::ensure!((1..=100_000).contains(&employees), "--employees must be 1 to 100,000");
    let organization = demo_id("organization");
    let mut demo = Demo {
        ledger: super::ledger(database).with_pay_batch_items(500),
        organization,
        processor: Context::system(organization, "demo:processor"),
        approver: Context::system(organization, "demo:approver"),
        employees,
        phases: Vec::new(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let projectors = ledger_server::server::start_projectors(
        &database.pool,
        ledger_projections::RunnerOptions::default(),
        None,
        &stopped,
    );
    let payments_before = demo.count("PayrollItemPaid").await?;
    eprintln!("demo: organization {organization}, {employees} employees, data in {}", database.location);

    demo.phase("register", Demo::register).await?;
    demo.phase("hire", Demo::hire).await?;
    let december = demo.phase("pay December", |demo| Box::pin(demo.pay_month(2025, 12))).await?;
    demo.phase("raises", Demo::raises).await?;
    demo.phase("pay year-end bonus", Demo::pay_bonus).await?;
    let january = demo.phase("pay January", |demo| Box::pin(demo.pay_month(2026, 1))).await?;
    demo.phase("release held", |demo| Box::pin(demo.release_held(january))).await?;
    demo.phase("personal data", Demo::personal_data).await?;
    demo.phase("project", |demo| {
        Box::pin(async move { demo.ledger.wait_for_head(Duration::from_secs(600)).await.map_err(anyhow::Error::from) })
    })
    .await?;

    let payments_after = demo.count("PayrollItemPaid").await?;
    // The last position before January's run began: a wallet replayed there shows December.
    let before_january =
        demo.ledger.store().read_stream(january, 1).await?.first().map_or(0, |event| event.global_position - 1);
    let runs = Runs { december, january, before_january, payments_before, payments_after };
    demo.report(database, &runs).await?;
    stop.send(true)?;
    for projector in projectors {
        projector.await??;
    }
    Ok(())
}

type Step<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>> + 'a>>;

impl Demo {
    async fn phase<T>(&mut self, name: &str, step: impl for<'a> FnOnce(&'a Demo) -> Step<'a, T>) -> anyhow::Result<T> {
        let started = Instant::now();
        let result = step(self).await.with_context(|| format!("demo phase {name:?}"))?;
        self.phases.push((name.to_owned(), started.elapsed()));
        eprintln!("demo: {name} done in {:.2} s", started.elapsed().as_secs_f64());
        Ok(result)
    }

    async fn count(&self, event_type: &str) -> anyhow::Result<i64> {
        Ok(self.ledger.store().count_events(self.organization, event_type).await?)
    }

    fn register(&self) -> Step<'_, ()> {
        Box::pin(async move {
            let register = OrganizationCommand::Register {
                organization_id: OrganizationId::from_uuid(self.organization),
                name: "Demo Payroll Inc.".to_owned(),
                base_currency: Currency::usd(),
                pay_schedule: PaySchedule { frequency: PayFrequency::Monthly, anchor_date: date(2025, 1, 1) },
                default_pay_schedule_id: schedule_id(PayFrequency::Monthly),
            };
            self.ledger
                .execute::<OrganizationAggregate>(&self.processor.idempotent("register"), self.organization, register)
                .await?;
            let biweekly = OrganizationCommand::AddPaySchedule {
                pay_schedule_id: schedule_id(PayFrequency::Biweekly),
                name: "Biweekly".to_owned(),
                schedule: PaySchedule { frequency: PayFrequency::Biweekly, anchor_date: biweekly_anchor() },
            };
            self.ledger
                .execute::<OrganizationAggregate>(
                    &self.processor.idempotent("schedule:biweekly"),
                    self.organization,
                    biweekly,
                )
                .await?;
            let rules = [
                ("federal-tax", RuleParty::Employee, RuleCalculation::Percentage { rate: Decimal::new(12, 2) }),
                (
                    "pension",
                    RuleParty::Employee,
                    RuleCalculation::PercentageCapped { rate: Decimal::new(5, 2), cap: usd(25_000) },
                ),
                ("health", RuleParty::Employee, RuleCalculation::Fixed { amount: usd(12_000) }),
                ("social-security", RuleParty::Employer, RuleCalculation::Percentage { rate: Decimal::new(765, 4) }),
            ];
            for (id, party, calculation) in rules {
                let rule = DeductionRule {
                    id: id.to_owned(),
                    name: id.replace('-', " "),
                    party,
                    calculation,
                    liability_account: id.to_owned(),
                };
                let context = self.processor.idempotent(&format!("rule:{id}"));
                self.ledger
                    .execute::<OrganizationAggregate>(
                        &context,
                        self.organization,
                        OrganizationCommand::ConfigureRule { rule },
                    )
                    .await?;
            }
            Ok(())
        })
    }

    /// Hires everyone with a wallet, a batch of employees per atomic append.
    fn hire(&self) -> Step<'_, ()> {
        Box::pin(async move {
            let mut progress = Progress::new("hire", Some(self.employees as u64));
            let numbers: Vec<usize> = (0..self.employees).collect();
            for batch in numbers.chunks(HIRE_BATCH) {
                let context = self.processor.idempotent(&format!("hire:{}-{}", batch[0], batch[batch.len() - 1]));
                if self.ledger.replayed(&context).await?.is_none() {
                    let mut streams = Vec::with_capacity(batch.len() * 2);
                    for n in batch {
                        streams.extend(self.staff_streams(*n)?);
                    }
                    self.ledger.append(&context, streams, ledger_app::KeyUse::Record).await?;
                }
                progress.add(batch.len() as u64);
            }
            progress.finish();
            Ok(())
        })
    }

    fn staff_streams(&self, n: usize) -> anyhow::Result<Vec<ledger_store::StreamAppend>> {
        let (rate, pay_frequency, start_date, kyc) = staff_member(n);
        let hire = EmployeeCommand::Hire {
            employee_id: EmployeeId::from_uuid(employee_id(n)),
            organization_id: OrganizationId::from_uuid(self.organization),
            personal: PersonalData {
                full_name: format!("Employee {n:05}"),
                email: Some(format!("employee{n}@demo.example")),
                address: None,
            },
            position: ["Engineer", "Analyst", "Designer", "Support"][n % 4].to_owned(),
            department: ["Platform", "Finance", "Product", "Operations"][n % 4].to_owned(),
            rate,
            pay_frequency,
            pay_schedule_id: Some(schedule_id(pay_frequency)),
            start_date,
        };
        let mut events = EmployeeAggregate::decide(&None, hire)?;
        if kyc != KycStatus::Pending {
            let state = EmployeeAggregate::fold(&events);
            events.extend(EmployeeAggregate::decide(
                &state,
                EmployeeCommand::ChangeKycStatus { status: kyc, note: None },
            )?);
        }
        let open = WalletCommand::Open {
            wallet_id: WalletId::from_uuid(wallet_id(n)),
            organization_id: OrganizationId::from_uuid(self.organization),
            employee_id: EmployeeId::from_uuid(employee_id(n)),
            public_key: format!("demo{}", hex::encode(&Sha256::digest(format!("key:{n}").as_bytes())[..16])),
            currency: Currency::usd(),
        };
        let wallet_events = WalletAggregate::decide(&None, open)?;
        Ok(vec![
            stream_append::<EmployeeAggregate>(self.organization, employee_id(n), 0, &events),
            stream_append::<WalletAggregate>(self.organization, wallet_id(n), 0, &wallet_events),
        ])
    }

    /// Payroll records are kept 7 years after an employee left; two people who left in 2017
    /// and 2018 are past it: the first one's personal data is erased (its data key
    /// destroyed), the second is left for `payroll-ledger erase-due`.
    fn personal_data(&self) -> Step<'_, ()> {
        Box::pin(async move {
            let retention = OrganizationCommand::SetRetention { years_after_termination: RETENTION_YEARS };
            let context = self.processor.idempotent("retention");
            self.ledger.execute::<OrganizationAggregate>(&context, self.organization, retention).await?;
            for (n, left) in [(1, date(2017, 6, 30)), (2, date(2018, 3, 31))] {
                let id = former_id(n);
                let hire = EmployeeCommand::Hire {
                    employee_id: EmployeeId::from_uuid(id),
                    organization_id: OrganizationId::from_uuid(self.organization),
                    personal: PersonalData {
                        full_name: format!("Former Employee {n}"),
                        email: Some(format!("former{n}@demo.example")),
                        address: Some(format!("{n} Archive Road, Springfield")),
                    },
                    position: "Analyst".to_owned(),
                    department: "Finance".to_owned(),
                    rate: PayRate { amount: usd(400_000), basis: PayBasis::Monthly },
                    pay_frequency: PayFrequency::Monthly,
                    pay_schedule_id: Some(schedule_id(PayFrequency::Monthly)),
                    start_date: date(2012, 3, 1),
                };
                let context = self.processor.idempotent(&format!("former:{n}:hire"));
                self.ledger.execute::<EmployeeAggregate>(&context, id, hire).await?;
                let leave = EmployeeCommand::Terminate { end_date: left, reason: "resigned".to_owned() };
                let context = self.processor.idempotent(&format!("former:{n}:terminate"));
                self.ledger.execute::<EmployeeAggregate>(&context, id, leave).await?;
            }
            let request = ledger_app::operations::EraseRequest {
                employee_id: former_id(1),
                reason: "retention period passed".to_owned(),
                override_basis: None,
                today: chrono::Utc::now().date_naive(),
                reapplied: false,
            };
            let erased = ledger_app::operations::erase(&self.ledger, &self.processor, request).await?;
            eprintln!("demo: personal data of former employee {} erased on {}", former_id(1), erased.erased_on);
            Ok(())
        })
    }

    /// Every 20th monthly-paid employee gets 8% more from January 16; employee 1 gets a
    /// raise backdated to December 10, into the month already paid.
    fn raises(&self) -> Step<'_, ()> {
        Box::pin(async move {
            for n in (0..self.employees).filter(|n| n % 20 == 0 || *n == 1) {
                let (rate, frequency, start, _) = staff_member(n);
                if frequency != PayFrequency::Monthly {
                    continue;
                }
                let raised = Money::round(rate.amount.amount() * Decimal::new(108, 2), Currency::usd());
                let (effective_from, reason) = if n == 1 {
                    (date(2025, 12, 10), "backdated promotion")
                } else {
                    // Not before the start: a few start on January 20 (employee 1,460 was
                    // the first whose raise came before it, and the demo failed from there).
                    (date(2026, 1, 16).max(start), "annual raise")
                };
                let change = EmployeeCommand::ChangePayRate {
                    rate: PayRate { amount: raised, basis: rate.basis },
                    effective_from,
                    reason: reason.to_owned(),
                };
                self.ledger
                    .execute::<EmployeeAggregate>(
                        &self.processor.idempotent(&format!("raise:{n}")),
                        employee_id(n),
                        change,
                    )
                    .await?;
            }
            Ok(())
        })
    }

    /// Creates, calculates, approves (second actor), pays and settles one month's run; then
    /// the biweekly runs of the periods that end in the month.
    async fn pay_month(&self, year: i32, month: u32) -> anyhow::Result<Uuid> {
        let run = run_id(year, month);
        let monthly = NewRunKind::Regular { pay_schedule_id: Some(schedule_id(PayFrequency::Monthly).as_uuid()) };
        self.pay_run(&format!("{year}-{month:02}"), run, period(year, month), monthly).await?;
        let biweekly = PaySchedule { frequency: PayFrequency::Biweekly, anchor_date: biweekly_anchor() };
        let schedule = Some(schedule_id(PayFrequency::Biweekly).as_uuid());
        let month_period = period(year, month);
        let from = month_period.start() - chrono::Days::new(14);
        for period in biweekly.periods(from, month_period.end(), 4) {
            if !month_period.contains(period.end()) {
                continue;
            }
            let name = format!("biweekly {}", period.start());
            let run = demo_id(&format!("run:{name}"));
            self.pay_run(&name, run, period, NewRunKind::Regular { pay_schedule_id: schedule }).await?;
        }
        Ok(run)
    }

    /// KYC is approved for the first employee January held for it (the same one every time
    /// the demo runs), whose item is then released and paid (the run completes again).
    async fn release_held(&self, run: Uuid) -> anyhow::Result<()> {
        let loaded = self.ledger.load::<PayrollRunAggregate>(self.organization, run).await?.state;
        let held = (0..self.employees)
            .filter(|n| staff_member(*n).3 == KycStatus::Pending)
            .map(|n| EmployeeId::from_uuid(employee_id(n)))
            .find(|employee| loaded.as_ref().is_some_and(|run| run.items.contains_key(employee)));
        let Some(employee) = held else { return Ok(()) };
        let approve =
            EmployeeCommand::ChangeKycStatus { status: KycStatus::Approved, note: Some("documents received".into()) };
        let context = self.processor.idempotent(&format!("kyc:{employee}"));
        self.ledger.execute::<EmployeeAggregate>(&context, employee.as_uuid(), approve).await?;
        // The release reads the employee from the log; the wallet from its read table.
        self.ledger.wait_for_head(Duration::from_secs(60)).await?;
        let context = self.processor.idempotent(&format!("release:{employee}"));
        let report = ledger_app::operations::release(&self.ledger, &context, run, employee.as_uuid()).await?;
        eprintln!("demo: January: KYC approved for {employee}; the held item paid ({:?})", report.status);
        settle_run(&self.ledger, &self.processor, run, |transaction: TransactionId| Settlement {
            signature: hex::encode(Sha256::digest(format!("signature:{transaction}").as_bytes())),
            block_hash: hex::encode(Sha256::digest(b"block:release")),
        })
        .await?;
        Ok(())
    }

    /// A year-end bonus for every 50th employee, in an off-cycle run: only its lines are
    /// paid, nothing recomputed from salaries.
    fn pay_bonus(&self) -> Step<'_, ()> {
        Box::pin(async move {
            let entries: Vec<OneOffEntry> = (0..self.employees)
                .step_by(BONUS_EVERY)
                .map(|n| OneOffEntry {
                    employee_id: EmployeeId::from_uuid(employee_id(n)),
                    lines: vec![OneOffLine {
                        category: OneOffCategory::Bonus,
                        code: "BON-2025".to_owned(),
                        amount: usd(50_000 + (n as i64 % 7) * 10_000),
                        taxable: true,
                    }],
                })
                .collect();
            let kind = NewRunKind::OffCycle { reason: "year-end bonus 2025".to_owned(), entries };
            self.pay_run("bonus 2025", demo_id("run:bonus-2025"), period(2025, 12), kind).await
        })
    }

    /// Creates, calculates, approves (second actor), pays and settles one run.
    async fn pay_run(&self, name: &str, run: Uuid, period: PayPeriod, kind: NewRunKind) -> anyhow::Result<()> {
        let key = |step: &str| format!("run:{name}:{step}");
        let create = NewRun { payroll_run_id: run, period, pay_date: None, kind, frequency: None, currency: None };
        create_run(&self.ledger, &self.processor.idempotent(&key("create")), create).await?;
        ledger_app::operations::calculate(&self.ledger, &self.processor.idempotent(&key("calculate")), run).await?;
        let approve = PayrollRunCommand::Approve { actor: self.approver.actor() };
        self.ledger.execute::<PayrollRunAggregate>(&self.approver.idempotent(&key("approve")), run, approve).await?;
        let mut report = process(&self.ledger, &self.processor.idempotent(&key("process")), run).await?;
        if run == run_id(2026, 1) {
            // The rail refuses one January payment before it settles: taken back from the
            // wallet, the item failed, and paid anew by processing the run again.
            let loaded = self.ledger.load::<PayrollRunAggregate>(self.organization, run).await?.state;
            let refused = loaded.as_ref().and_then(|run| {
                run.items.values().find_map(|item| match item.status {
                    ItemStatus::Paid { transaction_id } => Some(transaction_id),
                    _ => None,
                })
            });
            if let Some(transaction) = refused {
                let refuse = self.processor.idempotent(&key("rail-refused"));
                let reason = "the receiving account was closed".to_owned();
                ledger_app::operations::fail_payment(&self.ledger, &refuse, transaction.as_uuid(), reason).await?;
                report = process(&self.ledger, &self.processor.idempotent(&key("process again")), run).await?;
                eprintln!("demo: {name}: the rail refused payment {transaction}; taken back and paid anew");
            }
        }
        let settled = settle_run(&self.ledger, &self.processor, run, |transaction: TransactionId| Settlement {
            signature: hex::encode(Sha256::digest(format!("signature:{transaction}").as_bytes())),
            block_hash: hex::encode(Sha256::digest(format!("block:{name}").as_bytes())),
        })
        .await?;
        eprintln!("demo: {name}: {} paid now, {} held, {settled} payments settled", report.paid_now, report.held);
        Ok(())
    }

    /// What the demo did, as a payroll processor reads it, and what to try next.
    async fn report(&self, database: &Database, runs: &Runs) -> anyhow::Result<()> {
        let run = self.ledger.load::<PayrollRunAggregate>(self.organization, runs.january).await?.state;
        let run = run.context("the January run exists")?;
        self.print_run(&run, runs).await?;
        self.print_health().await?;
        self.print_personal_data().await?;
        if runs.payments_before > 0 {
            println!(
                "  This demo ran before: nothing was paid twice ({} payments before, {} now).",
                runs.payments_before, runs.payments_after
            );
        } else {
            println!("  {} payments recorded; run the demo again: it pays nobody twice.", runs.payments_after);
        }
        print_next_steps(database, runs.before_january);
        Ok(())
    }

    /// January's run: its totals, its retro lines and the items it holds.
    async fn print_run(&self, run: &PayrollRun, runs: &Runs) -> anyhow::Result<()> {
        let totals = &run.totals;
        let held: Vec<(EmployeeId, String)> = run
            .items
            .iter()
            .filter_map(|(employee, item)| match &item.status {
                ItemStatus::Held { hold } => Some((*employee, hold.to_string())),
                _ => None,
            })
            .collect();
        let paid = run.items.values().filter(|item| matches!(item.status, ItemStatus::Paid { .. })).count();
        let biweekly = (0..self.employees).filter(|n| staff_member(*n).1 == PayFrequency::Biweekly).count();
        let january = runs.january;
        println!();
        println!("Payroll run January 2026 ({january}) - {:?}", run.status);
        println!(
            "  items        {:>8}   (paid {paid}, held {}; {biweekly} biweekly employees are paid by biweekly runs)",
            totals.items,
            held.len()
        );
        println!("  gross        {:>16}", totals.gross.to_string());
        println!("  deductions   {:>16}", totals.deductions.to_string());
        println!("  net          {:>16}", totals.net.to_string());
        println!(
            "  employer cost{:>16}   (gross + {} employer contributions)",
            totals.employer_cost.to_string(),
            totals.contributions
        );
        let (refused, released) =
            (self.count("PayrollItemPaymentFailed").await?, self.count("PayrollItemsReleased").await?);
        // Each refused payment is released to be paid anew; the other releases are items held
        // for KYC approved since.
        println!(
            "  corrections  {refused} payment refused by the rail, taken back and paid anew; {} item held for KYC paid once approved",
            released - refused
        );
        let (raises, catch_ups) = self.retro_lines(run, runs.december).await?;
        for line in raises {
            println!("  retro line   {line}   (a raise backdated into December, paid in run {})", runs.december);
        }
        if catch_ups > 0 {
            println!(
                "  catch-up     {catch_ups} items also pay December, which December's run left unpaid (held for KYC)"
            );
        }
        for (employee, reason) in held.iter().take(HELD_LISTED_MAX) {
            println!("  held         {employee}: {reason}");
        }
        if held.len() > HELD_LISTED_MAX {
            println!(
                "  held         ... and {} more (GET /v1/payroll-runs/{january}/items lists them)",
                held.len() - HELD_LISTED_MAX
            );
        }
        Ok(())
    }

    /// The retro lines of a run's items, read from its calculation events.
    async fn retro_lines(&self, run: &PayrollRun, december: Uuid) -> anyhow::Result<(Vec<String>, usize)> {
        let employees: Vec<EmployeeId> = run.items.keys().copied().collect();
        let mut items = ledger_app::operations::RecordedItems::default();
        items.load(&self.ledger, run, &employees).await?;
        let december = self.ledger.load::<PayrollRunAggregate>(self.organization, december).await?.state;
        let paid_in_december = |employee: &EmployeeId| {
            december
                .as_ref()
                .and_then(|run| run.items.get(employee))
                .is_some_and(|item| matches!(item.status, ItemStatus::Paid { .. }))
        };
        let (mut raises, mut catch_ups) = (Vec::new(), 0);
        for employee in &employees {
            for line in &items.get(run, *employee)?.earnings {
                if !matches!(line.kind, ledger_core::gross_to_net::EarningKind::Retro { .. }) {
                    continue;
                }
                if paid_in_december(employee) {
                    raises.push(format!("{employee}: {}", line.amount));
                } else {
                    catch_ups += 1;
                }
            }
        }
        Ok((raises, catch_ups))
    }

    /// Who was erased, and who is due.
    async fn print_personal_data(&self) -> anyhow::Result<()> {
        let erased: i64 = sqlx::query_scalar(
            "select count(*) from employee.employees where organization_id = $1 and erased_at is not null",
        )
        .bind(self.organization)
        .fetch_one(self.ledger.pool())
        .await?;
        let due = sqlx::query(ledger_server::api::privacy::ERASURE_DUE_SQL)
            .bind(None::<Uuid>)
            .bind(None::<i64>)
            .bind(self.organization)
            .fetch_all(self.ledger.pool())
            .await?
            .len();
        println!(
            "  personal     {erased} former employee(s) erased after the {RETENTION_YEARS}-year retention (data key \
             destroyed, pay records kept, chains intact); {due} more due: erase-due"
        );
        Ok(())
    }

    /// The projections' lag, the hash chains, and how long each phase took.
    async fn print_health(&self) -> anyhow::Result<()> {
        // Reads do not wait for the log's tree (it lets events gather): wait for it here.
        self.ledger.wait_for_head_of(&["log_tree"], Duration::from_secs(60)).await?;
        let lags = ledger_projections::lag(self.ledger.store(), &ledger_projections::projections::names()).await?;
        let verified = self.ledger.store().verify(ledger_store::VerifyScope::All, &mut |_| {}).await?;
        let worst = lags.iter().map(|lag| lag.events_behind).max().unwrap_or(0);
        println!("  projections  {} caught up (largest lag {worst} events)", lags.len());
        match verified.first_break() {
            None => println!(
                "  verify       intact: {} events in {} streams",
                verified.events_checked, verified.streams_checked
            ),
            Some(first) => {
                println!("  verify       BROKEN at position {} (stream {})", first.global_position, first.stream_id)
            }
        }
        let mut connection = self.ledger.pool().acquire().await?;
        let tree = ledger_store::tree::head(&mut connection).await?;
        println!("  log tree     {} events, root {} (RFC 9162; `checkpoint` signs it)", tree.size, tree.root);
        print!("  phases      ");
        for (name, took) in &self.phases {
            print!(" {name} {:.2} s;", took.as_secs_f64());
        }
        println!();
        Ok(())
    }
}

/// The two runs the demo pays, where the log stood before January's, and the payments
/// recorded before and after this demo.
struct Runs {
    december: Uuid,
    january: Uuid,
    before_january: i64,
    payments_before: i64,
    payments_after: i64,
}

/// Years payroll records are kept after an employee left, in the demo's organization.
const RETENTION_YEARS: u32 = 7;

/// A former employee of the demo (hired 2012, left before the retention period).
fn former_id(n: usize) -> Uuid {
    demo_id(&format!("former employee {n}"))
}

fn print_next_steps(database: &Database, before_january: i64) {
    // The program as it was invoked (cargo run puts it under target/), so the lines below
    // can be pasted as they are.
    let program = std::env::args().next().unwrap_or_else(|| "payroll-ledger".to_owned());
    println!();
    println!("Try next (data in {}):", database.location);
    println!("  {program} events --stream-id {} --format ndjson   # the events of an employee", employee_id(1));
    println!(
        "  {program} replay --entity wallet:{} --as-of {before_january}   # a wallet before January was paid",
        wallet_id(1)
    );
    println!(
        "  {program} payslip --run {january} --employee {employee} --out payslip.pdf   # January's payslip of an employee, as a PDF",
        january = run_id(2026, 1),
        employee = employee_id(1)
    );
    println!(
        "  (served: GET /v1/payroll-runs/{}/items/{}/payslip with Accept: application/pdf)",
        run_id(2026, 1),
        employee_id(1)
    );
    println!("  {program} verify   # recompute every hash chain and the log's Merkle root");
    println!("  {program} events --stream-id {}   # an erased person's events: the name reads as erased", former_id(1));
    println!("  {program} erase-due --dry-run   # who is past the retention period (and erase-due to erase them)");
    println!("  {program} keygen --name demo.payroll-ledger/log --out demo.key   # the log's checkpoint key");
    println!("  {program} checkpoint --checkpoint-key-file demo.key --out checkpoint.txt   # sign the log's tree");
    println!(
        "  {program} evidence --run {january} --out january.json --checkpoint-key-file demo.key   # January's evidence pack",
        january = run_id(2026, 1)
    );
    println!("  {program} verify-evidence january.json --public-key <the key keygen printed>   # checked offline");
}
