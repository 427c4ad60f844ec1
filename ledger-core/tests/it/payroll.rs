use ledger_core::Aggregate;
use ledger_core::DomainError;
use ledger_core::DomainEvent;
use ledger_core::calendar::PayFrequency;
use ledger_core::employee::EmployeeAggregate;
use ledger_core::gross_to_net::ItemInput;
use ledger_core::ids::{PayScheduleId, PayrollRunId, TransactionId};
use ledger_core::money::Currency;
use ledger_core::payroll::{
    CALCULATION_CHUNK_ITEMS, Calculation, ItemStatus, PayrollRunAggregate, PayrollRunCommand, PayrollRunEvent, RunKind,
    RunStatus,
};
use uuid::Uuid;

use crate::{day, employee_id, hired, january, monthly, organization_id, usd, when};

type Run = PayrollRunAggregate;

fn create(kind: RunKind) -> PayrollRunCommand {
    PayrollRunCommand::Create {
        payroll_run_id: PayrollRunId::from_uuid(Uuid::from_u128(0x99)),
        organization_id: organization_id(),
        period: january(),
        pay_date: None,
        frequency: PayFrequency::Monthly,
        currency: Currency::usd(),
        pay_schedule_id: matches!(kind, RunKind::Regular).then(|| PayScheduleId::from_uuid(Uuid::from_u128(0x5c))),
        kind,
        actor: "alice".into(),
    }
}

/// Two employees: one with approved KYC (5,000.00), one still pending (3,000.00).
fn inputs() -> Vec<ItemInput> {
    let approved = EmployeeAggregate::fold(&hired(employee_id(1), monthly("5000.00"), day(2025, 1, 1))).unwrap();
    let mut pending_events = hired(employee_id(2), monthly("3000.00"), day(2025, 1, 1));
    pending_events.pop();
    let pending = EmployeeAggregate::fold(&pending_events).unwrap();
    vec![ItemInput { employee: approved, paid_periods: vec![] }, ItemInput { employee: pending, paid_periods: vec![] }]
}

fn calculate(actor: &str) -> PayrollRunCommand {
    PayrollRunCommand::Calculate { inputs: inputs().into(), rules: vec![], actor: actor.into() }
}

fn step(events: &mut Vec<PayrollRunEvent>, command: PayrollRunCommand) {
    let new = when::<Run>(events, command).unwrap_or_else(|error| panic!("{error}"));
    events.extend(new);
}

fn transaction(n: u128) -> TransactionId {
    TransactionId::from_uuid(Uuid::from_u128(0x7000 + n))
}

/// A run approved by bob and processing.
fn processing() -> Vec<PayrollRunEvent> {
    let mut events = Vec::new();
    step(&mut events, create(RunKind::Regular));
    step(&mut events, calculate("alice"));
    step(&mut events, PayrollRunCommand::Approve { actor: "bob".into() });
    step(&mut events, PayrollRunCommand::StartProcessing { actor: "alice".into() });
    events
}

#[test]
fn the_whole_lifecycle_from_draft_to_completed() {
    let mut events = processing();
    let run = Run::fold(&events).unwrap();
    assert_eq!(run.status, RunStatus::Processing);
    assert_eq!(run.totals.gross, usd("8000.00"));
    assert_eq!(run.totals.items, 2);
    assert!(matches!(run.items[&employee_id(2)].status, ItemStatus::Held { .. }));

    step(&mut events, PayrollRunCommand::MarkItemPaid { employee_id: employee_id(1), transaction_id: transaction(1) });
    step(&mut events, PayrollRunCommand::Complete);
    let run = Run::fold(&events).unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert!(matches!(events.last(), Some(PayrollRunEvent::PayrollRunCompleted { paid: 1, failed: 0, held: 1, .. })));
}

