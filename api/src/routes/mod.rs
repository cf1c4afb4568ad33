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
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, OnResponse, TraceLayer};
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
                // GraphQL over HTTP reads a GET's query string only; a HEAD would be a request
                // with no operation, so it is refused rather than answered 400.
                .head(method_not_allowed)
                .fallback(method_not_allowed)
                .layer(from_fn_with_state(state.clone(), graphql::observe))
                .layer(from_fn_with_state(state.clone(), playground::on_navigation)),
        )
        .route(
            "/playground/assets/{name}",
            get(playground::asset).fallback(only_get),
        )
        .route("/healthz", get(health::healthz).fallback(only_get))
        .route("/readyz", get(health::readyz).fallback(only_get))
        .fallback(not_found)
        .layer(cors)
        .layer(axum::middleware::from_fn(options_without_preflight))
        .layer(
            ServiceBuilder::new()
                .map_request(request_ids::assign)
                .layer(
                    // One span per request: its id, method and route. Never the query string,
                    // headers or a client's correlation id: a GET request's query string can
                    // carry search terms (PHI), headers carry tokens, and these fields also go
                    // to the trace collector.
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &axum::http::Request<_>| {
                            let route = route_of(request.uri().path());
                            let method = method_of(request.method());
                            let span = tracing::info_span!(
                                "request",
                                id = %request_ids::of(request),
                                method,
                                path = route,
                                otel.name = format!("{method} {route}"),
                                otel.kind = "server",
                                http.response.status_code = tracing::field::Empty,
                            );
                            crate::telemetry::continue_trace(&span, request.headers());
                            span
                        })
                        .on_request(())
                        .on_response(
                            |response: &axum::http::Response<_>,
                             latency: Duration,
                             span: &tracing::Span| {
                                span.record(
                                    "http.response.status_code",
                                    response.status().as_u16(),
                                );
                                DefaultOnResponse::new()
                                    .level(Level::INFO)
                                    .latency_unit(LatencyUnit::Millis)
                                    .on_response(response, latency, span);
                            },
                        )
                        .on_failure(DefaultOnFailure::new().level(Level::WARN)),
                )
                .layer(axum::middleware::from_fn(crate::telemetry::hand_back))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// The route a path belongs to: known routes by name, anything else as `other` (a path is
/// chosen by the client).
fn route_of(path: &str) -> &'static str {
    match path {
        "/graphql" => "/graphql",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        p if p.starts_with("/playground/assets/") => "/playground/assets/{name}",
        _ => "other",
    }
}

/// The method by name if HTTP defines it, anything else as `other`: like the path, an
/// extension method is any text the client chose, of any length.
fn method_of(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// `/graphql` with a method other than GET or POST: a coded error like every other refusal
/// (and counted under its code, not as a success).
async fn method_not_allowed() -> axum::response::Response {
    refuse_method(
        "send GraphQL requests with GET (queries) or POST",
        "GET, POST",
    )
}

/// The read-only routes with another method.
async fn only_get() -> axum::response::Response {
    refuse_method("this path answers GET only", "GET, HEAD")
}

/// A coded 405 naming the methods the path answers.
fn refuse_method(message: &'static str, allow: &'static str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = crate::error::ApiError::new(crate::error::ErrorCode::BadUserInput, message)
        .with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
        .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The CORS layer answers every OPTIONS request as a preflight (200, empty). One that is not a
/// browser's preflight (no `Origin` or no `Access-Control-Request-Method`) gets what any other
/// unsupported method gets: a coded 405, or 404 for a path the gateway does not serve.
async fn options_without_preflight(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let preflight = request.headers().contains_key(header::ORIGIN)
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if request.method() != Method::OPTIONS || preflight {
        return next.run(request).await;
    }
    let path = request.uri().path();
    match route_of(path) {
        "/graphql" => method_not_allowed().await,
        // The asset route takes one path segment; deeper paths are not served.
        "/playground/assets/{name}" if path["/playground/assets/".len()..].contains('/') => {
            not_found().await.into_response()
        }
        "other" => not_found().await.into_response(),
        _ => only_get().await,
    }
}

/// Any path the gateway does not serve.
async fn not_found() -> crate::error::ApiError {
    crate::error::ApiError::new(crate::error::ErrorCode::NotFound, "no such path")
}

/// The metrics endpoint, served on its own listener (`ROWGUARD_METRICS_LISTEN`, loopback by
/// default) so the API port never exposes it.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics).fallback(only_get))
        .fallback(not_found)
        .with_state(state)
}

/// Browsers may call the API only from the configured origins. Credentials and the
/// `Authorization` header are allowed, so the allow-list is exact (no wildcard).
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter(|o| !o.is_empty())
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
            // Trace context from an instrumented browser app, and its own correlation id.
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
            HeaderName::from_static("x-request-id"),
            // Every answer carries the trace it belongs to; a browser app on another origin
            // could not read it otherwise.
            HeaderName::from_static("traceparent"),
            // The RFC 6750 challenge of a 401 (`error="invalid_token"`) tells an app to sign in
            // again rather than retry; a cross-origin app reads it only if it is exposed.
            header::WWW_AUTHENTICATE,
        ])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
}
