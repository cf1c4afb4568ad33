//! `POST|GET /graphql`: authenticate, run the operation in one RLS scope, end the scope.

use std::sync::Arc;

use async_graphql::ErrorExtensionValues;
use async_graphql_axum::GraphQLRequest;
use async_graphql_axum::rejection::GraphQLRejection;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::auth::AuthError;
use crate::error::{ApiError, ErrorCode};
use crate::graphql::{self, RequestDb};
use crate::state::AppState;

pub async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    match run(state, method, uri, headers, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run(
    state: AppState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Result<Response, ApiError> {
    // Authentication comes first: nothing about a request from an unknown caller is parsed,
    // and no database connection is opened for it.
    let token = bearer_token(&uri, &headers)?;
    let principal = state.auth.authenticate(token).await?;

    let request = request.map_err(|rejection| {
        tracing::info!(reason = %rejection.0, "malformed GraphQL request");
        ApiError::new(
            ErrorCode::BadUserInput,
            "the request is not a valid GraphQL request",
        )
    })?;
    let request_id = Uuid::new_v4();
    // GraphQL over GET may only read: mutations need POST (the scope refuses writes otherwise).
    let db = Arc::new(RequestDb::new(
        state.db.clone(),
        principal,
        method == Method::POST,
        request_id,
    ));
    let mut response = state
        .schema
        .execute(graphql::attach(request.into_inner(), db.clone()))
        .await;
    db.finish(response.errors.is_empty()).await?;

    let request_failed = response.data == async_graphql::Value::Null && !response.errors.is_empty();
    for error in &mut response.errors {
        let extensions = error
            .extensions
            .get_or_insert_with(ErrorExtensionValues::default);
        if extensions.get("code").is_none() {
            // Errors raised by the GraphQL engine itself (parse, validation, limits) are the
            // caller's to fix.
            extensions.set("code", ErrorCode::BadUserInput.as_str());
        }
    }
    let status = if request_failed {
        response
            .errors
            .first()
            .and_then(|e| e.extensions.as_ref()?.get("code").cloned())
            .and_then(|code| match code {
                async_graphql::Value::String(code) => status_of(&code),
                _ => None,
            })
            .unwrap_or(StatusCode::BAD_REQUEST)
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(response),
    )
        .into_response())
}

fn status_of(code: &str) -> Option<StatusCode> {
    [
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::BadUserInput,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::PersistedQueryNotFound,
        ErrorCode::ServiceUnavailable,
        ErrorCode::InternalServerError,
    ]
    .into_iter()
    .find(|c| c.as_str() == code)
    .map(ErrorCode::status)
}

/// The bearer token from the `Authorization` header. Tokens in the URL are refused outright:
/// URLs end up in logs, browser history and referrers.
fn bearer_token<'h>(uri: &Uri, headers: &'h HeaderMap) -> Result<&'h str, AuthError> {
    let in_query = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("access_token"))
    });
    if in_query {
        return Err(AuthError::InvalidRequest(
            "tokens are not accepted in the URL; send an Authorization: Bearer header",
        ));
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidRequest(
            "send exactly one Authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::InvalidRequest("the Authorization header is not valid text"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::InvalidRequest(
            "use the Bearer authentication scheme",
        ));
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(AuthError::InvalidRequest(
            "the Bearer header carries no token",
        ));
    }
    Ok(token)
}
