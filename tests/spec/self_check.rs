//! The startup self-check: the gateway refuses to serve when PostgreSQL would not enforce row
//! level security for its login.

use migration::RoleNames;
use rowguard::db::{Database, SelfCheckError};
use rowguard_tests::{TestDb, connect, test_roles};

use crate::support::execute;

async fn refusal(db: &Database) -> String {
    match db.self_check().await {
        Err(SelfCheckError::Failed(failed)) => failed.to_string(),
        Err(other) => panic!("the check itself failed: {other}"),
        Ok(()) => panic!("the self-check passed but should have refused"),
    }
}

#[tokio::test]
async fn self_check_passes_for_the_migrated_gateway_role() {
    let t = TestDb::new().await;
    let db = t.gateway(1).await;
    db.self_check()
        .await
        .expect("a correctly migrated database passes");
}

#[tokio::test]
async fn self_check_refuses_a_superuser_connection() {
    let t = TestDb::new().await;
    let db = Database::from_pool(connect(&t.admin_url(), 1, None).await, test_roles());
    let message = refusal(&db).await;
    assert!(message.contains("a superuser"), "{message}");
    assert!(
        message.contains("rgtest_gateway"),
        "the message names the role to use: {message}"
    );
}

#[tokio::test]
async fn self_check_refuses_a_table_without_row_level_security() {
    let t = TestDb::new().await;
    execute(
        &t.admin().await,
        "alter table rowguard.clinicians_patients disable row level security",
        [],
    )
    .await
    .expect("misconfigure");
    let message = refusal(&t.gateway(1).await).await;
    assert!(
        message.contains("ALTER TABLE rowguard.clinicians_patients ENABLE ROW LEVEL SECURITY"),
        "{message}"
    );
}

#[tokio::test]
async fn self_check_refuses_patients_without_force() {
    let t = TestDb::new().await;
    execute(
        &t.admin().await,
        "alter table rowguard.patients no force row level security",
        [],
    )
    .await
    .expect("misconfigure");
    let message = refusal(&t.gateway(1).await).await;
    assert!(
        message.contains("ALTER TABLE rowguard.patients FORCE ROW LEVEL SECURITY"),
        "{message}"
    );
}

#[tokio::test]
async fn self_check_refuses_a_gateway_with_table_privileges_of_its_own() {
    let t = TestDb::new().await;
    execute(
        &t.admin().await,
        "grant select on rowguard.patients to rgtest_gateway",
        [],
    )
    .await
    .expect("misconfigure");
    let message = refusal(&t.gateway(1).await).await;
    assert!(
        message.contains("REVOKE ALL ON rowguard.patients FROM rgtest_gateway"),
        "{message}"
    );
}

#[tokio::test]
async fn self_check_refuses_a_role_prefix_that_does_not_match_the_database() {
    let t = TestDb::new().await;
    let pool = t.gateway_pool(1).await;
    let db = Database::from_pool(pool, RoleNames::new("elsewhere").expect("valid prefix"));
    let message = refusal(&db).await;
    assert!(
        message.contains("\"elsewhere_clinician\" does not exist"),
        "{message}"
    );
    assert!(message.contains("ROWGUARD_ROLE_PREFIX"), "{message}");
}

/// A database migrated with a role prefix of its own, so misconfiguring its (cluster-wide) roles
/// cannot disturb the other specs' databases.
struct Isolated {
    name: String,
    roles: RoleNames,
    admin: sea_orm::DatabaseConnection,
    owner: sea_orm::DatabaseConnection,
    db: Database,
}

impl Isolated {
    async fn new(tag: &str) -> Isolated {
        use migration::{Migrator, MigratorTrait};
        let name = format!("rgt_{}_{tag}", std::process::id());
        let roles = RoleNames::new(&format!("rg{tag}{}", std::process::id())).expect("prefix");
        let cluster = rowguard_tests::cluster();
        cluster.create_database(&name, None).await;
        let url = cluster.url_for(&name);
        let owner = rowguard_tests::migration_connection(&url, &roles).await;
        Migrator::up(&owner, None).await.expect("migrate");
        let admin = connect(&url, 1, None).await;
        execute(
            &admin,
            &format!("alter role {} password 'x'", roles.gateway()),
            [],
        )
        .await
        .expect("gateway password");
        let db = Database::from_pool(
            connect(&cluster.url_as(&name, &roles.gateway(), "x"), 1, None).await,
            roles.clone(),
        );
        Isolated {
            name,
            roles,
            admin,
            owner,
            db,
        }
    }

