//! The dev provider's browser login: the authorization-code flow with PKCE (S256 only), a login
//! page listing the demo users, refresh tokens that rotate, and RP-initiated logout. Apps log in
//! here exactly as they would at Keycloak or Okta, so the reference web app's login code is the
//! production code.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Provider, TOKEN_LIFETIME_MINUTES};

/// The client id of the reference web app (`examples/clinician-web`).
pub const WEB_CLIENT_ID: &str = "clinician-web";
/// How long an authorization code may wait for its exchange.
const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long a session may be renewed with refresh tokens without logging in again.
const REFRESH_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// A browser app allowed to log in, with the exact URIs it may be sent back to.
#[derive(Debug, Clone)]
pub struct WebClient {
    pub id: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_uris: Vec<String>,
}

impl WebClient {
    /// The reference web app, served by the dev gateway at `/app/` or by Vite on port 5173.
    pub fn reference_app(gateway_origin: &str) -> Self {
        let origins = [gateway_origin, "http://localhost:5173"];
        Self {
            id: WEB_CLIENT_ID.to_owned(),
            redirect_uris: origins
                .iter()
                .map(|o| format!("{o}/app/callback"))
                .collect(),
            post_logout_uris: origins.iter().map(|o| format!("{o}/app/")).collect(),
        }
    }
}

/// Codes and refresh tokens in flight. Both are single use: a replayed code or an old refresh
/// token finds nothing.
#[derive(Debug, Default)]
pub struct Grants {
    codes: Mutex<HashMap<String, PendingCode>>,
    refresh: Mutex<HashMap<String, Session>>,
}

#[derive(Debug)]
struct PendingCode {
    session: Session,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct Session {
    client_id: String,
    subject: String,
    scope: String,
    expires: Instant,
}

/// What `/authorize` receives, as query parameters (the page) or as the login form's fields.
#[derive(Debug, Deserialize)]
pub(super) struct AuthorizationRequest {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    /// Only in the login form: the demo user who was picked.
    subject: Option<String>,
}

/// A request that may be answered on its redirect URI (the client and the URI are known).
struct Checked<'a> {
    redirect_uri: &'a str,
    client_id: &'a str,
}

impl AuthorizationRequest {
    /// Checks the client and the redirect URI first: an unknown pair is answered here, never
    /// redirected (that would make the provider an open redirector). Other mistakes go back to
    /// the client as `error=` on its own redirect URI.
    fn check<'a>(&'a self, p: &'a Provider) -> Result<Checked<'a>, Box<Response>> {
        let client = self
            .client_id
            .as_deref()
            .and_then(|id| p.clients.iter().find(|c| c.id == id))
            .ok_or_else(|| Box::new(page_error("unknown client_id")))?;
        let redirect_uri = self
            .redirect_uri
            .as_deref()
            .filter(|uri| client.redirect_uris.iter().any(|ok| ok == uri))
            .ok_or_else(|| {
                Box::new(page_error("redirect_uri is not registered for this client"))
            })?;
        let checked = Checked {
            redirect_uri,
            client_id: &client.id,
        };
        let refuse = |error: &str, description: &str| {
            Err(Box::new(redirect_with(
                redirect_uri,
                &[
                    ("error", error),
                    ("error_description", description),
                    ("state", self.state.as_deref().unwrap_or("")),
                ],
            )))
        };
        if self.response_type.as_deref() != Some("code") {
            return refuse("unsupported_response_type", "only response_type=code");
        }
        if !scopes(self.scope.as_deref()).any(|s| s == "openid") {
            return refuse("invalid_scope", "scope must include openid");
        }
        if self.code_challenge_method.as_deref() != Some("S256") {
            return refuse(
                "invalid_request",
                "PKCE with code_challenge_method=S256 is required",
            );
        }
        match self.code_challenge.as_deref() {
            Some(c) if c.len() == 43 && URL_SAFE_NO_PAD.decode(c).is_ok() => Ok(checked),
            _ => refuse(
                "invalid_request",
                "code_challenge must be a base64url SHA-256",
            ),
        }
    }
}

