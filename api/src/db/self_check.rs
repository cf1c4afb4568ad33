use std::fmt;
use std::sync::atomic::Ordering;

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult, Statement, Value};

use super::{Database, DbError};

/// The startup self-check found reasons not to serve. Each entry says what is wrong and how to
/// fix it; no entry contains data from any table.
#[derive(Debug, thiserror::Error)]
pub struct SelfCheckFailed {
    pub problems: Vec<String>,
}

impl fmt::Display for SelfCheckFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "refusing to serve: the database setup would not enforce row level security"
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// The schemas whose tables hold protected data (clinical data and the audit trail).
const PROTECTED_SCHEMAS: &str = "{rowguard,rowguard_audit}";
/// Tables whose policies must apply even to their owner.
const FORCED_TABLES: &[&str] = &["rowguard.patients"];

impl Database {
    /// Checks, as the gateway's own login, that PostgreSQL will actually enforce row level
    /// security for it. Called before serving; any problem means refusing to start.
    pub async fn self_check(&self) -> Result<(), SelfCheckError> {
        self.check(true).await
    }

    /// Runs the self-check again every `every` while the gateway serves: a grant, a membership
    /// or a policy changed after start (`GRANT owner TO gateway`, a helper replaced) stops every
    /// request (`SERVICE_UNAVAILABLE`) and `/readyz`, with an error in the log naming the
    /// problems, until the check passes again. The audit trail's functions are left to the
    /// sealer here: a newer release's migrations change them while this one still runs.
    pub async fn keep_checking(self, every: std::time::Duration) {
        loop {
            tokio::time::sleep(every).await;
            match self.check(false).await {
                Ok(()) => {
                    if self.self_check_failed.swap(false, Ordering::Relaxed) {
                        tracing::warn!("the database passes the self-check again; serving");
                    }
                }
                Err(SelfCheckError::Failed(failed)) => {
                    if !self.self_check_failed.swap(true, Ordering::Relaxed) {
                        tracing::error!(
                            problems = ?failed.problems,
                            "the database no longer passes the startup self-check: every request is refused until it does"
                        );
                    }
                }
                // Unreachable or slow: requests find that out themselves.
                Err(SelfCheckError::Database(e)) => {
                    tracing::warn!(error = %e, "the periodic self-check could not run");
                }
            }
        }
    }

