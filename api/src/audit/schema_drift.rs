//! How the audit trail's schema in the database differs from what this build's migrations
//! define: its functions (body, `SECURITY DEFINER`, settings), its triggers (present and
//! enabled) and any rule. The sealer seals what `final_events()` returns and requests append
//! through `append()`: an owner who replaces either, or adds a trigger that rewrites events as
//! they are written, decides what gets sealed, and then edits the stored rows to match. The
//! startup self-check's own baseline lives in the database, where that owner can re-record it;
//! this one is compiled into the gateway, and is read from catalogs only a superuser can write.

use std::collections::BTreeMap;

use migration::RoleNames;
use migration::audit_schema::{AuditSchema, trigger_definition};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sha2::{Digest, Sha256};

use crate::db::DbError;

/// What the migrations define, digested as the catalog query below digests the database.
#[derive(Debug, Clone)]
pub struct ExpectedAuditSchema {
    /// Function name → `sha256(body) | security definer | settings`.
    functions: BTreeMap<String, String>,
    /// `table.trigger` → when it fires and what it runs.
    triggers: BTreeMap<String, String>,
}

impl ExpectedAuditSchema {
    pub fn for_roles(roles: &RoleNames) -> Self {
        let AuditSchema {
            functions,
            triggers,
        } = migration::audit_schema(roles);
        Self {
            functions: functions
                .into_iter()
                .map(|(name, f)| {
                    let digest = hex::encode(Sha256::digest(f.body.as_bytes()));
                    (
                        name,
                        format!("{digest}|{}|{}", f.security_definer, f.settings),
                    )
                })
                .collect(),
            triggers,
        }
    }

    /// Every difference, named (no data: names of functions, triggers and rules only).
    pub async fn drift(&self, conn: &impl ConnectionTrait) -> Result<Vec<String>, DbError> {
        // The trail's relations: its schema's, and every partition of the events table wherever
        // it was moved (a partition moved to another schema stays attached, and its own
        // triggers fire on every insert through the parent).
        const RELATIONS: &str = "(select c.oid from pg_catalog.pg_class c \
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace where n.nspname = 'rowguard_audit' \
             union select t.relid from pg_catalog.pg_partition_tree(pg_catalog.to_regclass('rowguard_audit.events')) t)";
        let rows = conn
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "select 'function' as kind, p.proname::text as name, \
                        pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p.prosrc, 'UTF8')), 'hex') \
                        || '|' || p.prosecdef::text || '|' \
                        || coalesce(pg_catalog.array_to_string(p.proconfig, ','), '') as detail, 0 as bits \
                 from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
                 where n.nspname = 'rowguard_audit' \
                 union all \
                 select case when t.tgparentid = 0 then 'trigger' else 'partition trigger' end, \
                        c.relname::text || '.' || t.tgname::text, \
                        t.tgenabled::text || '|' || fn.nspname::text || '.' || f.proname::text, t.tgtype::integer \
                 from pg_catalog.pg_trigger t join pg_catalog.pg_class c on c.oid = t.tgrelid \
                 join pg_catalog.pg_proc f on f.oid = t.tgfoid \
                 join pg_catalog.pg_namespace fn on fn.oid = f.pronamespace \
                 where t.tgrelid in {RELATIONS} and not t.tgisinternal \
                 union all \
                 select 'rule', c.relname::text || '.' || r.rulename::text, '', 0 \
                 from pg_catalog.pg_rewrite r join pg_catalog.pg_class c on c.oid = r.ev_class \
                 where r.ev_class in {RELATIONS} and r.rulename <> '_RETURN' \
                 union all \
                 select 'partition elsewhere', n.nspname::text || '.' || c.relname::text, '', 0 \
                 from pg_catalog.pg_partition_tree(pg_catalog.to_regclass('rowguard_audit.events')) t \
                 join pg_catalog.pg_class c on c.oid = t.relid \
                 join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                 where n.nspname <> 'rowguard_audit'"
                ),
            ))
            .await
            .map_err(DbError::from)?;
        let mut found_functions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut found_triggers = BTreeMap::new();
        let mut problems = Vec::new();
        for row in &rows {
            let get = |column: &str| {
                row.try_get::<String>("", column)
                    .map_err(DbError::Statement)
            };
            let (kind, name, detail) = (get("kind")?, get("name")?, get("detail")?);
            let bits: i32 = row.try_get("", "bits").map_err(DbError::Statement)?;
            match kind.as_str() {
                "function" => found_functions.entry(name).or_default().push(detail),
                "trigger" | "partition trigger" => {
                    let (enabled, function) = detail.split_once('|').unwrap_or((&detail, ""));
                    if enabled != "O" {
                        problems.push(format!("trigger {name} on the audit trail is not enabled"));
                    }
                    // A partition's copies of the parent's triggers follow the parent's.
                    if kind == "trigger" {
                        found_triggers.insert(name, definition(bits, function));
                    }
                }
                "partition elsewhere" => problems.push(format!(
                    "partition {name} of the audit trail is outside the rowguard_audit schema"
                )),
                _ => problems.push(format!(
                    "rule {name} on the audit trail is not one of the migrations'"
                )),
            }
        }
        for (name, details) in &found_functions {
            match self.functions.get(name) {
                None => problems.push(format!(
                    "function rowguard_audit.{name} is not one of the migrations'"
                )),
                Some(_) if details.len() > 1 => problems.push(format!(
                    "function rowguard_audit.{name} is defined {} times; the migrations define it once",
                    details.len()
                )),
                Some(expected) if details[0] != *expected => problems.push(format!(
                    "function rowguard_audit.{name} differs from the migrations' (its body, SECURITY \
                     DEFINER or settings)"
                )),
                Some(_) => {}
            }
        }
        for name in self.functions.keys() {
            if !found_functions.contains_key(name) {
                problems.push(format!("function rowguard_audit.{name} is missing"));
            }
        }
        for (name, found) in &found_triggers {
            match self.triggers.get(name) {
                None => problems.push(format!(
                    "trigger {name} on the audit trail is not one of the migrations'"
                )),
                Some(expected) if expected != found => problems.push(format!(
                    "trigger {name} on the audit trail differs from the migrations' (when it fires or \
                     what it runs)"
                )),
                Some(_) => {}
            }
        }
        for name in self.triggers.keys() {
            if !found_triggers.contains_key(name) {
                problems.push(format!("trigger {name} on the audit trail is missing"));
            }
        }
        Ok(problems)
    }
}

/// A trigger as `pg_trigger.tgtype` records it, spelled as the migrations' are read.
fn definition(tgtype: i32, function: &str) -> String {
    let timing = if tgtype & 2 != 0 {
        "BEFORE"
    } else if tgtype & 64 != 0 {
        "INSTEAD OF"
    } else {
        "AFTER"
    };
    let events: Vec<&str> = [
        (8, "DELETE"),
        (4, "INSERT"),
        (32, "TRUNCATE"),
        (16, "UPDATE"),
    ]
    .into_iter()
    .filter(|(bit, _)| tgtype & bit != 0)
    .map(|(_, event)| event)
    .collect();
    trigger_definition(timing, &events, tgtype & 1 != 0, function)
}
