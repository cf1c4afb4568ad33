//! Relay cursor pagination over patients: keyset on the primary key, so pages are stable and
//! cost the same however deep the caller pages.

use async_graphql::Context;
use async_graphql::SimpleObject;
use async_graphql::connection::PageInfo;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entities::{clinician_patient, patient};
use sea_orm::sea_query::extension::postgres::PgExpr;
use sea_orm::sea_query::{Expr, Query as SqlQuery};
use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityName, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement,
};
use uuid::Uuid;

use super::loaders::{CareTeams, ClinicalNotes};
use super::types::{Patient, PatientRow};
use super::{ApiLimits, RequestDb};
use crate::audit::record::{AuditAction, AuditOutcome};
use crate::error::ApiError;
use crate::principal::AppRole;

/// A page of patients (Relay cursor connection).
#[derive(SimpleObject)]
pub struct PatientConnection {
    /// The patients on this page, each with its cursor.
    pub edges: Vec<PatientEdge>,
    /// Whether more pages follow, and the cursors to ask for them.
    pub page_info: PageInfo,
}

/// One patient on a page, with the cursor that points at it.
#[derive(Debug, SimpleObject)]
pub struct PatientEdge {
    /// Pass as `after` to get the patients following this one.
    pub cursor: String,
    /// The patient.
    pub node: Patient,
}

impl PatientConnection {
    fn new(has_previous_page: bool, has_next_page: bool, edges: Vec<PatientEdge>) -> Self {
        Self {
            page_info: PageInfo {
                has_previous_page,
                has_next_page,
                start_cursor: edges.first().map(|e| e.cursor.clone()),
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
        }
    }
}

pub const DEFAULT_PAGE_SIZE: i32 = 20;
const CURSOR_PREFIX: &str = "patient:";

fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{id}"))
}

fn decode_cursor(cursor: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(CURSOR_PREFIX)?.parse().ok()
}

/// The columns of [`PatientRow`].
pub const PATIENT_COLUMNS: [patient::Column; 7] = [
    patient::Column::Id,
    patient::Column::Mrn,
    patient::Column::GivenName,
    patient::Column::FamilyName,
    patient::Column::BirthDate,
    patient::Column::Version,
    patient::Column::UpdatedAt,
];

/// A case-insensitive "contains" pattern for `search`, with LIKE's wildcards escaped; `None`
/// for an empty search.
pub fn search_pattern(search: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(search) = search
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    if search.chars().count() > 100 {
        return Err(ApiError::bad_input(
            "search",
            "must be at most 100 characters",
        ));
    }
    let escaped = search
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Ok(Some(format!("%{escaped}%")))
}

/// One patient's row (without clinical notes), as the caller may see it: `None` when it does
/// not exist or is not visible.
pub async fn find_patient(
    conn: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<PatientRow>, ApiError> {
    Ok(patient::Entity::find_by_id(id)
        .select_only()
        .columns(PATIENT_COLUMNS)
        .into_model::<PatientRow>()
        .one(conn)
        .await
        .map_err(crate::db::DbError::from)?)
}

/// A page's arguments, checked: page size within the limit, a cursor this API issued, a search
/// pattern with LIKE's wildcards escaped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageRequest {
    pub first: i32,
    pub after: Option<Uuid>,
    pub search: Option<String>,
}

impl PageRequest {
    pub fn parse(
        max: i32,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
    ) -> Result<Self, ApiError> {
        let first = first.unwrap_or(DEFAULT_PAGE_SIZE.min(max));
        if first < 0 || first > max {
            return Err(ApiError::bad_input(
                "first",
                &format!("must be between 0 and {max}"),
            ));
        }
        let after = match after {
            Some(cursor) => Some(decode_cursor(&cursor).ok_or_else(|| {
                ApiError::bad_input("after", "is not a cursor returned by this API")
            })?),
            None => None,
        };
        Ok(Self {
            first,
            after,
            search: search_pattern(search)?,
        })
    }

    /// The connection for `rows` (up to `first + 1` of them, the extra one telling that more
    /// follow).
    pub fn connection(&self, mut rows: Vec<PatientRow>) -> PatientConnection {
        let has_next = rows.len() > self.first as usize;
        rows.truncate(self.first as usize);
        let edges = rows
            .into_iter()
            .map(|row| PatientEdge {
                cursor: encode_cursor(row.id),
                node: Patient(row),
            })
            .collect();
        PatientConnection::new(self.after.is_some(), has_next, edges)
    }
}