    async fn check(&self, audit_schema: bool) -> Result<(), SelfCheckError> {
        let mut problems = Vec::new();
        // Catalog reads only; a transaction keeps them on one server connection behind a pooler.
        let txn = self.begin().await?;
        let login = one(
            &txn,
            "select current_user::text as name, rolsuper, rolbypassrls, rolinherit, \
                    rolcreaterole, rolreplication \
                 from pg_catalog.pg_roles where rolname = current_user",
            [],
        )
        .await?;
        let name: String = get(&login, "name")?;
        if get::<bool>(&login, "rolsuper")? {
            problems.push(format!(
                "DATABASE_URL connects as {name:?}, a superuser; superusers bypass row level security. \
                 Connect as the gateway role {:?} instead.",
                self.roles.gateway()
            ));
        }
        if get::<bool>(&login, "rolbypassrls")? {
            problems.push(format!(
                "DATABASE_URL connects as {name:?}, which has BYPASSRLS. Run `ALTER ROLE {name} NOBYPASSRLS` \
                 or connect as {:?}.",
                self.roles.gateway()
            ));
        }
        // CREATEROLE may grant itself any role that is not a superuser (the owner, then read with
        // row level security switched off); REPLICATION streams the whole cluster's data.
        if get::<bool>(&login, "rolcreaterole")? {
            problems.push(format!(
                "DATABASE_URL connects as {name:?}, which has CREATEROLE and could grant itself the owner \
                 role and read every row. Run `ALTER ROLE {name} NOCREATEROLE`."
            ));
        }
        if get::<bool>(&login, "rolreplication")? {
            problems.push(format!(
                "DATABASE_URL connects as {name:?}, which has REPLICATION and could copy the whole \
                 cluster's data past every policy. Run `ALTER ROLE {name} NOREPLICATION`."
            ));
        }
        // Every statement Rowguard sends names functions (`set_config`), operators and types
        // without a schema: a schema searched before pg_catalog (a role's or database's
        // `search_path` setting) would answer them instead, e.g. with an identity of its choosing.
        let path = one(
            &txn,
            "select pg_catalog.current_schemas(true)::text[] as schemas",
            [],
        )
        .await?;
        let ahead: Vec<String> = get::<Vec<String>>(&path, "schemas")?
            .into_iter()
            .take_while(|schema| schema != "pg_catalog")
            .filter(|schema| !schema.starts_with("pg_temp"))
            .collect();
        if !ahead.is_empty() {
            problems.push(format!(
                "the search_path of {name:?} puts {ahead:?} ahead of pg_catalog (an `ALTER ROLE` or `ALTER DATABASE ... \
                 SET search_path`): functions and operators there would stand in for the system's in every statement \
                 the gateway sends; run `ALTER ROLE {name} RESET search_path` (and the same for the database)."
            ));
        }
        // `replica` (an `ALTER ROLE ... SET session_replication_role` by a superuser) fires no
        // ordinary trigger and checks no foreign key in the gateway's sessions: the version
        // check that prevents lost updates and the audit trail's append-only guards are
        // triggers.
        let replication_role: String = get(
            &one(
                &txn,
                "select pg_catalog.current_setting('session_replication_role') as value",
                [],
            )
            .await?,
            "value",
        )?;
        if replication_role != "origin" {
            problems.push(format!(
                "the sessions of {name:?} run with session_replication_role = {replication_role:?}, which \
                 switches triggers and foreign keys off; run `ALTER ROLE {name} RESET session_replication_role` \
                 (and the same for the database)."
            ));
        }
        // Functions that PUBLIC may not run (reading the server's files, large-object import and
        // export, a database link) granted to the login, an application role or any other role
        // they belong to: `pg_read_binary_file` on a table's file reads every row past its
        // policies. The built-in `pg_*` roles are judged by membership above.
        let functions = all(
            &txn,
            "select distinct p.oid::pg_catalog.regprocedure::text as name \
             from pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a \
             where a.privilege_type = 'EXECUTE' and a.grantee <> 0 and a.grantee <> p.proowner \
               and p.pronamespace::pg_catalog.regnamespace::text <> all($1::text[]) \
               and pg_catalog.pg_get_userbyid(a.grantee) !~ '^pg_' \
               and pg_catalog.pg_has_role(current_user, a.grantee, 'MEMBER') \
               and not exists (select 1 from pg_catalog.aclexplode(p.proacl) b \
                               where b.grantee = 0 and b.privilege_type = 'EXECUTE') \
             order by 1",
            [PROTECTED_SCHEMAS.into()],
        )
        .await?;
        for function in &functions {
            let function: String = get(function, "name")?;
            problems.push(format!(
                "role {name:?} (itself or through an application role) may run {function}, which PUBLIC may \
                 not (such functions reach the server's files or other databases past row level security); \
                 revoke that EXECUTE grant."
            ));
        }
        // A LEAKPROOF function runs before a table's policies filter its rows, so one that can
        // fail or signal depending on its argument tells a hidden row's values. Marking one is a
        // superuser's act; the built-in ones are PostgreSQL's and an extension's are its
        // authors', any other is reported.
        let leakproof = all(
            &txn,
            "select p.oid::pg_catalog.regprocedure::text as name from pg_catalog.pg_proc p \
             where p.proleakproof and p.oid >= 16384 \
               and not exists (select 1 from pg_catalog.pg_depend d \
                               where d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
                                 and d.objid = p.oid and d.deptype = 'e') \
             order by 1",
            [],
        )
        .await?;
        for function in &leakproof {
            let function: String = get(function, "name")?;
            problems.push(format!(
                "{function} is marked LEAKPROOF, so it runs before row level security filters rows and \
                 its errors can tell hidden values; run `ALTER FUNCTION {function} NOT LEAKPROOF`."
            ));
        }
        // `SET ROLE` needs only membership: a login that may become a superuser, a BYPASSRLS
        // role (a managed service's `postgres`, say), a role that may grant itself others
        // (CREATEROLE) or stream the cluster (REPLICATION), or one of the built-in roles that
        // reach the server's programs and files, can read every row.
        let unbounded = all(
            &txn,
            "select r.rolname::text as name from pg_catalog.pg_roles r \
             where (r.rolsuper or r.rolbypassrls or r.rolcreaterole or r.rolreplication \
                    or r.rolname in ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files')) \
               and r.rolname <> current_user \
               and pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER') order by 1",
            [],
        )
        .await?;
        for role in &unbounded {
            let role: String = get(role, "name")?;
            problems.push(format!(
                "role {name:?} is a member of {role:?}, which reads past row level security (a superuser or \
                 BYPASSRLS role, one that may grant itself other roles or copy the cluster, or one that runs \
                 programs or reads and writes files on the server), and could switch to it; run \
                 `REVOKE {role} FROM {name}`."
            ));
        }
        // A schema's owner may drop or replace what is in it (a table dropped takes its policies
        // with it). (Membership of the owner role itself is reported with the tables below.)
        let schemas = all(
            &txn,
            "select n.nspname::text as name from pg_catalog.pg_namespace n \
             where n.nspname = any($1::text[]) and pg_catalog.pg_get_userbyid(n.nspowner) <> $2 \
               and pg_catalog.pg_has_role(current_user, n.nspowner, 'MEMBER') order by 1",
            [PROTECTED_SCHEMAS.into(), self.roles.owner().into()],
        )
        .await?;
        // CREATE on the database, or on any schema, lets the login plant objects that another
        // role's unqualified names resolve to: a schema named after the role that runs
        // `rowguard migrate` puts its tables ahead of `public` for that superuser.
        let creates = all(
            &txn,
            "select 'the database' as what, 'REVOKE CREATE ON DATABASE ' || pg_catalog.quote_ident(d.datname) \
                    || ' FROM ' || pg_catalog.quote_ident(current_user) as fix \
             from pg_catalog.pg_database d where d.datname = pg_catalog.current_database() \
               and (pg_catalog.has_database_privilege(current_user, d.oid, 'CREATE') \
                    or pg_catalog.pg_has_role(current_user, d.datdba, 'MEMBER')) \
             union all \
             select 'schema ' || n.nspname, 'REVOKE CREATE ON SCHEMA ' || pg_catalog.quote_ident(n.nspname) \
                    || ' FROM ' || pg_catalog.quote_ident(current_user) \
             from pg_catalog.pg_namespace n \
             where n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%' \
               and pg_catalog.has_schema_privilege(current_user, n.oid, 'CREATE') \
             order by 1",
            [],
        )
        .await?;
        for create in &creates {
            let what: String = get(create, "what")?;
            let fix: String = get(create, "fix")?;
            problems.push(format!(
                "role {name:?} may create objects in {what} (or owns it): objects it plants there can stand \
                 in for what other roles' statements name, `rowguard migrate`'s included; run `{fix}` (and \
                 give the database to another owner if it owns it)."
            ));
        }
        for schema in &schemas {
            let schema_name: String = get(schema, "name")?;
            problems.push(format!(
                "role {name:?} owns (or may act as the owner of) schema {schema_name} and could drop or \
                 replace its tables and their policies; run `ALTER SCHEMA {schema_name} OWNER TO {}`.",
                self.roles.owner()
            ));
        }
        if !schemas.is_empty() {
            // The owner role may have lost its rights on the schema with it, so the checks
            // below, which run as the owner, could not say anything useful.
            txn.rollback().await.map_err(DbError::from)?;
            return Err(SelfCheckError::Failed(SelfCheckFailed { problems }));
        }
        if get::<bool>(&login, "rolinherit")? {
            problems.push(format!(
                "role {name:?} inherits privileges; without a role switch it would act as an application \
                 role. Run `ALTER ROLE {name} NOINHERIT`."
            ));
        }

