//! The auditor's API: the audit trail, the accounting of disclosures a patient may ask for, and
//! the review of emergency-access grants. PostgreSQL decides who may read what: the trail is
//! granted to the auditor role only.

use async_graphql::connection::PageInfo;
use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, FixedOffset, Utc};
use entities::{audit_event, clinician, emergency_grant};
use sea_orm::sea_query::Expr;
use sea_orm::sea_query::extension::postgres::PgExpr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::{ApiLimits, RequestDb, request_db};
use crate::audit::record::{AuditAction, AuditOutcome};
use crate::db::DbError;
use crate::error::ApiError;
use crate::principal::AppRole;

macro_rules! db_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $db:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            pub fn as_db(self) -> &'static str {
                match self { $($name::$variant => $db),+ }
            }
            pub fn from_db(value: &str) -> Option<Self> {
                match value { $($db => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

db_enum!(
    /// What an audited request did.
    AuditEventAction {
        /// Read patient data.
        Read => "read",
        /// Changed a patient record.
        Update => "update",
        /// Added a clinician to a care team.
        Assign => "assign",
        /// Removed a clinician from a care team.
        Unassign => "unassign",
        /// Enrolled a person.
        Enroll => "enroll",
        /// Opened a patient through break-glass.
        EmergencyAccess => "emergency_access",
        /// Reviewed an emergency-access grant.
        Review => "review",
        /// Read the audit trail.
        AuditRead => "audit_read",
    }
);

db_enum!(
    /// How an audited request ended.
    AuditEventOutcome {
        /// It was carried out.
        Success => "success",
        /// The patient asked for was not visible to the caller (or does not exist).
        NotVisible => "not_visible",
        /// The database refused it for the caller's role.
        Denied => "denied",
        /// It lost an optimistic-concurrency race or would have duplicated something.
        Conflict => "conflict",
        /// What it referred to does not exist.
        NotFound => "not_found",
        /// Its input was rejected.
        Invalid => "invalid",
        /// It succeeded, but the request failed later and it was undone.
        RolledBack => "rolled_back",
        /// It failed for another reason.
        Error => "error",
    }
);

db_enum!(
    /// Why the data was accessed (purpose of use).
    AuditPurpose {
        /// Care of a patient on the clinician's care team.
        Treatment => "treatment",
        /// Break-glass access under an emergency grant.
        Emergency => "emergency",
        /// Coordination work (assignments, enrolment).
        Operations => "operations",
        /// Reading the audit trail.
        Audit => "audit",
    }
);

/// One entry of the tamper-evident audit trail. Ids and codes only: never PHI values.
#[derive(Debug, Clone)]
pub struct AuditEvent(pub audit_event::Model);

/// One entry of the tamper-evident audit trail. Ids and codes only: never PHI values.
#[Object]
impl AuditEvent {
    /// Position in the trail.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// When it happened.
    async fn occurred_at(&self) -> DateTime<FixedOffset> {
        self.0.occurred_at
    }
    /// The request it belongs to (also in the server's logs).
    async fn request_id(&self) -> Option<ID> {
        self.0.request_id.map(|id| ID(id.to_string()))
    }
    /// The enrolled person who acted, if their identity matched one.
    async fn clinician_id(&self) -> Option<ID> {
        self.0.clinician_id.map(|id| ID(id.to_string()))
    }
    /// The token's issuer.
    async fn issuer(&self) -> Option<&str> {
        self.0.issuer.as_deref()
    }
    /// The token's subject.
    async fn subject(&self) -> Option<&str> {
        self.0.subject.as_deref()
    }
    /// The OAuth client the token was issued to.
    async fn client_id(&self) -> Option<&str> {
        self.0.client_id.as_deref()
    }
    /// The database role the request ran as.
    async fn app_role(&self) -> &str {
        &self.0.app_role
    }
    /// The GraphQL operation name the client sent.
    async fn operation_name(&self) -> Option<&str> {
        self.0.operation_name.as_deref()
    }
    /// The SHA-256 of the persisted query, when one was used.
    async fn persisted_query_hash(&self) -> Option<&str> {
        self.0.persisted_query_hash.as_deref()
    }
    /// What was done.
    async fn action(&self) -> Option<AuditEventAction> {
        AuditEventAction::from_db(&self.0.action)
    }
    /// How it ended.
    async fn outcome(&self) -> Option<AuditEventOutcome> {
        AuditEventOutcome::from_db(&self.0.outcome)
    }
    /// Every patient touched (or asked for).
    async fn patient_ids(&self) -> Vec<ID> {
        self.0
            .patient_ids
            .iter()
            .map(|id| ID(id.to_string()))
            .collect()
    }
    /// Why.
    async fn purpose(&self) -> Option<AuditPurpose> {
        AuditPurpose::from_db(&self.0.purpose)
    }
}

/// A page of audit events, oldest first.
#[derive(SimpleObject)]
pub struct AuditEventConnection {
    /// The events on this page, each with its cursor.
    pub edges: Vec<AuditEventEdge>,
    /// Whether more pages follow, and the cursors to ask for them.
    pub page_info: PageInfo,
}

/// One audit event on a page, with the cursor that points at it.
#[derive(Debug, SimpleObject)]
pub struct AuditEventEdge {
    /// Pass as `after` to get the events following this one.
    pub cursor: String,
    /// The event.
    pub node: AuditEvent,
}

/// Narrows `auditEvents`. All given conditions must hold.
#[derive(Debug, Default, InputObject)]
pub struct AuditEventFilter {
    /// Only events that touched this patient.
    pub patient_id: Option<ID>,
    /// Only events by this person.
    pub clinician_id: Option<ID>,
    /// Only this action.
    pub action: Option<AuditEventAction>,
    /// Only events at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only events before this time.
    pub to: Option<DateTime<Utc>>,
}

/// The kind of person behind an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum AccessorRole {
    /// A clinician (treatment, or emergency access).
    Clinician,
    /// A care coordinator (operations).
    Coordinator,
    /// An auditor (reviewing the trail).
    Auditor,
}

impl AccessorRole {
    /// The application role of a database role name (`<prefix>_clinician`, ...).
    pub fn from_db_role(role: &str) -> Option<Self> {
        let role = role.strip_suffix("_writer").unwrap_or(role);
        if role.ends_with("_clinician") {
            Some(Self::Clinician)
        } else if role.ends_with("_coordinator") {
            Some(Self::Coordinator)
        } else if role.ends_with("_auditor") {
            Some(Self::Auditor)
        } else {
            None
        }
    }
}

/// One access to a patient's record, by anyone in any role, for the accounting a patient may
/// ask for.
#[derive(Debug, SimpleObject)]
pub struct PatientAccess {
    /// In which role.
    pub role: Option<AccessorRole>,
    /// When.
    pub occurred_at: DateTime<FixedOffset>,
    /// Who (their enrolled id), if known.
    pub clinician_id: Option<ID>,
    /// Who, by name, if known.
    pub clinician_name: Option<String>,
    /// What was done.
    pub action: Option<AuditEventAction>,
    /// How it ended.
    pub outcome: Option<AuditEventOutcome>,
    /// Why (treatment or emergency).
    pub purpose: Option<AuditPurpose>,
}

/// A break-glass grant: one clinician, one patient, for a limited time.
#[derive(Debug, Clone)]
pub struct EmergencyAccessGrant(pub emergency_grant::Model);

/// A break-glass grant: one clinician, one patient, for a limited time.
#[Object]
impl EmergencyAccessGrant {
    /// Stable identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Who asked.
    async fn clinician_id(&self) -> ID {
        ID(self.0.clinician_id.to_string())
    }
    /// The patient opened.
    async fn patient_id(&self) -> ID {
        ID(self.0.patient_id.to_string())
    }
    /// The stated emergency.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// When access began.
    async fn granted_at(&self) -> DateTime<FixedOffset> {
        self.0.granted_at
    }
    /// When access ends.
    async fn expires_at(&self) -> DateTime<FixedOffset> {
        self.0.expires_at
    }
    /// Whether the grant still opens the patient now.
    async fn active(&self) -> bool {
        self.0.expires_at > Utc::now()
    }
    /// When an auditor reviewed it (null while pending review).
    async fn reviewed_at(&self) -> Option<DateTime<FixedOffset>> {
        self.0.reviewed_at
    }
    /// Which auditor reviewed it.
    async fn reviewed_by(&self) -> Option<ID> {
        self.0.reviewed_by.map(|id| ID(id.to_string()))
    }
}

const CURSOR_PREFIX: &str = "audit:";

fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{id}"))
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    text.strip_prefix(CURSOR_PREFIX)?.parse().ok()
}

fn parse_patient(id: &ID, field: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_input(field, "is not a patient id"))
}

