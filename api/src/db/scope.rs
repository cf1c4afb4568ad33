use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};
use uuid::Uuid;

use super::{Database, DbError, spans};
use crate::principal::{AppRole, Principal};

/// Whether a request may write, decided by the database: the application role it runs as and
/// the transaction's access mode. A query cannot turn into a write even through a resolver bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    /// The reading role in a `READ ONLY` transaction (auditing off).
    ReadOnly,
    /// The reading role in a read-write transaction, so that the access can be appended to the
    /// audit trail; the role holds no write privilege on any clinical table, so the trail's
    /// append function is the only thing it can write through.
    ReadAndAudit,
    /// The reading role in a `READ ONLY` transaction whose access is recorded after it commits,
    /// by the audit batch writer (many requests per write). A clinician holding a live
    /// emergency grant gets a read-write transaction instead (see
    /// [`RlsScope::records_after_commit`]): which of their patients were reached only through the
    /// grant is decided against the read's own snapshot, by the in-transaction append.
    ReadThenRecord,
    /// The writing role (`<role>_writer`): mutations only.
    ReadWrite,
}

/// One request's transaction, running as the caller.
///
/// Created by [`Database::scope`]: the transaction has switched to the caller's application role
/// and carries `app.current_user` (the clinician id the database found for the caller's issuer and
/// subject, or `''` if none) and `app.request_id` as transaction-local settings. When it commits or
/// rolls back, PostgreSQL forgets all three, so the pooled connection carries nothing to the next
/// request.
#[derive(Debug)]
pub struct RlsScope {
    txn: DatabaseTransaction,
    clinician_id: Option<i32>,
    /// The application role the transaction runs as.
    role: String,
    /// The caller held a live emergency grant when the transaction began (asked only in
    /// [`AccessMode::ReadThenRecord`]).
    emergency_grant: bool,
    request_id: Uuid,
    mode: AccessMode,
    /// For a read recorded after it commits: its announcement to the audit batch writer.
    read_in_flight: Option<crate::audit::batch::ReadInFlight>,
}

// All of the identity goes in with ONE statement, so it costs one round trip and the transaction
// never runs a query under a half-set identity. `set_config(..., true)` is transaction-local
// (`SET LOCAL`); a session-level setting would leak to the next request on this connection.
// Values are bound parameters: nothing from a token is ever spliced into SQL. The issuer and
// subject are kept too, for the audit trail's actor stamp, and the per-request limits ride
// along. `transaction_read_only` may be switched on at any point of a transaction (only
// switching it off after the first query is refused), which saves a separate
// `SET TRANSACTION READ ONLY`; setting it off in a read-write transaction changes nothing.
//
// `synchronous_commit` is at least `local` ([`super::durable_commit`]).
//
// The clinician id is looked up once, in a subquery kept from being folded into the select list
// (`OFFSET 0`), which would call the lookup once per use. `$7` is `on`, `off`, or
// `unless-emergency`: read-only unless the clinician holds a live emergency grant, which is then
// returned as `emergency_grant`.
const IDENTITY: &str = concat!(
    "select \
     pg_catalog.set_config('role', $1, true), \
     pg_catalog.set_config('app.current_user', coalesce(i.id::text, ''), true) as clinician_id, \
     pg_catalog.set_config('app.request_id', $4, true), \
     pg_catalog.set_config('app.issuer', $2, true), \
     pg_catalog.set_config('app.subject', $3, true), \
     pg_catalog.set_config('statement_timeout', $5, true), \
     pg_catalog.set_config('idle_in_transaction_session_timeout', $6, true), \
     pg_catalog.set_config('transaction_read_only', \
       case when $7 <> 'unless-emergency' then $7 when i.emergency then 'off' else 'on' end, true), \
     pg_catalog.set_config('app.correlation_id', $8, true), \
     pg_catalog.set_config('app.trace_id', $9, true), \
     pg_catalog.set_config('application_name', $10, true), ",
    super::durable_commit!(),
    ", i.emergency as emergency_grant \
     from (select l.id, $7 = 'unless-emergency' and rowguard.holds_live_emergency_grant(l.id) \
             as emergency \
           from (select rowguard.clinician_id_for($2, $3) as id offset 0) l offset 0) i"
);

