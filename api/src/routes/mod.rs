//! HTTP routes.

mod graphql;
mod health;
pub mod playground;
pub mod request_ids;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::state::AppState;

/// The gateway's router.
pub fn app(state: AppState) -> Router {
    let cors = cors(&state.cors_origins);
    Router::new()
        .route(
            "/graphql",
            get(graphql::handle)
                .post(graphql::handle)
                .layer(from_fn_with_state(state.clone(), graphql::observe))
                .layer(from_fn_with_state(state.clone(), playground::on_navigation)),
        )
        .route("/playground/assets/{name}", get(playground::asset))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .layer(cors)
        .layer(
            ServiceBuilder::new()
                .map_request(request_ids::assign)
                .layer(
                    // One span per request: its id, method and path. Never the query string or
                    // headers: a GET request's query string can carry search terms (PHI), and
                    // headers carry tokens.
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &axum::http::Request<_>| {
                            tracing::info_span!(
                                "request",
                                id = %request_ids::of(request),
                                correlation_id = request
                                    .extensions()
                                    .get::<request_ids::CorrelationId>()
                                    .and_then(|c| c.0.as_deref())
                                    .unwrap_or(""),
                                method = %request.method(),
                                path = %request.uri().path(),
                            )
                        })
                        .on_request(())
                        .on_response(
                            DefaultOnResponse::new()
                                .level(Level::INFO)
                                .latency_unit(LatencyUnit::Millis),
                        )
                        .on_failure(DefaultOnFailure::new().level(Level::WARN)),
                )
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// The metrics endpoint, served on its own listener (`ROWGUARD_METRICS_LISTEN`, loopback by
/// default) so the API port never exposes it.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
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
        .expose_headers([
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
            HeaderName::from_static("x-request-id"),
        ])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
}
