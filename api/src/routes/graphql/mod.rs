//! `POST|GET /graphql`: a [`Caller`] (authenticated and admitted), an [`Incoming`] request, one
//! RLS scope for it, and the answer.

mod caller;
mod execute;
mod incoming;
mod observe;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use caller::Caller;
pub use incoming::Incoming;
pub use observe::{OperationLabel, accepts, observe};

use crate::error::{ApiError, ErrorCode, quota_headers};
use crate::state::AppState;
use execute::Executed;

pub async fn handle(State(state): State<AppState>, caller: Caller, incoming: Incoming) -> Response {
    let label = OperationLabel(incoming.name.clone());
    let mut response = match execute::run(&state, caller, incoming).await {
        Ok(executed) => reply(executed),
        Err(error) => error.into_response(),
    };
    response.extensions_mut().insert(label);
    response
}

/// The HTTP answer to an executed operation. A request that failed as a whole (no data, or every
/// root field null by its own error) gets its first error's status; partial results are 200.
fn reply(executed: Executed) -> Response {
    let Executed {
        correlation_id,
        response,
        quota,
        body,
        operation,
        role,
    } = executed;
    let codes: Vec<(ErrorCode, Option<StatusCode>)> =
        response.errors.iter().map(ApiError::of).collect();
    let failed = !codes.is_empty() && failed_as_a_whole(&response);
    let status = match codes.first() {
        Some((code, status)) if failed => status.unwrap_or(code.status()),
        _ => StatusCode::OK,
    };
    let names: Vec<&str> = codes.iter().map(|(c, _)| c.as_str()).collect();
    // Ids, names and codes only: never variables, arguments or results.
    tracing::info!(
        operation = %operation,
        %role,
        status = status.as_u16(),
        errors = ?names,
        correlation_id = correlation_id.as_deref().unwrap_or(""),
        "graphql operation"
    );
    let mut reply = (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_TYPE, "application/json"),
        ],
        body,
    )
        .into_response();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    // A request that failed as a whole carries its error's headers (`Retry-After`, the quota's
    // when it is over quota); every request that was charged carries the quota's state, a
    // refused one included.
    let first = response.errors.first().and_then(ApiError::behind);
    let mut headers = match (failed, first) {
        (true, Some(error)) => error.response_headers(),
        _ => Vec::new(),
    };
    if let Some(decision) = &quota {
        for (name, value) in quota_headers(decision) {
            if !headers.iter().any(|(given, _)| *given == name) {
                headers.push((name, value));
            }
        }
    }
    reply.headers_mut().extend(headers);
    if let Some((code, _)) = codes.first() {
        reply.extensions_mut().insert(*code);
    }
    reply
}

/// No data, or only root fields that are null because they failed themselves (the nulls a failed
/// field leaves, `graphql::error_nulls`, do not turn a refused request into a partial result).
fn failed_as_a_whole(response: &async_graphql::Response) -> bool {
    match &response.data {
        async_graphql::Value::Null => true,
        async_graphql::Value::Object(fields) => fields.iter().all(|(key, value)| {
            *value == async_graphql::Value::Null
                && response.errors.iter().any(|error| {
                    matches!(error.path.as_slice(),
                        [async_graphql::PathSegment::Field(field)] if field == key.as_str())
                })
        }),
        _ => false,
    }
}
