//! The GraphQL API: schema, per-request context and resolvers.

mod audit_query;
mod connection;
mod context;
pub mod documents;
mod inputs;
mod loaders;
mod mutation;
mod policy;
mod query;
pub mod rows;
pub mod shape;
mod spans;
mod types;

use std::sync::Arc;

use async_graphql::{EmptySubscription, SDLExportOptions, Schema};

pub use context::{RequestBudget, RequestDb, too_large};
pub use mutation::Mutation;
pub use policy::ArrivedOverGet;
pub use query::Query;
pub use spans::TracedOperation;

use crate::quota::Quotas;
pub use crate::settings::ApiLimits;
use crate::trusted::TrustedDocuments;

/// Rowguard's GraphQL schema.
pub type RowguardSchema = Schema<Query, Mutation, EmptySubscription>;

/// Builds the schema once at startup.
pub fn build_schema(
    limits: ApiLimits,
    trusted: Arc<TrustedDocuments>,
    quotas: Arc<Quotas>,
) -> RowguardSchema {
    let mut builder = Schema::build(Query::default(), Mutation, EmptySubscription).data(limits);
    if crate::telemetry::enabled() {
        // Outermost, so the parse span covers every step of preparing the request.
        builder = builder.extension(spans::PhaseSpans);
    }
    builder = builder
        // Depth and cost are measured by the request policy, fragments expanded; the engine's
        // own depth check stays as a second net.
        .limit_depth(limits.max_depth)
        .limit_recursive_depth(64)
        .limit_directives(10)
        // Which document runs (APQ, trusted documents) is settled before the request policy,
        // so hash-only requests are policed too.
        .extension(documents::Documents::new(
            limits.persisted_query_cache_size,
            trusted,
            limits.introspection,
        ))
        .extension(policy::RequestPolicy { limits, quotas });
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The schema's SDL, sorted, as committed in `schema.graphql`.
pub fn sdl() -> String {
    build_schema(
        ApiLimits::default(),
        Arc::new(TrustedDocuments::off()),
        Arc::new(Quotas::off()),
    )
    .sdl_with_options(SDLExportOptions::new().sorted_fields().sorted_enum_items())
}

/// Attaches one request's database access and DataLoaders to a GraphQL request.
pub fn attach(request: async_graphql::Request, db: Arc<RequestDb>) -> async_graphql::Request {
    let (care_teams, notes, clinician_pages) = loaders::for_request(&db);
    request
        .data(care_teams)
        .data(notes)
        .data(clinician_pages)
        .data(db)
}
