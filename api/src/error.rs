//! The one error type at the API edge. Every error leaves with an Apollo-style
//! `extensions.code`; internal detail goes to the server log only.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::db::{DbError, FailureKind};
use crate::quota::Decision;

/// The codes clients can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    BadUserInput,
    NotFound,
    Conflict,
    PersistedQueryNotFound,
    /// A persisted query id that is not in the trusted documents (enforce mode).
    PersistedQueryNotInList,
    /// An operation that is not in the trusted documents (enforce mode).
    QueryNotInSafelist,
    /// Over a per-person limit (requests in flight, or the request quota).
    RateLimited,
    ServiceUnavailable,
    InternalServerError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::BadUserInput => "BAD_USER_INPUT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            ErrorCode::PersistedQueryNotInList => "PERSISTED_QUERY_NOT_IN_LIST",
            ErrorCode::QueryNotInSafelist => "QUERY_NOT_IN_SAFELIST",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::InternalServerError => "INTERNAL_SERVER_ERROR",
        }
    }

    /// The HTTP status when this error ends a whole request.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::BadUserInput | ErrorCode::PersistedQueryNotInList => StatusCode::BAD_REQUEST,
            ErrorCode::QueryNotInSafelist => StatusCode::FORBIDDEN,
            // As Apollo Server answers it: the client then retries with the full query.
            ErrorCode::PersistedQueryNotFound => StatusCode::OK,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error a caller sees: a code, a message that is safe to show, and for authentication
/// failures the RFC 6750 challenge.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    challenge: Option<String>,
    /// Overrides the code's usual HTTP status (e.g. 413 for an over-size body).
    status: Option<StatusCode>,
    /// Seconds after which a retry may succeed (`Retry-After`).
    retry_after: Option<u64>,
    /// Further response headers (the quota's `RateLimit` and `RateLimit-Policy`).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Mapped from a failed database statement (which ends the request's transaction).
    from_statement: bool,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            challenge: None,
            status: None,
            retry_after: None,
            headers: Vec::new(),
            from_statement: false,
        }
    }

    /// A request refused by a quota: 429 with `Retry-After` and the quota's headers.
    pub fn over_quota(decision: &Decision) -> Self {
        let mut error = Self::new(
            ErrorCode::RateLimited,
            format!(
                "over the {} request quota; retry in {} s",
                decision.subject.as_str(),
                decision.retry_after_secs()
            ),
        )
        .with_retry_after(decision.retry_after_secs());
        error.headers = quota_headers(decision);
        error
    }

    /// Headers to send with the response this error ends.
    pub fn response_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = self.headers.clone();
        let retry_after = match (self.retry_after, self.code) {
            (Some(seconds), _) => Some(seconds),
            (None, ErrorCode::ServiceUnavailable) => Some(5),
            (None, ErrorCode::RateLimited) => Some(1),
            _ => None,
        };
        if let Some(value) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            headers.push((header::RETRY_AFTER, value));
        }
        if let Some(challenge) = self
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            headers.push((header::WWW_AUTHENTICATE, challenge));
        }
        headers
    }

    /// Adds the quota's `RateLimit` headers when the request was charged (and none are set):
    /// every charged answer carries them, one that ends in an error included.
    pub fn with_quota(mut self, decision: Option<Decision>) -> Self {
        if let Some(decision) = decision
            && self.headers.is_empty()
        {
            self.headers = quota_headers(&decision);
        }
        self
    }

    /// Tells the client when a retry may succeed.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn bad_input(field: &str, problem: &str) -> Self {
        Self::new(ErrorCode::BadUserInput, format!("{field}: {problem}"))
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// Logs `detail` (never sent) and returns a generic internal error.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::InternalServerError, "internal server error")
    }

    /// The GraphQL `errors` document for this error alone.
    pub fn body(&self) -> serde_json::Value {
        json!({ "errors": [{ "message": self.message, "extensions": { "code": self.code.as_str() } }] })
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let (code, message, challenge) = match err {
            AuthError::Missing => (
                ErrorCode::Unauthenticated,
                "authentication required: send an Authorization: Bearer <token> header",
                Some("Bearer realm=\"rowguard\"".to_owned()),
            ),
            AuthError::InvalidRequest(why) => (
                ErrorCode::Unauthenticated,
                why,
                Some(format!("Bearer realm=\"rowguard\", error=\"invalid_request\", error_description=\"{why}\"")),
            ),
            AuthError::InvalidToken(why) => (
                ErrorCode::Unauthenticated,
                why,
                Some(format!("Bearer realm=\"rowguard\", error=\"invalid_token\", error_description=\"{why}\"")),
            ),
            AuthError::Forbidden => (
                ErrorCode::Forbidden,
                "the token grants no Rowguard role",
                Some("Bearer realm=\"rowguard\", error=\"insufficient_scope\", error_description=\"the token grants no Rowguard role\"".to_owned()),
            ),
            AuthError::KeysUnavailable => (
                ErrorCode::ServiceUnavailable,
                "the identity provider's signing keys are not available yet; retry shortly",
                None,
            ),
        };
        Self {
            code,
            message: message.to_owned(),
            challenge,
            status: None,
            retry_after: None,
            headers: Vec::new(),
            from_statement: false,
        }
    }
}

/// The message of a field that could not run because another field's statement had failed
/// first, taking the request's one transaction down with it (SQLSTATE 25P02). Its code becomes
/// that earlier failure's once the whole answer is known ([`ApiError::after_earlier_failure`]).
pub const NOT_RUN_AFTER_FAILURE: &str = "not run: another field of this request failed first, and the fields of a request share one transaction; ask for this field without the failing one";

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        let mut mapped = Self::of_statement(err);
        mapped.from_statement = true;
        mapped
    }
}

