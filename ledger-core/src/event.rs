//! The event catalog's plumbing: aggregates, envelopes and upcasting.
//!
//! Each aggregate's events are one serde enum, adjacently tagged: the tag is the persisted
//! event type name (`EmployeeHired`), the content is the payload. Names are persisted for
//! ever: never rename one; add a schema version and an upcaster instead.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{DecodeError, DomainError};

/// A consistency boundary: its state is folded from its own stream's events.
pub trait Aggregate {
    /// The persisted stream type name, e.g. `employee`.
    const STREAM_TYPE: &'static str;
    type State: Default + Clone + std::fmt::Debug + Send + Sync + 'static;
    type Command;
    type Event: DomainEvent;

    /// Pure and synchronous: what happens when `command` meets `state`.
    fn decide(state: &Self::State, command: Self::Command) -> Result<Vec<Self::Event>, DomainError>;

    /// Folds one event into the state. Never fails: events are facts.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// [`Aggregate::evolve`] with an event the caller is done with: an aggregate may move
    /// the event's data into its state instead of copying it (a run's calculated items).
    fn evolve_owned(state: Self::State, event: Self::Event) -> Self::State {
        Self::evolve(state, &event)
    }

    /// The state after `events`, from the start.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        events.into_iter().fold(Self::State::default(), Self::evolve)
    }
}

/// An event encoded for appending: the payload is JSON text serialized straight from the
/// event, with no `serde_json::Value` tree in between (a run's calculation is megabytes).
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Box<RawValue>,
}

const TAG: &str = "event_type";
const CONTENT: &str = "payload";

/// An aggregate's event enum, `#[serde(tag = "event_type", content = "payload")]`.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + std::fmt::Debug + PartialEq {
    /// Every event type name of the enum, for the catalog.
    const EVENT_TYPES: &'static [&'static str];

    /// The event's type, schema version and payload text, to append: its payload object,
    /// keys in the event's field order.
    fn encode(&self) -> EncodedEvent {
        #[derive(Deserialize)]
        struct Tagged<'a> {
            #[serde(borrow)]
            event_type: Cow<'a, str>,
            #[serde(borrow, default)]
            payload: Option<&'a RawValue>,
        }
        let text = serde_json::to_string(self).expect("events serialize");
        let tagged: Tagged<'_> = serde_json::from_str(&text).expect("an event serializes to its tag and content");
        let payload = match tagged.payload {
            Some(payload) => payload.to_owned(),
            None => RawValue::from_string("{}".to_owned()).expect("an empty object is JSON"),
        };
        assert!(payload.get().starts_with('{'), "{}'s payload is an object", tagged.event_type);
        let schema_version = crate::upcast::current_schema_version(&tagged.event_type);
        EncodedEvent { event_type: tagged.event_type.into_owned(), schema_version, payload }
    }

    /// The event from a stored type, version and payload text. A payload of today's
    /// version is parsed straight into the event; an older one through a JSON value, to be
    /// upcast.
    fn decode_text(event_type: &str, schema_version: i32, payload: &str) -> Result<Self, DecodeError> {
        if !Self::EVENT_TYPES.contains(&event_type) {
            return Err(DecodeError::UnknownType(event_type.to_owned()));
        }
        let problem = |error: serde_json::Error| DecodeError::Payload {
            event_type: event_type.to_owned(),
            version: schema_version,
            problem: error.to_string(),
        };
        if schema_version != crate::upcast::current_schema_version(event_type) {
            let value: Value = serde_json::from_str(payload).map_err(problem)?;
            return Self::decode(event_type, schema_version, &value);
        }
        let tag = serde_json::to_string(event_type).expect("a string serializes");
        let tagged = format!("{{\"{TAG}\":{tag},\"{CONTENT}\":{payload}}}");
        serde_json::from_str(&tagged).map_err(problem)
    }

    /// The event from a stored type, version and payload. A payload of today's version is
    /// decoded where it lies (a run's calculation can be megabytes); an older one is
    /// upcast first.
    fn decode(event_type: &str, schema_version: i32, payload: &Value) -> Result<Self, DecodeError> {
        if !Self::EVENT_TYPES.contains(&event_type) {
            return Err(DecodeError::UnknownType(event_type.to_owned()));
        }
        let upcast;
        let payload = if schema_version == crate::upcast::current_schema_version(event_type) {
            payload
        } else {
            upcast = crate::upcast::upcast(event_type, schema_version, payload.clone())?;
            &upcast
        };
        let tag = Value::String(event_type.to_owned());
        let tagged = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(
            [(TAG, &tag), (CONTENT, payload)].into_iter(),
        );
        Self::deserialize(tagged).map_err(|error| DecodeError::Payload {
            event_type: event_type.to_owned(),
            version: schema_version,
            problem: error.to_string(),
        })
    }
}
