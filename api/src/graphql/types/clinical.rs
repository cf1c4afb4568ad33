//! Patients, clinicians and care teams: one module, because each refers to the other
//! (a patient's care team lists clinicians; a clinician lists their patients).

use async_graphql::{Context, Enum, ID, Object, Result};
use chrono::{DateTime, FixedOffset, NaiveDate};
use uuid::Uuid;

use crate::audit::record::{AuditAction, AuditOutcome};
use crate::graphql::connection::{Connection, PageArgs};
use crate::graphql::context::{limits, request_db};
use crate::graphql::inputs::SearchPattern;
use crate::graphql::loaders::{CareTeams, ClinicalNotes, ClinicianPages};
use crate::graphql::rows::{CareTeamRow, ClinicianRow, PatientRow};

/// A page of patients.
pub type PatientConnection = Connection<Patient>;

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
        let loader = ctx.data_opt::<ClinicalNotes>().ok_or_else(missing_loader)?;
        let notes = loader.load_one(self.0.id).await?;
        // Charged each time the field is answered, not once per row loaded: the loader's cache
        // hands the same notes to every alias, so thirty aliases of one 100,000-character
        // field would otherwise build an answer thirty times the budget before it is measured.
        if let Some(notes) = &notes {
            request_db(ctx)?.charge_bytes(notes.len())?;
        }
        Ok(notes)
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
        let loader = ctx.data_opt::<CareTeams>().ok_or_else(missing_loader)?;
        let team = loader.load_one(self.0.id).await?.unwrap_or_default();
        Ok(team.into_iter().map(CareTeamMember).collect())
    }
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
        let page = PageArgs::<Uuid>::parse(limits(ctx)?.max_page_size, first, after)?;
        let search = SearchPattern::parse(search)?;
        if page.first == 0 {
            return Ok(page.connection(Vec::new(), |r: &PatientRow| r.id, Patient));
        }
        let request = request_db(ctx)?;
        let loader = ctx
            .data_opt::<ClinicianPages>()
            .ok_or_else(missing_loader)?;
        let rows = match loader.load_one((self.0.id, page, search)).await {
            Ok(rows) => rows.unwrap_or_default(),
            Err(error) => {
                request.record(AuditAction::Read, AuditOutcome::from(&error), []);
                return Err(error.into());
            }
        };
        request.record(
            AuditAction::Read,
            AuditOutcome::Success,
            rows.iter().take(page.shown(rows.len())).map(|r| r.id),
        );
        Ok(page.connection(rows, |r| r.id, Patient))
    }
}

/// A clinician's role in one patient's care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "entities::clinician_patient::CareRole")]
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

/// One clinician on a patient's care team.
#[derive(Debug, Clone)]
pub struct CareTeamMember(pub CareTeamRow);

/// One clinician on a patient's care team.
#[Object]
impl CareTeamMember {
    /// The assigned clinician.
    async fn clinician(&self) -> Clinician {
        Clinician(self.0.clinician.clone())
    }

    /// Their role in this patient's care.
    async fn care_role(&self) -> CareRole {
        self.0.care_role.into()
    }

    /// When they were assigned.
    async fn assigned_at(&self) -> DateTime<FixedOffset> {
        self.0.assigned_at
    }
}

fn missing_loader() -> crate::error::ApiError {
    crate::error::ApiError::internal("a resolver ran without its request's loaders")
}
