//! How Rowguard reaches PostgreSQL: the gateway's pool, and the migrations' connection.

use std::time::Duration;

use clap::Args;
use migration::RoleNames;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgSslMode};

/// How the gateway reaches PostgreSQL.
#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// The gateway's login role: never a superuser, a BYPASSRLS role or the schema owner.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://rowguard_gateway@127.0.0.1:5432/rowguard",
        hide_env_values = true
    )]
    pub url: String,

    /// Prefix of the database roles (`<prefix>_gateway`, `<prefix>_clinician`, ...), so several
    /// Rowguard databases can share one cluster.
    #[arg(long, env = "ROWGUARD_ROLE_PREFIX", default_value = RoleNames::DEFAULT_PREFIX, value_parser = parse_role_prefix)]
    pub role_prefix: RoleNames,

    /// Maximum pooled connections.
    #[arg(long, env = "ROWGUARD_DB_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_connections: u32,

    /// Prepared statements cached per connection. 0 turns the cache off; each transaction then
    /// starts by dropping the statements earlier transactions left on its server connection.
    #[arg(long, env = "ROWGUARD_DB_STATEMENT_CACHE", default_value_t = 100)]
    pub statement_cache_capacity: usize,

    /// Set when a pooler hands out server connections per transaction without managing
    /// prepared statements itself (PgBouncer < 1.21 `pool_mode = transaction`, Supavisor in
    /// transaction mode). Turns the statement cache off and starts each transaction with
    /// `DEALLOCATE ALL`, so no statement name outlives the transaction that made it.
    #[arg(long, env = "ROWGUARD_DB_TRANSACTION_POOLER", default_value_t = false, action = clap::ArgAction::Set)]
    pub transaction_pooler: bool,

    /// Allow a connection to a remote database without verifying its TLS certificate
    /// (`sslmode=verify-full`). Only for networks you trust: otherwise anyone on the path can
    /// read patient data.
    #[arg(long, env = "ROWGUARD_DB_ALLOW_UNVERIFIED_TLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_unverified_tls: bool,

    /// Longest a single SQL statement of a request may run (milliseconds); PostgreSQL cancels
    /// it and the caller gets `SERVICE_UNAVAILABLE`.
    #[arg(long, env = "ROWGUARD_DB_STATEMENT_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub statement_timeout_ms: u64,

    /// Longest a request's transaction may sit idle (milliseconds) before PostgreSQL ends it,
    /// so a stuck request cannot hold locks or a connection.
    #[arg(long, env = "ROWGUARD_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value_t = 15000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub idle_in_transaction_timeout_ms: u64,

    /// Seconds to wait for a pooled connection before answering "service unavailable".
    #[arg(long, env = "ROWGUARD_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub acquire_timeout_secs: u64,

    /// Seconds between two runs of the self-check while serving: a setup that stops passing it
    /// (a grant, a membership or a policy changed after start) refuses every request until it
    /// passes again.
    #[arg(long, env = "ROWGUARD_DB_SELF_CHECK_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub self_check_secs: u64,
}

impl DatabaseSettings {
    /// The driver's statement cache size after the pooler setting is applied.
    pub fn effective_statement_cache(&self) -> usize {
        if self.transaction_pooler {
            0
        } else {
            self.statement_cache_capacity
        }
    }

    /// Settings for `url` with every other value at its default.
    pub fn new(url: impl Into<String>, role_prefix: RoleNames) -> Self {
        Self {
            url: url.into(),
            role_prefix,
            ..super::defaults()
        }
    }

    /// Refuses a remote database reached without certificate verification, unless the operator
    /// opted out. Loopback hosts and Unix sockets never leave the machine.
    pub fn check_transport_security(&self) -> Result<(), String> {
        let options: PgConnectOptions = self
            .url
            .parse()
            .map_err(|e| format!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
        let host = options.get_host();
        // Loopback is decided by parsing the address: a name such as `127.evil.example` only
        // looks like one.
        let local = options.get_socket().is_some()
            || host.starts_with('/')
            || host == "localhost"
            || is_loopback_ip_literal(host);
        if local
            || self.allow_unverified_tls
            || matches!(options.get_ssl_mode(), PgSslMode::VerifyFull)
        {
            return Ok(());
        }
        Err(format!(
            "DATABASE_URL connects to {host} without verifying the server's TLS certificate \
             (sslmode={:?}); add `sslmode=verify-full` (and `sslrootcert=` for a private CA), or set \
             ROWGUARD_DB_ALLOW_UNVERIFIED_TLS=true if the network is trusted",
            options.get_ssl_mode()
        ))
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_secs)
    }
}

/// Whether `host` (optionally with `:port`, IPv6 optionally in brackets) is a loopback IP
/// address written as a literal.
pub fn is_loopback_ip_literal(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .map(|(h, _)| h)
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    match host.rsplit_once(':') {
        Some((ip, port)) if port.chars().all(|c| c.is_ascii_digit()) => ip
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback()),
        _ => false,
    }
}

/// How `rowguard migrate` reaches PostgreSQL: as the schema owner (or an administrator that may
/// create roles), never as the gateway.
#[derive(Debug, Clone, Args)]
pub struct MigrationSettings {
    #[arg(
        long = "migration-database-url",
        env = "ROWGUARD_MIGRATION_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/rowguard",
        hide_env_values = true
    )]
    pub url: String,

    #[arg(long, env = "ROWGUARD_ROLE_PREFIX", default_value = RoleNames::DEFAULT_PREFIX, value_parser = parse_role_prefix)]
    pub role_prefix: RoleNames,
}

fn parse_role_prefix(value: &str) -> Result<RoleNames, String> {
    RoleNames::new(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_an_address_not_a_prefix() {
        for yes in [
            "127.0.0.1",
            "127.0.0.1:5432",
            "127.1.2.3",
            "::1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_ip_literal(yes), "{yes}");
        }
        for no in [
            "127.evil.example",
            "127.0.0.1.nip.io",
            "localhost",
            "10.0.0.1",
            "[::2]:1",
        ] {
            assert!(!is_loopback_ip_literal(no), "{no}");
        }
    }

    #[test]
    fn a_remote_database_named_like_loopback_needs_verified_tls() {
        let settings = DatabaseSettings::new(
            "postgres://rowguard_gateway@127.evil.example:5432/rowguard",
            RoleNames::default(),
        );
        assert!(settings.check_transport_security().is_err());
        let settings = DatabaseSettings::new(
            "postgres://rowguard_gateway@127.0.0.1:5432/rowguard",
            RoleNames::default(),
        );
        assert!(settings.check_transport_security().is_ok());
    }
}
