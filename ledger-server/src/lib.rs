//! The payroll service: command handling, the HTTP API, API keys and tenancy. The binary
//! `payroll-ledger` (src/main.rs) is its CLI.

pub mod api;
pub mod error;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod payroll;
pub mod server;
pub mod staff;