        let tables = all(
                &txn,
                "select n.nspname || '.' || c.relname as name, c.relrowsecurity, c.relforcerowsecurity, \
                        pg_catalog.pg_has_role(current_user, c.relowner, 'MEMBER') as owned, \
                        pg_catalog.has_table_privilege(current_user, c.oid, \
                            'SELECT, INSERT, UPDATE, DELETE, TRUNCATE') as privileged \
                 from pg_catalog.pg_class c \
                 join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                 where n.nspname = any($1::text[]) and c.relkind in ('r', 'p') \
                 order by 1",
                [PROTECTED_SCHEMAS.into()],
            )
            .await?;
        if tables.is_empty() {
            problems.push("no Rowguard tables found: run `rowguard migrate` first.".to_owned());
        }
        for table in &tables {
            let table_name: String = get(table, "name")?;
            if get::<bool>(table, "owned")? {
                problems.push(format!(
                    "role {name:?} owns (or may act as the owner of) {table_name}; \
                     owners bypass row level security. The gateway's login must own nothing and be a \
                     member of no owner: run `REVOKE {} FROM {name}` (or connect as {:?}).",
                    self.roles.owner(),
                    self.roles.gateway()
                ));
            }
            if get::<bool>(table, "privileged")? {
                problems.push(format!(
                    "role {name:?} has table privileges on {table_name} of its own; \
                     run `REVOKE ALL ON {table_name} FROM {name}, PUBLIC`."
                ));
            }
            if !get::<bool>(table, "relrowsecurity")? {
                problems.push(format!(
                    "{table_name} does not have row level security enabled; run \
                     `ALTER TABLE {table_name} ENABLE ROW LEVEL SECURITY` \
                     (or re-run `rowguard migrate`)."
                ));
            }
            if FORCED_TABLES.contains(&table_name.as_str())
                && !get::<bool>(table, "relforcerowsecurity")?
            {
                problems.push(format!(
                    "{table_name} does not FORCE row level security, so its owner \
                     bypasses it; run `ALTER TABLE {table_name} FORCE ROW LEVEL SECURITY`."
                ));
            }
        }

