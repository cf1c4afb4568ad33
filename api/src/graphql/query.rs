//! Read operations. Every one runs in the request's read-only RLS scope.

use async_graphql::{Context, ID, Object, Result};
use entities::clinician;
use sea_orm::sea_query::Expr;
use sea_orm::sea_query::extension::postgres::PgExpr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::pagination::{PatientConnection, find_patient, patients_page, search_pattern};
use super::request_db;
use super::types::{Clinician, ClinicianRow, Patient};
use crate::audit::record::{AuditAction, AuditOutcome};
use crate::db::DbError;
use crate::error::ApiError;

/// Entry points for reading: the clinical API and the auditor's API.
#[derive(Debug, Default, async_graphql::MergedObject)]
pub struct Query(ClinicalQuery, super::audit_api::AuditQuery);

/// Clinical entry points (merged into `Query`).
#[derive(Debug, Default)]
pub struct ClinicalQuery;

/// Entry points for reading. A query operation runs in one read-only transaction as the
/// signed-in person; PostgreSQL's row level security decides which rows exist for them.
#[Object]
impl ClinicalQuery {
    /// The signed-in person, or null when their identity-provider account is not enrolled (or
    /// is inactive) in Rowguard.
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<Clinician>> {
        let request = request_db(ctx)?;
        let Some(id) = request.clinician_id().await? else {
            return Ok(None);
        };
        Ok(find_clinician(&request, id).await?)
    }

    /// The patients the signed-in person may see, ordered by id (stable across pages).
    /// Clinicians see the patients assigned to them; coordinators see every patient's
    /// demographics.
    async fn patients(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size (default 20, at most the server's maximum page size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last edge of the previous page.")] after: Option<String>,
        #[graphql(desc = "Case-insensitive match on given name, family name or MRN.")]
        search: Option<String>,
    ) -> Result<PatientConnection> {
        let request = request_db(ctx)?;
        Ok(patients_page(ctx, &request, first, after, search).await?)
    }

    /// One patient by id, or null when it does not exist *or* the signed-in person may not see
    /// it: the two cases are indistinguishable by design.
    async fn patient(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The patient's id.")] id: ID,
    ) -> Result<Option<Patient>> {
        let Ok(id) = id.parse::<Uuid>() else {
            return Err(ApiError::bad_input("id", "is not a patient id").into());
        };
        let request = request_db(ctx)?;
        let row = {
            let conn = request.conn().await?;
            find_patient(&conn, id).await
        };
        match &row {
            Ok(Some(_)) => request.record(AuditAction::Read, AuditOutcome::Success, [id]),
            // Recorded as asked: an invisible patient and a non-existent id look the same here.
            Ok(None) => request.record(AuditAction::Read, AuditOutcome::NotVisible, [id]),
            Err(e) => request.record(AuditAction::Read, AuditOutcome::from_error(e), [id]),
        }
        let row = row?;
        Ok(row.map(Patient))
    }

    /// The clinician directory, ordered by display name. Coordinators see everyone (to assign
    /// from); clinicians see themselves and the care teams of their own patients.
    async fn clinicians(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Case-insensitive match on the display name.")] search: Option<String>,
    ) -> Result<Vec<Clinician>> {
        let request = request_db(ctx)?;
        let mut query = clinician::Entity::find()
            .select_only()
            .columns([
                clinician::Column::Id,
                clinician::Column::DisplayName,
                clinician::Column::Active,
            ])
            .order_by_asc(clinician::Column::DisplayName)
            .order_by_asc(clinician::Column::Id)
            .limit(1000);
        if let Some(pattern) = search_pattern(search)? {
            query = query.filter(Expr::col(clinician::Column::DisplayName).ilike(pattern));
        }
        let conn = request.conn().await?;
        let rows = query
            .into_model::<ClinicianRow>()
            .all(&conn)
            .await
            .map_err(DbError::from)
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(Clinician).collect())
    }
}

/// A clinician by id, as the caller may see them.
pub async fn find_clinician(
    request: &super::RequestDb,
    id: i32,
) -> Result<Option<Clinician>, ApiError> {
    let conn = request.conn().await?;
    let row = clinician::Entity::find()
        .select_only()
        .columns([
            clinician::Column::Id,
            clinician::Column::DisplayName,
            clinician::Column::Active,
        ])
        .filter(clinician::Column::Id.eq(id))
        .into_model::<ClinicianRow>()
        .one(&conn)
        .await
        .map_err(DbError::from)?;
    Ok(row.map(Clinician))
}
