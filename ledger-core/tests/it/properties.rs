//! Invariants over random inputs.

use ledger_core::calendar::PayFrequency;
use ledger_core::employee::{EmployeeAggregate, EmployeeCommand, EmployeeEvent, KycStatus, PayBasis, PayRate};
use ledger_core::gross_to_net::{DeductionRule, ItemInput, PayrollItem, RuleCalculation, RuleParty, calculate_item};
use ledger_core::ids::{PayrollRunId, TransactionId, WalletId};
use ledger_core::money::{Currency, Money};
use ledger_core::payroll::{PayrollRunAggregate, PayrollRunCommand, PayrollRunEvent, RunKind, RunTotals};
use ledger_core::transaction::{Direction, Posting, check_balanced, payroll_item_postings};
use ledger_core::wallet::{WalletAggregate, WalletCommand, WalletEvent};
use ledger_core::{Aggregate, DomainError, DomainEvent};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::{day, employee_id, hire_command, january, organization_id, when};

fn cents(amount: i64) -> Money {
    Money::new(Decimal::new(amount, 2), Currency::usd()).unwrap()
}

/// Every event survives the trip through its encoding and JSON text unchanged, read back
/// from the text (as readers of the store do) or from a parsed value (as upcasting does).
fn assert_round_trip<E: DomainEvent>(events: &[E]) {
    for event in events {
        let encoded = event.encode();
        let text = encoded.payload.get();
        assert_eq!(&E::decode_text(&encoded.event_type, encoded.schema_version, text).unwrap(), event);
        let stored: serde_json::Value = serde_json::from_str(text).unwrap();
        assert!(stored.is_object(), "{stored}");
        assert_eq!(&E::decode(&encoded.event_type, encoded.schema_version, &stored).unwrap(), event);
    }
}

