//! The request's database access as resolvers see it: one lazily opened RLS scope, shared by
//! every resolver and DataLoader of the request, and nothing else. It also holds the request's
//! budget: a statement count, a byte count and a deadline. Once any is spent the request is
//! stopped: every later statement is refused, the transaction is rolled back and the caller
//! gets the reason instead of data.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_graphql::async_trait::async_trait;
use sea_orm::{
    ActiveEnum, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult,
};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use uuid::Uuid;

use crate::audit::batch::{BatchFailed, BatchedEvent, Reader};
use crate::audit::record::{self, AuditAction, AuditContext, AuditEntry, AuditLog, AuditOutcome};
use crate::db::{AccessMode, Database, RequestIds, RlsScope, spans};
use crate::error::{ApiError, ErrorCode};
use crate::principal::Principal;
use crate::quota::Decision;
use crate::settings::ApiLimits;

enum ScopeState {
    NotOpened,
    Open(RlsScope),
    /// Opening failed: every later statement of the request fails the same way, rather than
    /// opening a second transaction (the fields of one answer would come from two).
    Failed(ApiError),
    Finished,
}

/// What one request may spend.
#[derive(Debug, Clone, Copy)]
pub struct RequestBudget {
    /// SQL statements resolvers may run (the identity statement, the audit append, BEGIN and
    /// COMMIT are not counted).
    pub max_statements: u64,
    /// Bytes of row data resolvers may load (clinical notes are the large ones); the serialized
    /// response is held to the same bound.
    pub max_bytes: usize,
    /// When the request must be over.
    pub deadline: Instant,
}

impl RequestBudget {
    /// A budget that starts now.
    pub fn starting_now(max_statements: u64, max_bytes: usize, timeout: Duration) -> Self {
        Self {
            max_statements,
            max_bytes,
            deadline: Instant::now() + timeout,
        }
    }
}

/// How a request ends (see `RequestDb::ending`).
const RUNNING: u8 = 0;
const COMMITTING: u8 = 1;
const CUT_OFF: u8 = 2;

/// Put into each GraphQL request's data. Resolvers reach PostgreSQL only through
/// [`RequestDb::conn`], i.e. as the caller; the pool itself is not in the context.
pub struct RequestDb {
    db: Database,
    principal: Principal,
    allow_writes: bool,
    ids: RequestIds,
    state: Mutex<ScopeState>,
    audit: Option<(AuditContext, AuditLog)>,
    /// Set once a mutation resolver asked to write.
    wrote: AtomicBool,
    /// Set by the request policy when the operation is a mutation.
    mutation: AtomicBool,
    budget: RequestBudget,
    statements: AtomicU64,
    bytes: AtomicUsize,
    /// Why the request was stopped, if it was.
    stopped: std::sync::Mutex<Option<ApiError>>,
    /// The client went away before the answer: nothing may commit.
    abandoned: AtomicBool,
    /// Whether the request went ahead with its commit (and its record) or was cut off at its
    /// deadline first: whichever comes first decides, so a request answered "cancelled" never
    /// commits afterwards, and one that commits is answered as it committed.
    ending: std::sync::atomic::AtomicU8,
    /// The answer carries no data (every field's error nulled it): nothing read was disclosed.
    answer_empty: AtomicBool,
    /// What the request's quota check decided (for the response's `RateLimit` headers).
    quota: std::sync::Mutex<Option<Decision>>,
    /// The traced request's validation span, closed when resolution begins.
    validating: std::sync::Mutex<Option<crate::telemetry::spans::Leaf>>,
    /// Whether `validating` may hold a span (spares the lock for every resolver otherwise).
    validation_open: AtomicBool,
}

impl std::fmt::Debug for RequestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestDb")
            .field("principal", &self.principal)
            .field("allow_writes", &self.allow_writes)
            .field("request_id", &self.ids.request_id)
            .finish_non_exhaustive()
    }
}

impl RequestDb {
    /// `allow_writes` is false for GET requests: mutations must arrive by POST. With `audit`,
    /// every PHI access of the request is appended to the audit trail when it ends.
    pub fn new(
        db: Database,
        principal: Principal,
        allow_writes: bool,
        ids: RequestIds,
        audit: Option<AuditContext>,
        budget: RequestBudget,
    ) -> Self {
        Self {
            db,
            principal,
            allow_writes,
            ids,
            state: Mutex::new(ScopeState::NotOpened),
            audit: audit.map(|context| (context, AuditLog::default())),
            wrote: AtomicBool::new(false),
            mutation: AtomicBool::new(false),
            budget,
            statements: AtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            stopped: std::sync::Mutex::new(None),
            abandoned: AtomicBool::new(false),
            ending: std::sync::atomic::AtomicU8::new(RUNNING),
            answer_empty: AtomicBool::new(false),
            quota: std::sync::Mutex::new(None),
            validating: std::sync::Mutex::new(None),
            validation_open: AtomicBool::new(false),
        }
    }