    async fn drop_all(self) {
        use migration::{Migrator, MigratorTrait};
        let _ = self.db.close().await;
        Migrator::down(&self.owner, None).await.expect("clean up");
        let _ = &self.name;
    }
}

#[tokio::test]
async fn self_check_refuses_every_unsafe_application_role_definer_function_public_grant_and_policy()
{
    let it = Isolated::new("sc").await;
    let r = &it.roles;
    let cases: Vec<(String, String, String)> = vec![
        (
            format!("alter role {} bypassrls", r.clinician()),
            format!("alter role {} nobypassrls", r.clinician()),
            format!("ALTER ROLE {} NOBYPASSRLS", r.clinician()),
        ),
        (
            format!("alter role {} bypassrls", r.coordinator_writer()),
            format!("alter role {} nobypassrls", r.coordinator_writer()),
            format!("ALTER ROLE {} NOBYPASSRLS", r.coordinator_writer()),
        ),
        (
            format!("alter role {} superuser", r.auditor()),
            format!("alter role {} nosuperuser", r.auditor()),
            format!("ALTER ROLE {} NOSUPERUSER", r.auditor()),
        ),
        (
            format!("alter role {} login", r.coordinator()),
            format!("alter role {} nologin", r.coordinator()),
            format!("ALTER ROLE {} NOLOGIN", r.coordinator()),
        ),
        (
            format!("grant {} to {}", r.owner(), r.auditor()),
            format!("revoke {} from {}", r.owner(), r.auditor()),
            format!("REVOKE {} FROM {}", r.owner(), r.auditor()),
        ),
        (
            format!("grant {} to {}", r.coordinator(), r.clinician()),
            format!("revoke {} from {}", r.coordinator(), r.clinician()),
            format!("REVOKE {} FROM {}", r.coordinator(), r.clinician()),
        ),
        (
            format!("grant {} to {}", r.owner(), r.gateway()),
            format!("revoke {} from {}", r.owner(), r.gateway()),
            format!("REVOKE {} FROM {}", r.owner(), r.gateway()),
        ),
        (
            "alter function rowguard.clinician_id_for(text, text) owner to postgres".into(),
            format!("alter function rowguard.clinician_id_for(text, text) owner to {}", r.owner()),
            format!("ALTER FUNCTION rowguard.clinician_id_for(issuer text, subject text) OWNER TO {}", r.owner()),
        ),
        (
            "alter function rowguard.is_current_clinicians_patient(uuid) reset search_path".into(),
            "alter function rowguard.is_current_clinicians_patient(uuid) set search_path = pg_catalog, pg_temp".into(),
            "SET search_path = pg_catalog, pg_temp".into(),
        ),
        (
            "grant usage on schema rowguard_audit to public".into(),
            "revoke usage on schema rowguard_audit from public".into(),
            "REVOKE ALL ON SCHEMA rowguard_audit FROM PUBLIC".into(),
        ),
        (
            "grant select on rowguard.emergency_grants to public".into(),
            "revoke select on rowguard.emergency_grants from public".into(),
            "REVOKE ALL ON rowguard.emergency_grants FROM PUBLIC".into(),
        ),
        (
            "grant execute on function rowguard.request_emergency_access(uuid, text, interval) to public".into(),
            "revoke execute on function rowguard.request_emergency_access(uuid, text, interval) from public".into(),
            "FROM PUBLIC".into(),
        ),
        (
            format!("create policy let_everyone_in on rowguard.patients for select to {} using (true)", r.clinician()),
            "drop policy let_everyone_in on rowguard.patients".into(),
            "\"let_everyone_in\" on rowguard.patients was added".into(),
        ),
        (
            "alter policy patients_coordinator_select on rowguard.patients using (true)".into(),
            "alter policy patients_coordinator_select on rowguard.patients \
             using ((select nullif(current_setting('app.current_user', true), '')::integer) is not null)".into(),
            "\"patients_coordinator_select\" on rowguard.patients was changed".into(),
        ),
    ];
    it.db.self_check().await.expect("passes before any change");
    for (break_it, mend_it, named_fix) in &cases {
        execute(&it.admin, break_it, []).await.expect(break_it);
        let message = refusal(&it.db).await;
        assert!(
            message.contains(named_fix.as_str()),
            "after `{break_it}` the refusal should name `{named_fix}`:\n{message}"
        );
        execute(&it.admin, mend_it, []).await.expect(mend_it);
        it.db
            .self_check()
            .await
            .unwrap_or_else(|e| panic!("after `{mend_it}` the check should pass again: {e}"));
    }
    it.drop_all().await;
}

