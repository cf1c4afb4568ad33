//! `POST|GET /graphql`: authenticate, run the operation in one RLS scope, end the scope.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{ErrorExtensionValues, Value};
use async_graphql_axum::GraphQLRequest;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::audit::record::AuditContext;
use crate::auth::AuthError;
use crate::error::{ApiError, ErrorCode};
use crate::graphql::{self, ArrivedOverGet, MUTATION_OVER_GET, RequestBudget, RequestDb};
use crate::principal::Principal;
use crate::state::AppState;

/// The GraphQL-over-HTTP media type; plain `application/json` is served to clients that do not
/// ask for it.
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// How long past its deadline a request's answer is awaited before the caller is told it timed
/// out (the transaction is cancelled at the deadline; this covers its rollback).
const DEADLINE_GRACE: Duration = Duration::from_secs(1);

pub async fn handle(State(state): State<AppState>, request: Request) -> Response {
    // A browser navigating to /graphql gets the playground (when enabled), not a 401.
    if let Some(playground) = &state.playground
        && request.method() == Method::GET
        && accepts(request.headers(), "text/html")
    {
        return super::playground::page_response(playground);
    }
    let wants_graphql_json = accepts(request.headers(), GRAPHQL_RESPONSE_JSON);
    let started = std::time::Instant::now();
    let metrics = state.metrics.clone();
    let mut outcome = Outcome::default();
    let mut response = match run(state, request, &mut outcome).await {
        Ok(response) => response,
        Err(error) => {
            outcome.code = error.code.as_str();
            error.into_response()
        }
    };
    metrics.observe(&outcome.operation, outcome.code, started.elapsed());
    if wants_graphql_json {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(GRAPHQL_RESPONSE_JSON),
        );
    }
    response
}

/// What the metrics record of a request: a bounded operation label and an outcome code.
struct Outcome {
    operation: String,
    code: &'static str,
}

impl Default for Outcome {
    fn default() -> Self {
        Self {
            operation: "<unauthenticated>".into(),
            code: "OK",
        }
    }
}

/// Marks the request abandoned if the caller goes away (this future is dropped) before its
/// answer is ready; the execution task then rolls back instead of committing.
struct AbandonOnDrop(Option<(Arc<RequestDb>, prometheus_client::metrics::counter::Counter)>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some((db, counter)) = self.0.take() {
            db.abandon();
            counter.inc();
        }
    }
}

/// One executed operation: the GraphQL response and its serialized body.
struct Executed {
    response: async_graphql::Response,
    body: Vec<u8>,
}

