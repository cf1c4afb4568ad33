//! SeaORM entities for Rowguard's tables in the `rowguard` schema.
//!
//! These describe storage only. What a caller may see is decided by PostgreSQL row level
//! security and column grants; GraphQL types live in the `rowguard` crate.

pub mod clinician;
pub mod clinician_patient;
pub mod patient;

pub mod prelude {
    pub use super::clinician::Entity as Clinician;
    pub use super::clinician_patient::Entity as ClinicianPatient;
    pub use super::patient::Entity as Patient;
}