#[tokio::test]
async fn self_check_refuses_a_replaced_helper_an_added_grant_a_reachable_superuser_and_an_owner_rights_view()
 {
    // A review: each of these opened patient data to an application role, and the check passed.
    let it = Isolated::new("fp").await;
    let r = &it.roles;
    let helper = "rowguard.is_current_clinicians_patient(uuid)";
    let original: String = {
        use sea_orm::ConnectionTrait;
        it.admin
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("select pg_get_functiondef('{helper}'::regprocedure) as def"),
            ))
            .await
            .expect("query")
            .expect("row")
            .try_get("", "def")
            .expect("definition")
    };
    let superuser = format!("{}_su", r.prefix());
    let cases: Vec<(Vec<String>, Vec<String>, &str)> = vec![
        (
            vec![
                "create or replace function rowguard.is_current_clinicians_patient(patient uuid) \
                 returns boolean language sql stable security definer \
                 set search_path = pg_catalog, pg_temp as $$ select true $$"
                    .into(),
            ],
            vec![original.clone()],
            "function rowguard.is_current_clinicians_patient(patient uuid) was changed",
        ),
        (
            vec![format!(
                "grant select (clinical_notes) on rowguard.patients to {}",
                r.coordinator()
            )],
            vec![format!(
                "revoke select (clinical_notes) on rowguard.patients from {}",
                r.coordinator()
            )],
            "the privileges on rowguard.patients were changed",
        ),
        (
            vec![format!("grant update on rowguard.patients to {}", r.clinician())],
            vec![format!("revoke update on rowguard.patients from {}", r.clinician())],
            "the privileges on rowguard.patients were changed",
        ),
        (
            vec![format!(
                "grant execute on function rowguard.clinician_id_for(text, text) to {}",
                r.coordinator_writer()
            )],
            vec![format!(
                "revoke execute on function rowguard.clinician_id_for(text, text) from {}",
                r.coordinator_writer()
            )],
            "function rowguard.clinician_id_for(issuer text, subject text) was changed",
        ),
        (
            vec![format!(
                "create role {superuser} nologin superuser role {}",
                r.gateway()
            )],
            vec![format!("drop role {superuser}")],
            "could switch to it",
        ),
        (
            vec![
                "create view rowguard.care_team_v as select * from rowguard.clinicians_patients".into(),
                format!("grant select on rowguard.care_team_v to {}", r.clinician()),
            ],
            vec!["drop view rowguard.care_team_v".into()],
            "ALTER VIEW rowguard.care_team_v SET (security_invoker = true)",
        ),
        (
            vec![
                "create view public.notes_v as select mrn, clinical_notes from rowguard.patients".into(),
                format!("grant select on public.notes_v to {}", r.auditor()),
            ],
            vec!["drop view public.notes_v".into()],
            "ALTER VIEW public.notes_v SET (security_invoker = true)",
        ),
        (
            vec![
                "create materialized view public.notes_m as select mrn, clinical_notes from rowguard.patients".into(),
                format!("grant select on public.notes_m to {}", r.auditor()),
            ],
            vec!["drop materialized view public.notes_m".into()],
            "materialized view public.notes_m reads Rowguard's tables",
        ),
        // The second review: views of views, a grant on columns only, a definer function
        // elsewhere, a trigger and a rule, and a grant taken back.
        (
            vec![
                "create view rowguard.inner_v as select * from rowguard.clinicians_patients".into(),
                "create view public.outer_v as select * from rowguard.inner_v".into(),
                format!("grant select on public.outer_v to {}", r.clinician()),
            ],
            vec![
                "drop view public.outer_v".into(),
                "drop view rowguard.inner_v".into(),
            ],
            "ALTER VIEW public.outer_v SET (security_invoker = true)",
        ),
        (
            vec![
                "create view public.notes_cv as select mrn, clinical_notes from rowguard.patients".into(),
                format!("grant select (mrn, clinical_notes) on public.notes_cv to {}", r.coordinator()),
            ],
            vec!["drop view public.notes_cv".into()],
            "ALTER VIEW public.notes_cv SET (security_invoker = true)",
        ),
        (
            vec![
                "create function public.leak_notes() returns setof text language sql security definer \
                 as $$ select clinical_notes from rowguard.patients $$"
                    .into(),
            ],
            vec!["drop function public.leak_notes()".into()],
            "SECURITY DEFINER function public.leak_notes() runs as",
        ),
        (
            vec![
                "create function public.copy_out() returns trigger language plpgsql \
                 as $$ begin return new; end $$"
                    .into(),
                "create trigger copy_out after insert on rowguard.patients \
                 for each row execute function public.copy_out()"
                    .into(),
            ],
            vec![
                "drop trigger copy_out on rowguard.patients".into(),
                "drop function public.copy_out()".into(),
            ],
            "trigger \"copy_out\" on rowguard.patients was added",
        ),
        (
            vec![
                "create rule copy_rule as on insert to rowguard.clinicians_patients do also select 1"
                    .into(),
            ],
            vec!["drop rule copy_rule on rowguard.clinicians_patients".into()],
            "rule \"copy_rule\" on rowguard.clinicians_patients was added",
        ),
        (
            vec![format!(
                "grant select on rowguard.expected_policies to {}",
                r.auditor()
            )],
            vec![format!(
                "revoke select on rowguard.expected_policies from {}",
                r.auditor()
            )],
            "the privileges on rowguard.expected_policies were added",
        ),
    ];
    it.db.self_check().await.expect("passes before any change");
    for (break_it, mend_it, named) in &cases {
        for sql in break_it {
            execute(&it.admin, sql, []).await.expect(sql);
        }
        let message = refusal(&it.db).await;
        assert!(
            message.contains(named),
            "after `{break_it:?}` the refusal should say `{named}`:\n{message}"
        );
        for sql in mend_it {
            execute(&it.admin, sql, []).await.expect(sql);
        }
        it.db
            .self_check()
            .await
            .unwrap_or_else(|e| panic!("after `{mend_it:?}` the check should pass again: {e}"));
    }
    // What a reporting view should be: the caller's own rights and policies apply.
    for sql in [
        "create view public.my_patients with (security_invoker = true) as select mrn from rowguard.patients".to_owned(),
        format!("grant select on public.my_patients to {}", r.clinician()),
    ] {
        execute(&it.admin, &sql, []).await.expect("invoker view");
    }
    it.db
        .self_check()
        .await
        .expect("a security_invoker view outside Rowguard's schemas passes");
    execute(&it.admin, "drop view public.my_patients", [])
        .await
        .expect("drop");
    it.drop_all().await;
}

