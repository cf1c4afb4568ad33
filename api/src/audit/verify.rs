//! `rowguard audit verify`: proves the trail in the database is the one that was sealed.
//!
//! Every link's hash is recomputed here, from the event rows, in the canonical form of
//! [`super::canonical`]; nothing the database computes is trusted. Checkpoints (from the database
//! and from the external directory) are checked against the public keys the operator trusts, and
//! the chain must still pass through every one of them and reach the newest: a trail that was
//! edited and re-hashed, cut short or spliced does not.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    FromQueryResult, IsolationLevel, Statement, TransactionTrait,
};

use super::canonical::{CanonicalVersion, EVENT_COLUMNS, EventRow, GENESIS, link_hash};
use super::checkpoint::{CheckpointBody, CheckpointDir, SignedCheckpoint, hex};
use super::keys::{SignatureCheck, TrustedKeys};
use super::statement::{self, ArchiveBody, LinksDigest};

/// What the verifier was given.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Public keys whose checkpoints are trusted (the current key and any earlier ones).
    pub keys: TrustedKeys,
    /// The external copy of the checkpoints.
    pub checkpoint_dir: Option<CheckpointDir>,
    /// An event may wait this long to be sealed before it counts as a problem.
    pub max_seal_lag: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            keys: TrustedKeys::default(),
            checkpoint_dir: None,
            max_seal_lag: Duration::from_secs(300),
        }
    }
}

/// What the verifier found. The trail is sound when `problems` is empty.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Links walked.
    pub links: u64,
    /// Checkpoints whose signature was checked and which the chain passes through.
    pub checkpoints: u64,
    /// The newest trusted checkpoint's link number.
    pub latest_checkpoint: Option<i64>,
    /// Events written but not yet sealed, within the allowed lag.
    pub pending: u64,
    /// Events of archived months (exported and detached), accounted for by signed statements.
    pub archived: u64,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

/// One reason the trail cannot be trusted as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The event concerned, if one is.
    pub event_id: Option<i64>,
    /// The chain position concerned, if one is.
    pub seq: Option<i64>,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.event_id, self.seq) {
            (Some(e), Some(s)) => write!(f, "event {e} (link {s}): {}", self.what),
            (Some(e), None) => write!(f, "event {e}: {}", self.what),
            (None, Some(s)) => write!(f, "link {s}: {}", self.what),
            (None, None) => f.write_str(&self.what),
        }
    }
}

impl Report {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, event_id: Option<i64>, seq: Option<i64>, what: impl Into<String>) {
        // A rewritten trail can break every link after it; the first few say enough.
        if self.problems.len() < 200 {
            self.problems.push(Problem {
                event_id,
                seq,
                what: what.into(),
            });
        }
    }
}

