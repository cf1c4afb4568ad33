//! One id per request, chosen by the server: the audit trail, the logs and the `X-Request-Id`
//! response header all carry the same one. A client's own `X-Request-Id` is never used as the
//! key; if it is short plain text it is kept as the separate correlation id.

use axum::extract::Request;
use axum::http::HeaderValue;
use uuid::Uuid;

const HEADER: &str = "x-request-id";
/// The longest client correlation id kept.
pub const MAX_CORRELATION_ID: usize = 64;

/// The server's id for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(pub Uuid);

/// The id the client sent, when it is 1–64 characters of `A-Z a-z 0-9 . _ : -`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorrelationId(pub Option<String>);

/// Replaces whatever `X-Request-Id` the client sent with a fresh UUID (which the response then
/// carries back), keeping the client's value aside as its correlation id.
pub fn assign(mut request: Request) -> Request {
    let correlation = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(correlation_id);
    let id = Uuid::new_v4();
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        request.headers_mut().insert(HEADER, value);
    }
    request.extensions_mut().insert(RequestId(id));
    request.extensions_mut().insert(CorrelationId(correlation));
    request
}

/// The client's correlation id if it is plain, short text; anything else is dropped.
pub fn correlation_id(value: &str) -> Option<String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    (!value.is_empty() && value.len() <= MAX_CORRELATION_ID && value.chars().all(plain))
        .then(|| value.to_owned())
}

/// The request's server id (set by [`assign`], which wraps every route).
pub fn of(request: &axum::http::Request<impl Sized>) -> Uuid {
    request
        .extensions()
        .get::<RequestId>()
        .map_or_else(Uuid::nil, |id| id.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_text_is_kept_as_a_correlation_id() {
        assert_eq!(correlation_id("web-7f3a.2"), Some("web-7f3a.2".into()));
        assert_eq!(correlation_id(""), None);
        assert_eq!(correlation_id("has space"), None);
        assert_eq!(correlation_id("Smith, John 1961-04-02"), None);
        assert_eq!(correlation_id(&"a".repeat(65)), None);
        assert!(correlation_id(&"a".repeat(64)).is_some());
    }
}