/// What the identity statement sets for one transaction.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    /// The application role the transaction runs as.
    pub role: &'a str,
    pub issuer: &'a str,
    pub subject: &'a str,
    pub request_id: Uuid,
    pub statement_timeout_ms: u64,
    pub idle_in_transaction_timeout_ms: u64,
    /// Decides `transaction_read_only` (see [`AccessMode`]).
    pub mode: AccessMode,
    pub correlation_id: Option<&'a str>,
    pub trace_id: Option<&'a str>,
}

impl Identity<'_> {
    /// The one statement that sets it (and returns the clinician id as `clinician_id`).
    pub fn statement(&self) -> Statement {
        // A traced request shows its trace id in pg_stat_activity and in server logs that print
        // `%a`, so a slow statement leads to its trace; the session's name returns at COMMIT.
        let application_name = match self.trace_id {
            Some(trace) => format!("rowguard/{trace}"),
            None => "rowguard".to_owned(),
        };
        let values: [Value; 10] = [
            self.role.into(),
            self.issuer.into(),
            self.subject.into(),
            self.request_id.to_string().into(),
            self.statement_timeout_ms.to_string().into(),
            self.idle_in_transaction_timeout_ms.to_string().into(),
            match self.mode {
                AccessMode::ReadOnly => "on",
                AccessMode::ReadThenRecord => "unless-emergency",
                AccessMode::ReadAndAudit | AccessMode::ReadWrite => "off",
            }
            .into(),
            self.correlation_id.unwrap_or_default().into(),
            self.trace_id.unwrap_or_default().into(),
            application_name.into(),
        ];
        Statement::from_sql_and_values(DbBackend::Postgres, IDENTITY, values)
    }
}

/// The ids one request is known by: the server's own request id (the audit trail's, the logs'
/// and the response's), the client's correlation id if it sent one, and the W3C trace id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestIds {
    pub request_id: Uuid,
    /// What the client sent as `X-Request-Id`, already checked to be short plain text.
    pub correlation_id: Option<String>,
    /// 32 lower-case hex digits.
    pub trace_id: Option<String>,
}

impl From<Uuid> for RequestIds {
    fn from(request_id: Uuid) -> Self {
        Self {
            request_id,
            ..Self::default()
        }
    }
}

impl Database {
    /// Opens a transaction that runs as `principal` in the given mode.
    ///
    /// An unknown or inactive (issuer, subject) is not an error: the scope opens with no clinician
    /// id, and every policy then matches zero rows.
    pub async fn scope(
        &self,
        principal: &Principal,
        mode: AccessMode,
        ids: impl Into<RequestIds>,
    ) -> Result<RlsScope, DbError> {
        self.scope_within(principal, mode, ids, std::time::Duration::MAX)
            .await
    }

