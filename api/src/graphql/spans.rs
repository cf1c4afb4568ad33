//! Trace spans for the GraphQL phases of a request: preparing it (the document looked up,
//! checked against the trusted documents, parsed, measured, charged to the quota), validating
//! it, executing it. Fields are the operation's label (its name when the server knows it, else
//! `other`) and nothing from the request itself. Registered only when traces are exported.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextPrepareRequest, NextValidation,
};
use async_graphql::{Request, Response, ServerError, ServerResult, ValidationResult};
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
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let traced = request
            .data
            .get(&std::any::TypeId::of::<TracedOperation>())
            .and_then(|d| d.downcast_ref::<TracedOperation>());
        let span = tracing::debug_span!(
            "graphql.parse",
            otel.name = "GraphQL parse",
            graphql.operation.name = label_in(traced),
        );
        next.run(ctx, request).instrument(span).await
    }

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
