//! Small helpers the specs share.

use std::collections::BTreeSet;

use entities::{clinician, clinician_patient, patient};
use rowguard::db::{AccessMode, Database, DbError, RlsScope};
use rowguard::principal::Principal;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, QuerySelect, Statement, Value};
use uuid::Uuid;

/// Opens a scope for `principal` with a fresh request id.
pub async fn scope(db: &Database, principal: &Principal, mode: AccessMode) -> RlsScope {
    db.scope(principal, mode, Uuid::new_v4())
        .await
        .expect("opening an RLS scope")
}

/// The ids of the patients `scope` can see, through the SeaORM entity.
pub async fn visible_patients(scope: &RlsScope) -> BTreeSet<Uuid> {
    patient::Entity::find()
        .select_only()
        .column(patient::Column::Id)
        .into_tuple::<Uuid>()
        .all(scope.conn())
        .await
        .expect("listing visible patients")
        .into_iter()
        .collect()
}

/// What `principal` sees, each in a read-only scope of its own.
pub async fn patients_seen_by(db: &Database, principal: &Principal) -> BTreeSet<Uuid> {
    let scope = scope(db, principal, AccessMode::ReadOnly).await;
    let seen = visible_patients(&scope).await;
    scope.commit().await.expect("commit");
    seen
}

/// The (clinician, patient) assignments `scope` can see.
pub async fn visible_assignments(scope: &RlsScope) -> BTreeSet<(i32, Uuid)> {
    clinician_patient::Entity::find()
        .select_only()
        .column(clinician_patient::Column::ClinicianId)
        .column(clinician_patient::Column::PatientId)
        .into_tuple::<(i32, Uuid)>()
        .all(scope.conn())
        .await
        .expect("listing visible assignments")
        .into_iter()
        .collect()
}

/// The clinician ids `scope` can see.
pub async fn visible_clinicians(scope: &RlsScope) -> BTreeSet<i32> {
    clinician::Entity::find()
        .select_only()
        .column(clinician::Column::Id)
        .into_tuple::<i32>()
        .all(scope.conn())
        .await
        .expect("listing visible clinicians")
        .into_iter()
        .collect()
}

/// Runs a statement, returning the number of affected rows.
pub async fn execute<C: ConnectionTrait, const N: usize>(
    conn: &C,
    sql: &str,
    values: [Value; N],
) -> Result<u64, DbErr> {
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await
    .map(|r| r.rows_affected())
}

/// Runs a query returning one text column in one row.
pub async fn query_text<C: ConnectionTrait>(conn: &C, sql: &str) -> Result<Option<String>, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await?
        .expect("one row");
    row.try_get("", "value")
}

/// Runs a query returning one bigint column named `value` in one row.
pub async fn query_count<C: ConnectionTrait>(conn: &C, sql: &str) -> Result<i64, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await?
        .expect("one row");
    row.try_get("", "value")
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(err: DbErr) -> String {
    DbError::from(err)
        .sqlstate()
        .unwrap_or_else(|| "none".into())
}

/// PostgreSQL's code for "permission denied".
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// PostgreSQL's code for "cannot execute ... in a read-only transaction".
pub const READ_ONLY_TRANSACTION: &str = "25006";
