//! `rowguard serve`: validate settings, check the database, start verifying tokens, serve.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;

use crate::auth::{Authenticator, OidcSettings, keep_fresh};
use crate::config::DatabaseSettings;
use crate::db::Database;
use crate::graphql::{ApiLimits, build_schema};
use crate::routes;
use crate::routes::playground::{AssetSource, Playground, default_assets_dir, load_local};
use crate::state::AppState;

/// Everything `rowguard serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ServeSettings {
    /// Address to listen on.
    #[arg(long, env = "ROWGUARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseSettings,

    #[command(flatten)]
    pub oidc: OidcSettings,

    /// Largest page a client may ask for (`first`).
    #[arg(long, env = "ROWGUARD_MAX_PAGE_SIZE", default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub max_page_size: i32,

    /// Deepest query accepted.
    #[arg(long, env = "ROWGUARD_MAX_DEPTH", default_value_t = 12, value_parser = clap::value_parser!(u64).range(2..=100))]
    pub max_depth: u64,

    /// Highest query complexity accepted.
    #[arg(long, env = "ROWGUARD_MAX_COMPLEXITY", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=100_000))]
    pub max_complexity: u64,

    /// Browser origins allowed to call the API, comma-separated (CORS), e.g.
    /// `https://app.example-hospital.org`.
    #[arg(long, env = "ROWGUARD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ROWGUARD_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Most aliases accepted in one document (alias bombs).
    #[arg(long, env = "ROWGUARD_MAX_ALIASES", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub max_aliases: u64,

    /// Most root fields accepted in one operation.
    #[arg(long, env = "ROWGUARD_MAX_ROOT_FIELDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_root_fields: u64,

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

    /// Serve the schema to introspection queries.
    #[arg(long, env = "ROWGUARD_INTROSPECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub introspection: bool,
}

impl ServeSettings {
    pub fn limits(&self) -> ApiLimits {
        ApiLimits {
            max_page_size: self.max_page_size,
            max_depth: usize::try_from(self.max_depth).unwrap_or(12),
            max_complexity: usize::try_from(self.max_complexity).unwrap_or(500),
            max_aliases: usize::try_from(self.max_aliases).unwrap_or(30),
            max_root_fields: usize::try_from(self.max_root_fields).unwrap_or(20),
            max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(1024 * 1024),
            introspection: self.introspection,
            ..ApiLimits::default()
        }
    }
}

impl ServeSettings {
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
                tracing::warn!(%reason, "playground assets not installed locally; the browser will load them from the CDN");
                AssetSource::Cdn
            }),
        };
        Ok(Some(Playground {
            source,
            extra_controls: None,
        }))
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Keys(#[from] crate::auth::KeyLoadError),
    #[error(transparent)]
    Database(#[from] crate::db::DbError),
    #[error(transparent)]
    SelfCheck(#[from] crate::db::SelfCheckError),
    #[error("ROWGUARD_PLAYGROUND_ASSETS=local: {0}")]
    Playground(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// Builds the shared state and starts the key refresher. The database self-check runs here:
/// a setup that would not enforce row level security never serves a request.
pub async fn build_state(
    database: &DatabaseSettings,
    oidc: &OidcSettings,
    limits: ApiLimits,
    cors_origins: Vec<String>,
    playground: Option<Playground>,
) -> Result<AppState, StartError> {
    let db = Database::connect(database).await?;
    db.self_check().await?;
    let auth = Arc::new(Authenticator::new(oidc)?);
    tokio::spawn(keep_fresh(auth.key_store(), oidc.jwks_refresh()));
    Ok(AppState {
        db,
        auth,
        schema: build_schema(limits),
        limits,
        cors_origins,
        playground,
    })
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    settings: &ServeSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = build_state(
        &settings.database,
        &settings.oidc,
        settings.limits(),
        settings.cors_origins.clone(),
        settings.playground()?,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| StartError::Listen(settings.listen, e))?;
    tracing::info!(listen = %settings.listen, "rowguard is serving");
    axum::serve(listener, routes::app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| StartError::Listen(settings.listen, e))
}
