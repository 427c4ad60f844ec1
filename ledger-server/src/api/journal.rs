//! A completed run's journal as CSV for the organization's general ledger
//! (`GET /v1/payroll-runs/{id}/journal?format=csv`): the run's live payment and reversal
//! transactions (the compliance projection's, as the JSON journal has them) turned into
//! lines on the organization's chart of accounts by `ledger_core::journal`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use ledger_core::journal::{JournalTransaction, run_journal};
use ledger_core::money::{Currency, Money};
use ledger_core::transaction::{Direction, Posting};
use rust_decimal::Decimal;
use sqlx::types::Json;
use uuid::Uuid;

use super::AppState;
use super::schema::pad;
use crate::error::{AppError, AppResult};
use crate::keys::Identity;

#[derive(sqlx::FromRow)]
struct PostingRow {
    transaction_id: Uuid,
    account: String,
    direction: String,
    amount: Decimal,
    currency: String,
    recorded_at: DateTime<Utc>,
    contributions: Option<Decimal>,
}

fn money(amount: Decimal, code: &str) -> AppResult<Money> {
    let currency = Currency::known(code).or_else(|_| Currency::custom(code, amount.scale()))?;
    Ok(Money::new(amount, currency)?)
}

/// What a line is, in words.
fn description(account: &str, period: (NaiveDate, NaiveDate)) -> String {
    let what = match account {
        "wages_expense" => "Wages".to_owned(),
        "employer_contributions_expense" => "Employer contributions".to_owned(),
        "wallets" => "Net pay".to_owned(),
        "funding" => "Payroll funding".to_owned(),
        other => match other.strip_prefix("liability:") {
            Some(name) => format!("Liability {name}"),
            None => other.to_owned(),
        },
    };
    format!("{what}, payroll {} to {}", period.0, period.1)
}

/// The CSV of run `run_id`'s journal (the caller checked the run's journal exists).
pub async fn csv(state: &AppState, identity: &Identity, run_id: Uuid) -> AppResult<Vec<u8>> {
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let run: Option<(NaiveDate, NaiveDate, NaiveDate)> =
        sqlx::query_as("select period_start, period_end, pay_date from payroll.payroll_runs where payroll_run_id = $1")
            .bind(run_id)
            .fetch_optional(&mut *read)
            .await?;
    let (start, end, pay_date) =
        run.ok_or_else(|| AppError::NotFound(format!("no payroll run {run_id} (is the payroll projection behind?)")))?;
    let mapping: Option<Json<BTreeMap<String, String>>> =
        sqlx::query_scalar("select value from organization.organization_settings where key = 'gl_accounts'")
            .fetch_optional(&mut *read)
            .await?;
    // The transactions' days and employees come from their events in the log.
    let rows: Vec<PostingRow> = sqlx::query_as(
        "select p.transaction_id, p.account, p.direction, p.amount, p.currency, e.recorded_at, i.contributions \
         from compliance.run_postings p \
         join ledger.events e on e.global_position = p.last_position \
         left join compliance.run_items i on i.payroll_run_id = p.payroll_run_id \
           and i.employee_id = (e.payload->'reference'->>'employee_id')::uuid \
         where p.payroll_run_id = $1 order by e.global_position, p.transaction_id, p.line",
    )
    .bind(run_id)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;

    let mut transactions: Vec<(Uuid, JournalTransaction)> = Vec::new();
    for row in rows {
        let posting = Posting {
            account: row.account,
            direction: if row.direction == "debit" { Direction::Debit } else { Direction::Credit },
            amount: money(row.amount, &row.currency)?,
        };
        match transactions.last_mut() {
            Some((id, transaction)) if *id == row.transaction_id => transaction.postings.push(posting),
            _ => {
                let contributions = row.contributions.ok_or_else(|| {
                    AppError::internal(format!("transaction {} pays no item of run {run_id}", row.transaction_id))
                })?;
                let transaction = JournalTransaction {
                    recorded_on: row.recorded_at.date_naive(),
                    postings: vec![posting],
                    contributions: money(contributions, &row.currency)?,
                };
                transactions.push((row.transaction_id, transaction));
            }
        }
    }
    let transactions: Vec<JournalTransaction> = transactions.into_iter().map(|(_, transaction)| transaction).collect();
    let lines = run_journal(pay_date, &transactions, &mapping.map(|mapping| mapping.0).unwrap_or_default())?;

    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = ["date", "account_code", "description", "debit", "credit", "currency", "payroll_run_id", "reference"];
    writer.write_record(header).map_err(AppError::internal)?;
    let run = run_id.to_string();
    for line in lines {
        let mut amount = line.amount;
        pad(&mut amount, &line.currency);
        let (debit, credit) = match line.direction {
            Direction::Debit => (amount.to_string(), String::new()),
            Direction::Credit => (String::new(), amount.to_string()),
        };
        let reference = format!("payroll-{run}-{}-{}", line.entry.name(), line.date);
        let date = line.date.to_string();
        let record = [
            &date,
            &line.code,
            &description(&line.account, (start, end)),
            &debit,
            &credit,
            &line.currency,
            &run,
            &reference,
        ];
        writer.write_record(record).map_err(AppError::internal)?;
    }
    writer.into_inner().map_err(AppError::internal)
}