proptest! {
    #[test]
    fn a_wallet_never_goes_negative_and_its_balance_is_credits_minus_debits(
        moves in proptest::collection::vec((any::<bool>(), 1i64..50_000), 1..60)
    ) {
        let mut events: Vec<WalletEvent> = crate::wallet::opened();
        let (mut credited, mut debited) = (0i64, 0i64);
        for (n, (is_credit, amount)) in moves.into_iter().enumerate() {
            let transaction_id = TransactionId::from_uuid(Uuid::from_u128(n as u128 + 1));
            let command = if is_credit {
                WalletCommand::Credit { amount: cents(amount), transaction_id }
            } else {
                WalletCommand::Debit { amount: cents(amount), transaction_id }
            };
            match when::<WalletAggregate>(&events, command) {
                Ok(new) => {
                    if is_credit { credited += amount } else { debited += amount }
                    events.extend(new);
                }
                Err(DomainError::InsufficientFunds { .. }) => prop_assert!(!is_credit && amount > credited - debited),
                Err(error) => panic!("{error}"),
            }
            let wallet = WalletAggregate::fold(&events).unwrap();
            prop_assert!(!wallet.balance.is_negative());
            prop_assert_eq!(wallet.balance, cents(credited - debited));
        }
        assert_round_trip(&events);
    }

    #[test]
    fn allocated_parts_add_up_to_the_whole(
        amount in -10_000_000i64..10_000_000,
        weights in proptest::collection::vec(0u32..1_000, 1..8),
    ) {
        prop_assume!(weights.iter().any(|weight| *weight > 0));
        let weights: Vec<Decimal> = weights.into_iter().map(Decimal::from).collect();
        let parts = cents(amount).allocate(&weights).unwrap();
        prop_assert_eq!(parts.len(), weights.len());
        prop_assert_eq!(Money::sum(&Currency::usd(), &parts).unwrap(), cents(amount));
        for (part, weight) in parts.iter().zip(&weights) {
            // Each part is within one minor unit of its exact share.
            let exact = Decimal::new(amount, 2) * weight / weights.iter().copied().sum::<Decimal>();
            prop_assert!((part.amount() - exact).abs() < Decimal::new(1, 2));
        }
    }

    #[test]
    fn a_constant_rate_over_any_split_of_the_period_sums_to_the_full_period(
        monthly_cents in 1i64..100_000_000,
        splits in proptest::collection::btree_set(2u32..=31, 0..8),
    ) {
        // Alternate between the same pay as a monthly and as an annual rate: equal money,
        // different rates, so the period is cut into lines at every split day.
        let monthly = PayRate { amount: cents(monthly_cents), basis: PayBasis::Monthly };
        let annual = PayRate { amount: cents(monthly_cents * 12), basis: PayBasis::Annual };
        let mut events = crate::hired(employee_id(1), monthly.clone(), day(2025, 1, 1));
        for (n, split) in splits.iter().enumerate() {
            let rate = if n % 2 == 0 { annual.clone() } else { monthly.clone() };
            let command = EmployeeCommand::ChangePayRate { rate, effective_from: day(2026, 1, *split), reason: "split".into() };
            events.extend(when::<EmployeeAggregate>(&events, command).unwrap());
        }
        let input = ItemInput { employee: EmployeeAggregate::fold(&events).unwrap(), paid_periods: vec![] };
        let item = calculate_item(&input, january(), PayFrequency::Monthly, &Currency::usd(), &[]).unwrap();
        prop_assert_eq!(item.earnings.len(), splits.len() + 1);
        prop_assert_eq!(item.gross, cents(monthly_cents));
    }

    #[test]
    fn balanced_postings_pass_and_one_cent_off_fails(
        transfers in proptest::collection::vec((1i64..1_000_000, 0usize..4, 0usize..4), 1..10),
        skew in 0usize..10,
    ) {
        let mut postings = Vec::new();
        for (amount, from, to) in &transfers {
            postings.push(Posting { account: format!("account:{from}"), direction: Direction::Credit, amount: cents(*amount) });
            postings.push(Posting { account: format!("account:{to}"), direction: Direction::Debit, amount: cents(*amount) });
        }
        prop_assert_eq!(check_balanced(&postings), Ok(()));
        let index = skew % postings.len();
        postings[index].amount = postings[index].amount.checked_add(&cents(1)).unwrap();
        let is_unbalanced = matches!(check_balanced(&postings), Err(DomainError::UnbalancedPostings { .. }));
        prop_assert!(is_unbalanced);
    }

    #[test]
    fn a_run_totals_its_items_and_every_item_nets_out_and_balances(
        staff in proptest::collection::vec(employee_strategy(), 1..12),
        rules in proptest::collection::vec(rule_strategy(), 0..5),
    ) {
        let inputs: Vec<ItemInput> = staff
            .into_iter()
            .enumerate()
            .map(|(n, spec)| {
                let events = spec.events(n as u128);
                assert_round_trip(&events);
                ItemInput { employee: EmployeeAggregate::fold(&events).unwrap(), paid_periods: vec![] }
            })
            .collect();
        let mut events = when::<PayrollRunAggregate>(&[], PayrollRunCommand::Create {
            payroll_run_id: PayrollRunId::from_uuid(Uuid::from_u128(1)),
            organization_id: organization_id(),
            period: january(),
            pay_date: None,
            frequency: PayFrequency::Monthly,
            currency: Currency::usd(),
            kind: RunKind::Regular,
            pay_schedule_id: Some(ledger_core::ids::PayScheduleId::from_uuid(Uuid::from_u128(0x5c))),
            actor: "alice".into(),
        }).unwrap();
        events.extend(when::<PayrollRunAggregate>(&events, PayrollRunCommand::Calculate { inputs: inputs.into(), rules, actor: "alice".into() }).unwrap());
        assert_round_trip(&events);
        let run = PayrollRunAggregate::fold(&events).unwrap();
        let moved = events.iter().cloned().fold(None, PayrollRunAggregate::evolve_owned);
        prop_assert_eq!(moved.as_ref(), Some(&run));
        // The whole items are in the calculation's chunks; the run keeps each one's amounts
        // and the stream version of its chunk.
        let items: Vec<PayrollItem> = events
            .iter()
            .flat_map(|event| match event {
                PayrollRunEvent::PayrollItemsCalculated { items, .. } => items.clone(),
                _ => Vec::new(),
            })
            .collect();
        prop_assert_eq!(&run.totals, &RunTotals::of(&Currency::usd(), &items).unwrap());
        prop_assert_eq!(run.items.len(), items.len());
        for item in &items {
            let kept = &run.items[&item.employee_id];
            prop_assert_eq!(
                (kept.gross, kept.deductions, kept.contributions, kept.net),
                (item.gross.amount(), item.deductions_total.amount(), item.contributions_total.amount(), item.net.amount())
            );
            let chunk = &events[kept.recorded_at_version as usize - 1];
            let recorded = matches!(chunk, PayrollRunEvent::PayrollItemsCalculated { items, .. } if items.contains(item));
            prop_assert!(recorded, "item of {} is not in the event at version {}", item.employee_id, kept.recorded_at_version);
        }
        for item in &items {
            prop_assert_eq!(item.gross.checked_sub(&item.deductions_total).unwrap(), item.net.clone());
            prop_assert!(!item.net.is_negative());
            if item.employer_cost().is_positive() {
                let wallet = WalletId::from_uuid(Uuid::from_u128(7));
                prop_assert_eq!(check_balanced(&payroll_item_postings(organization_id(), wallet, item)), Ok(()));
            }
        }
    }
}

