//! Double entry: a transaction is a set of postings that balances per currency, recorded as
//! pending and then settled by the payout rail (or failed, or voided).
//!
//! Accounts are named `kind:owner[:detail]`: `funding:<organization>`, `wallet:<wallet>`,
//! `liability:<organization>:<rule account>`. A debit is money into an account, a credit is
//! money out of it; every transaction's debits equal its credits in each currency.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, require_text};
use crate::event::{Aggregate, DomainEvent};
use crate::gross_to_net::PayrollItem;
use crate::ids::{EmployeeId, OrganizationId, PayrollRunId, TransactionId, WalletId};
use crate::money::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Debit,
    Credit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: String,
    pub direction: Direction,
    pub amount: Money,
}

/// What a transaction is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TransactionReference {
    PayrollItem { payroll_run_id: PayrollRunId, employee_id: EmployeeId },
    PayrollReversal { payroll_run_id: PayrollRunId, employee_id: EmployeeId },
    Withdrawal { wallet_id: WalletId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum TransactionStatus {
    Pending,
    Settled { signature: String, block_hash: String },
    Failed { reason: String },
    Voided { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerTransaction {
    pub id: TransactionId,
    pub organization_id: OrganizationId,
    pub postings: Vec<Posting>,
    pub reference: TransactionReference,
    pub status: TransactionStatus,
}

#[derive(Debug, Clone)]
pub enum TransactionCommand {
    Record {
        transaction_id: TransactionId,
        organization_id: OrganizationId,
        postings: Vec<Posting>,
        reference: TransactionReference,
    },
    Settle {
        signature: String,
        block_hash: String,
    },
    Fail {
        reason: String,
    },
    Void {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum TransactionEvent {
    TransactionRecorded {
        transaction_id: TransactionId,
        organization_id: OrganizationId,
        postings: Vec<Posting>,
        reference: TransactionReference,
    },
    TransactionSettled {
        signature: String,
        block_hash: String,
    },
    TransactionFailed {
        reason: String,
    },
    TransactionVoided {
        reason: String,
    },
}

impl DomainEvent for TransactionEvent {
    const EVENT_TYPES: &'static [&'static str] =
        &["TransactionRecorded", "TransactionSettled", "TransactionFailed", "TransactionVoided"];
}

/// The most postings one transaction may have.
pub const POSTINGS_MAX: usize = 256;

/// Checks that postings are well formed and balance per currency.
pub fn check_balanced(postings: &[Posting]) -> Result<(), DomainError> {
    if postings.len() < 2 || postings.len() > POSTINGS_MAX {
        return Err(DomainError::invalid("postings", format!("need 2 to {POSTINGS_MAX}, not {}", postings.len())));
    }
    let mut sides: BTreeMap<&str, (Money, Money)> = BTreeMap::new();
    for (index, posting) in postings.iter().enumerate() {
        require_text(&format!("postings[{index}].account"), &posting.account)?;
        if !posting.amount.is_positive() {
            return Err(DomainError::invalid(
                format!("postings[{index}].amount"),
                format!("must be positive, not {}", posting.amount),
            ));
        }
        let currency = posting.amount.currency();
        let (debits, credits) = sides
            .entry(currency.code())
            .or_insert_with(|| (Money::zero(currency.clone()), Money::zero(currency.clone())));
        match posting.direction {
            Direction::Debit => *debits = debits.checked_add(&posting.amount)?,
            Direction::Credit => *credits = credits.checked_add(&posting.amount)?,
        }
    }
    for (currency, (debits, credits)) in sides {
        if debits != credits {
            return Err(DomainError::UnbalancedPostings {
                currency: currency.to_owned(),
                debits: debits.amount().to_string(),
                credits: credits.amount().to_string(),
            });
        }
    }
    Ok(())
}

pub fn funding_account(organization_id: OrganizationId) -> String {
    format!("funding:{organization_id}")
}

pub fn wallet_account(wallet_id: WalletId) -> String {
    format!("wallet:{wallet_id}")
}

/// The wallet an account of [`wallet_account`]'s form names; `None` for any other account.
pub fn wallet_of_account(account: &str) -> Option<WalletId> {
    account.strip_prefix("wallet:")?.parse().ok()
}

/// The postings of a withdrawal: `amount` out of the wallet to the external payout account
/// `destination` names.
pub fn withdrawal_postings(wallet_id: WalletId, amount: &Money, destination: &str) -> Vec<Posting> {
    vec![
        Posting { account: wallet_account(wallet_id), direction: Direction::Credit, amount: amount.clone() },
        Posting { account: format!("external:{destination}"), direction: Direction::Debit, amount: amount.clone() },
    ]
}

pub fn liability_account(organization_id: OrganizationId, rule_account: &str) -> String {
    format!("liability:{organization_id}:{rule_account}")
}

/// The postings that pay a payroll item: the net into the employee's wallet, deductions and
/// employer contributions into their liability accounts, all out of the organization's
/// funding account (gross plus contributions). Zero lines are left out.
pub fn payroll_item_postings(organization_id: OrganizationId, wallet_id: WalletId, item: &PayrollItem) -> Vec<Posting> {
    let mut postings = vec![Posting {
        account: funding_account(organization_id),
        direction: Direction::Credit,
        amount: item.employer_cost(),
    }];
    if item.net.is_positive() {
        postings.push(Posting {
            account: wallet_account(wallet_id),
            direction: Direction::Debit,
            amount: item.net.clone(),
        });
    }
    for line in item.deductions.iter().chain(&item.contributions).filter(|line| line.amount.is_positive()) {
        postings.push(Posting {
            account: liability_account(organization_id, &line.liability_account),
            direction: Direction::Debit,
            amount: line.amount.clone(),
        });
    }
    postings
}

/// The postings of `postings` with every direction flipped: what undoes them.
pub fn reversed_postings(postings: &[Posting]) -> Vec<Posting> {
    postings
        .iter()
        .map(|posting| Posting {
            account: posting.account.clone(),
            direction: match posting.direction {
                Direction::Debit => Direction::Credit,
                Direction::Credit => Direction::Debit,
            },
            amount: posting.amount.clone(),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TransactionAggregate;

/// Settles, fails or voids a recorded transaction, which must still be pending.
fn decide_pending(
    transaction: &LedgerTransaction,
    command: TransactionCommand,
) -> Result<Vec<TransactionEvent>, DomainError> {
    let action = match &command {
        TransactionCommand::Record { .. } => unreachable!("recording is decided by the caller"),
        TransactionCommand::Settle { .. } => "settle",
        TransactionCommand::Fail { .. } => "fail",
        TransactionCommand::Void { .. } => "void",
    };
    if transaction.status != TransactionStatus::Pending {
        return Err(DomainError::WrongStatus {
            entity: "transaction",
            action,
            status: format!("{:?}", transaction.status),
        });
    }
    match command {
        TransactionCommand::Record { .. } => unreachable!("checked above"),
        TransactionCommand::Settle { signature, block_hash } => {
            require_text("signature", &signature)?;
            require_text("block_hash", &block_hash)?;
            Ok(vec![TransactionEvent::TransactionSettled { signature, block_hash }])
        }
        TransactionCommand::Fail { reason } => {
            require_text("reason", &reason)?;
            Ok(vec![TransactionEvent::TransactionFailed { reason }])
        }
        TransactionCommand::Void { reason } => {
            require_text("reason", &reason)?;
            Ok(vec![TransactionEvent::TransactionVoided { reason }])
        }
    }
}

impl LedgerTransaction {
    /// The wallet this transaction moved money into or out of, if any (a payment credits
    /// one, a withdrawal debits one).
    pub fn wallet(&self) -> Option<WalletId> {
        self.postings.iter().find_map(|posting| wallet_of_account(&posting.account))
    }
}

impl Aggregate for TransactionAggregate {
    const STREAM_TYPE: &'static str = "transaction";
    type State = Option<LedgerTransaction>;
    type Command = TransactionCommand;
    type Event = TransactionEvent;

    fn decide(state: &Self::State, command: TransactionCommand) -> Result<Vec<TransactionEvent>, DomainError> {
        match (state, command) {
            (None, TransactionCommand::Record { transaction_id, organization_id, postings, reference }) => {
                check_balanced(&postings)?;
                Ok(vec![TransactionEvent::TransactionRecorded { transaction_id, organization_id, postings, reference }])
            }
            (Some(transaction), TransactionCommand::Record { .. }) => {
                Err(DomainError::AlreadyExists { entity: "transaction", id: transaction.id.to_string() })
            }
            (None, _) => Err(DomainError::NotFound { entity: "transaction", id: "(not recorded)".to_owned() }),
            (Some(transaction), command) => decide_pending(transaction, command),
        }
    }

    fn evolve(state: Self::State, event: &TransactionEvent) -> Self::State {
        if let TransactionEvent::TransactionRecorded { transaction_id, organization_id, postings, reference } = event {
            // Pair assertion: what was checked before the append still holds after the load.
            check_balanced(postings).expect("recorded postings balance");
            return Some(LedgerTransaction {
                id: *transaction_id,
                organization_id: *organization_id,
                postings: postings.clone(),
                reference: reference.clone(),
                status: TransactionStatus::Pending,
            });
        }
        let mut transaction = state.expect("a transaction's later events follow its recording");
        transaction.status = match event {
            TransactionEvent::TransactionRecorded { .. } => unreachable!("handled above"),
            TransactionEvent::TransactionSettled { signature, block_hash } => {
                TransactionStatus::Settled { signature: signature.clone(), block_hash: block_hash.clone() }
            }
            TransactionEvent::TransactionFailed { reason } => TransactionStatus::Failed { reason: reason.clone() },
            TransactionEvent::TransactionVoided { reason } => TransactionStatus::Voided { reason: reason.clone() },
        };
        Some(transaction)
    }
}
