//! Rowguard's schema as sea-orm migrations: roles, tables, grants and row level security.
//!
//! The SQL lives in `sql/*.sql`, commented with the reason for each rule. Role names are
//! cluster-wide, so they carry a prefix (see [`RoleNames`]); the migrations read it from the
//! connection's `rowguard.role_prefix` setting, which [`RoleNames::connection_option`] provides.

pub mod audit_schema;
mod role_names;
mod sql_migration;

pub use role_names::{InvalidRolePrefix, RoleNames};
pub use sea_orm_migration::MigratorTrait;

use sea_orm_migration::prelude::*;
use sql_migration::SqlMigration;

/// The ordered list of Rowguard's migrations.
#[derive(Debug)]
pub struct Migrator;

const MIGRATIONS: &[SqlMigration] = &[
    SqlMigration {
        name: "m20261126_000001_roles",
        up: include_str!("sql/0001_roles.up.sql"),
        down: include_str!("sql/0001_roles.down.sql"),
    },
    SqlMigration {
        name: "m20261126_000002_clinical_tables",
        up: include_str!("sql/0002_clinical_tables.up.sql"),
        down: include_str!("sql/0002_clinical_tables.down.sql"),
    },
    SqlMigration {
        name: "m20261126_000003_row_level_security",
        up: include_str!("sql/0003_row_level_security.up.sql"),
        down: include_str!("sql/0003_row_level_security.down.sql"),
    },
    SqlMigration {
        name: "m20261126_000004_audit_and_emergency_access",
        up: include_str!("sql/0004_audit_and_emergency_access.up.sql"),
        down: include_str!("sql/0004_audit_and_emergency_access.down.sql"),
    },
    SqlMigration {
        name: "m20261126_000005_assignment_probes",
        up: include_str!("sql/0005_assignment_probes.up.sql"),
        down: include_str!("sql/0005_assignment_probes.down.sql"),
    },
    SqlMigration {
        name: "m20261126_000006_audit_chain_lookup",
        up: include_str!("sql/0006_audit_chain_lookup.up.sql"),
        down: include_str!("sql/0006_audit_chain_lookup.down.sql"),
    },
    SqlMigration {
        name: "m20261201_000007_audit_sealed_off_path",
        up: include_str!("sql/0007_audit_sealed_off_path.up.sql"),
        down: include_str!("sql/0007_audit_sealed_off_path.down.sql"),
    },
    SqlMigration {
        name: "m20261201_000008_least_privilege_reads",
        up: include_str!("sql/0008_least_privilege_reads.up.sql"),
        down: include_str!("sql/0008_least_privilege_reads.down.sql"),
    },
    SqlMigration {
        name: "m20261202_000009_audit_hot_path",
        up: include_str!("sql/0009_audit_hot_path.up.sql"),
        down: include_str!("sql/0009_audit_hot_path.down.sql"),
    },
    SqlMigration {
        name: "m20261202_000010_patient_report_index",
        up: include_str!("sql/0010_patient_report_index.up.sql"),
        down: include_str!("sql/0010_patient_report_index.down.sql"),
    },
    SqlMigration {
        name: "m20261202_000011_identity_lookup_cached_plan",
        up: include_str!("sql/0011_identity_lookup_cached_plan.up.sql"),
        down: include_str!("sql/0011_identity_lookup_cached_plan.down.sql"),
    },
    SqlMigration {
        name: "m20261206_000012_audit_group_commit",
        up: include_str!("sql/0012_audit_group_commit.up.sql"),
        down: include_str!("sql/0012_audit_group_commit.down.sql"),
    },
    SqlMigration {
        name: "m20261206_000013_audit_append_cost",
        up: include_str!("sql/0013_audit_append_cost.up.sql"),
        down: include_str!("sql/0013_audit_append_cost.down.sql"),
    },
    SqlMigration {
        name: "m20261207_000014_no_self_assignment",
        up: include_str!("sql/0014_no_self_assignment.up.sql"),
        down: include_str!("sql/0014_no_self_assignment.down.sql"),
    },
    SqlMigration {
        name: "m20261207_000015_self_check_fingerprint",
        up: include_str!("sql/0015_self_check_fingerprint.up.sql"),
        down: include_str!("sql/0015_self_check_fingerprint.down.sql"),
    },
    SqlMigration {
        name: "m20261207_000016_fresh_assignments_stay_emergency",
        up: include_str!("sql/0016_fresh_assignments_stay_emergency.up.sql"),
        down: include_str!("sql/0016_fresh_assignments_stay_emergency.down.sql"),
    },
    SqlMigration {
        name: "m20261208_000017_patient_events_in_a_period",
        up: include_str!("sql/0017_patient_events_in_a_period.up.sql"),
        down: include_str!("sql/0017_patient_events_in_a_period.down.sql"),
    },
    SqlMigration {
        name: "m20261208_000018_sealer_interface_checks",
        up: include_str!("sql/0018_sealer_interface_checks.up.sql"),
        down: include_str!("sql/0018_sealer_interface_checks.down.sql"),
    },
];

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        MIGRATIONS
            .iter()
            .map(|m| Box::new(*m) as Box<dyn MigrationTrait>)
            .collect()
    }
}

/// What the migrations leave in the audit trail's schema, read from their SQL: so that the
/// gateway can compare the database with its own build rather than with a baseline stored in
/// the database, which its owner could rewrite.
pub fn audit_schema(roles: &RoleNames) -> audit_schema::AuditSchema {
    audit_schema::AuditSchema::of(MIGRATIONS.iter().map(|m| roles.render(m.up)))
}
