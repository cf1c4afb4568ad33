//! The audit trail (HIPAA §164.312(b)): what each request did to PHI, recorded in its own
//! transaction ([`record`]), sealed into a hash chain in the background ([`sealer`]), anchored
//! by signed checkpoints outside the database ([`checkpoint`], [`keys`]), and proved by
//! [`verify`] from the rows themselves ([`canonical`]).

pub mod archive;
pub mod batch;
pub mod canonical;
pub mod checkpoint;
pub mod export;
pub mod fhir;
pub mod keys;
pub mod record;
pub mod schema_drift;
pub mod sealer;
pub mod statement;
pub mod verify;
