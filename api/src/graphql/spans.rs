//! Trace spans for the GraphQL engine's phases of a request: validating it and executing it
//! (the parse span, which covers the document lookup, the trusted-documents check, parsing,
//! the limits and the quota, is opened around `Gate::prepare`). Fields are the operation's
//! label (its name when the server knows it, else `other`) and nothing from the request itself.
//!
//! They are made around the engine rather than by an async-graphql extension: with any
//! extension registered the engine sends every field through an extension chain (boxed futures,
//! type lookups), which cost more than the two spans themselves. The engine validates inside
//! `Schema::execute`, so `GraphQL validate` is a child of `GraphQL execute` that ends when the
//! first resolver asks for the request's database (or when the engine returns, for an answer
//! no resolver touched, such as a validation error).
//!
//! All three go to the OpenTelemetry SDK directly (see [`crate::telemetry::spans`]).

use opentelemetry::KeyValue;

use crate::telemetry::spans::{Leaf, Scope};

/// The span of the engine's whole run of an operation; the statements of its resolvers are
/// opened inside it.
pub fn execute(label: &str) -> Scope {
    Scope::open("GraphQL execute", || vec![operation(label)])
}

/// The span of validation, inside `execute`.
pub fn validate(execute: &Scope, label: &str) -> Leaf {
    Leaf::open_in(execute.as_parent(), || {
        ("GraphQL validate".into(), vec![operation(label)])
    })
}

/// The span of the gate before the engine (see the module doc).
pub fn parse(label: &str) -> Leaf {
    Leaf::open(|| ("GraphQL parse".into(), vec![operation(label)]))
}

fn operation(label: &str) -> KeyValue {
    KeyValue::new("graphql.operation.name", label.to_owned())
}
