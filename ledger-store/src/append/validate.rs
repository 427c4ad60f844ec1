//! Step 1 of an append: the request is well formed, or [`StoreError::Invalid`] names the
//! field and nothing is written. A streamed append checks each event as it comes.

use std::collections::HashSet;

use uuid::Uuid;

use super::{APPEND_EVENTS_MAX, IDEMPOTENCY_KEY_BYTES_MAX};
use crate::error::{Result, StoreError};
use crate::event::{AppendRequest, Metadata, NewEvent, StreamAppend};

pub(super) fn validate(request: &AppendRequest) -> Result<()> {
    if request.streams.is_empty() {
        return Err(StoreError::invalid("streams", "an append needs at least one stream"));
    }
    let event_count = request.event_count();
    if event_count > APPEND_EVENTS_MAX {
        return Err(StoreError::invalid(
            "streams",
            format!("{event_count} events exceed the limit of {APPEND_EVENTS_MAX} per append"),
        ));
    }
    validate_envelope(&request.metadata, request.idempotency_key.as_deref(), request.fingerprint.as_deref())?;
    let mut stream_ids = HashSet::with_capacity(request.streams.len());
    let mut event_ids = HashSet::with_capacity(event_count);
    for (stream_index, stream) in request.streams.iter().enumerate() {
        validate_stream(stream_index, stream)?;
        if !stream_ids.insert(stream.stream_id) {
            return Err(StoreError::invalid(
                format!("streams[{stream_index}].stream_id"),
                format!("stream {} appears twice in one append", stream.stream_id),
            ));
        }
        for (event_index, event) in stream.events.iter().enumerate() {
            if !event_ids.insert(event.event_id) {
                return Err(StoreError::invalid(
                    format!("streams[{stream_index}].events[{event_index}].event_id"),
                    format!("event id {} appears twice", event.event_id),
                ));
            }
        }
    }
    Ok(())
}

/// What every append needs besides its events: who acts, and a well-formed key.
pub(super) fn validate_envelope(
    metadata: &Metadata,
    idempotency_key: Option<&str>,
    fingerprint: Option<&[u8]>,
) -> Result<()> {
    if metadata.actor.trim().is_empty() {
        return Err(StoreError::invalid("metadata.actor", "must name who acts"));
    }
    if fingerprint.is_some_and(|fingerprint| fingerprint.is_empty()) {
        return Err(StoreError::invalid("fingerprint", "must not be empty"));
    }
    if let Some(key) = idempotency_key
        && (key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX)
    {
        return Err(StoreError::invalid(
            "idempotency_key",
            format!("must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes long"),
        ));
    }
    Ok(())
}

fn validate_stream(stream_index: usize, stream: &StreamAppend) -> Result<()> {
    validate_target(stream_index, stream)?;
    if stream.events.is_empty() {
        return Err(StoreError::invalid(
            format!("streams[{stream_index}].events"),
            "a stream in an append needs at least one event",
        ));
    }
    for (event_index, event) in stream.events.iter().enumerate() {
        validate_event(stream_index, event_index, event)?;
    }
    Ok(())
}

/// A stream's identity, without its events.
pub(super) fn validate_target(stream_index: usize, stream: &StreamAppend) -> Result<()> {
    let field = |name: &str| format!("streams[{stream_index}].{name}");
    if stream.stream_id.is_nil() {
        return Err(StoreError::invalid(field("stream_id"), "must not be the nil uuid"));
    }
    if stream.organization_id.is_nil() {
        return Err(StoreError::invalid(field("organization_id"), "must not be the nil uuid"));
    }
    if stream.stream_type.trim().is_empty() {
        return Err(StoreError::invalid(field("stream_type"), "must not be empty"));
    }
    Ok(())
}

fn validate_event(stream_index: usize, event_index: usize, event: &NewEvent) -> Result<()> {
    let field = |name: &str| format!("streams[{stream_index}].events[{event_index}].{name}");
    if event.event_id.is_nil() {
        return Err(StoreError::invalid(field("event_id"), "must not be the nil uuid"));
    }
    if event.event_type.trim().is_empty() {
        return Err(StoreError::invalid(field("event_type"), "must not be empty"));
    }
    if event.schema_version < 1 {
        return Err(StoreError::invalid(
            field("schema_version"),
            format!("must be 1 or more, not {}", event.schema_version),
        ));
    }
    if !event.payload.is_object() {
        return Err(StoreError::invalid(field("payload"), "must be a JSON object"));
    }
    Ok(())
}

/// A streamed source's event, checked as the `count`th of its append.
pub(super) fn checked_event(event: NewEvent, count: usize, event_ids: &mut HashSet<Uuid>) -> Result<NewEvent> {
    validate_event(0, count, &event)?;
    if !event_ids.insert(event.event_id) {
        return Err(StoreError::invalid(
            format!("streams[0].events[{count}].event_id"),
            format!("event id {} appears twice", event.event_id),
        ));
    }
    if count == APPEND_EVENTS_MAX {
        return Err(StoreError::invalid(
            "streams",
            format!("more than {APPEND_EVENTS_MAX} events: the limit of one append"),
        ));
    }
    Ok(event)
}
