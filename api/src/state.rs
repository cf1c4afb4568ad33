//! What every handler shares: built once at startup, cheap to clone per request.

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::db::Database;
use crate::graphql::RowguardSchema;

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub auth: Arc<Authenticator>,
    pub schema: RowguardSchema,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}
