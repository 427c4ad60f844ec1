//! Upcasting: old payload shapes are brought to today's on read, one version step at a time,
//! so that history written years ago still loads. The log itself is never rewritten.

use serde_json::Value;

use crate::error::DecodeError;

/// Event types whose payload is past version 1, with their current version. Every other
/// event type is at version 1.
const CURRENT_VERSIONS: &[(&str, i32)] = &[("EmployeeHired", 2)];

type Step = fn(Value) -> Result<Value, String>;

/// `(event type, from version)` to the function that lifts it one version up.
const STEPS: &[(&str, i32, Step)] = &[("EmployeeHired", 1, employee_hired_v1_to_v2)];

pub fn current_schema_version(event_type: &str) -> i32 {
    CURRENT_VERSIONS.iter().find(|(name, _)| *name == event_type).map_or(1, |(_, version)| *version)
}

/// Lifts `payload` from `version` to the current version of `event_type`.
pub fn upcast(event_type: &str, version: i32, mut payload: Value) -> Result<Value, DecodeError> {
    let current = current_schema_version(event_type);
    if version > current {
        return Err(DecodeError::FutureVersion { event_type: event_type.to_owned(), found: version, current });
    }
    for from in version..current {
        let step = STEPS
            .iter()
            .find(|(name, step_from, _)| *name == event_type && *step_from == from)
            .map(|(_, _, step)| *step)
            .unwrap_or_else(|| panic!("no upcaster from {event_type} v{from}"));
        payload = step(payload).map_err(|problem| DecodeError::Payload {
            event_type: event_type.to_owned(),
            version: from,
            problem,
        })?;
    }
    Ok(payload)
}

/// Version 1 of `EmployeeHired` carried the person's `name` and `email` at the top level,
/// mixed with payroll facts. Version 2 keeps personal data in one `personal` field of its
/// own, so that it can be encrypted per person and erased by deleting the key.
fn employee_hired_v1_to_v2(payload: Value) -> Result<Value, String> {
    let Value::Object(mut fields) = payload else { return Err("payload is not an object".to_owned()) };
    let name = fields.remove("name").ok_or("v1 payload has no name")?;
    let email = fields.remove("email").unwrap_or(Value::Null);
    // Read after the person's erasure, the clear fields come marked erased: so is `personal`.
    let personal = match name {
        Value::Object(erased) if erased.contains_key("erased") => Value::Object(erased),
        name => serde_json::json!({ "full_name": name, "email": email, "address": null }),
    };
    fields.insert("personal".to_owned(), personal);
    Ok(Value::Object(fields))
}
