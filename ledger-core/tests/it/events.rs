//! The catalog: stable names, encoding, and upcasting of old payloads.

use ledger_core::employee::EmployeeEvent;
use ledger_core::{DecodeError, DomainEvent, EVENT_CATALOG};
use serde_json::json;

use crate::{day, employee_id, hired, monthly};

#[test]
fn an_event_is_encoded_as_its_type_version_and_payload_and_decodes_back() {
    let events = hired(employee_id(1), monthly("5000.00"), day(2026, 1, 1));
    let encoded = events[0].encode();
    assert_eq!(encoded.event_type, "EmployeeHired");
    assert_eq!(encoded.schema_version, 2);
    let payload: serde_json::Value = serde_json::from_str(encoded.payload.get()).unwrap();
    assert!(payload.is_object() && payload.get("event_type").is_none(), "{payload}");
    assert_eq!(EmployeeEvent::decode_text("EmployeeHired", 2, encoded.payload.get()).unwrap(), events[0]);
    assert_eq!(EmployeeEvent::decode("EmployeeHired", 2, &payload).unwrap(), events[0]);
    let kyc = events[1].encode();
    assert_eq!((kyc.event_type.as_str(), kyc.schema_version), ("EmployeeKycStatusChanged", 1));
}

/// `EmployeeHired` as version 1 wrote it, before personal data had a field of its own.
const EMPLOYEE_HIRED_V1: &str = r#"{
    "employee_id": "00000000-0000-0000-0000-00000000e001",
    "organization_id": "00000000-0000-0000-0000-00000000000a",
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "position": "Engineer",
    "department": "R&D",
    "rate": { "amount": { "amount": "5000.00", "currency": { "code": "USD", "scale": 2 } }, "basis": "monthly" },
    "pay_frequency": "monthly",
    "start_date": "2026-01-01"
}"#;

#[test]
fn a_version_1_payload_still_decodes_into_todays_event() {
    let payload: serde_json::Value = serde_json::from_str(EMPLOYEE_HIRED_V1).unwrap();
    let event = EmployeeEvent::decode("EmployeeHired", 1, &payload).unwrap();
    let today = hired(employee_id(1), monthly("5000.00"), day(2026, 1, 1)).remove(0);
    assert_eq!(event, today);
    // Decoded from the stored text, as readers of the store do.
    assert_eq!(EmployeeEvent::decode_text("EmployeeHired", 1, EMPLOYEE_HIRED_V1).unwrap(), today);
}

#[test]
fn a_version_1_payload_read_after_erasure_decodes_as_erased() {
    let mut payload: serde_json::Value = serde_json::from_str(EMPLOYEE_HIRED_V1).unwrap();
    let erased = json!({ "erased": { "at": "2033-01-31T00:00:00Z" } });
    payload["name"] = erased.clone();
    payload["email"] = erased;
    let EmployeeEvent::EmployeeHired { personal, position, .. } =
        EmployeeEvent::decode("EmployeeHired", 1, &payload).unwrap()
    else {
        panic!("a hire")
    };
    assert!(matches!(personal, ledger_core::employee::Personal::Erased { erased } if erased.at.is_some()));
    assert_eq!(position, "Engineer");
}

#[test]
fn unknown_types_future_versions_and_bad_payloads_are_decode_errors() {
    assert!(matches!(EmployeeEvent::decode("EmployeeTeleported", 1, &json!({})), Err(DecodeError::UnknownType(_))));
    assert!(matches!(
        EmployeeEvent::decode("EmployeeHired", 3, &json!({})),
        Err(DecodeError::FutureVersion { found: 3, current: 2, .. })
    ));
    let bad = json!({ "end_date": "soon" });
    assert!(matches!(EmployeeEvent::decode("EmployeeTerminated", 1, &bad), Err(DecodeError::Payload { .. })));
    assert!(matches!(
        EmployeeEvent::decode_text("EmployeeTerminated", 1, r#"{"end_date":"soon"}"#),
        Err(DecodeError::Payload { .. })
    ));
    assert!(matches!(EmployeeEvent::decode_text("EmployeeTeleported", 1, "{}"), Err(DecodeError::UnknownType(_))));
    assert!(matches!(
        EmployeeEvent::decode_text("EmployeeHired", 3, "{}"),
        Err(DecodeError::FutureVersion { found: 3, current: 2, .. })
    ));
}

#[test]
fn the_catalog_names_each_event_type_once() {
    let mut names: Vec<&str> = EVENT_CATALOG.iter().flat_map(|(_, types)| types.iter().copied()).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count);
    assert_eq!(count, 52);
    let streams: Vec<&str> = EVENT_CATALOG.iter().map(|(stream, _)| *stream).collect();
    assert_eq!(
        streams,
        vec![
            "organization",
            "employee",
            "wallet",
            "payroll_run",
            "pay_schedule",
            "transaction",
            "api_key",
            "notification"
        ]
    );
}
