//! Catalog helpers for read schemas: listing, emptying and copying their tables.

use sqlx::PgConnection;

use crate::error::Result;

/// The tables of a schema, by name.
pub async fn tables(connection: &mut PgConnection, schema: &str) -> Result<Vec<String>> {
    let tables = sqlx::query_scalar("select tablename::text from pg_tables where schemaname = $1 order by tablename")
        .bind(schema)
        .fetch_all(connection)
        .await?;
    Ok(tables)
}

/// Quotes an identifier for SQL.
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Empties every table of `schema` (every row of a read table comes from the log).
pub async fn truncate_tables(connection: &mut PgConnection, schema: &str) -> Result<()> {
    for table in tables(connection, schema).await? {
        sqlx::query(&format!("truncate {}.{}", quote(schema), quote(&table))).execute(&mut *connection).await?;
    }
    Ok(())
}
