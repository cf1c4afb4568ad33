//! The GraphiQL playground: pinned, integrity-checked files embedded in the binary and a strict
//! Content-Security-Policy, usable in a real browser with no network beyond loopback, from a
//! binary run anywhere.

use std::path::Path;
use std::process::Command;

use rowguard::playground::{AssetSource, CDN_ORIGIN, PINNED_ASSETS, embedded};
use rowguard::settings::PlaygroundAssets;
use rowguard_tests::TestDb;
use rowguard_tests::app::TestApp;
use rowguard_tests::fixtures::enroll_at;
use rowguard_tests::issuer::TestIssuer;

async fn app_with_playground(source: AssetSource) -> (TestDb, TestIssuer, TestApp) {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    enroll_at(&t.owner().await, issuer.url(), "alice").await;
    let app = TestApp::start_adjusted(&t, &issuer, |s| {
        s.api.playground = true;
        s.api.playground_assets = match source {
            AssetSource::Embedded => PlaygroundAssets::Embedded,
            AssetSource::Cdn => PlaygroundAssets::Cdn,
        };
    })
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
fn the_embedded_files_are_the_versions_the_lockfile_pins() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/playground/package-lock.json");
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lock).expect("package-lock.json")).expect("json");
    for asset in PINNED_ASSETS {
        assert_eq!(
            lock["packages"][format!("node_modules/{}", asset.package)]["version"],
            asset.version,
            "{} is not the version the lockfile pins",
            asset.package
        );
        assert!(
            embedded(asset.name).is_some(),
            "{} is not embedded",
            asset.name
        );
    }
}

#[tokio::test]
async fn local_page_loads_only_from_its_own_origin_under_a_strict_csp() {
    let (_t, _issuer, app) = app_with_playground(AssetSource::Embedded).await;
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
        assert_eq!(
            served.bytes().await.expect("body").as_ref(),
            embedded(asset.name).expect("embedded").as_ref(),
            "{} is served from the binary",
            asset.name
        );
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
    let (_t, issuer, app) = app_with_playground(AssetSource::Embedded).await;
    let token = issuer.token("alice").mint();
    let script = rowguard_tests::browser::script("playground.mjs");
    let base = format!("http://{}", app.addr);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args([base.as_str(), token.as_str(), "Dr. alice"])
            .output()
            .expect("running node (install Node.js)")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_run_outside_the_source_tree_serves_the_playground_itself() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let port = rowguard::dev::postgres::free_port().expect("port");
    let elsewhere = std::env::temp_dir().join(format!("rowguard-elsewhere-{}", std::process::id()));
    std::fs::create_dir_all(&elsewhere).expect("dir");
    let mut server = rowguard_tests::process::StopOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rowguard-cli"))
            .arg("serve")
            .current_dir(&elsewhere)
            .env("DATABASE_URL", t.gateway_url())
            .env("ROWGUARD_ROLE_PREFIX", "rgtest")
            .env("ROWGUARD_OIDC_ISSUER", issuer.url())
            .env(
                "ROWGUARD_OIDC_AUDIENCES",
                rowguard_tests::issuer::SPA_CLIENT_ID,
            )
            .env("ROWGUARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("ROWGUARD_METRICS_LISTEN", "127.0.0.1:0")
            .env("ROWGUARD_PLAYGROUND", "true")
            .env("ROWGUARD_LOG", "warn")
            .spawn()
            .expect("rowguard serve"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        rowguard_tests::process::ready_within(&http, &base, std::time::Duration::from_secs(30))
            .await,
        "serve never became ready"
    );
    let page = http
        .get(format!("{base}/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(
        !page.contains("https://"),
        "the page names no remote origin"
    );
    for asset in PINNED_ASSETS {
        let served = http
            .get(format!("{base}/playground/assets/{}", asset.name))
            .send()
            .await
            .expect("asset");
        assert_eq!(served.status(), 200, "{}", asset.name);
        assert_eq!(
            served.bytes().await.expect("bytes").as_ref(),
            embedded(asset.name).expect("embedded").as_ref()
        );
    }
    rowguard_tests::process::stop(
        &mut server.0,
        rowguard_tests::process::Signal::SIGTERM,
        std::time::Duration::from_secs(10),
    );
    let _ = std::fs::remove_dir_all(&elsewhere);
}