#[test]
fn the_approver_must_not_be_the_submitter() {
    let mut events = Vec::new();
    step(&mut events, create(RunKind::Regular));
    step(&mut events, calculate("carol"));
    let by_creator = when::<Run>(&events, PayrollRunCommand::Approve { actor: "alice".into() });
    assert_eq!(by_creator, Err(DomainError::SelfApproval { actor: "alice".into() }));
    let by_calculator = when::<Run>(&events, PayrollRunCommand::Approve { actor: "carol".into() });
    assert_eq!(by_calculator, Err(DomainError::SelfApproval { actor: "carol".into() }));
    assert!(when::<Run>(&events, PayrollRunCommand::Approve { actor: "bob".into() }).is_ok());
}

#[test]
fn a_run_recalculates_until_approved_and_not_after() {
    let mut events = Vec::new();
    step(&mut events, create(RunKind::Regular));
    let early = when::<Run>(&events, PayrollRunCommand::Approve { actor: "bob".into() });
    assert!(matches!(early, Err(DomainError::WrongStatus { action: "approve", .. })));
    step(&mut events, calculate("alice"));
    step(&mut events, calculate("alice"));
    step(&mut events, PayrollRunCommand::Approve { actor: "bob".into() });
    let changed = when::<Run>(&events, calculate("alice"));
    assert!(matches!(changed, Err(DomainError::WrongStatus { action: "recalculate", .. })));
}

#[test]
fn paying_twice_or_paying_a_held_item_is_an_error() {
    let mut events = processing();
    step(&mut events, PayrollRunCommand::MarkItemPaid { employee_id: employee_id(1), transaction_id: transaction(1) });
    let twice = when::<Run>(
        &events,
        PayrollRunCommand::MarkItemPaid { employee_id: employee_id(1), transaction_id: transaction(2) },
    );
    assert_eq!(twice, Err(DomainError::AlreadyPaid { employee_id: employee_id(1) }));
    let held = when::<Run>(
        &events,
        PayrollRunCommand::MarkItemPaid { employee_id: employee_id(2), transaction_id: transaction(3) },
    );
    assert!(matches!(held, Err(DomainError::ItemHeld { .. })));
    let stranger = when::<Run>(
        &events,
        PayrollRunCommand::MarkItemPaid { employee_id: employee_id(9), transaction_id: transaction(4) },
    );
    assert!(matches!(stranger, Err(DomainError::NotFound { .. })));
}

#[test]
fn paying_before_processing_is_an_error() {
    let mut events = Vec::new();
    step(&mut events, create(RunKind::Regular));
    step(&mut events, calculate("alice"));
    step(&mut events, PayrollRunCommand::Approve { actor: "bob".into() });
    let early = when::<Run>(
        &events,
        PayrollRunCommand::MarkItemPaid { employee_id: employee_id(1), transaction_id: transaction(1) },
    );
    assert!(matches!(early, Err(DomainError::WrongStatus { .. })));
}

#[test]
fn a_failed_payment_makes_the_run_partially_failed_and_may_be_retried() {
    let mut events = processing();
    let early = when::<Run>(&events, PayrollRunCommand::Complete);
    assert!(matches!(early, Err(DomainError::Invalid { field, .. }) if field == "items"));
    step(
        &mut events,
        PayrollRunCommand::MarkItemFailed { employee_id: employee_id(1), reason: "rail rejected".into() },
    );
    let mut retried = events.clone();
    step(&mut retried, PayrollRunCommand::MarkItemPaid { employee_id: employee_id(1), transaction_id: transaction(2) });
    assert!(matches!(Run::fold(&retried).unwrap().items[&employee_id(1)].status, ItemStatus::Paid { .. }));
    step(&mut events, PayrollRunCommand::Complete);
    assert_eq!(Run::fold(&events).unwrap().status, RunStatus::PartiallyFailed);
}

#[test]
fn a_run_is_voided_before_payment_and_not_after() {
    let mut events = Vec::new();
    step(&mut events, create(RunKind::Regular));
    step(&mut events, calculate("alice"));
    let mut voided = events.clone();
    step(&mut voided, PayrollRunCommand::Void { reason: "wrong period".into(), actor: "alice".into() });
    assert_eq!(Run::fold(&voided).unwrap().status, RunStatus::Voided);
    assert!(when::<Run>(&voided, calculate("alice")).is_err());
    let late = when::<Run>(&processing(), PayrollRunCommand::Void { reason: "x".into(), actor: "alice".into() });
    assert!(matches!(late, Err(DomainError::WrongStatus { action: "void", .. })));
}

