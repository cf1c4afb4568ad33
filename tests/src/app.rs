//! Rowguard served on a real loopback socket for one test, wired to a test database and a
//! test issuer through the same code `rowguard serve` uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rowguard::auth::{Authenticator, OidcSettings, keep_fresh};
use rowguard::config::AuditSettings;
use rowguard::db::Database;
use rowguard::graphql::{ApiLimits, build_schema};
use rowguard::routes;
use rowguard::routes::playground::Playground;
use rowguard::state::AppState;
use serde_json::{Value, json};

use crate::TestDb;
use crate::issuer::{API_AUDIENCE, SPA_CLIENT_ID, TestIssuer};

/// The browser origin test gateways allow (CORS).
pub const ALLOWED_ORIGIN: &str = "https://clinic.rowguard.test";

/// A running gateway.
#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served (its own listener, as in `rowguard serve`).
    pub metrics_addr: SocketAddr,
    pub db: Database,
    pub auth: Arc<Authenticator>,
    pub http: reqwest::Client,
    /// Where this gateway's audit sealer keeps its key and checkpoints.
    pub audit: TestAudit,
    pub counters: rowguard::metrics::SharedCounters,
}

/// A signing key and checkpoint directory of one test's audit sealer, in a directory of its own.
#[derive(Debug, Clone)]
pub struct TestAudit {
    pub settings: AuditSettings,
    /// The public half of the signing key (what `rowguard audit verify --public-key` takes).
    pub public_key: PathBuf,
    pub checkpoint_dir: PathBuf,
}

impl TestAudit {
    /// A new key and an empty checkpoint directory; the sealer runs every 20 ms and signs a
    /// checkpoint at most every 200 ms, so specs see their events sealed quickly.
    pub fn new() -> TestAudit {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rowguard-test-audit-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("audit test directory");
        let key = dir.join("signing-key.pem");
        rowguard::audit::keys::write_new_key(&key).expect("audit signing key");
        let checkpoint_dir = dir.join("checkpoints");
        TestAudit {
            settings: AuditSettings {
                signing_key: Some(key),
                checkpoint_dir: Some(checkpoint_dir.clone()),
                checkpoint_secs: 1,
                seal_interval_ms: 20,
                ..AuditSettings::default()
            },
            public_key: dir.join("signing-key.pem.pub"),
            checkpoint_dir,
        }
    }
}

impl Default for TestAudit {
    fn default() -> Self {
        Self::new()
    }
}

/// OIDC settings that trust `issuer` for the SPA and API audiences.
pub fn oidc_settings(issuer: &TestIssuer) -> OidcSettings {
    OidcSettings::new(issuer.url(), &[SPA_CLIENT_ID, API_AUDIENCE])
}

impl TestApp {
    /// Serves with default settings and waits until the issuer's keys are loaded.
    pub async fn start(t: &TestDb, issuer: &TestIssuer) -> TestApp {
        let app = Self::start_with(t, oidc_settings(issuer), ApiLimits::default()).await;
        app.wait_for_keys().await;
        app
    }

    /// Serves with the given settings; does not wait for keys.
    pub async fn start_with(t: &TestDb, oidc: OidcSettings, limits: ApiLimits) -> TestApp {
        Self::start_full(t, oidc, limits, None).await
    }

    /// Serves with the given settings and playground; does not wait for keys.
    pub async fn start_full(
        t: &TestDb,
        oidc: OidcSettings,
        limits: ApiLimits,
        playground: Option<Playground>,
    ) -> TestApp {
        // A lazy pool: no connection exists until a request needs one, so tests can assert
        // that rejected requests never opened any. The sealer has a connection of its own, as
        // in `rowguard serve`.
        let db = t.gateway(4).await;
        let sealer = t.sealer().await;
        Self::start_on(db, oidc, limits, playground, Some(sealer)).await
    }

