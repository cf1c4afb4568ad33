//! The auditor's API: the audit trail, the accounting of disclosures a patient may ask for, and
//! the listing of emergency-access grants. PostgreSQL decides who may read what: the trail is
//! granted to the auditor role only. Every read here is itself recorded.

use async_graphql::{Context, ID, Object, Result};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::connection::{Connection, PageArgs};
use super::context::{RequestDb, limits, request_db};
use super::inputs::{ClinicianId, PatientId};
use super::rows::{self, AuditEventConditions, Period};
use super::types::{AuditEvent, AuditEventFilter, EmergencyAccessGrant, PatientAccess};
use crate::audit::fhir::audit_event_about;
use crate::audit::record::{AuditAction, AuditOutcome};
use crate::error::{ApiError, ErrorCode};
use crate::principal::AppRole;

/// Records an audit-trail read (itself an auditable access) and passes its result on.
fn recorded<T>(
    request: &RequestDb,
    patients: Vec<Uuid>,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let outcome = match &result {
        Ok(_) => AuditOutcome::Success,
        Err(e) => AuditOutcome::from(e),
    };
    request.record(AuditAction::AuditRead, outcome, patients);
    result
}

/// The period asked for; one that ends before it starts is the caller's mistake, not a period
/// without accesses.
fn period(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<Period, ApiError> {
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(ApiError::bad_input("to", "must be later than `from`"));
    }
    Ok(Period { from, to })
}

/// `events`, unless there are more than a report may hold.
fn within_report_limit<T>(events: Vec<T>) -> Result<Vec<T>, ApiError> {
    if events.len() as u64 > rows::PATIENT_REPORT_LIMIT {
        return Err(ApiError::new(
            ErrorCode::BadUserInput,
            format!(
                "more than {} accesses to this patient fall in the period asked for; ask for a \
                 shorter one with `from` and `to` (nothing is left out of a report)",
                rows::PATIENT_REPORT_LIMIT
            ),
        ));
    }
    Ok(events)
}