    /// As [`Database::scope`], for a request that must be over within `time_left`: no statement
    /// of it may run longer than that (nor than the configured statement timeout).
    pub async fn scope_within(
        &self,
        principal: &Principal,
        mode: AccessMode,
        ids: impl Into<RequestIds>,
        time_left: std::time::Duration,
    ) -> Result<RlsScope, DbError> {
        if self.self_check_failing() {
            // Fail closed: the setup no longer proves that row level security holds.
            return Err(DbError::Unavailable(sea_orm::DbErr::Custom(
                "the database no longer passes the self-check".into(),
            )));
        }
        let ids = ids.into();
        let statement_timeout_ms = self
            .limits
            .statement_timeout_ms
            .min(u64::try_from(time_left.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        let request_id = ids.request_id;
        let txn = spans::while_open(spans::step("BEGIN"), self.begin()).await?;
        let writer = mode == AccessMode::ReadWrite;
        let role = match (principal.role, writer) {
            (AppRole::Clinician, false) => self.roles.clinician(),
            (AppRole::Coordinator, false) => self.roles.coordinator(),
            (AppRole::Auditor, false) => self.roles.auditor(),
            (AppRole::Clinician, true) => self.roles.clinician_writer(),
            (AppRole::Coordinator, true) => self.roles.coordinator_writer(),
            (AppRole::Auditor, true) => self.roles.auditor_writer(),
        };
        let identity = Identity {
            role: &role,
            issuer: &principal.issuer,
            subject: &principal.subject,
            request_id,
            statement_timeout_ms,
            idle_in_transaction_timeout_ms: self.limits.idle_in_transaction_timeout_ms,
            mode,
            correlation_id: ids.correlation_id.as_deref(),
            trace_id: ids.trace_id.as_deref(),
        };
        let span = spans::step("SET identity");
        // `From`, not `Statement`: a connection lost here is the database being unavailable.
        let row = spans::while_open(span, txn.query_one_raw(identity.statement()))
            .await
            .map_err(DbError::from)?
            .ok_or_else(|| {
                DbError::Statement(sea_orm::DbErr::Custom(
                    "setting the request identity returned no row".into(),
                ))
            })?;
        let clinician_id: String = row
            .try_get("", "clinician_id")
            .map_err(DbError::Statement)?;
        let emergency_grant: bool = row
            .try_get("", "emergency_grant")
            .map_err(DbError::Statement)?;
        let read_in_flight = if mode == AccessMode::ReadThenRecord && !emergency_grant {
            self.reading()
        } else {
            None
        };
        Ok(RlsScope {
            txn,
            role,
            emergency_grant,
            read_in_flight,
            // The database produced this text from an integer column, or '' for "nobody".
            clinician_id: clinician_id.parse().ok(),
            request_id,
            mode,
        })
    }
}

impl RlsScope {
    /// The connection to run statements on: every query through it is filtered by row level
    /// security for this caller.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Mutable access for APIs that need it (nested transactions, i.e. savepoints).
    pub fn conn_mut(&mut self) -> &mut DatabaseTransaction {
        &mut self.txn
    }

    /// The clinician the database matched to the caller, if any.
    pub fn clinician_id(&self) -> Option<i32> {
        self.clinician_id
    }

    pub fn request_id(&self) -> Uuid {
        self.request_id
    }

    pub fn mode(&self) -> AccessMode {
        self.mode
    }

    /// The application role the transaction runs as.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// True when the transaction runs as a reading role (any mode but [`AccessMode::ReadWrite`]).
    pub fn is_reading(&self) -> bool {
        self.mode != AccessMode::ReadWrite
    }

    /// True when this read's access is to be recorded after it commits (by the audit batch
    /// writer) rather than appended inside it.
    pub fn records_after_commit(&self) -> bool {
        self.mode == AccessMode::ReadThenRecord && !self.emergency_grant
    }

    /// For a read recorded after it commits: the announcement that its events are coming, to be
    /// ended once they are queued (see [`Database::record_after_commit`]).
    pub fn take_read_in_flight(&mut self) -> Option<crate::audit::batch::ReadInFlight> {
        self.read_in_flight.take()
    }

    /// Commits the request's work; the identity settings end with the transaction.
    pub async fn commit(self) -> Result<(), DbError> {
        spans::while_open(spans::step("COMMIT"), self.txn.commit())
            .await
            .map_err(DbError::from)
    }

    /// Discards the request's work; the identity settings end with the transaction.
    pub async fn rollback(self) -> Result<(), DbError> {
        spans::while_open(spans::step("ROLLBACK"), self.txn.rollback())
            .await
            .map_err(DbError::from)
    }
}
