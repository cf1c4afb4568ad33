//! The development OpenID provider: discovery, a JWKS, a browser login (authorization code with
//! PKCE, refresh tokens, logout: see [`authorization`]) and, for the playground's user picker, a
//! token endpoint that mints short-lived ID tokens for the demo users without a login. It listens
//! on loopback only and exists only in `rowguard dev`; the gateway verifies its tokens through
//! exactly the production OIDC path.

pub mod authorization;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{TimeDelta, Utc};
use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRsaPrivateSigningKey,
};
use openidconnect::{
    AdditionalClaims, Audience, ClientId, IdToken, IdTokenClaims, IssuerUrl, JsonWebKeyId, Nonce,
    PrivateSigningKey, StandardClaims, SubjectIdentifier,
};
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::seed::DemoUser;
use authorization::{Grants, WebClient};

/// The audience of the dev provider's tokens: the picker's ID tokens are issued to it, and the
/// web app's access tokens name it as their API.
pub const DEV_CLIENT_ID: &str = "rowguard-dev";
/// The `kid` of the provider's one signing key.
const KEY_ID: &str = "rowguard-dev-1";
/// How long a dev token lives.
const TOKEN_LIFETIME_MINUTES: i64 = 15;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoleClaims {
    roles: Vec<String>,
}

impl AdditionalClaims for RoleClaims {}

type DevIdToken = IdToken<
    RoleClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

struct Provider {
    issuer: IssuerUrl,
    key: CoreRsaPrivateSigningKey,
    /// The same key, for RFC 9068 access tokens (`typ: at+jwt`, which openidconnect's ID token
    /// type cannot write).
    access_key: jsonwebtoken::EncodingKey,
    users: Vec<DemoUser>,
    clients: Vec<WebClient>,
    grants: Grants,
}

impl Provider {
    /// An ID token for `user`, issued to `client_id`.
    fn id_token(
        &self,
        user: &DemoUser,
        client_id: &str,
        nonce: Option<String>,
    ) -> Result<String, String> {
        let now = Utc::now();
        let claims = IdTokenClaims::new(
            self.issuer.clone(),
            vec![Audience::new(client_id.to_owned())],
            now + TimeDelta::minutes(TOKEN_LIFETIME_MINUTES),
            now,
            StandardClaims::<CoreGenderClaim>::new(SubjectIdentifier::new(user.subject.into())),
            RoleClaims {
                roles: vec![user.role.as_str().to_owned()],
            },
        )
        .set_nonce(nonce.map(Nonce::new))
        .set_authorized_party(Some(ClientId::new(client_id.to_owned())));
        DevIdToken::new(
            claims,
            &self.key,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            None,
            None,
        )
        .map(|token| token.to_string())
        .map_err(|e| e.to_string())
    }

