//! `rowguard serve`: validate settings, check the database, start verifying tokens, serve.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::audit::checkpoint::CheckpointDir;
use crate::audit::keys::AuditSigner;
use crate::audit::sealer::{Sealer, SealerStatus};
use crate::auth::{Authenticator, OidcSettings, keep_fresh};
use crate::config::{AuditSettings, DatabaseSettings};
use crate::db::Database;
use crate::graphql::{ApiLimits, build_schema};
use crate::metrics::{Metrics, SharedCounters};
use crate::routes;
use crate::routes::playground::{AssetSource, Playground, default_assets_dir, load_local};
use crate::state::AppState;

/// Everything `rowguard serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ServeSettings {
    /// Address to listen on.
    #[arg(long, env = "ROWGUARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the Prometheus endpoint (`GET /metrics`), apart from the API so that only
    /// your monitoring network can reach it.
    #[arg(
        long,
        env = "ROWGUARD_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseSettings,

    #[command(flatten)]
    pub oidc: OidcSettings,

    #[command(flatten)]
    pub api: ApiSettings,

    #[command(flatten)]
    pub audit: AuditSettings,

    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT before exiting anyway.
    #[arg(long, env = "ROWGUARD_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout_secs: u64,
}

/// The API's limits and browser-facing options.
#[derive(Debug, Clone, Args)]
pub struct ApiSettings {
    /// Largest page a client may ask for (`first`).
    #[arg(long, env = "ROWGUARD_MAX_PAGE_SIZE", default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub max_page_size: i32,

    /// Deepest query accepted.
    #[arg(long, env = "ROWGUARD_MAX_DEPTH", default_value_t = 12, value_parser = clap::value_parser!(u64).range(2..=100))]
    pub max_depth: u64,

    /// Highest cost accepted: every field that returns records counts once per record it can
    /// return (lists by their `first`, nested lists multiplied), fragments expanded.
    #[arg(long, env = "ROWGUARD_MAX_COMPLEXITY", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub max_complexity: u64,

    /// Most field selections in one operation, fragments expanded where they are spread.
    #[arg(long, env = "ROWGUARD_MAX_FIELDS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_fields: u64,

    /// Most aliases accepted in one operation, fragments expanded (alias bombs).
    #[arg(long, env = "ROWGUARD_MAX_ALIASES", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub max_aliases: u64,

    /// Most root fields accepted in one operation, fragments expanded.
    #[arg(long, env = "ROWGUARD_MAX_ROOT_FIELDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_root_fields: u64,

    /// Most SQL statements the resolvers of one request may run; past it the request is
    /// stopped and rolled back.
    #[arg(long, env = "ROWGUARD_MAX_STATEMENTS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_statements: u64,

    /// Largest answer in bytes (row data loaded for it is held to the same bound).
    #[arg(long, env = "ROWGUARD_MAX_RESPONSE_BYTES", default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    pub max_response_bytes: u64,

    /// Longest a request may take, in milliseconds; then its transaction is cancelled and the
    /// caller gets SERVICE_UNAVAILABLE. No statement may run longer either.
    #[arg(long, env = "ROWGUARD_REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub request_timeout_ms: u64,

    /// Most requests one person (issuer and subject) may have in flight on this replica; more
    /// are answered 429 RATE_LIMITED.
    #[arg(long, env = "ROWGUARD_QUOTA_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency_per_person: u32,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ROWGUARD_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Browser origins allowed to call the API, comma-separated (CORS), e.g.
    /// `https://app.example-hospital.org`.
    #[arg(long, env = "ROWGUARD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Serve the schema to introspection queries.
    #[arg(long, env = "ROWGUARD_INTROSPECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub introspection: bool,

    /// Append every PHI access to the audit trail (HIPAA §164.312(b)). Turn off only to
    /// measure its cost.
    #[arg(long, env = "ROWGUARD_AUDIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub audit: bool,