async fn run(
    state: AppState,
    request: Request,
    outcome: &mut Outcome,
) -> Result<Response, ApiError> {
    // Authentication comes first: nothing of an unknown caller's request is read or parsed,
    // and no database connection is opened for it.
    let principal = authenticate(&state, request.uri(), request.headers()).await?;
    let _in_flight = state.concurrency.try_acquire(&principal).ok_or_else(|| {
        tracing::info!(
            limit = state.concurrency.cap(),
            "request refused: too many in flight for one person"
        );
        ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "you already have {} requests in progress; wait for one to finish",
                state.concurrency.cap()
            ),
        )
    })?;
    outcome.operation = "<invalid>".into();

    let over_get = request.method() == Method::GET;
    let ids = crate::db::RequestIds {
        request_id: super::request_ids::of(&request),
        correlation_id: request
            .extensions()
            .get::<super::request_ids::CorrelationId>()
            .and_then(|c| c.0.clone()),
        trace_id: None,
    };
    let graphql_request = read_request(request, state.limits.max_body_bytes).await?;
    let operation = loggable_name(graphql_request.operation_name.as_deref()).to_owned();
    outcome.operation = operation.clone();
    let role = principal.role;
    let audit = state
        .limits
        .audit
        .then(|| audit_context(&state, &graphql_request, &operation, &principal));

    let limits = state.limits;
    let db = Arc::new(RequestDb::new(
        state.db.clone(),
        principal,
        !over_get,
        ids,
        audit,
        RequestBudget::starting_now(
            limits.max_statements,
            limits.max_response_bytes,
            limits.request_timeout,
        ),
    ));
    let mut graphql_request = graphql::attach(graphql_request, db.clone());
    if over_get {
        graphql_request = graphql_request.data(ArrivedOverGet);
    }
    // The operation runs on a task of its own, so a caller that goes away mid-request cannot
    // cut a database call short (which could return a connection with an open transaction to
    // the pool); the task always ends its transaction, rolling back if the caller is gone.
    let in_flight = state.metrics.shared.requests_in_flight.clone();
    in_flight.inc();
    let schema = state.schema.clone();
    let task_db = db.clone();
    let execution = tokio::spawn(async move {
        let executed = execute(schema, graphql_request, task_db, limits.max_response_bytes).await;
        in_flight.dec();
        executed
    });
    let mut abandon = AbandonOnDrop(Some((
        db.clone(),
        state.metrics.shared.requests_abandoned.clone(),
    )));
    let finished = tokio::time::timeout(db.remaining() + DEADLINE_GRACE, execution).await;
    abandon.0 = None;
    let Executed { response, body } = match finished {
        Ok(Ok(executed)) => executed?,
        Ok(Err(join)) => return Err(ApiError::internal(format!("request task failed: {join}"))),
        Err(_) => {
            let timeout = ApiError::new(
                ErrorCode::ServiceUnavailable,
                "the request took longer than the server allows and was cancelled",
            );
            db.stop(timeout.clone());
            return Err(timeout);
        }
    };

    let codes: Vec<&str> = response
        .errors
        .iter()
        .filter_map(|e| match e.extensions.as_ref()?.get("code") {
            Some(Value::String(code)) => Some(code.as_str()),
            _ => None,
        })
        .collect();
    let request_failed = response.data == Value::Null && !response.errors.is_empty();
    let status = match (request_failed, response.errors.first(), codes.first()) {
        (true, Some(first), _) if over_get && first.message == MUTATION_OVER_GET => {
            StatusCode::METHOD_NOT_ALLOWED
        }
        // As Apollo Server does: the client retries with the full query.
        (true, _, Some(&code)) if code == ErrorCode::PersistedQueryNotFound.as_str() => {
            StatusCode::OK
        }
        (true, _, Some(code)) => status_of(code).unwrap_or(StatusCode::BAD_REQUEST),
        _ => StatusCode::OK,
    };
    outcome.code = codes.first().map_or("OK", |c| code_label(c));
    // Ids, names and codes only: never variables, arguments or results.
    tracing::info!(operation = %operation, %role, status = status.as_u16(), errors = ?codes, "graphql operation");
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
    Ok(reply)
}

/// Runs the operation and ends its transaction. The answer is withheld (and the transaction
/// rolled back) when the request was stopped by a limit or abandoned; a mutation with any
/// error is rolled back whole and answers no data.
async fn execute(
    schema: graphql::RowguardSchema,
    request: async_graphql::Request,
    db: Arc<RequestDb>,
    max_response_bytes: usize,
) -> Result<Executed, ApiError> {
    let mut response = schema.execute(request).await;
    code_every_error(&mut response);
    let mut body = serde_json::to_vec(&response).map_err(ApiError::internal)?;
    if body.len() > max_response_bytes {
        db.stop(graphql::too_large(max_response_bytes));
    }
    db.finish(!response.errors.is_empty()).await?;
    if let Some(reason) = db.stopped() {
        return Err(reason);
    }
    if db.abandoned() {
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "the client went away",
        ));
    }
    if db.is_mutation() && !response.errors.is_empty() && response.data != Value::Null {
        // Rolled back: whatever the earlier fields returned was never written.
        response.data = Value::Null;
        body = serde_json::to_vec(&response).map_err(ApiError::internal)?;
    }
    Ok(Executed { response, body })
}

/// Gives every error an `extensions.code`.
fn code_every_error(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        let extensions = error
            .extensions
            .get_or_insert_with(ErrorExtensionValues::default);
        if extensions.get("code").is_some() {
            continue;
        }
        let code = if error.message == "PersistedQueryNotFound" {
            // Apollo clients recognise this one by code and then send the full query.
            ErrorCode::PersistedQueryNotFound
        } else {
            // Errors raised by the GraphQL engine itself (parse, validation) are the caller's
            // to fix.
            ErrorCode::BadUserInput
        };
        extensions.set("code", code.as_str());
    }
}

