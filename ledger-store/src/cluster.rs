//! What the ledger needs of the PostgreSQL cluster it runs on, made sure of at every start:
//! the migrations, the cluster's era (see `migrations/20261126000001_cluster_eras.sql`: the
//! log's order survives a move to another cluster) and the group roles, grants and
//! row-level security a dump does not carry into a new cluster.

use sqlx::{PgExecutor, PgPool};

use crate::MIGRATOR;
use crate::error::{Result, StoreError};

/// What [`prepare`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preparation {
    /// The era this cluster writes in.
    pub era: i32,
    /// Whether that era began now (the database was restored or copied from another
    /// cluster, or this is its first start).
    pub era_begun: bool,
    /// How many missing roles, grants or policies were made again.
    pub access_repaired: usize,
    /// What is still missing because this login may not make it (see [`AccessMissing`]).
    pub access_missing: Option<AccessMissing>,
}

/// Roles, grants or policies that are missing and that the connected role could not make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the ledger's database roles or grants are missing ({}); connect once as a role that may \
     create roles and owns the ledger's tables (on a new cluster, a superuser) and run \
     `payroll-ledger migrate`, or run `select ledger.ensure_access();` in psql as one: {cause}",
    problems.join("; ")
)]
pub struct AccessMissing {
    pub problems: Vec<String>,
    pub cause: String,
}

/// Applies pending migrations, begins this cluster's era if the database came from another
/// cluster, and makes missing roles, grants and policies again where this login may. A login
/// that may not leaves them listed in [`Preparation::access_missing`]; reads then fail and
/// `/ready` says so.
pub async fn prepare(pool: &PgPool) -> Result<Preparation> {
    MIGRATOR.run(pool).await?;
    let (era, era_begun) = begin_era(pool).await?;
    let problems = access_problems(pool).await?;
    if problems.is_empty() {
        return Ok(Preparation { era, era_begun, access_repaired: 0, access_missing: None });
    }
    match sqlx::query_scalar::<_, i32>("select ledger.ensure_access()").fetch_one(pool).await {
        Ok(repaired) => {
            tracing::warn!(repaired, problems = %problems.join("; "), "made missing roles, grants or policies again");
            Ok(Preparation { era, era_begun, access_repaired: repaired as usize, access_missing: None })
        }
        Err(sqlx::Error::Database(error)) => {
            let missing = AccessMissing { problems, cause: error.message().to_owned() };
            tracing::error!(%missing, "cannot make the ledger's roles and grants");
            Ok(Preparation { era, era_begun, access_repaired: 0, access_missing: Some(missing) })
        }
        Err(error) => Err(error.into()),
    }
}

/// Begins an era on this cluster unless the latest one is this cluster's; returns the
/// current era and whether it began now. Records the era's check for this run of the cluster
/// (appends then do not read the cluster's identifier again: `ledger.check_era`).
pub async fn begin_era(pool: &PgPool) -> Result<(i32, bool)> {
    let mut transaction = pool.begin().await?;
    let before: Option<i32> =
        sqlx::query_scalar("select max(era) from ledger.eras").fetch_one(&mut *transaction).await?;
    let era: i32 = sqlx::query_scalar("select ledger.begin_era()").fetch_one(&mut *transaction).await?;
    sqlx::query("select ledger.check_era()").execute(&mut *transaction).await?;
    transaction.commit().await?;
    let begun = before != Some(era);
    if begun {
        tracing::warn!(era, "began a new era of the log on this PostgreSQL cluster");
    }
    Ok((era, begun))
}

/// What the service needs of roles, grants and row-level security and does not have; empty
/// when all is there.
pub async fn access_problems(executor: impl PgExecutor<'_>) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar("select ledger.access_problems()").fetch_all(executor).await?)
}

/// Why this cluster cannot read or write the log now, if it cannot: the database came from
/// another cluster and the ledger has not begun its era here (run `migrate` or start the
/// server), or the migrations that make eras are not applied. When it can, the check is
/// recorded for this run of the cluster (`ledger.check_era`), so that after PostgreSQL
/// restarts the next readiness check spares appends the whole check again.
pub async fn era_problem(executor: impl PgExecutor<'_>) -> Result<Option<String>> {
    match sqlx::query("select ledger.check_era()").execute(executor).await {
        Ok(_) => Ok(None),
        Err(sqlx::Error::Database(error)) if matches!(error.code().as_deref(), Some("55000" | "42883" | "42P01")) => {
            Ok(Some(error.message().to_owned()))
        }
        Err(error) => Err(StoreError::from(error)),
    }
}