/// One page of the patients the caller may see.
pub async fn patients_page(
    ctx: &Context<'_>,
    request: &RequestDb,
    first: Option<i32>,
    after: Option<String>,
    search: Option<String>,
) -> Result<PatientConnection, ApiError> {
    let max = ctx
        .data::<ApiLimits>()
        .map(|l| l.max_page_size)
        .unwrap_or(DEFAULT_PAGE_SIZE);
    let page = PageRequest::parse(max, first, after, search)?;
    let PageRequest {
        first,
        after,
        search,
    } = page.clone();

    let mut query = patient::Entity::find()
        .select_only()
        .columns(PATIENT_COLUMNS)
        .order_by_asc(patient::Column::Id);
    if let Some(after) = after {
        query = query.filter(patient::Column::Id.gt(after));
    }
    if let Some(pattern) = &search {
        query = query.filter(
            Condition::any()
                .add(Expr::col(patient::Column::GivenName).ilike(pattern))
                .add(Expr::col(patient::Column::FamilyName).ilike(pattern))
                .add(Expr::col(patient::Column::Mrn).ilike(pattern)),
        );
    }
    // Drive the query from assignments (PostgreSQL still enforces the policy): for a clinician
    // that is their own list; this keeps the cost proportional to the list, not the table.
    let assigned_to = match request.principal().role {
        AppRole::Clinician => request.clinician_id().await?,
        _ => None,
    };
    if let Some(clinician) = assigned_to {
        query = query.filter(
            patient::Column::Id.in_subquery(
                SqlQuery::select()
                    .column(clinician_patient::Column::PatientId)
                    .from(clinician_patient::Entity.table_ref())
                    .and_where(clinician_patient::Column::ClinicianId.eq(clinician))
                    .to_owned(),
            ),
        );
    }
    if first == 0 {
        return Ok(page.connection(Vec::new()));
    }

    // The page size goes into the SQL as a literal (a validated integer, never caller text). As a
    // bound parameter, PostgreSQL prices the cached generic plan for an unknown LIMIT — far above
    // the custom plan — so it re-planned the statement on every request (at 1M patients that
    // cost 30% of read throughput); with the literal, the generic plan costs the same and is
    // reused.
    let mut statement = query.build(DbBackend::Postgres);
    statement.sql.push_str(&format!(" LIMIT {}", first + 1));
    let rows = {
        let conn = request.conn().await?;
        PatientRow::find_by_statement(statement)
            .all(&conn)
            .await
            .map_err(crate::db::DbError::from)
    };
    let mut rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            let error = ApiError::from(e);
            request.record(AuditAction::Read, AuditOutcome::from_error(&error), []);
            return Err(error);
        }
    };
    rows.truncate(first as usize + 1);
    let shown = rows.len().min(first as usize);
    request.record(
        AuditAction::Read,
        AuditOutcome::Success,
        rows.iter().take(shown).map(|r| r.id),
    );
    prefetch(
        ctx,
        request,
        rows.iter().take(shown).map(|r| r.id).collect(),
    )
    .await?;
    Ok(page.connection(rows))
}

/// The patients on one clinician's care team that the caller may also see: one page each for
/// many clinicians in ONE statement per distinct page request, so nesting `patients` under a
/// list of clinicians costs a statement, not a statement per clinician.
pub struct ClinicianPagesLoader(pub Arc<RequestDb>);

/// The request's clinician-page loader.
pub type ClinicianPages = DataLoader<ClinicianPagesLoader, HashMapCache>;

#[derive(Debug, FromQueryResult)]
struct OwnedPatientRow {
    owner: i32,
    id: Uuid,
    mrn: String,
    given_name: String,
    family_name: String,
    birth_date: chrono::NaiveDate,
    version: i32,
    updated_at: chrono::DateTime<chrono::FixedOffset>,
}

impl Loader<(i32, PageRequest)> for ClinicianPagesLoader {
    type Value = Vec<PatientRow>;
    type Error = ApiError;

