//! One projection per read schema.

mod compliance;
mod employee;
mod notification;
mod organization;
mod payroll;
mod transaction;
mod tree;
mod wallet;

use std::sync::Arc;

pub use compliance::ComplianceProjection;
pub use employee::EmployeeProjection;
pub use notification::NotificationProjection;
pub use organization::OrganizationProjection;
pub use payroll::PayrollProjection;
pub use transaction::TransactionProjection;
pub use tree::LogTreeProjection;
pub use wallet::WalletProjection;

use crate::projection::Projection;

/// Every projection, in a stable order.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(OrganizationProjection),
        Arc::new(EmployeeProjection),
        Arc::new(WalletProjection),
        Arc::new(PayrollProjection),
        Arc::new(TransactionProjection),
        Arc::new(NotificationProjection),
        Arc::new(ComplianceProjection),
        Arc::new(LogTreeProjection),
    ]
}

/// Every projection's name, in the same order.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|projection| projection.name()).collect()
}

/// The projection named `name`.
pub fn by_name(name: &str) -> crate::error::Result<Arc<dyn Projection>> {
    let projections = all();
    let names: Vec<&str> = projections.iter().map(|projection| projection.name()).collect();
    let joined = names.join(", ");
    projections
        .into_iter()
        .find(|projection| projection.name() == name)
        .ok_or_else(|| crate::error::ProjectionError::UnknownProjection(name.to_owned(), joined))
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("domain values serialize")
}

/// How a posting's direction is stored.
fn direction_name(direction: ledger_core::transaction::Direction) -> &'static str {
    match direction {
        ledger_core::transaction::Direction::Debit => "debit",
        ledger_core::transaction::Direction::Credit => "credit",
    }
}

/// A unit enum's serde name (`PayFrequency::SemiMonthly` -> `semi_monthly`).
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match to_json(value) {
        serde_json::Value::String(name) => name,
        other => other.to_string(),
    }
}
