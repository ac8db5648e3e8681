//! Rebuilding `near_duplicate_bands` in a new shape, as migrations 3 and 4 do: SQLite cannot
//! change a table's primary key in place, so the rows move to a new table that takes its name.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// Creates `temporary` with `columns` and `primary_key` (its rows alone in the key's B-tree on
/// SQLite, `WITHOUT ROWID`), fills it with `INSERT INTO temporary {fill}`, and puts it in place
/// of `near_duplicate_bands`.
pub(crate) async fn replace(
    manager: &SchemaManager<'_>,
    temporary: &str,
    columns: &str,
    primary_key: &str,
    fill: &str,
) -> Result<(), DbErr> {
    let connection = manager.get_connection();
    let without_rowid = if manager.get_database_backend() == DatabaseBackend::Sqlite { " WITHOUT ROWID" } else { "" };
    connection.execute_unprepared(&format!("CREATE TABLE {temporary} ({columns}, PRIMARY KEY ({primary_key})){without_rowid}")).await?;
    connection.execute_unprepared(&format!("INSERT INTO {temporary} {fill}")).await?;
    connection.execute_unprepared("DROP TABLE near_duplicate_bands").await?;
    connection.execute_unprepared(&format!("ALTER TABLE {temporary} RENAME TO near_duplicate_bands")).await?;
    Ok(())
}
