//! Per-person and per-client request quotas.

use clap::{Args, ValueEnum};

/// What quotas do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuotaMode {
    /// No quotas.
    Off,
    /// Quotas are counted and reported (metric, log line, headers) but nothing is refused.
    Measure,
    /// Requests over a quota are refused with 429 RATE_LIMITED.
    Enforce,
}

/// How much one person (and one OAuth client) may ask for. Costs are the query cost the limits
/// measure: `patients(first: 20)` with a few fields costs 22 units.
#[derive(Debug, Clone, Args)]
pub struct QuotaSettings {
    /// `enforce` (refuse over-quota requests with 429), `measure` (only report them) or `off`.
    #[arg(long = "quota-mode", env = "ROWGUARD_QUOTA_MODE", value_enum, default_value_t = QuotaMode::Enforce)]
    pub mode: QuotaMode,

    /// Cost units per second one person earns. The default lets a clinician page through
    /// their list at about a page of 20 per second indefinitely, while a script pulling at
    /// full speed is slowed to about 20 patient records per second once its burst is spent.
    #[arg(long = "quota-rate", env = "ROWGUARD_QUOTA_RATE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub rate: u32,

    /// Cost units one person may spend at once: the most expensive query the limits accept
    /// (2000) fits, as do dozens of ordinary page loads in a row.
    #[arg(long = "quota-burst", env = "ROWGUARD_QUOTA_BURST", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub burst: u32,

    /// Cost units per second one OAuth client (all its users together) earns; 0: no per-client
    /// budget. Set it for integrations and service clients, whose volume one budget should cap.
    #[arg(long = "quota-client-rate", env = "ROWGUARD_QUOTA_CLIENT_RATE", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub client_rate: u32,

    /// Cost units one OAuth client may spend at once (with `ROWGUARD_QUOTA_CLIENT_RATE`).
    #[arg(long = "quota-client-burst", env = "ROWGUARD_QUOTA_CLIENT_BURST", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub client_burst: u32,

    /// Most requests one person (issuer and subject) may have in flight on this replica; more
    /// are answered 429 RATE_LIMITED.
    #[arg(long = "quota-concurrency", env = "ROWGUARD_QUOTA_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// Redis that every replica shares budgets through (`redis://host:6379/0`; this build has no
    /// TLS client for Redis, so `rediss://` is refused at start). Without it each replica keeps
    /// its own budgets: divide the rates and bursts by the number of replicas. While Redis is
    /// unreachable, each replica falls back to its own.
    #[arg(
        long = "quota-redis-url",
        env = "ROWGUARD_QUOTA_REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// Longest wait for Redis on a request's path, in milliseconds; past it the request is
    /// charged to this replica's own budget and Redis is left alone for a second.
    #[arg(long = "quota-redis-timeout-ms", env = "ROWGUARD_QUOTA_REDIS_TIMEOUT_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub redis_timeout_ms: u64,

    /// Names this deployment's budgets in Redis, so deployments sharing one Redis never spend
    /// each other's (default: the role prefix). Replicas of one deployment give the same.
    #[arg(long = "quota-redis-namespace", env = "ROWGUARD_QUOTA_REDIS_NAMESPACE", value_parser = parse_namespace)]
    pub redis_namespace: Option<String>,
}

fn parse_namespace(value: &str) -> Result<String, String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if (1..=64).contains(&value.len()) && value.chars().all(plain) {
        Ok(value.to_owned())
    } else {
        Err("1 to 64 letters, digits, `_`, `-` or `.`".to_owned())
    }
}

impl QuotaSettings {
    /// A request is charged at most a whole burst, so a burst below the most an operation may
    /// cost would charge the largest requests less than they cost (the README's advice for
    /// replicas without Redis divides the rate, not the burst).
    pub fn check_bursts(&self, max_complexity: u64) -> Result<(), String> {
        if self.mode == QuotaMode::Off {
            return Ok(());
        }
        let short = |what: &str, burst: u32| {
            format!(
                "{what} ({burst}) is below ROWGUARD_MAX_COMPLEXITY ({max_complexity}): a request costing more \
                 than a whole burst would be charged only the burst. Keep the burst at least the \
                 complexity limit (with several replicas and no Redis, divide the rate, not the burst)"
            )
        };
        if u64::from(self.burst) < max_complexity {
            return Err(short("ROWGUARD_QUOTA_BURST", self.burst));
        }
        if self.client_rate > 0 && u64::from(self.client_burst) < max_complexity {
            return Err(short("ROWGUARD_QUOTA_CLIENT_BURST", self.client_burst));
        }
        Ok(())
    }

    pub fn redis_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.redis_timeout_ms)
    }
}

impl Default for QuotaSettings {
    fn default() -> Self {
        super::defaults()
    }
}
