//! The GraphQL object types. Each wraps rows the database let the caller read; nothing here
//! decides visibility.

mod audit;
mod clinical;
mod grant;

pub use audit::{AuditEvent, AuditEventFilter, PatientAccess};
pub use clinical::{CareRole, Clinician, Patient, PatientConnection};
pub use grant::EmergencyAccessGrant;