/// Auditor entry points (merged into `Query`).
#[derive(Debug, Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The audit trail, oldest first. Auditors only.
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Conditions the events must meet.")] filter: Option<AuditEventFilter>,
        #[graphql(desc = "Page size (default 20, at most the server's maximum page size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last edge of the previous page.")] after: Option<String>,
    ) -> Result<Connection<AuditEvent>> {
        let page = PageArgs::<i64>::parse(limits(ctx)?.max_page_size, first, after)?;
        let filter = filter.unwrap_or_default();
        let conditions = AuditEventConditions {
            patient: filter
                .patient_id
                .map(|p| PatientId::parse(&p, "filter.patientId"))
                .transpose()?
                .map(|p| p.0),
            clinician: filter
                .clinician_id
                .map(|c| ClinicianId::parse(&c, "filter.clinicianId"))
                .transpose()?
                .map(|c| c.0),
            action: filter.action.map(Into::into),
            from: filter.from,
            to: filter.to,
        };
        let request = request_db(ctx)?;
        let events = if page.first == 0 {
            Ok(Vec::new())
        } else {
            let conn = request.conn().await?;
            rows::audit_events(&conn, &page, &conditions)
                .await
                .map_err(ApiError::from)
        };
        // The events name the patients whose records were reached, and who reached them: a
        // disclosure about each of those patients, so each is recorded (and shows in their
        // access report), not only the one filtered on.
        let mut patients: std::collections::BTreeSet<Uuid> =
            conditions.patient.into_iter().collect();
        if let Ok(events) = &events {
            let shown = page.shown(events.len());
            patients.extend(
                events[..shown]
                    .iter()
                    .flat_map(|e| e.patient_ids.iter().copied()),
            );
        }
        let events = recorded(&request, patients.into_iter().collect(), events)?;
        Ok(page.connection(events, |e| e.id, AuditEvent))
    }

    /// Who accessed this patient's record, in any role, when and why: the accounting of
    /// disclosures a patient may ask for, oldest first. Auditors only. A period holding more
    /// than 10,000 accesses is refused (`BAD_USER_INPUT`), never cut short: ask for a shorter
    /// one with `from` and `to`.
    async fn patient_access_report(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The patient the report is about.")] patient_id: ID,
        #[graphql(desc = "Only accesses at or after this time.")] from: Option<DateTime<Utc>>,
        #[graphql(desc = "Only accesses before this time.")] to: Option<DateTime<Utc>>,
    ) -> Result<Vec<PatientAccess>> {
        let PatientId(patient) = PatientId::parse(&patient_id, "patientId")?;
        let window = period(from, to)?;
        let request = request_db(ctx)?;
        let report = {
            let conn = request.conn().await?;
            rows::patient_accesses(&conn, patient, window)
                .await
                .map_err(ApiError::from)
                .and_then(|(events, names)| within_report_limit(events).map(|e| (e, names)))
        };
        let (events, names) = recorded(&request, vec![patient], report)?;
        Ok(events
            .into_iter()
            .map(|event| {
                let name = event.clinician_id.and_then(|id| names.get(&id).cloned());
                PatientAccess::new(event, name)
            })
            .collect())
    }

    /// The same accounting as FHIR R4: a `Bundle` (type `collection`) of `AuditEvent` resources
    /// in the shape `rowguard audit export` writes (IHE BALP; only this patient appears in each),
    /// as JSON text. Auditors only. Refused, like the report, for a period of more than 10,000
    /// accesses, and when the bundle would pass the server's answer size: ask for a shorter
    /// period with `from` and `to`.
    async fn patient_access_fhir_bundle(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The patient the report is about.")] patient_id: ID,
        #[graphql(desc = "Only accesses at or after this time.")] from: Option<DateTime<Utc>>,
        #[graphql(desc = "Only accesses before this time.")] to: Option<DateTime<Utc>>,
    ) -> Result<String> {
        let PatientId(patient) = PatientId::parse(&patient_id, "patientId")?;
        let window = period(from, to)?;
        let request = request_db(ctx)?;
        let events = {
            let conn = request.conn().await?;
            rows::patient_access_events(&conn, patient, window)
                .await
                .map_err(ApiError::from)
                .and_then(within_report_limit)
        };
        let events = recorded(&request, vec![patient], events)?;
        let entries: Vec<serde_json::Value> = events
            .iter()
            .filter_map(|event| audit_event_about(event, &patient))
            .map(|resource| serde_json::json!({ "resource": resource }))
            .collect();
        let bundle = serde_json::json!({
            "resourceType": "Bundle",
            "type": "collection",
            "entry": entries,
        });
        Ok(bundle.to_string())
    }

    /// Emergency-access grants, newest first, at most 1,000: auditors see all, clinicians their
    /// own. With `pendingReview: true`, the ones awaiting review, oldest first (a review
    /// queue: grants requested later cannot push an earlier one out of it).
    async fn emergency_access_grants(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only grants not yet reviewed.")] pending_review: Option<bool>,
    ) -> Result<Vec<EmergencyAccessGrant>> {
        let request = request_db(ctx)?;
        let grants = {
            let conn = request.conn().await?;
            rows::grants(&conn, pending_review == Some(true))
                .await
                .map_err(ApiError::from)
        };
        // Grants name patients and hold free-text reasons: listing them is an access too.
        let action = if request.principal().role == AppRole::Auditor {
            AuditAction::AuditRead
        } else {
            AuditAction::Read
        };
        let patients: Vec<Uuid> = grants.iter().flatten().map(|g| g.patient_id).collect();
        let outcome = match &grants {
            Ok(_) => AuditOutcome::Success,
            Err(e) => AuditOutcome::from(e),
        };
        request.record(action, outcome, patients);
        Ok(grants?.into_iter().map(EmergencyAccessGrant).collect())
    }
}