#[test]
fn a_paid_run_is_reversed_in_bounded_batches_that_negate_the_originals() {
    let mut events = processing();
    let early = when::<Run>(&events, PayrollRunCommand::Reverse { reason: "x".into(), actor: "bob".into() });
    assert!(matches!(early, Err(DomainError::WrongStatus { action: "reverse", .. })));
    step(&mut events, PayrollRunCommand::MarkItemPaid { employee_id: employee_id(1), transaction_id: transaction(1) });
    step(&mut events, PayrollRunCommand::Complete);
    step(&mut events, PayrollRunCommand::Reverse { reason: "paid the wrong month".into(), actor: "bob".into() });
    assert_eq!(Run::fold(&events).unwrap().status, RunStatus::Reversing);
    // Not closed while an item is still paid; the held item is not reversed (never paid).
    assert!(when::<Run>(&events, PayrollRunCommand::CompleteReversal).is_err());
    let held = when::<Run>(&events, PayrollRunCommand::ReverseItems { items: vec![(employee_id(2), transaction(9))] });
    assert!(matches!(held, Err(DomainError::Invalid { .. })));
    step(&mut events, PayrollRunCommand::ReverseItems { items: vec![(employee_id(1), transaction(2))] });
    let Some(PayrollRunEvent::PayrollItemsReversed { items }) = events.last() else { panic!("items reversed") };
    assert_eq!(items.len(), 1);
    assert_eq!((items[0].reverses_transaction_id, items[0].transaction_id), (transaction(1), Some(transaction(2))));
    assert_eq!(items[0].gross, usd("-5000.00"));
    assert_eq!(items[0].net, usd("-5000.00"));
    // Reversed once: a second batch naming the same item is refused.
    let twice = when::<Run>(&events, PayrollRunCommand::ReverseItems { items: vec![(employee_id(1), transaction(3))] });
    assert!(matches!(twice, Err(DomainError::Invalid { .. })));
    step(&mut events, PayrollRunCommand::CompleteReversal);
    let Some(PayrollRunEvent::PayrollRunReversed { items, reason, reversed_by }) = events.last() else { panic!() };
    assert!(items.is_empty(), "the closing event does not grow with the run");
    assert_eq!((reason.as_str(), reversed_by.as_str()), ("paid the wrong month", "bob"));
    assert_eq!(Run::fold(&events).unwrap().status, RunStatus::Reversed);
    assert!(when::<Run>(&events, PayrollRunCommand::Reverse { reason: "x".into(), actor: "bob".into() }).is_err());
}

#[test]
fn a_reversal_recorded_in_one_event_still_folds() {
    let mut events = processing();
    step(&mut events, PayrollRunCommand::MarkItemPaid { employee_id: employee_id(1), transaction_id: transaction(1) });
    step(&mut events, PayrollRunCommand::Complete);
    let legacy: PayrollRunEvent = serde_json::from_value(serde_json::json!({
        "event_type": "PayrollRunReversed",
        "payload": { "reason": "old", "reversed_by": "bob", "items": [{
            "employee_id": employee_id(1), "reverses_transaction_id": transaction(1),
            "gross": usd("-5000.00"), "deductions": usd("0.00"), "contributions": usd("0.00"), "net": usd("-5000.00")
        }] }
    }))
    .unwrap();
    events.push(legacy);
    let run = Run::fold(&events).unwrap();
    assert_eq!(run.status, RunStatus::Reversed);
    assert_eq!(run.items[&employee_id(1)].status, ItemStatus::Reversed { reversal: None });
}

