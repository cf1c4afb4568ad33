//! The audit trail's sealing and signing (`rowguard serve`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// The audit trail's sealing and signing.
#[derive(Debug, Clone, Args)]
pub struct AuditSettings {
    /// Ed25519 private key (PKCS#8 PEM file, e.g. from `rowguard audit keygen`) that signs the
    /// audit checkpoints. Keep it away from the database and its administrators: whoever holds it
    /// can sign a rewritten trail. Without it the chain is still sealed but not anchored.
    #[arg(
        long = "audit-signing-key",
        env = "ROWGUARD_AUDIT_SIGNING_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub signing_key: Option<PathBuf>,

    /// Directory outside the database where every signed checkpoint is also written (an
    /// append-only mount, or one a log shipper copies to object storage with retention lock).
    #[arg(long = "audit-checkpoint-dir", env = "ROWGUARD_AUDIT_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,

    /// Least seconds between two signed checkpoints. Changes to events sealed after the newest
    /// checkpoint cannot be told from the original, so this bounds that window.
    #[arg(long = "audit-checkpoint-secs", env = "ROWGUARD_AUDIT_CHECKPOINT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub checkpoint_secs: u64,

    /// Pause between seal rounds, in milliseconds, while there is nothing left to seal.
    #[arg(long = "audit-seal-interval-ms", env = "ROWGUARD_AUDIT_SEAL_INTERVAL_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub seal_interval_ms: u64,

    /// Events unsealed for longer than this many seconds are reported (log line, `/readyz`
    /// detail, metric).
    #[arg(long = "audit-seal-lag-alert-secs", env = "ROWGUARD_AUDIT_SEAL_LAG_ALERT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub seal_lag_alert_secs: u64,

    /// Longest wait, in milliseconds, of the audit batch writer for reads already running in
    /// this gateway to join the batch it is about to write (0: write at once). Each read's
    /// answer waits for its batch, so this bounds the latency it adds; what it saves is a write
    /// transaction per read at moderate concurrency.
    #[arg(long = "audit-batch-wait-ms", env = "ROWGUARD_AUDIT_BATCH_WAIT_MS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub batch_wait_ms: u64,

    /// Take part in sealing (one replica seals at a time; the others stand by).
    #[arg(long = "audit-sealer", env = "ROWGUARD_AUDIT_SEALER", default_value_t = true, action = clap::ArgAction::Set)]
    pub sealer: bool,
}

impl Default for AuditSettings {
    fn default() -> Self {
        super::defaults()
    }
}

impl AuditSettings {
    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_wait_ms)
    }

    pub fn sealer_settings(&self) -> crate::audit::sealer::SealerSettings {
        crate::audit::sealer::SealerSettings {
            interval: Duration::from_millis(self.seal_interval_ms),
            checkpoint_every: Duration::from_secs(self.checkpoint_secs),
            lag_alert: Duration::from_secs(self.seal_lag_alert_secs),
            ..Default::default()
        }
    }
}
