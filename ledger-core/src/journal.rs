//! A payroll run's journal for the organization's general ledger: the ledger's payment
//! transactions turned into double-entry lines on the organization's chart of accounts.
//!
//! Each payment of an item gives two balanced entries:
//!
//! - the **accrual**, dated the run's pay date: wages expense (gross) and employer
//!   contributions expense debited; net pay (the `wallets` account) and each liability
//!   (deductions and contributions, by the rule's liability account) credited;
//! - the **payment**, dated the day the ledger recorded it: the transaction's own postings
//!   (net pay and liabilities debited as the funding account pays them, funding credited).
//!
//! A reversal gives the same two entries with every side swapped, dated the day it was
//! recorded. Lines are summed per entry, code, side and currency; every entry balances per
//! currency. An account the mapping does not name is refused, naming it.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::error::DomainError;
use crate::money::Money;
use crate::transaction::{Direction, Posting};

/// One payment (or reversal) transaction of a run, as the journal needs it.
#[derive(Debug, Clone)]
pub struct JournalTransaction {
    /// The day the ledger recorded the transaction.
    pub recorded_on: NaiveDate,
    pub postings: Vec<Posting>,
    /// The item's employer contributions (the part of the funding credit that is not wages).
    pub contributions: Money,
}

/// Which entry a line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    Accrual,
    Payment,
    ReversalAccrual,
    ReversalPayment,
}

impl Entry {
    pub fn name(self) -> &'static str {
        match self {
            Entry::Accrual => "accrual",
            Entry::Payment => "payment",
            Entry::ReversalAccrual => "reversal_accrual",
            Entry::ReversalPayment => "reversal_payment",
        }
    }
}

/// One line of the journal: a debit or a credit of one code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLine {
    pub date: NaiveDate,
    pub entry: Entry,
    /// The ledger account's mapping key (`wages_expense`, `wallets`, `liability:tax`, ...).
    pub account: String,
    pub code: String,
    pub direction: Direction,
    pub amount: Decimal,
    pub currency: String,
}

/// The mapping key of a ledger account: `funding`, `wallets` or `liability:<name>`.
pub fn mapping_key(account: &str) -> String {
    if account.starts_with("funding:") {
        return "funding".to_owned();
    }
    if account.starts_with("wallet:") {
        return "wallets".to_owned();
    }
    if let Some(rest) = account.strip_prefix("liability:") {
        // liability:<organization>:<name>
        let name = rest.split_once(':').map_or(rest, |(_, name)| name);
        return format!("liability:{name}");
    }
    account.to_owned()
}

/// A payroll transaction must move money out of (or back into) the funding account.
fn without_funding(postings: &[Posting]) -> DomainError {
    let total = |side: Direction| -> Decimal {
        postings.iter().filter(|posting| posting.direction == side).map(|posting| posting.amount.amount()).sum()
    };
    DomainError::UnbalancedPostings {
        currency: postings.first().map_or_else(String::new, |posting| posting.amount.currency().code().to_owned()),
        debits: format!("{} (no funding posting)", total(Direction::Debit)),
        credits: total(Direction::Credit).to_string(),
    }
}

fn swap(direction: Direction) -> Direction {
    match direction {
        Direction::Debit => Direction::Credit,
        Direction::Credit => Direction::Debit,
    }
}

/// The journal of a run's transactions, in date, entry, debit-before-credit and code order.
///
/// # Errors
/// `DomainError::UnmappedAccount` for the first account `codes` does not name;
/// `DomainError::UnbalancedPostings` for a transaction without a funding posting.
pub fn run_journal(
    pay_date: NaiveDate,
    transactions: &[JournalTransaction],
    codes: &BTreeMap<String, String>,
) -> Result<Vec<JournalLine>, DomainError> {
    type Key = (NaiveDate, Entry, u8, String, String, String);
    let mut sums: BTreeMap<Key, Decimal> = BTreeMap::new();
    let code_of =
        |key: &str| codes.get(key).cloned().ok_or_else(|| DomainError::UnmappedAccount { account: key.to_owned() });
    let mut add =
        |date: NaiveDate, entry: Entry, key: String, direction: Direction, amount: Decimal, currency: &str| {
            if amount.is_zero() {
                return Ok(());
            }
            let code = code_of(&key)?;
            let side = u8::from(direction == Direction::Credit);
            *sums.entry((date, entry, side, code, key, currency.to_owned())).or_default() += amount;
            Ok::<(), DomainError>(())
        };
    for transaction in transactions {
        let funding = transaction
            .postings
            .iter()
            .find(|posting| posting.account.starts_with("funding:"))
            .ok_or_else(|| without_funding(&transaction.postings))?;
        // A payment credits funding; a reversal debits it.
        let reversal = funding.direction == Direction::Debit;
        let (accrual, payment, accrual_date) = if reversal {
            (Entry::ReversalAccrual, Entry::ReversalPayment, transaction.recorded_on)
        } else {
            (Entry::Accrual, Entry::Payment, pay_date)
        };
        let orient = |direction: Direction| if reversal { swap(direction) } else { direction };
        let currency = funding.amount.currency().code();
        let contributions = transaction.contributions.amount();
        add(
            accrual_date,
            accrual,
            "wages_expense".to_owned(),
            orient(Direction::Debit),
            funding.amount.amount() - contributions,
            currency,
        )?;
        add(
            accrual_date,
            accrual,
            "employer_contributions_expense".to_owned(),
            orient(Direction::Debit),
            contributions,
            currency,
        )?;
        for posting in &transaction.postings {
            let key = mapping_key(&posting.account);
            let amount = posting.amount.amount();
            let currency = posting.amount.currency().code();
            if key != "funding" {
                // What the payment pays into is what the accrual owes: credited there.
                add(accrual_date, accrual, key.clone(), swap(posting.direction), amount, currency)?;
            }
            add(transaction.recorded_on, payment, key, posting.direction, amount, currency)?;
        }
    }
    Ok(sums
        .into_iter()
        .map(|((date, entry, side, code, account, currency), amount)| JournalLine {
            date,
            entry,
            account,
            code,
            direction: if side == 0 { Direction::Debit } else { Direction::Credit },
            amount,
            currency,
        })
        .collect())
}
