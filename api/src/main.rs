//! The `rowguard` command: wiring only.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rowguard::config::{DatabaseSettings, MigrationSettings};
use rowguard::db::Database;
use rowguard::migrate::{self, MigrateAction};
use rowguard::server::ServeSettings;

#[derive(Debug, Parser)]
#[command(
    name = "rowguard",
    version,
    about = "GraphQL gateway guarded by PostgreSQL row level security"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply, revert or list the database migrations (connects as the schema owner).
    Migrate {
        #[arg(value_enum, default_value_t = MigrateAction::Up)]
        action: MigrateAction,
        #[command(flatten)]
        settings: MigrationSettings,
    },
    /// Serve the GraphQL API (production).
    Serve {
        #[command(flatten)]
        settings: Box<ServeSettings>,
    },
    /// Print the GraphQL schema (SDL), as committed in schema.graphql.
    Schema,
    /// Run the startup self-check against DATABASE_URL and report what would stop `serve`.
    Check {
        #[command(flatten)]
        settings: DatabaseSettings,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROWGUARD_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let outcome = match Cli::parse().command {
        Command::Migrate { action, settings } => migrate::run(&settings, action)
            .await
            .map_err(|e| format!("migration failed: {e}")),
        Command::Check { settings } => check(&settings).await,
        Command::Serve { settings } => rowguard::server::serve(&settings, shutdown_signal())
            .await
            .map_err(|e| e.to_string()),
        // The SDL is the command's output, so it goes to stdout (logs go to stderr).
        Command::Schema => std::io::stdout()
            .write_all(rowguard::graphql::sdl().as_bytes())
            .map_err(|e| format!("writing the schema: {e}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn check(settings: &DatabaseSettings) -> Result<(), String> {
    let db = Database::connect(settings)
        .await
        .map_err(|e| e.to_string())?;
    let result = db.self_check().await.map_err(|e| e.to_string());
    if result.is_ok() {
        tracing::info!("self-check passed: row level security is enforced for this login");
    }
    result
}

/// Resolves on SIGINT or SIGTERM: stop accepting, finish what is in flight.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
