use std::fmt;

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult, Statement, Value};

use super::{Database, DbError};

/// The startup self-check found reasons not to serve. Each entry says what is wrong and how to
/// fix it; no entry contains data from any table.
#[derive(Debug, thiserror::Error)]
pub struct SelfCheckFailed {
    pub problems: Vec<String>,
}

impl fmt::Display for SelfCheckFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "refusing to serve: the database setup would not enforce row level security"
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// The schemas whose tables hold protected data (clinical data and the audit trail).
const PROTECTED_SCHEMAS: &str = "{rowguard,rowguard_audit}";
/// Tables whose policies must apply even to their owner.
const FORCED_TABLES: &[&str] = &["rowguard.patients"];

impl Database {
    /// Checks, as the gateway's own login, that PostgreSQL will actually enforce row level
    /// security for it. Called before serving; any problem means refusing to start.
    pub async fn self_check(&self) -> Result<(), SelfCheckError> {
        let mut problems = Vec::new();
        // Catalog reads only; a transaction keeps them on one server connection behind a pooler.
        let txn = self.begin().await?;
        let login = one(
            &txn,
            "select current_user::text as name, rolsuper, rolbypassrls, rolinherit \
                 from pg_catalog.pg_roles where rolname = current_user",
            [],
        )
        .await?;
        let name: String = get(&login, "name")?;
        if get::<bool>(&login, "rolsuper")? {
            problems.push(format!(
                "DATABASE_URL connects as {name:?}, a superuser; superusers bypass row level security. \
                 Connect as the gateway role {:?} instead.",
                self.roles.gateway()
            ));
        }
        if get::<bool>(&login, "rolbypassrls")? {
            problems.push(format!(
                "DATABASE_URL connects as {name:?}, which has BYPASSRLS. Run `ALTER ROLE {name} NOBYPASSRLS` \
                 or connect as {:?}.",
                self.roles.gateway()
            ));
        }
        if get::<bool>(&login, "rolinherit")? {
            problems.push(format!(
                "role {name:?} inherits privileges; without a role switch it would act as an application \
                 role. Run `ALTER ROLE {name} NOINHERIT`."
            ));
        }

        let tables = all(
                &txn,
                "select n.nspname || '.' || c.relname as name, c.relrowsecurity, c.relforcerowsecurity, \
                        pg_catalog.pg_has_role(current_user, c.relowner, 'MEMBER') as owned, \
                        pg_catalog.has_table_privilege(current_user, c.oid, \
                            'SELECT, INSERT, UPDATE, DELETE, TRUNCATE') as privileged \
                 from pg_catalog.pg_class c \
                 join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                 where n.nspname = any($1::text[]) and c.relkind in ('r', 'p') \
                 order by 1",
                [PROTECTED_SCHEMAS.into()],
            )
            .await?;
        if tables.is_empty() {
            problems.push("no Rowguard tables found: run `rowguard migrate` first.".to_owned());
        }
        for table in &tables {
            let table_name: String = get(table, "name")?;
            if get::<bool>(table, "owned")? {
                problems.push(format!(
                    "role {name:?} owns (or may act as the owner of) {table_name}; \
                     owners bypass row level security. Connect as {:?}, which owns nothing.",
                    self.roles.gateway()
                ));
            }
            if get::<bool>(table, "privileged")? {
                problems.push(format!(
                    "role {name:?} has table privileges on {table_name} of its own; \
                     run `REVOKE ALL ON {table_name} FROM {name}, PUBLIC`."
                ));
            }
            if !get::<bool>(table, "relrowsecurity")? {
                problems.push(format!(
                    "{table_name} does not have row level security enabled; run \
                     `ALTER TABLE {table_name} ENABLE ROW LEVEL SECURITY` \
                     (or re-run `rowguard migrate`)."
                ));
            }
            if FORCED_TABLES.contains(&table_name.as_str())
                && !get::<bool>(table, "relforcerowsecurity")?
            {
                problems.push(format!(
                    "{table_name} does not FORCE row level security, so its owner \
                     bypasses it; run `ALTER TABLE {table_name} FORCE ROW LEVEL SECURITY`."
                ));
            }
        }

        for role in [
            self.roles.clinician(),
            self.roles.coordinator(),
            self.roles.auditor(),
        ] {
            let member = one(
                &txn,
                    "select exists (select from pg_catalog.pg_roles where rolname = $1) as present, \
                            coalesce((select pg_catalog.pg_has_role(current_user, oid, 'MEMBER') \
                                      from pg_catalog.pg_roles where rolname = $1), false) as member",
                    [role.clone().into()],
                )
                .await?;
            if !get::<bool>(&member, "present")? {
                problems.push(format!(
                    "application role {role:?} does not exist; check ROWGUARD_ROLE_PREFIX \
                     (now {:?}) and run `rowguard migrate`.",
                    self.roles.prefix()
                ));
            } else if !get::<bool>(&member, "member")? {
                problems.push(format!(
                    "role {name:?} cannot switch to {role:?}; run `GRANT {role} TO {name}`."
                ));
            }
        }

        txn.rollback().await.map_err(DbError::from)?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SelfCheckError::Failed(SelfCheckFailed { problems }))
        }
    }
}

async fn one<const N: usize>(
    txn: &DatabaseTransaction,
    sql: &str,
    values: [Value; N],
) -> Result<QueryResult, DbError> {
    txn.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await
    .map_err(DbError::from)?
    .ok_or_else(|| DbError::Statement(sea_orm::DbErr::RecordNotFound(sql.to_owned())))
}

async fn all<const N: usize>(
    txn: &DatabaseTransaction,
    sql: &str,
    values: [Value; N],
) -> Result<Vec<QueryResult>, DbError> {
    txn.query_all_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await
    .map_err(DbError::from)
}

/// Why the self-check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum SelfCheckError {
    #[error(transparent)]
    Failed(#[from] SelfCheckFailed),
    #[error(
        "could not run the startup self-check: {error}{why}",
        error = .0,
        why = .0.connection_failure().map(|why| format!(" ({why})")).unwrap_or_default()
    )]
    Database(#[from] DbError),
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, column: &str) -> Result<T, DbError> {
    row.try_get("", column).map_err(DbError::Statement)
}
