//! The GraphQL object types. Each wraps a row the database let the caller read; nothing here
//! decides visibility.

use async_graphql::{Context, Enum, ID, Object, Result};
use chrono::{DateTime, FixedOffset, NaiveDate};
use sea_orm::FromQueryResult;
use uuid::Uuid;

use super::loaders::{CareTeams, ClinicalNotes};
use super::pagination::{PatientConnection, clinician_page};
use super::request_db;

/// The patient columns every reader may select (clinical notes are fetched separately, so a
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

/// A patient record the signed-in person is allowed to see.
#[derive(Debug, Clone)]
pub struct Patient(pub PatientRow);

/// A patient record the signed-in person is allowed to see.
#[Object]
impl Patient {
    /// Stable identifier (a UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// Medical record number, unique within this installation.
    async fn mrn(&self) -> &str {
        &self.0.mrn
    }

    /// Given (first) name.
    async fn given_name(&self) -> &str {
        &self.0.given_name
    }

    /// Family (last) name.
    async fn family_name(&self) -> &str {
        &self.0.family_name
    }

    /// Date of birth.
    async fn birth_date(&self) -> NaiveDate {
        self.0.birth_date
    }

    /// Free-text clinical notes. Clinicians only: for other roles the database refuses the
    /// column, this field is null with a `FORBIDDEN` error, and the rest of the patient still
    /// resolves.
    async fn clinical_notes(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let loader = ctx.data::<ClinicalNotes>()?;
        Ok(loader.load_one(self.0.id).await?)
    }

    /// Optimistic-concurrency version: pass it as `expectedVersion` when updating. Every update
    /// increments it.
    async fn version(&self) -> i32 {
        self.0.version
    }

    /// When the record last changed.
    async fn updated_at(&self) -> DateTime<FixedOffset> {
        self.0.updated_at
    }

    /// The clinicians assigned to this patient, with their role in the patient's care.
    async fn care_team(&self, ctx: &Context<'_>) -> Result<Vec<CareTeamMember>> {
        let loader = ctx.data::<CareTeams>()?;
        Ok(loader.load_one(self.0.id).await?.unwrap_or_default())
    }
}

/// The clinician columns every role that reads clinicians may select.
#[derive(Debug, Clone, FromQueryResult)]
pub struct ClinicianRow {
    pub id: i32,
    pub display_name: String,
    pub active: bool,
}

/// A clinician (or coordinator, or auditor) enrolled in Rowguard.
#[derive(Debug, Clone)]
pub struct Clinician(pub ClinicianRow);

/// A clinician (or coordinator, or auditor) enrolled in Rowguard.
#[Object]
impl Clinician {
    /// Stable identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The name to show for this person.
    async fn display_name(&self) -> &str {
        &self.0.display_name
    }

    /// Inactive people cannot sign in to Rowguard.
    async fn active(&self) -> bool {
        self.0.active
    }

    /// This clinician's patients that the signed-in person may also see, in a stable order.
    /// Batched: asked for on a whole list of clinicians, it costs one database statement.
    async fn patients(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size (default 20, at most the server's maximum page size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last edge of the previous page.")] after: Option<String>,
        #[graphql(desc = "Case-insensitive match on given name, family name or MRN.")]
        search: Option<String>,
    ) -> Result<PatientConnection> {
        let request = request_db(ctx)?;
        Ok(clinician_page(ctx, &request, self.0.id, first, after, search).await?)
    }
}

/// A clinician's role in one patient's care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum CareRole {
    /// The clinician responsible for the patient's care.
    Attending,
    /// A specialist consulted on the patient's care.
    Consulting,
    /// Nursing care.
    Nursing,
    /// Coordination of the patient's care.
    CareCoordination,
}

impl CareRole {
    pub fn as_db(self) -> &'static str {
        match self {
            CareRole::Attending => "attending",
            CareRole::Consulting => "consulting",
            CareRole::Nursing => "nursing",
            CareRole::CareCoordination => "care_coordination",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        [
            Self::Attending,
            Self::Consulting,
            Self::Nursing,
            Self::CareCoordination,
        ]
        .into_iter()
        .find(|r| r.as_db() == value)
    }
}

/// One clinician on a patient's care team.
#[derive(Debug, Clone)]
pub struct CareTeamMember {
    pub clinician: Clinician,
    pub care_role: CareRole,
    pub assigned_at: DateTime<FixedOffset>,
}

/// One clinician on a patient's care team.
#[Object]
impl CareTeamMember {
    /// The assigned clinician.
    async fn clinician(&self) -> &Clinician {
        &self.clinician
    }

    /// Their role in this patient's care.
    async fn care_role(&self) -> CareRole {
        self.care_role
    }

    /// When they were assigned.
    async fn assigned_at(&self) -> DateTime<FixedOffset> {
        self.assigned_at
    }
}

pub use super::audit_api::EmergencyAccessGrant;
