//! HTTP routes.

mod graphql;
mod health;
pub mod playground;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::get;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::state::AppState;

/// The gateway's router.
pub fn app(state: AppState) -> Router {
    let cors = cors(&state.cors_origins);
    Router::new()
        .route("/graphql", get(graphql::handle).post(graphql::handle))
        .route("/playground/assets/{name}", get(playground::asset))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .layer(cors)
        .with_state(state)
}

/// Browsers may call the API only from the configured origins. Credentials and the
/// `Authorization` header are allowed, so the allow-list is exact (no wildcard).
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("apollo-require-preflight"),
            HeaderName::from_static("x-apollo-operation-name"),
        ])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
}
