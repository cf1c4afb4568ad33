//! The only way application code reaches PostgreSQL: a per-request [`RlsScope`].
//!
//! [`Database`] owns the pool and never hands it out; everything that reads or writes data goes
//! through [`Database::scope`], which opens a transaction with the caller's identity set.

mod error;
mod scope;

/// The setting of every transaction that appends audit events, as SQL text: the record must be
/// durable before the answer it stands for leaves, and a cluster or role running
/// `synchronous_commit = off` would lose the events of answers already sent in a crash,
/// unnoticed by `audit verify`. `local` waits for the local flush; a stronger setting (`on`,
/// `remote_apply`) is kept. A macro so that the statements that carry it, built with
/// `concat!`, share this one text.
macro_rules! durable_commit {
    () => {
        "pg_catalog.set_config('synchronous_commit', \
         case pg_catalog.current_setting('synchronous_commit') when 'off' then 'local' \
           else pg_catalog.current_setting('synchronous_commit') end, true)"
    };
}
pub(crate) use durable_commit;
mod self_check;
pub mod spans;

pub use error::{DbError, FailureKind, NOT_SENT};
pub use scope::{AccessMode, Identity, RequestIds, RlsScope};
pub use self_check::{SelfCheckError, SelfCheckFailed};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use migration::RoleNames;
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DatabaseTransaction, Statement,
    TransactionTrait,
};

use crate::settings::DatabaseSettings;

/// A one-connection pool to `url` whose session runs as `role` (seeding as the schema owner).
/// Not for serving requests: those go through [`Database::scope`].
/// `error` with its underlying cause, for commands run by an operator: connecting reads no rows,
/// so the cause (a role or database missing, a refused or unreachable server) carries no PHI.
pub fn with_cause(error: &DbError) -> String {
    match std::error::Error::source(error) {
        Some(why) => format!("{error} ({why})"),
        None => error.to_string(),
    }
}

/// A connection that cannot be had is reported with its cause (refused, unknown host, role or
/// database missing) at once, or after [`COMMAND_CONNECT_TIMEOUT`] for a server that never
/// answers.
pub async fn connect_as_role(url: &str, role: &str) -> Result<DatabaseConnection, DbError> {
    let session_role = role.to_owned();
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .sqlx_logging(false)
        .connect_timeout(COMMAND_CONNECT_TIMEOUT)
        .acquire_timeout(COMMAND_CONNECT_TIMEOUT)
        .map_sqlx_postgres_opts(move |o: PgConnectOptions| {
            o.options([("role", session_role.as_str())])
        });
    // A pool that cannot connect retries until its timeout and then says only that it timed
    // out; one direct attempt first fails at once and says why.
    let hidden = |error| DbError::from(without_url(error, url, "the database URL"));
    connect_once(url, role).await.map_err(hidden)?;
    sea_orm::Database::connect(options).await.map_err(hidden)
}

/// `error` with `url` (named `setting` in its place) and its password taken out of its message.
/// The driver quotes a URL it cannot parse or has no driver for, whole, and the commands that
/// connect with one are run by administrators, in logs CI keeps.
pub fn without_url(error: sea_orm::DbErr, url: &str, setting: &str) -> sea_orm::DbErr {
    let text = error.to_string();
    let mut hidden = text.replace(url, &format!("<{setting}>"));
    // A password of a few characters would also match ordinary words of the message; one that
    // short is no secret anyway.
    if let Some(password) = password_of(url).filter(|p| p.chars().count() >= 4) {
        hidden = hidden.replace(password, "***");
        if let Ok(decoded) = percent_decoded(password)
            && decoded != password
        {
            hidden = hidden.replace(&decoded, "***");
        }
    }
    match error {
        _ if hidden == text => error,
        // Still a connection failure ("the database is unavailable"), in the driver's words.
        sea_orm::DbErr::Conn(_) => sea_orm::DbErr::Conn(sea_orm::RuntimeErr::Internal(hidden)),
        _ => sea_orm::DbErr::Custom(hidden),
    }
}