/// An employee hired in December or January, maybe raised in January, maybe KYC-approved.
#[derive(Debug, Clone)]
struct StaffSpec {
    rate_cents: i64,
    start_day: u32,
    raise: Option<(i64, u32)>,
    december: bool,
    approved: bool,
}

impl StaffSpec {
    fn events(&self, n: u128) -> Vec<EmployeeEvent> {
        let start = if self.december { day(2025, 12, self.start_day) } else { day(2026, 1, self.start_day) };
        let rate = PayRate { amount: cents(self.rate_cents), basis: PayBasis::Monthly };
        let mut events = when::<EmployeeAggregate>(&[], hire_command(employee_id(n), rate, start)).unwrap();
        if let Some((raise_cents, raise_day)) = self.raise
            && day(2026, 1, raise_day) >= start
        {
            let rate = PayRate { amount: cents(raise_cents), basis: PayBasis::Monthly };
            let command = EmployeeCommand::ChangePayRate {
                rate,
                effective_from: day(2026, 1, raise_day),
                reason: "raise".into(),
            };
            events.extend(when::<EmployeeAggregate>(&events, command).unwrap());
        }
        if self.approved {
            events.push(EmployeeEvent::EmployeeKycStatusChanged { status: KycStatus::Approved, note: None });
        }
        events
    }
}

fn employee_strategy() -> impl Strategy<Value = StaffSpec> {
    (1i64..2_000_000, 1u32..=31, proptest::option::of((1i64..2_000_000, 2u32..=31)), any::<bool>(), any::<bool>())
        .prop_map(|(rate_cents, start_day, raise, december, approved)| StaffSpec {
            rate_cents,
            start_day,
            raise,
            december,
            approved,
        })
}

fn rule_strategy() -> impl Strategy<Value = DeductionRule> {
    let calculation = prop_oneof![
        (0u32..=3000)
            .prop_map(|basis_points| RuleCalculation::Percentage { rate: Decimal::new(basis_points.into(), 4) }),
        (1i64..100_000).prop_map(|amount| RuleCalculation::Fixed { amount: cents(amount) }),
        ((0u32..=3000), (1i64..100_000)).prop_map(|(basis_points, cap)| RuleCalculation::PercentageCapped {
            rate: Decimal::new(basis_points.into(), 4),
            cap: cents(cap)
        }),
    ];
    (calculation, any::<bool>(), 0u32..1000).prop_map(|(calculation, employer, id)| DeductionRule {
        id: format!("rule-{id}"),
        name: "rule".into(),
        party: if employer { RuleParty::Employer } else { RuleParty::Employee },
        calculation,
        liability_account: "liability".into(),
    })
}

