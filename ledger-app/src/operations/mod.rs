//! The payroll's operations over several aggregates, one file each: [`calculate`] a run
//! from the organization's employees, [`process`] it (pay every item: run, transaction and
//! wallet in one atomic append per batch), [`reverse`] it, [`withdraw`] from a wallet,
//! [`settle`] a run's payments. [`items`] reads a run's calculated items back.
//!
//! The read tables choose whom an operation concerns (after waiting for the projections
//! that write them, named in [`read_tables`]); the aggregates, loaded from their streams,
//! decide what.

pub mod calculate;
pub mod items;
pub mod payments;
pub mod privacy;
pub mod process;
pub mod reverse;
pub mod runs;
pub mod settle;
pub mod withdraw;

use std::collections::HashMap;
use std::time::Duration;

use ledger_core::Aggregate;
use ledger_core::payroll::{PayrollRun, PayrollRunAggregate};
use uuid::Uuid;

pub use calculate::{calculate, preview};
pub use items::RecordedItems;
pub use payments::{SETTLEMENTS_MAX, fail_payment, release, settle_many};
pub use privacy::{EraseRequest, Erased, erase, reapply_erasures};
pub use process::{ProcessReport, process};
pub use reverse::reverse;
pub use runs::{NewRun, NewRunKind, add_lines, create_run, void};
pub use settle::{Settlement, settle_run};
pub use withdraw::withdraw;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Loaded, fold_stream};

/// Streams loaded per query.
pub const LOAD_BATCH_STREAMS: usize = 1_000;
/// How long a command waits for the read tables it looks facts up in (after a bulk import
/// the projections may be minutes behind).
const LOOKUP_WAIT: Duration = Duration::from_secs(300);
/// Attempts of one payment or settlement batch that conflicts with another writer.
const BATCH_ATTEMPTS_MAX: usize = 5;

/// The projections whose read tables the operations look facts up in, by name (the
/// server's test checks these are projections' names).
pub mod read_tables {
    /// `employee.employees`: a calculation's candidates.
    pub const EMPLOYEE: &str = "employee";
    /// `payroll.paid_earnings`: a calculation's payment history.
    pub const PAYROLL: &str = "payroll";
    /// `wallet.wallets`: where a payment goes.
    pub const WALLET: &str = "wallet";
    /// Every name above.
    pub const ALL: &[&str] = &[EMPLOYEE, PAYROLL, WALLET];
}

/// Loads many aggregates of one type in few queries.
pub async fn load_many<A: Aggregate>(
    ledger: &Ledger,
    organization_id: Uuid,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Loaded<A::State>>> {
    let mut states = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(LOAD_BATCH_STREAMS) {
        let recorded = ledger.store().read_streams(chunk).await?;
        let mut by_stream: HashMap<Uuid, Vec<ledger_store::RecordedEvent>> = HashMap::new();
        for event in recorded {
            by_stream.entry(event.stream_id).or_default().push(event);
        }
        for id in chunk {
            let events = by_stream.remove(id).unwrap_or_default();
            states.insert(*id, fold_stream::<A>(organization_id, *id, &events)?);
        }
    }
    Ok(states)
}

/// [`load_many`] for the entries of a request: a stream of another organization (or of
/// another type) among `ids` is refused as `Invalid`, naming the first such entry as
/// `field(index)`, rather than as the whole batch not found.
pub async fn load_entries<A: Aggregate>(
    ledger: &Ledger,
    organization_id: Uuid,
    ids: &[Uuid],
    field: impl Fn(usize) -> String,
) -> Result<HashMap<Uuid, Loaded<A::State>>> {
    match load_many::<A>(ledger, organization_id, ids).await {
        Err(Error::NotFound(_)) => {
            // The batch does not say which: one at a time.
            for (index, id) in ids.iter().enumerate() {
                if let Err(Error::NotFound(_)) = ledger.load::<A>(organization_id, *id).await {
                    return Err(Error::Invalid(format!(
                        "{}: no {} {id} in this organization",
                        field(index),
                        A::STREAM_TYPE
                    )));
                }
            }
            Err(Error::Invalid(format!("{}: not of this organization", field(0))))
        }
        loaded => loaded,
    }
}

/// A run that exists, with its version.
async fn load_run(ledger: &Ledger, context: &Context, run_id: Uuid) -> Result<Loaded<PayrollRun>> {
    let Loaded { state, version } = ledger.load::<PayrollRunAggregate>(context.organization_id(), run_id).await?;
    let run = state.ok_or_else(|| Error::NotFound(format!("no payroll run {run_id}")))?;
    Ok(Loaded { state: run, version })
}
