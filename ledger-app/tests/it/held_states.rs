//! A command is decided first on the state its process holds, trusted only through the
//! append's expected version (`Ledger::execute_cached`). These tests run two `Ledger`s over
//! one database, as two processes would be: whatever one holds, the other may have changed.

use std::sync::Arc;

use chrono::NaiveDate;
use ledger_app::{CommandMetrics, Context, Error, Ledger};
use ledger_codec::decode_stream;
use ledger_core::calendar::PayFrequency;
use ledger_core::employee::{
    EmployeeAggregate, EmployeeCommand, EmployeeEvent, PayBasis, PayRate, Personal, PersonalData,
};
use ledger_core::error::DomainError;
use ledger_core::ids::{EmployeeId, OrganizationId};
use ledger_core::money::{Currency, Money};
use ledger_store::EventStore;
use ledger_store::testkit::TestDatabase;
use rust_decimal::Decimal;
use uuid::Uuid;

fn process(store: &EventStore) -> Ledger {
    Ledger::new(store.clone(), Arc::new(CommandMetrics::unregistered()), Vec::new())
}

fn day(month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, month, day).unwrap()
}

/// A monthly rate of `cents` in `currency` from March, for `reason`.
fn rate_change(cents: i64, currency: Currency, reason: &str) -> EmployeeCommand {
    EmployeeCommand::ChangePayRate {
        rate: PayRate { amount: Money::new(Decimal::new(cents, 2), currency).unwrap(), basis: PayBasis::Monthly },
        effective_from: day(3, 1),
        reason: reason.into(),
    }
}

fn raise(cents: i64) -> EmployeeCommand {
    rate_change(cents, Currency::usd(), "raise")
}

fn move_to(position: &str) -> EmployeeCommand {
    EmployeeCommand::ChangePosition { position: position.into(), department: "Ops".into(), effective_from: day(3, 1) }
}

/// Hires one employee through `ledger` (with personal data, which the store seals).
async fn hire(ledger: &Ledger, context: &Context) -> Uuid {
    let employee = Uuid::new_v4();
    let hire = EmployeeCommand::Hire {
        employee_id: EmployeeId::from_uuid(employee),
        organization_id: OrganizationId::from_uuid(context.organization_id()),
        personal: PersonalData {
            full_name: "Ada Lovelace".into(),
            email: Some("ada@example.com".into()),
            address: None,
        },
        position: "Clerk".into(),
        department: "Ops".into(),
        rate: PayRate {
            amount: Money::new(Decimal::new(500_000, 2), Currency::usd()).unwrap(),
            basis: PayBasis::Monthly,
        },
        pay_frequency: PayFrequency::Monthly,
        pay_schedule_id: None,
        start_date: day(1, 1),
    };
    ledger.execute::<EmployeeAggregate>(context, employee, hire).await.unwrap();
    employee
}

/// Hires one employee through `ledger` and raises them once: the raise reads the log (sealed)
/// and `ledger` holds the result, at version 2.
async fn held_employee(ledger: &Ledger, context: &Context) -> Uuid {
    let employee = hire(ledger, context).await;
    ledger.execute::<EmployeeAggregate>(context, employee, raise(510_000)).await.unwrap();
    assert_eq!(ledger.held::<EmployeeAggregate>(employee).map(|held| held.version), Some(2), "held after its command");
    employee
}

/// The employee's events as the log holds them.
async fn events(store: &EventStore, employee: Uuid) -> Vec<EmployeeEvent> {
    decode_stream::<EmployeeEvent>(&store.read_stream(employee, 1).await.unwrap()).unwrap()
}

#[tokio::test]
async fn a_decision_on_a_state_another_process_changed_is_made_again_on_the_log() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (first, second) = (process(&store), process(&store));
    let context = Context::system(Uuid::new_v4(), "tester");
    let employee = held_employee(&first, &context).await;
    // The other process terminates the employee: the first holds an active employee still.
    let terminate = EmployeeCommand::Terminate { end_date: day(2, 28), reason: "left".into() };
    second.execute::<EmployeeAggregate>(&context, employee, terminate).await.unwrap();
    // Decided on the held state the move is fine; the append finds version 3 and the log's
    // state refuses it.
    let refused = first.execute::<EmployeeAggregate>(&context, employee, move_to("Manager")).await;
    assert!(matches!(refused, Err(Error::Domain(DomainError::WrongStatus { .. }))), "{refused:?}");
    let written = events(&store, employee).await;
    assert_eq!(written.len(), 3, "hire, raise, termination and nothing else: {written:?}");
    assert!(matches!(written[2], EmployeeEvent::EmployeeTerminated { .. }));
    assert_eq!(first.held::<EmployeeAggregate>(employee).map(|held| held.version), Some(3), "the log's state, held");
}

