//! The functions and triggers of the audit trail's schema (`rowguard_audit`) as the migrations
//! define them, read from their SQL in order: a `CREATE [OR REPLACE] FUNCTION` sets a function's
//! definition, a `DROP FUNCTION` removes it, and likewise for triggers. The migrations spell
//! these statements one way (upper-case keywords, one name per statement, bodies in a dollar
//! quote after `AS`); a unit test holds them to it.

use std::collections::BTreeMap;

const SCHEMA: &str = "rowguard_audit.";

/// The audit schema's functions and triggers as the migrations leave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSchema {
    /// Function name → how PostgreSQL stores it: the body exactly as written between its dollar
    /// quotes, whether it runs as its owner, and its `SET` settings (`search_path=...`).
    pub functions: BTreeMap<String, FunctionDefinition>,
    /// `table.trigger` of every trigger on the schema's tables → when it fires and what it runs,
    /// as [`trigger_definition`] spells it.
    pub triggers: BTreeMap<String, String>,
}

/// One function as `pg_proc` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDefinition {
    pub body: String,
    pub security_definer: bool,
    /// `proconfig` joined by commas (empty when the function sets nothing).
    pub settings: String,
}

impl AuditSchema {
    /// Reads `migrations` (rendered SQL, oldest first).
    pub fn of(migrations: impl IntoIterator<Item = String>) -> Self {
        let mut schema = AuditSchema::default();
        for sql in migrations {
            schema.apply(&sql);
        }
        schema
    }

    fn apply(&mut self, sql: &str) {
        let mut at = 0;
        while let Some((start, statement)) = next_statement(sql, at) {
            match statement {
                Statement::CreateFunction => {
                    if let Some((name, definition, end)) = function_at(sql, start) {
                        self.functions.insert(name, definition);
                        at = end;
                        continue;
                    }
                }
                Statement::DropFunction(name_at) => {
                    if let Some(name) = schema_name(sql, name_at) {
                        self.functions.remove(&name);
                    }
                }
                Statement::CreateTrigger(name_at) => {
                    if let Some(trigger) = trigger_at(sql, name_at) {
                        let end = sql[name_at..].find(';').map_or(sql.len(), |e| name_at + e);
                        let definition = parsed_trigger(&sql[name_at..end]);
                        self.triggers.insert(trigger, definition);
                    }
                }
                Statement::DropTrigger(name_at) => {
                    if let Some(trigger) = trigger_at(sql, name_at) {
                        self.triggers.remove(&trigger);
                    }
                }
            }
            at = start + 1;
        }
    }
}

enum Statement {
    CreateFunction,
    /// Where the function's qualified name starts.
    DropFunction(usize),
    /// Where the trigger's name starts.
    CreateTrigger(usize),
    DropTrigger(usize),
}

/// The next statement of interest at or after `from`, and where it starts.
fn next_statement(sql: &str, from: usize) -> Option<(usize, Statement)> {
    const STARTS: [&str; 6] = [
        "CREATE FUNCTION ",
        "CREATE OR REPLACE FUNCTION ",
        "DROP FUNCTION ",
        "CREATE TRIGGER ",
        "CREATE CONSTRAINT TRIGGER ",
        "DROP TRIGGER ",
    ];
    let (start, which) = STARTS
        .iter()
        .enumerate()
        .filter_map(|(i, start)| sql[from..].find(start).map(|at| (from + at, i)))
        .min()?;
    let after = start + STARTS[which].len();
    let statement = match which {
        0 | 1 => Statement::CreateFunction,
        2 => Statement::DropFunction(skip_if_exists(sql, after)),
        3 | 4 => Statement::CreateTrigger(after),
        _ => Statement::DropTrigger(skip_if_exists(sql, after)),
    };
    Some((start, statement))
}

fn skip_if_exists(sql: &str, at: usize) -> usize {
    if sql[at..].starts_with("IF EXISTS ") {
        at + "IF EXISTS ".len()
    } else {
        at
    }
}

