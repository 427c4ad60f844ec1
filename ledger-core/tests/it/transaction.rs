use ledger_core::Aggregate;
use ledger_core::DomainError;
use ledger_core::ids::{PayrollRunId, TransactionId};
use ledger_core::money::{Currency, Money};
use ledger_core::transaction::{
    Direction, Posting, TransactionAggregate, TransactionCommand, TransactionEvent, TransactionReference,
    TransactionStatus, check_balanced,
};
use uuid::Uuid;

use crate::{employee_id, organization_id, usd, when};

type Transaction = TransactionAggregate;

fn posting(account: &str, direction: Direction, amount: Money) -> Posting {
    Posting { account: account.into(), direction, amount }
}

fn record(postings: Vec<Posting>) -> TransactionCommand {
    TransactionCommand::Record {
        transaction_id: TransactionId::from_uuid(Uuid::from_u128(0x77)),
        organization_id: organization_id(),
        postings,
        reference: TransactionReference::PayrollItem {
            payroll_run_id: PayrollRunId::from_uuid(Uuid::from_u128(1)),
            employee_id: employee_id(1),
        },
    }
}

fn recorded() -> Vec<TransactionEvent> {
    when::<Transaction>(
        &[],
        record(vec![
            posting("funding:acme", Direction::Credit, usd("100.00")),
            posting("wallet:ada", Direction::Debit, usd("90.00")),
            posting("liability:acme:tax", Direction::Debit, usd("10.00")),
        ]),
    )
    .unwrap()
}

#[test]
fn balanced_postings_are_recorded_pending_then_settled_with_the_rail_proof() {
    let mut events = recorded();
    assert_eq!(Transaction::fold(&events).unwrap().status, TransactionStatus::Pending);
    let settle = TransactionCommand::Settle {
        signature: "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnb".into(),
        block_hash: "EkSnNWid2cvwEVnVx9aBqawnmiCNiDgp3gUdkDPTKN1N".into(),
    };
    events.extend(when::<Transaction>(&events, settle.clone()).unwrap());
    assert!(matches!(Transaction::fold(&events).unwrap().status, TransactionStatus::Settled { .. }));
    let twice = when::<Transaction>(&events, settle);
    assert!(matches!(twice, Err(DomainError::WrongStatus { action: "settle", .. })));
}

#[test]
fn unbalanced_postings_are_an_error_naming_the_currency_and_sides() {
    let result = when::<Transaction>(
        &[],
        record(vec![
            posting("funding:acme", Direction::Credit, usd("100.00")),
            posting("wallet:ada", Direction::Debit, usd("99.99")),
        ]),
    );
    assert_eq!(
        result,
        Err(DomainError::UnbalancedPostings {
            currency: "USD".into(),
            debits: "99.99".into(),
            credits: "100.00".into()
        })
    );
}

#[test]
fn postings_balance_per_currency_not_in_total() {
    let usdc = |amount: &str| Money::parse(amount, Currency::known("USDC").unwrap()).unwrap();
    // 10 USD out and 10 USDC in: the totals match as numbers, but each currency is unbalanced.
    let mixed =
        check_balanced(&[posting("a", Direction::Credit, usd("10.00")), posting("b", Direction::Debit, usdc("10"))]);
    assert!(matches!(mixed, Err(DomainError::UnbalancedPostings { .. })));
    let both = check_balanced(&[
        posting("a", Direction::Credit, usd("10.00")),
        posting("b", Direction::Debit, usd("10.00")),
        posting("c", Direction::Credit, usdc("3.5")),
        posting("d", Direction::Debit, usdc("3.5")),
    ]);
    assert_eq!(both, Ok(()));
}

#[test]
fn malformed_postings_are_rejected() {
    let one = check_balanced(&[posting("a", Direction::Credit, usd("1.00"))]);
    assert!(matches!(one, Err(DomainError::Invalid { field, .. }) if field == "postings"));
    let zero =
        check_balanced(&[posting("a", Direction::Credit, usd("0.00")), posting("b", Direction::Debit, usd("0.00"))]);
    assert!(matches!(zero, Err(DomainError::Invalid { field, .. }) if field == "postings[0].amount"));
    let blank =
        check_balanced(&[posting("", Direction::Credit, usd("1.00")), posting("b", Direction::Debit, usd("1.00"))]);
    assert!(matches!(blank, Err(DomainError::Invalid { field, .. }) if field == "postings[0].account"));
}

