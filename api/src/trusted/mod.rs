//! Trusted documents: the operations a reviewed front end may send, loaded from a manifest
//! (`ROWGUARD_TRUSTED_DOCUMENTS`), replaced without a restart when the file changes or on
//! SIGHUP. In `enforce` mode anything else is refused before any database work; in `log` mode
//! it runs and is counted (the shadow mode a team uses before enforcing).

pub mod generate;
mod manifest;
mod normalize;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use apollo_compiler::Schema;
use apollo_compiler::validation::Valid;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

pub use manifest::{Manifest, ManifestError, TrustedOperation, served_schema};
pub use normalize::normalize;

use crate::metrics::{Metrics, ReasonLabel};

pub use crate::settings::TrustMode;

/// Counters of the trusted-documents check.
#[derive(Debug, Clone, Default)]
pub struct TrustCounters {
    /// Operations not in the manifest, by mode (`log`: served; `enforce`: refused).
    pub untrusted: Family<ReasonLabel, Counter>,
    /// Manifest reloads by outcome.
    pub reloads: Family<ReasonLabel, Counter>,
    /// Operations in the manifest now.
    pub operations: Gauge,
}

/// The manifest in force, replaceable while requests read it.
#[derive(Debug)]
pub struct TrustedDocuments {
    mode: TrustMode,
    path: Option<PathBuf>,
    current: RwLock<Arc<Manifest>>,
    /// The served schema, which every reloaded manifest is checked against.
    schema: Option<Valid<Schema>>,
    pub counters: TrustCounters,
}

impl TrustedDocuments {
    /// Loads the manifest at `path` (required unless `mode` is `off`).
    pub fn load(
        mode: TrustMode,
        path: Option<&Path>,
        counters: TrustCounters,
    ) -> Result<Self, ManifestError> {
        if mode == TrustMode::Off {
            return Ok(Self::off());
        }
        let schema = served_schema();
        let manifest = match path {
            Some(path) => Manifest::load(path, &schema)?,
            None => {
                return Err(ManifestError {
                    path: "(none)".into(),
                    problem: "ROWGUARD_TRUSTED_DOCUMENTS_MODE is log or enforce, so ROWGUARD_TRUSTED_DOCUMENTS must name the manifest".into(),
                });
            }
        };
        counters
            .operations
            .set(i64::try_from(manifest.len()).unwrap_or(i64::MAX));
        Ok(Self {
            mode,
            path: path.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(manifest)),
            schema: Some(schema),
            counters,
        })
    }

    /// No manifest: every operation runs.
    pub fn off() -> Self {
        Self {
            mode: TrustMode::Off,
            path: None,
            current: RwLock::new(Arc::new(Manifest::default())),
            schema: None,
            counters: TrustCounters::default(),
        }
    }

    pub fn mode(&self) -> TrustMode {
        self.mode
    }

    /// The manifest in force.
    pub fn current(&self) -> Arc<Manifest> {
        self.current
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Reads the file again; a manifest that does not load leaves the one in force in place.
    pub fn reload(&self) -> Result<usize, ManifestError> {
        let (Some(path), Some(schema)) = (&self.path, &self.schema) else {
            return Ok(0);
        };
        let outcome = Manifest::load(path, schema);
        let label = |reason: &str| ReasonLabel {
            reason: reason.into(),
        };
        match outcome {
            Ok(manifest) => {
                let count = manifest.len();
                self.counters
                    .operations
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
                match self.current.write() {
                    Ok(mut current) => *current = Arc::new(manifest),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(manifest),
                }
                self.counters.reloads.get_or_create(&label("ok")).inc();
                Ok(count)
            }
            Err(error) => {
                self.counters.reloads.get_or_create(&label("refused")).inc();
                Err(error)
            }
        }
    }

    /// Counts (and logs) an operation that is not in the manifest. Only the operation's
    /// loggable name is logged: never its text or variables.
    pub fn record_untrusted(&self, operation: &str) {
        let mode = match self.mode {
            TrustMode::Off => return,
            TrustMode::Log => "log",
            TrustMode::Enforce => "enforce",
        };
        self.counters
            .untrusted
            .get_or_create(&ReasonLabel {
                reason: mode.into(),
            })
            .inc();
        tracing::warn!(operation, mode, "operation is not in the trusted documents");
    }
}

/// Keeps the manifest current: reloads it on SIGHUP and when the file changes (checked every
/// `every`; a changed modification time, size or target of a symbolic link), and gives the
/// listed operation names their own metric labels.
pub async fn keep_current(
    documents: Arc<TrustedDocuments>,
    metrics: Arc<Metrics>,
    every: Duration,
) {
    let Some(path) = documents.path.clone() else {
        return;
    };
    metrics.set_known_operations(documents.current().names().map(str::to_owned));
    let mut seen = stamp(&path);
    let mut hangup = hangup_signals();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let signalled = tokio::select! {
            _ = tick.tick() => false,
            _ = next_hangup(&mut hangup) => true,
        };
        let now = stamp(&path);
        if !signalled && now == seen {
            continue;
        }
        seen = now;
        match documents.reload() {
            Ok(count) => {
                metrics.set_known_operations(documents.current().names().map(str::to_owned));
                tracing::info!(operations = count, "trusted documents reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "trusted documents not reloaded; the previous manifest stays in force");
            }
        }
    }
}

/// What identifies a version of the file.
fn stamp(path: &Path) -> Option<(SystemTime, u64, Option<PathBuf>)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((
        metadata.modified().ok()?,
        metadata.len(),
        std::fs::read_link(path).ok(),
    ))
}

#[cfg(unix)]
fn hangup_signals() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(unix)]
async fn next_hangup(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
