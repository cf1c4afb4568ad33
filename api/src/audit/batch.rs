//! Group commit for the audit trail's read events.
//!
//! A read that commits read-only hands its events to one writer task per gateway, which appends
//! whatever has queued meanwhile with one `rowguard_audit.append_batch` statement (its own
//! transaction), and only then lets each request answer. An answer never leaves before its
//! record has committed, and a request whose events cannot be written is refused (a batch
//! refused for its contents is retried request by request, so only the request at fault fails).
//! The database's cost of recording a read (transaction id, commit record, statement start-up,
//! constraint set-up) is paid once per batch instead of once per request; under load the batch
//! grows by itself, because requests queue while the previous batch is being written.

use sea_orm::{ActiveEnum, DbBackend, Statement};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::record::{AuditContext, AuditEntry};
use crate::db::RequestIds;

/// The most requests one statement records (each with up to 16 events); more wait for the next
/// batch.
const MAX_BATCH: usize = 256;

/// One event as `rowguard_audit.append_batch` reads it (ids, names and codes, never PHI).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BatchedEvent {
    pub request_id: Uuid,
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
    pub clinician_id: Option<i32>,
    pub issuer: String,
    pub subject: String,
    pub client_id: Option<String>,
    /// The reading role the access ran as (the database derives the purpose from it).
    pub app_role: String,
    pub operation_name: Option<String>,
    pub persisted_query_hash: Option<String>,
    pub action: String,
    pub outcome: String,
    pub patient_ids: Vec<Uuid>,
}

/// Who read, in which request: what every event of one request shares.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    pub ids: &'a RequestIds,
    pub clinician_id: Option<i32>,
    pub issuer: &'a str,
    pub subject: &'a str,
    pub app_role: &'a str,
}

impl BatchedEvent {
    /// The events of one request's entries.
    pub fn of(reader: &Reader<'_>, context: &AuditContext, entries: &[AuditEntry]) -> Vec<Self> {
        entries
            .iter()
            .map(|entry| Self {
                request_id: reader.ids.request_id,
                correlation_id: reader.ids.correlation_id.clone(),
                trace_id: reader.ids.trace_id.clone(),
                clinician_id: reader.clinician_id,
                issuer: reader.issuer.to_owned(),
                subject: reader.subject.to_owned(),
                client_id: context.client_id.clone(),
                app_role: reader.app_role.to_owned(),
                operation_name: context.operation_name.clone(),
                persisted_query_hash: context.persisted_query_hash.clone(),
                action: entry.action.to_value(),
                outcome: entry.outcome.to_value(),
                patient_ids: entry.patients.iter().copied().collect(),
            })
            .collect()
    }
}

/// The append of a batch, waiting at most `lock_timeout_ms` for a lock (public so the benchmark
/// replays exactly this statement).
pub fn append_batch_statement(
    events: &[BatchedEvent],
    lock_timeout_ms: u64,
) -> Result<Statement, serde_json::Error> {
    let json = serde_json::to_string(events)?;
    Ok(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "select rowguard_audit.append_batch($1::text::jsonb, $2)",
        [
            json.into(),
            i32::try_from(lock_timeout_ms).unwrap_or(i32::MAX).into(),
        ],
    ))
}

/// Why a batch was not written: the SQLSTATE if PostgreSQL refused it (never its message, which
/// can quote values).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit batch could not be written")]
pub struct BatchFailed {
    pub sqlstate: Option<String>,
}

impl BatchFailed {
    fn from_db(error: &crate::db::DbError) -> Self {
        Self {
            sqlstate: error.sqlstate(),
        }
    }

    /// Whether PostgreSQL refused what the batch contains (a value it cannot store, a
    /// constraint, a role that may not be recorded) rather than failed to write it at all.
    fn blames_its_events(&self) -> bool {
        self.sqlstate
            .as_deref()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23") || code == "42501")
    }
}

struct Pending {
    events: Vec<BatchedEvent>,
    written: oneshot::Sender<Result<(), BatchFailed>>,
}

/// The handle requests queue their events on. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditBatcher {
    queue: mpsc::UnboundedSender<Pending>,
}

impl AuditBatcher {
    /// Starts the writer task on `db` (as the gateway's login role, which alone may call
    /// `append_batch`). It ends when the last handle is dropped.
    pub fn start(db: crate::db::Database) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(db, receiver));
        Self { queue }
    }

    /// False once the writer task has ended (it only ends if it panicked).
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Queues `events` and waits until the transaction that appends them has committed.
    pub async fn record(&self, events: Vec<BatchedEvent>) -> Result<(), BatchFailed> {
        if events.is_empty() {
            return Ok(());
        }
        let (written, outcome) = oneshot::channel();
        self.queue
            .send(Pending { events, written })
            .map_err(|_| BatchFailed { sqlstate: None })?;
        outcome.await.unwrap_or(Err(BatchFailed { sqlstate: None }))
    }
}

async fn write_batches(db: crate::db::Database, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::new();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let events: Vec<BatchedEvent> = batch
            .iter()
            .flat_map(|p| p.events.iter().cloned())
            .collect();
        let outcome = write(&db, &events).await;
        let blames_an_event = outcome.as_ref().is_err_and(BatchFailed::blames_its_events);
        if !blames_an_event || batch.len() == 1 {
            answer(batch.drain(..), &outcome);
            continue;
        }
        // One request's events must not refuse everyone else's answers: each is tried alone.
        // Only when the events were at fault: a batch that failed on a lock wait or a lost
        // connection would fail again, each request after another full wait.
        for pending in batch.drain(..) {
            let alone = write(&db, &pending.events).await;
            answer(std::iter::once(pending), &alone);
        }
    }
}

fn answer(pending: impl Iterator<Item = Pending>, outcome: &Result<(), BatchFailed>) {
    if let Err(failed) = outcome {
        tracing::error!(
            sqlstate = failed.sqlstate.as_deref().unwrap_or("none"),
            "audit batch write failed"
        );
    }
    for pending in pending {
        // A request that stopped waiting needs no answer.
        let _ = pending.written.send(outcome.clone());
    }
}

async fn write(db: &crate::db::Database, events: &[BatchedEvent]) -> Result<(), BatchFailed> {
    // The same bound as any request's statement: a batch stuck behind a lock (a partition being
    // created or detached) fails its requests (closed) instead of holding every later answer.
    let statement = append_batch_statement(events, db.statement_timeout_ms())
        .map_err(|_| BatchFailed { sqlstate: None })?;
    let appended = db
        .count_alone(statement)
        .await
        .map_err(|e| BatchFailed::from_db(&e))?;
    // Every event is at least one row (an access split into treatment and emergency is two).
    // Fewer rows means something in the database dropped events as they were written (a
    // trigger or rule that the trail's owner added): the reads are refused, not answered
    // unrecorded, and `audit verify` could never see what was never stored.
    if appended < i64::try_from(events.len()).unwrap_or(i64::MAX) {
        tracing::error!(
            events = events.len(),
            appended,
            "the audit trail stored fewer rows than the batch held events: something in the database drops them"
        );
        return Err(BatchFailed { sqlstate: None });
    }
    Ok(())
}
