//! The GraphQL API: schema, per-request context and resolvers.

mod audit_query;
mod connection;
mod context;
pub mod documents;
pub mod error_nulls;
mod inputs;
mod loaders;
mod mutation;
mod policy;
mod query;
pub mod rows;
pub mod shape;
pub mod spans;
mod types;
mod variables;

use std::sync::Arc;

use async_graphql::{EmptySubscription, SDLExportOptions, Schema};

pub use context::{RequestBudget, RequestDb, too_large};
pub use mutation::Mutation;
pub use query::Query;

use crate::quota::Quotas;
pub use crate::settings::ApiLimits;
use crate::trusted::TrustedDocuments;

/// Rowguard's GraphQL schema.
pub type RowguardSchema = Schema<Query, Mutation, EmptySubscription>;

/// How deep the standard introspection query nests (`__schema`, `types`, `fields`, `args`,
/// `type`, nine `ofType`, `name`), with room to spare.
const INTROSPECTION_DEPTH: usize = 20;

/// Builds the schema once at startup.
pub fn build_schema(limits: ApiLimits) -> RowguardSchema {
    // Depth and cost are measured by the request policy, fragments expanded; the engine's own
    // depth check stays as a second net. It counts introspection too, which the policy leaves
    // to its own setting: GraphiQL's introspection query (graphql-js 16) is 15 deep.
    let engine_depth = if limits.introspection {
        limits.max_depth.max(INTROSPECTION_DEPTH)
    } else {
        limits.max_depth
    };
    let mut builder = Schema::build(Query::default(), Mutation, EmptySubscription)
        .data(limits)
        .limit_depth(engine_depth)
        .limit_recursive_depth(64)
        .limit_directives(10);
    // No extension: with none, the engine resolves each field directly (an extension of any
    // kind sends every field through its resolve chain). Documents and the request policy run
    // before the engine, in `Gate::prepare`; trace spans are made around it (`spans`).
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The served schema as a compiler reads it (types of every field and input), built once.
fn served_schema() -> &'static apollo_compiler::validation::Valid<apollo_compiler::Schema> {
    static SCHEMA: std::sync::OnceLock<
        apollo_compiler::validation::Valid<apollo_compiler::Schema>,
    > = std::sync::OnceLock::new();
    SCHEMA.get_or_init(crate::trusted::served_schema)
}

/// The schema's SDL, sorted, as committed in `schema.graphql`.
pub fn sdl() -> String {
    build_schema(ApiLimits::default())
        .sdl_with_options(SDLExportOptions::new().sorted_fields().sorted_enum_items())
}

/// What a request passes before the engine runs it: which document it is (persisted queries,
/// trusted documents, parsed once per distinct text), then the request policy (limits,
/// quota). Nothing here touches the database.
pub struct Gate {
    pub documents: documents::Documents,
    pub policy: policy::RequestPolicy,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

impl Gate {
    pub fn new(limits: ApiLimits, trusted: Arc<TrustedDocuments>, quotas: Arc<Quotas>) -> Self {
        Self {
            documents: documents::Documents::new(
                limits.persisted_query_cache_size,
                trusted,
                limits.introspection,
            ),
            policy: policy::RequestPolicy { limits, quotas },
        }
    }

    /// Resolves and checks `request` for `db`'s caller; the error is the request's answer.
    pub async fn prepare(
        &self,
        request: &mut async_graphql::Request,
        db: &RequestDb,
        over_get: bool,
    ) -> Result<(), async_graphql::ServerError> {
        let settled = match self.documents.resolve(request, db.principal()) {
            Ok(settled) => self
                .documents
                .parse(request, &settled)
                .await
                .map(|()| settled),
            Err(refused) => Err(refused),
        };
        match settled {
            Ok(settled) => {
                self.policy.check(request, db, over_get).await?;
                self.documents.register(request, settled);
                Ok(())
            }
            Err(refused) => {
                // A document refused before it could be measured (not in the trusted documents,
                // not valid GraphQL, an unknown persisted query) still cost its parse or lookup:
                // one unit, as for a refusal by the policy.
                self.policy.charge_refusal(db).await?;
                Err(refused)
            }
        }
    }
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