/// The password of a `scheme://user:password@host/...` URL, as written.
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then_some(password)
}

fn percent_decoded(text: &str) -> Result<String, ()> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or(())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// How long a command (`migrate`, `audit …`, dev's seeding) waits for its connection.
const COMMAND_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One connection outside any pool, for its error.
async fn connect_once(url: &str, role: &str) -> Result<(), sea_orm::DbErr> {
    use sea_orm::sqlx::Connection as _;
    let as_conn_err =
        |e: sea_orm::sqlx::Error| sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(Arc::new(e)));
    let options: PgConnectOptions = url.parse().map_err(as_conn_err)?;
    let options = options.options([("role", role)]);
    let attempt = sea_orm::sqlx::PgConnection::connect_with(&options);
    match tokio::time::timeout(COMMAND_CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(as_conn_err(e)),
        Err(_) => Err(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::Internal(
            format!(
                "no answer from the server within {} s",
                COMMAND_CONNECT_TIMEOUT.as_secs()
            ),
        ))),
    }
}

/// The gateway's connection pool, usable only through RLS scopes.
#[derive(Debug, Clone)]
pub struct Database {
    pool: DatabaseConnection,
    roles: RoleNames,
    statements: Arc<AtomicU64>,
    limits: TransactionLimits,
    /// Without a statement cache, sqlx still gives every statement a name (`sqlx_s_N`) and never
    /// closes it. On a direct connection those pile up for the connection's life; behind a
    /// transaction pooler they stay on a server connection another client gets next, whose own
    /// `sqlx_s_N` then collides (42P05). Each transaction therefore begins with `DEALLOCATE ALL`.
    drop_stale_statements: bool,
    /// Behind a transaction pooler the connection's default isolation cannot be set at startup,
    /// so each transaction sets READ COMMITTED itself.
    set_isolation_per_transaction: bool,
    /// Behind a transaction pooler, the statement timeout each transaction sets for itself before
    /// the identity statement (elsewhere a startup option sets it for the session).
    setup_statement_timeout_ms: Option<u64>,
    /// The audit trail's group-commit writer, started on first use (and again if it ended).
    batcher: Arc<std::sync::Mutex<Option<crate::audit::batch::AuditBatcher>>>,
    /// How long that writer waits for reads in flight to join a batch.
    audit_batch_wait: std::time::Duration,
    /// The periodic self-check found a problem: no request scope opens until it passes again.
    self_check_failed: Arc<AtomicBool>,
}

/// Per-transaction limits PostgreSQL enforces on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionLimits {
    pub statement_timeout_ms: u64,
    pub idle_in_transaction_timeout_ms: u64,
}

impl Default for TransactionLimits {
    fn default() -> Self {
        Self {
            statement_timeout_ms: 5000,
            idle_in_transaction_timeout_ms: 15000,
        }
    }
}

