//! Trace spans for database work: one per statement, named by what it does (`SELECT
//! rowguard.patients`), never by its text or parameters. They are handed to the OpenTelemetry
//! SDK directly ([`crate::telemetry::spans::Leaf`]): nothing runs inside a statement that could
//! want its span as a parent.

use std::borrow::Cow;

use opentelemetry::KeyValue;

use crate::telemetry::spans::Leaf;
pub use crate::telemetry::spans::while_open;

/// A statement's span while the statement runs; exported when it is dropped.
pub type StatementSpan = Leaf;

fn open(describe: impl FnOnce() -> (Cow<'static, str>, Vec<KeyValue>)) -> StatementSpan {
    Leaf::open(|| {
        let (name, mut attributes) = describe();
        attributes.push(KeyValue::new("db.system.name", "postgresql"));
        (name, attributes)
    })
}

/// A span for one statement of `sql`.
pub fn statement(sql: &str) -> StatementSpan {
    open(|| {
        let (operation, target) = statement_name(sql);
        match target {
            Some(target) => (
                format!("{operation} {target}").into(),
                vec![
                    KeyValue::new("db.operation.name", operation),
                    KeyValue::new("db.collection.name", target),
                ],
            ),
            None => (
                operation.clone().into(),
                vec![KeyValue::new("db.operation.name", operation)],
            ),
        }
    })
}

/// A span for a step of the request's transaction that is not a resolver's statement.
pub fn step(name: &'static str) -> StatementSpan {
    open(|| (name.into(), Vec::new()))
}

/// What a statement does: its verb, and the table or function it acts on. Identifiers only.
pub fn statement_name(sql: &str) -> (String, Option<String>) {
    let mut words = sql.split_whitespace();
    let verb: String = words
        .next()
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .take(16)
        .collect::<String>()
        .to_ascii_uppercase();
    let rest: Vec<&str> = words.collect();
    let after = |keyword: &str| {
        rest.iter()
            .position(|w| w.eq_ignore_ascii_case(keyword))
            .and_then(|i| rest.get(i + 1))
            .map(|w| identifier(w))
            .filter(|w| !w.is_empty())
    };
    let target = match verb.as_str() {
        "SELECT" => after("from").or_else(|| rest.first().map(|w| identifier(w))),
        "UPDATE" => rest.first().map(|w| identifier(w)),
        "INSERT" => after("into"),
        "DELETE" => after("from"),
        _ => None,
    };
    (verb, target.filter(|t| !t.is_empty()))
}

/// The identifier a word starts with (quotes dropped; stops at anything else).
fn identifier(word: &str) -> String {
    word.chars()
        .filter(|c| *c != '"')
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::statement_name;

    fn name(sql: &str) -> String {
        match statement_name(sql) {
            (verb, Some(target)) => format!("{verb} {target}"),
            (verb, None) => verb,
        }
    }

    #[test]
    fn statements_are_named_by_verb_and_target() {
        assert_eq!(
            name(
                r#"SELECT "patients"."id" FROM "rowguard"."patients" WHERE "patients"."id" = $1 LIMIT 1"#
            ),
            "SELECT rowguard.patients"
        );
        assert_eq!(
            name("select rowguard_audit.append($1, $2, $3, $4, $5, $6)"),
            "SELECT rowguard_audit.append"
        );
        assert_eq!(
            name(
                r#"UPDATE "rowguard"."patients" SET "clinical_notes" = $1 WHERE "patients"."id" = $2"#
            ),
            "UPDATE rowguard.patients"
        );
        assert_eq!(
            name("select c.owner from unnest($1::int[]) as c(owner)"),
            "SELECT unnest"
        );
        assert_eq!(name("SAVEPOINT clinical_notes"), "SAVEPOINT");
    }

    #[test]
    fn names_carry_no_values() {
        let named =
            name("SELECT 'Jane Doe' FROM \"rowguard\".\"patients\" WHERE given_name = 'Jane'");
        assert!(!named.contains("Jane"), "{named}");
    }
}
