//! Replay as of a past moment equals what the read tables showed at that moment.

use ledger_core::employee::EmployeeAggregate;
use ledger_core::transaction::wallet_account;
use ledger_core::wallet::WalletAggregate;
use ledger_projections::replay::{AsOf, account_balance_as_of, aggregate_as_of};
use ledger_store::testkit::TestDatabase;
use rust_decimal::Decimal;

use crate::catch_up_all;
use crate::workload::{Dice, Payroll, day, month};

#[tokio::test]
async fn an_employee_and_a_wallet_as_of_a_past_moment_are_what_the_read_tables_showed() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let mut payroll = Payroll::register(store.clone()).await;
    let (employee, wallet) = payroll.hire(500_000, day(2026, 1, 1), true).await;
    let mut dice = Dice::new(7);
    payroll.run(month(1), &mut dice).await;
    catch_up_all(&store).await;

    let (then_position, then_time) = store.head().await.unwrap().unwrap();
    let (rate_then, basis_then): (Decimal, String) =
        sqlx::query_as("select rate_amount, rate_basis from employee.employees where employee_id = $1")
            .bind(employee.as_uuid())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let balance_then: Decimal = sqlx::query_scalar("select balance from wallet.wallets where wallet_id = $1")
        .bind(wallet.as_uuid())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let account_then: Decimal =
        sqlx::query_scalar("select balance from transaction.account_balances where account = $1")
            .bind(wallet_account(wallet))
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(balance_then > Decimal::ZERO);

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    payroll.raise(employee, 650_000, day(2026, 2, 1)).await;
    payroll.run(month(2), &mut dice).await;
    assert!(payroll.withdraw(wallet, 1).await);
    catch_up_all(&store).await;

    for as_of in [AsOf::Position(then_position), AsOf::Time(then_time)] {
        let employee_then =
            aggregate_as_of::<EmployeeAggregate>(&store, employee.as_uuid(), as_of).await.unwrap().unwrap();
        let latest = &employee_then.rates.last().unwrap().rate;
        assert_eq!((latest.amount.amount(), basis_then.as_str()), (rate_then, "monthly"), "{as_of:?}");
        let wallet_then = aggregate_as_of::<WalletAggregate>(&store, wallet.as_uuid(), as_of).await.unwrap().unwrap();
        assert_eq!(wallet_then.balance.amount(), balance_then, "{as_of:?}");
        let account = account_balance_as_of(&store, &wallet_account(wallet), as_of).await.unwrap();
        assert_eq!(account.len(), 1);
        assert_eq!(account[0].balance, account_then, "{as_of:?}");
    }
    // And the present differs: the replay did filter.
    let now =
        aggregate_as_of::<WalletAggregate>(&store, wallet.as_uuid(), AsOf::Position(i64::MAX)).await.unwrap().unwrap();
    assert_ne!(now.balance.amount(), balance_then);
    let employee_now = aggregate_as_of::<EmployeeAggregate>(&store, employee.as_uuid(), AsOf::Position(i64::MAX))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(employee_now.rates.last().unwrap().rate.amount.amount(), Decimal::new(650_000, 2));
    let before_hire =
        aggregate_as_of::<EmployeeAggregate>(&store, employee.as_uuid(), AsOf::Position(1)).await.unwrap();
    assert!(before_hire.is_none());
}
