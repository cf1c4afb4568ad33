//! The background sealer: chains final audit events in commit-safe order, off the request path.
//!
//! Requests append events with plain INSERTs. Every replica runs this task; a lease row in the
//! database (renewed inside each seal transaction, so it also works through transaction poolers)
//! lets exactly one of them seal at a time, and another takes over when the leader stops renewing.
//! A seal round is one READ COMMITTED transaction: take or renew the lease, read the head, read
//! the final events after it (those whose writing transaction is below the oldest one still
//! running), hash them in Rust, append the links, and now and then sign a checkpoint. The chain's
//! primary key refuses a second link with the same number, so even two sealers that both believe
//! they lead cannot fork it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, FromQueryResult, Statement, Value};

use super::canonical::{CanonicalVersion, EventRow, GENESIS, link_hash, timestamp};
use super::checkpoint::{CheckpointDir, SignedCheckpoint, hex};
use super::keys::{AuditSigner, SignatureCheck, TrustedKeys};
use crate::db::{Database, DbError};

/// How the sealer works.
#[derive(Debug, Clone)]
pub struct SealerSettings {
    /// Pause between rounds while there is nothing left to seal.
    pub interval: Duration,
    /// Most events sealed per round.
    pub batch: u32,
    /// Least time between two checkpoints (one is written when it is due and links were added
    /// since this replica's last one, whether or not the round sealed any).
    pub checkpoint_every: Duration,
    /// A lease not renewed for this long may be taken by another replica.
    pub lease_ttl: Duration,
    /// Events unsealed for longer than this make the sealer warn and `/readyz` say so.
    pub lag_alert: Duration,
}

impl Default for SealerSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            batch: 2000,
            checkpoint_every: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(3),
            lag_alert: Duration::from_secs(5),
        }
    }
}

/// What the sealer reports to `/readyz` and `/metrics`. Shared by every replica's task.
#[derive(Debug, Default)]
pub struct SealerStatus {
    leader: AtomicBool,
    /// Age in milliseconds of the oldest event not yet sealed (0 when none), as last seen.
    unsealed_age_ms: AtomicI64,
    /// Whether checkpoints are signed (a signing key was given).
    signing: AtomicBool,
    /// The last round failed: the unsealed age above is then stale.
    failing: AtomicBool,
    /// A checkpoint could not be written to the checkpoint directory and has not been since.
    sink_behind: AtomicBool,
    pub metrics: SealerMetrics,
}

/// Counters and histograms the sealer feeds.
#[derive(Debug, Clone)]
pub struct SealerMetrics {
    pub sealed: prometheus_client::metrics::counter::Counter,
    pub checkpoints: prometheus_client::metrics::counter::Counter,
    pub errors: prometheus_client::metrics::counter::Counter,
    /// Time from an event's write to its seal, in seconds.
    pub lag: prometheus_client::metrics::histogram::Histogram,
}

impl Default for SealerMetrics {
    fn default() -> Self {
        Self {
            sealed: Default::default(),
            checkpoints: Default::default(),
            errors: Default::default(),
            lag: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 14),
            ),
        }
    }
}

impl SealerStatus {
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Age of the oldest unsealed event when last looked at.
    pub fn unsealed_age(&self) -> Duration {
        Duration::from_millis(self.unsealed_age_ms.load(Ordering::Relaxed).max(0) as u64)
    }

    /// Whether the last seal round failed (the replica cannot tell how far behind sealing is).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    pub fn is_signing(&self) -> bool {
        self.signing.load(Ordering::Relaxed)
    }

    /// Whether a checkpoint is missing from the checkpoint directory (being retried).
    pub fn checkpoints_unwritten(&self) -> bool {
        self.sink_behind.load(Ordering::Relaxed)
    }

    fn set_unsealed_since(&self, oldest: Option<DateTime<Utc>>) {
        let age = oldest.map_or(0, |t| (Utc::now() - t).num_milliseconds().max(0));
        self.unsealed_age_ms.store(age, Ordering::Relaxed);
    }
}

