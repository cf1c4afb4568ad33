//! The reference web app (`examples/clinician-web`) on the dev gateway at `/app/`, with the
//! runtime configuration that points it at dev's identity provider. The app is a build output
//! (`npm run build`), read from disk at request time, so dev serves whatever was built last.

use std::path::{Path, PathBuf};

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::services::{ServeDir, ServeFile};

use super::identity_provider::authorization::WEB_CLIENT_ID;

/// The one command that builds the app, for the banner when there is nothing to serve yet.
pub fn build_command(app_dir: &Path) -> String {
    let dir = app_dir.display();
    format!("npm --prefix {dir} ci && npm --prefix {dir} run build")
}

/// The built app, if there is one.
pub fn built(app_dir: &Path) -> Option<PathBuf> {
    let dist = app_dir.join("dist");
    dist.join("index.html").is_file().then_some(dist)
}

/// The app's operations as trusted documents, when the manifest exists: dev loads them in `log`
/// mode, so the app can send ids only while the playground still runs anything.
pub fn manifest(app_dir: &Path) -> Option<PathBuf> {
    let manifest = app_dir.join("persisted-query-manifest.json");
    manifest.is_file().then_some(manifest)
}

/// `/app/…`: the files, `index.html` for any other path (the app routes `/app/callback` itself),
/// and `/app/config.json` naming dev's provider.
pub fn routes(dist: &Path, issuer: &str) -> Router {
    let config = json!({
        "authority": issuer,
        "clientId": WEB_CLIENT_ID,
        "graphqlUrl": "/graphql",
        "scope": "openid profile offline_access",
        "redirectPath": "/app/callback",
        "postLogoutPath": "/app/",
        "tokenToSend": "access_token",
    });
    let csp = app_policy(issuer);
    Router::new()
        .route(
            "/app/config.json",
            get(move || {
                let config = config.clone();
                async move { Json(config) }
            }),
        )
        .nest_service(
            "/app",
            ServeDir::new(dist).fallback(ServeFile::new(dist.join("index.html"))),
        )
        .layer(axum::middleware::map_response(
            move |response: axum::response::Response| {
                let response =
                    crate::routes::playground::with_security_headers(response, csp.as_deref());
                async move { response }
            },
        ))
}

/// The app shows PHI and keeps its tokens in `sessionStorage`: it runs only its own scripts
/// and styles, talks only to the gateway and the identity provider, and no page may frame it
/// (a framed notes editor could be clicked through).
fn app_policy(issuer: &str) -> Option<String> {
    let origin = openidconnect::url::Url::parse(issuer)
        .ok()
        .map(|u| u.origin().ascii_serialization())?;
    Some(format!(
        "default-src 'self'; connect-src 'self' {origin}; img-src 'self' data:; \
         frame-src 'self' {origin}; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ))
}
