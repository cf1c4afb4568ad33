//! What a request did to PHI, collected while it runs and appended to the audit trail when it
//! ends: in the same transaction when it succeeds, in a transaction of its own when it failed
//! (so failed attempts are recorded too, and nothing of the failed work is).

use std::collections::BTreeSet;

use sea_orm::{ActiveEnum, ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};
use uuid::Uuid;

use crate::db::DbError;

pub use entities::audit_event::{Action as AuditAction, Outcome as AuditOutcome};

/// The outcome a coded API error stands for.
impl From<&crate::error::ApiError> for AuditOutcome {
    fn from(error: &crate::error::ApiError) -> Self {
        use crate::error::ErrorCode;
        match error.code {
            ErrorCode::Forbidden => AuditOutcome::Denied,
            ErrorCode::NotFound => AuditOutcome::NotFound,
            ErrorCode::Conflict => AuditOutcome::Conflict,
            ErrorCode::BadUserInput => AuditOutcome::Invalid,
            _ => AuditOutcome::Error,
        }
    }
}

/// One pending event: an action, its outcome and every patient it touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    pub patients: BTreeSet<Uuid>,
}

/// Per-request facts every event carries (names and hashes, never PHI).
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    pub operation_name: Option<String>,
    pub persisted_query_hash: Option<String>,
    pub client_id: Option<String>,
    /// Counts requests refused because their events could not be written.
    pub failures: prometheus_client::metrics::counter::Counter,
}

/// Entries of one request; entries with the same action and outcome merge into one event.
#[derive(Debug, Default)]
pub struct AuditLog {
    entries: std::sync::Mutex<Vec<AuditEntry>>,
}

impl AuditLog {
    pub fn record(
        &self,
        action: AuditAction,
        outcome: AuditOutcome,
        patients: impl IntoIterator<Item = Uuid>,
    ) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        match entries
            .iter_mut()
            .find(|e| e.action == action && e.outcome == outcome)
        {
            Some(entry) => entry.patients.extend(patients),
            None => entries.push(AuditEntry {
                action,
                outcome,
                patients: patients.into_iter().collect(),
            }),
        }
    }

    pub fn take(&self) -> Vec<AuditEntry> {
        self.entries
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }
}

/// The append of one event (public so the benchmark replays exactly this statement).
pub fn append_statement(
    action: AuditAction,
    outcome: AuditOutcome,
    patients: &[Uuid],
    context: &AuditContext,
) -> Statement {
    let values: [Value; 6] = [
        action.to_value().into(),
        outcome.to_value().into(),
        patients.to_vec().into(),
        context.operation_name.clone().into(),
        context.persisted_query_hash.clone().into(),
        context.client_id.clone().into(),
    ];
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        "select rowguard_audit.append($1, $2, $3, $4, $5, $6)",
        values,
    )
}

/// Appends `entries` through `rowguard_audit.append`, which stamps the actor from the
/// transaction's settings and splits emergency access from treatment.
pub async fn append(
    txn: &DatabaseTransaction,
    context: &AuditContext,
    entries: &[AuditEntry],
) -> Result<(), DbError> {
    for entry in entries {
        let patients: Vec<Uuid> = entry.patients.iter().copied().collect();
        let statement = append_statement(entry.action, entry.outcome, &patients, context);
        let span = crate::db::spans::step("SELECT rowguard_audit.append");
        crate::db::spans::while_open(span, txn.execute_raw(statement))
            .await
            .map_err(DbError::Statement)?;
    }
    Ok(())
}
