//! Rowguard served on a real loopback socket for one test, wired to a test database and a
//! test issuer through the same code `rowguard serve` uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rowguard::auth::Authenticator;
use rowguard::db::Database;
use rowguard::server::Application;
use rowguard::settings::{AuditSettings, OidcSettings, ServeSettings};
use rowguard::state::AppState;
use serde_json::{Value, json};

use crate::TestDb;
use crate::issuer::{API_AUDIENCE, SPA_CLIENT_ID, TestIssuer};

/// The browser origin test gateways allow (CORS).
pub const ALLOWED_ORIGIN: &str = "https://clinic.rowguard.test";

/// A running gateway, assembled by [`Application::build`] exactly as `rowguard serve` is (the
/// self-check, the sealer and the key refresher included).
#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served (its own listener, as in `rowguard serve`).
    pub metrics_addr: SocketAddr,
    /// The gateway's own pool (its statement counter sees every request's statements).
    pub db: Database,
    pub auth: Arc<Authenticator>,
    pub http: reqwest::Client,
    /// Where this gateway's audit sealer keeps its key and checkpoints.
    pub audit: TestAudit,
    pub counters: rowguard::metrics::SharedCounters,
    pub state: AppState,
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

/// `serve`'s settings for a test: the test database as the gateway's login (a pool of 4), the
/// test issuer for the SPA and API audiences, the allowed browser origin, both listeners on free
/// loopback ports and `audit`'s signing key and checkpoint directory.
pub fn serve_settings(t: &TestDb, issuer: &TestIssuer, audit: &TestAudit) -> ServeSettings {
    let mut database =
        rowguard::settings::DatabaseSettings::new(t.gateway_url(), crate::test_roles());
    database.max_connections = 4;
    serve_settings_for(database, issuer, audit)
}

/// As [`serve_settings`], for any database (a pooler, another cluster).
pub fn serve_settings_for(
    database: rowguard::settings::DatabaseSettings,
    issuer: &TestIssuer,
    audit: &TestAudit,
) -> ServeSettings {
    let mut settings: ServeSettings = rowguard::settings::from_args(&[
        "--oidc-issuer",
        issuer.url(),
        "--oidc-audiences",
        &format!("{SPA_CLIENT_ID},{API_AUDIENCE}"),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--cors-origins",
        ALLOWED_ORIGIN,
    ])
    .expect("test serve settings");
    settings.database = database;
    settings.audit = audit.settings.clone();
    // Quotas stay on (every spec goes through the check) with budgets no spec reaches; the
    // quota specs set their own.
    settings.quota.rate = 1_000_000;
    settings.quota.burst = 1_000_000;
    settings
}

impl TestApp {
    /// Serves with default settings and waits until the issuer's keys are loaded.
    pub async fn start(t: &TestDb, issuer: &TestIssuer) -> TestApp {
        let app = Self::start_adjusted(t, issuer, |_| {}).await;
        app.wait_for_keys().await;
        app
    }

    /// Serves with the test settings as `adjust` changes them; does not wait for keys.
    pub async fn start_adjusted(
        t: &TestDb,
        issuer: &TestIssuer,
        adjust: impl FnOnce(&mut ServeSettings),
    ) -> TestApp {
        let audit = TestAudit::new();
        let mut settings = serve_settings(t, issuer, &audit);
        adjust(&mut settings);
        Self::serve(&settings, audit).await
    }

    /// Serves on `database` (a pooler, another cluster); does not wait for keys.
    pub async fn start_on(
        database: rowguard::settings::DatabaseSettings,
        issuer: &TestIssuer,
    ) -> TestApp {
        let audit = TestAudit::new();
        let settings = serve_settings_for(database, issuer, &audit);
        Self::serve(&settings, audit).await
    }

    /// Serves `settings` through the production builder; does not wait for keys.
    pub async fn serve(settings: &ServeSettings, audit: TestAudit) -> TestApp {
        // Server logs show with a failing test's output; ROWGUARD_TEST_LOG=debug for more.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("ROWGUARD_TEST_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let application = Application::build(settings)
            .await
            .unwrap_or_else(|e| panic!("the test gateway did not start: {e}"));
        let state = application.state().clone();
        // The repository's client operations are the known ones (what a trusted-documents
        // manifest names in production): they get metric labels of their own.
        state.metrics.set_known_operations(operation_names());
        let (addr, metrics_addr) = (application.address(), application.metrics_address());
        tokio::spawn(application.run(std::future::pending::<()>()));
        TestApp {
            addr,
            metrics_addr,
            db: state.db.clone(),
            auth: state.auth.clone(),
            http: reqwest::Client::new(),
            audit,
            counters: state.metrics.shared.clone(),
            state,
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

    /// The value on this server's metrics line that starts with `line_start` (0 when absent).
    pub async fn metric(&self, line_start: &str) -> f64 {
        metric(&self.http, &self.metrics_url(), line_start).await
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

/// The value on the line of the Prometheus text at `url` that starts with `line_start` (name and
/// labels, then a space), 0 when there is no such line (a counter not yet touched).
pub async fn metric(http: &reqwest::Client, url: &str, line_start: &str) -> f64 {
    let text = http
        .get(url)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