    /// Keeps the traced request's validation span open until resolution begins.
    pub fn validating(&self, span: crate::telemetry::spans::Leaf) {
        if let Ok(mut validating) = self.validating.lock() {
            *validating = Some(span);
            self.validation_open.store(true, Ordering::Release);
        }
    }

    /// Closes the validation span, if one is open: the engine has validated the operation and
    /// is resolving it (or has returned).
    pub fn validated(&self) {
        // Read before writing: every resolver passes here, and untraced requests never hold one.
        if self.validation_open.load(Ordering::Acquire)
            && self.validation_open.swap(false, Ordering::AcqRel)
            && let Ok(mut validating) = self.validating.lock()
        {
            validating.take();
        }
    }

    /// Records the request's quota decision.
    pub fn set_quota(&self, decision: Decision) {
        if let Ok(mut quota) = self.quota.lock() {
            *quota = Some(decision);
        }
    }

    /// The request's quota decision, if quotas are on.
    pub fn quota(&self) -> Option<Decision> {
        self.quota.lock().ok().and_then(|q| *q)
    }

    /// True once the request asked to write (a mutation).
    pub fn wrote(&self) -> bool {
        self.wrote.load(Ordering::Relaxed)
    }

    pub fn set_mutation(&self, mutation: bool) {
        self.mutation.store(mutation, Ordering::Relaxed);
    }

    /// Whether the operation is a mutation (known once the request policy has run).
    pub fn is_mutation(&self) -> bool {
        self.mutation.load(Ordering::Relaxed)
    }

    /// Notes a PHI access for the audit trail (no-op when auditing is off).
    pub fn record(
        &self,
        action: AuditAction,
        outcome: AuditOutcome,
        patients: impl IntoIterator<Item = Uuid>,
    ) {
        if let Some((_, log)) = &self.audit {
            log.record(action, outcome, patients);
        }
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn request_id(&self) -> Uuid {
        self.ids.request_id
    }

    /// Stops the request for `reason` (the first reason wins).
    pub fn stop(&self, reason: ApiError) {
        if let Ok(mut stopped) = self.stopped.lock()
            && stopped.is_none()
        {
            tracing::warn!(code = reason.code.as_str(), reason = %reason.message, "request stopped");
            *stopped = Some(reason);
        }
    }

    /// Why the request was stopped, if it was.
    pub fn stopped(&self) -> Option<ApiError> {
        self.stopped.lock().ok().and_then(|s| s.clone())
    }

    /// Marks the answer as carrying no data although the request ran (a non-null field's error
    /// nulled it whole): its reads are recorded as errors, since none of them was disclosed.
    pub fn answer_empty(&self) {
        self.answer_empty.store(true, Ordering::Relaxed);
    }

    /// Marks the request as abandoned by its client: its transaction will not commit.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }

    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// The deadline passed: cuts the request off unless it already went ahead with its commit.
    /// True when it was cut off (its answer is "cancelled" and it rolls back); false when it is
    /// committing, and its answer is whatever the commit and its record give.
    pub fn cut_off(&self) -> bool {
        self.end_as(CUT_OFF)
    }

    /// Goes ahead with the commit, unless the deadline cut the request off first.
    fn go_ahead(&self) -> bool {
        self.end_as(COMMITTING)
    }

    /// Settles how the request ends as `ending` unless it is already settled otherwise; true
    /// when it ends so.
    fn end_as(&self, ending: u8) -> bool {
        match self
            .ending
            .compare_exchange(RUNNING, ending, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(settled) => settled == ending,
        }
    }

    /// Counts row data a resolver loaded; past the budget the request stops.
    pub fn charge_bytes(&self, bytes: usize) -> Result<(), ApiError> {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > self.budget.max_bytes {
            self.stop(too_large(self.budget.max_bytes));
        }
        self.check()
    }

    /// The time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.budget
            .deadline
            .saturating_duration_since(Instant::now())
    }