#[test]
fn held_and_failed_items_are_released_and_a_refused_payment_fails_its_item() {
    let mut events = processing();
    step(&mut events, PayrollRunCommand::MarkItemPaid { employee_id: employee_id(1), transaction_id: transaction(1) });
    step(&mut events, PayrollRunCommand::Complete);
    assert_eq!(Run::fold(&events).unwrap().status, RunStatus::Completed);
    // The rail refuses the payment: the item fails, the run is partially failed.
    let wrong = PayrollRunCommand::FailPayment {
        employee_id: employee_id(1),
        transaction_id: transaction(7),
        reason: "rejected".into(),
    };
    assert!(matches!(when::<Run>(&events, wrong), Err(DomainError::Invalid { .. })));
    step(
        &mut events,
        PayrollRunCommand::FailPayment {
            employee_id: employee_id(1),
            transaction_id: transaction(1),
            reason: "rejected".into(),
        },
    );
    let run = Run::fold(&events).unwrap();
    assert_eq!(run.status, RunStatus::PartiallyFailed);
    assert!(matches!(run.items[&employee_id(1)].status, ItemStatus::Failed { .. }));
    // Both the failed item and the one held for KYC go back to pending; the run processes again.
    let release = |ids: Vec<u128>| PayrollRunCommand::ReleaseItems {
        employee_ids: ids.into_iter().map(employee_id).collect(),
        actor: "alice".into(),
    };
    assert!(matches!(when::<Run>(&events, release(vec![1, 1])), Err(DomainError::Invalid { .. })));
    step(&mut events, release(vec![1, 2]));
    let run = Run::fold(&events).unwrap();
    assert_eq!(run.status, RunStatus::Processing);
    assert!(run.items.values().all(|item| item.status == ItemStatus::Pending));
    // A pending item is not released again; it is paid once, by a new transaction.
    assert!(matches!(when::<Run>(&events, release(vec![1])), Err(DomainError::Invalid { .. })));
    step(&mut events, PayrollRunCommand::MarkItemPaid { employee_id: employee_id(1), transaction_id: transaction(3) });
    step(&mut events, PayrollRunCommand::MarkItemPaid { employee_id: employee_id(2), transaction_id: transaction(4) });
    let twice = when::<Run>(
        &events,
        PayrollRunCommand::MarkItemPaid { employee_id: employee_id(1), transaction_id: transaction(5) },
    );
    assert!(matches!(twice, Err(DomainError::AlreadyPaid { .. })));
    assert!(matches!(when::<Run>(&events, release(vec![1])), Err(DomainError::AlreadyPaid { .. })));
    step(&mut events, PayrollRunCommand::Complete);
    assert_eq!(Run::fold(&events).unwrap().status, RunStatus::Completed);
}

#[test]
fn an_off_cycle_run_needs_a_reason() {
    assert!(matches!(
        when::<Run>(&[], create(RunKind::OffCycle { reason: " ".into() })),
        Err(DomainError::Invalid { .. })
    ));
    let events = when::<Run>(&[], create(RunKind::OffCycle { reason: "bonus".into() })).unwrap();
    assert_eq!(Run::fold(&events).unwrap().kind, RunKind::OffCycle { reason: "bonus".into() });
}

#[test]
fn a_run_rejects_empty_duplicate_or_foreign_employees() {
    let events = when::<Run>(&[], create(RunKind::Regular)).unwrap();
    let empty = when::<Run>(
        &events,
        PayrollRunCommand::Calculate { inputs: Vec::new().into(), rules: vec![], actor: "alice".into() },
    );
    assert!(matches!(empty, Err(DomainError::Invalid { .. })));
    let mut twice = inputs();
    twice.push(twice[0].clone());
    let duplicate = when::<Run>(
        &events,
        PayrollRunCommand::Calculate { inputs: twice.into(), rules: vec![], actor: "alice".into() },
    );
    assert!(matches!(duplicate, Err(DomainError::Invalid { problem, .. }) if problem.contains("twice")));
    let mut foreign = inputs();
    foreign[0].employee.organization_id = ledger_core::ids::OrganizationId::from_uuid(Uuid::from_u128(0xbad));
    let other = when::<Run>(
        &events,
        PayrollRunCommand::Calculate { inputs: foreign.into(), rules: vec![], actor: "alice".into() },
    );
    assert!(matches!(other, Err(DomainError::Invalid { problem, .. }) if problem.contains("another organization")));
}