fn scopes(scope: Option<&str>) -> impl Iterator<Item = &str> {
    scope.unwrap_or("").split_ascii_whitespace()
}

/// `GET /authorize`: the login page, one button per demo user.
pub(super) async fn login_page(
    State(p): State<std::sync::Arc<Provider>>,
    Query(request): Query<AuthorizationRequest>,
) -> Response {
    if let Err(refused) = request.check(&p) {
        return *refused;
    }
    let hidden = [
        ("response_type", &request.response_type),
        ("client_id", &request.client_id),
        ("redirect_uri", &request.redirect_uri),
        ("scope", &request.scope),
        ("state", &request.state),
        ("nonce", &request.nonce),
        ("code_challenge", &request.code_challenge),
        ("code_challenge_method", &request.code_challenge_method),
    ]
    .iter()
    .filter_map(|(name, value)| {
        value.as_deref().map(|v| {
            format!(
                r#"<input type="hidden" name="{name}" value="{}">"#,
                escape(v)
            )
        })
    })
    .collect::<String>();
    let buttons = p
        .users
        .iter()
        .map(|u| {
            format!(
                r#"<li><button name="subject" value="{s}" data-testid="login-as-{s}">{} — {}</button></li>"#,
                escape(u.display_name),
                u.role,
                s = escape(u.subject)
            )
        })
        .collect::<String>();
    let page = Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Rowguard dev sign-in</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto}}li{{list-style:none;margin:.5rem 0}}button{{width:100%;padding:.6rem;font-size:1rem;text-align:left}}</style></head>\
         <body><h1>Sign in (development)</h1><p>This is <code>rowguard dev</code>'s identity provider: \
         pick a demo user. There is no password, which is why it only listens on loopback.</p>\
         <form method=\"post\" action=\"authorize\">{hidden}<ul>{buttons}</ul></form></body></html>"
    ));
    // No other page may frame it: a framed sign-in could be clicked through by a page the user
    // did not mean to sign in to.
    crate::routes::playground::with_security_headers(
        ([(axum::http::header::CACHE_CONTROL, "no-store")], page).into_response(),
        Some(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    )
}

/// `POST /authorize`: the picked user is signed in; the client gets a code on its redirect URI.
pub(super) async fn sign_in(
    State(p): State<std::sync::Arc<Provider>>,
    Form(request): Form<AuthorizationRequest>,
) -> Response {
    let checked = match request.check(&p) {
        Ok(checked) => checked,
        Err(refused) => return *refused,
    };
    let Some(user) = request
        .subject
        .as_deref()
        .and_then(|s| p.users.iter().find(|u| u.subject == s))
    else {
        return page_error("unknown demo user");
    };
    let code = random_token();
    let now = Instant::now();
    let pending = PendingCode {
        session: Session {
            client_id: checked.client_id.to_owned(),
            subject: user.subject.to_owned(),
            scope: request.scope.clone().unwrap_or_default(),
            expires: now + REFRESH_LIFETIME,
        },
        redirect_uri: checked.redirect_uri.to_owned(),
        code_challenge: request.code_challenge.clone().unwrap_or_default(),
        nonce: request.nonce.clone(),
        expires: now + CODE_LIFETIME,
    };
    {
        let mut codes = p.grants.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, c| c.expires > now);
        codes.insert(code.clone(), pending);
    }
    redirect_with(
        checked.redirect_uri,
        &[
            ("code", &code),
            ("state", request.state.as_deref().unwrap_or("")),
        ],
    )
}

/// What the token endpoint receives (form-encoded; public clients, no secret).
#[derive(Debug, Deserialize)]
pub(super) struct TokenRequest {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
}

