use ledger_core::Aggregate;
use ledger_core::DomainError;
use ledger_core::ids::{TransactionId, WalletId};
use ledger_core::money::{Currency, Money};
use ledger_core::wallet::{WalletAggregate, WalletCommand, WalletEvent, WalletStatus};
use uuid::Uuid;

use crate::{employee_id, organization_id, usd, when};

type Wallet = WalletAggregate;

fn transaction(n: u128) -> TransactionId {
    TransactionId::from_uuid(Uuid::from_u128(0x7000 + n))
}

pub fn opened() -> Vec<WalletEvent> {
    when::<Wallet>(
        &[],
        WalletCommand::Open {
            wallet_id: WalletId::from_uuid(Uuid::from_u128(0x3)),
            organization_id: organization_id(),
            employee_id: employee_id(1),
            public_key: "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin".into(),
            currency: Currency::usd(),
        },
    )
    .unwrap()
}

#[test]
fn credit_and_debit_keep_a_running_balance() {
    let mut events = opened();
    events.extend(
        when::<Wallet>(&events, WalletCommand::Credit { amount: usd("100.00"), transaction_id: transaction(1) })
            .unwrap(),
    );
    events.extend(
        when::<Wallet>(&events, WalletCommand::Debit { amount: usd("30.25"), transaction_id: transaction(2) }).unwrap(),
    );
    assert!(
        matches!(events.last(), Some(WalletEvent::WalletDebited { balance_after, .. }) if *balance_after == usd("69.75"))
    );
    assert_eq!(Wallet::fold(&events).unwrap().balance, usd("69.75"));
}

#[test]
fn a_debit_below_zero_is_insufficient_funds() {
    let mut events = opened();
    events.extend(
        when::<Wallet>(&events, WalletCommand::Credit { amount: usd("10.00"), transaction_id: transaction(1) })
            .unwrap(),
    );
    let result = when::<Wallet>(&events, WalletCommand::Debit { amount: usd("10.01"), transaction_id: transaction(2) });
    assert!(
        matches!(result, Err(DomainError::InsufficientFunds { ref balance, ref requested, .. }) if *balance == usd("10.00") && *requested == usd("10.01"))
    );
    assert!(
        when::<Wallet>(&events, WalletCommand::Debit { amount: usd("10.00"), transaction_id: transaction(2) }).is_ok()
    );
}

#[test]
fn amounts_must_be_positive_and_in_the_wallet_currency() {
    let events = opened();
    let zero = when::<Wallet>(&events, WalletCommand::Credit { amount: usd("0.00"), transaction_id: transaction(1) });
    assert!(matches!(zero, Err(DomainError::Invalid { field, .. }) if field == "amount"));
    let negative =
        when::<Wallet>(&events, WalletCommand::Credit { amount: usd("-5.00"), transaction_id: transaction(1) });
    assert!(negative.is_err());
    let usdc = Money::parse("5.000001", Currency::known("USDC").unwrap()).unwrap();
    let wrong = when::<Wallet>(&events, WalletCommand::Credit { amount: usdc, transaction_id: transaction(1) });
    assert!(matches!(wrong, Err(DomainError::WrongCurrency { .. })));
}

#[test]
fn a_frozen_wallet_moves_no_money_until_unfrozen_and_closes_only_empty() {
    let mut events = opened();
    events.extend(
        when::<Wallet>(&events, WalletCommand::Credit { amount: usd("5.00"), transaction_id: transaction(1) }).unwrap(),
    );
    events.extend(when::<Wallet>(&events, WalletCommand::Freeze { reason: "fraud review".into() }).unwrap());
    let credit = when::<Wallet>(&events, WalletCommand::Credit { amount: usd("1.00"), transaction_id: transaction(2) });
    assert!(matches!(credit, Err(DomainError::WrongStatus { .. })));
    assert!(when::<Wallet>(&events, WalletCommand::Freeze { reason: "again".into() }).is_err());
    events.extend(when::<Wallet>(&events, WalletCommand::Unfreeze).unwrap());
    let close = when::<Wallet>(&events, WalletCommand::Close);
    assert!(matches!(close, Err(DomainError::Invalid { field, .. }) if field == "balance"));
    events.extend(
        when::<Wallet>(&events, WalletCommand::Debit { amount: usd("5.00"), transaction_id: transaction(3) }).unwrap(),
    );
    events.extend(when::<Wallet>(&events, WalletCommand::Close).unwrap());
    assert_eq!(Wallet::fold(&events).unwrap().status, WalletStatus::Closed);
    assert!(when::<Wallet>(&events, WalletCommand::Close).is_err());
}

#[test]
fn opening_twice_or_moving_money_in_no_wallet_is_an_error() {
    let events = opened();
    let again = when::<Wallet>(
        &events,
        WalletCommand::Open {
            wallet_id: WalletId::from_uuid(Uuid::from_u128(0x3)),
            organization_id: organization_id(),
            employee_id: employee_id(1),
            public_key: "k".into(),
            currency: Currency::usd(),
        },
    );
    assert!(matches!(again, Err(DomainError::AlreadyExists { .. })));
    let nowhere = when::<Wallet>(&[], WalletCommand::Credit { amount: usd("1.00"), transaction_id: transaction(1) });
    assert!(matches!(nowhere, Err(DomainError::NotFound { .. })));
}

#[test]
fn a_reversal_takes_back_what_the_wallet_still_holds_of_the_net() {
    let mut events = opened();
    events.extend(
        when::<Wallet>(&events, WalletCommand::Credit { amount: usd("100.00"), transaction_id: transaction(1) })
            .unwrap(),
    );
    let wallet = Wallet::fold(&events).unwrap();
    // All of it while the wallet holds it; only the rest once some was withdrawn.
    assert_eq!(wallet.reclaimable(&usd("100.00")).unwrap(), usd("100.00"));
    events.extend(
        when::<Wallet>(&events, WalletCommand::Debit { amount: usd("60.00"), transaction_id: transaction(2) }).unwrap(),
    );
    let wallet = Wallet::fold(&events).unwrap();
    assert_eq!(wallet.reclaimable(&usd("100.00")).unwrap(), usd("40.00"));
    assert_eq!(wallet.reclaimable(&usd("25.00")).unwrap(), usd("25.00"));
    // Another currency is an error, not a silent zero.
    let yen = Money::new(rust_decimal::Decimal::from(100), Currency::known("JPY").unwrap()).unwrap();
    assert!(wallet.reclaimable(&yen).is_err());
}