#[tokio::test]
async fn a_refusal_on_a_held_state_is_decided_again_on_the_log() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let (first, second) = (process(&store), process(&store));
    let context = Context::system(Uuid::new_v4(), "tester");
    let employee = hire(&first, &context).await;
    let terminate = EmployeeCommand::Terminate { end_date: day(2, 28), reason: "left".into() };
    first.execute::<EmployeeAggregate>(&context, employee, terminate).await.unwrap();
    // The other process rehires: the first holds a terminated employee, which refuses a move.
    let rehire = EmployeeCommand::Rehire { start_date: day(3, 1), rate: None };
    second.execute::<EmployeeAggregate>(&context, employee, rehire).await.unwrap();
    first.execute::<EmployeeAggregate>(&context, employee, move_to("Manager")).await.unwrap();
    let written = events(&store, employee).await;
    assert_eq!(written.len(), 4, "{written:?}");
    assert!(
        matches!(&written[3], EmployeeEvent::EmployeePositionChanged { position, .. } if position == "Manager"),
        "{written:?}"
    );
}

#[tokio::test]
async fn a_repeated_request_on_a_held_state_is_a_replay_and_keeps_the_state_true() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let ledger = process(&store);
    let context = Context::system(Uuid::new_v4(), "tester");
    let employee = held_employee(&ledger, &context).await;
    let keyed = context.idempotent("raise-2");
    let once = ledger.execute::<EmployeeAggregate>(&keyed, employee, raise(520_000)).await.unwrap();
    assert!(!once.replayed);
    // The same request again: decided on the held state (a raise is valid twice), the append
    // finds the key used and answers the first result; nothing is written.
    let again = ledger.execute::<EmployeeAggregate>(&keyed, employee, raise(520_000)).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.position, once.position);
    let from_log = process(&store).load::<EmployeeAggregate>(context.organization_id(), employee).await.unwrap();
    if let Some(held) = ledger.held::<EmployeeAggregate>(employee) {
        assert_eq!(held, from_log, "a replay folds nothing into what is held");
    }
    // What it holds is still the log's state: the next command lands right after.
    ledger.execute::<EmployeeAggregate>(&context, employee, raise(530_000)).await.unwrap();
    let written = events(&store, employee).await;
    assert_eq!(written.len(), 4, "hire and three raises, the repeated one once: {written:?}");
    let held = ledger.held::<EmployeeAggregate>(employee).unwrap();
    assert_eq!(held.version, 4);
    let from_log = process(&store).load::<EmployeeAggregate>(context.organization_id(), employee).await.unwrap();
    assert_eq!(held, from_log, "the held state is the one the log folds to");
}

#[tokio::test]
async fn a_state_with_personal_data_in_clear_is_never_held() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let ledger = process(&store);
    let context = Context::system(Uuid::new_v4(), "tester");
    let employee = hire(&ledger, &context).await;
    // The hire's own fold has the name in clear: not kept.
    assert_eq!(ledger.held::<EmployeeAggregate>(employee), None);
    // A later command reads the log (sealed) and holds that.
    ledger.execute::<EmployeeAggregate>(&context, employee, raise(510_000)).await.unwrap();
    let held = ledger.held::<EmployeeAggregate>(employee).unwrap().state.unwrap();
    assert!(matches!(held.personal, Personal::Sealed { .. }), "{:?}", held.personal);
}

#[tokio::test]
async fn a_held_state_of_another_organization_answers_nothing() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let ledger = process(&store);
    let owner = Context::system(Uuid::new_v4(), "tester");
    let employee = held_employee(&ledger, &owner).await;
    let stranger = Context::system(Uuid::new_v4(), "tester");
    let refused = ledger.execute::<EmployeeAggregate>(&stranger, employee, raise(999_900)).await;
    assert!(matches!(refused, Err(Error::NotFound(_))), "{refused:?}");
    assert_eq!(events(&store, employee).await.len(), 2);
}