        self.check_application_roles(&txn, &name, &mut problems)
            .await?;
        self.check_functions_and_public(&txn, &mut problems).await?;
        self.check_policies(&txn, &mut problems).await?;
        // The baseline the policies are compared with is the database's own, which its owner
        // can re-record; the audit trail's functions and triggers are also compared with this
        // build's migrations.
        let audit = if audit_schema {
            crate::audit::schema_drift::ExpectedAuditSchema::for_roles(&self.roles)
                .drift(&txn)
                .await?
        } else {
            Vec::new()
        };
        problems.extend(audit.into_iter().map(|difference| {
            format!(
                "{difference}: the audit trail's functions and triggers must be exactly those `rowguard migrate` \
                 made (they decide what is recorded and sealed); restore them from migration/src/sql"
            )
        }));
        self.check_views(&txn, &mut problems).await?;

        txn.rollback().await.map_err(DbError::from)?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SelfCheckError::Failed(SelfCheckFailed { problems }))
        }
    }
}

impl Database {
    /// Every application role: present, switchable by the login, never a superuser, never
    /// `BYPASSRLS`, never able to log in, and a member of nothing but (for a writer) its own
    /// reader — in particular never of the owner or of another application role.
    async fn check_application_roles(
        &self,
        txn: &DatabaseTransaction,
        login: &str,
        problems: &mut Vec<String>,
    ) -> Result<(), DbError> {
        let owner = self.roles.owner();
        let app_roles = self.roles.application_roles();
        let owner_member = one(
            txn,
            "select coalesce((select pg_catalog.pg_has_role(current_user, oid, 'MEMBER') \
                              from pg_catalog.pg_roles where rolname = $1), false) as member",
            [owner.clone().into()],
        )
        .await?;
        if get::<bool>(&owner_member, "member")? {
            problems.push(format!(
                "role {login:?} is a member of the schema owner {owner:?} and could act as it; run \
                 `REVOKE {owner} FROM {login}`."
            ));
        }
        for role in &app_roles {
            let row = one(
                txn,
                "select exists (select from pg_catalog.pg_roles where rolname = $1) as present, \
                        coalesce((select pg_catalog.pg_has_role(current_user, oid, 'MEMBER') \
                                  from pg_catalog.pg_roles where rolname = $1), false) as member, \
                        coalesce((select rolsuper from pg_catalog.pg_roles where rolname = $1), false) as superuser, \
                        coalesce((select rolbypassrls from pg_catalog.pg_roles where rolname = $1), false) as bypassrls, \
                        coalesce((select rolcanlogin from pg_catalog.pg_roles where rolname = $1), false) as login, \
                        coalesce((select array_agg(g.rolname::text order by g.rolname) \
                                  from pg_catalog.pg_auth_members m \
                                  join pg_catalog.pg_roles g on g.oid = m.roleid \
                                  join pg_catalog.pg_roles r on r.oid = m.member \
                                  where r.rolname = $1), '{}') as member_of",
                [role.clone().into()],
            )
            .await?;
            if !get::<bool>(&row, "present")? {
                problems.push(format!(
                    "application role {role:?} does not exist; check ROWGUARD_ROLE_PREFIX \
                     (now {:?}) and run `rowguard migrate`.",
                    self.roles.prefix()
                ));
                continue;
            }
            if !get::<bool>(&row, "member")? {
                problems.push(format!(
                    "role {login:?} cannot switch to {role:?}; run `GRANT {role} TO {login}`."
                ));
            }
            if get::<bool>(&row, "superuser")? {
                problems.push(format!(
                    "application role {role:?} is a superuser, so row level security does not apply to \
                     it; run `ALTER ROLE {role} NOSUPERUSER`."
                ));
            }
            if get::<bool>(&row, "bypassrls")? {
                problems.push(format!(
                    "application role {role:?} has BYPASSRLS, so its requests would see every row; \
                     run `ALTER ROLE {role} NOBYPASSRLS`."
                ));
            }
            if get::<bool>(&row, "login")? {
                problems.push(format!(
                    "application role {role:?} can log in; nobody should connect as it. Run \
                     `ALTER ROLE {role} NOLOGIN`."
                ));
            }
            // A writer is a member of its reader, by design; nothing else.
            let allowed = role.strip_suffix("_writer");
            for group in get::<Vec<String>>(&row, "member_of")? {
                if Some(group.as_str()) != allowed {
                    problems.push(format!(
                        "application role {role:?} is a member of {group:?} and gains its privileges; \
                         run `REVOKE {group} FROM {role}`."
                    ));
                }
            }
        }
        Ok(())
    }

