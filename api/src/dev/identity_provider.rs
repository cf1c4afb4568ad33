//! The development OpenID provider: discovery, a JWKS and a token endpoint that mints
//! short-lived ID tokens for the demo users. It listens on loopback only and exists only in
//! `rowguard dev`; the gateway verifies its tokens through exactly the production OIDC path.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{TimeDelta, Utc};
use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRsaPrivateSigningKey,
};
use openidconnect::{
    AdditionalClaims, Audience, IdToken, IdTokenClaims, IssuerUrl, JsonWebKeyId, PrivateSigningKey,
    StandardClaims, SubjectIdentifier,
};
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::cors::CorsLayer;

use super::seed::DemoUser;

/// The audience (client id) of the dev provider's tokens.
pub const DEV_CLIENT_ID: &str = "rowguard-dev";
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
    users: Vec<DemoUser>,
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
    let key = CoreRsaPrivateSigningKey::from_pem(
        key_pem,
        Some(JsonWebKeyId::new("rowguard-dev-1".into())),
    )?;
    let provider = Arc::new(Provider {
        issuer: IssuerUrl::new(issuer.clone()).map_err(|e| e.to_string())?,
        key,
        users,
    });
    let cors = CorsLayer::new()
        .allow_origin(HeaderValue::from_str(gateway_origin).map_err(|e| e.to_string())?)
        .allow_methods([Method::POST]);
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token/{subject}", post(token))
        .layer(cors)
        .with_state(provider);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "dev identity provider stopped");
        }
    });
    Ok(DevIdentityProvider { issuer, addr })
}

async fn discovery(State(p): State<Arc<Provider>>) -> Json<serde_json::Value> {
    let base = p.issuer.as_str();
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["id_token"],
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
    let now = Utc::now();
    let claims = IdTokenClaims::new(
        p.issuer.clone(),
        vec![Audience::new(DEV_CLIENT_ID.into())],
        now + TimeDelta::minutes(TOKEN_LIFETIME_MINUTES),
        now,
        StandardClaims::<CoreGenderClaim>::new(SubjectIdentifier::new(user.subject.into())),
        RoleClaims {
            roles: vec![user.role.as_str().to_owned()],
        },
    );
    match DevIdToken::new(
        claims,
        &p.key,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        None,
        None,
    ) {
        Ok(token) => Json(json!({
            "id_token": token.to_string(),
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_MINUTES * 60,
        }))
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "minting a dev token failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