    /// An RFC 9068 access token for the gateway (audience [`DEV_CLIENT_ID`]), issued to
    /// `client_id`.
    fn access_token(
        &self,
        user: &DemoUser,
        client_id: &str,
        scope: &str,
    ) -> Result<String, String> {
        let now = Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(KEY_ID.into());
        let claims = json!({
            "iss": self.issuer.as_str(),
            "sub": user.subject,
            "aud": DEV_CLIENT_ID,
            "client_id": client_id,
            "scope": scope,
            "roles": [user.role.as_str()],
            "iat": now,
            "exp": now + TOKEN_LIFETIME_MINUTES * 60,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        jsonwebtoken::encode(&header, &claims, &self.access_key).map_err(|e| e.to_string())
    }
}

/// A running dev provider.
#[derive(Debug, Clone)]
pub struct DevIdentityProvider {
    pub issuer: String,
    pub addr: SocketAddr,
}

/// Reads the provider's signing key from `path`, generating (and keeping) one on first use so
/// tokens stay valid across restarts.
pub fn signing_key_pem(path: &Path) -> Result<String, String> {
    if let Ok(pem) = std::fs::read_to_string(path) {
        return Ok(pem);
    }
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(|e| e.to_string())?;
    let pem = key
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| e.to_string())?
        .to_string();
    std::fs::write(path, &pem).map_err(|e| format!("writing {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("restricting {}: {e}", path.display()))?;
    Ok(pem)
}

/// Starts the provider on `127.0.0.1:port` (0 for any free port). `gateway_origin` may call the
/// token endpoint from the playground's user picker.
pub async fn start(
    port: u16,
    key_pem: &str,
    users: Vec<DemoUser>,
    gateway_origin: &str,
) -> Result<DevIdentityProvider, String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("the dev identity provider cannot listen on 127.0.0.1:{port}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let issuer = format!("http://{addr}");
    let key = CoreRsaPrivateSigningKey::from_pem(key_pem, Some(JsonWebKeyId::new(KEY_ID.into())))?;
    let access_key =
        jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let client = WebClient::reference_app(gateway_origin);
    // The browser reads discovery and calls the token endpoint from the app's origins.
    let mut origins = vec![HeaderValue::from_str(gateway_origin).map_err(|e| e.to_string())?];
    origins.extend(
        client
            .redirect_uris
            .iter()
            .filter_map(|uri| openidconnect::url::Url::parse(uri).ok())
            .filter_map(|url| HeaderValue::from_str(&url.origin().ascii_serialization()).ok()),
    );
    origins.dedup();
    let provider = Arc::new(Provider {
        issuer: IssuerUrl::new(issuer.clone()).map_err(|e| e.to_string())?,
        key,
        access_key,
        users,
        clients: vec![client],
        grants: Grants::default(),
    });
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE]);
    // The picker's endpoint mints a token without a login: only the playground (the gateway's
    // own origin) may call it from a browser, not any page on another local port.
    let picker = Router::new().route("/token/{subject}", post(token)).layer(
        CorsLayer::new()
            .allow_origin(HeaderValue::from_str(gateway_origin).map_err(|e| e.to_string())?)
            .allow_methods([Method::POST]),
    );
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route(
            "/authorize",
            get(authorization::login_page).post(authorization::sign_in),
        )
        .route("/token", post(authorization::exchange))
        .route("/logout", get(authorization::logout))
        .layer(cors)
        .merge(picker)
        .with_state(provider)
        .layer(axum::middleware::from_fn_with_state(
            loopback_hosts(addr.port()),
            addressed_to_loopback,
        ));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "dev identity provider stopped");
        }
    });
    Ok(DevIdentityProvider { issuer, addr })
}

/// The `Host` values a request to this provider may carry.
fn loopback_hosts(port: u16) -> Arc<[String]> {
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .map(|host| format!("{host}:{port}"))
        .collect()
}

/// Answers only requests addressed to a loopback name. Listening on loopback does not keep other
/// web sites out: a page can point a name of its own at 127.0.0.1 (DNS rebinding) and then call
/// the provider as its own origin, CORS and all, and mint tokens without a login.
async fn addressed_to_loopback(
    State(allowed): State<Arc<[String]>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if allowed.contains(&host) {
        next.run(request).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "the dev identity provider answers requests addressed to 127.0.0.1 or localhost only",
        )
            .into_response()
    }
}

async fn discovery(State(p): State<Arc<Provider>>) -> Json<serde_json::Value> {
    let base = p.issuer.as_str();
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "end_session_endpoint": format!("{base}/logout"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["openid", "profile", "offline_access"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(p): State<Arc<Provider>>) -> Json<CoreJsonWebKeySet> {
    Json(CoreJsonWebKeySet::new(vec![p.key.as_verification_key()]))
}

/// `POST /token/{subject}`: an ID token for a demo user (there is no login: development only).
async fn token(State(p): State<Arc<Provider>>, UrlPath(subject): UrlPath<String>) -> Response {
    let Some(user) = p.users.iter().find(|u| u.subject == subject) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "unknown demo user" })),
        )
            .into_response();
    };
    match p.id_token(user, DEV_CLIENT_ID, None) {
        // A token is a credential: no cache may keep it (RFC 6749 §5.1).
        Ok(token) => (
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            Json(json!({
                "id_token": token,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME_MINUTES * 60,
            })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "minting a dev token failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
