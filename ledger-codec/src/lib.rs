//! The codec between the domain and the store: decided domain events become the envelopes
//! an append carries ([`stream_append`], [`new_event`]), and stored envelopes become domain
//! events again ([`decode`], [`decode_recorded`]), older payloads upcast on the way. The
//! command side and the projections both use it; neither depends on the other.

use ledger_core::access::{ApiKeyAggregate, ApiKeyEvent};
use ledger_core::employee::{EmployeeAggregate, EmployeeEvent};
use ledger_core::notification::{NotificationAggregate, NotificationEvent};
use ledger_core::organization::{OrganizationAggregate, OrganizationEvent};
use ledger_core::payroll::{PayrollRunAggregate, PayrollRunEvent};
use ledger_core::schedule::{PayCalendarAggregate, PayCalendarEvent};
use ledger_core::transaction::{TransactionAggregate, TransactionEvent};
use ledger_core::wallet::{WalletAggregate, WalletEvent};
use ledger_core::{Aggregate, DomainEvent};
use ledger_store::{ExpectedVersion, NewEvent, Payload, RecordedEvent, StreamAppend};
use uuid::Uuid;

/// A stored event that does not decode, with its position in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event at position {global_position} does not decode: {source}")]
pub struct DecodeFailed {
    pub global_position: i64,
    #[source]
    pub source: ledger_core::DecodeError,
}

pub type Result<T> = std::result::Result<T, DecodeFailed>;

/// A decoded event of any aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    Organization(OrganizationEvent),
    Employee(EmployeeEvent),
    Wallet(WalletEvent),
    PayrollRun(PayrollRunEvent),
    PayCalendar(PayCalendarEvent),
    Transaction(TransactionEvent),
    ApiKey(ApiKeyEvent),
    Notification(NotificationEvent),
    /// A stream type the domain does not know (written by another tool): only the audit log
    /// records it.
    Other,
}

fn decode_one<E: DomainEvent>(event: &RecordedEvent) -> std::result::Result<E, ledger_core::DecodeError> {
    E::decode_text(&event.event_type, event.schema_version, event.payload.text())
}

/// Decodes one stored event, upcasting older payloads.
pub fn decode(event: &RecordedEvent) -> Result<AnyEvent> {
    let fail = |source| DecodeFailed { global_position: event.global_position, source };
    Ok(match event.stream_type.as_str() {
        OrganizationAggregate::STREAM_TYPE => {
            AnyEvent::Organization(decode_one::<OrganizationEvent>(event).map_err(fail)?)
        }
        EmployeeAggregate::STREAM_TYPE => AnyEvent::Employee(decode_one::<EmployeeEvent>(event).map_err(fail)?),
        WalletAggregate::STREAM_TYPE => AnyEvent::Wallet(decode_one::<WalletEvent>(event).map_err(fail)?),
        PayrollRunAggregate::STREAM_TYPE => AnyEvent::PayrollRun(decode_one::<PayrollRunEvent>(event).map_err(fail)?),
        PayCalendarAggregate::STREAM_TYPE => {
            AnyEvent::PayCalendar(decode_one::<PayCalendarEvent>(event).map_err(fail)?)
        }
        TransactionAggregate::STREAM_TYPE => {
            AnyEvent::Transaction(decode_one::<TransactionEvent>(event).map_err(fail)?)
        }
        ApiKeyAggregate::STREAM_TYPE => AnyEvent::ApiKey(decode_one::<ApiKeyEvent>(event).map_err(fail)?),
        NotificationAggregate::STREAM_TYPE => {
            AnyEvent::Notification(decode_one::<NotificationEvent>(event).map_err(fail)?)
        }
        _ => AnyEvent::Other,
    })
}

/// Decodes a stream's events into one aggregate's events.
pub fn decode_stream<E: DomainEvent>(events: &[RecordedEvent]) -> Result<Vec<E>> {
    events.iter().map(decode_recorded).collect()
}

/// One recorded event as its aggregate's event; a failure names the event's position.
pub fn decode_recorded<E: DomainEvent>(event: &RecordedEvent) -> Result<E> {
    decode_one::<E>(event).map_err(|source| DecodeFailed { global_position: event.global_position, source })
}

/// One stream's part of an append, from decided events: `version` is the stream's current
/// version (0 for a new stream), which the append expects exactly.
pub fn stream_append<A: Aggregate>(
    organization_id: Uuid,
    stream_id: Uuid,
    version: u64,
    events: &[A::Event],
) -> StreamAppend {
    StreamAppend {
        organization_id,
        stream_type: A::STREAM_TYPE.to_owned(),
        stream_id,
        expected_version: expected_version(version),
        events: events.iter().map(new_event).collect(),
    }
}

/// What an append expects of a stream now at `version` (0: no stream yet).
pub fn expected_version(version: u64) -> ExpectedVersion {
    if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) }
}

/// One decided event, encoded for appending.
pub fn new_event<E: DomainEvent>(event: &E) -> NewEvent {
    let encoded = event.encode();
    NewEvent::with_payload(encoded.event_type, encoded.schema_version, Payload::from_raw(encoded.payload))
}

/// The domain's personal data, as the store seals and erases it: the store of every ledger
/// carries it (`EventStore::with_personal_data`).
pub const PERSONAL_DATA: ledger_store::vault::PersonalDataPolicy = ledger_store::vault::PersonalDataPolicy {
    sealed: ledger_core::employee::PERSONAL_FIELDS,
    erasures: ledger_core::employee::ERASURE_EVENTS,
};
