//! A real OpenID provider for tests: an HTTP server on loopback serving discovery and a JWKS,
//! holding real RSA and EC keys, minting tokens with any claims, rotating keys and going down
//! on request. Rowguard reaches it only over HTTP, exactly as it reaches Keycloak or Okta.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

/// The audience of ID tokens (the SPA's client id).
pub const SPA_CLIENT_ID: &str = "rowguard-spa";
/// The audience of access tokens (the API).
pub const API_AUDIENCE: &str = "https://api.rowguard.test";

/// A private key the issuer can sign with.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
    /// The public half as PEM (for forging HS256 tokens with it as the "secret").
    pub public_pem: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

/// Generates a key with the `openssl` command line (fast, and no key material in the repo).
pub fn generate_key(kid: &str, alg: Algorithm) -> SigningKey {
    let dir = std::env::temp_dir().join(format!("rowguard-keys-{}-{kid}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("key directory");
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let genpkey: &[&str] = match alg {
        Algorithm::RS256 | Algorithm::PS256 => {
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        }
        Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        Algorithm::EdDSA => &["-algorithm", "ED25519"],
        other => panic!("the test issuer does not generate {other:?} keys"),
    };
    let ok = Command::new("openssl")
        .arg("genpkey")
        .args(genpkey)
        .arg("-out")
        .arg(&private)
        .output()
        .expect("running openssl (install the openssl package)")
        .status
        .success();
    assert!(ok, "openssl genpkey failed");
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .expect("running openssl")
        .status
        .success();
    assert!(ok, "openssl pkey -pubout failed");
    let private_pem = std::fs::read(&private).expect("private key");
    let public_pem = std::fs::read(&public).expect("public key");
    let _ = std::fs::remove_dir_all(&dir);

    let encoding = match alg {
        Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&private_pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&private_pem),
        _ => EncodingKey::from_ed_pem(&private_pem),
    }
    .expect("parsing the generated key");
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("public JWK of the key");
    jwk.common.key_id = Some(kid.to_owned());
    SigningKey {
        kid: kid.to_owned(),
        alg,
        encoding,
        jwk,
        public_pem,
    }
}

/// A few keys generated once per test process and shared by every issuer instance.
pub fn shared_key(name: &str) -> SigningKey {
    static KEYS: OnceLock<Vec<SigningKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        vec![
            generate_key("rsa-1", Algorithm::RS256),
            generate_key("rsa-2", Algorithm::RS256),
            generate_key("ec-1", Algorithm::ES256),
            generate_key("rsa-rogue", Algorithm::RS256),
        ]
    })
    .iter()
    .find(|k| k.kid == name)
    .cloned()
    .unwrap_or_else(|| panic!("no shared test key {name}"))
}

struct Inner {
    url: String,
    up: AtomicBool,
    published: Mutex<Vec<Jwk>>,
    signing: Mutex<SigningKey>,
    jwks_fetches: AtomicUsize,
    /// How long the JWKS endpoint takes to answer, in milliseconds.
    jwks_delay_ms: AtomicU64,
}

/// A running test issuer.
#[derive(Clone)]
pub struct TestIssuer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("url", &self.inner.url)
            .finish()
    }
}

