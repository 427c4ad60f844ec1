//! The envelopes the store reads and writes. The store knows events only as a type name,
//! a JSON payload and metadata; it knows nothing of payroll.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the writer believes the stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this one.
    Exact(u64),
    /// Append after whatever is there (the stream is locked, so versions stay contiguous).
    Any,
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::NoStream => formatter.write_str("no stream"),
            ExpectedVersion::Exact(version) => write!(formatter, "version {version}"),
            ExpectedVersion::Any => formatter.write_str("any version"),
        }
    }
}

/// One event to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub event_id: Uuid,
    /// The persisted type name, e.g. `EmployeeHired`. Never renamed once written.
    pub event_type: String,
    /// The version of the payload's shape, for upcasting on read. Starts at 1.
    pub schema_version: i32,
    /// A JSON object, as text.
    pub payload: Payload,
}

impl NewEvent {
    /// An event with a fresh id (see [`NewEvent::with_payload`]).
    pub fn new(event_type: impl Into<String>, schema_version: i32, payload: serde_json::Value) -> Self {
        NewEvent::with_payload(event_type, schema_version, Payload::from(payload))
    }

    /// An event with a fresh id, its payload already JSON text. The id is a UUID v7 (time
    /// first, then 74 random bits): ids made one after another sort together, so the log's
    /// unique index on `event_id` grows at its end like the position's, instead of touching
    /// a random page of a large index per event (and writing that page whole to the WAL the
    /// first time after each checkpoint).
    pub fn with_payload(event_type: impl Into<String>, schema_version: i32, payload: Payload) -> Self {
        NewEvent { event_id: Uuid::now_v7(), event_type: event_type.into(), schema_version, payload }
    }
}

/// The events of one stream within an append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamAppend {
    pub organization_id: Uuid,
    /// The persisted stream type name, e.g. `employee`. Never renamed once written.
    pub stream_type: String,
    pub stream_id: Uuid,
    pub expected_version: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// Who did it and why; shared by every event of one append and stored with each.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The acting user, API key or system component. Required.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Written by the store from the request; callers leave it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Anything else worth keeping (an API key id, a client address).
    #[serde(default, flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Metadata {
    pub fn by(actor: impl Into<String>) -> Self {
        Metadata { actor: actor.into(), ..Metadata::default() }
    }
}

/// One atomic append: all of its events are written, or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppendRequest {
    pub streams: Vec<StreamAppend>,
    pub metadata: Metadata,
    /// A retry with the same key and the same request returns the first result and appends
    /// nothing; the same key with a different request is an error.
    pub idempotency_key: Option<String>,
    /// What "the same request" means for the key: by default a hash of the events (without
    /// their ids); a caller that decides events from a request of its own (an HTTP body)
    /// passes that request's hash instead, so that a retry is recognized before deciding.
    pub fingerprint: Option<Vec<u8>>,
}

impl AppendRequest {
    /// A request for a single stream.
    pub fn single(stream: StreamAppend, metadata: Metadata) -> Self {
        AppendRequest { streams: vec![stream], metadata, idempotency_key: None, fingerprint: None }
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|stream| stream.events.len()).sum()
    }
}

/// An append of one stream whose events are produced while they are written
/// ([`crate::EventStore::append_streamed`]): a payroll run's calculation at 100,000 employees
/// is 70 MB of payloads that need never be in memory at once.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamedAppend {
    pub organization_id: Uuid,
    pub stream_type: String,
    pub stream_id: Uuid,
    pub expected_version: ExpectedVersion,
    pub metadata: Metadata,
    pub idempotency_key: Option<String>,
    /// Required with a key: the events are not known before they are written, so the caller
    /// says what "the same request" is (an HTTP request's hash).
    pub fingerprint: Option<Vec<u8>>,
}

/// A stream's last version after an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHead {
    pub stream_id: Uuid,
    pub version: u64,
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The global positions written, ascending.
    pub positions: Vec<i64>,
    /// Each stream's last version, in request order.
    pub streams: Vec<StreamHead>,
    /// True when this is the stored result of an earlier request with the same
    /// idempotency key: nothing was appended this time.
    #[serde(skip)]
    pub replayed: bool,
}

impl AppendResult {
    /// The highest position written; reads that wait for projections wait for this one.
    pub fn last_position(&self) -> i64 {
        self.positions.last().copied().unwrap_or(0)
    }
}

/// Where a reader of the whole log stands: after this transaction id and position, in
/// `(transaction_id, global_position)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub transaction_id: u64,
    pub global_position: i64,
}

impl Checkpoint {
    /// Before the first event.
    pub const START: Checkpoint = Checkpoint { transaction_id: 0, global_position: 0 };
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub global_position: i64,
    pub transaction_id: u64,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub stream_type: String,
    pub stream_id: Uuid,
    pub stream_version: u64,
    pub event_type: String,
    /// The payload's shape version as written; the domain upcasts older ones on read.
    pub schema_version: i32,
    pub payload: Payload,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
    #[serde(with = "hex_bytes_option")]
    pub prev_hash: Option<Vec<u8>>,
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
}

/// A payload as JSON text: as the writer serialized it, or as PostgreSQL returned it (jsonb's
/// canonical form). Parsed only by whoever reads it: into the domain's types directly,
/// without an intermediate `serde_json::Value` (a tree of maps several times the text's
/// size), or into a `Value` on request.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<serde_json::value::RawValue>);

impl Payload {
    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// The payload as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).expect("a stored payload is JSON")
    }

    /// JSON text already checked to be JSON.
    pub fn from_raw(raw: Box<serde_json::value::RawValue>) -> Payload {
        Payload(raw)
    }

    /// The JSON text as a raw value, for serializing it verbatim.
    pub fn raw(&self) -> &serde_json::value::RawValue {
        &self.0
    }

    /// Whether the text is a JSON object.
    pub fn is_object(&self) -> bool {
        self.text().trim_start().starts_with('{')
    }

    pub(crate) fn from_text(text: String) -> Result<Payload, serde_json::Error> {
        serde_json::value::RawValue::from_string(text).map(Payload)
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Payload {
        Payload(serde_json::value::to_raw_value(&value).expect("a JSON value serializes"))
    }
}

/// Two payloads are equal when their texts are: PostgreSQL returns jsonb in one canonical
/// form (payloads to append with keys in another order are not equal, though they store the
/// same jsonb).
impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.text() == other.text()
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.text())
    }
}

impl RecordedEvent {
    /// The checkpoint just after this event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { transaction_id: self.transaction_id, global_position: self.global_position }
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

mod hex_bytes_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, serializer: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_some(&hex::encode(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| hex::decode(text).map_err(serde::de::Error::custom)).transpose()
    }
}
