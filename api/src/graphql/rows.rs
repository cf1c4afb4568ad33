//! The rows resolvers read and the statements that read and write them. Every function takes
//! the request's connection (its RLS scope): what comes back is what PostgreSQL let the caller
//! see. The `*_statement` builders are public so the benchmark replays exactly these statements
//! under pgbench.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use entities::clinician_patient::CareRole;
use entities::{audit_event, clinician, clinician_patient, emergency_grant, patient};
use sea_orm::sea_query::extension::postgres::{PgExpr, PgFunc};
use sea_orm::sea_query::{Expr, ExprTrait, Query as SqlQuery};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityName, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement,
};
use uuid::Uuid;

use super::connection::PageArgs;
use super::inputs::SearchPattern;
use crate::audit::canonical::{EVENT_COLUMNS, EventRow};
use crate::db::DbError;

/// The patient columns every reader may select (clinical notes are read separately, so a
/// coordinator can list patients without touching a column they are not granted).
#[derive(Debug, Clone, FromQueryResult)]
pub struct PatientRow {
    pub id: Uuid,
    pub mrn: String,
    pub given_name: String,
    pub family_name: String,
    pub birth_date: NaiveDate,
    pub version: i32,
    pub updated_at: DateTime<FixedOffset>,
}

const PATIENT_COLUMNS: [patient::Column; 7] = [
    patient::Column::Id,
    patient::Column::Mrn,
    patient::Column::GivenName,
    patient::Column::FamilyName,
    patient::Column::BirthDate,
    patient::Column::Version,
    patient::Column::UpdatedAt,
];

/// What a patient's access report shows of one event: not its other patients, whose ids
/// (up to thousands in an auditor's read of the trail) the report would only carry and drop.
#[derive(Debug, Clone, FromQueryResult)]
pub struct AccessRow {
    pub occurred_at: DateTime<FixedOffset>,
    pub clinician_id: Option<i32>,
    pub app_role: String,
    pub action: audit_event::Action,
    pub outcome: audit_event::Outcome,
    pub purpose: audit_event::Purpose,
}

const ACCESS_COLUMNS: [audit_event::Column; 6] = [
    audit_event::Column::OccurredAt,
    audit_event::Column::ClinicianId,
    audit_event::Column::AppRole,
    audit_event::Column::Action,
    audit_event::Column::Outcome,
    audit_event::Column::Purpose,
];

/// The clinician columns every role that reads clinicians may select.
#[derive(Debug, Clone, FromQueryResult)]
pub struct ClinicianRow {
    pub id: i32,
    pub display_name: String,
    pub active: bool,
}

const CLINICIAN_COLUMNS: [clinician::Column; 3] = [
    clinician::Column::Id,
    clinician::Column::DisplayName,
    clinician::Column::Active,
];

/// One clinician on a patient's care team.
#[derive(Debug, Clone)]
pub struct CareTeamRow {
    pub clinician: ClinicianRow,
    pub care_role: CareRole,
    pub assigned_at: DateTime<FixedOffset>,
}

