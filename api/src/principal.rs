//! Who is asking: the verified identity a request runs as.

use std::fmt;

use chrono::{DateTime, Utc};

/// The application roles a request can run as. Each maps to a `NOLOGIN` database role that the
/// gateway switches to for the length of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppRole {
    /// Reads and edits the patients assigned to them.
    Clinician,
    /// Assigns clinicians to patients; sees demographics, not clinical notes.
    Coordinator,
    /// Reads the audit trail only.
    Auditor,
}

impl AppRole {
    pub const ALL: [AppRole; 3] = [AppRole::Clinician, AppRole::Coordinator, AppRole::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            AppRole::Clinician => "clinician",
            AppRole::Coordinator => "coordinator",
            AppRole::Auditor => "auditor",
        }
    }
}

impl fmt::Display for AppRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified identity: the token's issuer and subject, and the app role its claims map to.
///
/// The gateway never decides which clinician this is; the database looks (issuer, subject) up
/// inside the request's transaction, so an unknown person simply has no identity there.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    pub issuer: String,
    pub subject: String,
    pub role: AppRole,
    /// The OAuth client the token was issued to (`azp` or `client_id`), when it says.
    pub client_id: Option<String>,
    /// When the token stops being valid.
    pub expires_at: DateTime<Utc>,
}

// Subjects can be e-mail addresses at some identity providers: keep them out of debug output.
impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("issuer", &self.issuer)
            .field("subject", &"<redacted>")
            .field("role", &self.role)
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
