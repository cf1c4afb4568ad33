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
    pub action: Action,
    pub outcome: Outcome,
    pub patient_ids: Vec<Uuid>,
    pub purpose: Purpose,
}

/// What an audited request did (the values the table's CHECK constraint allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::None)",
    rename_all = "snake_case"
)]
pub enum Action {
    Read,
    Update,
    Assign,
    Unassign,
    Enroll,
    EmergencyAccess,
    Review,
    AuditRead,
}

/// How an audited request ended for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::None)",
    rename_all = "snake_case"
)]
pub enum Outcome {
    Success,
    /// The caller asked for a patient they could not see (or that does not exist).
    NotVisible,
    /// The database refused for lack of privilege.
    Denied,
    Conflict,
    NotFound,
    Invalid,
    /// The request failed after this step succeeded, so the step was undone.
    RolledBack,
    Error,
}

/// Why the data was accessed (purpose of use), stamped by the database from the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::None)",
    rename_all = "snake_case"
)]
pub enum Purpose {
    Treatment,
    Emergency,
    Operations,
    Audit,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