/// One patient's row, or `None` when it does not exist or is not visible.
pub async fn patient(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<PatientRow>, DbError> {
    Ok(PatientRow::find_by_statement(patient_statement(id))
        .one(conn)
        .await?)
}

pub fn patient_statement(id: Uuid) -> Statement {
    patient::Entity::find_by_id(id)
        .select_only()
        .columns(PATIENT_COLUMNS)
        .limit(1)
        .build(DbBackend::Postgres)
}

/// A page of the patients the caller may see, ordered by id (up to `page.limit()` rows).
pub async fn patients_page(
    conn: &impl ConnectionTrait,
    page: &PageArgs<Uuid>,
    search: Option<&SearchPattern>,
    assigned_to: Option<i32>,
) -> Result<Vec<PatientRow>, DbError> {
    let statement = patients_page_statement(
        page.limit(),
        page.after,
        search.map(|s| s.0.as_str()),
        assigned_to,
    );
    Ok(PatientRow::find_by_statement(statement).all(conn).await?)
}

/// `assigned_to` drives the query from a clinician's own assignments (PostgreSQL still
/// enforces the policy): this keeps the cost proportional to their list, not the table.
pub fn patients_page_statement(
    limit: u64,
    after: Option<Uuid>,
    search: Option<&str>,
    assigned_to: Option<i32>,
) -> Statement {
    let mut query = patient::Entity::find()
        .select_only()
        .columns(PATIENT_COLUMNS)
        .order_by_asc(patient::Column::Id);
    if let Some(after) = after {
        query = query.filter(patient::Column::Id.gt(after));
    }
    if let Some(pattern) = search {
        query = query.filter(
            Condition::any()
                .add(Expr::col(patient::Column::GivenName).ilike(pattern))
                .add(Expr::col(patient::Column::FamilyName).ilike(pattern))
                .add(Expr::col(patient::Column::Mrn).ilike(pattern)),
        );
    }
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
    // The page size goes into the SQL as a literal (a validated integer, never caller text). As a
    // bound parameter, PostgreSQL prices the cached generic plan for an unknown LIMIT — far above
    // the custom plan — so it re-planned the statement on every request (at 1M patients that
    // cost 30% of read throughput); with the literal, the generic plan costs the same and is
    // reused.
    let mut statement = query.build(DbBackend::Postgres);
    statement.sql.push_str(&format!(" LIMIT {limit}"));
    statement
}

#[derive(Debug, FromQueryResult)]
struct OwnedPatientRow {
    owner: i32,
    #[sea_orm(nested)]
    patient: PatientRow,
}

/// One page each of many clinicians' patients that the caller may also see, in ONE statement:
/// row level security filters both the assignments (a clinician sees only their own patients'
/// care teams) and the patients.
pub async fn patients_of_clinicians(
    conn: &impl ConnectionTrait,
    clinicians: &[i32],
    page: &PageArgs<Uuid>,
    search: Option<&SearchPattern>,
) -> Result<HashMap<i32, Vec<PatientRow>>, DbError> {
    // The LIMIT is a validated integer (see `patients_page`).
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
        page.limit()
    );
    let rows = OwnedPatientRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [
            clinicians.to_vec().into(),
            page.after.into(),
            search.map(|s| s.0.clone()).into(),
        ],
    ))
    .all(conn)
    .await?;
    let mut pages: HashMap<i32, Vec<PatientRow>> =
        clinicians.iter().map(|c| (*c, Vec::new())).collect();
    for row in rows {
        pages.entry(row.owner).or_default().push(row.patient);
    }
    Ok(pages)
}

/// The care teams of `patients`, each ordered by assignment time. A member whose clinician row
/// is invisible is left out rather than shown half (both rows passed their own policies).
pub async fn care_teams(
    conn: &impl ConnectionTrait,
    patients: &[Uuid],
) -> Result<HashMap<Uuid, Vec<CareTeamRow>>, DbError> {
    let assignments =
        clinician_patient::Model::find_by_statement(care_team_assignments_statement(patients))
            .all(conn)
            .await?;
    let ids: Vec<i32> = assignments.iter().map(|a| a.clinician_id).collect();
    let clinicians: HashMap<i32, ClinicianRow> =
        ClinicianRow::find_by_statement(clinicians_by_id_statement(&ids))
            .all(conn)
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
    let mut teams: HashMap<Uuid, Vec<CareTeamRow>> = HashMap::new();
    for a in assignments {
        if let Some(row) = clinicians.get(&a.clinician_id) {
            teams.entry(a.patient_id).or_default().push(CareTeamRow {
                clinician: row.clone(),
                care_role: a.care_role,
                assigned_at: a.assigned_at,
            });
        }
    }
    for team in teams.values_mut() {
        team.sort_by_key(|m| (m.assigned_at, m.clinician.id));
    }
    Ok(teams)
}

/// The assignments of `patients`. Lists are bound as one array (`= ANY($1)`), so the statement
/// text, and PostgreSQL's cached plan for it, are the same however many patients a page has.
pub fn care_team_assignments_statement(patients: &[Uuid]) -> Statement {
    clinician_patient::Entity::find()
        .filter(
            Expr::col(clinician_patient::Column::PatientId)
                .eq(PgFunc::any(Expr::val(patients.to_vec()))),
        )
        .build(DbBackend::Postgres)
}

/// Clinicians by id (those the caller may see).
pub fn clinicians_by_id_statement(ids: &[i32]) -> Statement {
    clinician::Entity::find()
        .select_only()
        .columns(CLINICIAN_COLUMNS)
        .filter(Expr::col(clinician::Column::Id).eq(PgFunc::any(Expr::val(ids.to_vec()))))
        .build(DbBackend::Postgres)
}

/// The clinical notes of `patients`. The raw driver error is returned: for roles without the
/// column grant PostgreSQL refuses the statement, which the caller tells apart.
pub async fn clinical_notes(
    conn: &impl ConnectionTrait,
    patients: &[Uuid],
) -> Result<Vec<(Uuid, String)>, DbErr> {
    patient::Entity::find()
        .select_only()
        .columns([patient::Column::Id, patient::Column::ClinicalNotes])
        .filter(Expr::col(patient::Column::Id).eq(PgFunc::any(Expr::val(patients.to_vec()))))
        .into_tuple::<(Uuid, String)>()
        .all(conn)
        .await
}

