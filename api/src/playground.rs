//! The GraphiQL playground's page and files, for `GET /graphql` from a browser when enabled.
//!
//! GraphiQL and React are embedded in the binary at build time (pinned versions, every file
//! checked against its Subresource Integrity hash), so a released binary serves the playground
//! wherever it runs, air-gapped included, under a Content-Security-Policy that allows only its
//! own origin. Optionally (`ROWGUARD_PLAYGROUND_ASSETS=cdn`) the browser loads the same pinned
//! files from a CDN instead.

use axum::body::Bytes;

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

/// The exact files the page loads, vendored in `api/playground/vendor/` from the npm packages
/// `api/playground/package-lock.json` pins (see `api/playground/README.md`); a test checks the
/// embedded bytes against these hashes.
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

/// The page's own script.
pub const APP_JS: &str = include_str!("../playground/app.js");

/// The embedded copy of each pinned file, by its served name.
pub fn embedded(name: &str) -> Option<Bytes> {
    let bytes: &'static [u8] = match name {
        "react.production.min.js" => include_bytes!("../playground/vendor/react.production.min.js"),
        "react-dom.production.min.js" => {
            include_bytes!("../playground/vendor/react-dom.production.min.js")
        }
        "graphiql.min.js" => include_bytes!("../playground/vendor/graphiql.min.js"),
        "graphiql.min.css" => include_bytes!("../playground/vendor/graphiql.min.css"),
        _ => return None,
    };
    Some(Bytes::from_static(bytes))
}

/// Where the browser loads the pinned files from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetSource {
    /// From Rowguard itself (the embedded copies).
    Embedded,
    /// From [`CDN_ORIGIN`].
    Cdn,
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

impl Playground {
    pub fn new(source: AssetSource) -> Self {
        Self {
            source,
            extra_controls: None,
            extra_connect_src: None,
        }
    }

    fn asset_url(&self, asset: &PinnedAsset) -> String {
        match self.source {
            AssetSource::Embedded => format!("/playground/assets/{}", asset.name),
            AssetSource::Cdn => format!(
                "{CDN_ORIGIN}/{}@{}/{}",
                asset.package, asset.version, asset.path
            ),
        }
    }

    /// Only what the page really uses: its own origin (or the CDN), and data: fonts/images
    /// embedded in GraphiQL's stylesheet.
    pub fn content_security_policy(&self) -> String {
        let third_party = match self.source {
            AssetSource::Embedded => "",
            AssetSource::Cdn => CDN_ORIGIN,
        };
        format!(
            "default-src 'none'; script-src 'self' {third_party}; style-src 'self' {third_party}; \
             font-src data:; img-src 'self' data:; connect-src 'self' {connect}; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
            connect = self.extra_connect_src.as_deref().unwrap_or_default()
        )
    }

    pub fn page(&self) -> String {
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

pub const PAGE_CSS: &str = "html, body { height: 100%; margin: 0; font-family: system-ui, sans-serif; }\n\
body { display: flex; flex-direction: column; }\n\
#bar { display: flex; gap: 1em; align-items: center; padding: 0.5em 1em; border-bottom: 1px solid #ddd; }\n\
#bar input { width: 32em; }\n\
#graphiql { flex: 1; min-height: 0; }\n";

#[cfg(test)]
mod tests {
    use base64::Engine;
    use sha2::{Digest, Sha384};

    use super::*;

    #[test]
    fn every_embedded_file_matches_its_pinned_integrity_hash() {
        for asset in PINNED_ASSETS {
            let bytes = embedded(asset.name).expect("embedded");
            let hash = base64::engine::general_purpose::STANDARD.encode(Sha384::digest(&bytes));
            assert_eq!(format!("sha384-{hash}"), asset.integrity, "{}", asset.name);
        }
    }
}
