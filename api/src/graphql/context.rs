//! The request's database access as resolvers see it: one lazily opened RLS scope, shared by
//! every resolver and DataLoader of the request, and nothing else.

use sea_orm::DatabaseTransaction;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use uuid::Uuid;

use crate::audit::record::{self, AuditAction, AuditContext, AuditLog, AuditOutcome};
use crate::db::{AccessMode, Database, RequestIds, RlsScope};
use crate::error::{ApiError, ErrorCode};
use crate::principal::Principal;

enum ScopeState {
    NotOpened,
    Open(RlsScope),
    Finished,
}

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
    wrote: std::sync::atomic::AtomicBool,
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
    ) -> Self {
        Self {
            db,
            principal,
            allow_writes,
            ids,
            state: Mutex::new(ScopeState::NotOpened),
            audit: audit.map(|context| (context, AuditLog::default())),
            wrote: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True once the request asked to write (a mutation).
    pub fn wrote(&self) -> bool {
        self.wrote.load(std::sync::atomic::Ordering::Relaxed)
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

    /// The request's transaction for reading. A query operation opens it `READ ONLY`; under a
    /// mutation it is the mutation's read-write transaction.
    pub async fn conn(&self) -> Result<MappedMutexGuard<'_, DatabaseTransaction>, ApiError> {
        self.open(AccessMode::ReadOnly).await
    }

    /// The request's transaction for writing. Mutation resolvers call this first, so the whole
    /// operation runs in one read-write transaction.
    pub async fn conn_for_write(
        &self,
    ) -> Result<MappedMutexGuard<'_, DatabaseTransaction>, ApiError> {
        if !self.allow_writes {
            return Err(ApiError::new(
                crate::error::ErrorCode::BadUserInput,
                "mutations must be sent with POST",
            ));
        }
        self.wrote.store(true, std::sync::atomic::Ordering::Relaxed);
        self.open(AccessMode::ReadWrite).await
    }

    /// Holding the returned guard serialises statements, which one connection does anyway.
    async fn open(
        &self,
        mode: AccessMode,
    ) -> Result<MappedMutexGuard<'_, DatabaseTransaction>, ApiError> {
        let mut state = self.state.lock().await;
        // The audit append is a write, so with auditing on every request's transaction is
        // read-write; query resolvers still only ever call `conn` (reads).
        let mode = if self.audit.is_some() {
            AccessMode::ReadWrite
        } else {
            mode
        };
        match &*state {
            ScopeState::NotOpened => {
                let scope = self
                    .db
                    .scope(&self.principal, mode, self.ids.clone())
                    .await?;
                *state = ScopeState::Open(scope);
            }
            ScopeState::Open(scope)
                if mode == AccessMode::ReadWrite && scope.mode() == AccessMode::ReadOnly =>
            {
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
    /// - No errors: the events are appended in the request's own transaction, which commits
    ///   them together with any data written.
    /// - A mutation with errors: everything is rolled back; the events are then written in a
    ///   transaction of their own, steps that had succeeded marked `rolled_back`.
    /// - A query with errors (e.g. a forbidden field) did disclose the rest of its data, but a
    ///   failed statement leaves its transaction unusable: it is rolled back and the events,
    ///   successful reads included, are written in a transaction of their own.
    pub async fn finish(&self, had_errors: bool) -> Result<(), ApiError> {
        let opened = std::mem::replace(&mut *self.state.lock().await, ScopeState::Finished);
        let scope = match opened {
            ScopeState::Open(scope) => Some(scope),
            _ => None,
        };
        let Some((context, log)) = &self.audit else {
            return match scope {
                Some(scope) if !had_errors || !self.wrote() => Ok(scope.commit().await?),
                Some(scope) => Ok(scope.rollback().await?),
                None => Ok(()),
            };
        };
        let mut entries = log.take();
        if !had_errors {
            if let Some(scope) = scope {
                if !entries.is_empty()
                    && let Err(e) = record::append(scope.conn(), context, &entries).await
                {
                    let _ = scope.rollback().await;
                    return Err(audit_failed(&e, context));
                }
                scope.commit().await?;
            }
            return Ok(());
        }
        if let Some(scope) = scope {
            scope.rollback().await?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        if self.wrote() {
            for entry in &mut entries {
                if entry.outcome == AuditOutcome::Success {
                    entry.outcome = AuditOutcome::RolledBack;
                }
            }
        }
        let scope = self
            .db
            .scope(&self.principal, AccessMode::ReadWrite, self.ids.clone())
            .await?;
        if let Err(e) = record::append(scope.conn(), context, &entries).await {
            let _ = scope.rollback().await;
            return Err(audit_failed(&e, context));
        }
        scope.commit().await?;
        Ok(())
    }
}

fn audit_failed(error: &crate::db::DbError, context: &AuditContext) -> ApiError {
    context.failures.inc();
    tracing::error!(
        sqlstate = error.sqlstate().as_deref().unwrap_or("none"),
        "audit trail write failed; request refused"
    );
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        "the request could not be recorded in the audit trail, so it was not carried out",
    )
}
