//! The request's database access as resolvers see it: one lazily opened RLS scope, shared by
//! every resolver and DataLoader of the request, and nothing else.

use sea_orm::DatabaseTransaction;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use uuid::Uuid;

use crate::db::{AccessMode, Database, RlsScope};
use crate::error::ApiError;
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
    request_id: Uuid,
    state: Mutex<ScopeState>,
}

impl std::fmt::Debug for RequestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestDb")
            .field("principal", &self.principal)
            .field("allow_writes", &self.allow_writes)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl RequestDb {
    /// `allow_writes` is false for GET requests: mutations must arrive by POST.
    pub fn new(db: Database, principal: Principal, allow_writes: bool, request_id: Uuid) -> Self {
        Self {
            db,
            principal,
            allow_writes,
            request_id,
            state: Mutex::new(ScopeState::NotOpened),
        }
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn request_id(&self) -> Uuid {
        self.request_id
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
        self.open(AccessMode::ReadWrite).await
    }

    /// Holding the returned guard serialises statements, which one connection does anyway.
    async fn open(
        &self,
        mode: AccessMode,
    ) -> Result<MappedMutexGuard<'_, DatabaseTransaction>, ApiError> {
        let mut state = self.state.lock().await;
        match &*state {
            ScopeState::NotOpened => {
                let scope = self
                    .db
                    .scope(&self.principal, mode, self.request_id)
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

    /// Ends the request's transaction: commit when `success`, otherwise roll back. A request
    /// that never touched the database has nothing to end.
    pub async fn finish(&self, success: bool) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        let ScopeState::Open(scope) = std::mem::replace(&mut *state, ScopeState::Finished) else {
            return Ok(());
        };
        if success {
            scope.commit().await?;
        } else {
            scope.rollback().await?;
        }
        Ok(())
    }
}
