//! A run's whole items, read back from the calculation events that record them: a payment
//! needs an item's lines, which the run's state does not keep.

use std::collections::HashMap;

use ledger_codec::decode_recorded;
use ledger_core::gross_to_net::PayrollItem;
use ledger_core::ids::EmployeeId;
use ledger_core::payroll::{PayrollRun, PayrollRunEvent};

use crate::error::{Error, Result};
use crate::ledger::Ledger;

/// Holds the events of the last items asked for (a payment batch's items are in one or two
/// chunks, and the next batch starts where the last one ended).
#[derive(Debug, Default)]
pub struct RecordedItems {
    events: Vec<(u64, HashMap<EmployeeId, PayrollItem>)>,
}

impl RecordedItems {
    /// Reads the events that record `employees`' items of `run` (those not held already).
    pub async fn load(&mut self, ledger: &Ledger, run: &PayrollRun, employees: &[EmployeeId]) -> Result<()> {
        let mut versions: Vec<u64> = employees
            .iter()
            .filter_map(|employee| run.items.get(employee))
            .map(|item| item.recorded_at_version)
            .collect();
        versions.sort_unstable();
        versions.dedup();
        self.events.retain(|(version, _)| versions.binary_search(version).is_ok());
        versions.retain(|version| !self.events.iter().any(|(held, _)| held == version));
        if versions.is_empty() {
            return Ok(());
        }
        for recorded in ledger.store().read_stream_versions(run.id.as_uuid(), &versions).await? {
            let items = match decode_recorded::<PayrollRunEvent>(&recorded)? {
                PayrollRunEvent::PayrollItemsCalculated { items, .. }
                | PayrollRunEvent::PayrollRunCalculated { items, .. } => items,
                other => {
                    return Err(Error::internal(format!(
                        "version {} of run {} records no items but {other:?}",
                        recorded.stream_version, run.id
                    )));
                }
            };
            self.events
                .push((recorded.stream_version, items.into_iter().map(|item| (item.employee_id, item)).collect()));
        }
        Ok(())
    }

    /// An item [`RecordedItems::load`] read.
    pub fn get(&self, run: &PayrollRun, employee: EmployeeId) -> Result<&PayrollItem> {
        let version = run.items.get(&employee).map(|item| item.recorded_at_version);
        self.events
            .iter()
            .filter(|(held, _)| Some(*held) == version)
            .find_map(|(_, items)| items.get(&employee))
            .ok_or_else(|| {
                Error::internal(format!(
                    "the item of employee {employee} in run {} was not read (version {version:?})",
                    run.id
                ))
            })
    }
}
