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

/// The span of the engine's whole run of an operation.
pub fn execute(label: &str) -> tracing::Span {
    tracing::debug_span!(
        "graphql.execute",
        otel.name = "GraphQL execute",
        graphql.operation.name = label,
    )
}

/// The span of validation, inside `execute`.
pub fn validate(execute: &tracing::Span, label: &str) -> tracing::Span {
    tracing::debug_span!(
        parent: execute,
        "graphql.validate",
        otel.name = "GraphQL validate",
        graphql.operation.name = label,
    )
}
