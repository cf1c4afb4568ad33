//! The dev identity provider's browser login: the authorization-code flow with PKCE as a real
//! provider runs it, so the reference web app's login code is production code, and none of the
//! ways a flow is usually attacked work against it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::redirect::Policy;
use rowguard::dev::identity_provider::{self, DevIdentityProvider};
use rowguard::dev::seed::demo_users;
use serde_json::Value;
use sha2::{Digest, Sha256};

const GATEWAY: &str = "http://127.0.0.1:18080";
const REDIRECT: &str = "http://127.0.0.1:18080/app/callback";
const VERIFIER: &str = "a-long-random-pkce-verifier-of-at-least-forty-three-characters";

async fn provider() -> DevIdentityProvider {
    let dir = std::env::temp_dir().join(format!("rowguard-dev-login-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("key dir");
    let key = identity_provider::signing_key_pem(&dir.join("key.pem")).expect("key");
    identity_provider::start(0, &key, demo_users(), GATEWAY)
        .await
        .expect("provider")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The login form's fields for alice, with `changes` applied.
fn login_form(changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let challenge = challenge(VERIFIER);
    let mut form: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", "clinician-web"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile offline_access"),
        ("state", "s-123"),
        ("nonce", "n-456"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("subject", "alice"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (name, value) in changes {
        form.retain(|(k, _)| k != name);
        if !value.is_empty() {
            form.push(((*name).to_owned(), (*value).to_owned()));
        }
    }
    form
}

/// Signs alice in; returns where the provider sent the browser.
async fn sign_in(idp: &DevIdentityProvider, changes: &[(&str, &str)]) -> reqwest::Response {
    http()
        .post(format!("{}/authorize", idp.issuer))
        .form(&login_form(changes))
        .send()
        .await
        .expect("authorize")
}

/// The provider's login page, as the web app's redirect opens it, with `state`.
async fn login_page(idp: &DevIdentityProvider, state: &str) -> reqwest::Response {
    let challenge = challenge(VERIFIER);
    http()
        .get(format!("{}/authorize", idp.issuer))
        .query(&[
            ("response_type", "code"),
            ("client_id", "clinician-web"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", state),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .expect("page")
}

/// A response header's text, empty when absent.
fn header_of(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn query_param(location: &str, name: &str) -> Option<String> {
    let url = reqwest::Url::parse(location).expect("redirect URL");
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn code_for_alice(idp: &DevIdentityProvider) -> String {
    let reply = sign_in(idp, &[]).await;
    assert_eq!(reply.status(), 303);
    let location = reply.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("s-123"));
    query_param(&location, "code").expect("code")
}

async fn exchange(idp: &DevIdentityProvider, form: &[(&str, &str)]) -> (u16, Value) {
    let reply = http()
        .post(format!("{}/token", idp.issuer))
        .form(form)
        .send()
        .await
        .expect("token");
    (reply.status().as_u16(), reply.json().await.expect("json"))
}

async fn redeem(idp: &DevIdentityProvider, code: &str, verifier: &str) -> (u16, Value) {
    exchange(
        idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", "clinician-web"),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// One part of a JWT (0: header, 1: claims), read only to check what the provider wrote.
fn jwt_part(jwt: &str, part: usize) -> Value {
    let segment = jwt.split('.').nth(part).expect("JWT segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64")).expect("JSON")
}

fn claims(jwt: &str) -> Value {
    jwt_part(jwt, 1)
}

#[tokio::test]
async fn the_login_page_lists_every_demo_user_and_keeps_the_request() {
    let idp = provider().await;
    let page = login_page(&idp, "\"><script>").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    for user in demo_users() {
        assert!(
            html.contains(&format!("login-as-{}", user.subject)),
            "{html}"
        );
    }
    assert!(
        !html.contains("<script>"),
        "the state must be escaped: {html}"
    );
}

#[tokio::test]
async fn a_code_with_its_verifier_buys_an_access_token_for_the_gateway_and_an_id_token_for_the_app()
{
    let idp = provider().await;
    let code = code_for_alice(&idp).await;
    let (status, tokens) = redeem(&idp, &code, VERIFIER).await;
    assert_eq!(status, 200, "{tokens}");
    let access = claims(tokens["access_token"].as_str().expect("access_token"));
    assert_eq!(access["sub"], "alice");
    assert_eq!(access["aud"], "rowguard-dev");
    assert_eq!(access["client_id"], "clinician-web");
    let header = jwt_part(tokens["access_token"].as_str().expect("access_token"), 0);
    assert_eq!(header["typ"], "at+jwt");
    let id = claims(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(id["aud"], serde_json::json!(["clinician-web"]));
    assert_eq!(id["nonce"], "n-456");
    assert!(tokens["refresh_token"].is_string());
}

#[tokio::test]
async fn a_code_works_once_and_only_with_its_own_verifier() {
    let idp = provider().await;
    let code = code_for_alice(&idp).await;
    let (status, reply) = redeem(&idp, &code, &format!("{VERIFIER}-other")).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // A failed attempt burns the code too: a guessed verifier gets one try.
    let (status, _) = redeem(&idp, &code, VERIFIER).await;
    assert_eq!(status, 400);

    let code = code_for_alice(&idp).await;
    assert_eq!(redeem(&idp, &code, VERIFIER).await.0, 200);
    let (status, reply) = redeem(&idp, &code, VERIFIER).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn only_s256_pkce_is_accepted() {
    let idp = provider().await;
    for changes in [
        vec![
            ("code_challenge_method", "plain"),
            ("code_challenge", VERIFIER),
        ],
        vec![("code_challenge_method", ""), ("code_challenge", "")],
    ] {
        let reply = sign_in(&idp, &changes).await;
        assert_eq!(reply.status(), 303, "{changes:?}");
        let location = reply.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        assert_eq!(
            query_param(&location, "error").as_deref(),
            Some("invalid_request"),
            "{changes:?}: {location}"
        );
        assert_eq!(query_param(&location, "code"), None);
    }
}

#[tokio::test]
async fn an_unregistered_redirect_uri_is_refused_on_the_page_and_never_redirected_to() {
    let idp = provider().await;
    for uri in [
        "http://127.0.0.1:18080/app/callback/../../evil",
        "http://127.0.0.1:18080/app/callbackx",
        "http://evil.example/app/callback",
        "http://127.0.0.1:18080/app/callback?x=1",
    ] {
        let reply = sign_in(&idp, &[("redirect_uri", uri)]).await;
        assert_eq!(reply.status(), 400, "{uri}");
        assert!(reply.headers().get("location").is_none(), "{uri}");
    }
    let reply = sign_in(&idp, &[("client_id", "someone-else")]).await;
    assert_eq!(reply.status(), 400);
}

#[tokio::test]
async fn a_refresh_token_renews_the_session_once_then_is_spent() {
    let idp = provider().await;
    let code = code_for_alice(&idp).await;
    let (_, tokens) = redeem(&idp, &code, VERIFIER).await;
    let first = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let refresh = |token: String| {
        let idp = idp.clone();
        async move {
            exchange(
                &idp,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.as_str()),
                    ("client_id", "clinician-web"),
                ],
            )
            .await
        }
    };
    let (status, renewed) = refresh(first.clone()).await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(
        claims(renewed["access_token"].as_str().expect("access_token"))["sub"],
        "alice"
    );
    let second = renewed["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    assert_ne!(first, second);
    assert_eq!(
        refresh(first).await.0,
        400,
        "a used refresh token must be spent"
    );
    assert_eq!(refresh(second).await.0, 200);
}

#[tokio::test]
async fn logout_returns_only_to_a_registered_address() {
    let idp = provider().await;
    let logout = |target: &'static str| {
        let idp = idp.clone();
        async move {
            http()
                .get(format!("{}/logout", idp.issuer))
                .query(&[("post_logout_redirect_uri", target), ("state", "x")])
                .send()
                .await
                .expect("logout")
        }
    };
    let back = logout("http://127.0.0.1:18080/app/").await;
    assert_eq!(back.status(), 303);
    assert!(
        back.headers()["location"]
            .to_str()
            .expect("location")
            .starts_with("http://127.0.0.1:18080/app/?")
    );
    let elsewhere = logout("http://evil.example/").await;
    assert_eq!(elsewhere.status(), 200);
    assert!(elsewhere.headers().get("location").is_none());
}

#[tokio::test]
async fn a_code_without_a_verifier_or_for_another_client_buys_nothing() {
    let idp = provider().await;
    let code = code_for_alice(&idp).await;
    let (status, reply) = exchange(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "clinician-web"),
        ],
    )
    .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let code = code_for_alice(&idp).await;
    let (status, _) = exchange(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "rowguard-dev"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_challenge_that_is_not_a_sha256_is_refused() {
    let idp = provider().await;
    for challenge in [
        "short",
        "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        &"A".repeat(44),
    ] {
        let reply = sign_in(&idp, &[("code_challenge", challenge)]).await;
        let location = reply.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        assert_eq!(
            query_param(&location, "error").as_deref(),
            Some("invalid_request"),
            "{challenge}"
        );
    }
}

#[tokio::test]
async fn a_page_on_another_origin_cannot_use_the_providers_endpoints() {
    let idp = provider().await;
    for (method, path) in [
        (reqwest::Method::POST, "/token"),
        (reqwest::Method::POST, "/token/alice"),
        (reqwest::Method::GET, "/.well-known/openid-configuration"),
    ] {
        let reply = http()
            .request(reqwest::Method::OPTIONS, format!("{}{path}", idp.issuer))
            .header("origin", "http://evil.example")
            .header("access-control-request-method", method.as_str())
            .send()
            .await
            .expect("preflight");
        // An exact allow-list answers with its own origin (or nothing); the browser then refuses
        // the other origin. What must never come back is that origin or a wildcard.
        let allowed = reply.headers().get("access-control-allow-origin");
        assert!(
            allowed.is_none_or(|o| o != "http://evil.example" && o != "*"),
            "{path}: {allowed:?}"
        );
    }
    // The app's development server may log in, but not mint picker tokens without a login.
    let vite = |path: &'static str| {
        let idp = idp.clone();
        async move {
            http()
                .request(reqwest::Method::OPTIONS, format!("{}{path}", idp.issuer))
                .header("origin", "http://localhost:5173")
                .header("access-control-request-method", "POST")
                .send()
                .await
                .expect("preflight")
                .headers()
                .get("access-control-allow-origin")
                .cloned()
        }
    };
    assert_eq!(
        vite("/token").await.as_ref().and_then(|o| o.to_str().ok()),
        Some("http://localhost:5173")
    );
    assert!(
        vite("/token/alice")
            .await
            .is_none_or(|o| o != "http://localhost:5173"),
        "the no-login picker endpoint must not be callable from the app's dev server"
    );
}

#[tokio::test]
async fn the_provider_answers_only_requests_addressed_to_a_loopback_name() {
    // DNS rebinding: a web page points a name of its own at 127.0.0.1 and calls the provider
    // as its own origin. Listening on loopback alone does not stop that; the Host header does.
    let p = provider().await;
    let port = p.addr.port();
    let mint = |host: String| {
        http()
            .post(format!("{}/token/alice", p.issuer))
            .header("host", host)
            .send()
    };
    let rebound = mint(format!("rebound.attacker.example:{port}"))
        .await
        .expect("answer");
    assert_eq!(
        rebound.status().as_u16(),
        403,
        "a token minted for a rebound name"
    );
    let discovery = http()
        .get(format!("{}/.well-known/openid-configuration", p.issuer))
        .header("host", format!("rebound.attacker.example:{port}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(discovery.status().as_u16(), 403);
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let own = mint(host.clone()).await.expect("answer");
        assert_eq!(own.status().as_u16(), 200, "{host}");
    }
}

/// No other page may frame the sign-in (a framed button can be clicked through by a page the
/// user did not mean to sign in to), and no cache keeps it.
#[tokio::test]
async fn the_login_page_cannot_be_framed_and_is_never_cached() {
    let idp = provider().await;
    let page = login_page(&idp, "s").await;
    assert_eq!(page.status(), 200);
    let header = |name: &str| header_of(&page, name);
    assert_eq!(header("x-frame-options"), "DENY");
    let policy = header("content-security-policy");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy:?}");
    assert!(policy.contains("default-src 'none'"), "{policy:?}");
    assert_eq!(header("cache-control"), "no-store");
}

/// The reference app shows PHI and keeps its tokens in the browser: it runs only its own
/// scripts, talks only to the gateway and the provider, and no other page may frame it.
#[tokio::test]
async fn the_web_app_runs_only_its_own_scripts_and_cannot_be_framed() {
    let dist = std::env::temp_dir().join(format!("rowguard-web-app-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dist).expect("dist");
    std::fs::write(dist.join("index.html"), "<!doctype html><title>app</title>").expect("index");
    let app = rowguard::dev::web_app::routes(&dist, "http://127.0.0.1:18081/realms/dev");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });

    for path in ["/app/", "/app/callback", "/app/config.json"] {
        let response = http()
            .get(format!("http://{address}{path}"))
            .send()
            .await
            .expect("app");
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| header_of(&response, name);
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy:?}"
        );
        assert!(policy.contains("default-src 'self'"), "{path}: {policy:?}");
        assert!(
            policy.contains("connect-src 'self' http://127.0.0.1:18081"),
            "{path}: {policy:?}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
    }
    let _ = std::fs::remove_dir_all(&dist);
}
