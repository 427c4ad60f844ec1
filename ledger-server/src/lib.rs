//! The payroll service: the HTTP API, API keys and tenancy over the command side
//! (`ledger-app`) and the projections. The binary
//! `payroll-ledger` (src/main.rs) is its CLI.

pub mod api;
pub mod backup;
pub mod delivery;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod payslip_pdf;
pub mod privacy;
pub mod server;
pub mod transparency;
