//! Around every `/graphql` request: the request metrics (a bounded operation label and the
//! outcome code), and the GraphQL-over-HTTP media type for clients that ask for it.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ErrorCode;
use crate::state::AppState;

/// The GraphQL-over-HTTP media type; plain `application/json` is served to clients that do not
/// ask for it.
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// The operation a response answered (set by the handler); absent when the caller was refused
/// before their request was read.
#[derive(Debug, Clone)]
pub struct OperationLabel(pub String);

pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let wants_graphql_json = accepts(request.headers(), GRAPHQL_RESPONSE_JSON);
    let started = Instant::now();
    let mut response = next.run(request).await;
    let operation = response
        .extensions()
        .get::<OperationLabel>()
        .map_or("<unauthenticated>", |l| l.0.as_str());
    let code = response
        .extensions()
        .get::<ErrorCode>()
        .map_or("OK", |c| c.as_str());
    state.metrics.observe(operation, code, started.elapsed());
    if wants_graphql_json {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(GRAPHQL_RESPONSE_JSON),
        );
    }
    response
}

/// Whether the `Accept` header lists `media_type`.
pub fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case(media_type)
        })
}
