//! What every handler shares: built once at startup, cheap to clone per request.

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::db::Database;
use crate::graphql::{ApiLimits, RowguardSchema};
use crate::metrics::Metrics;
use crate::playground::Playground;

/// Cloned for every request (each middleware and extractor that takes the state gets its own
/// copy), so it is one reference count: cloning the parts one by one copied the role prefix and
/// the CORS origins each time.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub db: Database,
    pub auth: Arc<Authenticator>,
    pub schema: RowguardSchema,
    /// What each request passes before the engine runs it (documents, limits, quotas).
    pub gate: Arc<crate::graphql::Gate>,
    pub limits: ApiLimits,
    /// Browser origins allowed to call the API (CORS).
    pub cors_origins: Vec<String>,
    /// The GraphiQL playground, when enabled.
    pub playground: Option<Playground>,
    pub metrics: Arc<Metrics>,
    /// Requests in flight per person.
    pub concurrency: crate::quota::ConcurrencyLimiter,
    /// Request quotas (the schema's request policy charges them).
    pub quotas: Arc<crate::quota::Quotas>,
    /// The trusted documents in force.
    pub trusted: Arc<crate::trusted::TrustedDocuments>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}