/// `POST /token`: a code (with its PKCE verifier) or a refresh token for a new set of tokens.
pub(super) async fn exchange(
    State(p): State<std::sync::Arc<Provider>>,
    Form(request): Form<TokenRequest>,
) -> Response {
    let now = Instant::now();
    let (session, nonce) = match request.grant_type.as_str() {
        "authorization_code" => {
            let pending = request.code.as_deref().and_then(|code| {
                let mut codes = p.grants.codes.lock().unwrap_or_else(|e| e.into_inner());
                codes.remove(code)
            });
            let Some(pending) = pending.filter(|c| c.expires > now) else {
                return token_error("invalid_grant", "unknown, used or expired code");
            };
            if request.client_id.as_deref() != Some(pending.session.client_id.as_str())
                || request.redirect_uri.as_deref() != Some(pending.redirect_uri.as_str())
            {
                return token_error("invalid_grant", "client_id or redirect_uri differ");
            }
            let verified = request.code_verifier.as_deref().is_some_and(|v| {
                (43..=128).contains(&v.len())
                    && URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()))
                        == pending.code_challenge
            });
            if !verified {
                return token_error("invalid_grant", "code_verifier does not match");
            }
            (pending.session, pending.nonce)
        }
        "refresh_token" => {
            let session = request.refresh_token.as_deref().and_then(|token| {
                let mut refresh = p.grants.refresh.lock().unwrap_or_else(|e| e.into_inner());
                refresh.remove(token)
            });
            let Some(session) = session.filter(|s| s.expires > now) else {
                return token_error("invalid_grant", "unknown, used or expired refresh token");
            };
            if request.client_id.as_deref() != Some(session.client_id.as_str()) {
                return token_error("invalid_grant", "refresh token of another client");
            }
            (session, None)
        }
        _ => {
            return token_error(
                "unsupported_grant_type",
                "authorization_code or refresh_token",
            );
        }
    };
    let Some(user) = p.users.iter().find(|u| u.subject == session.subject) else {
        return token_error("invalid_grant", "unknown user");
    };
    let access_token = match p.access_token(user, &session.client_id, &session.scope) {
        Ok(token) => token,
        Err(e) => return mint_failed(&e),
    };
    let id_token = match p.id_token(user, &session.client_id, nonce) {
        Ok(token) => token,
        Err(e) => return mint_failed(&e),
    };
    let mut reply = json!({
        "access_token": access_token,
        "id_token": id_token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_MINUTES * 60,
        "scope": session.scope,
    });
    if scopes(Some(&session.scope)).any(|s| s == "offline_access") {
        let refresh_token = random_token();
        reply["refresh_token"] = json!(refresh_token);
        let mut refresh = p.grants.refresh.lock().unwrap_or_else(|e| e.into_inner());
        refresh.retain(|_, s| s.expires > now);
        refresh.insert(refresh_token, session);
    }
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(reply),
    )
        .into_response()
}

/// What `/logout` receives (OpenID Connect RP-initiated logout).
#[derive(Debug, Deserialize)]
pub(super) struct LogoutRequest {
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

/// `GET /logout`: back to a registered post-logout URI, or a plain page. (Dev sessions live in
/// the app; there is no provider-side login session to end.)
pub(super) async fn logout(
    State(p): State<std::sync::Arc<Provider>>,
    Query(request): Query<LogoutRequest>,
) -> Response {
    match request.post_logout_redirect_uri.as_deref().filter(|uri| {
        p.clients
            .iter()
            .any(|c| c.post_logout_uris.iter().any(|ok| ok == uri))
    }) {
        Some(uri) => match request.state.as_deref() {
            Some(state) => redirect_with(uri, &[("state", state)]),
            None => Redirect::to(uri).into_response(),
        },
        None => Html("<!doctype html><title>Signed out</title><p>Signed out.</p>").into_response(),
    }
}

fn redirect_with(uri: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match openidconnect::url::Url::parse(uri) {
        Ok(url) => url,
        Err(_) => return page_error("redirect_uri is not a URL"),
    };
    {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in params {
            pairs.append_pair(name, value);
        }
    }
    Redirect::to(url.as_str()).into_response()
}

fn page_error(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html(format!(
            "<!doctype html><title>Sign-in error</title><p>{}</p>",
            escape(message)
        )),
    )
        .into_response()
}

fn token_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn mint_failed(error: &str) -> Response {
    tracing::error!(error, "minting a dev token failed");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

/// 256 random bits, base64url: codes and refresh tokens.
fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
