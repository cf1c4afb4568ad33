//! `GET /playground/assets/{name}` and the playground page itself (see [`crate::playground`]).

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::graphql::accepts;
use crate::error::{ApiError, ErrorCode};
use crate::playground::{APP_JS, AssetSource, PAGE_CSS, Playground, embedded};
use crate::state::AppState;

/// The headers every page Rowguard serves to a browser carries (the playground, and dev's web
/// app and sign-in page): its content security policy, and no framing, sniffing or referrer.
pub fn with_security_headers(mut response: Response, csp: Option<&str>) -> Response {
    let headers = response.headers_mut();
    if let Some(csp) = csp.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// A browser navigating to `/graphql` gets the playground (when enabled), not a 401.
pub async fn on_navigation(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match &state.playground {
        Some(playground)
            if request.method() == Method::GET && accepts(request.headers(), "text/html") =>
        {
            page_response(playground)
        }
        _ => next.run(request).await,
    }
}

/// The playground page.
fn page_response(playground: &Playground) -> Response {
    let response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        playground.page(),
    )
        .into_response();
    with_security_headers(response, Some(&playground.content_security_policy()))
}

/// `GET /playground/assets/{name}`: the embedded pinned files and the page's own script.
pub async fn asset(
    State(state): State<AppState>,
    name: Result<UrlPath<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let no_such_asset =
        || ApiError::new(ErrorCode::NotFound, "no such playground asset").into_response();
    // A name that is not UTF-8 names no asset: a 404 like any other, not the extractor's
    // plain-text 400.
    let (Some(playground), Ok(UrlPath(name))) = (&state.playground, name) else {
        return no_such_asset();
    };
    let (content_type, body): (&str, Bytes) = match name.as_str() {
        "app.js" => (
            "text/javascript; charset=utf-8",
            Bytes::from_static(APP_JS.as_bytes()),
        ),
        "page.css" => (
            "text/css; charset=utf-8",
            Bytes::from_static(PAGE_CSS.as_bytes()),
        ),
        other => match (playground.source, embedded(other)) {
            (AssetSource::Embedded, Some(bytes)) if other.ends_with(".css") => {
                ("text/css; charset=utf-8", bytes)
            }
            (AssetSource::Embedded, Some(bytes)) => ("text/javascript; charset=utf-8", bytes),
            _ => return no_such_asset(),
        },
    };
    let response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response();
    with_security_headers(response, None)
}