    /// Refuses work once the request is stopped, past its deadline or abandoned.
    fn check(&self) -> Result<(), ApiError> {
        if Instant::now() >= self.budget.deadline {
            self.stop(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "the request took longer than the server allows and was cancelled",
            ));
        }
        if let Some(reason) = self.stopped() {
            return Err(reason);
        }
        if self.abandoned() {
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "the client went away",
            ));
        }
        Ok(())
    }

    /// Counts one statement against the budget.
    fn charge_statement(&self) -> Result<(), ApiError> {
        let used = self.statements.fetch_add(1, Ordering::Relaxed) + 1;
        if used > self.budget.max_statements {
            self.stop(ApiError::new(
                ErrorCode::BadUserInput,
                format!(
                    "the operation needs more than {} database statements; ask for less in one request",
                    self.budget.max_statements
                ),
            ));
        }
        self.check()
    }

    /// The request's transaction for reading. A query operation opens it as the application's
    /// read role; under a mutation it is the mutation's read-write transaction.
    pub async fn conn(&self) -> Result<RequestConn<'_>, ApiError> {
        self.check()?;
        let txn = self.open(AccessMode::ReadOnly).await?;
        Ok(RequestConn { txn, request: self })
    }

    /// The request's transaction for writing. Mutation resolvers call this first, so the whole
    /// operation runs in one read-write transaction.
    pub async fn conn_for_write(&self) -> Result<RequestConn<'_>, ApiError> {
        if !self.allow_writes {
            return Err(ApiError::new(
                ErrorCode::BadUserInput,
                "mutations must be sent with POST",
            ));
        }
        self.check()?;
        self.wrote.store(true, Ordering::Relaxed);
        let txn = self.open(AccessMode::ReadWrite).await?;
        Ok(RequestConn { txn, request: self })
    }

    /// Holding the returned guard serialises statements, which one connection does anyway.
    async fn open(
        &self,
        mode: AccessMode,
    ) -> Result<MappedMutexGuard<'_, DatabaseTransaction>, ApiError> {
        let mut state = self.state.lock().await;
        // A mutation's one transaction runs as the writing role from its first statement. A
        // query runs as the reading role, read-only; with auditing on its access is recorded
        // after it commits (see `finish`).
        let mode = if self.is_mutation() {
            AccessMode::ReadWrite
        } else if mode == AccessMode::ReadWrite {
            return Err(ApiError::internal(
                "a write was attempted outside a mutation",
            ));
        } else if self.audit.is_some() {
            AccessMode::ReadThenRecord
        } else {
            AccessMode::ReadOnly
        };
        match &*state {
            ScopeState::NotOpened => {
                let opened = self
                    .db
                    .scope_within(&self.principal, mode, self.ids.clone(), self.remaining())
                    .await;
                match opened {
                    Ok(scope) => *state = ScopeState::Open(scope),
                    Err(e) => {
                        let failed = ApiError::from(e);
                        *state = ScopeState::Failed(failed.clone());
                        return Err(failed);
                    }
                }
            }
            ScopeState::Failed(failed) => return Err(failed.clone()),
            ScopeState::Open(scope) if mode == AccessMode::ReadWrite && scope.mode() != mode => {
                return Err(ApiError::internal(
                    "a write was attempted in a read-only request",
                ));
            }
            _ => {}
        }
        MutexGuard::try_map(state, |s| match s {
            ScopeState::Open(scope) => Some(scope.conn_mut()),
            _ => None,
        })
        .map_err(|_| ApiError::internal("the request's transaction was used after it ended"))
    }

    /// The clinician id the database matched to the caller (opens the scope if needed).
    pub async fn clinician_id(&self) -> Result<Option<i32>, ApiError> {
        drop(self.conn().await?);
        let state = self.state.lock().await;
        Ok(match &*state {
            ScopeState::Open(scope) => scope.clinician_id(),
            _ => None,
        })
    }

    /// Ends the request's transaction and writes the audit trail, failing closed: if the trail
    /// cannot be written the caller gets an error instead of data.
    ///
    /// - No errors: a mutation's events are appended in its own transaction, which commits
    ///   them together with the data written. A query's transaction commits read-only and its
    ///   events are then appended by the audit batch writer; the answer waits until they have
    ///   committed. (A clinician holding a live emergency grant is the exception: their query's
    ///   events are appended in its transaction, which splits emergency from treatment access
    ///   against the read's own snapshot.)
    /// - A mutation with errors: everything is rolled back; the events are then written in a
    ///   transaction of their own, steps that had succeeded marked `rolled_back`.
    /// - A query with errors (e.g. a forbidden field) did disclose the rest of its data, but a
    ///   failed statement leaves its transaction unusable: it is rolled back and the events,
    ///   successful reads included, are then recorded by the audit batch writer, as the reader
    ///   the read ran as.
    /// - A transaction whose COMMIT or ROLLBACK fails withholds its answer; its events are
    ///   recorded as a failed request's, successful steps as `error`.
    /// - A stopped or abandoned request returns nothing: it is rolled back, and its reads are
    ///   recorded with outcome `error` (they ran, nothing was disclosed).
    pub async fn finish(&self, had_errors: bool) -> Result<(), ApiError> {
        let opened = std::mem::replace(&mut *self.state.lock().await, ScopeState::Finished);
        let scope = match opened {
            ScopeState::Open(scope) => Some(scope),
            _ => None,
        };
        let withheld = self.stopped().is_some()
            || self.abandoned()
            || self.answer_empty.load(Ordering::Relaxed);
        // Past this point a deadline no longer cuts the request off: the answer waits for the
        // commit and the record (each bounded by the statement timeout) and says what they did.
        let withheld = withheld || !self.go_ahead();
        let failed = had_errors || withheld;
        let Some((context, log)) = &self.audit else {
            return match scope {
                Some(scope) if !withheld && (!had_errors || !self.wrote()) => {
                    Ok(scope.commit().await?)
                }
                Some(scope) => Ok(scope.rollback().await?),
                None => Ok(()),
            };
        };
        let entries = log.take();
        if !failed {
            let Some(mut scope) = scope else {
                return Ok(());
            };
            if scope.records_after_commit() {
                let read = scope.take_read_in_flight();
                let mut events = BatchedEvent::of(
                    &Reader {
                        ids: &self.ids,
                        clinician_id: scope.clinician_id(),
                        issuer: &self.principal.issuer,
                        subject: &self.principal.subject,
                        app_role: scope.role(),
                    },
                    context,
                    &entries,
                );
                // A commit that fails withholds the answer, but the reads ran: they are still
                // recorded, as errors (nothing was disclosed).
                let committed = scope.commit().await;
                if committed.is_err() {
                    let error = AuditOutcome::Error.to_value();
                    for event in &mut events {
                        if event.outcome == AuditOutcome::Success.to_value() {
                            event.outcome = error.to_owned();
                        }
                    }
                }
                self.append_batch(events, read, context).await?;
                return Ok(committed?);
            }
            if !entries.is_empty()
                && let Err(e) = record::append(scope.conn(), context, &entries).await
            {
                let _ = scope.rollback().await;
                return Err(audit_failed(&e, context));
            }
            let reader = scope
                .is_reading()
                .then(|| (scope.clinician_id(), scope.role().to_owned()));
            return match scope.commit().await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // The failed commit took the events appended in the transaction with it:
                    // the request is recorded as a failed one, its answer withheld.
                    self.record_failed(context, entries, reader, true).await?;
                    Err(e.into())
                }
            };
        }
        // Who read, as the read's own transaction found them: looked up again afterwards, a
        // clinician deactivated meanwhile would be recorded as nobody.
        let reader = scope
            .as_ref()
            .filter(|scope| scope.is_reading())
            .map(|scope| (scope.clinician_id(), scope.role().to_owned()));
        // A rollback that fails (the connection broke) still leaves reads that ran: they are
        // recorded before its error is returned, and the answer is withheld (that error is it).
        let rolled_back = match scope {
            Some(scope) => scope.rollback().await.map_err(ApiError::from),
            None => Ok(()),
        };
        self.record_failed(context, entries, reader, withheld || rolled_back.is_err())
            .await?;
        rolled_back
    }

    /// Records the events of a request whose transaction did not commit: successful steps
    /// become `error` when the answer is withheld, `rolled_back` when it wrote. Reads go
    /// through the batch writer as `reader` (the reader and role the read ran as), which
    /// decides the purpose with the same allowance for a grant that expired since the read;
    /// appended in a new transaction instead, a read made through a grant that expired
    /// meanwhile was recorded as treatment. A mutation's events go in a transaction of their own.
    async fn record_failed(
        &self,
        context: &AuditContext,
        mut entries: Vec<AuditEntry>,
        reader: Option<ReadAs>,
        withheld: bool,
    ) -> Result<(), ApiError> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in &mut entries {
            if entry.outcome == AuditOutcome::Success {
                entry.outcome = if withheld {
                    AuditOutcome::Error
                } else if self.wrote() {
                    AuditOutcome::RolledBack
                } else {
                    AuditOutcome::Success
                };
            }
        }
        if let Some((clinician_id, role)) = reader {
            let events = BatchedEvent::of(
                &Reader {
                    ids: &self.ids,
                    clinician_id,
                    issuer: &self.principal.issuer,
                    subject: &self.principal.subject,
                    app_role: &role,
                },
                context,
                &entries,
            );
            return self.append_batch(events, None, context).await;
        }
        let scope = self
            .db
            .scope(&self.principal, AccessMode::ReadAndAudit, self.ids.clone())
            .await?;
        if let Err(e) = record::append(scope.conn(), context, &entries).await {
            let _ = scope.rollback().await;
            return Err(audit_failed(&e, context));
        }
        Ok(scope.commit().await?)
    }

    /// Hands `events` to the audit batch writer and waits until they are written.
    async fn append_batch(
        &self,
        events: Vec<BatchedEvent>,
        read: Option<crate::audit::batch::ReadInFlight>,
        context: &AuditContext,
    ) -> Result<(), ApiError> {
        if events.is_empty() {
            return Ok(());
        }
        let span = spans::step("SELECT rowguard_audit.append_batch");
        spans::while_open(span, self.db.record_after_commit(events, read))
            .await
            .map_err(|e| batch_failed(&e, context))
    }
}

