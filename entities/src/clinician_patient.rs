//! The assignment of a clinician to a patient's care team.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(schema_name = "rowguard", table_name = "clinicians_patients")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub clinician_id: i32,
    #[sea_orm(primary_key, auto_increment = false)]
    pub patient_id: Uuid,
    pub care_role: CareRole,
    pub assigned_at: DateTimeWithTimeZone,
    /// The coordinator who made the assignment, stamped from the transaction's identity.
    pub assigned_by: Option<i32>,
}

/// A clinician's role in one patient's care (stored as its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::None)",
    rename_all = "snake_case"
)]
pub enum CareRole {
    Attending,
    Consulting,
    Nursing,
    CareCoordination,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::clinician::Entity",
        from = "Column::ClinicianId",
        to = "super::clinician::Column::Id"
    )]
    Clinician,
    #[sea_orm(
        belongs_to = "super::patient::Entity",
        from = "Column::PatientId",
        to = "super::patient::Column::Id"
    )]
    Patient,
}

impl Related<super::clinician::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Clinician.def()
    }
}

impl Related<super::patient::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Patient.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