/// The `GRANT` statements that give back what `schema`'s owner has granted on it.
async fn schema_grants(admin: &sea_orm::DatabaseConnection, schema: &str) -> Vec<String> {
    use sea_orm::ConnectionTrait;
    admin
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "select format('grant %s on schema %I to %I', a.privilege_type, n.nspname, \
                    pg_catalog.pg_get_userbyid(a.grantee)) as grant \
             from pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a \
             where n.nspname = $1 and a.grantee <> n.nspowner",
            [schema.into()],
        ))
        .await
        .expect("schema grants")
        .iter()
        .map(|row| row.try_get("", "grant").expect("grant"))
        .collect()
}

#[tokio::test]
async fn self_check_refuses_a_login_that_can_grant_itself_roles_reach_server_programs_or_own_a_schema()
 {
    // A review: each of these let the gateway's login read past row level security in one or
    // two statements (CREATEROLE: `GRANT owner TO gateway`; `COPY ... TO PROGRAM`; dropping a
    // table of a schema it owns; a definer function or owner-rights view granted to the login
    // alone), and the check passed.
    let it = Isolated::new("lg").await;
    let r = &it.roles;
    let gateway = r.gateway();
    let creator = format!("{}_creator", r.prefix());
    let member = format!("{}_member", r.prefix());
    let cases: Vec<(Vec<String>, Vec<String>, String)> = vec![
        (
            vec![format!("alter role {gateway} createrole")],
            vec![format!("alter role {gateway} nocreaterole")],
            "which has CREATEROLE".into(),
        ),
        (
            vec![format!("alter role {gateway} replication")],
            vec![format!("alter role {gateway} noreplication")],
            "which has REPLICATION".into(),
        ),
        (
            vec![format!("create role {creator} nologin createrole role {gateway}")],
            vec![format!("drop role {creator}")],
            format!("is a member of \"{creator}\""),
        ),
        (
            vec![format!("grant pg_execute_server_program to {gateway}")],
            vec![format!("revoke pg_execute_server_program from {gateway}")],
            "is a member of \"pg_execute_server_program\"".into(),
        ),
        (
            vec![format!("grant pg_read_server_files to {gateway}")],
            vec![format!("revoke pg_read_server_files from {gateway}")],
            "is a member of \"pg_read_server_files\"".into(),
        ),
        (
            vec![format!("grant pg_write_server_files to {gateway}")],
            vec![format!("revoke pg_write_server_files from {gateway}")],
            "is a member of \"pg_write_server_files\"".into(),
        ),
        (
            vec![format!("grant create on schema rowguard_audit to {gateway}")],
            vec![format!("revoke create on schema rowguard_audit from {gateway}")],
            "may create objects in schema rowguard_audit".into(),
        ),
        (
            vec![
                "create function public.login_notes() returns setof text language sql security definer \
                 as $$ select clinical_notes from rowguard.patients $$"
                    .into(),
                "revoke all on function public.login_notes() from public".into(),
                format!("grant execute on function public.login_notes() to {gateway}"),
            ],
            vec!["drop function public.login_notes()".into()],
            "SECURITY DEFINER function public.login_notes() runs as".into(),
        ),
        (
            vec![
                "create view public.login_notes_v as select mrn, clinical_notes from rowguard.patients".into(),
                format!("grant select on public.login_notes_v to {gateway}"),
            ],
            vec!["drop view public.login_notes_v".into()],
            "ALTER VIEW public.login_notes_v SET (security_invoker = true)".into(),
        ),
        // The re-review: CREATE on the database (or owning it) let the login plant a schema
        // named after the role that runs `rowguard migrate`, whose objects that superuser then
        // used; definer functions owned by a member of the owner, or put in pg_catalog, were
        // not looked at.
        (
            vec![format!("grant create on database {} to {gateway}", it.name)],
            vec![format!("revoke create on database {} from {gateway}", it.name)],
            "may create objects in the database".into(),
        ),
        (
            vec![format!("grant create on schema public to {gateway}")],
            vec![format!("revoke create on schema public from {gateway}")],
            "may create objects in schema public".into(),
        ),
        (
            vec![
                format!("create role {member} nologin"),
                format!("grant {} to {member}", r.owner()),
                "create function public.member_notes() returns setof text language sql security definer \
                 as $$ select clinical_notes from rowguard.patients $$"
                    .into(),
                format!("alter function public.member_notes() owner to {member}"),
            ],
            vec![
                "drop function public.member_notes()".into(),
                format!("drop role {member}"),
            ],
            "SECURITY DEFINER function public.member_notes() runs as".into(),
        ),
        (
            vec![
                "create function pg_catalog.peek_notes() returns setof text language sql security definer \
                 as $$ select clinical_notes from rowguard.patients $$"
                    .into(),
            ],
            vec!["drop function pg_catalog.peek_notes()".into()],
            "SECURITY DEFINER function pg_catalog.peek_notes() runs as".into(),
        ),
        // Handing the schema back loses the grants its owner had made on it: they are made again.
        (
            vec![format!("alter schema rowguard owner to {gateway}")],
            std::iter::once(format!("alter schema rowguard owner to {}", r.owner()))
                .chain(schema_grants(&it.admin, "rowguard").await)
                .collect(),
            "owns (or may act as the owner of) schema rowguard".into(),
        ),
    ];
    it.db.self_check().await.expect("passes before any change");
    for (break_it, mend_it, named) in &cases {
        for sql in break_it {
            execute(&it.admin, sql, []).await.expect(sql);
        }
        let message = refusal(&it.db).await;
        for sql in mend_it {
            execute(&it.admin, sql, []).await.expect(sql);
        }
        assert!(
            message.contains(named.as_str()),
            "after `{break_it:?}` the refusal should say `{named}`:\n{message}"
        );
        it.db
            .self_check()
            .await
            .unwrap_or_else(|e| panic!("after `{mend_it:?}` the check should pass again: {e}"));
    }
    it.drop_all().await;
}

