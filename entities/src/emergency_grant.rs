//! A time-limited break-glass grant of one patient to one clinician.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(schema_name = "rowguard", table_name = "emergency_grants")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub clinician_id: i32,
    pub patient_id: Uuid,
    pub reason: String,
    pub granted_at: DateTimeWithTimeZone,
    pub expires_at: DateTimeWithTimeZone,
    pub reviewed_at: Option<DateTimeWithTimeZone>,
    pub reviewed_by: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