/// Runs an audit-trail read and records it (itself an auditable access).
async fn recorded<T>(
    request: &RequestDb,
    patients: Vec<Uuid>,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let outcome = match &result {
        Ok(_) => AuditOutcome::Success,
        Err(e) => AuditOutcome::from_error(e),
    };
    request.record(AuditAction::AuditRead, outcome, patients);
    result
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
    ) -> Result<AuditEventConnection> {
        let filter = filter.unwrap_or_default();
        let max = ctx.data::<ApiLimits>()?.max_page_size;
        let first = first.unwrap_or(20.min(max));
        if first < 1 || first > max {
            return Err(
                ApiError::bad_input("first", &format!("must be between 1 and {max}")).into(),
            );
        }
        let after = match after {
            Some(c) => Some(decode_cursor(&c).ok_or_else(|| {
                ApiError::bad_input("after", "is not a cursor returned by this API")
            })?),
            None => None,
        };
        let patient = filter
            .patient_id
            .as_ref()
            .map(|p| parse_patient(p, "filter.patientId"))
            .transpose()?;
        let clinician_id: Option<i32> = filter
            .clinician_id
            .as_ref()
            .map(|c| {
                c.parse()
                    .map_err(|_| ApiError::bad_input("filter.clinicianId", "is not a clinician id"))
            })
            .transpose()?;

        let mut query = audit_event::Entity::find()
            .order_by_asc(audit_event::Column::Id)
            .limit(u64::try_from(first).unwrap_or(20) + 1);
        if let Some(after) = after {
            query = query.filter(audit_event::Column::Id.gt(after));
        }
        if let Some(patient) = patient {
            query = query.filter(
                Expr::col(audit_event::Column::PatientIds).contains(Expr::val(vec![patient])),
            );
        }
        if let Some(clinician_id) = clinician_id {
            query = query.filter(audit_event::Column::ClinicianId.eq(clinician_id));
        }
        if let Some(action) = filter.action {
            query = query.filter(audit_event::Column::Action.eq(action.as_db()));
        }
        if let Some(from) = filter.from {
            query = query.filter(audit_event::Column::OccurredAt.gte(from));
        }
        if let Some(to) = filter.to {
            query = query.filter(audit_event::Column::OccurredAt.lt(to));
        }
        let request = request_db(ctx)?;
        let rows = {
            let conn = request.conn().await?;
            query
                .all(&conn)
                .await
                .map_err(DbError::from)
                .map_err(ApiError::from)
        };
        let mut rows = recorded(&request, patient.into_iter().collect(), rows).await?;
        let has_next = rows.len() > first as usize;
        rows.truncate(first as usize);
        let edges: Vec<AuditEventEdge> = rows
            .into_iter()
            .map(|e| AuditEventEdge {
                cursor: encode_cursor(e.id),
                node: AuditEvent(e),
            })
            .collect();
        Ok(AuditEventConnection {
            page_info: PageInfo {
                has_previous_page: after.is_some(),
                has_next_page: has_next,
                start_cursor: edges.first().map(|e| e.cursor.clone()),
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
        })
    }

    /// Who accessed this patient's record, in any role, when and why: the accounting of
    /// disclosures a patient may ask for. Auditors only.
    async fn patient_access_report(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The patient the report is about.")] patient_id: ID,
    ) -> Result<Vec<PatientAccess>> {
        let patient = parse_patient(&patient_id, "patientId")?;
        let request = request_db(ctx)?;
        let report = async {
            let conn = request.conn().await?;
            let events = audit_event::Entity::find()
                .filter(
                    Expr::col(audit_event::Column::PatientIds).contains(Expr::val(vec![patient])),
                )
                .order_by_asc(audit_event::Column::Id)
                .limit(10_000)
                .all(&conn)
                .await
                .map_err(DbError::from)?;
            let ids: Vec<i32> = events.iter().filter_map(|e| e.clinician_id).collect();
            let names: std::collections::HashMap<i32, String> = clinician::Entity::find()
                .select_only()
                .columns([clinician::Column::Id, clinician::Column::DisplayName])
                .filter(clinician::Column::Id.is_in(ids))
                .into_tuple::<(i32, String)>()
                .all(&conn)
                .await
                .map_err(DbError::from)?
                .into_iter()
                .collect();
            Ok::<_, ApiError>(
                events
                    .into_iter()
                    .map(|e| PatientAccess {
                        role: AccessorRole::from_db_role(&e.app_role),
                        occurred_at: e.occurred_at,
                        clinician_id: e.clinician_id.map(|id| ID(id.to_string())),
                        clinician_name: e.clinician_id.and_then(|id| names.get(&id).cloned()),
                        action: AuditEventAction::from_db(&e.action),
                        outcome: AuditEventOutcome::from_db(&e.outcome),
                        purpose: AuditPurpose::from_db(&e.purpose),
                    })
                    .collect(),
            )
        }
        .await;
        Ok(recorded(&request, vec![patient], report).await?)
    }

    /// Emergency-access grants, newest first: auditors see all (with `pendingReview: true`, the
    /// ones awaiting review); clinicians see their own.
    async fn emergency_access_grants(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only grants not yet reviewed.")] pending_review: Option<bool>,
    ) -> Result<Vec<EmergencyAccessGrant>> {
        let mut query = emergency_grant::Entity::find()
            .order_by_desc(emergency_grant::Column::Id)
            .limit(1000);
        if pending_review == Some(true) {
            query = query.filter(emergency_grant::Column::ReviewedAt.is_null());
        }
        let request = request_db(ctx)?;
        let rows = {
            let conn = request.conn().await?;
            query
                .all(&conn)
                .await
                .map_err(DbError::from)
                .map_err(ApiError::from)
        };
        // Grants name patients and hold free-text reasons: listing them is an access too.
        let action = if request.principal().role == AppRole::Auditor {
            AuditAction::AuditRead
        } else {
            AuditAction::Read
        };
        let patients: Vec<Uuid> = rows.iter().flatten().map(|g| g.patient_id).collect();
        let outcome = match &rows {
            Ok(_) => AuditOutcome::Success,
            Err(e) => AuditOutcome::from_error(e),
        };
        request.record(action, outcome, patients);
        Ok(rows?.into_iter().map(EmergencyAccessGrant).collect())
    }
}
