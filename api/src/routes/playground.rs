//! The GraphiQL playground at `GET /graphql` (for browsers asking for HTML), when enabled.
//!
//! Its scripts and styles come from a local copy installed with npm (exact versions pinned in
//! `api/playground/package.json`), so it works air-gapped and under a strict
//! Content-Security-Policy; or, when configured, from a CDN at the same pinned versions. Either
//! way every file is protected with Subresource Integrity.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// One pinned third-party file.
#[derive(Debug, Clone, Copy)]
pub struct PinnedAsset {
    /// The name Rowguard serves it under.
    pub name: &'static str,
    /// npm package and version.
    pub package: &'static str,
    pub version: &'static str,
    /// Path inside the package.
    pub path: &'static str,
    /// SHA-384 Subresource Integrity of the file at that version.
    pub integrity: &'static str,
}

/// The exact files the page loads. Bump versions together with `api/playground/package.json`;
/// a test checks these hashes against the installed files.
pub const PINNED_ASSETS: [PinnedAsset; 4] = [
    PinnedAsset {
        name: "react.production.min.js",
        package: "react",
        version: "18.3.1",
        path: "umd/react.production.min.js",
        integrity: "sha384-DGyLxAyjq0f9SPpVevD6IgztCFlnMF6oW/XQGmfe+IsZ8TqEiDrcHkMLKI6fiB/Z",
    },
    PinnedAsset {
        name: "react-dom.production.min.js",
        package: "react-dom",
        version: "18.3.1",
        path: "umd/react-dom.production.min.js",
        integrity: "sha384-gTGxhz21lVGYNMcdJOyq01Edg0jhn/c22nsx0kyqP0TxaV5WVdsSH1fSDUf5YJj1",
    },
    PinnedAsset {
        name: "graphiql.min.js",
        package: "graphiql",
        version: "3.8.3",
        path: "graphiql.min.js",
        integrity: "sha384-HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie",
    },
    PinnedAsset {
        name: "graphiql.min.css",
        package: "graphiql",
        version: "3.8.3",
        path: "graphiql.min.css",
        integrity: "sha384-Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM",
    },
];

/// The CDN used in CDN mode (it serves npm packages byte for byte).
pub const CDN_ORIGIN: &str = "https://unpkg.com";

const APP_JS: &str = include_str!("../../playground/app.js");

/// Where the page's third-party files come from.
#[derive(Clone)]
pub enum AssetSource {
    /// Served by Rowguard from memory, read at startup from a local npm install.
    Local(Arc<HashMap<&'static str, Bytes>>),
    /// Loaded by the browser from [`CDN_ORIGIN`].
    Cdn,
}

impl std::fmt::Debug for AssetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssetSource::Local(_) => f.write_str("Local"),
            AssetSource::Cdn => f.write_str("Cdn"),
        }
    }
}

/// The playground as configured.
#[derive(Debug, Clone)]
pub struct Playground {
    pub source: AssetSource,
    /// Extra HTML placed above the editor (the dev server's demo-user picker).
    pub extra_controls: Option<String>,
    /// One more origin the page may call (the dev identity provider's token endpoint).
    pub extra_connect_src: Option<String>,
}

/// The default place of the local npm install: `api/playground/node_modules` in a checkout.
pub fn default_assets_dir() -> PathBuf {
    let from_cwd = PathBuf::from("api/playground/node_modules");
    if from_cwd.is_dir() {
        return from_cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("playground/node_modules")
}

/// Reads the pinned files from a local npm install.
pub fn load_local(dir: &Path) -> Result<AssetSource, String> {
    let mut files = HashMap::new();
    for asset in PINNED_ASSETS {
        let path = dir.join(asset.package).join(asset.path);
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "playground asset {} is missing ({e}); run `npm ci --prefix api/playground` or set \
                 ROWGUARD_PLAYGROUND_ASSETS_DIR",
                path.display()
            )
        })?;
        files.insert(asset.name, Bytes::from(bytes));
    }
    Ok(AssetSource::Local(Arc::new(files)))
}

impl Playground {
    fn asset_url(&self, asset: &PinnedAsset) -> String {
        match self.source {
            AssetSource::Local(_) => format!("/playground/assets/{}", asset.name),
            AssetSource::Cdn => format!(
                "{CDN_ORIGIN}/{}@{}/{}",
                asset.package, asset.version, asset.path
            ),
        }
    }

    /// Only what the page really uses: its own origin (or the CDN), and data: fonts/images
    /// embedded in GraphiQL's stylesheet.
    fn content_security_policy(&self) -> String {
        let third_party = match self.source {
            AssetSource::Local(_) => "",
            AssetSource::Cdn => CDN_ORIGIN,
        };
        format!(
            "default-src 'none'; script-src 'self' {third_party}; style-src 'self' {third_party}; \
             font-src data:; img-src 'self' data:; connect-src 'self' {connect}; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
            connect = self.extra_connect_src.as_deref().unwrap_or_default()
        )
    }

    fn page(&self) -> String {
        let tag = |asset: &PinnedAsset| {
            let url = self.asset_url(asset);
            if asset.name.ends_with(".css") {
                format!(
                    r#"<link rel="stylesheet" href="{url}" integrity="{}" crossorigin="anonymous">"#,
                    asset.integrity
                )
            } else {
                format!(
                    r#"<script src="{url}" integrity="{}" crossorigin="anonymous"></script>"#,
                    asset.integrity
                )
            }
        };
        let assets: Vec<String> = PINNED_ASSETS.iter().map(tag).collect();
        format!(
            r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Rowguard GraphQL playground</title>
<meta name="referrer" content="no-referrer">
{css}
<link rel="stylesheet" href="/playground/assets/page.css">
</head>
<body>
<div id="bar">
  <strong>Rowguard</strong>
  {extra}
  <label>Bearer token <input id="token" type="password" autocomplete="off" spellcheck="false" placeholder="paste an access or ID token"></label>
</div>
<div id="graphiql"></div>
{scripts}
<script src="/playground/assets/app.js"></script>
</body>
</html>
"#,
            css = assets[3],
            scripts = assets[..3].join("\n"),
            extra = self.extra_controls.as_deref().unwrap_or_default(),
        )
    }
}

const PAGE_CSS: &str = "html, body { height: 100%; margin: 0; font-family: system-ui, sans-serif; }\n\
body { display: flex; flex-direction: column; }\n\
#bar { display: flex; gap: 1em; align-items: center; padding: 0.5em 1em; border-bottom: 1px solid #ddd; }\n\
#bar input { width: 32em; }\n\
#graphiql { flex: 1; min-height: 0; }\n";

fn with_security_headers(mut response: Response, csp: Option<&str>) -> Response {
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

/// The playground page.
pub fn page_response(playground: &Playground) -> Response {
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

/// `GET /playground/assets/{name}`: the pinned files (local mode) and the page's own script.
pub async fn asset(State(state): State<AppState>, UrlPath(name): UrlPath<String>) -> Response {
    let Some(playground) = &state.playground else {
        return StatusCode::NOT_FOUND.into_response();
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
        other => match &playground.source {
            AssetSource::Local(files) => match files.get(other) {
                Some(bytes) if other.ends_with(".css") => {
                    ("text/css; charset=utf-8", bytes.clone())
                }
                Some(bytes) => ("text/javascript; charset=utf-8", bytes.clone()),
                None => return StatusCode::NOT_FOUND.into_response(),
            },
            AssetSource::Cdn => return StatusCode::NOT_FOUND.into_response(),
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