/// One clinician, as the caller may see them.
pub async fn clinician(
    conn: &impl ConnectionTrait,
    id: i32,
) -> Result<Option<ClinicianRow>, DbError> {
    Ok(clinician::Entity::find()
        .select_only()
        .columns(CLINICIAN_COLUMNS)
        .filter(clinician::Column::Id.eq(id))
        .into_model::<ClinicianRow>()
        .one(conn)
        .await?)
}

/// The clinician directory as the caller may see it, ordered by display name (at most 1000).
pub async fn clinicians(
    conn: &impl ConnectionTrait,
    search: Option<&SearchPattern>,
) -> Result<Vec<ClinicianRow>, DbError> {
    let mut query = clinician::Entity::find()
        .select_only()
        .columns(CLINICIAN_COLUMNS)
        .order_by_asc(clinician::Column::DisplayName)
        .order_by_asc(clinician::Column::Id)
        .limit(1000);
    if let Some(SearchPattern(pattern)) = search {
        query = query.filter(Expr::col(clinician::Column::DisplayName).ilike(pattern));
    }
    Ok(query.into_model::<ClinicianRow>().all(conn).await?)
}

/// Conditions on audit events; all given ones must hold.
#[derive(Debug, Default)]
pub struct AuditEventConditions {
    pub patient: Option<Uuid>,
    pub clinician: Option<i32>,
    pub action: Option<audit_event::Action>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Events that recorded an access to `patient`: those after `after`, and of them only the first
/// `limit` (in id order) when nothing else filters them. Not `patient_ids @> array[patient]`:
/// under the auditor's row level security that operator (not leakproof) cannot use the GIN index,
/// so every report read the whole trail. `rowguard_audit.patient_event_ids` finds the ids through
/// the index (migration 0010) and the events are then read by id, under the policy as before.
fn accessed_patient(patient: Uuid, after: Option<i64>, limit: Option<u64>) -> Expr {
    // A page size is at most the server's maximum, the report's cap is `PATIENT_REPORT_LIMIT`.
    let limit = limit.and_then(|l| i32::try_from(l).ok());
    Expr::col((audit_event::Entity, audit_event::Column::Id)).eq(PgFunc::any(
        Expr::cust_with_values(
            "array(select rowguard_audit.patient_event_ids($1, $2, $3))",
            [sea_orm::Value::from(patient), after.into(), limit.into()],
        ),
    ))
}

/// A page of the audit trail, oldest first (up to `page.limit()` rows).
pub async fn audit_events(
    conn: &impl ConnectionTrait,
    page: &PageArgs<i64>,
    conditions: &AuditEventConditions,
) -> Result<Vec<audit_event::Model>, DbError> {
    let mut query = audit_event::Entity::find()
        .order_by_asc(audit_event::Column::Id)
        .limit(page.limit());
    if let Some(after) = page.after {
        query = query.filter(audit_event::Column::Id.gt(after));
    }
    if let Some(patient) = conditions.patient {
        // With further conditions the patient's first `limit` events might not match them, so
        // the bound applies only when the patient is the one condition.
        let only_patient = conditions.clinician.is_none()
            && conditions.action.is_none()
            && conditions.from.is_none()
            && conditions.to.is_none();
        query = query.filter(accessed_patient(
            patient,
            page.after,
            only_patient.then(|| page.limit()),
        ));
    }
    if let Some(clinician) = conditions.clinician {
        query = query.filter(audit_event::Column::ClinicianId.eq(clinician));
    }
    if let Some(action) = conditions.action {
        query = query.filter(audit_event::Column::Action.eq(action));
    }
    if let Some(from) = conditions.from {
        query = query.filter(audit_event::Column::OccurredAt.gte(from));
    }
    if let Some(to) = conditions.to {
        query = query.filter(audit_event::Column::OccurredAt.lt(to));
    }
    Ok(query.all(conn).await?)
}

/// Most events one patient's access report returns; a period holding more is refused, never
/// cut short (a report that silently left out the latest accesses hid them, and anyone able to
/// look a patient up could push the record past the bound).
pub const PATIENT_REPORT_LIMIT: u64 = 10_000;

/// The period of a patient's accounting: events at or after `from`, before `to`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Period {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl Period {
    /// Ids of the events in the period that accessed `patient`, the first past the bound
    /// included (it tells the bound was passed). The period is applied where the events are
    /// found (migration 0017), so a short period of a long history reads only its own months.
    fn accessed(&self, patient: Uuid) -> Expr {
        Expr::col((audit_event::Entity, audit_event::Column::Id)).eq(PgFunc::any(
            Expr::cust_with_values(
                "array(select rowguard_audit.patient_event_ids_between($1, $2, $3, $4))",
                [
                    sea_orm::Value::from(patient),
                    self.from.into(),
                    self.to.into(),
                    i32::try_from(PATIENT_REPORT_LIMIT + 1).ok().into(),
                ],
            ),
        ))
    }
}

