//! Read operations. Every one runs in the request's read-only RLS scope.

use async_graphql::{Context, ID, Object, Result};
use uuid::Uuid;

use super::audit_query::AuditQuery;
use super::connection::PageArgs;
use super::context::{RequestDb, limits, request_db};
use super::inputs::{PatientId, SearchPattern};
use super::loaders::{CareTeams, ClinicalNotes};
use super::rows;
use super::types::{Clinician, Patient, PatientConnection};
use crate::audit::record::{AuditAction, AuditOutcome};
use crate::error::ApiError;
use crate::principal::AppRole;

/// Entry points for reading: the clinical API and the auditor's API.
#[derive(Debug, Default, async_graphql::MergedObject)]
pub struct Query(ClinicalQuery, AuditQuery);

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
        let conn = request.conn().await?;
        Ok(rows::clinician(&conn, id)
            .await
            .map_err(ApiError::from)?
            .map(Clinician))
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
        let page = PageArgs::<Uuid>::parse(limits(ctx)?.max_page_size, first, after)?;
        let search = SearchPattern::parse(search)?;
        if page.first == 0 {
            return Ok(page.connection(Vec::new(), |r: &rows::PatientRow| r.id, Patient));
        }
        let request = request_db(ctx)?;
        let assigned_to = match request.principal().role {
            AppRole::Clinician => request.clinician_id().await?,
            _ => None,
        };
        let fetched = {
            let conn = request.conn().await?;
            rows::patients_page(&conn, &page, search.as_ref(), assigned_to)
                .await
                .map_err(ApiError::from)
        };
        let rows = match fetched {
            Ok(rows) => rows,
            Err(error) => {
                request.record(AuditAction::Read, AuditOutcome::from(&error), []);
                return Err(error.into());
            }
        };
        let shown: Vec<Uuid> = rows
            .iter()
            .take(page.shown(rows.len()))
            .map(|r| r.id)
            .collect();
        request.record(
            AuditAction::Read,
            AuditOutcome::Success,
            shown.iter().copied(),
        );
        prefetch(ctx, &request, shown).await?;
        Ok(page.connection(rows, |r| r.id, Patient))
    }

    /// One patient by id, or null when it does not exist *or* the signed-in person may not see
    /// it: the two cases are indistinguishable by design.
    async fn patient(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The patient's id.")] id: ID,
    ) -> Result<Option<Patient>> {
        let PatientId(id) = PatientId::parse(&id, "id")?;
        let request = request_db(ctx)?;
        let row = {
            let conn = request.conn().await?;
            rows::patient(&conn, id).await.map_err(ApiError::from)
        };
        let outcome = match &row {
            Ok(Some(_)) => AuditOutcome::Success,
            // Recorded as asked: an invisible patient and a non-existent id look the same here.
            Ok(None) => AuditOutcome::NotVisible,
            Err(e) => AuditOutcome::from(e),
        };
        request.record(AuditAction::Read, outcome, [id]);
        Ok(row?.map(Patient))
    }

    /// The clinician directory, ordered by display name. Coordinators see everyone (to assign
    /// from); clinicians see themselves and the care teams of their own patients.
    async fn clinicians(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Case-insensitive match on the display name.")] search: Option<String>,
    ) -> Result<Vec<Clinician>> {
        let search = SearchPattern::parse(search)?;
        let request = request_db(ctx)?;
        let conn = request.conn().await?;
        let rows = rows::clinicians(&conn, search.as_ref())
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(Clinician).collect())
    }
}

/// Loads what the client selected on the page's patients in one batch per field, rather than
/// relying on the DataLoader's timing window to gather the whole page.
async fn prefetch(ctx: &Context<'_>, request: &RequestDb, ids: Vec<Uuid>) -> Result<(), ApiError> {
    let node = ctx.look_ahead().field("edges").field("node");
    if node.field("careTeam").exists()
        && let Some(loader) = ctx.data_opt::<CareTeams>()
    {
        loader.load_many(ids.iter().copied()).await?;
    }
    // Only clinicians hold the clinical-notes grant; for anyone else each field reports its own
    // FORBIDDEN error.
    if node.field("clinicalNotes").exists()
        && request.principal().role == AppRole::Clinician
        && let Some(loader) = ctx.data_opt::<ClinicalNotes>()
    {
        loader.load_many(ids).await?;
    }
    Ok(())
}
