//! Pay schedules: their periods tile the calendar, and their stream lets one live regular
//! run pay each period.

use chrono::{Datelike, Days, NaiveDate};
use ledger_core::Aggregate;
use ledger_core::DomainError;
use ledger_core::calendar::{PayFrequency, PayPeriod, PaySchedule};
use ledger_core::ids::{PayScheduleId, PayrollRunId};
use ledger_core::schedule::{PayCalendarAggregate, PayCalendarCommand, PayCalendarEvent};
use proptest::prelude::*;
use uuid::Uuid;

use crate::{day, organization_id, when};

fn schedule(frequency: PayFrequency, anchor_date: NaiveDate) -> PaySchedule {
    PaySchedule { frequency, anchor_date }
}

fn periods(schedule: &PaySchedule, from: NaiveDate, count: usize) -> Vec<(NaiveDate, NaiveDate)> {
    schedule.periods(from, day(2999, 1, 1), count).into_iter().map(|period| (period.start(), period.end())).collect()
}

#[test]
fn each_frequency_has_the_periods_a_payroll_clerk_expects() {
    let monthly = schedule(PayFrequency::Monthly, day(2026, 1, 1));
    assert_eq!(
        periods(&monthly, day(2026, 2, 10), 2),
        [(day(2026, 2, 1), day(2026, 2, 28)), (day(2026, 3, 1), day(2026, 3, 31))]
    );
    // Anchored on the 31st: shorter months start on their last day.
    let month_end = schedule(PayFrequency::Monthly, day(2026, 1, 31));
    assert_eq!(
        periods(&month_end, day(2026, 1, 31), 3),
        [
            (day(2026, 1, 31), day(2026, 2, 27)),
            (day(2026, 2, 28), day(2026, 3, 30)),
            (day(2026, 3, 31), day(2026, 4, 29))
        ]
    );
    let semi = schedule(PayFrequency::SemiMonthly, day(2026, 1, 1));
    assert_eq!(
        periods(&semi, day(2026, 2, 1), 2),
        [(day(2026, 2, 1), day(2026, 2, 15)), (day(2026, 2, 16), day(2026, 2, 28))]
    );
    let biweekly = schedule(PayFrequency::Biweekly, day(2026, 1, 5));
    // Before the anchor too.
    assert_eq!(periods(&biweekly, day(2025, 12, 30), 1), [(day(2025, 12, 22), day(2026, 1, 4))]);
    let weekly = schedule(PayFrequency::Weekly, day(2026, 1, 5));
    assert_eq!(periods(&weekly, day(2026, 1, 11), 1), [(day(2026, 1, 5), day(2026, 1, 11))]);
    assert!(biweekly.has_period(PayPeriod::new(day(2026, 1, 19), day(2026, 2, 1)).unwrap()));
    assert!(!biweekly.has_period(PayPeriod::new(day(2026, 1, 19), day(2026, 1, 31)).unwrap()));
    assert!(!biweekly.has_period(PayPeriod::new(day(2026, 1, 20), day(2026, 2, 2)).unwrap()));
}

fn frequency() -> impl Strategy<Value = PayFrequency> {
    prop_oneof![
        Just(PayFrequency::Weekly),
        Just(PayFrequency::Biweekly),
        Just(PayFrequency::SemiMonthly),
        Just(PayFrequency::Monthly)
    ]
}

fn date() -> impl Strategy<Value = NaiveDate> {
    (0u64..40_000).prop_map(|days| day(1950, 1, 1) + Days::new(days))
}

proptest! {
    /// Periods tile the calendar: the period holding a day holds it, the next one starts the
    /// day after it ends, every period is one the schedule has, and the anchor starts one.
    #[test]
    fn periods_tile_the_calendar(frequency in frequency(), anchor in date(), from in date()) {
        let schedule = schedule(frequency, anchor);
        let found = schedule.periods(from, day(2999, 1, 1), 30);
        prop_assert_eq!(found.len(), 30);
        prop_assert!(found[0].contains(from));
        prop_assert_eq!(schedule.period_containing(from, "day").unwrap(), found[0]);
        for pair in found.windows(2) {
            prop_assert_eq!(pair[0].end().succ_opt().unwrap(), pair[1].start());
        }
        for period in &found {
            prop_assert!(schedule.has_period(*period));
            let days = period.days();
            let (shortest, longest) = match frequency {
                PayFrequency::Weekly => (7, 7),
                PayFrequency::Biweekly => (14, 14),
                PayFrequency::SemiMonthly => (13, 16),
                PayFrequency::Monthly => (28, 31),
            };
            prop_assert!((shortest..=longest).contains(&days), "{period} has {days} days");
        }
        prop_assert_eq!(schedule.period_containing(anchor, "day").unwrap().start(), anchor);
        if frequency == PayFrequency::Monthly && anchor.day() == 1 {
            prop_assert_eq!(found[0].start().day(), 1);
        }
    }
}

fn claim(run: u128, period: PayPeriod) -> PayCalendarCommand {
    PayCalendarCommand::Claim {
        pay_schedule_id: PayScheduleId::from_uuid(Uuid::from_u128(0x5c)),
        organization_id: organization_id(),
        period,
        run: PayrollRunId::from_uuid(Uuid::from_u128(run)),
    }
}

#[test]
fn a_period_is_claimed_by_one_run_until_it_is_released() {
    let january = PayPeriod::new(day(2026, 1, 1), day(2026, 1, 31)).unwrap();
    let february = PayPeriod::new(day(2026, 2, 1), day(2026, 2, 28)).unwrap();
    let mut given = when::<PayCalendarAggregate>(&[], claim(1, january)).unwrap();
    given.extend(when::<PayCalendarAggregate>(&given, claim(2, february)).unwrap());
    let taken = when::<PayCalendarAggregate>(&given, claim(3, january));
    assert_eq!(
        taken,
        Err(DomainError::PeriodTaken {
            period: january.to_string(),
            payroll_run_id: PayrollRunId::from_uuid(Uuid::from_u128(1))
        })
    );
    // Only the run that holds the period releases it.
    let release = |run: u128| PayCalendarCommand::Release {
        period: january,
        run: PayrollRunId::from_uuid(Uuid::from_u128(run)),
        reason: "voided".into(),
    };
    assert!(matches!(when::<PayCalendarAggregate>(&given, release(2)), Err(DomainError::NotFound { .. })));
    given.extend(when::<PayCalendarAggregate>(&given, release(1)).unwrap());
    assert!(matches!(given.last(), Some(PayCalendarEvent::PayPeriodReleased { .. })));
    given.extend(when::<PayCalendarAggregate>(&given, claim(3, january)).unwrap());
    let calendar = PayCalendarAggregate::fold(&given).unwrap();
    assert_eq!(calendar.run_paying(january), Some(PayrollRunId::from_uuid(Uuid::from_u128(3))));
    assert_eq!(calendar.run_paying(february), Some(PayrollRunId::from_uuid(Uuid::from_u128(2))));
}