/// `n` employees with approved KYC, 3,000.00 a month each.
fn many_inputs(n: u128) -> Vec<ItemInput> {
    (1..=n)
        .map(|number| ItemInput {
            employee: EmployeeAggregate::fold(&hired(employee_id(number), monthly("3000.00"), day(2025, 1, 1)))
                .unwrap(),
            paid_periods: vec![],
        })
        .collect()
}

#[test]
fn a_calculation_is_recorded_as_bounded_chunks_then_a_header_with_the_totals() {
    let mut events = Vec::new();
    step(&mut events, create(RunKind::Regular));
    let calculate =
        PayrollRunCommand::Calculate { inputs: many_inputs(2_501).into(), rules: vec![], actor: "alice".into() };
    let recorded = when::<Run>(&events, calculate).unwrap();
    let chunks: Vec<(u32, usize)> = recorded
        .iter()
        .filter_map(|event| match event {
            PayrollRunEvent::PayrollItemsCalculated { chunk, items } => Some((*chunk, items.len())),
            _ => None,
        })
        .collect();
    assert_eq!(chunks, vec![(0, CALCULATION_CHUNK_ITEMS), (1, CALCULATION_CHUNK_ITEMS), (2, 501)]);
    let Some(PayrollRunEvent::PayrollRunCalculated { items, totals, .. }) = recorded.last() else {
        panic!("the header comes last: {:?}", recorded.last());
    };
    assert!(items.is_empty(), "the header carries no items");
    assert_eq!(totals.items, 2_501);
    assert_eq!(totals.gross, usd("7503000.00"));
    events.extend(recorded);
    let run = Run::fold(&events).unwrap();
    assert_eq!(run.status, RunStatus::Calculated);
    assert_eq!(run.items.len(), 2_501);
    assert!(run.calculating.is_empty());

    // A recalculation with fewer employees replaces every item, not only the first chunk's.
    let again =
        PayrollRunCommand::Calculate { inputs: many_inputs(1_200).into(), rules: vec![], actor: "alice".into() };
    step(&mut events, again);
    let run = Run::fold(&events).unwrap();
    assert_eq!(run.items.len(), 1_200);
    assert_eq!(run.totals.items, 1_200);
    assert!(!run.items.contains_key(&employee_id(1_201)));
    // Folding events the caller is done with moves the items and gives the same run.
    let moved = events.iter().cloned().fold(None, Run::evolve_owned);
    assert_eq!(moved.as_ref(), Some(&run));
    // Each item points at the chunk (by stream version) that records it whole.
    for (employee, kept) in &run.items {
        let PayrollRunEvent::PayrollItemsCalculated { items, .. } = &events[kept.recorded_at_version as usize - 1]
        else {
            panic!("version {} of the run is not a chunk", kept.recorded_at_version)
        };
        let item = items.iter().find(|item| item.employee_id == *employee).expect("the chunk holds the item");
        assert_eq!((kept.gross, kept.net), (item.gross.amount(), item.net.amount()));
    }
}

