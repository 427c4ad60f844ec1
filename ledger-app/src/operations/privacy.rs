//! Personal data: erasing an employee's (crypto-shredding: the data key goes with the
//! erasure event, in its append) and re-applying the log's erasures to the key table (at
//! every start: a restored backup, or a key table restored apart from the log, may hold
//! keys the log says are destroyed).

use chrono::NaiveDate;
use ledger_core::employee::{ERASURE_EVENTS, EmployeeAggregate, EmployeeCommand, ErasureOverride};
use ledger_core::organization::OrganizationAggregate;
use ledger_store::{EventQuery, EventStore, READ_BATCH_MAX};
use uuid::Uuid;

use crate::context::{Context, Written};
use crate::error::{Error, Result};
use crate::ledger::Ledger;

/// An erasure request.
#[derive(Debug, Clone)]
pub struct EraseRequest {
    pub employee_id: Uuid,
    pub reason: String,
    /// Erase before the retention period has passed, on this legal basis.
    pub override_basis: Option<ErasureOverride>,
    /// The caller's day (the retention period is compared with it).
    pub today: NaiveDate,
    /// An erasure made before and lost with a restore, made again (with an override naming
    /// it): the employee need not have left in the restored log.
    pub reapplied: bool,
}

/// What an erasure did.
#[derive(Debug, Clone)]
pub struct Erased {
    /// The erasure's append; `None` when the data was erased before (the request repeats).
    pub written: Option<Written>,
    pub erased_on: NaiveDate,
}

/// Erases an employee's personal data: refused while employed, and before the
/// organization's retention period has passed unless an override names its legal basis. A
/// repeated request answers the first erasure (and makes sure its key is gone).
pub async fn erase(ledger: &Ledger, context: &Context, request: EraseRequest) -> Result<Erased> {
    ledger_core::employee::erasure_request_valid(&request.reason, request.override_basis.as_ref())?;
    let organization_id = context.organization_id();
    let organization = ledger
        .load::<OrganizationAggregate>(organization_id, organization_id)
        .await?
        .state
        .ok_or_else(|| Error::NotFound(format!("no organization {organization_id}")))?;
    let mut loaded = ledger.load::<EmployeeAggregate>(organization_id, request.employee_id).await?;
    let Some(employee) = &loaded.state else {
        return Err(Error::NotFound(format!("no employee {} in this organization", request.employee_id)));
    };
    if let Some(erased_on) = employee.erased_on {
        // The same request again with its key: answered as the first was.
        if let Some(written) = ledger.replayed(context).await? {
            return Ok(Erased { written: Some(written), erased_on });
        }
        reapply_one(ledger.store(), organization_id, request.employee_id).await?;
        return Ok(Erased { written: None, erased_on });
    }
    let command = EmployeeCommand::ErasePersonalData {
        reason: request.reason,
        retention_years: organization.retention_years,
        override_basis: request.override_basis,
        today: request.today,
        reapplied: request.reapplied,
    };
    // On the state loaded above, kept current (reloaded after a conflict or a replay).
    let outcome = ledger.execute_loaded::<EmployeeAggregate>(context, request.employee_id, &mut loaded, command).await;
    let erased_on = loaded.state.and_then(|employee| employee.erased_on);
    match (outcome, erased_on) {
        (Ok(written), erased_on) => {
            Ok(Erased { written: Some(written), erased_on: erased_on.unwrap_or(request.today) })
        }
        // Another erasure of the same person won the race: this one repeats it.
        (Err(Error::Domain(_)), Some(erased_on)) => Ok(Erased { written: None, erased_on }),
        (Err(error), _) => Err(error),
    }
}

/// Destroys the key of one employee whose erasure the log records.
async fn reapply_one(store: &EventStore, organization_id: Uuid, employee_id: Uuid) -> Result<()> {
    let query =
        EventQuery { stream_id: Some(employee_id), event_types: erasure_types(), limit: 1, ..EventQuery::default() };
    if let Some(event) = store.query_events(&query).await?.first() {
        ledger_store::vault::destroy_keys(store.pool(), &[(employee_id, organization_id, event.recorded_at)]).await?;
    }
    Ok(())
}

fn erasure_types() -> Vec<String> {
    ERASURE_EVENTS.iter().map(|(_, event_type)| (*event_type).to_owned()).collect()
}

/// Destroys the data key of every subject whose erasure is in the log (and leaves a row
/// that stops a key being made for it again). Returns how many keys were destroyed now: 0
/// unless the key table held keys the log says are gone. Needs no master key.
pub async fn reapply_erasures(store: &EventStore) -> Result<u64> {
    let mut query = EventQuery { event_types: erasure_types(), limit: READ_BATCH_MAX, ..EventQuery::default() };
    let mut destroyed = 0;
    loop {
        let page = store.query_events(&query).await?;
        let subjects: Vec<_> =
            page.iter().map(|event| (event.stream_id, event.organization_id, event.recorded_at)).collect();
        destroyed += ledger_store::vault::destroy_keys(store.pool(), &subjects).await?;
        if page.len() < READ_BATCH_MAX {
            return Ok(destroyed);
        }
        query.position_after = page.last().map(|event| event.global_position);
    }
}
