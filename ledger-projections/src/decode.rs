//! Stored envelopes back into domain events, by stream type.

use ledger_core::employee::{EmployeeAggregate, EmployeeEvent};
use ledger_core::organization::{OrganizationAggregate, OrganizationEvent};
use ledger_core::payroll::{PayrollRunAggregate, PayrollRunEvent};
use ledger_core::transaction::{TransactionAggregate, TransactionEvent};
use ledger_core::wallet::{WalletAggregate, WalletEvent};
use ledger_core::{Aggregate, DomainEvent, EventEnvelope};
use ledger_store::RecordedEvent;

use crate::error::{ProjectionError, Result};

/// A decoded event of any aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    Organization(OrganizationEvent),
    Employee(EmployeeEvent),
    Wallet(WalletEvent),
    PayrollRun(PayrollRunEvent),
    Transaction(TransactionEvent),
    /// A stream type the domain does not know (written by another tool): only the audit log
    /// records it.
    Other,
}

fn envelope(event: &RecordedEvent) -> EventEnvelope {
    EventEnvelope {
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        payload: event.payload.clone(),
    }
}

/// Decodes one stored event, upcasting older payloads.
pub fn decode(event: &RecordedEvent) -> Result<AnyEvent> {
    let fail = |source| ProjectionError::Decode { global_position: event.global_position, source };
    let envelope = envelope(event);
    Ok(match event.stream_type.as_str() {
        OrganizationAggregate::STREAM_TYPE => {
            AnyEvent::Organization(OrganizationEvent::from_envelope(&envelope).map_err(fail)?)
        }
        EmployeeAggregate::STREAM_TYPE => AnyEvent::Employee(EmployeeEvent::from_envelope(&envelope).map_err(fail)?),
        WalletAggregate::STREAM_TYPE => AnyEvent::Wallet(WalletEvent::from_envelope(&envelope).map_err(fail)?),
        PayrollRunAggregate::STREAM_TYPE => {
            AnyEvent::PayrollRun(PayrollRunEvent::from_envelope(&envelope).map_err(fail)?)
        }
        TransactionAggregate::STREAM_TYPE => {
            AnyEvent::Transaction(TransactionEvent::from_envelope(&envelope).map_err(fail)?)
        }
        _ => AnyEvent::Other,
    })
}

/// Decodes a stream's events into one aggregate's events.
pub fn decode_stream<E: DomainEvent>(events: &[RecordedEvent]) -> Result<Vec<E>> {
    events
        .iter()
        .map(|event| {
            E::from_envelope(&envelope(event))
                .map_err(|source| ProjectionError::Decode { global_position: event.global_position, source })
        })
        .collect()
}
