//! The wallet: where an employee's pay lands. Its balance never goes below zero.

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, require_currency, require_text};
use crate::event::{Aggregate, DomainEvent};
use crate::ids::{EmployeeId, OrganizationId, TransactionId, WalletId};
use crate::money::{Currency, Money};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletStatus {
    Active,
    Frozen,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    pub id: WalletId,
    pub organization_id: OrganizationId,
    pub employee_id: EmployeeId,
    pub public_key: String,
    pub currency: Currency,
    pub balance: Money,
    pub status: WalletStatus,
}

#[derive(Debug, Clone)]
pub enum WalletCommand {
    Open {
        wallet_id: WalletId,
        organization_id: OrganizationId,
        employee_id: EmployeeId,
        public_key: String,
        currency: Currency,
    },
    Credit {
        amount: Money,
        transaction_id: TransactionId,
    },
    Debit {
        amount: Money,
        transaction_id: TransactionId,
    },
    Freeze {
        reason: String,
    },
    Unfreeze,
    Close,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum WalletEvent {
    WalletOpened {
        wallet_id: WalletId,
        organization_id: OrganizationId,
        employee_id: EmployeeId,
        public_key: String,
        currency: Currency,
    },
    /// `balance_after` is the running balance, kept so that a statement reads without a fold.
    WalletCredited {
        amount: Money,
        transaction_id: TransactionId,
        balance_after: Money,
    },
    WalletDebited {
        amount: Money,
        transaction_id: TransactionId,
        balance_after: Money,
    },
    WalletFrozen {
        reason: String,
    },
    WalletUnfrozen {},
    WalletClosed {},
}

impl DomainEvent for WalletEvent {
    const EVENT_TYPES: &'static [&'static str] =
        &["WalletOpened", "WalletCredited", "WalletDebited", "WalletFrozen", "WalletUnfrozen", "WalletClosed"];
}

#[derive(Debug, Clone, Copy, Default)]
pub struct WalletAggregate;

fn movement_amount(wallet: &Wallet, amount: &Money) -> Result<(), DomainError> {
    require_currency("amount", amount, &wallet.currency)?;
    if !amount.is_positive() {
        return Err(DomainError::invalid("amount", format!("must be positive, not {amount}")));
    }
    if wallet.status != WalletStatus::Active {
        return Err(DomainError::WrongStatus {
            entity: "wallet",
            action: "move money in",
            status: format!("{:?}", wallet.status),
        });
    }
    Ok(())
}

fn decide_existing(wallet: &Wallet, command: WalletCommand) -> Result<Vec<WalletEvent>, DomainError> {
    let wrong_status =
        |action| DomainError::WrongStatus { entity: "wallet", action, status: format!("{:?}", wallet.status) };
    match command {
        WalletCommand::Open { wallet_id, .. } => {
            Err(DomainError::AlreadyExists { entity: "wallet", id: wallet_id.to_string() })
        }
        WalletCommand::Credit { amount, transaction_id } => {
            movement_amount(wallet, &amount)?;
            let balance_after = wallet.balance.checked_add(&amount)?;
            Ok(vec![WalletEvent::WalletCredited { amount, transaction_id, balance_after }])
        }
        WalletCommand::Debit { amount, transaction_id } => {
            movement_amount(wallet, &amount)?;
            let balance_after = wallet.balance.checked_sub(&amount)?;
            if balance_after.is_negative() {
                return Err(DomainError::InsufficientFunds {
                    wallet_id: wallet.id,
                    balance: wallet.balance.clone(),
                    requested: amount,
                });
            }
            Ok(vec![WalletEvent::WalletDebited { amount, transaction_id, balance_after }])
        }
        WalletCommand::Freeze { reason } => {
            require_text("reason", &reason)?;
            if wallet.status != WalletStatus::Active {
                return Err(wrong_status("freeze"));
            }
            Ok(vec![WalletEvent::WalletFrozen { reason }])
        }
        WalletCommand::Unfreeze => {
            if wallet.status != WalletStatus::Frozen {
                return Err(wrong_status("unfreeze"));
            }
            Ok(vec![WalletEvent::WalletUnfrozen {}])
        }
        WalletCommand::Close => {
            if wallet.status == WalletStatus::Closed {
                return Err(wrong_status("close"));
            }
            if !wallet.balance.is_zero() {
                return Err(DomainError::invalid(
                    "balance",
                    format!("a wallet holding {} cannot close", wallet.balance),
                ));
            }
            Ok(vec![WalletEvent::WalletClosed {}])
        }
    }
}

impl Wallet {
    /// What a reversal takes back of a payment of `net` into this wallet: what the wallet
    /// still holds of it. The rest was withdrawn and is owed outside the ledger.
    ///
    /// # Errors
    /// `MoneyError` when `net` is of another currency than the wallet.
    pub fn reclaimable(&self, net: &Money) -> Result<Money, crate::money::MoneyError> {
        net.clone().min(self.balance.clone())
    }
}

impl Aggregate for WalletAggregate {
    const STREAM_TYPE: &'static str = "wallet";
    type State = Option<Wallet>;
    type Command = WalletCommand;
    type Event = WalletEvent;

    fn decide(state: &Self::State, command: WalletCommand) -> Result<Vec<WalletEvent>, DomainError> {
        match (state, command) {
            (None, WalletCommand::Open { wallet_id, organization_id, employee_id, public_key, currency }) => {
                require_text("public_key", &public_key)?;
                Ok(vec![WalletEvent::WalletOpened { wallet_id, organization_id, employee_id, public_key, currency }])
            }
            (None, _) => Err(DomainError::NotFound { entity: "wallet", id: "(not opened)".to_owned() }),
            (Some(wallet), command) => decide_existing(wallet, command),
        }
    }

    fn evolve(state: Self::State, event: &WalletEvent) -> Self::State {
        if let WalletEvent::WalletOpened { wallet_id, organization_id, employee_id, public_key, currency } = event {
            return Some(Wallet {
                id: *wallet_id,
                organization_id: *organization_id,
                employee_id: *employee_id,
                public_key: public_key.clone(),
                currency: currency.clone(),
                balance: Money::zero(currency.clone()),
                status: WalletStatus::Active,
            });
        }
        let mut wallet = state.expect("a wallet's later events follow its opening");
        match event {
            WalletEvent::WalletOpened { .. } => unreachable!("handled above"),
            WalletEvent::WalletCredited { balance_after, .. } | WalletEvent::WalletDebited { balance_after, .. } => {
                wallet.balance = balance_after.clone();
            }
            WalletEvent::WalletFrozen { .. } => wallet.status = WalletStatus::Frozen,
            WalletEvent::WalletUnfrozen {} => wallet.status = WalletStatus::Active,
            WalletEvent::WalletClosed {} => wallet.status = WalletStatus::Closed,
        }
        Some(wallet)
    }
}
