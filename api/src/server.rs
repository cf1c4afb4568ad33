//! `rowguard serve`: validate settings, check the database, start verifying tokens and sealing
//! the audit trail, bind the listeners, serve. [`Application::build`] is the one way a server is
//! assembled: `serve`, `dev` and the test harness all go through it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::checkpoint::CheckpointDir;
use crate::audit::keys::AuditSigner;
use crate::audit::sealer::{Sealer, SealerStatus};
use crate::auth::{Authenticator, keep_fresh};
use crate::db::Database;
use crate::graphql::build_schema;
use crate::metrics::{Metrics, SharedCounters};
use crate::playground::Playground;
use crate::quota::{Budget, QuotaCounters, QuotaMode, Quotas, SharedQuota};
use crate::routes;
use crate::settings::{AuditSettings, DatabaseSettings, QuotaSettings, ServeSettings};
use crate::state::AppState;
use crate::trusted::{TrustedDocuments, keep_current};

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
    #[error("ROWGUARD_AUDIT_SIGNING_KEY {0}")]
    AuditKey(#[from] crate::audit::keys::KeyError),
    #[error("ROWGUARD_AUDIT_CHECKPOINT_DIR {0}: {1}")]
    CheckpointDir(std::path::PathBuf, std::io::Error),
    #[error(transparent)]
    TrustedDocuments(#[from] crate::trusted::ManifestError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// A server that is assembled and listening, not yet serving.
#[derive(Debug)]
pub struct Application {
    state: AppState,
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    metrics_address: SocketAddr,
    grace: Duration,
    /// Longest wait for a complete request head on a connection.
    head_timeout: Duration,
    /// Most client connections open at once.
    connection_limit: crate::connections::ConnectionLimit,
    /// Routes beside the gateway's own (dev serves the reference web app).
    extra_routes: Option<axum::Router>,
}

impl Application {
    /// Everything `serve` does before the first request: the settings are validated, the
    /// database self-check runs (a setup that would not enforce row level security never serves a
    /// request), the audit sealer and the key refresher start, and both listeners are bound.
    pub async fn build(settings: &ServeSettings) -> Result<Self, StartError> {
        Self::build_with_playground(settings, settings.api.playground()).await
    }

    /// As [`Application::build`], with a playground of the caller's (dev adds its user picker).
    pub async fn build_with_playground(
        settings: &ServeSettings,
        playground: Option<Playground>,
    ) -> Result<Self, StartError> {
        settings.validate().map_err(StartError::Settings)?;
        let mut limits = settings.api.limits();
        limits.seal_lag_alert = settings.audit.sealer_settings().lag_alert;
        let db = Database::connect(&settings.database)
            .await?
            .with_audit_batch_wait(settings.audit.batch_wait());
        db.self_check().await?;
        tokio::spawn(
            db.clone()
                .keep_checking(Duration::from_secs(settings.database.self_check_secs)),
        );
        let counters = SharedCounters::default();
        if limits.audit && settings.audit.sealer {
            start_sealer(&settings.database, &settings.audit, counters.sealer.clone()).await?;
        }
        let auth = Arc::new(Authenticator::new(&settings.oidc, &counters)?);
        tokio::spawn(keep_fresh(auth.key_store(), settings.oidc.jwks_refresh()));
        let trusted = Arc::new(TrustedDocuments::load(
            settings.api.trust_mode(),
            settings.api.trusted_documents.as_deref(),
            counters.trust.clone(),
        )?);
        let quotas = Arc::new(quotas(
            &settings.quota,
            settings.database.role_prefix.prefix(),
            counters.quota.clone(),
        )?);
        tokio::spawn(crate::quota::forget_idle(quotas.clone()));
        let metrics = Arc::new(Metrics::new(counters));
        tokio::spawn(keep_current(
            trusted.clone(),
            metrics.clone(),
            MANIFEST_CHECK,
        ));
        let state = AppState::new(crate::state::Shared {
            db,
            auth,
            schema: build_schema(limits),
            gate: Arc::new(crate::graphql::Gate::new(
                limits,
                trusted.clone(),
                quotas.clone(),
            )),
            limits,
            cors_origins: settings.api.cors_origins.clone(),
            playground,
            metrics,
            concurrency: crate::quota::ConcurrencyLimiter::new(settings.quota.concurrency),
            quotas,
            trusted,
        });
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| StartError::Listen(settings.listen, e))?;
        let address = listener
            .local_addr()
            .map_err(|e| StartError::Listen(settings.listen, e))?;
        let head_timeout = Duration::from_secs(settings.api.request_head_timeout_secs);
        let metrics_address =
            serve_metrics(settings.metrics_listen, state.clone(), head_timeout).await?;
        let connection_limit = crate::connections::client_connection_limit(
            settings.api.max_client_connections,
            settings.database.max_connections,
        );
        Ok(Self {
            state,
            listener,
            address,
            metrics_address,
            grace: Duration::from_secs(settings.shutdown_timeout_secs),
            head_timeout,
            connection_limit,
            extra_routes: None,
        })
    }

    /// Serves `routes` beside the gateway's own, outside its middleware (they are not API
    /// requests).
    pub fn with_routes(mut self, routes: axum::Router) -> Self {
        self.extra_routes = Some(routes);
        self
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Where the API listens (the port is known even when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn metrics_address(&self) -> SocketAddr {
        self.metrics_address
    }

    /// Serves until `shutdown` resolves; then new connections are refused at once and
    /// in-flight requests get the shutdown grace period to finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(
            listen = %self.address,
            metrics = %self.metrics_address,
            max_client_connections = self.connection_limit.max(),
            "rowguard is serving"
        );
        let mut app = routes::app(self.state);
        if let Some(extra) = self.extra_routes {
            app = app.merge(extra);
        }
        crate::connections::serve(
            self.listener,
            app,
            shutdown,
            self.grace,
            self.head_timeout,
            self.connection_limit,
        )
        .await
    }
}

/// How often the trusted-documents file is checked for changes.
const MANIFEST_CHECK: Duration = Duration::from_secs(1);

/// The request quotas as configured, shared through Redis when a URL is given.
fn quotas(
    settings: &QuotaSettings,
    role_prefix: &str,
    counters: QuotaCounters,
) -> Result<Quotas, StartError> {
    let shared = match &settings.redis_url {
        Some(url) if settings.mode != QuotaMode::Off => {
            let namespace = settings.redis_namespace.as_deref().unwrap_or(role_prefix);
            Some(
                SharedQuota::new(url, settings.redis_timeout(), namespace)
                    .map_err(StartError::Settings)?,
            )
        }
        _ => None,
    };
    Ok(Quotas::new(
        settings.mode,
        Budget::person(settings),
        Budget::client(settings),
        shared,
        counters,
    ))
}

/// Starts this replica's audit sealer, on a one-connection pool of its own so sealing never waits
/// for (or takes) a request's connection. It seals only while it holds the lease. The signing key
/// is read here, so a bad key stops start-up with the file's name.
async fn start_sealer(
    database: &DatabaseSettings,
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
    let sealing = Database::connect_as(
        &DatabaseSettings {
            max_connections: 1,
            ..database.clone()
        },
        "rowguard-sealer",
    )
    .await?;
    let sealer = Sealer::new(sealing, settings.sealer_settings(), signer, sink, status);
    tokio::spawn(sealer.run(std::future::pending::<()>()));
    Ok(())
}

/// `rowguard serve`: serves until `shutdown` resolves.
pub async fn serve(
    settings: &ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let application = Application::build(settings).await?;
    application
        .run(shutdown)
        .await
        .map_err(|e| StartError::Listen(settings.listen, e))
}

/// Serves `GET /metrics` on its own listener for the life of the process.
async fn serve_metrics(
    addr: SocketAddr,
    state: AppState,
    head_timeout: Duration,
) -> Result<SocketAddr, StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Listen(addr, e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartError::Listen(addr, e))?;
    tokio::spawn(crate::connections::serve(
        listener,
        routes::metrics_app(state),
        std::future::pending::<()>(),
        Duration::ZERO,
        head_timeout,
        crate::connections::ConnectionLimit::new(crate::connections::METRICS_CONNECTIONS),
    ));
    Ok(bound)
}