#[tokio::test]
async fn self_check_refuses_a_search_path_that_puts_a_schema_ahead_of_pg_catalog() {
    // A review: with the login's search_path set to `leak, pg_catalog`, a `leak.set_config`
    // answered the identity statement and every request ran as clinician 1.
    let it = Isolated::new("sp").await;
    execute(&it.admin, "create schema leak", [])
        .await
        .expect("schema");
    execute(
        &it.admin,
        &format!("grant usage on schema leak to {}", it.roles.gateway()),
        [],
    )
    .await
    .expect("usage");
    execute(
        &it.admin,
        &format!(
            "alter role {} set search_path = leak, pg_catalog",
            it.roles.gateway()
        ),
        [],
    )
    .await
    .expect("role setting");
    let cluster = rowguard_tests::cluster();
    let fresh = Database::from_pool(
        connect(&cluster.url_as(&it.name, &it.roles.gateway(), "x"), 1, None).await,
        it.roles.clone(),
    );
    let message = refusal(&fresh).await;
    assert!(
        message.contains(&format!(
            "ALTER ROLE {} RESET search_path",
            it.roles.gateway()
        )),
        "{message}"
    );
    let _ = fresh.close().await;
    execute(
        &it.admin,
        &format!("alter role {} reset search_path", it.roles.gateway()),
        [],
    )
    .await
    .expect("reset");
    let fresh = Database::from_pool(
        connect(&cluster.url_as(&it.name, &it.roles.gateway(), "x"), 1, None).await,
        it.roles.clone(),
    );
    fresh.self_check().await.expect("passes once reset");
    let _ = fresh.close().await;
    execute(&it.admin, "drop schema leak cascade", [])
        .await
        .expect("drop");
    it.drop_all().await;
}