/// The name after `rowguard_audit.` at `at`, if the name there is in the audit schema.
fn schema_name(sql: &str, at: usize) -> Option<String> {
    let rest = sql[at..].strip_prefix(SCHEMA)?;
    let end = rest
        .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
        .unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// The function a `CREATE FUNCTION` at `start` defines, and where its body ends.
fn function_at(sql: &str, start: usize) -> Option<(String, FunctionDefinition, usize)> {
    let keywords = ["CREATE FUNCTION ", "CREATE OR REPLACE FUNCTION "]
        .into_iter()
        .find(|k| sql[start..].starts_with(k))?;
    let name_at = start + keywords.len();
    let name = schema_name(sql, name_at)?;
    let as_at = name_at + sql[name_at..].find("\nAS $")?;
    let header = &sql[name_at..as_at];
    let tag_start = as_at + "\nAS ".len();
    let tag_len = sql[tag_start + 1..].find('$')? + 2;
    let tag = &sql[tag_start..tag_start + tag_len];
    let body_start = tag_start + tag_len;
    let body_end = body_start + sql[body_start..].find(tag)?;
    let settings = header
        .lines()
        .filter_map(|line| line.trim().strip_prefix("SET "))
        .map(|setting| {
            let (name, value) = setting.split_once(" = ").unwrap_or((setting, ""));
            format!("{}={}", name.trim(), value.trim())
        })
        .collect::<Vec<_>>()
        .join(",");
    Some((
        name,
        FunctionDefinition {
            body: sql[body_start..body_end].to_owned(),
            security_definer: header.contains("SECURITY DEFINER"),
            settings,
        },
        body_end + tag_len,
    ))
}

/// A trigger's timing, events, level and function, spelled as [`trigger_definition`] spells
/// them, from the text of its `CREATE TRIGGER` after the keywords.
fn parsed_trigger(statement: &str) -> String {
    let words: Vec<&str> = statement.split_whitespace().collect();
    let on = words.iter().position(|w| *w == "ON").unwrap_or(words.len());
    let head = &words[1.min(words.len())..on];
    let timing = match head.first() {
        Some(&"BEFORE") => "BEFORE",
        Some(&"INSTEAD") => "INSTEAD OF",
        _ => "AFTER",
    };
    let mut events: Vec<&str> = head
        .iter()
        .copied()
        .filter(|w| matches!(*w, "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE"))
        .collect();
    events.sort_unstable();
    let row = statement.contains("FOR EACH ROW");
    let function = words
        .iter()
        .position(|w| *w == "FUNCTION" || *w == "PROCEDURE")
        .and_then(|i| words.get(i + 1))
        .map_or("", |f| f.split('(').next().unwrap_or_default());
    trigger_definition(timing, &events, row, function)
}

/// How a trigger is compared: `BEFORE DELETE|UPDATE ROW rowguard_audit.refuse_change`.
pub fn trigger_definition(timing: &str, events: &[&str], row: bool, function: &str) -> String {
    format!(
        "{timing} {} {} {function}",
        events.join("|"),
        if row { "ROW" } else { "STATEMENT" }
    )
}

/// `table.trigger` for a trigger statement whose name starts at `name_at`, if its table is in
/// the audit schema.
fn trigger_at(sql: &str, name_at: usize) -> Option<String> {
    let rest = &sql[name_at..];
    let name_end = rest.find(|c: char| c.is_whitespace())?;
    let name = &rest[..name_end];
    let on_at = rest.find(" ON ")? + " ON ".len();
    let table = schema_name(sql, name_at + on_at)?;
    Some(format!("{table}.{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoleNames;

    fn schema() -> AuditSchema {
        crate::audit_schema(&RoleNames::new("rowguard").expect("prefix"))
    }

    #[test]
    fn the_migrations_leave_the_sealers_functions_and_the_append_only_triggers() {
        let schema = schema();
        for name in [
            "append",
            "append_batch",
            "chain_head",
            "extend_chain",
            "final_events",
            "record_checkpoint",
            "refuse_change",
        ] {
            let function = schema
                .functions
                .get(name)
                .unwrap_or_else(|| panic!("{name} is defined"));
            assert!(!function.body.trim().is_empty(), "{name}");
        }
        assert!(
            !schema.functions.contains_key("canonical"),
            "dropped in 0007"
        );
        assert!(!schema.functions.contains_key("seal"), "dropped in 0007");
        let final_events = &schema.functions["final_events"];
        assert!(final_events.security_definer);
        assert_eq!(final_events.settings, "search_path=pg_catalog, pg_temp");
        assert!(final_events.body.contains("ORDER BY e.txid, e.id"));
        assert_eq!(
            schema.triggers["events.events_append_only"],
            "BEFORE DELETE|UPDATE ROW rowguard_audit.refuse_change"
        );
        assert_eq!(
            schema.triggers["chain.chain_no_truncate"],
            "BEFORE TRUNCATE STATEMENT rowguard_audit.refuse_change"
        );
        assert!(
            !schema.triggers.contains_key("events.events_seal"),
            "dropped in 0007"
        );
    }

    #[test]
    fn a_later_definition_replaces_an_earlier_one_and_a_drop_removes_it() {
        let schema = AuditSchema::of([
            "CREATE FUNCTION rowguard_audit.f(a int)\n  RETURNS int LANGUAGE sql\nAS $fn$ select 1 $fn$;\n\
             CREATE FUNCTION rowguard_audit.g()\n  RETURNS int LANGUAGE sql\nAS $fn$ select 2 $fn$;"
                .to_owned(),
            "CREATE OR REPLACE FUNCTION rowguard_audit.f(a int)\n  RETURNS int LANGUAGE sql SECURITY DEFINER\n  SET search_path = pg_catalog\nAS $body$ select 3 $body$;\n\
             DROP FUNCTION rowguard_audit.g();"
                .to_owned(),
        ]);
        assert_eq!(
            schema.functions.keys().collect::<Vec<_>>(),
            vec!["f"],
            "{schema:?}"
        );
        assert_eq!(
            schema.functions["f"],
            FunctionDefinition {
                body: " select 3 ".to_owned(),
                security_definer: true,
                settings: "search_path=pg_catalog".to_owned(),
            }
        );
    }
}
