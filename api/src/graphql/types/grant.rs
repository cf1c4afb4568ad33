//! Break-glass grants.

use async_graphql::{ID, Object};
use chrono::{DateTime, FixedOffset, Utc};
use entities::emergency_grant;

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
