use std::collections::BTreeSet;

use ledger_core::EVENT_CATALOG;
use ledger_projections::projections::all;

#[test]
fn every_event_type_is_handled_by_the_audit_log_and_by_a_read_model() {
    let catalog: BTreeSet<&str> = EVENT_CATALOG.iter().flat_map(|(_, types)| types.iter().copied()).collect();
    let projections = all();
    let audit = projections.iter().find(|projection| projection.name() == "compliance").unwrap();
    let audited: BTreeSet<&str> = audit.event_types().into_iter().collect();
    assert_eq!(audited, catalog, "the audit log records every event type");
    // The employee's pay records: the payroll projection's `paid_earnings` shows the same
    // facts from the runs' own events (an item paid, reversed, refused by the rail).
    let shown_from_run_events = ["EmployeePaid", "EmployeePayTakenBack"];
    for event_type in catalog.iter().filter(|event_type| !shown_from_run_events.contains(event_type)) {
        let handlers: Vec<&str> = projections
            .iter()
            .filter(|projection| projection.name() != "compliance" && projection.event_types().contains(event_type))
            .map(|projection| projection.name())
            .collect();
        assert!(!handlers.is_empty(), "{event_type} changes no read model besides the audit log: give it a projection");
    }
    for projection in &projections {
        for event_type in projection.event_types() {
            assert!(
                catalog.contains(event_type),
                "{} handles {event_type}, which is not in the catalog",
                projection.name()
            );
        }
    }
}