#[tokio::test]
async fn self_check_refuses_triggers_switched_off_server_file_functions_granted_and_leakproof_functions()
 {
    // A review: `session_replication_role = replica` for the login switched the version check
    // off (two updates of one version both succeeded); EXECUTE on `pg_read_binary_file` let a
    // clinician read another patient's notes from the table's file; a function marked
    // LEAKPROOF ran before the policies, and its error told a hidden value.
    let it = Isolated::new("sx").await;
    let (gateway, clinician) = (it.roles.gateway(), it.roles.clinician());
    let cases = [
        (
            format!("alter role {gateway} set session_replication_role = replica"),
            "session_replication_role",
            format!("alter role {gateway} reset session_replication_role"),
        ),
        (
            format!(
                "grant execute on function pg_catalog.pg_read_binary_file(text) to {clinician}"
            ),
            "pg_read_binary_file",
            format!(
                "revoke execute on function pg_catalog.pg_read_binary_file(text) from {clinician}"
            ),
        ),
        (
            "create function public.peek(integer) returns boolean language sql leakproof \
             as $$ select $1 > 0 $$"
                .to_owned(),
            "LEAKPROOF",
            "drop function public.peek(integer)".to_owned(),
        ),
    ];
    let cluster = rowguard_tests::cluster();
    for (drift, needle, undo) in cases {
        execute(&it.admin, &drift, []).await.expect("drift");
        // A new session: role settings apply when it starts.
        let fresh = Database::from_pool(
            connect(&cluster.url_as(&it.name, &gateway, "x"), 1, None).await,
            it.roles.clone(),
        );
        let message = refusal(&fresh).await;
        assert!(message.contains(needle), "{drift}: {message}");
        let _ = fresh.close().await;
        execute(&it.admin, &undo, []).await.expect("undo");
        let fresh = Database::from_pool(
            connect(&cluster.url_as(&it.name, &gateway, "x"), 1, None).await,
            it.roles.clone(),
        );
        fresh.self_check().await.expect("passes once undone");
        let _ = fresh.close().await;
    }
    it.drop_all().await;
}

#[tokio::test]
async fn rowguard_check_refuses_when_an_application_role_can_bypass_row_level_security() {
    // The reviewer's finding: with BYPASSRLS on the clinician role, `rowguard check` passed and
    // alice read every patient's notes.
    let it = Isolated::new("bp").await;
    execute(
        &it.admin,
        &format!("alter role {} bypassrls", it.roles.clinician()),
        [],
    )
    .await
    .expect("misconfigure");
    let url = rowguard_tests::cluster().url_as(&it.name, &it.roles.gateway(), "x");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rowguard-cli"))
        .arg("check")
        .env("DATABASE_URL", url)
        .env("ROWGUARD_ROLE_PREFIX", it.roles.prefix())
        .output()
        .expect("rowguard check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "rowguard check passed:\n{stderr}");
    assert!(
        stderr.contains(&format!("ALTER ROLE {} NOBYPASSRLS", it.roles.clinician())),
        "{stderr}"
    );
    execute(
        &it.admin,
        &format!("alter role {} nobypassrls", it.roles.clinician()),
        [],
    )
    .await
    .expect("mend");
    it.drop_all().await;
}