/// One replica's sealer.
#[derive(Debug)]
pub struct Sealer {
    db: Database,
    settings: SealerSettings,
    signer: Option<Arc<AuditSigner>>,
    sink: Option<CheckpointDir>,
    holder: String,
    status: Arc<SealerStatus>,
    /// The link of the last checkpoint signed (by this replica while it leads, or found signed
    /// with its key): links past it get a checkpoint when one is due, even in a round that
    /// sealed nothing (the tail of a burst must not wait unsigned for the next event). `None`
    /// on taking the lead: the head is signed unless the newest checkpoint in the database is
    /// this very head under this key. Nothing else is taken from the database, whose owner
    /// could make it claim a checkpoint far ahead and so stop all signing.
    checkpointed: Option<i64>,
    /// The head this replica left at the end of its last round as leader, and when it last
    /// renewed the lease. While it leads without a break nobody else may extend the chain, so
    /// a different head then was written around the sealer: it is not extended or signed.
    built: Option<(i64, Vec<u8>)>,
    renewed_at: Option<Instant>,
    /// The audit schema this build's migrations define, and the differences from it last
    /// reported (so that a lasting one is logged once, not every round).
    expected: super::schema_drift::ExpectedAuditSchema,
    reported_drift: Vec<String>,
    /// Such a head was found: this replica keeps the lease (so no other builds on that head)
    /// and seals nothing until it is restarted.
    head_tampered: bool,
    /// When checkpoints missing from the directory were last copied again.
    backfill_tried: Option<Instant>,
}

/// How often checkpoints missing from the directory are copied again while it refuses them.
const BACKFILL_RETRY: Duration = Duration::from_secs(5);
/// How many of the newest checkpoints a copy looks at: at the default 10 s interval, an outage
/// of the directory of most of a day.
const BACKFILL_DEPTH: u32 = 5_000;

#[derive(Debug, FromQueryResult)]
struct Head {
    seq: i64,
    hash: Vec<u8>,
    after_txid: i64,
    after_id: i64,
}

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub leader: bool,
    pub sealed: usize,
    pub checkpoint: Option<i64>,
}

