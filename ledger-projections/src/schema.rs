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

/// Empties every table of `schema` except reference data (notification templates).
pub async fn truncate_tables(connection: &mut PgConnection, schema: &str) -> Result<()> {
    for table in tables(connection, schema).await? {
        if is_reference_data(schema, &table) {
            continue;
        }
        sqlx::query(&format!("truncate {}.{}", quote(schema), quote(&table))).execute(&mut *connection).await?;
    }
    Ok(())
}

/// Tables a migration fills and no event changes.
pub fn is_reference_data(schema: &str, table: &str) -> bool {
    schema == "notification" && table == "notification_templates"
}