/// The clinician id and the application role a request's reads ran as.
type ReadAs = (Option<i32>, String);

/// The error for a request whose answer would be larger than `max` bytes.
pub fn too_large(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::BadUserInput,
        format!("the answer would be larger than {max} bytes; ask for fewer records or fields"),
    )
}

fn audit_failed(error: &crate::db::DbError, context: &AuditContext) -> ApiError {
    refused(error.sqlstate().as_deref(), context)
}

fn batch_failed(error: &BatchFailed, context: &AuditContext) -> ApiError {
    refused(error.sqlstate.as_deref(), context)
}

fn refused(sqlstate: Option<&str>, context: &AuditContext) -> ApiError {
    context.failures.inc();
    tracing::error!(
        sqlstate = sqlstate.unwrap_or("none"),
        "audit trail write failed; request refused"
    );
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        "the request could not be recorded in the audit trail, so it was not carried out",
    )
}

/// The request's transaction as resolvers use it: every statement is counted against the
/// request's budget and refused once the request is stopped.
pub struct RequestConn<'a> {
    txn: MappedMutexGuard<'a, DatabaseTransaction>,
    request: &'a RequestDb,
}

impl std::fmt::Debug for RequestConn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestConn").finish_non_exhaustive()
    }
}

impl RequestConn<'_> {
    fn charge(&self) -> Result<(), DbErr> {
        // The reason is kept on the request; resolvers only need to stop.
        self.request
            .charge_statement()
            .map_err(|_| DbErr::Custom(crate::db::NOT_SENT.to_owned()))
    }
}