impl Sealer {
    pub fn new(
        db: Database,
        settings: SealerSettings,
        signer: Option<Arc<AuditSigner>>,
        sink: Option<CheckpointDir>,
        status: Arc<SealerStatus>,
    ) -> Self {
        status.signing.store(signer.is_some(), Ordering::Relaxed);
        let holder = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            uuid::Uuid::new_v4()
        );
        Self {
            expected: super::schema_drift::ExpectedAuditSchema::for_roles(db.roles()),
            reported_drift: Vec::new(),
            db,
            settings,
            signer,
            sink,
            holder,
            status,
            checkpointed: None,
            built: None,
            renewed_at: None,
            head_tampered: false,
            backfill_tried: None,
        }
    }

    /// Seals until `stop` resolves. Database errors end a round, never the task.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last_checkpoint: Option<Instant> = None;
        let mut partitions_checked: Option<Instant> = None;
        let mut warned_lag = false;
        loop {
            if partitions_checked.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
                match self.ensure_partitions().await {
                    Ok(()) => partitions_checked = Some(Instant::now()),
                    Err(e) => tracing::warn!(
                        sqlstate = e.sqlstate().as_deref().unwrap_or("none"),
                        "audit partitions not checked"
                    ),
                }
            }
            // A value the driver cannot decode (an event dated at infinity, written around the
            // append path) panics inside it: the round fails like any other, and the task that
            // reports sealing stays alive to say so.
            let outcome = std::panic::AssertUnwindSafe(self.round(&mut last_checkpoint))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(
                        "audit seal round stopped on a value it cannot read (an event dated at \
                         infinity?); nothing is sealed until it is removed: run `rowguard audit verify`"
                    );
                    Err(DbError::Statement(sea_orm::DbErr::Custom(
                        "seal round panicked".into(),
                    )))
                });
            self.status
                .failing
                .store(outcome.is_err(), Ordering::Relaxed);
            let pause = match outcome {
                Ok(round) if round.sealed >= self.settings.batch as usize => Duration::ZERO,
                Ok(round) if round.leader => self.settings.interval,
                // Followers only need to notice a leader that stopped renewing its lease.
                Ok(_) => self.settings.lease_ttl / 3,
                Err(e) => {
                    self.status.metrics.errors.inc();
                    self.status.leader.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        sqlstate = e.sqlstate().as_deref().unwrap_or("none"),
                        "audit seal round failed"
                    );
                    self.refresh_unsealed_age().await;
                    self.settings.lease_ttl / 3
                }
            };
            let lagging = self.status.unsealed_age() > self.settings.lag_alert;
            if lagging && !warned_lag {
                tracing::warn!(
                    unsealed_secs = self.status.unsealed_age().as_secs(),
                    bound_secs = self.settings.lag_alert.as_secs(),
                    "audit events are waiting to be sealed longer than the bound"
                );
            }
            warned_lag = lagging;
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        self.status.leader.store(false, Ordering::Relaxed);
    }

    /// After a failed round, what waits to be sealed, read on its own: rounds that keep failing
    /// then show as a seal lag that grows (metric, `/readyz`, the lag warning), not as the last
    /// good round's. Nothing changes if it cannot be read either.
    async fn refresh_unsealed_age(&self) {
        // A time the driver cannot decode (an event dated at infinity) panics inside it, as
        // in a round.
        let oldest = std::panic::AssertUnwindSafe(async {
            let txn = self.db.maintenance().await?;
            let oldest = oldest_unsealed(&txn).await?;
            txn.rollback().await.map_err(DbError::from)?;
            Ok::<_, DbError>(oldest)
        })
        .catch_unwind()
        .await;
        if let Ok(Ok(oldest)) = oldest {
            self.status.set_unsealed_since(oldest);
        }
    }

    async fn ensure_partitions(&self) -> Result<(), DbError> {
        let txn = self.db.maintenance().await?;
        txn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            "select rowguard_audit.ensure_partitions(now(), 2)",
        ))
        .await
        .map_err(DbError::from)?;
        txn.commit().await.map_err(DbError::from)
    }

    /// One round: lead or follow, seal what is final, maybe checkpoint.
    pub async fn round(&mut self, last_checkpoint: &mut Option<Instant>) -> Result<Round, DbError> {
        let txn = self.db.maintenance().await?;
        let leader: bool = one(
            &txn,
            "select rowguard_audit.take_seal_lease($1, $2) as leader",
            vec![
                self.holder.clone().into(),
                i32::try_from(self.settings.lease_ttl.as_millis())
                    .unwrap_or(i32::MAX)
                    .into(),
            ],
        )
        .await?
        .try_get("", "leader")
        .map_err(DbError::Statement)?;
        if !leader {
            let oldest = oldest_unsealed(&txn).await?;
            txn.rollback().await.map_err(DbError::from)?;
            self.status.set_unsealed_since(oldest);
            self.status.leader.store(false, Ordering::Relaxed);
            return Ok(Round::default());
        }
        // Rounds renew the lease; past half its time without one, another replica may have
        // held it meanwhile.
        let lapsed = self
            .renewed_at
            .is_none_or(|at| at.elapsed() >= self.settings.lease_ttl / 2);
        if lapsed {
            self.built = None;
            self.checkpointed = None;
        }
        if !self.status.leader.swap(true, Ordering::Relaxed) {
            // What another leader signed meanwhile is not known here.
            self.checkpointed = None;
            self.built = None;
            tracing::info!(holder = %self.holder, "this replica now seals the audit trail");
            let copied = self.backfill_sink(&txn, true).await;
            self.status.sink_behind.store(!copied, Ordering::Relaxed);
            self.backfill_tried = Some(Instant::now());
        } else if self.status.sink_behind.load(Ordering::Relaxed)
            && self
                .backfill_tried
                .is_none_or(|at| at.elapsed() >= BACKFILL_RETRY)
        {
            // A write to the directory failed (a full disk, a network file system's blip):
            // copied again until it succeeds, not only when a replica takes the lead, so an
            // outage does not leave a gap that `audit verify` reads as a deletion. Quietly: the
            // first failure was logged, and a retry per round logged a line per checkpoint.
            self.backfill_tried = Some(Instant::now());
            if self.backfill_sink(&txn, false).await {
                self.status.sink_behind.store(false, Ordering::Relaxed);
                tracing::info!("the checkpoint directory has every recent checkpoint again");
            }
        }

        let head = txn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "select seq, hash, after_txid, after_id from rowguard_audit.chain_head()",
            ))
            .await
            .map_err(DbError::from)?
            .map(|row| Head::from_query_result(&row, ""))
            .transpose()
            .map_err(DbError::Statement)?;
        let (mut seq, mut previous, after_txid, after_id) = match head {
            Some(h) => (h.seq, h.hash, h.after_txid, h.after_id),
            None => (0, GENESIS.to_vec(), -1, -1),
        };
        if let Some((built_seq, built_hash)) = &self.built
            && (*built_seq, built_hash.as_slice()) != (seq, previous.as_slice())
        {
            tracing::error!(
                expected_link = built_seq,
                found_link = seq,
                "the audit chain's head changed while this replica alone could extend it (written \
                 around the sealer): nothing is sealed or signed on top of it until this replica is \
                 restarted; run `rowguard audit verify`"
            );
            self.head_tampered = true;
        }
        if self.head_tampered {
            // The renewed lease is kept: another replica taking it over would trust that head.
            txn.commit().await.map_err(DbError::from)?;
            return Err(DbError::Statement(sea_orm::DbErr::Custom(
                "the audit chain's head changed under the sealer".into(),
            )));
        }
        // What is sealed is what `final_events()` returns, as `append()` and the triggers left
        // it: functions the migrations did not write (an owner's replacement that rewrites
        // events on their way to the sealer) mean nothing is sealed until they are restored.
        // Read in the round's transaction, just before the events.
        let drift = self.expected.drift(&txn).await?;
        if drift != self.reported_drift {
            if !drift.is_empty() {
                tracing::error!(
                    differences = ?drift,
                    "the audit trail's functions or triggers differ from this build's migrations: \
                     nothing is sealed until they are restored; run `rowguard check`"
                );
            }
            self.reported_drift = drift.clone();
        }
        if !drift.is_empty() {
            // The lease is let go: a replica whose build matches the database may seal.
            txn.rollback().await.map_err(DbError::from)?;
            return Err(DbError::Statement(sea_orm::DbErr::Custom(
                "the audit schema differs from the migrations'".into(),
            )));
        }
        let events = EventRow::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "select {} from rowguard_audit.final_events($1, $2, $3)",
                super::canonical::EVENT_COLUMNS
            ),
            [
                after_txid.into(),
                after_id.into(),
                i32::try_from(self.settings.batch)
                    .unwrap_or(i32::MAX)
                    .into(),
            ],
        ))
        .all(&txn)
        .await
        .map_err(DbError::from)?;

        let mut round = Round {
            leader: true,
            sealed: events.len(),
            checkpoint: None,
        };
        if !events.is_empty() {
            let first_seq = seq + 1;
            let (mut seqs, mut ids, mut txids, mut times, mut prevs, mut hashes) = (
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            );
            for event in &events {
                let hash = link_hash(&previous, CanonicalVersion::V2, event);
                seq += 1;
                seqs.push(seq);
                ids.push(event.id);
                txids.push(event.txid);
                times.push(timestamp(&event.occurred_at));
                prevs.push(hex(&previous));
                hashes.push(hex(&hash));
                previous = hash.to_vec();
            }
            debug_assert_eq!(seqs.first().copied(), Some(first_seq));
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "select rowguard_audit.extend_chain($1, $2, $3, $4::text[]::timestamptz[], $5, $6)",
                [
                    seqs.into(),
                    ids.into(),
                    txids.into(),
                    times.into(),
                    prevs.into(),
                    hashes.into(),
                ],
            ))
            .await
            .map_err(DbError::from)?;
        }

        let due = last_checkpoint.is_none_or(|at| at.elapsed() >= self.settings.checkpoint_every);
        if self.signer.is_some()
            && due
            && seq > 0
            && self.checkpointed.is_none()
            && head_signed(&txn, seq).await?
        {
            self.checkpointed = Some(seq);
        }
        let checkpoint = match &self.signer {
            Some(signer) if due && seq > 0 && self.checkpointed.is_none_or(|c| seq > c) => {
                let checkpoint = SignedCheckpoint::sign(signer, seq, &previous, Utc::now());
                let body = checkpoint.parse().ok_or_else(|| {
                    DbError::Statement(sea_orm::DbErr::Custom("unsigned checkpoint".into()))
                })?;
                txn.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "select rowguard_audit.record_checkpoint($1, decode($2, 'hex'), $3::timestamptz, $4, $5, decode($6, 'hex'))",
                    [
                        seq.into(),
                        body.head_hash.clone().into(),
                        body.created_at.clone().into(),
                        body.key_id.clone().into(),
                        checkpoint.body.clone().into(),
                        hex(&checkpoint.signature).into(),
                    ],
                ))
                .await
                .map_err(DbError::from)?;
                Some(checkpoint)
            }
            _ => None,
        };

        let oldest = oldest_unsealed(&txn).await?;
        txn.commit().await.map_err(DbError::from)?;
        self.built = Some((seq, previous.clone()));
        self.renewed_at = Some(Instant::now());
        self.status.set_unsealed_since(oldest);

        let now = Utc::now();
        for event in &events {
            let lag = (now - event.occurred_at.with_timezone(&Utc)).num_milliseconds();
            self.status.metrics.lag.observe(lag.max(0) as f64 / 1000.0);
        }
        self.status.metrics.sealed.inc_by(events.len() as u64);
        if let Some(checkpoint) = checkpoint {
            *last_checkpoint = Some(Instant::now());
            self.checkpointed = Some(seq);
            round.checkpoint = Some(seq);
            self.status.metrics.checkpoints.inc();
            self.publish(&checkpoint);
        }
        Ok(round)
    }

    /// Writes a committed checkpoint outside the database: the directory sink, and the log (for
    /// a log pipeline to ship).
    fn publish(&self, checkpoint: &SignedCheckpoint) {
        if let Some(body) = checkpoint.parse() {
            tracing::info!(
                seq = body.seq,
                head_hash = %body.head_hash,
                key_id = %body.key_id,
                created_at = %body.created_at,
                signature = %hex(&checkpoint.signature),
                "audit checkpoint"
            );
        }
        if let Some(sink) = &self.sink
            && let Err(e) = sink.write(checkpoint)
        {
            self.status.sink_behind.store(true, Ordering::Relaxed);
            self.status.metrics.errors.inc();
            tracing::error!(error = %e, dir = %sink.root().display(), "audit checkpoint not written to the checkpoint directory");
        }
    }

    /// A leader that died between committing a checkpoint and writing its file left the
    /// directory one short; the next leader copies the recent checkpoints over (files that exist
    /// are left as they are). Only checkpoints its own key signed: the table is the database
    /// owner's to write, and a row copied into write-once storage could never be taken back.
    /// Returns whether every recent checkpoint signed with this replica's key is in the directory
    /// now (true without a directory or a key).
    async fn backfill_sink(&self, txn: &DatabaseTransaction, log_each: bool) -> bool {
        let (Some(sink), Some(signer)) = (&self.sink, &self.signer) else {
            return true;
        };
        let ours = TrustedKeys::new(vec![signer.public_key()]);
        let rows = txn
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "select body, encode(signature, 'hex') as signature \
                     from rowguard_audit.recent_checkpoints({BACKFILL_DEPTH})"
                ),
            ))
            .await;
        let Ok(rows) = rows else { return false };
        let mut complete = true;
        for row in rows {
            let (Ok(body), Ok(signature)) = (
                row.try_get::<String>("", "body"),
                row.try_get::<String>("", "signature"),
            ) else {
                continue;
            };
            let Ok(signature) = hex::decode(&signature) else {
                continue;
            };
            let checkpoint = SignedCheckpoint { body, signature };
            if !matches!(checkpoint.check(&ours), SignatureCheck::Valid) {
                if !log_each {
                    continue;
                }
                tracing::warn!(
                    "a checkpoint in the database is not signed with this replica's key: not copied to the checkpoint directory (run `rowguard audit verify`)"
                );
                continue;
            }
            if let Err(e) = sink.write(&checkpoint) {
                if complete && log_each {
                    tracing::warn!(error = %e, "audit checkpoint not copied to the checkpoint directory");
                }
                complete = false;
            }
        }
        complete
    }
}