/// Sixteen writers in two processes raise one employee at once: every command that answers
/// success has its event in the log exactly once, versions stay contiguous, and a command
/// that gives up says it was a conflict (nothing written for it).
#[tokio::test]
async fn racing_writers_in_two_processes_lose_and_double_nothing() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let ledgers = [process(&store), process(&store)];
    let context = Context::system(Uuid::new_v4(), "tester");
    let employee = hire(&ledgers[0], &context).await;
    const WRITERS: i64 = 16;
    const RAISES: i64 = 10;
    let outcomes = futures_util::future::join_all((0..WRITERS).map(|writer| {
        let (ledger, context) = (&ledgers[(writer % 2) as usize], &context);
        async move {
            let mut landed = Vec::new();
            for n in 0..RAISES {
                let cents = 600_000 + writer * 1_000 + n;
                match ledger.execute::<EmployeeAggregate>(context, employee, raise(cents)).await {
                    Ok(_) => landed.push(cents),
                    Err(Error::VersionConflict(_)) => {}
                    Err(error) => panic!("writer {writer}: {error}"),
                }
            }
            landed
        }
    }))
    .await;
    let mut landed: Vec<i64> = outcomes.into_iter().flatten().collect();
    landed.sort_unstable();
    let recorded = store.read_stream(employee, 1).await.unwrap();
    let versions: Vec<u64> = recorded.iter().map(|event| event.stream_version).collect();
    assert_eq!(versions, (1..=recorded.len() as u64).collect::<Vec<_>>());
    let mut raised: Vec<i64> = decode_stream::<EmployeeEvent>(&recorded)
        .unwrap()
        .into_iter()
        .filter_map(|event| match event {
            EmployeeEvent::EmployeePayRateChanged { rate, .. } => {
                Some((rate.amount.amount() * Decimal::ONE_HUNDRED).try_into().unwrap())
            }
            _ => None,
        })
        .collect();
    raised.sort_unstable();
    assert_eq!(raised, landed, "the log's raises are exactly the ones answered as written");
    assert!(!landed.is_empty());
}

#[tokio::test]
async fn bad_input_on_a_held_state_is_refused_and_writes_nothing() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let ledger = process(&store);
    let context = Context::system(Uuid::new_v4(), "tester");
    let employee = held_employee(&ledger, &context).await;
    // A rate in another currency than the employee's, then an empty reason.
    let euros = rate_change(510_000, Currency::known("EUR").unwrap(), "raise");
    let refused = ledger.execute::<EmployeeAggregate>(&context, employee, euros).await;
    assert!(matches!(&refused, Err(Error::Invalid(problem)) if problem.contains("rate.amount")), "{refused:?}");
    let no_reason = rate_change(520_000, Currency::usd(), " ");
    let refused = ledger.execute::<EmployeeAggregate>(&context, employee, no_reason).await;
    assert!(matches!(&refused, Err(Error::Invalid(problem)) if problem.contains("reason")), "{refused:?}");
    assert_eq!(events(&store, employee).await.len(), 2, "nothing written for either");
    assert_eq!(ledger.held::<EmployeeAggregate>(employee).map(|held| held.version), Some(2));
}

/// A command on a held state stopped while its append waits (a cancelled request, a timeout):
/// whether its event lands is not known, so nothing is held any more (the state was let go
/// before the append, not copied), and the next command is decided on the log.
#[tokio::test]
async fn a_command_stopped_in_its_append_leaves_no_state_held() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let ledger = process(&store);
    let context = Context::system(Uuid::new_v4(), "tester");
    let employee = held_employee(&ledger, &context).await;
    // Every append waits while another transaction holds the log's lock exclusively.
    let mut blocker = db.connect().await;
    sqlx::query("begin").execute(&mut blocker).await.unwrap();
    sqlx::query("select pg_advisory_xact_lock(1279607879, 0)").execute(&mut blocker).await.unwrap();
    let stopped = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        ledger.execute::<EmployeeAggregate>(&context, employee, raise(520_000)),
    )
    .await;
    assert!(stopped.is_err(), "the append waited for the lock: {stopped:?}");
    assert_eq!(ledger.held::<EmployeeAggregate>(employee), None, "nothing held while its outcome is unknown");
    sqlx::query("rollback").execute(&mut blocker).await.unwrap();

    ledger.execute::<EmployeeAggregate>(&context, employee, raise(530_000)).await.unwrap();
    let written = events(&store, employee).await;
    // The stopped raise landed or did not (its statement may still run once the lock is
    // free, and is refused if the next one came first); the next one lands once, after
    // whatever the log holds.
    assert!(matches!(written.len(), 3 | 4), "{written:?}");
    let amount_of = |event: &EmployeeEvent| match event {
        EmployeeEvent::EmployeePayRateChanged { rate, .. } => Some(rate.amount.amount()),
        _ => None,
    };
    let raises: Vec<_> = written.iter().filter_map(amount_of).collect();
    assert_eq!(raises.iter().filter(|amount| **amount == Decimal::new(530_000, 2)).count(), 1, "{written:?}");
    let held = ledger.held::<EmployeeAggregate>(employee).unwrap();
    let from_log = process(&store).load::<EmployeeAggregate>(context.organization_id(), employee).await.unwrap();
    assert_eq!(held, from_log, "the held state is the one the log folds to");
}