#[async_trait]
impl ConnectionTrait for RequestConn<'_> {
    fn get_database_backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: sea_orm::Statement) -> Result<ExecResult, DbErr> {
        self.charge()?;
        let span = spans::statement(&stmt.sql);
        spans::while_open(span, self.txn.execute_raw(stmt)).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.charge()?;
        spans::while_open(spans::statement(sql), self.txn.execute_unprepared(sql)).await
    }

    async fn query_one_raw(&self, stmt: sea_orm::Statement) -> Result<Option<QueryResult>, DbErr> {
        self.charge()?;
        let span = spans::statement(&stmt.sql);
        spans::while_open(span, self.txn.query_one_raw(stmt)).await
    }

    async fn query_all_raw(&self, stmt: sea_orm::Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.charge()?;
        let span = spans::statement(&stmt.sql);
        spans::while_open(span, self.txn.query_all_raw(stmt)).await
    }
}

/// The request's database access, from a resolver's context.
pub fn request_db(ctx: &async_graphql::Context<'_>) -> Result<std::sync::Arc<RequestDb>, ApiError> {
    let db = ctx
        .data_opt::<std::sync::Arc<RequestDb>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("a resolver ran without a request database"))?;
    // A resolver is running: validation is over.
    db.validated();
    Ok(db)
}

/// The limits the schema was built with, from a resolver's context.
pub fn limits<'c>(ctx: &async_graphql::Context<'c>) -> Result<&'c ApiLimits, ApiError> {
    ctx.data_opt::<ApiLimits>()
        .ok_or_else(|| ApiError::internal("the schema was built without its limits"))
}