    /// Length of a break-glass grant, in seconds (at most 24 hours).
    #[arg(long, env = "ROWGUARD_EMERGENCY_ACCESS_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub emergency_access_secs: u64,

    /// Serve the GraphiQL playground to browsers at GET /graphql.
    #[arg(long, env = "ROWGUARD_PLAYGROUND", default_value_t = false, action = clap::ArgAction::Set)]
    pub playground: bool,

    /// Where the playground's GraphiQL and React files come from: `local` (served by Rowguard
    /// from an npm install; works offline), `cdn` (pinned versions with Subresource Integrity),
    /// or `auto` (local when installed, otherwise the CDN).
    #[arg(long, env = "ROWGUARD_PLAYGROUND_ASSETS", default_value = "auto", value_parser = ["auto", "local", "cdn"])]
    pub playground_assets: String,

    /// The npm install holding the playground files (default: api/playground/node_modules).
    #[arg(long, env = "ROWGUARD_PLAYGROUND_ASSETS_DIR")]
    pub playground_assets_dir: Option<std::path::PathBuf>,
}

impl ApiSettings {
    pub fn limits(&self) -> ApiLimits {
        let int = |v: u64, default: usize| usize::try_from(v).unwrap_or(default);
        ApiLimits {
            max_page_size: self.max_page_size,
            max_depth: int(self.max_depth, 12),
            max_complexity: int(self.max_complexity, 2000),
            max_fields: int(self.max_fields, 250),
            max_aliases: int(self.max_aliases, 30),
            max_root_fields: int(self.max_root_fields, 20),
            max_body_bytes: int(self.max_body_bytes, 1024 * 1024),
            max_statements: self.max_statements,
            max_response_bytes: int(self.max_response_bytes, 8 * 1024 * 1024),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            concurrency_per_person: self.concurrency_per_person,
            introspection: self.introspection,
            audit: self.audit,
            emergency_access_secs: self.emergency_access_secs,
            ..ApiLimits::default()
        }
    }

    /// The playground as configured, with its assets loaded.
    pub fn playground(&self) -> Result<Option<Playground>, StartError> {
        if !self.playground {
            return Ok(None);
        }
        let dir = self
            .playground_assets_dir
            .clone()
            .unwrap_or_else(default_assets_dir);
        let source = match self.playground_assets.as_str() {
            "cdn" => AssetSource::Cdn,
            "local" => load_local(&dir).map_err(StartError::Playground)?,
            _ => load_local(&dir).unwrap_or_else(|reason| {
                tracing::warn!(%reason, "playground assets not installed locally; browsers will load them from the CDN");
                AssetSource::Cdn
            }),
        };
        Ok(Some(Playground {
            source,
            extra_controls: None,
            extra_connect_src: None,
        }))
    }
}

