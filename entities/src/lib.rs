//! SeaORM entities for Rowguard's tables (schemas `rowguard` and `rowguard_audit`).
//!
//! These describe storage only. What a caller may see is decided by PostgreSQL row level
//! security and column grants; GraphQL types live in the `rowguard` crate.

pub mod audit_event;
pub mod clinician;
pub mod clinician_patient;
pub mod emergency_grant;
pub mod patient;

pub mod prelude {
    pub use super::audit_event::Entity as AuditEvent;
    pub use super::clinician::Entity as Clinician;
    pub use super::clinician_patient::Entity as ClinicianPatient;
    pub use super::emergency_grant::Entity as EmergencyGrant;
    pub use super::patient::Entity as Patient;
}
