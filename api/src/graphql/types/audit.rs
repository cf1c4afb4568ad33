//! The audit trail as auditors read it. Ids and codes only: never PHI values.

use async_graphql::{Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, FixedOffset, Utc};
use entities::audit_event;

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
        Some(self.0.action.into())
    }
    /// How it ended.
    async fn outcome(&self) -> Option<AuditEventOutcome> {
        Some(self.0.outcome.into())
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
        Some(self.0.purpose.into())
    }
}

/// What an audited request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "entities::audit_event::Action")]
pub enum AuditEventAction {
    /// Read patient data.
    Read,
    /// Changed a patient record.
    Update,
    /// Added a clinician to a care team.
    Assign,
    /// Removed a clinician from a care team.
    Unassign,
    /// Enrolled a person.
    Enroll,
    /// Opened a patient through break-glass.
    EmergencyAccess,
    /// Reviewed an emergency-access grant.
    Review,
    /// Read the audit trail.
    AuditRead,
}

/// How an audited request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "entities::audit_event::Outcome")]
pub enum AuditEventOutcome {
    /// It was carried out.
    Success,
    /// The patient asked for was not visible to the caller (or does not exist).
    NotVisible,
    /// The database refused it for the caller's role.
    Denied,
    /// It lost an optimistic-concurrency race or would have duplicated something.
    Conflict,
    /// What it referred to does not exist.
    NotFound,
    /// Its input was rejected.
    Invalid,
    /// It succeeded, but the request failed later and it was undone.
    RolledBack,
    /// It failed for another reason.
    Error,
}

/// Why the data was accessed (purpose of use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "entities::audit_event::Purpose")]
pub enum AuditPurpose {
    /// Care of a patient on the clinician's care team.
    Treatment,
    /// Break-glass access under an emergency grant.
    Emergency,
    /// Coordination work (assignments, enrolment).
    Operations,
    /// Reading the audit trail.
    Audit,
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

impl PatientAccess {
    pub fn new(event: crate::graphql::rows::AccessRow, clinician_name: Option<String>) -> Self {
        Self {
            role: AccessorRole::from_db_role(&event.app_role),
            occurred_at: event.occurred_at,
            clinician_id: event.clinician_id.map(|id| ID(id.to_string())),
            clinician_name,
            action: Some(event.action.into()),
            outcome: Some(event.outcome.into()),
            purpose: Some(event.purpose.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_roles_name_their_accessor_role() {
        assert_eq!(
            AccessorRole::from_db_role("rowguard_clinician"),
            Some(AccessorRole::Clinician)
        );
        assert_eq!(
            AccessorRole::from_db_role("rowguard_coordinator_writer"),
            Some(AccessorRole::Coordinator)
        );
        assert_eq!(
            AccessorRole::from_db_role("rg_auditor"),
            Some(AccessorRole::Auditor)
        );
        assert_eq!(AccessorRole::from_db_role("rowguard_gateway"), None);
    }
}