/// Every recorded access to one patient in `period` (at most [`PATIENT_REPORT_LIMIT`] + 1:
/// more than the limit means the period holds too many), oldest first, with the names of the
/// people who acted.
pub async fn patient_accesses(
    conn: &impl ConnectionTrait,
    patient: Uuid,
    period: Period,
) -> Result<(Vec<AccessRow>, HashMap<i32, String>), DbError> {
    // The period again outside, so the ids are looked up only in its partitions.
    let mut query = audit_event::Entity::find()
        .select_only()
        .columns(ACCESS_COLUMNS)
        .filter(period.accessed(patient));
    if let Some(from) = period.from {
        query = query.filter(audit_event::Column::OccurredAt.gte(from));
    }
    if let Some(to) = period.to {
        query = query.filter(audit_event::Column::OccurredAt.lt(to));
    }
    let events = query
        .order_by_asc(audit_event::Column::Id)
        .limit(PATIENT_REPORT_LIMIT + 1)
        .into_model::<AccessRow>()
        .all(conn)
        .await?;
    let ids: Vec<i32> = events.iter().filter_map(|e| e.clinician_id).collect();
    let names = clinician::Entity::find()
        .select_only()
        .columns([clinician::Column::Id, clinician::Column::DisplayName])
        .filter(clinician::Column::Id.is_in(ids))
        .into_tuple::<(i32, String)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    Ok((events, names))
}

/// Every recorded access to one patient in `period` as full trail rows (at most
/// [`PATIENT_REPORT_LIMIT`] + 1, as [`patient_accesses`]), oldest first.
pub async fn patient_access_events(
    conn: &impl ConnectionTrait,
    patient: Uuid,
    period: Period,
) -> Result<Vec<EventRow>, DbError> {
    Ok(EventRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!(
            "select {EVENT_COLUMNS} from rowguard_audit.events \
             where id = any(array(select rowguard_audit.patient_event_ids_between($1, $2, $3, {limit}))) \
             and occurred_at >= coalesce($2, '-infinity'::timestamptz) \
             and occurred_at < coalesce($3, 'infinity'::timestamptz) \
             order by id limit {limit}",
            limit = PATIENT_REPORT_LIMIT + 1
        ),
        [patient.into(), period.from.into(), period.to.into()],
    ))
    .all(conn)
    .await?)
}

/// Emergency-access grants (at most 1000): newest first, or, awaiting review only, oldest
/// first. A review queue is worked from its oldest end, and new grants must not push an older
/// one out of it: newest first, a clinician who then requests a thousand more would hide the
/// grant they want nobody to look at.
pub async fn grants(
    conn: &impl ConnectionTrait,
    pending_review_only: bool,
) -> Result<Vec<emergency_grant::Model>, DbError> {
    let query = emergency_grant::Entity::find().limit(1000);
    let query = if pending_review_only {
        query
            .filter(emergency_grant::Column::ReviewedAt.is_null())
            .order_by_asc(emergency_grant::Column::Id)
    } else {
        query.order_by_desc(emergency_grant::Column::Id)
    };
    Ok(query.all(conn).await?)
}

/// One grant, as the caller may see it.
pub async fn grant(
    conn: &impl ConnectionTrait,
    id: i64,
) -> Result<Option<emergency_grant::Model>, DbError> {
    Ok(emergency_grant::Entity::find_by_id(id).one(conn).await?)
}

/// A validated change to a patient's record: only the given fields change.
#[derive(Debug, Clone, Default)]
pub struct PatientChanges {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub clinical_notes: Option<String>,
}

impl PatientChanges {
    pub fn is_empty(&self) -> bool {
        self.given_name.is_none()
            && self.family_name.is_none()
            && self.birth_date.is_none()
            && self.clinical_notes.is_none()
    }
}

/// The UPDATE of a patient, applied only if the version is still the one the caller read.
pub fn patient_update_statement(
    id: Uuid,
    expected_version: i32,
    changes: &PatientChanges,
) -> Statement {
    let mut update = patient::Entity::update_many()
        .filter(patient::Column::Id.eq(id))
        .filter(patient::Column::Version.eq(expected_version));
    if let Some(value) = &changes.given_name {
        update = update.col_expr(patient::Column::GivenName, Expr::value(value.clone()));
    }
    if let Some(value) = &changes.family_name {
        update = update.col_expr(patient::Column::FamilyName, Expr::value(value.clone()));
    }
    if let Some(value) = changes.birth_date {
        update = update.col_expr(patient::Column::BirthDate, Expr::value(value));
    }
    if let Some(value) = &changes.clinical_notes {
        update = update.col_expr(patient::Column::ClinicalNotes, Expr::value(value.clone()));
    }
    update.build(DbBackend::Postgres)
}