    /// `SECURITY DEFINER` functions must belong to the owner and pin their `search_path` (or a
    /// caller could shadow what they call); `PUBLIC` must hold nothing in Rowguard's schemas.
    async fn check_functions_and_public(
        &self,
        txn: &DatabaseTransaction,
        problems: &mut Vec<String>,
    ) -> Result<(), DbError> {
        let owner = self.roles.owner();
        let definers = all(
            txn,
            "select n.nspname || '.' || p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')' as name, \
                    pg_catalog.pg_get_userbyid(p.proowner)::text as owner, \
                    coalesce('search_path=pg_catalog, pg_temp' = any(p.proconfig), false) as pinned \
             from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
             where n.nspname = any($1::text[]) and p.prosecdef \
             order by 1",
            [PROTECTED_SCHEMAS.into()],
        )
        .await?;
        for function in &definers {
            let function_name: String = get(function, "name")?;
            let function_owner: String = get(function, "owner")?;
            if function_owner != owner {
                problems.push(format!(
                    "SECURITY DEFINER function {function_name} belongs to {function_owner:?}, so it runs \
                     with that role's rights; run `ALTER FUNCTION {function_name} OWNER TO {owner}`."
                ));
            }
            if !get::<bool>(function, "pinned")? {
                problems.push(format!(
                    "SECURITY DEFINER function {function_name} does not pin its search_path; run \
                     `ALTER FUNCTION {function_name} SET search_path = pg_catalog, pg_temp`."
                ));
            }
        }
        let public = all(
            txn,
            "select 'schema ' || n.nspname as what, 'REVOKE ALL ON SCHEMA ' || n.nspname || ' FROM PUBLIC' as fix \
             from pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a \
             where n.nspname = any($1::text[]) and a.grantee = 0 \
             union all \
             select distinct 'table ' || n.nspname || '.' || c.relname, \
                    'REVOKE ALL ON ' || n.nspname || '.' || c.relname || ' FROM PUBLIC' \
             from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace, \
                  pg_catalog.aclexplode(c.relacl) a \
             where n.nspname = any($1::text[]) and a.grantee = 0 \
             union all \
             select 'function ' || n.nspname || '.' || p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', \
                    'REVOKE ALL ON FUNCTION ' || n.nspname || '.' || p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ') FROM PUBLIC' \
             from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
             where n.nspname = any($1::text[]) \
               and (p.proacl is null or exists (select 1 from pg_catalog.aclexplode(p.proacl) a where a.grantee = 0)) \
             order by 1",
            [PROTECTED_SCHEMAS.into()],
        )
        .await?;
        for grant in &public {
            let what: String = get(grant, "what")?;
            let fix: String = get(grant, "fix")?;
            problems.push(format!(
                "PUBLIC (every role) holds privileges on {what}; run `{fix}`."
            ));
        }
        Ok(())
    }

