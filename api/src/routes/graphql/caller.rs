//! The `Caller` extractor: who is asking, admitted under their per-person limits. Nothing of an
//! unknown caller's request is read or parsed, and no database connection is opened for it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri, header};

use tracing::Instrument;

use crate::auth::AuthError;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::ReasonLabel;
use crate::principal::Principal;
use crate::quota::InFlight;
use crate::state::AppState;

/// An authenticated person with a request slot; the slot is freed when this is dropped.
#[derive(Debug)]
pub struct Caller {
    pub principal: Principal,
    pub slot: InFlight,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let span = tracing::debug_span!(
            "verify_token",
            otel.name = "verify token",
            rowguard.token.cache = tracing::field::Empty,
        );
        let principal = match bearer_token(&parts.uri, &parts.headers) {
            Ok(token) => state.auth.authenticate(token).instrument(span).await,
            Err(e) => Err(e),
        };
        let principal = principal.map_err(|e| {
            state
                .metrics
                .shared
                .token_rejections
                .get_or_create(&ReasonLabel {
                    reason: e.reason().into(),
                })
                .inc();
            ApiError::from(e)
        })?;
        let slot = state.concurrency.try_acquire(&principal).ok_or_else(|| {
            let cap = state.concurrency.cap();
            tracing::info!(
                limit = cap,
                "request refused: too many in flight for one person"
            );
            ApiError::new(
                ErrorCode::RateLimited,
                format!("you already have {cap} requests in progress; wait for one to finish"),
            )
        })?;
        Ok(Self { principal, slot })
    }
}

/// The bearer token from the `Authorization` header. Tokens in the URL are refused outright:
/// URLs end up in logs, browser history and referrers.
pub fn bearer_token<'h>(uri: &Uri, headers: &'h HeaderMap) -> Result<&'h str, AuthError> {
    // Names are compared decoded: `access%5Ftoken` is the same parameter to anything that
    // reads the URL.
    let in_query = uri.query().is_some_and(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .is_ok_and(|pairs| pairs.iter().any(|(name, _)| name == "access_token"))
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        headers
    }

    fn token_of(uri: &str, values: &[&str]) -> Result<String, AuthError> {
        let uri: Uri = uri.parse().expect("uri");
        let headers = headers(values);
        bearer_token(&uri, &headers).map(str::to_owned)
    }

    #[test]
    fn a_bearer_header_yields_its_token() {
        assert_eq!(
            token_of("/graphql", &["Bearer abc.def"]).ok(),
            Some("abc.def".into())
        );
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        assert_eq!(
            token_of("/graphql", &["bEaReR abc"]).ok(),
            Some("abc".into())
        );
    }

    #[test]
    fn no_header_is_missing_credentials() {
        assert!(matches!(token_of("/graphql", &[]), Err(AuthError::Missing)));
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(matches!(
            token_of("/graphql", &["Basic dXNlcjpwYXNz"]),
            Err(AuthError::InvalidRequest(_))
        ));
    }

    #[test]
    fn an_empty_or_spaced_token_is_refused() {
        for value in ["Bearer", "Bearer ", "Bearer a b"] {
            assert!(
                matches!(
                    token_of("/graphql", &[value]),
                    Err(AuthError::InvalidRequest(_))
                ),
                "{value:?}"
            );
        }
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        assert!(matches!(
            token_of("/graphql", &["Bearer a", "Bearer b"]),
            Err(AuthError::InvalidRequest(_))
        ));
    }

    #[test]
    fn a_token_in_the_url_is_refused_even_with_a_header() {
        assert!(matches!(
            token_of("/graphql?query=x&access_token=abc", &["Bearer abc"]),
            Err(AuthError::InvalidRequest(_))
        ));
        assert!(matches!(
            token_of("/graphql?access%5Ftoken=abc", &["Bearer abc"]),
            Err(AuthError::InvalidRequest(_))
        ));
        assert!(token_of("/graphql?my_access_token=abc", &["Bearer abc"]).is_ok());
    }
}
