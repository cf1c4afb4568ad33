//! Prometheus metrics at `GET /metrics`: request counts and latencies by operation name and
//! outcome code, pool usage, statements, key refreshes, token rejections and audit-write
//! failures. Labels are bounded (operation names are capped; codes and reasons are fixed sets)
//! and carry no PHI.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels that are not operation names: requests refused before an operation was known.
const FIXED_OPERATION_LABELS: [&str; 3] = ["<unauthenticated>", "<invalid>", "<anonymous>"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Counters shared with the parts that count them.
#[derive(Debug, Clone, Default)]
pub struct SharedCounters {
    pub jwks_fetches: Family<ReasonLabel, Counter>,
    pub token_rejections: Family<ReasonLabel, Counter>,
    pub audit_write_failures: Counter,
    /// Requests whose client went away before the answer (rolled back).
    pub requests_abandoned: Counter,
    /// Operations executing now (including ones whose client has gone, until they end).
    pub requests_in_flight: Gauge,
    /// The audit sealer's state and counters.
    pub sealer: std::sync::Arc<crate::audit::sealer::SealerStatus>,
    /// The trusted-documents check.
    pub trust: crate::trusted::TrustCounters,
    /// The request quotas.
    pub quota: crate::quota::QuotaCounters,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<OperationLabel, Histogram>,
    pool_connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    statements: Gauge<u64, AtomicU64>,
    sealer_leader: Gauge<i64, std::sync::atomic::AtomicI64>,
    unsealed_age: Gauge<f64, AtomicU64>,
    /// Operation names that get a label of their own (the trusted documents'); any other name a
    /// client sends is counted as "other", so clients cannot grow the label set.
    known_operations: std::sync::RwLock<Arc<HashSet<String>>>,
    pub shared: SharedCounters,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(shared: SharedCounters) -> Self {
        let mut registry = Registry::with_prefix("rowguard");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "graphql_requests",
            "GraphQL requests by operation name and outcome code",
            requests.clone(),
        );
        let durations = Family::<OperationLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "graphql_request_duration_seconds",
            "GraphQL request latency by operation name",
            durations.clone(),
        );
        let pool_connections = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "db_pool_connections",
            "Open database connections in the pool",
            pool_connections.clone(),
        );
        let statements = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "db_statements",
            "SQL statements run since start",
            statements.clone(),
        );
        registry.register(
            "jwks_fetches",
            "Discovery/JWKS fetches from the identity provider by outcome",
            shared.jwks_fetches.clone(),
        );
        registry.register(
            "token_rejections",
            "Refused bearer tokens by reason",
            shared.token_rejections.clone(),
        );
        registry.register(
            "graphql_requests_in_flight",
            "Operations executing now, their transactions open",
            shared.requests_in_flight.clone(),
        );
        registry.register(
            "graphql_requests_abandoned",
            "Requests whose client went away before the answer; their transactions were rolled back",
            shared.requests_abandoned.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Requests refused because the audit trail could not be written",
            shared.audit_write_failures.clone(),
        );
        let sealer_leader = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "audit_sealer_leader",
            "1 while this replica holds the audit sealing lease",
            sealer_leader.clone(),
        );
        let unsealed_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "audit_unsealed_age_seconds",
            "Age of the oldest audit event not yet sealed into the chain (0 when none)",
            unsealed_age.clone(),
        );
        let sealer = &shared.sealer.metrics;
        registry.register(
            "audit_sealed_events",
            "Audit events sealed into the chain by this replica",
            sealer.sealed.clone(),
        );
        registry.register(
            "audit_checkpoints",
            "Signed audit checkpoints written by this replica",
            sealer.checkpoints.clone(),
        );
        registry.register(
            "audit_seal_errors",
            "Failed audit seal rounds and checkpoint writes",
            sealer.errors.clone(),
        );
        registry.register(
            "audit_seal_lag_seconds",
            "Time from an audit event's write to its seal",
            sealer.lag.clone(),
        );
        registry.register(
            "graphql_untrusted_operations",
            "Operations not in the trusted documents, by mode (log: served, enforce: refused)",
            shared.trust.untrusted.clone(),
        );
        registry.register(
            "trusted_documents_reloads",
            "Reloads of the trusted-documents manifest by outcome (refused: the previous one stayed)",
            shared.trust.reloads.clone(),
        );
        registry.register(
            "trusted_documents_operations",
            "Operations in the trusted-documents manifest in force",
            shared.trust.operations.clone(),
        );
        registry.register(
            "quota_exceeded",
            "Requests over a quota, by budget and mode (person_enforce: refused; *_measure: served)",
            shared.quota.exceeded.clone(),
        );
        registry.register(
            "quota_shared",
            "1 while quotas are shared through Redis, 0 while this replica limits on its own",
            shared.quota.shared.clone(),
        );
        registry.register(
            "quota_redis_errors",
            "Quota checks Redis did not answer in time (each used the replica's own budget)",
            shared.quota.redis_errors.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            pool_connections,
            statements,
            sealer_leader,
            unsealed_age,
            known_operations: std::sync::RwLock::new(Arc::default()),
            shared,
        }
    }

    /// Records one GraphQL request.
    pub fn observe(&self, operation: &str, code: &str, elapsed: Duration) {
        let operation = self.bounded(operation);
        self.requests
            .get_or_create(&RequestLabels {
                operation: operation.clone(),
                code: code.to_owned(),
            })
            .inc();
        self.durations
            .get_or_create(&OperationLabel { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// Names the operations that may have labels of their own (replacing the previous set).
    pub fn set_known_operations(&self, names: impl IntoIterator<Item = String>) {
        if let Ok(mut known) = self.known_operations.write() {
            *known = Arc::new(names.into_iter().collect());
        }
    }

    /// The label an operation name gets: its own when it is known, else `other`.
    pub fn label(&self, operation: &str) -> String {
        self.bounded(operation)
    }

    fn bounded(&self, operation: &str) -> String {
        let known = self
            .known_operations
            .read()
            .map(|k| k.contains(operation))
            .unwrap_or(false);
        if known || FIXED_OPERATION_LABELS.contains(&operation) {
            operation.to_owned()
        } else {
            "other".into()
        }
    }

    /// The text exposition, with pool figures read at scrape time.
    pub fn render(&self, pool_connections: u32, statements: u64) -> String {
        self.pool_connections.set(i64::from(pool_connections));
        self.statements.set(statements);
        let sealer = &self.shared.sealer;
        self.sealer_leader.set(i64::from(sealer.is_leader()));
        self.unsealed_age.set(sealer.unsealed_age().as_secs_f64());
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
