//! `rowguard serve`: the shared groups, and where to listen.

use std::net::SocketAddr;

use clap::Args;

use super::{ApiSettings, AuditSettings, DatabaseSettings, OidcSettings, QuotaSettings};

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

    #[command(flatten)]
    pub quota: QuotaSettings,

    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT before exiting anyway.
    #[arg(long, env = "ROWGUARD_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout_secs: u64,
}

impl ServeSettings {
    /// Checks what clap cannot: settings that are only wrong in combination.
    pub fn validate(&self) -> Result<(), String> {
        self.oidc.check_issuer()?;
        if self.oidc.audiences.iter().all(|a| a.trim().is_empty()) {
            return Err(
                "ROWGUARD_OIDC_AUDIENCES is required: the client id and/or API audience your tokens carry"
                    .into(),
            );
        }
        self.quota.check_bursts(self.api.max_complexity)?;
        for origin in &self.api.cors_origins {
            super::api::browser_origin(origin)?;
        }
        self.database.check_transport_security()
    }
}
