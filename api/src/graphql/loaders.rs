//! Per-request DataLoaders: every patient on a page shares one query per field, so a page of
//! 100 patients with care teams costs the same number of statements as a page of 1.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use entities::{clinician, clinician_patient, patient};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use super::RequestDb;
use super::types::{CareRole, CareTeamMember, Clinician, ClinicianRow};
use crate::audit::record::{AuditAction, AuditOutcome};
use crate::db::DbError;
use crate::error::ApiError;

/// The request's care-team loader (what resolvers look up in the context).
pub type CareTeams = DataLoader<CareTeamLoader, HashMapCache>;
/// The request's clinical-notes loader.
pub type ClinicalNotes = DataLoader<ClinicalNotesLoader, HashMapCache>;

/// Loads care teams by patient id.
pub struct CareTeamLoader(pub Arc<RequestDb>);

impl Loader<Uuid> for CareTeamLoader {
    type Value = Vec<CareTeamMember>;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        self.0.record(
            AuditAction::Read,
            AuditOutcome::Success,
            keys.iter().copied(),
        );
        let conn = self.0.conn().await?;
        let assignments = clinician_patient::Entity::find()
            .filter(clinician_patient::Column::PatientId.is_in(keys.iter().copied()))
            .all(&conn)
            .await
            .map_err(DbError::from)?;
        let clinician_ids: Vec<i32> = assignments.iter().map(|a| a.clinician_id).collect();
        let clinicians: HashMap<i32, ClinicianRow> = clinician::Entity::find()
            .select_only()
            .columns([
                clinician::Column::Id,
                clinician::Column::DisplayName,
                clinician::Column::Active,
            ])
            .filter(clinician::Column::Id.is_in(clinician_ids))
            .into_model::<ClinicianRow>()
            .all(&conn)
            .await
            .map_err(DbError::from)?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();

        let mut teams: HashMap<Uuid, Vec<CareTeamMember>> = HashMap::new();
        for a in assignments {
            // Both rows passed their own policies; a member whose clinician row is invisible is
            // left out rather than shown half.
            let (Some(row), Some(care_role)) = (
                clinicians.get(&a.clinician_id),
                CareRole::from_db(&a.care_role),
            ) else {
                continue;
            };
            teams.entry(a.patient_id).or_default().push(CareTeamMember {
                clinician: Clinician(row.clone()),
                care_role,
                assigned_at: a.assigned_at,
            });
        }
        for team in teams.values_mut() {
            team.sort_by(|a, b| {
                (a.assigned_at, a.clinician.0.id).cmp(&(b.assigned_at, b.clinician.0.id))
            });
        }
        Ok(teams)
    }
}

/// Loads clinical notes by patient id, inside a savepoint: for roles without the column grant
/// PostgreSQL refuses the statement, which must not abort the rest of the request. (Plain
/// `SAVEPOINT` statements rather than a nested transaction object, so they are counted against
/// the request's statement budget like every other.)
pub struct ClinicalNotesLoader(pub Arc<RequestDb>);

impl Loader<Uuid> for ClinicalNotesLoader {
    type Value = String;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let conn = self.0.conn().await?;
        conn.execute_unprepared("SAVEPOINT clinical_notes")
            .await
            .map_err(DbError::from)?;
        let rows = patient::Entity::find()
            .select_only()
            .columns([patient::Column::Id, patient::Column::ClinicalNotes])
            .filter(patient::Column::Id.is_in(keys.iter().copied()))
            .into_tuple::<(Uuid, String)>()
            .all(&conn)
            .await;
        match rows {
            Ok(rows) => {
                conn.execute_unprepared("RELEASE SAVEPOINT clinical_notes")
                    .await
                    .map_err(DbError::from)?;
                // Notes are the one field that can be large (up to 100,000 characters each).
                self.0
                    .charge_bytes(rows.iter().map(|(_, notes)| notes.len()).sum())?;
                self.0.record(
                    AuditAction::Read,
                    AuditOutcome::Success,
                    rows.iter().map(|(id, _)| *id),
                );
                Ok(rows.into_iter().collect())
            }
            Err(e) => {
                conn.execute_unprepared("ROLLBACK TO SAVEPOINT clinical_notes")
                    .await
                    .map_err(DbError::from)?;
                let err = DbError::from(e);
                if err.is_permission_denied() {
                    self.0.record(
                        AuditAction::Read,
                        AuditOutcome::Denied,
                        keys.iter().copied(),
                    );
                    Err(ApiError::forbidden(
                        "clinical notes are available to clinicians only",
                    ))
                } else {
                    Err(err.into())
                }
            }
        }
    }
}
