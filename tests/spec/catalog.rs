//! What the migrated catalog promises, read from PostgreSQL's own system tables.

use rowguard_tests::TestDb;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::support::query_count;

#[tokio::test]
async fn gateway_role_is_not_superuser_not_bypassrls_and_does_not_inherit() {
    let t = TestDb::new().await;
    let admin = t.admin().await;
    let row = admin
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select rolsuper, rolbypassrls, rolinherit, rolcanlogin \
             from pg_roles where rolname = 'rgtest_gateway'",
        ))
        .await
        .expect("query")
        .expect("the gateway role exists");
    let flags: (bool, bool, bool, bool) = (
        row.try_get("", "rolsuper").expect("rolsuper"),
        row.try_get("", "rolbypassrls").expect("rolbypassrls"),
        row.try_get("", "rolinherit").expect("rolinherit"),
        row.try_get("", "rolcanlogin").expect("rolcanlogin"),
    );
    assert_eq!(flags, (false, false, false, true));
}

#[tokio::test]
async fn application_roles_cannot_log_in() {
    let t = TestDb::new().await;
    let admin = t.admin().await;
    let can_login = query_count(
        &admin,
        "select count(*) as value from pg_roles \
         where rolname in ('rgtest_clinician', 'rgtest_coordinator', 'rgtest_auditor') and rolcanlogin",
    )
    .await
    .expect("query");
    assert_eq!(can_login, 0);
}

#[tokio::test]
async fn gateway_role_owns_nothing_and_holds_no_table_privileges() {
    let t = TestDb::new().await;
    let admin = t.admin().await;
    let owned = query_count(
        &admin,
        "select (select count(*) from pg_class where relowner = 'rgtest_gateway'::regrole) \
              + (select count(*) from pg_namespace where nspowner = 'rgtest_gateway'::regrole) \
              + (select count(*) from pg_proc where proowner = 'rgtest_gateway'::regrole) as value",
    )
    .await
    .expect("query");
    assert_eq!(owned, 0);
    let grants = query_count(
        &admin,
        "select count(*) as value from information_schema.role_table_grants \
         where grantee = 'rgtest_gateway'",
    )
    .await
    .expect("query");
    assert_eq!(grants, 0);
}

#[tokio::test]
async fn every_table_in_the_app_schema_has_row_level_security_and_patients_forces_it() {
    let t = TestDb::new().await;
    let admin = t.admin().await;
    let rows = admin
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "select n.nspname || '.' || c.relname as name, c.relrowsecurity as enabled, c.relforcerowsecurity as forced \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname in ('rowguard', 'rowguard_audit') and c.relkind in ('r', 'p') and not c.relispartition \
             order by 1",
        ))
        .await
        .expect("query");
    let tables: Vec<(String, bool, bool)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "name").expect("name"),
                r.try_get("", "enabled").expect("enabled"),
                r.try_get("", "forced").expect("forced"),
            )
        })
        .collect();
    assert_eq!(
        tables.len(),
        10,
        "clinicians, clinicians_patients, emergency_grants, patients, expected_policies, and the \
         audit trail's events, chain, checkpoints, archives and sealer lease: {tables:?}"
    );
    for (name, enabled, forced) in &tables {
        assert!(enabled, "{name} has row level security disabled");
        if name == "rowguard.patients" {
            assert!(forced, "patients must FORCE row level security");
        }
    }
    let partitions_without_rls = admin
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = 'rowguard_audit' and c.relkind = 'r' and c.relispartition \
               and not c.relrowsecurity",
        ))
        .await
        .expect("query");
    assert!(
        partitions_without_rls.is_empty(),
        "every audit partition has row level security of its own"
    );
}

#[tokio::test]
async fn every_policy_reads_the_identity_once_per_statement() {
    let t = TestDb::new().await;
    let admin = t.admin().await;
    let rows = admin
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "select policyname::text as name, coalesce(qual, '') || ' ' || coalesce(with_check, '') as expr \
             from pg_policies where schemaname in ('rowguard', 'rowguard_audit')",
        ))
        .await
        .expect("query");
    assert!(
        rows.len() >= 10,
        "expected the migrated policies, found {}",
        rows.len()
    );
    let mut reading_identity = 0;
    for row in &rows {
        let name: String = row.try_get("", "name").expect("name");
        let expr: String = row.try_get("", "expr").expect("expr");
        let reads = expr.matches("current_setting(").count();
        // PostgreSQL prints the scalar-subquery form back as `( SELECT (NULLIF(current_setting(...`.
        let wrapped = expr.matches("( SELECT (NULLIF(current_setting(").count();
        assert_eq!(
            reads, wrapped,
            "policy {name} reads current_setting per row: {expr}"
        );
        if reads > 0 {
            reading_identity += 1;
        }
    }
    assert!(
        reading_identity >= 10,
        "most policies depend on the identity"
    );
}

#[tokio::test]
async fn assignments_are_indexed_both_ways() {
    let t = TestDb::new().await;
    let admin = t.admin().await;
    let indexed = query_count(
        &admin,
        "select count(*) as value from pg_indexes where schemaname = 'rowguard' \
         and tablename = 'clinicians_patients' \
         and (indexdef like '%(clinician_id, patient_id)%' or indexdef like '%(patient_id, clinician_id)%')",
    )
    .await
    .expect("query");
    assert_eq!(indexed, 2);
}