#[test]
fn a_pending_transaction_fails_or_is_voided_once() {
    let events = recorded();
    let failed = when::<Transaction>(&events, TransactionCommand::Fail { reason: "rail timeout".into() }).unwrap();
    let all: Vec<_> = events.iter().chain(&failed).cloned().collect();
    assert!(matches!(Transaction::fold(&all).unwrap().status, TransactionStatus::Failed { .. }));
    assert!(when::<Transaction>(&all, TransactionCommand::Void { reason: "x".into() }).is_err());
    assert!(when::<Transaction>(&events, TransactionCommand::Void { reason: "duplicate".into() }).is_ok());
    assert!(
        when::<Transaction>(&events, TransactionCommand::Settle { signature: "".into(), block_hash: "b".into() })
            .is_err()
    );
    assert!(matches!(when::<Transaction>(&events, record(vec![])), Err(DomainError::AlreadyExists { .. })));
}

#[test]
fn a_withdrawal_moves_the_amount_from_the_wallet_to_its_destination_balanced() {
    use ledger_core::ids::WalletId;
    use ledger_core::transaction::{wallet_account, wallet_of_account, withdrawal_postings};
    let wallet = WalletId::from_uuid(Uuid::from_u128(0x3));
    let postings = withdrawal_postings(wallet, &usd("12.34"), "bank:DE89");
    assert_eq!(
        postings,
        vec![
            posting(&wallet_account(wallet), Direction::Credit, usd("12.34")),
            posting("external:bank:DE89", Direction::Debit, usd("12.34")),
        ]
    );
    assert!(check_balanced(&postings).is_ok());
    // The wallet a transaction touched is read back from its account; other accounts name none.
    assert_eq!(wallet_of_account(&wallet_account(wallet)), Some(wallet));
    assert_eq!(wallet_of_account("external:bank:DE89"), None);
    assert_eq!(wallet_of_account("wallet:not-a-uuid"), None);
    let withdrawal = when::<Transaction>(&[], record(postings)).unwrap();
    assert_eq!(Transaction::fold(&withdrawal).unwrap().wallet(), Some(wallet));
    assert_eq!(Transaction::fold(&recorded()).unwrap().wallet(), None, "\"wallet:ada\" is no wallet id");
}

mod journal {
    use std::collections::BTreeMap;

    use ledger_core::DomainError;
    use ledger_core::gross_to_net::{EarningKind, EarningLine, PayrollItem, RuleLine};
    use ledger_core::ids::WalletId;
    use ledger_core::journal::{Entry, JournalTransaction, run_journal};
    use ledger_core::transaction::{Direction, payroll_item_postings, reversed_postings};
    use proptest::prelude::*;
    use rust_decimal::Decimal;
    use uuid::Uuid;

    use crate::{day, employee_id, organization_id, usd};

    fn cents(value: i64) -> String {
        Decimal::new(value, 2).to_string()
    }

    /// An item of `gross` with deductions and contributions to the liability accounts named.
    fn item(gross: i64, deductions: &[(&str, i64)], contributions: &[(&str, i64)]) -> PayrollItem {
        let line = |(account, amount): &(&str, i64)| RuleLine {
            rule_id: (*account).to_owned(),
            name: (*account).to_owned(),
            liability_account: (*account).to_owned(),
            amount: usd(&cents(*amount)),
        };
        let deducted: i64 = deductions.iter().map(|(_, amount)| amount).sum();
        let contributed: i64 = contributions.iter().map(|(_, amount)| amount).sum();
        PayrollItem {
            employee_id: employee_id(1),
            earnings: vec![EarningLine {
                kind: EarningKind::Regular { from: day(2026, 1, 1), to: day(2026, 1, 31) },
                amount: usd(&cents(gross)),
            }],
            deductions: deductions.iter().map(line).collect(),
            contributions: contributions.iter().map(line).collect(),
            gross: usd(&cents(gross)),
            deductions_total: usd(&cents(deducted)),
            contributions_total: usd(&cents(contributed)),
            net: usd(&cents(gross - deducted)),
            hold: None,
            basis: Vec::new(),
        }
    }

