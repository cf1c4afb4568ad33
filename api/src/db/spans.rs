//! Trace spans for database work: one per statement, named by what it does (`SELECT
//! rowguard.patients`), never by its text or parameters.
//!
//! A statement's span is handed to the OpenTelemetry SDK directly when the statement ends, as a
//! child of the `tracing` span current when it started, rather than made as a `tracing` span:
//! nothing runs inside a statement that could want it as a parent, so the subscriber's span
//! lifecycle (a registry slot, each layer's `new_span`, `record` and `close`) bought nothing.
//! With traces off it costs one relaxed atomic load when it opens.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Tracer as _};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A statement's span while the statement runs; exported when it is dropped.
#[derive(Debug)]
#[must_use = "a statement span ends when it is dropped"]
pub struct StatementSpan(State);

#[derive(Debug)]
enum State {
    Off,
    /// Handed to the SDK when it ends.
    Direct(Box<Open>),
    /// A `tracing` span, when the current span is not one the exporter sees (see `open`);
    /// held only to be closed when dropped.
    Traced {
        _span: tracing::Span,
    },
}

#[derive(Debug)]
struct Open {
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    parent: opentelemetry::Context,
    start: SystemTime,
}

impl StatementSpan {
    fn open(name: impl FnOnce() -> (Cow<'static, str>, Vec<KeyValue>)) -> Self {
        if !crate::telemetry::enabled() {
            return Self(State::Off);
        }
        let (name, attributes) = name();
        let current = tracing::Span::current();
        if !current.metadata().is_some_and(crate::telemetry::exported) {
            // A span made for the logs only (a library's) is unknown to the exporter, so its
            // context is empty and the statement would start a trace of its own. A `tracing`
            // span finds the nearest exported ancestor instead, as statements always did.
            return Self(State::Traced {
                _span: traced(&name, &attributes),
            });
        }
        let mut attributes = attributes;
        attributes.push(KeyValue::new("db.system.name", "postgresql"));
        Self(State::Direct(Box::new(Open {
            name,
            attributes,
            parent: current.context(),
            start: SystemTime::now(),
        })))
    }
}

fn traced(name: &str, attributes: &[KeyValue]) -> tracing::Span {
    let span = tracing::debug_span!(
        "db.statement",
        otel.name = name,
        db.system.name = "postgresql",
        db.operation.name = tracing::field::Empty,
        db.collection.name = tracing::field::Empty,
    );
    for attribute in attributes {
        let value = attribute.value.as_str();
        match attribute.key.as_str() {
            "db.operation.name" => span.record("db.operation.name", value.as_ref()),
            "db.collection.name" => span.record("db.collection.name", value.as_ref()),
            _ => &span,
        };
    }
    span
}

/// Ends the span when its statement ends, or when a request that stopped waiting drops it.
impl Drop for StatementSpan {
    fn drop(&mut self) {
        let State::Direct(open) = std::mem::replace(&mut self.0, State::Off) else {
            return;
        };
        let Some(tracer) = crate::telemetry::tracer() else {
            return;
        };
        tracer
            .span_builder(open.name)
            .with_start_time(open.start)
            .with_attributes(open.attributes)
            .start_with_context(tracer, &open.parent)
            .end();
    }
}

/// Runs `work` with `span` open from its start to its end.
pub async fn while_open<F: std::future::Future>(span: StatementSpan, work: F) -> F::Output {
    let output = work.await;
    drop(span);
    output
}

/// A span for one statement of `sql`.
pub fn statement(sql: &str) -> StatementSpan {
    StatementSpan::open(|| {
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
    StatementSpan::open(|| (name.into(), Vec::new()))
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
