//! A patient record. Which rows and columns a caller can read is decided by the database.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(schema_name = "rowguard", table_name = "patients")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Medical record number, unique.
    pub mrn: String,
    pub given_name: String,
    pub family_name: String,
    pub birth_date: Date,
    /// Granted to clinicians only; coordinators get a permission error when selecting it.
    pub clinical_notes: String,
    /// Bumped by a trigger on every update (optimistic concurrency).
    pub version: i32,
    pub updated_at: DateTimeWithTimeZone,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::clinician_patient::Entity")]
    Assignments,
}

impl Related<super::clinician_patient::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Assignments.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