    fn codes() -> BTreeMap<String, String> {
        [
            ("funding", "1010"),
            ("wages_expense", "6000"),
            ("employer_contributions_expense", "6100"),
            ("wallets", "2100"),
            ("liability:tax", "2200"),
            ("liability:social", "2300"),
        ]
        .into_iter()
        .map(|(key, code)| (key.to_owned(), code.to_owned()))
        .collect()
    }

    fn paid(item: &PayrollItem, on: u32, reversed: bool) -> JournalTransaction {
        let postings = payroll_item_postings(organization_id(), WalletId::from_uuid(Uuid::from_u128(9)), item);
        JournalTransaction {
            recorded_on: day(2026, 2, on),
            postings: if reversed { reversed_postings(&postings) } else { postings },
            contributions: item.contributions_total.clone(),
        }
    }

    #[test]
    fn a_payment_is_accrued_on_the_pay_date_and_paid_from_funding_as_recorded() {
        let item = item(600_000, &[("tax", 60_000), ("social", 45_900)], &[("social", 45_900)]);
        let lines = run_journal(day(2026, 1, 31), &[paid(&item, 2, false)], &codes()).unwrap();
        let shown: Vec<(String, &str, &str, String)> = lines
            .iter()
            .map(|line| {
                let side = if line.direction == Direction::Debit { "debit" } else { "credit" };
                (line.date.to_string(), line.entry.name(), side, format!("{} {}", line.code, line.amount))
            })
            .collect();
        let row = |date: &str, entry, side, amount: &str| (date.to_owned(), entry, side, amount.to_owned());
        assert_eq!(
            shown,
            vec![
                // Gross 6,000.00; the social rule's liability takes the employee's 459.00
                // and the employer's 459.00; net 4,941.00.
                row("2026-01-31", "accrual", "debit", "6000 6000.00"),
                row("2026-01-31", "accrual", "debit", "6100 459.00"),
                row("2026-01-31", "accrual", "credit", "2100 4941.00"),
                row("2026-01-31", "accrual", "credit", "2200 600.00"),
                row("2026-01-31", "accrual", "credit", "2300 918.00"),
                row("2026-02-02", "payment", "debit", "2100 4941.00"),
                row("2026-02-02", "payment", "debit", "2200 600.00"),
                row("2026-02-02", "payment", "debit", "2300 918.00"),
                row("2026-02-02", "payment", "credit", "1010 6459.00"),
            ]
        );
        let mut without = codes();
        without.remove("liability:social");
        let refused = run_journal(day(2026, 1, 31), &[paid(&item, 2, false)], &without);
        assert!(matches!(refused, Err(DomainError::UnmappedAccount { account }) if account == "liability:social"));
    }

    proptest! {
        #[test]
        fn every_entry_balances_and_a_reversal_undoes_its_payment(
            items in prop::collection::vec((1i64..10_000_000, 0i64..30, 0i64..10, 0i64..3, any::<bool>()), 1..12),
        ) {
            let mut transactions = Vec::new();
            let mut gross = Decimal::ZERO;
            for (amount, tax_percent, social_percent, on, reversed) in &items {
                let tax = amount * tax_percent / 100;
                let social = amount * social_percent / 100;
                let item = item(*amount, &[("tax", tax)], &[("social", social)]);
                transactions.push(paid(&item, 1 + *on as u32, false));
                gross += item.gross.amount();
                if *reversed {
                    transactions.push(paid(&item, 4, true));
                    gross -= item.gross.amount();
                }
            }
            let lines = run_journal(day(2026, 1, 31), &transactions, &codes()).unwrap();
            let mut balance: BTreeMap<(String, Entry), Decimal> = BTreeMap::new();
            let mut wages = Decimal::ZERO;
            for line in &lines {
                prop_assert!(line.amount > Decimal::ZERO, "{line:?}");
                let signed = if line.direction == Direction::Debit { line.amount } else { -line.amount };
                *balance.entry((line.date.to_string(), line.entry)).or_default() += signed;
                if line.account == "wages_expense" {
                    wages += signed;
                }
            }
            prop_assert!(balance.values().all(Decimal::is_zero), "{balance:?}");
            prop_assert_eq!(wages, gross, "wages expense is the gross of what stays paid");
        }
    }
}
