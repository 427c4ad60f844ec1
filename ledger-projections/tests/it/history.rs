//! The employee history's validity: each change of a kind is valid until the day before the
//! next one takes effect (in effective date, then log order), whatever order the changes
//! were made in (backdated raises, two on one day). The projection updates only the rows a
//! change touches; this checks the result against the whole recomputation.

use chrono::NaiveDate;
use ledger_store::testkit::TestDatabase;
use proptest::prelude::*;

use crate::catch_up_all;
use crate::workload::{Payroll, day};

/// Hires one employee, raises them effective on `offsets` (days after 1 March 2026, in this
/// order), projects, and checks every pay-rate row's validity.
async fn raises_in_order(offsets: Vec<u16>) {
    let db = TestDatabase::new().await;
    let store = db.store();
    let mut payroll = Payroll::register(store.clone()).await;
    let (employee, _) = payroll.hire(500_000, day(2026, 1, 1), true).await;
    for (n, offset) in offsets.iter().enumerate() {
        let effective = day(2026, 3, 1) + chrono::Days::new(u64::from(*offset));
        payroll.raise(employee, 500_000 + n as i64 * 100, effective).await;
    }
    catch_up_all(&store).await;
    let rows: Vec<(NaiveDate, Option<NaiveDate>, i64, rust_decimal::Decimal)> = sqlx::query_as(
        "select valid_from, valid_to, global_position, rate_amount from employee.employee_history \
         where employee_id = $1 and change = 'pay_rate' order by valid_from, global_position",
    )
    .bind(employee.as_uuid())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), offsets.len() + 1, "the hire's rate and every raise");
    for (index, (valid_from, valid_to, position, _)) in rows.iter().enumerate() {
        let expected = rows.get(index + 1).map(|next| next.0 - chrono::Days::new(1));
        assert_eq!(*valid_to, expected, "row {index} (from {valid_from}, position {position}) of {rows:?}");
    }
    let current: (NaiveDate, rust_decimal::Decimal) =
        sqlx::query_as("select rate_effective_from, rate_amount from employee.employees where employee_id = $1")
            .bind(employee.as_uuid())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let latest = rows.last().unwrap();
    assert_eq!(
        current,
        (latest.0, latest.3),
        "the current rate is the latest effective one (each raise's amount differs)"
    );
}

#[tokio::test]
async fn backdated_and_same_day_raises_leave_each_row_valid_until_the_next() {
    raises_in_order(vec![30, 0, 30, 10, 60, 0, 45, 20, 20]).await;
}

#[tokio::test]
async fn the_last_raise_made_and_latest_effective_is_the_current_rate() {
    // Two on one day last: the later in the log is current.
    raises_in_order(vec![10, 0, 20, 20]).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn any_order_of_raises_leaves_each_row_valid_until_the_next(offsets in prop::collection::vec(0u16..40, 1..10)) {
        tokio::runtime::Runtime::new().unwrap().block_on(raises_in_order(offsets));
    }
}
