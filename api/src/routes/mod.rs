//! HTTP routes.

mod graphql;
mod health;

use axum::Router;
use axum::routing::get;

use crate::state::AppState;

/// The gateway's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/graphql", get(graphql::handle).post(graphql::handle))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
}