    /// Serves `db` (e.g. with custom limits); does not wait for keys. With `sealer`, audit
    /// events are sealed through that database as `rowguard serve` does.
    pub async fn start_on(
        db: Database,
        oidc: OidcSettings,
        limits: ApiLimits,
        playground: Option<Playground>,
        sealer: Option<Database>,
    ) -> TestApp {
        // Server logs show with a failing test's output; ROWGUARD_TEST_LOG=debug for more.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("ROWGUARD_TEST_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let counters = rowguard::metrics::SharedCounters::default();
        let audit = TestAudit::new();
        if let Some(sealer) = &sealer
            && limits.audit
        {
            rowguard::server::start_sealer(sealer, &audit.settings, counters.sealer.clone())
                .expect("starting the audit sealer");
        }
        let auth = Arc::new(Authenticator::new(&oidc, &counters).expect("valid OIDC settings"));
        tokio::spawn(keep_fresh(auth.key_store(), oidc.jwks_refresh()));
        let state = AppState {
            db: db.clone(),
            auth: auth.clone(),
            schema: build_schema(limits),
            limits,
            cors_origins: vec![ALLOWED_ORIGIN.to_owned()],
            playground,
            metrics: Arc::new(rowguard::metrics::Metrics::new(counters.clone())),
            concurrency: rowguard::quota::ConcurrencyLimiter::new(limits.concurrency_per_person),
        };
        // The repository's client operations are the known ones (what a trusted-documents
        // manifest names in production): they get metric labels of their own.
        state.metrics.set_known_operations(operation_names());
        let metrics_addr =
            rowguard::server::serve_metrics("127.0.0.1:0".parse().expect("addr"), state.clone())
                .await
                .expect("metrics listener");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("gateway address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, routes::app(state)).await;
        });
        TestApp {
            addr,
            metrics_addr,
            db,
            auth,
            http: reqwest::Client::new(),
            audit,
            counters,
        }
    }

    pub async fn wait_for_keys(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.auth.is_ready() {
            assert!(
                Instant::now() < deadline,
                "the gateway never loaded the issuer's keys"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The HTTP status of `/readyz` now.
    pub async fn readiness(&self) -> u16 {
        self.http
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            .as_u16()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The Prometheus endpoint.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr)
    }

    /// POSTs a GraphQL operation with `token` as the bearer token.
    pub async fn graphql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> GraphqlReply {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        GraphqlReply::from(request.send().await.expect("gateway answers")).await
    }
}

/// The names of the client operations in `tests/operations/`.
pub fn operation_names() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("operations");
    std::fs::read_dir(&dir)
        .expect("tests/operations")
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "graphql")
                .then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect()
}

/// The text of a client operation in `tests/operations/<name>.graphql`.
pub fn operation(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("operations")
        .join(format!("{name}.graphql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

impl TestApp {
    /// Runs the named client operation from `tests/operations/`.
    pub async fn operation(&self, token: &str, name: &str, variables: Value) -> GraphqlReply {
        let query = operation(name);
        let reply = self
            .http
            .post(self.url("/graphql"))
            .bearer_auth(token)
            .json(&json!({ "query": query, "operationName": name, "variables": variables }))
            .send()
            .await
            .expect("gateway answers");
        GraphqlReply::from(reply).await
    }
}

/// An HTTP reply to a GraphQL request.
#[derive(Debug)]
pub struct GraphqlReply {
    pub status: u16,
    pub www_authenticate: Option<String>,
    /// The server's id for the request (`X-Request-Id`), as the audit trail and logs carry it.
    pub request_id: Option<uuid::Uuid>,
    pub body: Value,
}

impl GraphqlReply {
    pub async fn from(response: reqwest::Response) -> GraphqlReply {
        let status = response.status().as_u16();
        let www_authenticate = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = response.text().await.expect("body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text}"));
        GraphqlReply {
            status,
            www_authenticate,
            request_id,
            body,
        }
    }

    /// The first error's `extensions.code`.
    pub fn code(&self) -> Option<&str> {
        self.body["errors"][0]["extensions"]["code"].as_str()
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}
