use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};

use crate::RoleNames;

/// A migration written as commented SQL with role-name placeholders.
///
/// sea-orm-migration runs each PostgreSQL migration in its own transaction, which the SQL relies
/// on for `SET LOCAL ROLE`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SqlMigration {
    pub name: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

impl MigrationName for SqlMigration {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SqlMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, self.up).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, self.down).await
    }
}

async fn run(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let roles = role_names(db).await?;
    db.execute_unprepared(&roles.render(sql)).await?;
    Ok(())
}

/// Reads the prefix the migrating connection was opened with (default `rowguard`).
async fn role_names<C: ConnectionTrait>(db: &C) -> Result<RoleNames, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "select coalesce(nullif(current_setting('{}', true), ''), '{}') as prefix",
                RoleNames::PREFIX_SETTING,
                RoleNames::DEFAULT_PREFIX
            ),
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("reading the role prefix returned no row".into()))?;
    let prefix: String = row.try_get("", "prefix")?;
    RoleNames::new(&prefix).map_err(|e| DbErr::Custom(e.to_string()))
}
