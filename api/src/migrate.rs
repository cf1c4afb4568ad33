//! `rowguard migrate`: applies or reverts the schema as the owner (or an administrator).

use migration::{Migrator, MigratorTrait, RoleNames};
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::{ConnectOptions, ConnectionTrait, DatabaseConnection, DbErr};

use crate::settings::MigrationSettings;

/// What `rowguard migrate` should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the most recent migration.
    Down,
    /// List applied and pending migrations.
    Status,
}

/// Runs `action` against the database in `settings`, creating that database first if it does
/// not exist yet (so a fresh server needs no manual `createdb`).
pub async fn run(settings: &MigrationSettings, action: MigrateAction) -> Result<(), DbErr> {
    apply(settings, action).await.map_err(|error| {
        crate::db::without_url(error, &settings.url, "ROWGUARD_MIGRATION_DATABASE_URL")
    })
}

async fn apply(settings: &MigrationSettings, action: MigrateAction) -> Result<(), DbErr> {
    if action == MigrateAction::Up {
        create_database_if_missing(&settings.url).await?;
    }
    let db = connect_as_owner(&settings.url, &settings.role_prefix).await?;
    let result = match action {
        MigrateAction::Up => Migrator::up(&db, None).await,
        MigrateAction::Down => Migrator::down(&db, Some(1)).await,
        MigrateAction::Status => Migrator::status(&db).await,
    };
    db.close().await?;
    result
}

/// One connection that tells the migrations which role prefix to use.
pub async fn connect_as_owner(url: &str, roles: &RoleNames) -> Result<DatabaseConnection, DbErr> {
    let (name, value) = roles.connection_option();
    let value = value.to_owned();
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(move |o: PgConnectOptions| o.options([(name, value.as_str())]));
    sea_orm::Database::connect(options).await
}

async fn create_database_if_missing(url: &str) -> Result<(), DbErr> {
    let target: PgConnectOptions = url.parse().map_err(|e| {
        DbErr::Custom(format!(
            "ROWGUARD_MIGRATION_DATABASE_URL is not a valid URL: {e}"
        ))
    })?;
    let Some(name) = target.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let maintenance = target.database("postgres");
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(move |_| maintenance.clone());
    let admin = sea_orm::Database::connect(options).await?;
    let exists = admin
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "select 1 as found from pg_catalog.pg_database where datname = $1",
            [name.clone().into()],
        ))
        .await?
        .is_some();
    if !exists {
        // Identifiers cannot be bound as parameters; quote it the way PostgreSQL does.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        admin
            .execute_unprepared(&format!("CREATE DATABASE {quoted}"))
            .await?;
        tracing::info!(database = %name, "created database");
    }
    admin.close().await
}