    /// A view runs with its owner's rights unless it is `security_invoker`, and a materialized
    /// view holds what its owner saw when it was refreshed: either, over a protected table and
    /// readable by an application role, hands that role rows its policies would hide.
    async fn check_views(
        &self,
        txn: &DatabaseTransaction,
        problems: &mut Vec<String>,
    ) -> Result<(), DbError> {
        // Followed through views of views: an owner-rights view granted to nobody, wrapped in
        // one that is granted, hands over the same rows. A grant on some columns is enough.
        let views = all(
            txn,
            "with recursive reads(oid) as ( \
               select c.oid from pg_catalog.pg_class c \
               join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
               where n.nspname = any($1::text[]) \
               union \
               select w.ev_class from reads r \
               join pg_catalog.pg_depend d on d.refobjid = r.oid and d.classid = 'pg_catalog.pg_rewrite'::regclass \
               join pg_catalog.pg_rewrite w on w.oid = d.objid \
               where w.ev_class <> r.oid) \
             select n.nspname || '.' || c.relname as name, c.relkind = 'm' as materialized \
             from pg_catalog.pg_class c \
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
             where c.oid in (select oid from reads) and c.relkind in ('v', 'm') \
               and (c.relkind = 'm' or not exists (select 1 from unnest(c.reloptions) o \
                    where lower(o) in ('security_invoker=true', 'security_invoker=on', 'security_invoker=1', 'security_invoker=yes'))) \
               and exists (select 1 from unnest(array_append($2::text[], current_user::text)) r(role) \
                           where exists (select 1 from pg_catalog.pg_roles where rolname = r.role) \
                             and pg_catalog.has_any_column_privilege(r.role, c.oid, 'SELECT')) \
             order by 1",
            [
                PROTECTED_SCHEMAS.into(),
                self.roles.application_roles().to_vec().into(),
            ],
        )
        .await?;
        for view in &views {
            let view_name: String = get(view, "name")?;
            if get::<bool>(view, "materialized")? {
                problems.push(format!(
                    "materialized view {view_name} reads Rowguard's tables and an application role may select \
                     from it: it holds what its owner saw, past every policy; revoke SELECT on it from the \
                     gateway's login and the application roles, or drop it."
                ));
            } else {
                problems.push(format!(
                    "view {view_name} reads Rowguard's tables with its owner's rights and the gateway's login or \
                     an application role may select from it; run `ALTER VIEW {view_name} SET (security_invoker = true)`."
                ));
            }
        }
        // A SECURITY DEFINER function elsewhere runs as its owner: one that reads past row
        // level security (a superuser, BYPASSRLS, the schema owner or a member of it, a role that
        // may grant itself others) and that an application role may call returns whatever it
        // selects. Functions made after the system's own (any schema, `pg_catalog` included).
        let definers = all(
            txn,
            "select n.nspname || '.' || p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')' as name, \
                    o.rolname::text as owner \
             from pg_catalog.pg_proc p \
             join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
             join pg_catalog.pg_roles o on o.oid = p.proowner \
             where p.prosecdef and n.nspname <> all($1::text[]) \
               and p.oid >= 16384 \
               and (o.rolsuper or o.rolbypassrls or o.rolcreaterole or o.rolreplication \
                    or pg_catalog.pg_has_role(o.oid, $3, 'MEMBER')) \
               and exists (select 1 from unnest(array_append($2::text[], current_user::text)) r(role) \
                           where exists (select 1 from pg_catalog.pg_roles where rolname = r.role) \
                             and pg_catalog.has_function_privilege(r.role, p.oid, 'EXECUTE')) \
             order by 1",
            [
                PROTECTED_SCHEMAS.into(),
                self.roles.application_roles().to_vec().into(),
                self.roles.owner().into(),
            ],
        )
        .await?;
        for function in &definers {
            let function_name: String = get(function, "name")?;
            let owner: String = get(function, "owner")?;
            problems.push(format!(
                "SECURITY DEFINER function {function_name} runs as {owner:?}, which reads past row level security, \
                 and the gateway's login or an application role may call it; run `REVOKE EXECUTE ON FUNCTION \
                 {function_name} FROM PUBLIC` (and from the gateway's login and the application roles), or drop it."
            ));
        }
        Ok(())
    }

    /// The policies must be exactly those the migrations made (recorded by them).
    async fn check_policies(
        &self,
        txn: &DatabaseTransaction,
        problems: &mut Vec<String>,
    ) -> Result<(), DbError> {
        let drift = all(
            txn,
            "select schemaname::text || '.' || tablename::text as table_name, policyname::text as policy, change \
             from rowguard.policy_drift()",
            [],
        )
        .await?;
        for row in &drift {
            let table: String = get(row, "table_name")?;
            let policy: String = get(row, "policy")?;
            let change: String = get(row, "change")?;
            // The baseline holds policies, functions (`schema.(function)`) and the grants on a
            // relation (`(privileges)`), each compared as a whole.
            if let Some(schema) = table.strip_suffix(".(function)") {
                problems.push(format!(
                    "function {schema}.{policy} was {change} outside `rowguard migrate` (its body, settings, owner or \
                     EXECUTE grants; a policy that calls it changes with it); restore it from migration/src/sql \
                     (compare `\\df+ {schema}.*` with a freshly migrated copy)."
                ));
            } else if let Some(what) = policy
                .strip_prefix("(trigger) ")
                .map(|t| format!("trigger {t:?}"))
                .or_else(|| {
                    policy
                        .strip_prefix("(rule) ")
                        .map(|r| format!("rule {r:?}"))
                })
            {
                problems.push(format!(
                    "{what} on {table} was {change} outside `rowguard migrate`: it runs with every write or read of \
                     the table and could copy rows past the policies; restore the migrations' definition (compare \
                     `\\d {table}` with a freshly migrated copy)."
                ));
            } else if policy == "(privileges)" {
                problems.push(format!(
                    "the privileges on {table} were {change} outside `rowguard migrate` (a GRANT or REVOKE on it or \
                     its columns, or its options): a grant decides what an application role reaches before any \
                     policy does; compare `\\dp {table}` with a freshly migrated copy and revoke what was added."
                ));
            } else {
                let fix = match change.as_str() {
                    "added" => format!("drop it with `DROP POLICY {policy} ON {table}`"),
                    "dropped" => "re-create it by re-running the migrations on a copy and comparing, or restore the schema from `rowguard migrate`".to_owned(),
                    _ => format!("restore its definition (compare `\\d {table}` with migration/src/sql)"),
                };
                problems.push(format!(
                    "row level security policy {policy:?} on {table} was {change} outside `rowguard migrate`; {fix}."
                ));
            }
        }
        Ok(())
    }
}