/// Whether the newest checkpoint in the database is already of link `seq`: then a new leader
/// does not sign that head again. The database keeps one checkpoint per link, so a second would
/// be dropped and its file would clash with the one written for the first (after a key
/// rotation, the old key's: the new key then signs from the next link on). A row there that is
/// not a genuine checkpoint of that head is `audit verify`'s to report.
async fn head_signed(txn: &DatabaseTransaction, seq: i64) -> Result<bool, DbError> {
    let Some(row) = txn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select body, signature from rowguard_audit.recent_checkpoints(1)",
        ))
        .await
        .map_err(DbError::from)?
    else {
        return Ok(false);
    };
    let newest = SignedCheckpoint {
        body: row.try_get("", "body").map_err(DbError::Statement)?,
        signature: row.try_get("", "signature").map_err(DbError::Statement)?,
    };
    Ok(newest.parse().is_some_and(|body| body.seq == seq))
}

/// When the oldest event waiting to be sealed was written (`None`: nothing waits).
async fn oldest_unsealed(txn: &DatabaseTransaction) -> Result<Option<DateTime<Utc>>, DbError> {
    one(
        txn,
        "select rowguard_audit.oldest_unsealed() as oldest",
        vec![],
    )
    .await?
    .try_get("", "oldest")
    .map_err(DbError::Statement)
}

async fn one(
    txn: &DatabaseTransaction,
    sql: &str,
    values: Vec<Value>,
) -> Result<sea_orm::QueryResult, DbError> {
    txn.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await
    .map_err(DbError::from)?
    .ok_or_else(|| DbError::Statement(sea_orm::DbErr::RecordNotFound(sql.to_owned())))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned())
}