/// Why the server did not start. Every message names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Keys(#[from] crate::auth::KeyLoadError),
    #[error(transparent)]
    Database(#[from] crate::db::DbError),
    #[error(transparent)]
    SelfCheck(#[from] crate::db::SelfCheckError),
    #[error("ROWGUARD_PLAYGROUND_ASSETS=local: {0}")]
    Playground(String),
    #[error("ROWGUARD_AUDIT_SIGNING_KEY {0}")]
    AuditKey(#[from] crate::audit::keys::KeyError),
    #[error("ROWGUARD_AUDIT_CHECKPOINT_DIR {0}: {1}")]
    CheckpointDir(std::path::PathBuf, std::io::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

impl ServeSettings {
    /// Checks what clap cannot: settings that are only wrong in combination.
    pub fn validate(&self) -> Result<(), StartError> {
        self.oidc.check_issuer().map_err(StartError::Settings)?;
        if self.oidc.audiences.iter().all(|a| a.trim().is_empty()) {
            return Err(StartError::Settings("ROWGUARD_OIDC_AUDIENCES is required: the client id and/or API audience your tokens carry".into()));
        }
        self.database
            .check_transport_security()
            .map_err(StartError::Settings)
    }
}

/// Builds the shared state and starts the key refresher. The database self-check runs here:
/// a setup that would not enforce row level security never serves a request.
pub async fn build_state(
    database: &DatabaseSettings,
    oidc: &OidcSettings,
    mut limits: ApiLimits,
    cors_origins: Vec<String>,
    playground: Option<Playground>,
    audit: &AuditSettings,
) -> Result<AppState, StartError> {
    limits.seal_lag_alert = audit.sealer_settings().lag_alert;
    let db = Database::connect(database).await?;
    db.self_check().await?;
    let counters = SharedCounters::default();
    if limits.audit && audit.sealer {
        // A pool of its own, so sealing never waits for (or takes) a request's connection.
        let sealing = Database::connect_as(
            &DatabaseSettings {
                max_connections: 1,
                ..database.clone()
            },
            "rowguard-sealer",
        )
        .await?;
        start_sealer(&sealing, audit, counters.sealer.clone())?;
    }
    let auth = Arc::new(Authenticator::new(oidc, &counters)?);
    tokio::spawn(keep_fresh(auth.key_store(), oidc.jwks_refresh()));
    Ok(AppState {
        db,
        auth,
        schema: build_schema(limits),
        limits,
        cors_origins,
        playground,
        metrics: Arc::new(Metrics::new(counters)),
        concurrency: crate::quota::ConcurrencyLimiter::new(limits.concurrency_per_person),
    })
}

/// Starts this replica's audit sealer (it seals only while it holds the lease). The signing key is
/// read here, so a bad key stops start-up with the file's name.
pub fn start_sealer(
    db: &Database,
    settings: &AuditSettings,
    status: Arc<SealerStatus>,
) -> Result<(), StartError> {
    let signer = match &settings.signing_key {
        Some(path) => Some(Arc::new(AuditSigner::from_file(path)?)),
        None => {
            tracing::warn!(
                "ROWGUARD_AUDIT_SIGNING_KEY is not set: the audit chain is sealed but no checkpoint is \
                 signed, so the database's administrators could rewrite it unnoticed"
            );
            None
        }
    };
    let sink = match &settings.checkpoint_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| StartError::CheckpointDir(dir.clone(), e))?;
            Some(CheckpointDir::new(dir.clone()))
        }
        None => None,
    };
    if let Some(signer) = &signer {
        tracing::info!(key_id = %signer.key_id(), checkpoint_dir = ?settings.checkpoint_dir, "audit checkpoints are signed");
    }
    if settings.sealer {
        let sealer = Sealer::new(db.clone(), settings.sealer_settings(), signer, sink, status);
        tokio::spawn(sealer.run(std::future::pending::<()>()));
    }
    Ok(())
}

/// `rowguard serve`: serves until `shutdown` resolves.
pub async fn serve(
    settings: &ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    settings.validate()?;
    let state = build_state(
        &settings.database,
        &settings.oidc,
        settings.api.limits(),
        settings.api.cors_origins.clone(),
        settings.api.playground()?,
        &settings.audit,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| StartError::Listen(settings.listen, e))?;
    serve_metrics(settings.metrics_listen, state.clone()).await?;
    tracing::info!(listen = %settings.listen, metrics = %settings.metrics_listen, "rowguard is serving");
    run_http(
        listener,
        state,
        shutdown,
        Duration::from_secs(settings.shutdown_timeout_secs),
    )
    .await
    .map_err(|e| StartError::Listen(settings.listen, e))
}

/// Serves `GET /metrics` on its own listener for the life of the process.
pub async fn serve_metrics(addr: SocketAddr, state: AppState) -> Result<SocketAddr, StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Listen(addr, e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartError::Listen(addr, e))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, routes::metrics_app(state)).await;
    });
    Ok(bound)
}

/// Serves `state` on `listener`. When `shutdown` resolves the listener closes at once (new
/// connections are refused) and in-flight requests get `grace` to finish.
pub async fn run_http(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, routes::app(state)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time; exiting");
            Ok(())
        }
    }
}