    async fn load(
        &self,
        keys: &[(i32, PageRequest)],
    ) -> Result<HashMap<(i32, PageRequest), Self::Value>, Self::Error> {
        let mut by_page: HashMap<&PageRequest, Vec<i32>> = HashMap::new();
        for (clinician, page) in keys {
            by_page.entry(page).or_default().push(*clinician);
        }
        let mut pages = HashMap::new();
        for (page, clinicians) in by_page {
            // Row level security filters both the assignments (a clinician sees only their own
            // patients' care teams) and the patients; the LIMIT is a validated integer.
            let sql = format!(
                "select c.owner, p.id, p.mrn, p.given_name, p.family_name, p.birth_date, p.version, p.updated_at \
                 from unnest($1::int[]) as c(owner) \
                 cross join lateral ( \
                   select pt.id, pt.mrn, pt.given_name, pt.family_name, pt.birth_date, pt.version, pt.updated_at \
                   from rowguard.patients pt \
                   where pt.id in (select cp.patient_id from rowguard.clinicians_patients cp where cp.clinician_id = c.owner) \
                     and ($2::uuid is null or pt.id > $2::uuid) \
                     and ($3::text is null or pt.given_name ilike $3 or pt.family_name ilike $3 or pt.mrn ilike $3) \
                   order by pt.id limit {} \
                 ) p",
                page.first + 1
            );
            let rows = {
                let conn = self.0.conn().await?;
                OwnedPatientRow::find_by_statement(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    sql,
                    [
                        clinicians.clone().into(),
                        page.after.into(),
                        page.search.clone().into(),
                    ],
                ))
                .all(&conn)
                .await
                .map_err(crate::db::DbError::from)?
            };
            for clinician in clinicians {
                pages.insert((clinician, page.clone()), Vec::new());
            }
            for row in rows {
                if let Some(list) = pages.get_mut(&(row.owner, page.clone())) {
                    list.push(PatientRow {
                        id: row.id,
                        mrn: row.mrn,
                        given_name: row.given_name,
                        family_name: row.family_name,
                        birth_date: row.birth_date,
                        version: row.version,
                        updated_at: row.updated_at,
                    });
                }
            }
        }
        Ok(pages)
    }
}

/// One clinician's page, through the batching loader.
pub async fn clinician_page(
    ctx: &Context<'_>,
    request: &RequestDb,
    clinician: i32,
    first: Option<i32>,
    after: Option<String>,
    search: Option<String>,
) -> Result<PatientConnection, ApiError> {
    let max = ctx
        .data::<ApiLimits>()
        .map(|l| l.max_page_size)
        .unwrap_or(DEFAULT_PAGE_SIZE);
    let page = PageRequest::parse(max, first, after, search)?;
    if page.first == 0 {
        return Ok(page.connection(Vec::new()));
    }
    let loader = ctx
        .data::<ClinicianPages>()
        .map_err(|_| ApiError::internal("no clinician page loader in the request"))?;
    let rows = match loader.load_one((clinician, page.clone())).await {
        Ok(rows) => rows.unwrap_or_default(),
        Err(error) => {
            request.record(AuditAction::Read, AuditOutcome::from_error(&error), []);
            return Err(error);
        }
    };
    request.record(
        AuditAction::Read,
        AuditOutcome::Success,
        rows.iter().take(page.first as usize).map(|r| r.id),
    );
    Ok(page.connection(rows))
}

/// Loads what the client selected on the page's patients in one batch per field, rather than
/// relying on the DataLoader's timing window to gather the whole page.
async fn prefetch(ctx: &Context<'_>, request: &RequestDb, ids: Vec<Uuid>) -> Result<(), ApiError> {
    let node = ctx.look_ahead().field("edges").field("node");
    if node.field("careTeam").exists()
        && let Ok(loader) = ctx.data::<CareTeams>()
    {
        loader.load_many(ids.iter().copied()).await?;
    }
    // Only clinicians hold the clinical-notes grant; for anyone else each field reports its own
    // FORBIDDEN error.
    if node.field("clinicalNotes").exists()
        && request.principal().role == AppRole::Clinician
        && let Ok(loader) = ctx.data::<ClinicalNotes>()
    {
        loader.load_many(ids).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_foreign_strings() {
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        assert_eq!(decode_cursor("not-a-cursor"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("clinician:1")), None);
    }
}