#[test]
fn a_calculation_streamed_one_employee_at_a_time_records_what_the_command_records() {
    let mut events = Vec::new();
    step(&mut events, create(RunKind::Regular));
    let run = Run::fold(&events).unwrap();
    let mut inputs = many_inputs(2_345);
    let mut calculation = Calculation::start(&run, vec![], "alice".into()).unwrap();
    let mut streamed = Vec::new();
    for input in &inputs {
        streamed.extend(calculation.add(input).unwrap());
    }
    assert_eq!(calculation.items(), 2_345);
    streamed.extend(calculation.finish().unwrap());
    // The command takes employees in any order; it records them by id.
    inputs.reverse();
    let command = PayrollRunCommand::Calculate { inputs: inputs.clone().into(), rules: vec![], actor: "alice".into() };
    assert_eq!(when::<Run>(&events, command).unwrap(), streamed);

    // Streamed, the order is the caller's to keep: one out of order is refused, naming both.
    let mut calculation = Calculation::start(&run, vec![], "alice".into()).unwrap();
    calculation.add(&inputs[0]).unwrap();
    let error = calculation.add(&inputs[1]).unwrap_err();
    assert!(error.to_string().contains("ascending id order"), "{error}");
    // Nothing to pay is refused at the end; a processing run refuses to start one.
    let empty = Calculation::start(&run, vec![], "alice".into()).unwrap().finish();
    assert!(matches!(empty, Err(DomainError::Invalid { problem, .. }) if problem.contains("not 0")));
    let processing = Run::fold(&processing()).unwrap();
    assert!(matches!(Calculation::start(&processing, vec![], "alice".into()), Err(DomainError::WrongStatus { .. })));
}

#[test]
fn a_calculation_recorded_before_chunks_existed_still_folds_with_its_items() {
    let mut events = Vec::new();
    step(&mut events, create(RunKind::Regular));
    let recorded = when::<Run>(&events, calculate("alice")).unwrap();
    let Some(PayrollRunEvent::PayrollItemsCalculated { items, .. }) = recorded.first() else { panic!("a chunk first") };
    let Some(PayrollRunEvent::PayrollRunCalculated { totals, calculated_by, .. }) = recorded.last() else {
        panic!("a header last")
    };
    // The stored shape of then: one event with every item.
    let legacy = serde_json::json!({ "items": items, "totals": totals, "calculated_by": calculated_by });
    let legacy = PayrollRunEvent::decode("PayrollRunCalculated", 1, &legacy).unwrap();
    events.push(legacy);
    let run = Run::fold(&events).unwrap();
    assert_eq!(run.status, RunStatus::Calculated);
    assert_eq!(run.items.len(), 2);
    assert!(matches!(run.items[&employee_id(2)].status, ItemStatus::Held { .. }));
    // Its items are recorded whole in the header itself.
    assert!(run.items.values().all(|item| item.recorded_at_version == events.len() as u64));
}

/// Who belongs in a run: whoever is employed on a day of its period; someone who left before
/// it only when an earlier paid period owes them a correction.
#[test]
fn a_run_owes_its_period_s_employees_and_leavers_only_a_correction() {
    use ledger_core::calendar::PayPeriod;
    use ledger_core::employee::EmployeeCommand;
    use ledger_core::gross_to_net::PaidPeriod;
    let run = Run::fold(&when::<Run>(&[], create(RunKind::Regular)).unwrap()).unwrap();
    let employed = EmployeeAggregate::fold(&hired(employee_id(1), monthly("5000.00"), day(2025, 1, 1))).unwrap();
    assert!(run.owes(&ItemInput { employee: employed, paid_periods: vec![] }, &[]));
    // Left in December: nothing of January, unless December was paid at another rate.
    let mut left = hired(employee_id(2), monthly("5000.00"), day(2025, 1, 1));
    let terminate = EmployeeCommand::Terminate { end_date: day(2025, 12, 31), reason: "moved".into() };
    left.extend(when::<EmployeeAggregate>(&left, terminate).unwrap());
    let leaver = EmployeeAggregate::fold(&left).unwrap();
    assert!(!run.owes(&ItemInput { employee: leaver.clone(), paid_periods: vec![] }, &[]));
    let december = PayPeriod::new(day(2025, 12, 1), day(2025, 12, 31)).unwrap();
    let underpaid = vec![PaidPeriod { period: december, earnings: usd("4000.00") }];
    assert!(run.owes(&ItemInput { employee: leaver.clone(), paid_periods: underpaid }, &[]));
    let paid_in_full = vec![PaidPeriod { period: december, earnings: usd("5000.00") }];
    assert!(!run.owes(&ItemInput { employee: leaver, paid_periods: paid_in_full }, &[]));
}