impl TestIssuer {
    /// Starts serving on a free loopback port, publishing `rsa-1` and `ec-1`, signing with `rsa-1`.
    pub async fn start() -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind issuer");
        let addr: SocketAddr = listener.local_addr().expect("issuer address");
        let rsa = shared_key("rsa-1");
        let ec = shared_key("ec-1");
        let inner = Arc::new(Inner {
            url: format!("http://{addr}"),
            up: AtomicBool::new(true),
            published: Mutex::new(vec![rsa.jwk.clone(), ec.jwk.clone()]),
            signing: Mutex::new(rsa),
            jwks_fetches: AtomicUsize::new(0),
            jwks_delay_ms: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestIssuer { inner }
    }

    /// The issuer URL, exactly as its tokens' `iss` spells it.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// While down, every endpoint answers 503, as an unreachable provider would fail.
    pub fn set_up(&self, up: bool) {
        self.inner.up.store(up, Ordering::SeqCst);
    }

    /// Makes the JWKS endpoint answer only after `delay`, as a slow provider does.
    pub fn set_jwks_delay(&self, delay: std::time::Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.inner.jwks_delay_ms.store(millis, Ordering::SeqCst);
    }

    /// How many times the JWKS was served.
    pub fn jwks_fetches(&self) -> usize {
        self.inner.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Publishes exactly these keys.
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.inner.published.lock().expect("issuer lock") =
            keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// Signs new tokens with `key` by default.
    pub fn sign_with(&self, key: SigningKey) {
        *self.inner.signing.lock().expect("issuer lock") = key;
    }

    /// A token builder with sensible claims: issued now, valid 5 minutes, for the SPA.
    pub fn token(&self, subject: &str) -> TokenBuilder {
        let now = chrono::Utc::now().timestamp();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.inner.url));
        claims.insert("sub".into(), json!(subject));
        claims.insert("aud".into(), json!(SPA_CLIENT_ID));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + 300));
        claims.insert("roles".into(), json!(["clinician"]));
        TokenBuilder {
            claims,
            key: self.inner.signing.lock().expect("issuer lock").clone(),
            typ: Some("JWT".into()),
            kid: None,
        }
    }
}

/// Builds one token; every claim and header field can be overridden.
#[derive(Clone)]
pub struct TokenBuilder {
    claims: Map<String, Value>,
    key: SigningKey,
    typ: Option<String>,
    kid: Option<String>,
}

impl std::fmt::Debug for TokenBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBuilder")
            .field("claims", &self.claims)
            .finish()
    }
}

impl TokenBuilder {
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    pub fn roles(self, roles: &[&str]) -> Self {
        self.claim("roles", json!(roles))
    }

    /// Issued `offset` seconds from now, valid for `lifetime` seconds.
    pub fn times(self, offset: i64, lifetime: i64) -> Self {
        let iat = chrono::Utc::now().timestamp() + offset;
        self.claim("iat", json!(iat))
            .claim("exp", json!(iat + lifetime))
    }

    /// An RFC 9068 access token for the API.
    pub fn access_token(mut self) -> Self {
        self.typ = Some("at+jwt".into());
        self.claim("aud", json!(API_AUDIENCE))
            .claim("client_id", json!(SPA_CLIENT_ID))
    }

    /// Overrides the `typ` header (`None`: no `typ`, as Okta's access tokens).
    pub fn typ(mut self, typ: Option<&str>) -> Self {
        self.typ = typ.map(str::to_owned);
        self
    }

    pub fn signed_by(mut self, key: SigningKey) -> Self {
        self.key = key;
        self
    }

    /// Overrides the `kid` header (the signature still uses the builder's key).
    pub fn kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.into());
        self
    }

    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    pub fn mint(&self) -> String {
        let mut header = Header::new(self.key.alg);
        header.kid = Some(self.kid.clone().unwrap_or_else(|| self.key.kid.clone()));
        header.typ = self.typ.clone();
        jsonwebtoken::encode(&header, &self.claims, &self.key.encoding)
            .expect("signing a test token")
    }

    /// Signs with HS256 using the signing key's *public* key as the secret (a classic forgery).
    pub fn mint_hs256_with_public_key(&self) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.key.kid.clone());
        jsonwebtoken::encode(
            &header,
            &self.claims,
            &EncodingKey::from_secret(&self.key.public_pem),
        )
        .expect("signing the forged token")
    }
}

async fn discovery(State(inner): State<Arc<Inner>>) -> Response {
    if !inner.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({
        "issuer": inner.url,
        "authorization_endpoint": format!("{}/authorize", inner.url),
        "token_endpoint": format!("{}/token", inner.url),
        "jwks_uri": format!("{}/jwks", inner.url),
        "response_types_supported": ["code", "id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
    .into_response()
}

async fn jwks(State(inner): State<Arc<Inner>>) -> Response {
    if !inner.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let delay = inner.jwks_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    inner.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = inner.published.lock().expect("issuer lock").clone();
    Json(JwkSet { keys }).into_response()
}
