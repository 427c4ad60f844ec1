//! JSON views of domain states (the domain's state types are not serializable: only its
//! events are).

use ledger_core::employee::Employee;
use ledger_core::payroll::PayrollRun;
use ledger_core::transaction::LedgerTransaction;
use ledger_core::wallet::Wallet;
use serde_json::{Value, json};

pub fn employee(employee: &Employee) -> Value {
    json!({
        "employee_id": employee.id,
        "organization_id": employee.organization_id,
        "personal": employee.personal,
        "position": employee.position,
        "department": employee.department,
        "currency": employee.currency.code(),
        "pay_frequency": employee.pay_frequency,
        "rates": employee.rates,
        "employment": employee.employment,
        "kyc_status": employee.kyc,
    })
}

pub fn wallet(wallet: &Wallet) -> Value {
    json!({
        "wallet_id": wallet.id,
        "organization_id": wallet.organization_id,
        "employee_id": wallet.employee_id,
        "public_key": wallet.public_key,
        "currency": wallet.currency.code(),
        "balance": wallet.balance.amount(),
        "status": wallet.status,
    })
}

pub fn payroll_run(run: &PayrollRun) -> Value {
    // What the run keeps of each item: its amounts (in the run's currency) and status. The
    // lines are in the run's calculation events and in `GET /v1/payroll-runs/{id}/items`.
    let items: Vec<Value> = run
        .items
        .iter()
        .map(|(employee_id, item)| {
            json!({
                "employee_id": employee_id,
                "gross": item.gross,
                "deductions": item.deductions,
                "contributions": item.contributions,
                "net": item.net,
                "status": item.status,
            })
        })
        .collect();
    json!({
        "payroll_run_id": run.id,
        "organization_id": run.organization_id,
        "period": run.period,
        "frequency": run.frequency,
        "currency": run.currency.code(),
        "kind": run.kind,
        "status": run.status,
        "created_by": run.created_by,
        "calculated_by": run.calculated_by,
        "approved_by": run.approved_by,
        "totals": run.totals,
        "items": items,
    })
}

pub fn transaction(transaction: &LedgerTransaction) -> Value {
    json!({
        "transaction_id": transaction.id,
        "organization_id": transaction.organization_id,
        "postings": transaction.postings,
        "reference": transaction.reference,
        "status": transaction.status,
    })
}
