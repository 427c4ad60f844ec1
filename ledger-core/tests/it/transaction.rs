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
