//! The GraphiQL playground: served from a local npm install with pinned, integrity-checked
//! files and a strict Content-Security-Policy, and usable in a real browser with no network
//! beyond loopback.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rowguard::graphql::ApiLimits;
use rowguard::routes::playground::{
    AssetSource, CDN_ORIGIN, PINNED_ASSETS, Playground, default_assets_dir, load_local,
};
use rowguard_tests::TestDb;
use rowguard_tests::app::{TestApp, oidc_settings};
use rowguard_tests::fixtures::enroll_at;
use rowguard_tests::issuer::TestIssuer;
use sha2::{Digest, Sha384};

fn local_assets() -> AssetSource {
    load_local(&default_assets_dir()).unwrap_or_else(|e| panic!("{e} (.ci/run installs them)"))
}

async fn app_with_playground(source: AssetSource) -> (TestDb, TestIssuer, TestApp) {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    enroll_at(&t.owner().await, issuer.url(), "alice").await;
    let playground = Playground {
        source,
        extra_controls: None,
        extra_connect_src: None,
    };
    let app = TestApp::start_full(
        &t,
        oidc_settings(&issuer),
        ApiLimits::default(),
        Some(playground),
    )
    .await;
    app.wait_for_keys().await;
    (t, issuer, app)
}

async fn get_page(app: &TestApp) -> (reqwest::header::HeaderMap, String) {
    let reply = app
        .http
        .get(app.url("/graphql"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("page");
    assert_eq!(reply.status(), 200);
    let headers = reply.headers().clone();
    (headers, reply.text().await.expect("html"))
}

#[test]
fn pinned_integrity_hashes_match_the_installed_files() {
    let dir = default_assets_dir();
    for asset in PINNED_ASSETS {
        let path = dir.join(asset.package).join(asset.path);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let integrity = format!("sha384-{}", STANDARD.encode(Sha384::digest(&bytes)));
        assert_eq!(
            integrity, asset.integrity,
            "{} changed: update PINNED_ASSETS",
            asset.name
        );
        let manifest = dir.join(asset.package).join("package.json");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(manifest).expect("package.json")).expect("json");
        assert_eq!(
            manifest["version"], asset.version,
            "{} is not the pinned version",
            asset.package
        );
    }
}

#[tokio::test]
async fn local_page_loads_only_from_its_own_origin_under_a_strict_csp() {
    let (_t, _issuer, app) = app_with_playground(local_assets()).await;
    let (headers, html) = get_page(&app).await;
    let csp = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("a CSP")
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        !csp.contains("http"),
        "local mode allows no remote origin: {csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no remote URL in the page"
    );
    for asset in PINNED_ASSETS {
        assert!(
            html.contains(asset.integrity),
            "{} loads without integrity",
            asset.name
        );
        let served = app
            .http
            .get(app.url(&format!("/playground/assets/{}", asset.name)))
            .send()
            .await
            .expect("asset");
        assert_eq!(served.status(), 200, "{}", asset.name);
    }
}

#[tokio::test]
async fn cdn_page_pins_versions_with_subresource_integrity() {
    let (_t, _issuer, app) = app_with_playground(AssetSource::Cdn).await;
    let (headers, html) = get_page(&app).await;
    for asset in PINNED_ASSETS {
        let url = format!(
            "{CDN_ORIGIN}/{}@{}/{}",
            asset.package, asset.version, asset.path
        );
        assert!(
            html.contains(&format!("{url}\" integrity=\"{}\"", asset.integrity)),
            "{url} is not pinned with SRI"
        );
    }
    let csp = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        csp.contains(&format!("script-src 'self' {CDN_ORIGIN}")),
        "{csp}"
    );
}

#[tokio::test]
async fn graphql_get_without_html_still_requires_a_token() {
    let (_t, _issuer, app) = app_with_playground(AssetSource::Cdn).await;
    let reply = app
        .http
        .get(app.url("/graphql?query=%7B%20me%20%7B%20id%20%7D%20%7D"))
        .send()
        .await
        .expect("reply");
    assert_eq!(reply.status(), 401);
}

#[tokio::test]
async fn a_headless_browser_runs_a_query_offline_in_the_playground() {
    let (_t, issuer, app) = app_with_playground(local_assets()).await;
    let token = issuer.token("alice").mint();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/playground.mjs");
    let base = format!("http://{}", app.addr);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args([base.as_str(), token.as_str(), "Dr. alice"])
            .output()
            .expect("running node (install Node.js; .ci/run installs the browser test's packages)")
    })
    .await
    .expect("browser task");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("playground browser test: {report}");
    assert!(
        output.status.success(),
        "the playground did not show the clinician's name, or requested a non-loopback URL:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(report.trim()).expect("one JSON line");
    assert_eq!(report["leaked"], serde_json::json!([]));
    assert_eq!(
        report["cspViolations"],
        serde_json::json!([]),
        "the page broke its own CSP"
    );
}
