//! One entry of the append-only audit trail (`rowguard_audit.events`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(schema_name = "rowguard_audit", table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub occurred_at: DateTimeWithTimeZone,
    pub request_id: Option<Uuid>,
    pub clinician_id: Option<i32>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub app_role: String,
    pub operation_name: Option<String>,
    pub persisted_query_hash: Option<String>,
    pub action: String,
    pub outcome: String,
    pub patient_ids: Vec<Uuid>,
    pub purpose: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
