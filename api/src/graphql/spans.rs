//! Trace spans for the GraphQL engine's phases of a request: validating it and executing it
//! (the parse span, which covers the document lookup, the trusted-documents check, parsing,
//! the limits and the quota, is opened around `Gate::prepare`). Fields are the operation's label (its name when the server knows it, else
//! `other`) and nothing from the request itself. Registered only when traces are exported.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextValidation,
};
use async_graphql::{Response, ServerError, ValidationResult};
use tracing::Instrument;

/// The operation's label for spans, put into the request's data by the HTTP layer.
#[derive(Debug, Clone)]
pub struct TracedOperation(pub String);

pub struct PhaseSpans;

impl ExtensionFactory for PhaseSpans {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PhaseSpans)
    }
}

fn label_in(data: Option<&TracedOperation>) -> &str {
    data.map_or("other", |t| t.0.as_str())
}

#[async_graphql::async_trait::async_trait]
impl Extension for PhaseSpans {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let span = tracing::debug_span!(
            "graphql.validate",
            otel.name = "GraphQL validate",
            graphql.operation.name = label_in(ctx.data_opt::<TracedOperation>()),
        );
        next.run(ctx).instrument(span).await
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let span = tracing::debug_span!(
            "graphql.execute",
            otel.name = "GraphQL execute",
            graphql.operation.name = label_in(ctx.data_opt::<TracedOperation>()),
        );
        next.run(ctx, operation_name).instrument(span).await
    }
}