impl ApiError {
    fn of_statement(err: DbError) -> Self {
        let sqlstate = err.sqlstate();
        let sqlstate = sqlstate.as_deref().unwrap_or("none");
        if sqlstate == "25P02" {
            // Not a failure of its own: the earlier one was already mapped (and logged).
            return Self::new(ErrorCode::InternalServerError, NOT_RUN_AFTER_FAILURE);
        }
        match err.kind() {
            FailureKind::Lost if matches!(err, DbError::Unavailable(_)) => {
                tracing::warn!(error = ?err, "database unavailable");
                Self::new(
                    ErrorCode::ServiceUnavailable,
                    "the database is unavailable; retry shortly",
                )
            }
            FailureKind::Cancelled | FailureKind::Lost => {
                tracing::warn!(sqlstate, "request cancelled by the database");
                Self::new(
                    ErrorCode::ServiceUnavailable,
                    "the database cancelled or lost the request; retry shortly",
                )
            }
            // A serialization failure or deadlock (raised by a statement or at COMMIT under a
            // stricter isolation level): nothing was written, and the same request can succeed
            // when sent again, so it is the retryable answer, not a server error.
            FailureKind::Conflict => {
                tracing::warn!(sqlstate, "request conflicted with a concurrent transaction");
                Self::new(
                    ErrorCode::ServiceUnavailable,
                    "the request conflicted with a concurrent one and was not applied; retry it",
                )
                .with_retry_after(1)
            }
            // The request's own limit stopped it; its answer is that limit's error, which the
            // caller can fix, so nothing is logged as a database failure.
            FailureKind::NotSent => Self::new(
                ErrorCode::ServiceUnavailable,
                "not run: the request was stopped by one of its limits",
            ),
            FailureKind::PermissionDenied => Self::forbidden("not permitted for your role"),
            // A value the caller sent that the database cannot hold (a date beyond its range, a
            // character its encoding lacks). Writes say which field (see the mutations); the
            // database's own message could quote the value, so it is not passed on. Other
            // refused values (a check constraint, a failed cast) stay server errors outside the
            // mutations: there they point at Rowguard's own SQL.
            FailureKind::InvalidValue if matches!(sqlstate, "22021" | "22008" | "22007") => {
                tracing::warn!(sqlstate, "the database refused a value");
                Self::new(
                    ErrorCode::BadUserInput,
                    "a value in the request is outside what the database can store or compare",
                )
            }
            _ => {
                // The SQLSTATE is enough to diagnose; the message may quote row values (PHI).
                tracing::error!(sqlstate, "database statement failed");
                Self::new(ErrorCode::InternalServerError, "internal server error")
            }
        }
    }
}

/// The code travels twice: in `extensions.code` for the client, and as the error's source, so
/// the HTTP layer reads it back typed (never from the message or the extensions).
impl From<ApiError> for async_graphql::Error {
    fn from(err: ApiError) -> Self {
        let mut extensions = async_graphql::ErrorExtensionValues::default();
        extensions.set("code", err.code.as_str());
        async_graphql::Error {
            message: err.message.clone(),
            source: Some(std::sync::Arc::new(err)),
            extensions: Some(extensions),
        }
    }
}

impl ApiError {
    /// As an error of the GraphQL engine's request phase (extensions), with the same typed code.
    pub fn into_server_error(self) -> async_graphql::ServerError {
        let error = async_graphql::Error::from(self);
        async_graphql::ServerError {
            message: error.message,
            source: error.source,
            locations: Vec::new(),
            path: Vec::new(),
            extensions: error.extensions,
        }
    }

    /// The coded error a GraphQL error stands for: its own, or `BAD_USER_INPUT` for the
    /// engine's parse and validation errors (which are the caller's to fix).
    pub fn of(error: &async_graphql::ServerError) -> (ErrorCode, Option<StatusCode>) {
        match error.source::<ApiError>() {
            Some(api) => (api.code, api.status),
            None => (ErrorCode::BadUserInput, None),
        }
    }

    /// True for a field that did not run because an earlier field's failure ended the
    /// request's transaction (see [`NOT_RUN_AFTER_FAILURE`]).
    pub fn is_after_earlier_failure(&self) -> bool {
        self.message == NOT_RUN_AFTER_FAILURE
    }

    /// True when a failed database statement caused this error (and so may have ended the
    /// request's transaction); false for refusals made before any statement ran.
    pub fn is_from_statement(&self) -> bool {
        self.from_statement
    }

    /// The same "not run" error, with the code of the failure that caused it.
    pub fn after_earlier_failure(code: ErrorCode) -> Self {
        Self::new(code, NOT_RUN_AFTER_FAILURE)
    }

    /// The API error behind a GraphQL error, if it is one of ours.
    pub fn behind(error: &async_graphql::ServerError) -> Option<&ApiError> {
        error.source::<ApiError>()
    }

    /// The HTTP status of a request that failed with this error.
    pub fn http_status(&self) -> StatusCode {
        self.status.unwrap_or(self.code.status())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let headers = self.response_headers();
        let mut response = (status, axum::Json(self.body())).into_response();
        response.headers_mut().extend(headers);
        // For the request metrics (see `routes::graphql::observe`).
        response.extensions_mut().insert(self.code);
        response
    }
}

/// The IETF `RateLimit` and `RateLimit-Policy` headers of a quota decision.
pub fn quota_headers(decision: &Decision) -> Vec<(HeaderName, HeaderValue)> {
    [
        ("ratelimit-policy", decision.policy_header()),
        ("ratelimit", decision.state_header()),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        Some((
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).ok()?,
        ))
    })
    .collect()
}