/// The largest amount the edge takes, in cents.
const CENTS_MAX: i64 = 99_999_999_999_999_999; // 999,999,999,999,999.99

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Amounts as large as the edge takes, rates up to 100 %, hires and raises on any day:
    /// a calculation answers (never panics), nets out, and pays with balanced postings that a
    /// reversal turns around exactly; an amount allocated over any weights adds up.
    #[test]
    fn extreme_but_accepted_amounts_calculate_pay_and_reverse_without_overflow(
        rate_cents in (CENTS_MAX / 2)..=CENTS_MAX,
        raise_cents in (CENTS_MAX / 2)..=CENTS_MAX,
        start_day in 1u32..=31,
        raise_day in 2u32..=31,
        basis_points in 0u32..=10_000,
        weights in proptest::collection::vec(any::<u64>(), 1..6),
    ) {
        let rate = PayRate { amount: cents(rate_cents), basis: PayBasis::Monthly };
        let mut events = when::<EmployeeAggregate>(&[], hire_command(employee_id(1), rate, day(2026, 1, start_day))).unwrap();
        if raise_day > start_day {
            let rate = PayRate { amount: cents(raise_cents), basis: PayBasis::Monthly };
            let command = EmployeeCommand::ChangePayRate { rate, effective_from: day(2026, 1, raise_day), reason: "raise".into() };
            events.extend(when::<EmployeeAggregate>(&events, command).unwrap());
        }
        let rules = vec![DeductionRule {
            id: "tax".into(),
            name: "tax".into(),
            party: RuleParty::Employee,
            calculation: RuleCalculation::Percentage { rate: Decimal::new(basis_points.into(), 4) },
            liability_account: "tax".into(),
        }];
        let input = ItemInput { employee: EmployeeAggregate::fold(&events).unwrap(), paid_periods: vec![] };
        let item = calculate_item(&input, january(), PayFrequency::Monthly, &Currency::usd(), &rules).unwrap();
        prop_assert_eq!(item.gross.checked_sub(&item.deductions_total).unwrap(), item.net.clone());
        prop_assert!(item.gross.amount() <= Decimal::new(raise_cents.max(rate_cents), 2));
        let wallet = WalletId::from_uuid(Uuid::from_u128(7));
        let postings = payroll_item_postings(organization_id(), wallet, &item);
        prop_assert_eq!(check_balanced(&postings), Ok(()));
        let reversed = ledger_core::transaction::reversed_postings(&postings);
        prop_assert_eq!(check_balanced(&reversed), Ok(()));
        let weights: Vec<Decimal> = weights.into_iter().map(Decimal::from).collect();
        prop_assume!(weights.iter().any(|weight| !weight.is_zero()));
        let parts = item.gross.allocate(&weights).unwrap();
        prop_assert_eq!(Money::sum(&Currency::usd(), &parts).unwrap(), item.gross.clone());
    }
}

/// A rate recorded before amounts were bounded at the edge (the largest `Decimal`) is an
/// error of the calculation, not a panic.
#[test]
fn a_rate_beyond_decimal_range_once_yearly_is_an_error_not_a_panic() {
    let huge = Money::new(Decimal::MAX, Currency::usd()).unwrap();
    let rate = PayRate { amount: huge, basis: PayBasis::Monthly };
    let events = when::<EmployeeAggregate>(&[], hire_command(employee_id(1), rate, day(2025, 1, 1))).unwrap();
    let input = ItemInput { employee: EmployeeAggregate::fold(&events).unwrap(), paid_periods: vec![] };
    let result = calculate_item(&input, january(), PayFrequency::Monthly, &Currency::usd(), &[]);
    assert!(matches!(result, Err(DomainError::Money(ledger_core::MoneyError::Overflow))), "{result:?}");
}
