//! A person who signs in through the customer's identity provider.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(schema_name = "rowguard", table_name = "clinicians")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    /// Together with `oidc_subject`, the person's identity at their identity provider.
    pub oidc_issuer: String,
    pub oidc_subject: String,
    pub display_name: String,
    /// Inactive clinicians resolve to no identity and so see nothing.
    pub active: bool,
    pub created_at: DateTimeWithTimeZone,
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