#[derive(Debug, FromQueryResult)]
struct Link {
    seq: i64,
    event_id: i64,
    event_txid: i64,
    event_occurred_at: Option<chrono::DateTime<chrono::FixedOffset>>,
    version: i16,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

#[derive(Debug, FromQueryResult)]
struct StoredCheckpoint {
    seq: i64,
    body: String,
    signature: Vec<u8>,
}

#[derive(Debug, FromQueryResult)]
struct Count {
    n: i64,
}

async fn count(conn: &DatabaseTransaction, sql: &str) -> Result<i64, DbErr> {
    Ok(
        Count::find_by_statement(Statement::from_string(DbBackend::Postgres, sql))
            .one(conn)
            .await?
            .map_or(0, |c| c.n),
    )
}

#[derive(Debug, FromQueryResult)]
struct Clock {
    now: chrono::DateTime<chrono::FixedOffset>,
}

/// The database's clock, which wrote every event's time: measuring against the verifier's own
/// clock would report a skew between the two machines as events waiting or dated ahead.
async fn database_time(conn: &DatabaseTransaction) -> Result<chrono::DateTime<Utc>, DbErr> {
    Clock::find_by_statement(Statement::from_string(
        DbBackend::Postgres,
        "select clock_timestamp() as now",
    ))
    .one(conn)
    .await?
    .map(|c| c.now.with_timezone(&Utc))
    .ok_or_else(|| DbErr::RecordNotFound("the database's clock".into()))
}

/// The problem with an event dated further ahead of the database's `now` than the allowed seal
/// lag: the append path stamps events with the database's own clock.
fn dated_ahead(
    occurred: chrono::DateTime<Utc>,
    now: chrono::DateTime<Utc>,
    options: &VerifyOptions,
) -> Option<String> {
    let ahead = (occurred - now).to_std().unwrap_or_default();
    (ahead > options.max_seal_lag)
        .then(|| format!("dated {occurred}, in the future (written around the append path)"))
}

#[derive(Debug, FromQueryResult)]
struct Unsealed {
    id: i64,
    txid: i64,
    occurred_at: chrono::DateTime<chrono::FixedOffset>,
}

const PAGE: i64 = 5000;

/// Verifies the trail. `conn` must read `rowguard_audit` unfiltered (the schema owner).
pub async fn verify(conn: &DatabaseConnection, options: &VerifyOptions) -> Result<Report, DbErr> {
    // One read-only transaction with row security off: should the owner force row level
    // security onto the trail with a policy hiding rows from itself, reading refuses with an
    // error instead of quietly leaving those rows out of the check. Read committed, so that no
    // snapshot is held for the whole run (minutes on a large trail: it would hold back vacuum,
    // and a standby would cancel it), and the last check sees what was sealed meanwhile.
    let txn = conn
        .begin_with_config(
            Some(IsolationLevel::ReadCommitted),
            Some(AccessMode::ReadOnly),
        )
        .await?;
    txn.execute_unprepared("set local row_security = off")
        .await?;
    // Unqualified names (`clock_timestamp()`, `count`, `=`) must be the system's: a schema put
    // first on the database's or the role's search_path could otherwise answer them (a clock
    // running ahead hid an event dated in the future).
    txn.execute_unprepared("set local search_path = pg_catalog, pg_temp")
        .await?;
    // A value the driver cannot decode panics inside it; whoever controls the database can
    // write one, so it is a finding about the trail, not a crash of the verifier.
    let report = match std::panic::AssertUnwindSafe(verify_in(&txn, options))
        .catch_unwind()
        .await
    {
        Ok(report) => report?,
        Err(_) => {
            let mut report = Report::default();
            report.problem(
                None,
                None,
                "the trail holds a value verify cannot read (an out-of-range date or number, written \
                 around the append path); nothing after it was checked",
            );
            return Ok(report);
        }
    };
    txn.commit().await?;
    Ok(report)
}

/// How far the database's clock may stand from this machine's before its times are not trusted.
const CLOCK_TOLERANCE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

async fn verify_in(conn: &DatabaseTransaction, options: &VerifyOptions) -> Result<Report, DbErr> {
    let mut report = Report::default();
    // Waits and dates are measured on the database's clock; a superuser can replace even
    // `pg_catalog.clock_timestamp()`. Two machines' clocks agree to well within minutes.
    let database_now = database_time(conn).await?;
    let here = Utc::now();
    if (database_now - here).abs() > CLOCK_TOLERANCE {
        report.problem(
            None,
            None,
            format!(
                "the database's clock reads {database_now}, this machine's {here}: its dates (events waiting, \
                 dated ahead, checkpoints just signed) cannot be judged (a wrong system clock, or a replaced \
                 clock function)"
            ),
        );
    }
    // The append path stamps every event with the database's clock, which is never infinite;
    // such a date cannot be read into a time at all, so it is named before the walk.
    let impossible = conn
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "select id as event, null::bigint as link from rowguard_audit.events where not isfinite(occurred_at) \
             union all \
             select event_id, seq from rowguard_audit.chain \
             where event_occurred_at is not null and not isfinite(event_occurred_at) \
             order by 1 limit 100",
        ))
        .await?;
    if !impossible.is_empty() {
        for row in &impossible {
            let event: Option<i64> = row.try_get("", "event").ok();
            let link: Option<i64> = row.try_get("", "link").ok().flatten();
            report.problem(
                event,
                link,
                "is dated at an infinite time (written around the append path, which stamps the database's clock)",
            );
        }
        report.warnings.push(
            "the rest of the trail was not walked: its dates cannot be read until those rows are removed".to_owned(),
        );
        return Ok(report);
    }
    let trusted = checkpoints(conn, options, database_now, &mut report).await?;
    report.latest_checkpoint = trusted.keys().next_back().copied();
    let archived_months = archives(conn, options, &mut report).await?;
    let mut archived_links: BTreeMap<String, LinksDigest> = BTreeMap::new();

    // The chain starts at link 1 and the walk below starts there; a row numbered below it is
    // never walked, and would otherwise make the event it names look sealed.
    let below_one = count(
        conn,
        "select count(*) as n from rowguard_audit.chain where seq < 1",
    )
    .await?;
    if below_one > 0 {
        report.problem(
            None,
            None,
            format!(
                "{below_one} link(s) are numbered below 1: written around the sealer, outside the chain"
            ),
        );
    }
    // The walk reads each link number once; a second row with the same number (its key
    // dropped) would never be walked, yet make the event it names look sealed.
    for (column, what) in [("seq", "link numbers"), ("event_id", "events")] {
        let repeated = count(
            conn,
            &format!(
                "select count(*) as n from (select 1 from rowguard_audit.chain group by {column} having count(*) > 1) d"
            ),
        )
        .await?;
        if repeated > 0 {
            report.problem(
                None,
                None,
                format!("{repeated} {what} appear in more than one link (links written around the sealer)"),
            );
        }
    }

    // Walk the chain in order, recomputing every hash from the event it seals.
    let mut after = 0_i64;
    let mut expected_seq: Option<i64> = None;
    let mut previous: Vec<u8> = GENESIS.to_vec();
    let mut last_order: Option<(i64, i64)> = None;
    let mut last_seq = 0_i64;
    // The latest time of the events sealed so far. Links follow transaction ids, which follow
    // time: an event whose transaction came later but whose time lies well before an earlier
    // transaction's event (more than any transaction runs) was back-dated. A backlog that was
    // held up (an open transaction) keeps its order and its times, so it does not trip this.
    let mut latest_occurred: Option<chrono::DateTime<Utc>> = None;
    let lag = chrono::TimeDelta::from_std(options.max_seal_lag).unwrap_or(chrono::TimeDelta::MAX);
    let now = database_time(conn).await?;
    loop {
        let links = Link::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "select seq, event_id, event_txid, event_occurred_at, version, prev_hash, hash from rowguard_audit.chain \
             where seq > $1 order by seq limit $2",
            [after.into(), PAGE.into()],
        ))
        .all(conn)
        .await?;
        let Some(last) = links.last() else { break };
        after = last.seq;
        let ids: Vec<i64> = links.iter().map(|l| l.event_id).collect();
        // Every row carrying a linked id: the events' key is (id, occurred_at), so a second
        // row can reuse a sealed event's id, and must be seen rather than shadow the first.
        let mut events: HashMap<i64, Vec<EventRow>> = HashMap::new();
        for event in EventRow::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("select {EVENT_COLUMNS} from rowguard_audit.events where id = any($1)"),
            [ids.into()],
        ))
        .all(conn)
        .await?
        {
            events.entry(event.id).or_default().push(event);
        }

        for link in links {
            let (seq, event_id) = (link.seq, link.event_id);
            match expected_seq {
                None if seq == 1 => {}
                // Archiving detaches events, never links: a trail starts at link 1. A signed
                // checkpoint at the link before does not vouch for the ones cut off: it proves
                // their hash, not that they are still here.
                None => {
                    previous = link.prev_hash.clone();
                    report.problem(
                        None,
                        Some(seq),
                        format!(
                            "the chain starts at link {seq}: links 1 to {} are missing (deleted from the start of the trail)",
                            seq - 1
                        ),
                    );
                }
                Some(expected) if seq != expected => report.problem(
                    None,
                    Some(seq),
                    format!("links {expected} to {} are missing", seq - 1),
                ),
                Some(_) => {}
            }
            expected_seq = Some(seq + 1);
            last_seq = seq;
            report.links += 1;

            if link.prev_hash != previous {
                report.problem(
                    Some(event_id),
                    Some(seq),
                    "does not link to the link before it (links deleted, inserted or reordered)",
                );
            }
            let archived_month = link
                .event_occurred_at
                .map(|t| statement::month_of(&t))
                .filter(|m| archived_months.contains_key(m));
            let candidates = events.get(&event_id).map_or(&[][..], Vec::as_slice);
            if candidates.len() > 1 {
                report.problem(
                    Some(event_id),
                    Some(seq),
                    format!(
                        "{} events carry this id (an event was written with a sealed event's id)",
                        candidates.len()
                    ),
                );
            }
            let event = match link.event_occurred_at {
                Some(at) => candidates.iter().find(|e| e.occurred_at == at),
                None => candidates.first(),
            };
            match (event, link.event_occurred_at) {
                (None, Some(_)) if !candidates.is_empty() => report.problem(
                    Some(event_id),
                    Some(seq),
                    "the link's record of when its event occurred does not match the event (link or event altered)",
                ),
                (Some(_), None) if link.version >= 2 => report.problem(
                    Some(event_id),
                    Some(seq),
                    "the link does not record when its event occurred (link altered)",
                ),
                _ => {}
            }
            let event = event.or_else(|| candidates.first());
            match (event, CanonicalVersion::from_db(link.version)) {
                (None, _) if archived_month.is_some() => {
                    if let Some(month) = archived_month {
                        archived_links
                            .entry(month)
                            .or_default()
                            .add(seq, &link.hash);
                    }
                }
                (None, _) => report.problem(Some(event_id), Some(seq), "the event was deleted"),
                (Some(_), None) => report.problem(
                    Some(event_id),
                    Some(seq),
                    format!("unknown canonical version {}", link.version),
                ),
                (Some(event), Some(version)) => {
                    // Version 1 is the old commit trigger's: only the trail's first links, all
                    // written before the upgrade (transaction id 0), may use it.
                    if version == CanonicalVersion::V1 && (last_order.is_some() || event.txid != 0)
                    {
                        report.problem(
                            Some(event_id),
                            Some(seq),
                            "a version-1 link after the upgrade to version 2 (written around the sealer)",
                        );
                    }
                    if link_hash(&link.prev_hash, version, event)[..] != link.hash[..] {
                        report.problem(
                            Some(event_id),
                            Some(seq),
                            "the event's content was altered after it was sealed",
                        );
                    }
                    if version == CanonicalVersion::V2 {
                        let order = (event.txid, event.id);
                        if event.txid != link.event_txid
                            || last_order.is_some_and(|last| order <= last)
                        {
                            report.problem(
                                Some(event_id),
                                Some(seq),
                                "sealed out of order (events reordered)",
                            );
                        }
                        last_order = Some(order);
                        let occurred = event.occurred_at.with_timezone(&Utc);
                        if let Some(latest) = latest_occurred
                            && latest.checked_sub_signed(lag).is_some_and(|e| occurred < e)
                        {
                            report.problem(
                                Some(event_id),
                                Some(seq),
                                format!(
                                    "dated {occurred}, but written after an event of {latest}: back-dated \
                                     (or written by a transaction that ran longer than {}s)",
                                    options.max_seal_lag.as_secs()
                                ),
                            );
                        }
                        latest_occurred = latest_occurred.max(Some(occurred));
                        if let Some(problem) = dated_ahead(occurred, now, options) {
                            report.problem(Some(event_id), Some(seq), problem);
                        }
                    }
                }
            }
            if let Some(cp) = trusted.get(&seq) {
                if cp.head_hash == hex(&link.hash) {
                    report.checkpoints += 1;
                } else {
                    report.problem(
                        None,
                        Some(seq),
                        format!(
                            "the chain no longer matches the signed checkpoint of {} (the trail was rewritten and re-hashed)",
                            cp.created_at
                        ),
                    );
                }
            }
            // Follow the stored links, so one altered event is reported once, not at every
            // link after it; a re-hashed trail still fails at the next checkpoint.
            previous = link.hash;
        }
    }
    if let Some(latest) = report.latest_checkpoint
        && latest > last_seq
    {
        report.problem(
            None,
            Some(latest),
            format!(
                "the chain ends at link {last_seq}, but a signed checkpoint says it had {latest} links: the tail was cut off"
            ),
        );
    }

    for (month, statement) in &archived_months {
        let found = archived_links.remove(month).unwrap_or_default();
        let count = found.count;
        if count != statement.events || found.finish() != statement.links_digest {
            report.problem(
                None,
                None,
                format!(
                    "archived month {month}: {count} links with their events gone, but the signed archive \
                     statement covers {} links with another digest (events deleted, or links altered, \
                     under cover of the archive)",
                    statement.events
                ),
            );
        }
        report.archived += count;
    }
    if !archived_months.is_empty() {
        report.warnings.push(format!(
            "archived months (exported and detached; their events are accounted for by signed statements): {}",
            archived_months
                .iter()
                .map(|(m, s)| format!("{m} ({} events, export sha256 {})", s.events, s.export_sha256))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    unsealed(conn, options, last_order, &mut report).await?;
    Ok(report)
}

/// The signed archive statements (database and directory), by month.
async fn archives(
    conn: &DatabaseTransaction,
    options: &VerifyOptions,
    report: &mut Report,
) -> Result<BTreeMap<String, ArchiveBody>, DbErr> {
    let stored = StoredCheckpoint::find_by_statement(Statement::from_string(
        DbBackend::Postgres,
        "select 0::bigint as seq, body, signature from rowguard_audit.archives order by month",
    ))
    .all(conn)
    .await?;
    let mut months = BTreeMap::new();
    let mut accept = |statement: SignedCheckpoint, whence: &str, report: &mut Report| {
        let body = ArchiveBody::parse(&statement);
        match (statement.check(&options.keys), body) {
            (SignatureCheck::Valid, Some(body)) => {
                months.insert(body.month.clone(), body);
            }
            _ => report.problem(
                None,
                None,
                format!(
                    "archive statement {whence} is not signed by a given key (forged or altered)"
                ),
            ),
        }
    };
    let mut in_database = BTreeSet::new();
    for row in stored {
        let statement = SignedCheckpoint {
            body: row.body,
            signature: row.signature,
        };
        if let Some(body) = ArchiveBody::parse(&statement) {
            in_database.insert(body.month);
        }
        accept(statement, "in the database", report);
    }
    if let Some(dir) = &options.checkpoint_dir
        && let Ok(files) = dir.read_archives()
    {
        for (path, statement) in files {
            let Some(statement) = statement else { continue };
            if let Some(body) = ArchiveBody::parse(&statement)
                && !in_database.contains(&body.month)
            {
                report.problem(
                    None,
                    None,
                    format!(
                        "the archive statement for {} is missing from the database",
                        body.month
                    ),
                );
            }
            accept(statement, &format!("file {}", path.display()), report);
        }
    }
    Ok(months)
}

/// Checks every checkpoint's signature, in the database and in the directory, and returns the
/// trusted ones by link number. `now` is the database's clock, read as verification began.
async fn checkpoints(
    conn: &DatabaseTransaction,
    options: &VerifyOptions,
    now: chrono::DateTime<Utc>,
    report: &mut Report,
) -> Result<BTreeMap<i64, CheckpointBody>, DbErr> {
    // The directory is read before the database: the sealer writes a checkpoint's file only
    // after its commit, so every file read here is already in the database's answer below,
    // and a checkpoint that is in the database but not (yet) in the directory can only be
    // one committed while this ran (see the check at the end).
    let external = match &options.checkpoint_dir {
        None => None,
        // Mistyped or deleted, it cannot be told apart: one problem that says so, and the
        // database's checkpoints still checked.
        Some(dir) if !dir.root().is_dir() => {
            report.problem(
                None,
                None,
                format!(
                    "the checkpoint directory {} does not exist or is not a directory (mistyped, or deleted): the copies outside the database were not compared",
                    dir.root().display()
                ),
            );
            None
        }
        Some(dir) => match dir.read_all() {
            Ok(files) => Some(files),
            Err(e) => {
                report.problem(
                    None,
                    None,
                    format!(
                        "cannot read the checkpoint directory {}: {e}",
                        dir.root().display()
                    ),
                );
                Some(Vec::new())
            }
        },
    };
    let stored = StoredCheckpoint::find_by_statement(Statement::from_string(
        DbBackend::Postgres,
        "select seq, body, signature from rowguard_audit.checkpoints order by seq",
    ))
    .all(conn)
    .await?;
    if stored.is_empty() && external.as_ref().is_none_or(Vec::is_empty) {
        // Given a public key, the operator expects a signed trail: one with links and no
        // checkpoint anywhere had them deleted (or was never given the key), and must not pass
        // as a trail that was never signed.
        if !options.keys.is_empty()
            && count(
                conn,
                "select count(*) as n from (select 1 from rowguard_audit.chain limit 1) l",
            )
            .await?
                > 0
        {
            report.problem(
                None,
                None,
                "the trail has links but no signed checkpoint, although public keys were given: \
                 its checkpoints were deleted (or the sealer never had the signing key)",
            );
            return Ok(BTreeMap::new());
        }
        report.warnings.push(
            "the trail has no signed checkpoints: its links are consistent, but whoever controls the \
             database could have rewritten and re-hashed it (give `rowguard serve` a signing key)"
                .to_owned(),
        );
        return Ok(BTreeMap::new());
    }
    if options.keys.is_empty() {
        report.problem(
            None,
            None,
            "the trail has signed checkpoints: pass the public key(s) with --public-key to check them",
        );
    }

    let mut trusted: BTreeMap<i64, CheckpointBody> = BTreeMap::new();
    let mut in_database: BTreeMap<i64, CheckpointBody> = BTreeMap::new();
    let mut accept = |checkpoint: &SignedCheckpoint,
                      whence: &str,
                      report: &mut Report|
     -> Option<CheckpointBody> {
        let body = checkpoint.parse();
        let seq = body.as_ref().map(|b| b.seq);
        match checkpoint.check(&options.keys) {
            SignatureCheck::Valid => {}
            SignatureCheck::UnknownKey if options.keys.is_empty() => return None,
            SignatureCheck::UnknownKey => {
                report.problem(
                    None,
                    seq,
                    format!(
                        "checkpoint {whence} is signed by key {}, which is not among the given public keys (forged, or pass the old key too)",
                        body.as_ref().map_or("?", |b| b.key_id.as_str())
                    ),
                );
                return None;
            }
            SignatureCheck::Invalid => {
                report.problem(
                    None,
                    seq,
                    format!("checkpoint {whence} has an invalid signature (forged or altered)"),
                );
                return None;
            }
        }
        let body = body?;
        // The same head signed twice (a new leader signs the head it finds) is no problem; two
        // different heads for one link number are.
        if let Some(known) = trusted.get(&body.seq)
            && known.head_hash != body.head_hash
        {
            report.problem(
                None,
                Some(body.seq),
                format!("two different signed checkpoints for link {} (the sealer's key may be compromised)", body.seq),
            );
        }
        trusted.insert(body.seq, body.clone());
        Some(body)
    };
    for row in &stored {
        let checkpoint = SignedCheckpoint {
            body: row.body.clone(),
            signature: row.signature.clone(),
        };
        if let Some(body) = accept(&checkpoint, "in the database", report) {
            if body.seq != row.seq {
                report.problem(
                    None,
                    Some(row.seq),
                    "checkpoint row was moved to another link number",
                );
            }
            in_database.insert(body.seq, body);
        }
    }
    if let Some(files) = external {
        let mut in_directory: BTreeMap<i64, String> = BTreeMap::new();
        for (path, checkpoint) in files {
            let Some(checkpoint) = checkpoint else {
                report.problem(
                    None,
                    None,
                    format!("checkpoint file {} is not a checkpoint", path.display()),
                );
                continue;
            };
            if let Some(body) = accept(&checkpoint, &format!("file {}", path.display()), report) {
                in_directory.insert(body.seq, checkpoint.body.clone());
            }
        }
        for seq in in_directory.keys() {
            if !in_database.contains_key(seq) {
                report.problem(
                    None,
                    Some(*seq),
                    "a signed checkpoint in the directory is missing from the database (deleted)",
                );
            }
        }
        // A running sealer commits a checkpoint, then writes its file: the database's newest
        // one, signed within the allowed seal lag, may not be there yet. Its file missing hides
        // nothing: the signed copy in the database still binds the chain.
        let newest_file = in_directory.keys().next_back().copied();
        let newest_in_database = in_database.keys().next_back().copied();
        for (seq, body) in &in_database {
            if in_directory.contains_key(seq) {
                continue;
            }
            let recent = chrono::DateTime::parse_from_rfc3339(&body.created_at)
                .ok()
                .and_then(|at| (now - at.with_timezone(&Utc)).abs().to_std().ok())
                .is_some_and(|age| age <= options.max_seal_lag);
            if recent
                && Some(*seq) == newest_in_database
                && newest_file.is_none_or(|newest| *seq > newest)
            {
                report.warnings.push(format!(
                    "checkpoint of link {seq} was signed moments ago and its file is not in the checkpoint directory yet (it is written after the commit): verify again to compare it"
                ));
            } else {
                report.problem(
                    None,
                    Some(*seq),
                    "a signed checkpoint in the database is missing from the checkpoint directory",
                );
            }
        }
    }
    Ok(trusted)
}

/// Events not in the chain: ones the sealer has already passed were written around the append
/// path; others may just be waiting, unless for too long.
async fn unsealed(
    conn: &DatabaseTransaction,
    options: &VerifyOptions,
    sealed_up_to: Option<(i64, i64)>,
    report: &mut Report,
) -> Result<(), DbErr> {
    let rows = Unsealed::find_by_statement(Statement::from_string(
        DbBackend::Postgres,
        "select e.id, e.txid, e.occurred_at from rowguard_audit.events e \
         where not exists (select 1 from rowguard_audit.chain c where c.event_id = e.id and c.seq >= 1 \
                           and (c.event_occurred_at is null or c.event_occurred_at = e.occurred_at)) \
         order by e.txid, e.id",
    ))
    .all(conn)
    .await?;
    let now = database_time(conn).await?;
    for row in rows {
        let occurred = row.occurred_at.with_timezone(&Utc);
        let waited = (now - occurred).to_std().unwrap_or_default();
        if let Some(problem) = dated_ahead(occurred, now, options) {
            // It would otherwise count as "waiting" forever.
            report.problem(Some(row.id), None, problem);
        } else if sealed_up_to.is_some_and(|last| (row.txid, row.id) < last) || row.txid <= 0 {
            report.problem(
                Some(row.id),
                None,
                "is not in the chain although the sealer has passed it (inserted around the append path)",
            );
        } else if waited > options.max_seal_lag {
            report.problem(
                Some(row.id),
                None,
                format!(
                    "unsealed for {}s, longer than {}s (is a sealer running?)",
                    waited.as_secs(),
                    options.max_seal_lag.as_secs()
                ),
            );
        } else {
            report.pending += 1;
        }
    }
    Ok(())
}

/// `rowguard audit verify`: prints what was checked and every problem; an error (non-zero exit)
/// when there is any.
/// Why `audit verify` did not say "intact": the trail failed a check, or it could not be
/// checked at all. A scheduled job tells them apart by exit status (1 and 2).
#[derive(Debug)]
pub enum VerifyFailure {
    NotIntact(String),
    CouldNotCheck(String),
}

pub async fn run_command(
    settings: &crate::settings::MigrationSettings,
    public_keys: &[std::path::PathBuf],
    checkpoints: Option<std::path::PathBuf>,
    max_seal_lag_secs: u64,
) -> Result<(), VerifyFailure> {
    use std::io::Write;
    let keys = TrustedKeys::from_files(public_keys)
        .map_err(|e| VerifyFailure::CouldNotCheck(format!("--public-key {e}")))?;
    let options = VerifyOptions {
        keys,
        checkpoint_dir: checkpoints.map(CheckpointDir::new),
        max_seal_lag: Duration::from_secs(max_seal_lag_secs),
    };
    let owner = crate::db::connect_as_role(&settings.url, &settings.role_prefix.owner())
        .await
        .map_err(|e| {
            VerifyFailure::CouldNotCheck(format!(
                "connecting to verify the audit trail: {}",
                crate::db::with_cause(&e)
            ))
        })?;
    // Once connected as the owner, a trail that cannot be read (a table or function renamed,
    // dropped or made unreadable) is one that whoever controls the database changed: not intact,
    // not "could not check", which an attacker would prefer.
    let report = verify(&owner, &options).await.map_err(|e| {
        let why = std::error::Error::source(&e)
            .map(|why| format!(" ({why})"))
            .unwrap_or_default();
        VerifyFailure::NotIntact(format!(
            "audit trail NOT intact: it could not be read as the owner: {e}{why}"
        ))
    });
    // What the sealer compares every round: while the trail's functions or triggers differ from
    // this build's migrations, nothing is sealed, and what was written meanwhile may have been
    // rewritten on its way (an owner's replacement). Said, not counted as tampering with the
    // links: the links above are checked from the rows themselves.
    let drift = super::schema_drift::ExpectedAuditSchema::for_roles(&settings.role_prefix)
        .drift(&owner)
        .await
        .unwrap_or_else(|e| vec![format!("it could not be compared ({e})")]);
    let _ = owner.close().await;
    let report = report?;
    let mut out = std::io::stdout();
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    for difference in &drift {
        let _ = writeln!(
            out,
            "warning: the audit trail's schema differs from this build's migrations: {difference} \
             (the sealer seals nothing while it does; run `rowguard check`)"
        );
    }
    let summary = format!(
        "{} links recomputed, {} signed checkpoints matched (newest at link {}), {} events waiting to be sealed",
        report.links,
        report.checkpoints,
        report
            .latest_checkpoint
            .map_or_else(|| "none".to_owned(), |s| s.to_string()),
        report.pending
    );
    if report.is_intact() {
        let _ = writeln!(out, "audit trail intact: {summary}");
        return Ok(());
    }
    let mut message = format!(
        "audit trail NOT intact ({} problems; {summary}):",
        report.problems.len()
    );
    for problem in &report.problems {
        message.push_str(&format!("\n  - {problem}"));
    }
    Err(VerifyFailure::NotIntact(message))
}