/// Verifies the bearer token, counting refusals by reason.
async fn authenticate(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let principal = match bearer_token(uri, headers) {
        Ok(token) => state.auth.authenticate(token).await,
        Err(e) => Err(e),
    };
    principal.map_err(|e| {
        state
            .metrics
            .shared
            .token_rejections
            .get_or_create(&crate::metrics::ReasonLabel {
                reason: e.reason().into(),
            })
            .inc();
        ApiError::from(e)
    })
}

/// The per-request facts the audit trail records (names and hashes, never PHI).
fn audit_context(
    state: &AppState,
    request: &async_graphql::Request,
    operation: &str,
    principal: &Principal,
) -> AuditContext {
    AuditContext {
        operation_name: request
            .operation_name
            .as_deref()
            .map(|_| operation.to_owned()),
        persisted_query_hash: request
            .extensions
            .get("persistedQuery")
            .and_then(|pq| match pq {
                Value::Object(fields) => match fields.get("sha256Hash") {
                    Some(Value::String(hash))
                        if hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()) =>
                    {
                        Some(hash.clone())
                    }
                    _ => None,
                },
                _ => None,
            }),
        client_id: principal.client_id.clone(),
        failures: state.metrics.shared.audit_write_failures.clone(),
    }
}

/// Reads a GraphQL request from the query string (GET) or a JSON body (POST) of bounded size.
async fn read_request(
    request: Request,
    max_body_bytes: usize,
) -> Result<async_graphql::Request, ApiError> {
    let (parts, body) = request.into_parts();
    let body = if parts.method == Method::POST {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                ErrorCode::BadUserInput,
                "send the GraphQL request as Content-Type: application/json",
            )
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = to_bytes(body, max_body_bytes).await.map_err(|_| {
            ApiError::new(
                ErrorCode::BadUserInput,
                format!("the request body is larger than {max_body_bytes} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        })?;
        Body::from(bytes)
    } else {
        Body::empty()
    };
    let over_get = parts.method == Method::GET;
    GraphQLRequest::<async_graphql_axum::rejection::GraphQLRejection>::from_request(
        Request::from_parts(parts, body),
        &(),
    )
    .await
    .map(GraphQLRequest::into_inner)
    .map_err(|rejection| {
        // A fixed category only: the parser's message can quote the offending value, and a
        // query string or body can hold a patient's name.
        tracing::info!(
            reason = rejection_category(&rejection.0, over_get),
            "malformed GraphQL request"
        );
        ApiError::new(
            ErrorCode::BadUserInput,
            "the request is not a valid GraphQL request",
        )
    })
}

/// What kind of malformed request this was, in words that carry nothing of the request.
fn rejection_category(error: &async_graphql::ParseRequestError, over_get: bool) -> &'static str {
    use async_graphql::ParseRequestError as E;
    match error {
        E::Io(_) => "body could not be read",
        E::InvalidRequest(_) if over_get => "query string is not a GraphQL request",
        E::InvalidRequest(_) => "body is not a GraphQL request",
        E::PayloadTooLarge => "body too large",
        E::UnsupportedBatch => "batch requests are not supported",
        _ => "unsupported request encoding",
    }
}

/// The client's operation name if it looks like a GraphQL name (they are chosen by developers,
/// not patients); anything else is not logged.
fn loggable_name(name: Option<&str>) -> &str {
    match name {
        Some(n)
            if !n.is_empty()
                && n.len() <= 64
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            n
        }
        Some(_) => "<invalid>",
        None => "<anonymous>",
    }
}

fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
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

/// The static label for a code the response carries.
fn code_label(code: &str) -> &'static str {
    ALL_CODES
        .into_iter()
        .find(|c| c.as_str() == code)
        .map_or("OTHER", ErrorCode::as_str)
}

const ALL_CODES: [ErrorCode; 9] = [
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::BadUserInput,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::PersistedQueryNotFound,
    ErrorCode::RateLimited,
    ErrorCode::ServiceUnavailable,
    ErrorCode::InternalServerError,
];

fn status_of(code: &str) -> Option<StatusCode> {
    ALL_CODES
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