impl Database {
    /// Opens the pool described by the settings. Connections are made lazily, so an unreachable
    /// database shows up per request (as "service unavailable") rather than aborting startup.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, DbError> {
        Self::open_pool(settings, "rowguard", true).await
    }

    /// As [`Database::connect`], with the `application_name` its sessions show in
    /// `pg_stat_activity` (the audit sealer's pool is `rowguard-sealer`), and no session-wide
    /// statement timeout: upkeep statements are not requests.
    pub async fn connect_as(
        settings: &DatabaseSettings,
        application_name: &'static str,
    ) -> Result<Self, DbError> {
        Self::open_pool(settings, application_name, false).await
    }

    /// `bounded`: every statement of the pool's sessions is bounded by the configured statement
    /// timeout from the start. A request's own limit is set by its identity statement, which
    /// PostgreSQL cannot apply to that statement itself (its timer starts with the statement):
    /// without a session default, `BEGIN` and the identity statement could wait on a lock (an
    /// `ALTER TABLE` on `clinicians`) for as long as it was held, long past the request's
    /// deadline, holding a pooled connection each.
    async fn open_pool(
        settings: &DatabaseSettings,
        application_name: &'static str,
        bounded: bool,
    ) -> Result<Self, DbError> {
        let session_timeout_ms = bounded.then_some(settings.statement_timeout_ms);
        let cache = settings.effective_statement_cache();
        let pooled = settings.transaction_pooler;
        let mut options = ConnectOptions::new(settings.url.clone());
        options
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout())
            .connect_lazy(true)
            // A ping before every acquire is a whole extra round trip per request (1 in 6 on a
            // typical read). Only a connection that sat idle for a while — when a failover or
            // restart may have dropped it — is checked first; a busy one proved itself moments ago,
            // and one that still fails mid-request fails that request with SERVICE_UNAVAILABLE.
            .test_before_acquire_if_idle_for(std::time::Duration::from_secs(1))
            // sqlx logs every statement at info level; statements carry no PHI values (they are
            // bound), but the noise hides what matters.
            .sqlx_logging(false)
            .map_sqlx_postgres_opts(move |o: PgConnectOptions| {
                let o = o
                    .statement_cache_capacity(cache)
                    .application_name(application_name);
                // Request and sealer transactions run READ COMMITTED whatever the database's
                // default (the audit sealer and the update conflict checks are written for it).
                // A startup option costs no round trip; transaction poolers refuse startup
                // options, so there `begin` sets the level instead.
                if pooled {
                    o
                } else {
                    let mut startup =
                        vec![("default_transaction_isolation", "read committed".to_owned())];
                    if let Some(ms) = session_timeout_ms {
                        startup.push(("statement_timeout", ms.to_string()));
                    }
                    o.options(startup)
                }
            });
        let pool = sea_orm::Database::connect(options)
            .await
            .map_err(DbError::from)?;
        let mut database =
            Self::from_pool(pool, settings.role_prefix.clone()).with_limits(TransactionLimits {
                statement_timeout_ms: settings.statement_timeout_ms,
                idle_in_transaction_timeout_ms: settings.idle_in_transaction_timeout_ms,
            });
        database.drop_stale_statements = cache == 0;
        database.set_isolation_per_transaction = pooled;
        // Behind a pooler the startup option is refused: the transaction's setup sets it, in the
        // same round trip as the isolation level.
        database.setup_statement_timeout_ms = session_timeout_ms.filter(|_| pooled);
        Ok(database)
    }

    /// Wraps an existing pool (tests build one with a single connection to observe reuse).
    pub fn from_pool(mut pool: DatabaseConnection, roles: RoleNames) -> Self {
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        // Counts statements (never their text or values) for metrics and N+1 tests.
        pool.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        Self {
            pool,
            roles,
            statements,
            limits: TransactionLimits::default(),
            drop_stale_statements: false,
            set_isolation_per_transaction: false,
            setup_statement_timeout_ms: None,
            batcher: Arc::default(),
            audit_batch_wait: std::time::Duration::ZERO,
            self_check_failed: Arc::default(),
        }
    }

    /// Sets the per-transaction limits.
    pub fn with_limits(mut self, limits: TransactionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How long the audit batch writer waits for reads in flight to join a batch (zero, the
    /// default: it writes whatever has queued).
    pub fn with_audit_batch_wait(mut self, wait: std::time::Duration) -> Self {
        self.audit_batch_wait = wait;
        self
    }

    /// Opens a transaction on a pooled connection, with no statement left from earlier
    /// transactions when the statement cache is off. Everything the gateway sends runs inside
    /// one, so a transaction pooler never moves a half-finished statement to another server.
    async fn begin(&self) -> Result<DatabaseTransaction, DbError> {
        let txn = self.pool.begin().await.map_err(DbError::from)?;
        // Simple-query protocol, one round trip for both: these statements have no name of
        // their own to collide.
        let setup = match (
            self.drop_stale_statements,
            self.set_isolation_per_transaction,
        ) {
            (true, true) => "DEALLOCATE ALL; SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            (true, false) => "DEALLOCATE ALL",
            (false, true) => "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            (false, false) => return Ok(txn),
        };
        let setup = match self.setup_statement_timeout_ms {
            Some(ms) => {
                std::borrow::Cow::Owned(format!("{setup}; SET LOCAL statement_timeout = {ms}"))
            }
            None => std::borrow::Cow::Borrowed(setup),
        };
        txn.execute_unprepared(&setup)
            .await
            .map_err(DbError::from)?;
        Ok(txn)
    }

    /// A transaction as the gateway's login role itself (no application role, no identity), for
    /// the gateway's own upkeep: the audit sealer and the self-check. Never for PHI: the login
    /// role holds no table privileges, so it can only call the functions granted to it.
    pub(crate) async fn maintenance(&self) -> Result<DatabaseTransaction, DbError> {
        self.begin().await
    }

    /// Runs one upkeep statement that answers a count (as [`Database::maintenance`]) as a
    /// transaction of its own, and returns the count. Sent alone, PostgreSQL commits it by
    /// itself: one round trip instead of BEGIN, the statement and COMMIT. Without a statement
    /// cache it goes through [`Database::begin`] instead, whose `DEALLOCATE ALL` keeps sqlx's
    /// never-closed statement names from piling up or colliding behind a pooler.
    pub(crate) async fn count_alone(&self, statement: Statement) -> Result<i64, DbError> {
        let row = if self.drop_stale_statements {
            let txn = self.begin().await?;
            let row = txn.query_one_raw(statement).await.map_err(DbError::from)?;
            txn.commit().await.map_err(DbError::from)?;
            row
        } else {
            self.pool
                .query_one_raw(statement)
                .await
                .map_err(DbError::from)?
        };
        row.ok_or_else(|| DbError::Statement(sea_orm::DbErr::RecordNotFound("a count".into())))?
            .try_get_by_index::<i32>(0)
            .map(i64::from)
            .map_err(DbError::Statement)
    }

    /// Records a committed read's events through the audit batch writer, returning once the
    /// transaction that appended them has committed. `read` is the read's announcement (see
    /// [`Database::reading`]), ended once the events are queued.
    pub async fn record_after_commit(
        &self,
        events: Vec<crate::audit::batch::BatchedEvent>,
        read: Option<crate::audit::batch::ReadInFlight>,
    ) -> Result<(), crate::audit::batch::BatchFailed> {
        self.batcher().record(events, read).await
    }

    /// Announces a read whose events will be recorded after it commits, so that the batch
    /// writer can wait for them (none when the writer does not wait).
    pub fn reading(&self) -> Option<crate::audit::batch::ReadInFlight> {
        if self.audit_batch_wait.is_zero() {
            return None;
        }
        Some(self.batcher().reading())
    }

    fn batcher(&self) -> crate::audit::batch::AuditBatcher {
        let mut slot = self
            .batcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*slot {
            Some(batcher) if batcher.is_running() => batcher.clone(),
            _ => {
                // The writer's own handle has no batcher, so it does not keep its own queue
                // open.
                let mut writer = self.clone();
                writer.batcher = Arc::default();
                let batcher =
                    crate::audit::batch::AuditBatcher::start(writer, self.audit_batch_wait);
                *slot = Some(batcher.clone());
                batcher
            }
        }
    }

    /// The statement timeout of every request, and the longest an audit batch waits for a lock.
    pub fn statement_timeout_ms(&self) -> u64 {
        self.limits.statement_timeout_ms
    }

    /// Statements run through this pool so far.
    pub fn statements_executed(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Whether the periodic self-check currently fails (see [`Database::keep_checking`]).
    pub fn self_check_failing(&self) -> bool {
        self.self_check_failed.load(Ordering::Relaxed)
    }

    pub fn roles(&self) -> &RoleNames {
        &self.roles
    }

    /// Checks that the database answers (readiness probe).
    pub async fn ping(&self) -> Result<(), DbError> {
        self.pool.ping().await.map_err(DbError::from)
    }

    /// Connections currently open in the pool (idle or in use).
    pub fn open_connections(&self) -> u32 {
        self.pool.get_postgres_connection_pool().size()
    }

    /// Closes every pooled connection.
    pub async fn close(self) -> Result<(), DbError> {
        self.pool.close().await.map_err(DbError::from)
    }
}