async fn one<const N: usize>(
    txn: &DatabaseTransaction,
    sql: &str,
    values: [Value; N],
) -> Result<QueryResult, DbError> {
    txn.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await
    .map_err(DbError::from)?
    .ok_or_else(|| DbError::Statement(sea_orm::DbErr::RecordNotFound(sql.to_owned())))
}

async fn all<const N: usize>(
    txn: &DatabaseTransaction,
    sql: &str,
    values: [Value; N],
) -> Result<Vec<QueryResult>, DbError> {
    txn.query_all_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await
    .map_err(DbError::from)
}

/// Why the self-check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum SelfCheckError {
    #[error(transparent)]
    Failed(#[from] SelfCheckFailed),
    #[error(
        "could not run the startup self-check: {error}{why}",
        error = .0,
        why = .0.connection_failure()
            .or_else(|| .0.sqlstate().map(|code| format!("SQLSTATE {code}{}", if code == "42501" {
                ": a privilege it needs was refused; the owner role may have lost its rights on Rowguard's schemas"
            } else { "" })))
            .map(|why| format!(" ({why})"))
            .unwrap_or_default()
    )]
    Database(#[from] DbError),
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, column: &str) -> Result<T, DbError> {
    row.try_get("", column).map_err(DbError::Statement)
}
