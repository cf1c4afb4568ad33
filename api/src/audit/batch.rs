//! Group commit for the audit trail's read events.
//!
//! A read that commits read-only hands its events to one writer task per gateway, which appends
//! whatever has queued meanwhile with one `rowguard_audit.append_batch` statement (its own
//! transaction), and only then lets each request answer. An answer never leaves before its
//! record has committed, and a request whose events cannot be written is refused (a batch
//! refused for its contents is retried request by request, so only the request at fault fails).
//! The database's cost of recording a read (transaction id, commit record, statement start-up,
//! constraint set-up) is paid once per batch instead of once per request.
//!
//! Batches grow two ways. Requests queue while the previous batch is being written, and a writer
//! holding events waits (at most [`AuditBatcher::start`]'s `gather` bound) for the reads already
//! running in this gateway to hand in theirs, as PostgreSQL's own `commit_delay` waits for
//! sibling transactions. Without that wait, a gateway at moderate concurrency writes one or two
//! events per transaction, and the transaction, not the events, is most of the cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use sea_orm::{ActiveEnum, DbBackend, Statement};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
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
        // Durable before the answers it stands for leave (`crate::db::durable_commit`): set in
        // a subquery evaluated first, it holds for the statement's own transaction.
        concat!(
            "select rowguard_audit.append_batch($1::text::jsonb, $2) from (select ",
            crate::db::durable_commit!(),
            " offset 0) durable"
        ),
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
    reading: Arc<ReadsInFlight>,
}

/// The reads of this gateway that are running and will hand events to the writer, counted in
/// two alternating generations: the writer waits only for the reads that had started when it
/// took its batch, never for reads that start while it waits (under steady load some always are).
#[derive(Debug, Default)]
struct ReadsInFlight {
    running: [AtomicUsize; 2],
    /// The generation new reads join (0 or 1).
    current: AtomicUsize,
    /// Woken each time a read hands in its events or ends without any.
    changed: Notify,
}

/// A read that will record its events through the batch writer: while it is held, a writer
/// holding a batch taken after it started waits for it (within its bound). Dropped once the
/// events are queued, or when the read ends without recording.
#[derive(Debug)]
pub struct ReadInFlight {
    reads: Arc<ReadsInFlight>,
    generation: usize,
}

impl Drop for ReadInFlight {
    fn drop(&mut self) {
        self.reads.running[self.generation].fetch_sub(1, Ordering::AcqRel);
        self.reads.changed.notify_one();
    }
}

impl AuditBatcher {
    /// Starts the writer task on `db` (as the gateway's login role, which alone may call
    /// `append_batch`). A writer holding events waits up to `gather` for reads in flight to
    /// join the batch (zero: it writes what has queued at once). It ends when the last handle
    /// is dropped.
    pub fn start(db: crate::db::Database, gather: Duration) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let reading = Arc::new(ReadsInFlight::default());
        tokio::spawn(write_batches(db, receiver, reading.clone(), gather));
        Self { queue, reading }
    }

    /// False once the writer task has ended (it only ends if it panicked).
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Announces a read that will record its events here.
    pub fn reading(&self) -> ReadInFlight {
        // A read that joins the generation the writer is just leaving is waited for one batch
        // early: more waiting within the bound, never less.
        let generation = self.reading.current.load(Ordering::Acquire);
        self.reading.running[generation].fetch_add(1, Ordering::AcqRel);
        ReadInFlight {
            reads: self.reading.clone(),
            generation,
        }
    }

    /// Queues `events` and waits until the transaction that appends them has committed.
    /// `read`, the announcement of the read that produced them, ends once they are queued.
    pub async fn record(
        &self,
        events: Vec<BatchedEvent>,
        read: Option<ReadInFlight>,
    ) -> Result<(), BatchFailed> {
        if events.is_empty() {
            return Ok(());
        }
        let (written, outcome) = oneshot::channel();
        let queued = self.queue.send(Pending { events, written });
        drop(read);
        queued.map_err(|_| BatchFailed { sqlstate: None })?;
        outcome.await.unwrap_or(Err(BatchFailed { sqlstate: None }))
    }
}

async fn write_batches(
    db: crate::db::Database,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    reading: Arc<ReadsInFlight>,
    gather: Duration,
) {
    let mut batch: Vec<Pending> = Vec::new();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !gather.is_zero() && batch.len() < MAX_BATCH {
            // Reads that start from now on join the next batch.
            let started = reading.current.fetch_xor(1, Ordering::AcqRel);
            wait_for_reads(&reading, started, Instant::now() + gather).await;
            // Whatever is queued now, without waiting: a send still half done on another
            // thread goes to the next batch rather than park this one.
            let room = MAX_BATCH - batch.len();
            let _ = queue.recv_many(&mut batch, room).now_or_never();
        }
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

/// Returns once no read of `generation` is running, or at `deadline`. A read ends its
/// announcement only after queueing its events, so whatever is announced gone is already queued.
async fn wait_for_reads(reading: &ReadsInFlight, generation: usize, deadline: Instant) {
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    // `notify_one` keeps a wake-up for a waiter that has not arrived yet, so a read ending
    // between the check and the wait is not missed; a stale one only costs another check.
    while reading.running[generation].load(Ordering::Acquire) > 0 {
        tokio::select! {
            () = reading.changed.notified() => {}
            () = &mut timer => return,
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
