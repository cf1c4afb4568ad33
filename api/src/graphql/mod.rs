//! The GraphQL API: schema, per-request context and resolvers.

mod audit_api;
mod context;
mod loaders;
mod mutation;
mod pagination;
pub mod persisted;
mod policy;
mod query;
pub mod shape;
mod types;

use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{Context, EmptySubscription, SDLExportOptions, Schema};

pub use audit_api::{AuditQuery, EmergencyAccessGrant};
pub use context::{RequestBudget, RequestDb, too_large};
use loaders::{CareTeamLoader, CareTeams, ClinicalNotes, ClinicalNotesLoader};
pub use mutation::Mutation;
pub use policy::ArrivedOverGet;
pub use query::Query;

use crate::error::ApiError;

/// Rowguard's GraphQL schema.
pub type RowguardSchema = Schema<Query, Mutation, EmptySubscription>;

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    pub max_page_size: i32,
    pub max_depth: usize,
    /// Most field selections, fragments expanded.
    pub max_fields: usize,
    /// Highest cost (see [`shape::Shape::cost`]).
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    pub max_body_bytes: usize,
    /// Most SQL statements resolvers may run for one request.
    pub max_statements: u64,
    /// Largest answer (and row data loaded for it), in bytes.
    pub max_response_bytes: usize,
    /// Longest a request may take, start to finish.
    pub request_timeout: std::time::Duration,
    /// Most requests one person may have in flight.
    pub concurrency_per_person: u32,
    pub persisted_query_cache_size: usize,
    pub introspection: bool,
    /// Append every PHI access to the audit trail (HIPAA §164.312(b)); on by default.
    pub audit: bool,
    /// Length of a break-glass grant.
    pub emergency_access_secs: u64,
    /// Unsealed audit events older than this are reported by `/readyz`.
    pub seal_lag_alert: std::time::Duration,
}

impl Default for ApiLimits {
    /// The limits of the default settings (defined once, in `settings::api`).
    fn default() -> Self {
        crate::settings::ApiSettings::default().limits()
    }
}

/// Builds the schema once at startup.
pub fn build_schema(limits: ApiLimits) -> RowguardSchema {
    let mut builder = Schema::build(Query::default(), Mutation, EmptySubscription)
        .data(limits)
        // Depth and cost are measured by the request policy, fragments expanded; the engine's
        // own depth check stays as a second net.
        .limit_depth(limits.max_depth)
        .limit_recursive_depth(64)
        .limit_directives(10)
        // Apollo's Automatic Persisted Queries; resolution comes before the request policy so
        // hash-only requests are policed too.
        .extension(persisted::PersistedQueries::new(
            limits.persisted_query_cache_size,
        ))
        .extension(policy::RequestPolicy(limits));
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The schema's SDL, sorted, as committed in `schema.graphql`.
pub fn sdl() -> String {
    build_schema(ApiLimits::default())
        .sdl_with_options(SDLExportOptions::new().sorted_fields().sorted_enum_items())
}

/// Attaches one request's database access and DataLoaders to a GraphQL request.
pub fn attach(request: async_graphql::Request, db: Arc<RequestDb>) -> async_graphql::Request {
    // Cached per request, so a page's prefetch serves every field that follows.
    let care_teams: CareTeams = DataLoader::with_cache(
        CareTeamLoader(db.clone()),
        tokio::spawn,
        HashMapCache::default(),
    );
    let notes: ClinicalNotes = DataLoader::with_cache(
        ClinicalNotesLoader(db.clone()),
        tokio::spawn,
        HashMapCache::default(),
    );
    let clinician_pages: pagination::ClinicianPages = DataLoader::with_cache(
        pagination::ClinicianPagesLoader(db.clone()),
        tokio::spawn,
        HashMapCache::default(),
    );
    request
        .data(care_teams)
        .data(notes)
        .data(clinician_pages)
        .data(db)
}

/// The request's database access, from a resolver's context.
pub(crate) fn request_db(ctx: &Context<'_>) -> Result<Arc<RequestDb>, ApiError> {
    ctx.data::<Arc<RequestDb>>()
        .cloned()
        .map_err(|_| ApiError::internal("resolver ran without a request database"))
}
