//! The audit trail against the people who run the database: every way the schema owner or a
//! superuser could rewrite it is tried here, and `rowguard audit verify` (given the public key
//! and the checkpoint directory) must name each one. The sealer is driven round by round so each
//! spec knows exactly what was sealed and checkpointed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use migration::{Migrator, MigratorTrait, RoleNames};
use rowguard::audit::canonical::{CanonicalVersion, EVENT_COLUMNS, EventRow, GENESIS, link_hash};
use rowguard::audit::checkpoint::{CheckpointDir, SignedCheckpoint, hex};
use rowguard::audit::keys::{AuditSigner, TrustedKeys};
use rowguard::audit::record::{AuditAction, AuditContext, AuditEntry, AuditOutcome, append};
use rowguard::audit::sealer::{Sealer, SealerSettings, SealerStatus};
use rowguard::audit::verify::{Report, VerifyOptions, verify};
use rowguard::db::{AccessMode, Database};
use rowguard_tests::fixtures::{Person, enroll};
use rowguard_tests::{TestDb, cluster, connect, migration_connection, test_roles};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement, TransactionTrait,
};
use uuid::Uuid;

use crate::support::query_count;

/// Who tampers.
#[derive(Debug, Clone, Copy)]
enum Attacker {
    /// `rowguard_owner`: owns the trail's tables, so it can disable their triggers and grant
    /// itself UPDATE and DELETE.
    Owner,
    /// A superuser, with triggers off for the session.
    Superuser,
}

const ATTACKERS: [Attacker; 2] = [Attacker::Owner, Attacker::Superuser];

/// A test database with a trail, its sealer (key, checkpoint directory) and a way to tamper.
struct Trail {
    t: TestDb,
    db: Database,
    sealer: Sealer,
    last_checkpoint: Option<Instant>,
    signer: Arc<AuditSigner>,
    dir: PathBuf,
    person: Person,
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rowguard-audit-{name}-{}-{}",
        std::process::id(),
        Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn sealer(db: &Database, signer: &Arc<AuditSigner>, dir: &std::path::Path) -> Sealer {
    sealer_checkpointing_every(db, signer, dir, Duration::ZERO)
}

fn sealer_checkpointing_every(
    db: &Database,
    signer: &Arc<AuditSigner>,
    dir: &std::path::Path,
    checkpoint_every: Duration,
) -> Sealer {
    sealer_with(db, signer, dir, 20, checkpoint_every)
}

fn sealer_with(
    db: &Database,
    signer: &Arc<AuditSigner>,
    dir: &std::path::Path,
    batch: u32,
    checkpoint_every: Duration,
) -> Sealer {
    Sealer::new(
        db.clone(),
        SealerSettings {
            batch,
            checkpoint_every,
            ..SealerSettings::default()
        },
        Some(signer.clone()),
        Some(CheckpointDir::new(dir)),
        Arc::new(SealerStatus::default()),
    )
}

impl Trail {
    /// `events` events, sealed in rounds of 20, each round checkpointed.
    async fn new(events: usize) -> Trail {
        Self::checkpointing_every(events, Duration::ZERO).await
    }

    /// `events` events, sealed in rounds of 20, checkpointed at most once per `interval`.
    async fn checkpointing_every(events: usize, interval: Duration) -> Trail {
        Self::sealing(events, 20, interval).await
    }

    /// `events` events, sealed in rounds of `batch`, checkpointed at most once per `interval`.
    async fn sealing(events: usize, batch: u32, interval: Duration) -> Trail {
        let t = TestDb::new().await;
        let person = enroll(&t.owner().await, "alice").await;
        let db = t.gateway(2).await;
        let signer = Arc::new(AuditSigner::generate());
        let dir = scratch_dir("checkpoints");
        let sealer = sealer_with(&db, &signer, &dir, batch, interval);
        let mut trail = Trail {
            t,
            db,
            sealer,
            last_checkpoint: None,
            signer,
            dir,
            person,
        };
        trail.append(events).await;
        trail.seal_all().await;
        // Another spec's open transaction can hold some of the events back to a later round,
        // after the first checkpoint was signed; with a checkpoint interval, those would stay
        // unsigned. One more round with a checkpoint due signs them, so every trail starts with
        // all of its events under a checkpoint.
        let signed_at = trail.last_checkpoint.take();
        trail
            .sealer
            .round(&mut trail.last_checkpoint)
            .await
            .expect("seal round");
        // Nothing was left unsigned: the interval still runs from the checkpoint before.
        trail.last_checkpoint = trail.last_checkpoint.or(signed_at);
        trail
    }

    async fn append(&self, count: usize) {
        for _ in 0..count {
            let scope = self
                .db
                .scope(
                    &self.person.clinician(),
                    AccessMode::ReadWrite,
                    Uuid::new_v4(),
                )
                .await
                .expect("scope");
            let entry = AuditEntry {
                action: AuditAction::Read,
                outcome: AuditOutcome::Success,
                patients: BTreeSet::from([Uuid::new_v4()]),
            };
            append(scope.conn(), &AuditContext::default(), &[entry])
                .await
                .expect("append");
            scope.commit().await.expect("commit");
        }
    }

    /// Seals until every committed event is in the chain. The horizon is the whole cluster's
    /// oldest running transaction, so another spec's open transaction can hold sealing back
    /// for a moment; a replaced sealer (key rotation) first waits for its predecessor's lease
    /// to run out.
    async fn seal_all(&mut self) {
        let admin = self.t.admin().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let round = self
                .sealer
                .round(&mut self.last_checkpoint)
                .await
                .expect("seal round");
            if round.sealed > 0 {
                continue;
            }
            // A replaced sealer (key rotation) waits for its predecessor's lease to run out.
            if round.leader && unsealed(&admin).await == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "events stayed unsealed for a minute"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn options(&self, keys: Vec<&AuditSigner>) -> VerifyOptions {
        VerifyOptions {
            keys: TrustedKeys::new(keys.iter().map(|k| k.public_key()).collect()),
            checkpoint_dir: Some(CheckpointDir::new(&self.dir)),
            max_seal_lag: Duration::from_secs(300),
        }
    }

    async fn verify(&self) -> Report {
        self.verify_with(vec![&self.signer]).await
    }

    /// `rowguard audit <command> --public-key <the trail's key>` against `url`, as an operator
    /// runs it.
    fn audit_cli(&self, command: &str, url: &str) -> std::process::Command {
        let public = self.dir.join("public.pem");
        std::fs::write(&public, self.signer.public_pem().expect("pem")).expect("public key");
        let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_rowguard-cli"));
        cli.args(["audit", command, "--public-key"])
            .arg(&public)
            .env("ROWGUARD_MIGRATION_DATABASE_URL", url)
            .env("ROWGUARD_ROLE_PREFIX", "rgtest");
        cli
    }

    async fn verify_with(&self, keys: Vec<&AuditSigner>) -> Report {
        let owner = self.t.owner().await;
        verify(&owner, &self.options(keys)).await.expect("verify")
    }

    /// Runs `sql` as `attacker`, with the trail's append-only triggers out of the way, and puts
    /// them back after (as an attacker would: the sealer refuses to seal while they are off).
    async fn tamper(&self, attacker: Attacker, sql: &str) {
        let script = match attacker {
            Attacker::Owner => format!(
                "do $$ declare r record; begin \
                   for r in select c.oid::regclass as t from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                            where n.nspname = 'rowguard_audit' and c.relkind in ('r', 'p') loop \
                     execute format('alter table %s disable trigger user', r.t); \
                     execute format('grant update, delete, truncate on %s to {owner}', r.t); \
                   end loop; end $$; {sql}; \
                 do $$ declare r record; begin \
                   for r in select c.oid::regclass as t from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                            where n.nspname = 'rowguard_audit' and c.relkind in ('r', 'p') loop \
                     execute format('alter table %s enable trigger user', r.t); \
                   end loop; end $$",
                owner = test_roles().owner()
            ),
            Attacker::Superuser => {
                format!(
                    "set session_replication_role = replica; {sql}; set session_replication_role = origin"
                )
            }
        };
        let conn = match attacker {
            Attacker::Owner => self.t.owner().await,
            Attacker::Superuser => self.t.admin().await,
        };
        conn.execute_unprepared(&script)
            .await
            .unwrap_or_else(|e| panic!("tampering as {attacker:?} failed: {e}\n{script}"));
    }

    /// SQL that plants an invented read of a patient by the trail's clinician, as if written
    /// by transaction `txid` at `occurred_at` (SQL expressions), and with `forged_link` (a link
    /// number) a chain row naming it, with made-up hashes.
    fn plant_sql(&self, txid: &str, occurred_at: &str, forged_link: Option<&str>) -> String {
        let event = format!(
            "insert into rowguard_audit.events (txid, occurred_at, clinician_id, app_role, action, outcome, purpose, patient_ids) \
             values ({txid}, {occurred_at}, {}, 'rgtest_clinician', 'read', 'success', 'treatment', \
                     array['11111111-1111-1111-1111-111111111111'::uuid])",
            self.person.id
        );
        match forged_link {
            None => event,
            Some(seq) => format!(
                "{event}; insert into rowguard_audit.chain (seq, event_id, event_txid, event_occurred_at, version, prev_hash, hash) \
                 select {seq}, e.id, e.txid, e.occurred_at, 2, '\\x00', '\\x00' from rowguard_audit.events e \
                 where e.id = currval('rowguard_audit.event_ids')"
            ),
        }
    }

    /// The id of the event sealed at chain position `seq`.
    async fn event_at(&self, seq: i64) -> i64 {
        query_count(
            &self.t.admin().await,
            &format!("select event_id as value from rowguard_audit.chain where seq = {seq}"),
        )
        .await
        .expect("link")
    }

    /// Every link and event, in chain order (as an attacker with the database would read them).
    async fn links(&self) -> Vec<(i64, EventRow)> {
        #[derive(FromQueryResult)]
        struct Pos {
            seq: i64,
            event_id: i64,
        }
        let admin = self.t.admin().await;
        let positions = Pos::find_by_statement(Statement::from_string(
            DbBackend::Postgres,
            "select seq, event_id from rowguard_audit.chain order by seq",
        ))
        .all(&admin)
        .await
        .expect("links");
        let events = EventRow::find_by_statement(Statement::from_string(
            DbBackend::Postgres,
            format!("select {EVENT_COLUMNS} from rowguard_audit.events"),
        ))
        .all(&admin)
        .await
        .expect("events");
        positions
            .into_iter()
            .filter_map(|p| {
                events
                    .iter()
                    .find(|e| e.id == p.event_id)
                    .map(|e| (p.seq, e.clone()))
            })
            .collect()
    }

    /// SQL that replaces the whole chain with one recomputed (correctly, in Rust) over `events`
    /// in the given order: what an attacker who read the verifier's source would do.
    fn rehash_sql(events: &[EventRow]) -> String {
        let mut previous = GENESIS.to_vec();
        let mut rows = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let hash = link_hash(&previous, CanonicalVersion::V2, event);
            rows.push(format!(
                "({}, {}, {}, 2, '\\x{}'::bytea, '\\x{}'::bytea)",
                i + 1,
                event.id,
                event.txid,
                hex(&previous),
                hex(&hash)
            ));
            previous = hash.to_vec();
        }
        format!(
            "delete from rowguard_audit.chain; \
             insert into rowguard_audit.chain (seq, event_id, event_txid, version, prev_hash, hash) values {}",
            rows.join(", ")
        )
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Committed events not in the chain.
async fn unsealed(admin: &DatabaseConnection) -> i64 {
    query_count(
        admin,
        "select count(*) as value from rowguard_audit.events e \
         where not exists (select 1 from rowguard_audit.chain c where c.event_id = e.id)",
    )
    .await
    .expect("unsealed count")
}

fn problems(report: &Report) -> String {
    report
        .problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_caught(report: &Report, attacker: Attacker, needle: &str) {
    assert!(
        !report.is_intact(),
        "{attacker:?}'s tampering went unnoticed: {report:?}"
    );
    assert!(
        problems(report).contains(needle),
        "{attacker:?}: expected a problem mentioning {needle:?}, got:\n{}",
        problems(report)
    );
}

#[tokio::test]
async fn an_untouched_trail_verifies_clean_against_its_key_and_checkpoints() {
    let trail = Trail::new(50).await;
    let report = trail.verify().await;
    assert!(report.is_intact(), "{}", problems(&report));
    assert_eq!(report.links, 50);
    assert_eq!(report.latest_checkpoint, Some(50));
    assert!(report.checkpoints >= 3, "{report:?}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let files = CheckpointDir::new(&trail.dir)
        .read_all()
        .expect("checkpoint files");
    assert_eq!(files.len() as u64, report.checkpoints);
}

#[tokio::test]
async fn a_trail_verifies_across_a_key_rotation_with_both_public_keys() {
    let mut trail = Trail::new(30).await;
    let old = trail.signer.clone();
    let new = Arc::new(AuditSigner::generate());
    trail.signer = new.clone();
    trail.sealer = sealer(&trail.db, &new, &trail.dir);
    trail.last_checkpoint = None;
    trail.append(30).await;
    trail.seal_all().await;

    let report = trail.verify_with(vec![&old, &new]).await;
    assert!(report.is_intact(), "{}", problems(&report));
    assert_eq!((report.links, report.latest_checkpoint), (60, Some(60)));

    let report = trail.verify_with(vec![&new]).await;
    assert!(
        problems(&report).contains("not among the given public keys"),
        "checkpoints of the retired key need its public key: {}",
        problems(&report)
    );
}

#[tokio::test]
async fn deleting_an_event_is_caught() {
    for attacker in ATTACKERS {
        let trail = Trail::new(50).await;
        let victim = trail.event_at(17).await;
        trail
            .tamper(
                attacker,
                &format!("delete from rowguard_audit.events where id = {victim}"),
            )
            .await;
        assert_caught(
            &trail.verify().await,
            attacker,
            &format!("event {victim} (link 17): the event was deleted"),
        );
    }
}

#[tokio::test]
async fn changing_an_event_is_caught() {
    for attacker in ATTACKERS {
        let trail = Trail::new(50).await;
        let victim = trail.event_at(23).await;
        trail
            .tamper(
                attacker,
                &format!(
                    "update rowguard_audit.events set patient_ids = '{{}}' where id = {victim}"
                ),
            )
            .await;
        assert_caught(
            &trail.verify().await,
            attacker,
            &format!("event {victim} (link 23): the event's content was altered"),
        );
    }
}

#[tokio::test]
async fn inserting_an_event_into_the_past_is_caught() {
    for attacker in ATTACKERS {
        let trail = Trail::new(50).await;
        let links = trail.links().await;
        let (_, before) = &links[9];
        trail
            .tamper(
                attacker,
                &format!(
                    "insert into rowguard_audit.events (txid, occurred_at, clinician_id, app_role, action, outcome, purpose) \
                     values ({}, '{}', {}, 'rgtest_clinician', 'read', 'success', 'treatment')",
                    before.txid,
                    before.occurred_at.to_rfc3339(),
                    trail.person.id
                ),
            )
            .await;
        assert_caught(
            &trail.verify().await,
            attacker,
            "inserted around the append path",
        );
    }
}

#[tokio::test]
async fn an_inserted_event_with_a_forged_link_numbered_below_one_is_caught() {
    // The link makes the event look sealed, but the chain starts at link 1: a walk from there
    // never meets it.
    for attacker in ATTACKERS {
        let trail = Trail::new(30).await;
        let links = trail.links().await;
        let (_, before) = &links[9];
        let planted = trail.plant_sql(
            &before.txid.to_string(),
            &format!("'{}'", before.occurred_at.to_rfc3339()),
            Some("-e.id"),
        );
        trail.tamper(attacker, &planted).await;
        assert_caught(&trail.verify().await, attacker, "numbered below 1");
    }
}

#[tokio::test]
async fn an_event_reusing_a_sealed_events_id_is_caught() {
    // The events' key is (id, occurred_at), so a second row can carry a sealed event's id with
    // another time. Dated a month earlier, it is read before the genuine one.
    for attacker in ATTACKERS {
        let trail = Trail::new(30).await;
        let victim = trail.event_at(12).await;
        trail
            .t
            .admin()
            .await
            .execute_unprepared(
                "select rowguard_audit.ensure_partitions(date_trunc('month', now()) - interval '1 month', 0)",
            )
            .await
            .expect("last month's partition");
        trail
            .tamper(
                attacker,
                &format!(
                    "insert into rowguard_audit.events (id, txid, occurred_at, clinician_id, app_role, action, outcome, purpose, patient_ids) \
                     select id, txid, date_trunc('month', now()) - interval '15 days', clinician_id, app_role, action, outcome, purpose, \
                            array['11111111-1111-1111-1111-111111111111'::uuid] \
                     from rowguard_audit.events where id = {victim}"
                ),
            )
            .await;
        assert_caught(
            &trail.verify().await,
            attacker,
            &format!("event {victim} (link 12): 2 events carry this id"),
        );
    }
}

#[tokio::test]
async fn deleting_every_checkpoint_row_is_caught_when_the_public_key_is_given() {
    // Without the checkpoint directory, a trail whose checkpoints were all deleted must not pass
    // as one that was never signed.
    for attacker in ATTACKERS {
        let trail = Trail::new(20).await;
        trail
            .tamper(attacker, "delete from rowguard_audit.checkpoints")
            .await;
        let owner = trail.t.owner().await;
        let options = VerifyOptions {
            checkpoint_dir: None,
            ..trail.options(vec![&trail.signer])
        };
        let report = verify(&owner, &options).await.expect("verify");
        assert_caught(&report, attacker, "no signed checkpoint");
    }
}

#[tokio::test]
async fn links_sealed_between_checkpoints_are_signed_once_the_interval_is_due() {
    // Events sealed just after a checkpoint, then quiet: the next checkpoint must still come
    // when it is due, or the tail stays unsigned (and can be cut unnoticed) until traffic returns.
    let mut trail = Trail::checkpointing_every(5, Duration::from_secs(60)).await;
    assert_eq!(trail.verify().await.latest_checkpoint, Some(5));
    trail.append(5).await;
    trail.seal_all().await;
    assert_eq!(
        trail.verify().await.latest_checkpoint,
        Some(5),
        "within the interval no checkpoint is due"
    );
    trail.last_checkpoint = Instant::now().checked_sub(Duration::from_secs(61));
    assert!(
        trail.last_checkpoint.is_some(),
        "the machine has been up a minute"
    );
    let round = trail
        .sealer
        .round(&mut trail.last_checkpoint)
        .await
        .expect("round");
    assert_eq!(round.sealed, 0, "nothing new to seal");
    let report = trail.verify().await;
    assert!(report.is_intact(), "{}", problems(&report));
    assert_eq!(report.latest_checkpoint, Some(10));
}

#[tokio::test]
async fn a_back_dated_event_sealed_after_a_checkpoint_is_caught() {
    // Written now (so the sealer chains it as a new event) but dated a month ago: an access
    // that "happened" long before the events of the transactions sealed before it.
    for attacker in ATTACKERS {
        let mut trail = Trail::new(20).await;
        trail
            .tamper(
                attacker,
                &format!(
                    "insert into rowguard_audit.events (occurred_at, clinician_id, app_role, action, outcome, purpose, patient_ids) \
                     values (now() - interval '30 days', {}, 'rgtest_clinician', 'read', 'success', 'treatment', \
                             array['11111111-1111-1111-1111-111111111111'::uuid])",
                    trail.person.id
                ),
            )
            .await;
        trail.seal_all().await;
        assert_caught(&trail.verify().await, attacker, "back-dated");
    }
}

#[tokio::test]
async fn a_new_leader_copies_into_the_checkpoint_directory_only_checkpoints_its_own_key_signed() {
    // A review: the copy for a leader that died before writing its file took every recent
    // checkpoint row, so the database owner could write forged ones into write-once storage.
    let mut trail = Trail::new(20).await;
    let rogue = AuditSigner::generate();
    let forged = SignedCheckpoint::sign(&rogue, 99, &[7; 32], chrono::Utc::now());
    let body = forged.parse().expect("body");
    trail
        .tamper(
            Attacker::Owner,
            &format!(
                "insert into rowguard_audit.checkpoints (seq, head_hash, created_at, key_id, body, signature) \
                 values (99, '\\x{}', now(), '{}', '{}', '\\x{}')",
                body.head_hash,
                body.key_id,
                forged.body.replace('\'', "''"),
                hex(&forged.signature)
            ),
        )
        .await;
    trail.sealer = sealer(&trail.db, &trail.signer, &trail.dir);
    trail.last_checkpoint = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !trail
        .sealer
        .round(&mut trail.last_checkpoint)
        .await
        .expect("round")
        .leader
    {
        assert!(Instant::now() < deadline, "the lease never passed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seqs: Vec<i64> = checkpoint_files(&trail.dir)
        .into_iter()
        .map(|(_, seq)| seq)
        .collect();
    assert!(!seqs.contains(&99), "the forged row was copied: {seqs:?}");
    assert!(seqs.contains(&20), "{seqs:?}");
}

#[tokio::test]
async fn a_new_leader_does_not_sign_again_a_head_already_signed_with_its_key() {
    // A restart over an idle trail: signing the same head again writes a second checkpoint file
    // for the same link, which clashes with the one already there.
    let mut trail = Trail::new(20).await;
    assert_eq!(trail.verify().await.latest_checkpoint, Some(20));
    trail.sealer = sealer(&trail.db, &trail.signer, &trail.dir);
    trail.last_checkpoint = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let round = trail
            .sealer
            .round(&mut trail.last_checkpoint)
            .await
            .expect("round");
        assert_eq!(
            round.checkpoint, None,
            "the unchanged head was signed again"
        );
        if round.leader {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lease never passed to the new sealer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    trail.append(3).await;
    trail.seal_all().await;
    assert_eq!(
        trail.verify().await.latest_checkpoint,
        Some(23),
        "new links are signed"
    );
}

#[tokio::test]
async fn a_backlog_held_up_past_the_seal_lag_and_sealed_in_several_rounds_verifies_clean() {
    // An open transaction anywhere holds sealing back (README); once it ends, the backlog is
    // sealed 20 at a time with a checkpoint between rounds. Its events are older than those
    // checkpoints by more than the allowed lag, and are not back-dated for that.
    let mut trail = Trail::new(5).await;
    let admin = trail.t.admin().await;
    let holding = admin.begin().await.expect("begin");
    holding
        .execute_unprepared("select pg_current_xact_id()")
        .await
        .expect("a transaction id");
    trail.append(45).await;
    let round = trail
        .sealer
        .round(&mut trail.last_checkpoint)
        .await
        .expect("round");
    assert_eq!(round.sealed, 0, "held back by the open transaction");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    holding.commit().await.expect("commit");
    trail.seal_all().await;
    let owner = trail.t.owner().await;
    let options = VerifyOptions {
        max_seal_lag: Duration::from_secs(2),
        ..trail.options(vec![&trail.signer])
    };
    let report = verify(&owner, &options).await.expect("verify");
    assert!(report.is_intact(), "{}", problems(&report));
    assert!(
        report.checkpoints >= 4,
        "sealed and signed over several rounds: {report:?}"
    );
}

#[tokio::test]
async fn an_event_dated_in_the_future_is_caught_sealed_or_not() {
    // Unsealed, it would count as "waiting" forever; sealed, it claims an access to come.
    for attacker in ATTACKERS {
        let mut trail = Trail::new(20).await;
        trail
            .tamper(
                attacker,
                &format!(
                    "insert into rowguard_audit.events (occurred_at, clinician_id, app_role, action, outcome, purpose) \
                     values (now() + interval '1 year', {}, 'rgtest_clinician', 'read', 'success', 'treatment')",
                    trail.person.id
                ),
            )
            .await;
        assert_caught(&trail.verify().await, attacker, "in the future");
        trail.seal_all().await;
        assert_caught(&trail.verify().await, attacker, "in the future");
    }
}

#[tokio::test]
async fn a_clock_put_first_on_the_search_path_does_not_hide_an_event_dated_ahead() {
    // A review: verify called `clock_timestamp()` unqualified, so a superuser's function of
    // that name in a schema first on the database's search_path moved "now" past the event.
    let trail = Trail::new(20).await;
    trail
        .tamper(
            Attacker::Superuser,
            &format!(
                "insert into rowguard_audit.events (occurred_at, clinician_id, app_role, action, outcome, purpose) \
                 values (now() + interval '1 year', {}, 'rgtest_clinician', 'read', 'success', 'treatment'); \
                 create schema evil; \
                 create function evil.clock_timestamp() returns timestamptz language sql \
                   as $$ select pg_catalog.now() + interval '2 years' $$; \
                 grant usage on schema evil to public; \
                 do $$ begin execute format('alter database %I set search_path = evil, pg_catalog, public', \
                   pg_catalog.current_database()); end $$",
                trail.person.id
            ),
        )
        .await;
    assert_caught(&trail.verify().await, Attacker::Superuser, "in the future");
}

#[tokio::test]
async fn a_replaced_system_clock_is_caught_rather_than_trusted() {
    // A second review: a superuser can replace pg_catalog.clock_timestamp() itself, which a
    // search path cannot keep out; verify's "now" then hid an event dated ahead.
    let trail = Trail::new(20).await;
    trail
        .tamper(
            Attacker::Superuser,
            "create or replace function pg_catalog.clock_timestamp() returns timestamptz \
               language sql as $$ select pg_catalog.now() + interval '2 years' $$",
        )
        .await;
    assert_caught(
        &trail.verify().await,
        Attacker::Superuser,
        "the database's clock reads",
    );
}

#[tokio::test]
async fn an_event_dated_at_infinity_is_a_problem_for_verify_and_a_visible_failure_for_the_sealer() {
    // A review: the date cannot be decoded, and the driver panics: verify crashed (exit 101)
    // and the sealing task died while /readyz and the metrics kept their last healthy values.
    for attacker in ATTACKERS {
        let trail = Trail::new(20).await;
        trail
            .tamper(
                attacker,
                &format!(
                    "insert into rowguard_audit.events (occurred_at, clinician_id, app_role, action, outcome, purpose) \
                     values ('-infinity', {}, 'rgtest_clinician', 'read', 'success', 'treatment')",
                    trail.person.id
                ),
            )
            .await;
        assert_caught(&trail.verify().await, attacker, "infinite time");

        let status = Arc::new(SealerStatus::default());
        let sealer = Sealer::new(
            trail.db.clone(),
            SealerSettings {
                interval: Duration::from_millis(50),
                ..SealerSettings::default()
            },
            Some(trail.signer.clone()),
            Some(CheckpointDir::new(&trail.dir)),
            status.clone(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sealer.run(async move {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !status.is_failing() {
            assert!(!task.is_finished(), "{attacker:?}: the sealing task ended");
            assert!(
                Instant::now() < deadline,
                "{attacker:?}: the sealer never reported failing"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(());
        task.await.expect("the sealing task ends when told to");
    }
}

#[tokio::test]
async fn seal_rounds_that_keep_failing_show_a_growing_seal_lag() {
    // A review: a sealer whose rounds failed kept the seal lag of its last good round (0), so
    // `/readyz`, the metric and the lag warning said all was sealed while nothing was.
    let trail = Trail::new(5).await;
    trail.append(3).await;
    // A changed setting of one of the trail's functions: the sealer seals nothing until the
    // migrations' definition is back.
    trail
        .tamper(
            Attacker::Owner,
            "alter function rowguard_audit.oldest_unsealed() set work_mem = '1MB'",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let status = Arc::new(SealerStatus::default());
    let sealer = Sealer::new(
        trail.db.clone(),
        SealerSettings {
            interval: Duration::from_millis(50),
            lease_ttl: Duration::from_millis(300),
            ..SealerSettings::default()
        },
        Some(trail.signer.clone()),
        Some(CheckpointDir::new(&trail.dir)),
        status.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sealer.run(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status.is_failing() {
        assert!(Instant::now() < deadline, "the sealer never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = status.unsealed_age();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(status.is_failing());
    assert!(
        status.unsealed_age() >= before + Duration::from_secs(1),
        "the seal lag stayed at {before:?} (now {:?}) while rounds failed",
        status.unsealed_age()
    );
    let _ = stop.send(());
    task.await.expect("the sealing task ends when told to");
    assert!(unsealed(&trail.t.admin().await).await >= 3);
}

#[tokio::test]
async fn a_second_link_with_a_number_the_walk_has_passed_is_caught() {
    // The walk reads links in pages of 5,000 after the last number it read: with the key on
    // link numbers dropped, one of two links numbered 5000 is never read, yet the one not read
    // makes its event look sealed. Which twin a page keeps depends on their order in the table,
    // so the planted twin is tried both after and before the real one.
    for (attacker, planted_first) in [(Attacker::Superuser, true), (Attacker::Owner, false)] {
        let mut trail = Trail::sealing(0, 1000, Duration::ZERO).await;
        trail
            .t
            .admin()
            .await
            .execute_unprepared(&format!(
                "insert into rowguard_audit.events (clinician_id, app_role, action, outcome, purpose) \
                 select {}, 'rgtest_clinician', 'read', 'success', 'treatment' from generate_series(1, 5001)",
                trail.person.id
            ))
            .await
            .expect("5,001 events");
        trail.seal_all().await;
        let links = trail.links().await;
        let (_, before) = &links[4998];
        let move_real_last = if planted_first {
            "with real as (delete from rowguard_audit.chain c where c.seq = 5000 \
                             and c.event_id <> currval('rowguard_audit.event_ids') returning c.*) \
             insert into rowguard_audit.chain select * from real"
        } else {
            "select 1"
        };
        trail
            .tamper(
                attacker,
                &format!(
                    "alter table rowguard_audit.chain drop constraint if exists chain_pkey; \
                     alter table rowguard_audit.chain drop constraint if exists chain_event_id_key; \
                     {}; {move_real_last}",
                    trail.plant_sql(
                        &before.txid.to_string(),
                        &format!("'{}'", before.occurred_at.to_rfc3339()),
                        Some("5000"),
                    )
                ),
            )
            .await;
        assert_caught(
            &trail.verify().await,
            attacker,
            "appear in more than one link",
        );
    }
}

#[tokio::test]
async fn a_version_one_link_appended_after_the_upgrade_is_caught() {
    // Version 1 (the old commit trigger's canonical form) carries no transaction id and so no
    // order: appended at the tail, it would seal an invented, back-dated event.
    for attacker in ATTACKERS {
        let trail = Trail::new(30).await;
        let links = trail.links().await;
        let (seq, head) = &links[29];
        trail
            .tamper(
                attacker,
                &trail.plant_sql("0", "now() - interval '90 days'", None),
            )
            .await;
        let planted = EventRow::find_by_statement(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "select {EVENT_COLUMNS} from rowguard_audit.events where txid = 0 and occurred_at < now() - interval '89 days'"
            ),
        ))
        .one(&trail.t.admin().await)
        .await
        .expect("query")
        .expect("the planted event");
        let head_hash = trail
            .t
            .admin()
            .await
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("select hash from rowguard_audit.chain where seq = {seq}"),
            ))
            .await
            .expect("query")
            .expect("head")
            .try_get::<Vec<u8>>("", "hash")
            .expect("hash");
        let hash = link_hash(&head_hash, CanonicalVersion::V1, &planted);
        trail
            .tamper(
                attacker,
                &format!(
                    "insert into rowguard_audit.chain (seq, event_id, event_txid, event_occurred_at, version, prev_hash, hash) \
                     values ({}, {}, {}, '{}', 1, '\\x{}', '\\x{}')",
                    seq + 1,
                    planted.id,
                    head.txid,
                    planted.occurred_at.to_rfc3339(),
                    hex(&head_hash),
                    hex(&hash)
                ),
            )
            .await;
        assert_caught(
            &trail.verify().await,
            attacker,
            "a version-1 link after the upgrade",
        );
    }
}

#[tokio::test]
async fn a_policy_hiding_new_events_from_the_owner_does_not_hide_them_from_verify() {
    // Row level security forced onto the trail, with a policy that shows the owner (as whom the
    // sealer and the verifier read) only the events it already has: a new event is never
    // sealed, and a filtered read would never report it as waiting.
    for attacker in ATTACKERS {
        let mut trail = Trail::new(10).await;
        let newest = query_count(
            &trail.t.admin().await,
            "select max(id) as value from rowguard_audit.events",
        )
        .await
        .expect("newest event");
        trail
            .tamper(
                attacker,
                &format!(
                    "alter table rowguard_audit.events force row level security; \
                     create policy only_old on rowguard_audit.events for select to {owner} using (id <= {newest}); \
                     create policy still_written on rowguard_audit.events for insert to {owner} with check (true)",
                    owner = test_roles().owner()
                ),
            )
            .await;
        trail.append(1).await;
        trail
            .sealer
            .round(&mut trail.last_checkpoint)
            .await
            .expect("round");
        let owner = trail.t.owner().await;
        let verified = verify(&owner, &trail.options(vec![&trail.signer])).await;
        assert!(
            !verified.as_ref().is_ok_and(Report::is_intact),
            "{attacker:?}: verify passed a trail it could not fully read: {verified:?}"
        );
    }
}

#[tokio::test]
async fn reordering_events_and_re_hashing_is_caught() {
    for attacker in ATTACKERS {
        let trail = Trail::new(50).await;
        let mut events: Vec<EventRow> = trail.links().await.into_iter().map(|(_, e)| e).collect();
        events.swap(10, 11);
        trail.tamper(attacker, &Trail::rehash_sql(&events)).await;
        let report = trail.verify().await;
        assert_caught(&report, attacker, "sealed out of order");
        assert_caught(&report, attacker, "no longer matches the signed checkpoint");
    }
}

#[tokio::test]
async fn cutting_off_the_tail_is_caught() {
    for attacker in ATTACKERS {
        let trail = Trail::new(50).await;
        trail
            .tamper(
                attacker,
                "delete from rowguard_audit.events where id in (select event_id from rowguard_audit.chain where seq > 40); \
                 delete from rowguard_audit.chain where seq > 40; \
                 delete from rowguard_audit.checkpoints where seq > 40",
            )
            .await;
        let report = trail.verify().await;
        assert_caught(&report, attacker, "the tail was cut off");
        assert_caught(&report, attacker, "missing from the database");
    }
}

#[tokio::test]
async fn cutting_off_the_start_of_the_trail_up_to_a_checkpoint_is_caught() {
    // A review: a chain starting just after a signed checkpoint was taken for one whose earlier
    // links were archived, and verified intact with a warning; archiving keeps every link.
    for attacker in ATTACKERS {
        let trail = Trail::new(50).await;
        trail
            .tamper(
                attacker,
                "delete from rowguard_audit.events where id in (select event_id from rowguard_audit.chain where seq <= 20); \
                 delete from rowguard_audit.chain where seq <= 20",
            )
            .await;
        assert_caught(&trail.verify().await, attacker, "links 1 to 20 are missing");
    }
}

#[tokio::test]
async fn a_head_written_around_a_leading_sealer_is_neither_extended_nor_signed_and_verify_catches_it()
 {
    // A review: the sealer signed whatever head the database showed it, so an owner who
    // replaced the chain with one made-up link had it signed, then extended and signed again.
    for attacker in ATTACKERS {
        let mut trail = Trail::new(20).await;
        trail.sealer = Sealer::new(
            trail.db.clone(),
            SealerSettings {
                batch: 20,
                checkpoint_every: Duration::ZERO,
                lease_ttl: Duration::from_secs(60),
                ..SealerSettings::default()
            },
            Some(trail.signer.clone()),
            Some(CheckpointDir::new(&trail.dir)),
            Arc::new(SealerStatus::default()),
        );
        trail.last_checkpoint = None;
        trail.append(5).await;
        trail.seal_all().await;
        let victim = trail.event_at(5).await;
        let altered = trail.event_at(10).await;
        trail
            .tamper(
                attacker,
                &format!(
                    "delete from rowguard_audit.events where id = {victim}; \
                     update rowguard_audit.events set subject = 'mallory' where id = {altered}; \
                     delete from rowguard_audit.chain; \
                     insert into rowguard_audit.chain (seq, event_id, event_txid, event_occurred_at, version, prev_hash, hash) \
                     values (1000, -1, 9000000000000000000, now(), 2, '\\x00', sha256('anything'))"
                ),
            )
            .await;
        trail.append(3).await;
        let round = trail.sealer.round(&mut trail.last_checkpoint).await;
        assert!(
            round.is_err(),
            "{attacker:?}: the sealer built on the made-up head: {round:?}"
        );
        let signed: Vec<i64> = checkpoint_files(&trail.dir)
            .into_iter()
            .map(|(_, seq)| seq)
            .filter(|seq| *seq >= 1000)
            .collect();
        assert!(signed.is_empty(), "{attacker:?}: signed {signed:?}");
        assert_caught(
            &trail.verify().await,
            attacker,
            "links 1 to 999 are missing",
        );
    }
}

/// `rowguard_audit.extend_chain` called by the gateway's login role with one link.
async fn link_as_gateway(
    trail: &Trail,
    event: &str,
    txid: &str,
    occurred_at: &str,
) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
    statement_as_gateway(
        trail,
        &format!(
            "select rowguard_audit.extend_chain(array[h.seq + 1], array[{event}::bigint], \
                    array[{txid}::bigint], array[{occurred_at}::timestamptz], \
                    array[encode(h.hash, 'hex')], array[repeat('ab', 32)]) \
             from rowguard_audit.chain_head() h"
        ),
    )
    .await
}

/// Runs `sql` as the gateway's login role holding the seal lease (taken in the same
/// transaction, as a sealer takes it: the spec waits for the trail's own sealer's lease to run
/// out), so that only the link's own checks can refuse it.
async fn statement_as_gateway(
    trail: &Trail,
    sql: &str,
) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
    let gateway = connect(&trail.t.gateway_url(), 1, None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let txn = sea_orm::TransactionTrait::begin(&gateway)
            .await
            .expect("begin");
        let leader = query_count(
            &txn,
            "select rowguard_audit.take_seal_lease('rgtest-attacker', 100)::int::bigint as value",
        )
        .await
        .expect("lease");
        if leader == 1 {
            let result = txn.execute_unprepared(sql).await;
            match &result {
                Ok(_) => txn.commit().await.expect("commit"),
                Err(_) => txn.rollback().await.expect("rollback"),
            }
            return result;
        }
        txn.rollback().await.expect("rollback");
        assert!(Instant::now() < deadline, "the seal lease never came free");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_gateway_login_cannot_append_a_link_that_does_not_describe_the_next_final_event() {
    // A review: a link naming an event that does not exist, with a transaction id far in the
    // future, moved the sealer's position past every real event. Nothing was sealed after it,
    // the seal lag read 0, and the next checkpoint signed that head.
    let mut trail = Trail::new(10).await;
    trail.append(3).await;
    // The first, second... event waiting to be sealed, as literals (the gateway may not read
    // the events table).
    let admin = trail.t.admin().await;
    let mut waiting = Vec::new();
    for n in 0..2 {
        let text = |column: &str| {
            format!(
                "select ({column})::text as value from rowguard_audit.events e \
                 where not exists (select 1 from rowguard_audit.chain c where c.event_id = e.id) \
                 order by e.txid, e.id offset {n} limit 1"
            )
        };
        let mut event = Vec::new();
        for column in [
            "id",
            "txid",
            "occurred_at",
            "occurred_at - interval '1 day'",
        ] {
            let value = crate::support::query_text(&admin, &text(column))
                .await
                .expect("an event waiting")
                .expect("a value");
            event.push(format!("'{value}'"));
        }
        waiting.push(event);
    }
    let (first, second) = (&waiting[0], &waiting[1]);

    let made_up = link_as_gateway(&trail, "999999", "9223372036854775806", "now()").await;
    assert!(made_up.is_err(), "a link to no event was stored");
    let wrong_time = link_as_gateway(&trail, &first[0], &first[1], &first[3]).await;
    assert!(
        wrong_time.is_err(),
        "a link misdescribing its event was stored"
    );
    // The second linked without the first: the first would never be sealed, and the seal lag
    // would not show it.
    let skipping = link_as_gateway(&trail, &second[0], &second[1], &second[2]).await;
    assert!(skipping.is_err(), "a link skipping an event was stored");
    // Both in the wrong order, the transaction ids given as an array numbered from 5, which
    // made every subscript NULL and every comparison with them pass (the sealer then failed
    // every round for good).
    let reordered = statement_as_gateway(
        &trail,
        &format!(
            "select rowguard_audit.extend_chain(array[h.seq + 1, h.seq + 2], \
                    array[{}, {}]::bigint[], ('[5:6]={{' || {} || ',' || {} || '}}')::bigint[], \
                    array[{}, {}]::timestamptz[], \
                    array[encode(h.hash, 'hex'), repeat('c', 64)], array[repeat('c', 64), repeat('d', 64)]) \
             from rowguard_audit.chain_head() h",
            second[0], first[0], second[1], first[1], second[2], first[2],
        ))
        .await;
    assert!(reordered.is_err(), "links out of order were stored");

    // Nothing of it was stored: the sealer seals every event, and the trail verifies clean.
    trail.seal_all().await;
    assert_eq!(unsealed(&admin).await, 0);
    let report = trail.verify().await;
    assert!(report.is_intact(), "{}", problems(&report));

    // Without the seal lease, not even a link right in every respect goes in: the leading
    // sealer found its head changed under it and stopped sealing until restarted.
    let gateway = connect(&trail.t.gateway_url(), 1, None).await;
    let unleased = gateway
        .execute_unprepared(
            "select rowguard_audit.extend_chain(array[h.seq + 1], array[1::bigint], \
                    array[1::bigint], array[now()], \
                    array[encode(h.hash, 'hex')], array[repeat('ab', 32)]) \
             from rowguard_audit.chain_head() h",
        )
        .await;
    assert!(
        unleased
            .as_ref()
            .is_err_and(|e| e.to_string().contains("seal lease")),
        "{unleased:?}"
    );
    // With the lease, the next event described as it is goes in: its hash is the gateway's to
    // compute, and a made-up one is what verify reports.
    trail.append(1).await;
    let values = |column: &str| {
        format!(
            "select ({column})::text as value from rowguard_audit.events e \
             where not exists (select 1 from rowguard_audit.chain c where c.event_id = e.id)"
        )
    };
    let mut next = Vec::new();
    for column in ["id", "txid", "occurred_at"] {
        let value = crate::support::query_text(&admin, &values(column))
            .await
            .expect("the new event")
            .expect("a value");
        next.push(format!("'{value}'"));
    }
    // Final once every transaction running when it committed has ended (other tests' too).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut linked = link_as_gateway(&trail, &next[0], &next[1], &next[2]).await;
    while linked.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        linked = link_as_gateway(&trail, &next[0], &next[1], &next[2]).await;
    }
    assert!(
        linked.is_ok(),
        "the next event's link was refused: {linked:?}"
    );
    trail.seal_all().await;
    let report = trail.verify().await;
    assert!(!report.is_intact(), "the made-up hash went unnoticed");
}

#[tokio::test]
async fn the_gateway_login_creates_no_audit_partition_before_last_month() {
    // A review: from any month given, back to 1800, holding the events table's lock all along
    // and leaving thousands of partitions that exhausted the lock table.
    let trail = Trail::new(1).await;
    let gateway = connect(&trail.t.gateway_url(), 1, None).await;
    let created = query_count(
        &gateway,
        "select rowguard_audit.ensure_partitions('1990-01-01', 0)::bigint as value",
    )
    .await
    .expect("ensure_partitions");
    // Last month's at most (a fresh trail starts with this month's).
    assert!(created <= 1, "{created} partitions created for the gateway");
    let old = query_count(
        &trail.t.admin().await,
        "select count(*) as value from pg_catalog.pg_class \
         where relname = 'events_1990_01' and relnamespace = 'rowguard_audit'::regnamespace",
    )
    .await
    .expect("count");
    assert_eq!(old, 0);
}

#[tokio::test]
async fn rewriting_an_event_and_re_hashing_the_whole_chain_is_caught() {
    for attacker in ATTACKERS {
        let trail = Trail::new(50).await;
        let mut events: Vec<EventRow> = trail.links().await.into_iter().map(|(_, e)| e).collect();
        events[5].patient_ids = vec![];
        let victim = events[5].id;
        trail
            .tamper(
                attacker,
                &format!(
                    "update rowguard_audit.events set patient_ids = '{{}}' where id = {victim}; \
                     delete from rowguard_audit.checkpoints; {}",
                    Trail::rehash_sql(&events)
                ),
            )
            .await;
        let report = trail.verify().await;
        assert_caught(&report, attacker, "no longer matches the signed checkpoint");
        assert_caught(&report, attacker, "missing from the database");
    }
}

#[tokio::test]
async fn re_hashing_with_a_replaced_canonical_function_is_caught() {
    // The first review's attack: redefine the canonical form inside the database, change an
    // event and re-seal every link with the database's own sha256.
    for attacker in ATTACKERS {
        let trail = Trail::new(50).await;
        let victim = trail.event_at(8).await;
        trail
            .tamper(
                attacker,
                &format!(
                    "create function rowguard_audit.canonical(e rowguard_audit.events) returns text \
                       language sql immutable as $f$ select e.id::text || e.action $f$; \
                     update rowguard_audit.events set outcome = 'denied' where id = {victim}; \
                     do $$ declare r record; previous bytea := '\\x00'; begin \
                       for r in select c.seq, e as ev from rowguard_audit.chain c join rowguard_audit.events e on e.id = c.event_id order by c.seq loop \
                         update rowguard_audit.chain set prev_hash = previous, \
                           hash = sha256(previous || convert_to(rowguard_audit.canonical(r.ev), 'UTF8')) where seq = r.seq \
                           returning hash into previous; \
                       end loop; end $$"
                ),
            )
            .await;
        let report = trail.verify().await;
        assert_caught(&report, attacker, "the event's content was altered");
        assert_caught(&report, attacker, "no longer matches the signed checkpoint");
    }
}

#[tokio::test]
async fn after_a_key_rotation_the_new_key_does_not_sign_the_head_the_old_key_signed() {
    // A review: the new key signed the old head again; the database kept the old key's row
    // for that link, and the new file clashed with the old one, an error and a seal error on
    // every rotation.
    let mut trail = Trail::new(20).await;
    let new = Arc::new(AuditSigner::generate());
    trail.signer = new.clone();
    trail.sealer = sealer(&trail.db, &new, &trail.dir);
    trail.last_checkpoint = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let round = trail
            .sealer
            .round(&mut trail.last_checkpoint)
            .await
            .expect("round");
        assert_eq!(
            round.checkpoint, None,
            "the old key's head was signed again"
        );
        if round.leader {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never passed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    trail.append(3).await;
    trail.seal_all().await;
    assert_eq!(
        trail.verify().await.latest_checkpoint,
        Some(23),
        "the new key signs from the next link on"
    );
}

#[tokio::test]
async fn a_forged_or_altered_checkpoint_is_caught() {
    for attacker in ATTACKERS {
        let trail = Trail::new(50).await;
        // A checkpoint for a rewritten head, signed with a key of the attacker's own.
        let rogue = AuditSigner::generate();
        let forged = SignedCheckpoint::sign(&rogue, 51, &[7; 32], chrono::Utc::now());
        let body = forged.parse().expect("body");
        trail
            .tamper(
                attacker,
                &format!(
                    "insert into rowguard_audit.checkpoints (seq, head_hash, created_at, key_id, body, signature) \
                     values (51, '\\x{}', now(), '{}', '{}', '\\x{}')",
                    body.head_hash,
                    body.key_id,
                    forged.body.replace('\'', "''"),
                    hex(&forged.signature)
                ),
            )
            .await;
        assert_caught(
            &trail.verify().await,
            attacker,
            "not among the given public keys",
        );
    }

    // The copy outside the database, altered by whoever can write the directory.
    let trail = Trail::new(50).await;
    let (path, checkpoint) = CheckpointDir::new(&trail.dir)
        .read_all()
        .expect("files")
        .pop()
        .expect("a checkpoint file");
    let checkpoint = checkpoint.expect("a checkpoint");
    let altered = SignedCheckpoint {
        body: checkpoint.body.replace("\"seq\":", "\"seq\":1"),
        signature: checkpoint.signature,
    };
    std::fs::write(&path, altered.to_file_text()).expect("rewrite the file");
    assert_caught(&trail.verify().await, Attacker::Owner, "invalid signature");
}

/// The checkpoint files in `dir`, newest link last.
fn checkpoint_files(dir: &std::path::Path) -> Vec<(PathBuf, i64)> {
    let mut files: Vec<(PathBuf, i64)> = CheckpointDir::new(dir)
        .read_all()
        .expect("checkpoint files")
        .into_iter()
        .map(|(path, c)| (path, c.and_then(|c| c.parse()).expect("a checkpoint").seq))
        .collect();
    files.sort_by_key(|(_, seq)| *seq);
    files
}

#[tokio::test]
async fn a_checkpoint_the_directory_refused_is_written_as_soon_as_the_directory_is_back() {
    // A review: a checkpoint whose file could not be written (a full disk, a network file
    // system's blip) stayed missing until the replica restarted, and `audit verify` read the
    // gap as a deletion.
    let mut trail = Trail::new(3).await;
    let (newest_file, _) = checkpoint_files(&trail.dir)
        .last()
        .cloned()
        .expect("a checkpoint file");
    let day = newest_file.parent().expect("its directory").to_path_buf();
    let held = day.with_extension("held");
    std::fs::rename(&day, &held).expect("move the directory away");
    std::fs::write(&day, b"not a directory").expect("block its path");
    trail.append(2).await;
    trail.seal_all().await;
    let signed = query_count(
        &trail.t.admin().await,
        "select max(seq) as value from rowguard_audit.checkpoints",
    )
    .await
    .expect("newest checkpoint");
    assert_eq!(signed, 5);
    std::fs::remove_file(&day).expect("unblock");
    std::fs::rename(&held, &day).expect("move the directory back");
    let written = |trail: &Trail| {
        checkpoint_files(&trail.dir)
            .iter()
            .any(|(_, seq)| *seq == signed)
    };
    assert!(
        !written(&trail),
        "the checkpoint could not have been written"
    );

    // Copies are tried again every few seconds while the directory refuses them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !written(&trail) {
        assert!(Instant::now() < deadline, "it was never written");
        trail
            .sealer
            .round(&mut trail.last_checkpoint)
            .await
            .expect("round");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = trail.verify().await;
    assert!(report.is_intact(), "{}", problems(&report));
}

#[tokio::test]
async fn a_checkpoint_committed_but_not_yet_in_the_directory_is_pending_not_tampering() {
    // Seen in CI: `audit verify` run while a sealer works reported tampering when it read the
    // database between a checkpoint's commit and the writing of its file.
    let trail = Trail::new(50).await;
    let (newest, seq) = checkpoint_files(&trail.dir).pop().expect("a file");
    std::fs::remove_file(&newest).expect("the file not written yet");
    let report = trail.verify().await;
    assert!(report.is_intact(), "{}", problems(&report));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains(&format!("checkpoint of link {seq}"))
                && w.contains("not in the checkpoint directory yet")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn a_checkpoint_file_missing_longer_than_the_seal_lag_or_behind_newer_ones_is_caught() {
    let trail = Trail::new(50).await;
    let files = checkpoint_files(&trail.dir);
    let (newest, _) = files.last().expect("a file");
    std::fs::remove_file(newest).expect("remove the newest file");
    let options = VerifyOptions {
        max_seal_lag: Duration::ZERO,
        ..trail.options(vec![&trail.signer])
    };
    let report = verify(&trail.t.owner().await, &options)
        .await
        .expect("verify");
    assert_caught(
        &report,
        Attacker::Owner,
        "missing from the checkpoint directory",
    );

    let trail = Trail::new(50).await;
    let files = checkpoint_files(&trail.dir);
    let (older, _) = &files[files.len() - 2];
    std::fs::remove_file(older).expect("remove an older file");
    assert_caught(
        &trail.verify().await,
        Attacker::Owner,
        "missing from the checkpoint directory",
    );
}

#[tokio::test]
async fn without_the_public_key_a_signed_trail_is_not_called_intact() {
    let trail = Trail::new(10).await;
    let report = trail.verify_with(vec![]).await;
    assert!(
        problems(&report).contains("pass the public key"),
        "{}",
        problems(&report)
    );
}

#[tokio::test]
async fn an_unsigned_trail_verifies_the_old_way_with_a_warning() {
    let t = TestDb::new().await;
    let person = enroll(&t.owner().await, "alice").await;
    let db = t.gateway(2).await;
    let mut unsigned = Sealer::new(
        db.clone(),
        SealerSettings::default(),
        None,
        None,
        Arc::new(SealerStatus::default()),
    );
    for _ in 0..5 {
        let scope = db
            .scope(&person.clinician(), AccessMode::ReadWrite, Uuid::new_v4())
            .await
            .expect("scope");
        let entry = AuditEntry {
            action: AuditAction::Read,
            outcome: AuditOutcome::Success,
            patients: BTreeSet::new(),
        };
        append(scope.conn(), &AuditContext::default(), &[entry])
            .await
            .expect("append");
        scope.commit().await.expect("commit");
    }
    let mut sealed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sealed < 5 {
        sealed += unsigned.round(&mut None).await.expect("round").sealed;
        assert!(Instant::now() < deadline, "the trail was not sealed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = verify(&t.owner().await, &VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.is_intact(), "{}", problems(&report));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("no signed checkpoints")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn a_rolled_back_append_never_enters_the_chain_and_pending_events_wait_for_their_transaction()
{
    let mut trail = Trail::new(5).await;
    // An open transaction holding an event: the sealer must not pass it (nor anything after it)
    // until it ends, and an event of a rolled-back transaction never appears.
    let open = trail
        .db
        .scope(
            &trail.person.clinician(),
            AccessMode::ReadWrite,
            Uuid::new_v4(),
        )
        .await
        .expect("scope");
    let entry = AuditEntry {
        action: AuditAction::Read,
        outcome: AuditOutcome::Success,
        patients: BTreeSet::new(),
    };
    append(
        open.conn(),
        &AuditContext::default(),
        std::slice::from_ref(&entry),
    )
    .await
    .expect("append");
    trail.append(3).await;
    for _ in 0..10 {
        let round = trail
            .sealer
            .round(&mut trail.last_checkpoint)
            .await
            .expect("round");
        assert_eq!(
            round.sealed, 0,
            "an event behind an open transaction was sealed"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let admin = trail.t.admin().await;
    let links = || async {
        query_count(&admin, "select count(*) as value from rowguard_audit.chain")
            .await
            .expect("count")
    };
    assert_eq!(
        links().await,
        5,
        "nothing after the open transaction is final yet"
    );
    open.rollback().await.expect("rollback");
    trail.seal_all().await;
    assert_eq!(
        links().await,
        8,
        "the three later events, not the rolled-back one"
    );
    let report = trail.verify().await;
    assert!(report.is_intact(), "{}", problems(&report));
}

#[tokio::test]
async fn a_trail_sealed_by_the_old_commit_trigger_still_verifies_after_the_upgrade() {
    // A database as migration 0006 left it, with events sealed at commit (canonical form v1)...
    let name = format!(
        "rgt_{}_upgrade_{}",
        std::process::id(),
        Uuid::new_v4().simple()
    );
    cluster().create_database(&name, None).await;
    let url = cluster().url_for(&name);
    // Its own role prefix: reverting at the end drops the roles, which other specs' databases use.
    let roles = RoleNames::new(&format!("rgup{}", std::process::id())).expect("prefix");
    let owner = migration_connection(&url, &roles).await;
    Migrator::up(&owner, Some(6)).await.expect("up to 0006");
    let admin = connect(&url, 1, None).await;
    admin
        .execute_unprepared(&format!("alter role {} password 'up'", roles.gateway()))
        .await
        .expect("gateway password");
    let person = enroll(&connect(&url, 1, Some(roles.owner())).await, "alice").await;
    let gateway = cluster().url_as(&name, &roles.gateway(), "up");
    let db = Database::from_pool(connect(&gateway, 2, None).await, roles.clone());
    let entry = || AuditEntry {
        action: AuditAction::Read,
        outcome: AuditOutcome::Success,
        patients: BTreeSet::from([Uuid::new_v4(), Uuid::new_v4()]),
    };
    // As the gateway of that time recorded a query: its identity statement, then the append.
    let old_gateway = connect(&gateway, 1, None).await;
    for _ in 0..7 {
        let txn = old_gateway.begin().await.expect("begin");
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "select set_config('role', $1, true), \
             set_config('app.current_user', coalesce(rowguard.clinician_id_for($2, $3)::text, ''), true), \
             set_config('app.request_id', $4, true), set_config('app.issuer', $2, true), \
             set_config('app.subject', $3, true)",
            [
                roles.clinician().into(),
                person.issuer.clone().into(),
                person.subject.clone().into(),
                Uuid::new_v4().to_string().into(),
            ],
        ))
        .await
        .expect("identity");
        append(&txn, &AuditContext::default(), &[entry()])
            .await
            .expect("append");
        txn.commit().await.expect("commit");
    }
    drop(old_gateway);
    let append_some = |n: usize| {
        let db = db.clone();
        let principal = person.clinician();
        async move {
            for _ in 0..n {
                // As a query appends its access record in place (a grant holder's query).
                let scope = db
                    .scope(&principal, AccessMode::ReadAndAudit, Uuid::new_v4())
                    .await
                    .expect("scope");
                append(scope.conn(), &AuditContext::default(), &[entry()])
                    .await
                    .expect("append");
                scope.commit().await.expect("commit");
            }
        }
    };
    assert_eq!(
        query_count(&admin, "select count(*) as value from rowguard_audit.chain")
            .await
            .expect("count"),
        7
    );

    // ...upgraded, then sealed and signed by the gateway from there on.
    Migrator::up(&owner, None).await.expect("upgrade");
    append_some(5).await;
    let signer = Arc::new(AuditSigner::generate());
    let dir = scratch_dir("upgrade");
    let mut sealer = sealer(&db, &signer, &dir);
    let mut sealed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sealed < 5 {
        sealed += sealer.round(&mut None).await.expect("round").sealed;
        assert!(
            Instant::now() < deadline,
            "the upgraded trail was not sealed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let options = VerifyOptions {
        keys: TrustedKeys::new(vec![signer.public_key()]),
        checkpoint_dir: Some(CheckpointDir::new(&dir)),
        max_seal_lag: Duration::from_secs(300),
    };
    let owner_session = connect(&url, 1, Some(roles.owner())).await;
    let report = verify(&owner_session, &options).await.expect("verify");
    assert!(report.is_intact(), "{}", problems(&report));
    assert_eq!((report.links, report.latest_checkpoint), (12, Some(12)));

    // The old links are recomputed too: a change to one of them is still caught.
    admin
        .execute_unprepared(
            "set session_replication_role = replica; \
             update rowguard_audit.events set outcome = 'denied' where id = 3",
        )
        .await
        .expect("tamper");
    let report = verify(&owner_session, &options).await.expect("verify");
    assert!(
        problems(&report).contains("event 3 (link"),
        "{}",
        problems(&report)
    );
    drop((owner_session, admin, db));
    Migrator::down(&owner, None).await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_written_concurrently_seal_and_verify_from_the_command_line() {
    let mut trail = Trail::new(0).await;
    trail.sealer = Sealer::new(
        trail.db.clone(),
        SealerSettings {
            checkpoint_every: Duration::ZERO,
            ..SealerSettings::default()
        },
        Some(trail.signer.clone()),
        Some(CheckpointDir::new(&trail.dir)),
        Arc::new(SealerStatus::default()),
    );
    crate::audit::fill(&trail.t, std::slice::from_ref(&trail.person), 10_000, 8).await;
    trail.seal_all().await;
    let report = trail.verify().await;
    eprintln!("audit verify on 10,000 concurrently written events: {report:?}");
    assert!(report.is_intact(), "{}", problems(&report));
    assert_eq!(report.links, 10_000);

    let output = verify_command(
        &trail,
        &["--checkpoints", trail.dir.to_str().expect("utf-8 path")],
        &trail.t.admin_url(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("audit trail intact: 10000 links"),
        "{stdout}"
    );

    // The same command names the damage and fails.
    trail
        .tamper(Attacker::Superuser, "delete from rowguard_audit.events where id = (select event_id from rowguard_audit.chain where seq = 5000)")
        .await;
    let output = verify_command(
        &trail,
        &["--checkpoints", trail.dir.to_str().expect("utf-8 path")],
        &trail.t.admin_url(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("(link 5000): the event was deleted"),
        "{stderr}"
    );
}

/// `rowguard audit verify` as a scheduled job runs it, with `extra` arguments and environment.
fn verify_command(trail: &Trail, args: &[&str], url: &str) -> std::process::Output {
    trail
        .audit_cli("verify", url)
        .args(args)
        .output()
        .expect("rowguard audit verify")
}

/// Waits for `child`, killing it and failing the spec if it runs past `limit` (a command that
/// hangs must fail the spec, not hang it).
async fn finished_within(
    mut child: std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::Output {
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} was still running after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.wait_with_output().expect("output")
}

#[tokio::test]
async fn a_trail_that_could_not_be_checked_exits_2_with_the_cause_not_as_tampering() {
    // A review: every connection failure read "the database is unavailable", after 30 s for a
    // refused server, with exit status 1 like a tampered trail.
    let trail = Trail::new(5).await;
    let url = trail.t.admin_url();

    let port = rowguard::dev::postgres::free_port().expect("port");
    let refused = verify_command(
        &trail,
        &[],
        &format!("postgres://postgres@127.0.0.1:{port}/rowguard"),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");

    let dir = trail.dir.to_str().expect("utf-8 path").to_owned();
    let no_database = verify_command(
        &trail,
        &["--checkpoints", &dir],
        &cluster().url_for("no_such_database"),
    );
    let stderr = String::from_utf8_lossy(&no_database.stderr);
    assert_eq!(no_database.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no_such_database"), "{stderr}");

    let intact = verify_command(&trail, &["--checkpoints", &dir], &url);
    assert_eq!(
        intact.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&intact.stderr)
    );
}

#[tokio::test]
async fn a_missing_checkpoint_directory_is_one_problem_and_the_trail_is_still_checked() {
    // A review: a mistyped --checkpoints was reported as 18 problems. The review of the first
    // fix: answering "could not check" (exit 2) for it let an attacker who deleted the directory
    // hide a tampered trail behind a broken-looking job.
    for attacker in ATTACKERS {
        let trail = Trail::new(20).await;
        let victim = trail.event_at(7).await;
        trail
            .tamper(
                attacker,
                &format!(
                    "update rowguard_audit.events set patient_ids = '{{}}' where id = {victim}"
                ),
            )
            .await;
        let gone = trail.dir.join("gone");
        let gone = gone.to_str().expect("utf-8 path");
        let output = verify_command(&trail, &["--checkpoints", gone], &trail.t.admin_url());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{attacker:?}: {stderr}");
        assert!(
            stderr.contains(&format!("the checkpoint directory {gone} does not exist")),
            "{stderr}"
        );
        assert!(
            stderr.contains("(link 7)"),
            "the tampering is still named: {stderr}"
        );
        assert!(
            !stderr.contains("missing from the checkpoint directory"),
            "one problem for the directory, not one per checkpoint: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_trail_the_owner_made_unreadable_is_not_intact_rather_than_unchecked() {
    // The review of the exit statuses: renaming the checkpoints table turned "tampered" into
    // "could not check" (exit 2).
    let trail = Trail::new(5).await;
    trail
        .tamper(
            Attacker::Owner,
            "alter table rowguard_audit.checkpoints rename to checkpoints_elsewhere",
        )
        .await;
    let dir = trail.dir.to_str().expect("utf-8 path").to_owned();
    let output = verify_command(&trail, &["--checkpoints", &dir], &trail.t.admin_url());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("NOT intact"), "{stderr}");
}

#[tokio::test]
async fn a_checkpoint_directory_planted_with_link_loops_a_fifo_and_a_huge_file_is_read_and_reported()
 {
    // A review: two links to `.` made verify walk for ever, a FIFO blocked it, and a 300 MB file
    // was read whole before being called "not a checkpoint".
    let trail = Trail::new(10).await;
    std::os::unix::fs::symlink(".", trail.dir.join("a")).expect("link");
    std::os::unix::fs::symlink(".", trail.dir.join("b")).expect("link");
    let fifo = std::process::Command::new("mkfifo")
        .arg(trail.dir.join("checkpoint-99.json"))
        .status()
        .expect("mkfifo");
    assert!(fifo.success());
    std::fs::File::create(trail.dir.join("checkpoint-98.json"))
        .and_then(|file| file.set_len(300 * 1024 * 1024))
        .expect("a sparse 300 MB file");
    std::os::unix::fs::symlink("/etc/hostname", trail.dir.join("checkpoint-97.json"))
        .expect("link");

    // From the command line, so a verify that never ends is killed and fails the spec instead
    // of hanging it.
    let child = trail
        .audit_cli("verify", &trail.t.admin_url())
        .arg("--checkpoints")
        .arg(&trail.dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rowguard audit verify");
    let output = finished_within(
        child,
        Duration::from_secs(60),
        "audit verify reading the directory",
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for planted in [
        "checkpoint-99.json",
        "checkpoint-98.json",
        "checkpoint-97.json",
    ] {
        assert!(
            stderr.contains(&format!("{planted} is not a checkpoint")),
            "{planted}: {stderr}"
        );
    }
    // The real checkpoints were still read and matched.
    assert!(
        stderr.contains("signed checkpoints matched (newest at link 10)"),
        "{stderr}"
    );
}

// Retention ---------------------------------------------------------------------------------------

/// Writes `count` events dated in `month` (YYYY-MM) the way old traffic would have left them.
async fn backdated_events(trail: &Trail, month: &str, count: usize) {
    trail
        .t
        .admin()
        .await
        .execute_unprepared(&format!(
            "select rowguard_audit.ensure_partitions('{month}-01', 0); \
             insert into rowguard_audit.events (occurred_at, clinician_id, app_role, action, outcome, purpose, patient_ids) \
             select timestamptz '{month}-10 08:00:00+00' + n * interval '1 minute', {}, 'rgtest_clinician', \
                    'read', 'success', 'treatment', array[gen_random_uuid()] \
             from generate_series(1, {count}) n",
            trail.person.id
        ))
        .await
        .expect("back-dated events");
}

#[tokio::test]
async fn an_archived_month_is_exported_signed_and_detached_and_the_rest_still_verifies() {
    let mut trail = Trail::new(0).await;
    backdated_events(&trail, "2026-09", 10).await;
    backdated_events(&trail, "2026-10", 7).await;
    trail.append(5).await;
    trail.seal_all().await;
    let options = trail.options(vec![&trail.signer]);
    let owner = trail.t.owner().await;
    let out = trail.dir.join("2026-09.ndjson");

    let refused = rowguard::audit::archive::archive(
        &owner,
        chrono::Utc::now().date_naive(),
        &out,
        &trail.signer,
        &options,
    )
    .await
    .expect_err("the current month is not over");
    assert!(refused.contains("not over yet"), "{refused}");

    let month = rowguard::audit::statement::parse_month("2026-09").expect("month");
    let body = rowguard::audit::archive::archive(&owner, month, &out, &trail.signer, &options)
        .await
        .expect("archive");
    assert_eq!(body.events, 10);
    let export = std::fs::read(&out).expect("export");
    assert_eq!(
        hex(&<sha2::Sha256 as sha2::Digest>::digest(&export)),
        body.export_sha256
    );
    assert_eq!(export.iter().filter(|b| **b == b'\n').count(), 10);
    let attached = query_count(
        &trail.t.admin().await,
        "select count(*) as value from pg_inherits i join pg_class c on c.oid = i.inhrelid \
         where c.relname = 'events_2026_09'",
    )
    .await
    .expect("query");
    assert_eq!(attached, 0, "the month's partition is detached");

    let report = trail.verify().await;
    assert!(report.is_intact(), "{}", problems(&report));
    assert_eq!((report.links, report.archived), (22, 10));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("2026-09 (10 events")),
        "{:?}",
        report.warnings
    );

    // An archived month is no cover for deleting an event of another month.
    let victim = trail
        .links()
        .await
        .into_iter()
        .find(|(_, e)| e.occurred_at.to_rfc3339().starts_with("2026-10"))
        .expect("an October event");
    trail
        .tamper(
            Attacker::Owner,
            &format!(
                "delete from rowguard_audit.events where id = {id}; \
                 update rowguard_audit.chain set event_occurred_at = '2026-09-15 00:00:00+00' where seq = {seq}",
                id = victim.1.id,
                seq = victim.0
            ),
        )
        .await;
    assert_caught(
        &trail.verify().await,
        Attacker::Owner,
        "archived month 2026-09",
    );
}

// FHIR export ---------------------------------------------------------------------------------------

/// Events of every action, outcome and purpose, with and without patients, client or query hash.
async fn every_kind_of_event(trail: &Trail) {
    let actions = [
        "read",
        "update",
        "assign",
        "unassign",
        "enroll",
        "emergency_access",
        "review",
        "audit_read",
    ];
    let outcomes = [
        "success",
        "not_visible",
        "denied",
        "conflict",
        "not_found",
        "invalid",
        "rolled_back",
        "error",
    ];
    let purposes = ["treatment", "emergency", "operations", "audit"];
    let roles = [
        "rgtest_clinician",
        "rgtest_coordinator_writer",
        "rgtest_auditor",
    ];
    let mut values = Vec::new();
    for (a, action) in actions.iter().enumerate() {
        for (o, outcome) in outcomes.iter().enumerate() {
            let n = a * outcomes.len() + o;
            let patients = match n % 3 {
                0 => "array[]::uuid[]".to_owned(),
                1 => "array[gen_random_uuid()]".to_owned(),
                _ => "array[gen_random_uuid(), gen_random_uuid()]".to_owned(),
            };
            let client = if n.is_multiple_of(2) {
                "'rowguard-spa'"
            } else {
                "null"
            };
            let hash = if n.is_multiple_of(4) {
                format!("'{}'", "ab".repeat(32))
            } else {
                "null".into()
            };
            values.push(format!(
                "(now(), gen_random_uuid(), {}, 'http://127.0.0.1:1/', 'alice', {client}, '{}', 'Op{n}', {hash}, '{action}', '{outcome}', {patients}, '{}', '{:032x}')",
                trail.person.id,
                roles[n % roles.len()],
                purposes[n % purposes.len()],
                n + 1,
            ));
        }
    }
    trail
        .t
        .admin()
        .await
        .execute_unprepared(&format!(
            "insert into rowguard_audit.events (occurred_at, request_id, clinician_id, issuer, subject, client_id, app_role, operation_name, persisted_query_hash, action, outcome, patient_ids, purpose, trace_id) values {}",
            values.join(", ")
        ))
        .await
        .expect("events of every kind");
}

#[tokio::test]
async fn a_resume_after_a_killed_export_writes_the_event_it_held_in_part_again_whole() {
    // A review: one event naming several patients is several lines with one link; a file cut
    // inside it was resumed after that link, and the event's other lines were never exported.
    let mut trail = Trail::new(3).await;
    every_kind_of_event(&trail).await;
    trail.seal_all().await;
    let full = trail.dir.join("full.ndjson");
    assert!(export_command(&trail, &full, &[]).status.success());
    let text = std::fs::read_to_string(&full).expect("full export");
    let lines: Vec<&str> = text.lines().collect();
    let link = |line: &str| {
        rowguard::audit::fhir::link_of(&serde_json::from_str(line).expect("json")).expect("link")
    };
    // The first line of the last event with two resources, and half of the line after it.
    let cut_at = (0..lines.len() - 2)
        .rev()
        .find(|&i| {
            link(lines[i]) == link(lines[i + 1]) && (i == 0 || link(lines[i - 1]) != link(lines[i]))
        })
        .expect("an event naming two patients");
    let mut cut = lines[..=cut_at].join("\n");
    cut.push('\n');
    cut.push_str(&lines[cut_at + 1][..40]);
    let resumed = trail.dir.join("resumed.ndjson");
    std::fs::write(&resumed, cut).expect("a killed export");

    let output = export_command(&trail, &resumed, &["--resume"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let links_of = |path: &std::path::Path| -> Vec<i64> {
        exported(path)
            .iter()
            .map(|r| rowguard::audit::fhir::link_of(r).expect("link"))
            .collect()
    };
    assert_eq!(links_of(&resumed), links_of(&full));

    // The same file with the cut line deleted by hand, as the old error message invited.
    let trimmed = trail.dir.join("trimmed.ndjson");
    let mut kept = lines[..=cut_at].join("\n");
    kept.push('\n');
    std::fs::write(&trimmed, kept).expect("a trimmed export");
    let output = export_command(&trail, &trimmed, &["--resume"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(links_of(&trimmed), links_of(&full));
}

/// A full export of a trail with events naming two patients, its lines, and the index of the
/// first line of the last event with two resources.
async fn multi_patient_export(trail: &mut Trail) -> (std::path::PathBuf, Vec<String>, usize) {
    every_kind_of_event(trail).await;
    trail.seal_all().await;
    let full = trail.dir.join("full.ndjson");
    assert!(export_command(trail, &full, &[]).status.success());
    let lines: Vec<String> = std::fs::read_to_string(&full)
        .expect("full export")
        .lines()
        .map(str::to_owned)
        .collect();
    let link = |line: &str| {
        rowguard::audit::fhir::link_of(&serde_json::from_str(line).expect("json")).expect("link")
    };
    let first_of_pair = (0..lines.len() - 2)
        .rev()
        .find(|&i| {
            link(&lines[i]) == link(&lines[i + 1])
                && (i == 0 || link(&lines[i - 1]) != link(&lines[i]))
        })
        .expect("an event naming two patients");
    (full, lines, first_of_pair)
}

fn links_in(path: &std::path::Path) -> Vec<i64> {
    exported(path)
        .iter()
        .map(|r| rowguard::audit::fhir::link_of(r).expect("link"))
        .collect()
}

#[tokio::test]
async fn a_file_cut_just_before_a_newline_is_resumed_without_gluing_two_lines() {
    // The review of the resume fix: a last line that still parsed, cut before its newline, was
    // kept as it was, the next resource was written onto the same line, and every later resume
    // failed on it.
    let mut trail = Trail::new(3).await;
    let (full, lines, pair) = multi_patient_export(&mut trail).await;
    let cut = trail.dir.join("cut.ndjson");
    // Both lines of the two-patient event, the second without its newline.
    std::fs::write(&cut, lines[..pair + 2].join("\n")).expect("cut export");
    let output = export_command(&trail, &cut, &["--resume"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(links_in(&cut), links_in(&full));
    trail.append(2).await;
    trail.seal_all().await;
    let again = export_command(&trail, &cut, &["--resume"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(links_in(&cut).len(), lines.len() + 2);
}

#[tokio::test]
async fn a_link_held_in_part_is_written_whole_even_outside_since() {
    // The review of the resume fix: with --since past it, the partial link's lines were cut
    // away and not written again.
    let mut trail = Trail::new(3).await;
    let (full, lines, pair) = multi_patient_export(&mut trail).await;
    let part = trail.dir.join("part.ndjson");
    std::fs::write(&part, format!("{}\n", lines[..=pair].join("\n"))).expect("partial export");
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let output = export_command(&trail, &part, &["--resume", "--since", &later]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(links_in(&part), links_in(&full)[..pair + 2].to_vec());
}

#[tokio::test]
async fn a_resume_writes_only_into_a_file_of_its_own() {
    // The review of the resume fix: a hard link to another file was truncated and overwritten,
    // and group- or world-readable files were filled with patient ids and left so.
    use std::os::unix::fs::PermissionsExt as _;
    let trail = Trail::new(3).await;
    let other = trail.dir.join("other.conf");
    std::fs::write(&other, "important=1").expect("other file");
    let hard = trail.dir.join("hard.ndjson");
    std::fs::hard_link(&other, &hard).expect("hard link");
    let output = export_command(&trail, &hard, &["--resume"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("hard links"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&other).expect("other"),
        "important=1"
    );

    // Another account's file (planted by `nobody`): only root can make one to try it with.
    let planted = trail.dir.join("planted-by-nobody.ndjson");
    std::fs::write(&planted, "").expect("file");
    if std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).is_ok() {
        let output = export_command(&trail, &planted, &["--resume"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains("owned by another account"), "{stderr}");
        assert_eq!(std::fs::read_to_string(&planted).expect("planted"), "");
    }

    let open = trail.dir.join("open.ndjson");
    std::fs::write(&open, "").expect("file");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = export_command(&trail, &open, &["--resume"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mode = std::fs::metadata(&open).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}

#[tokio::test]
async fn a_resume_refuses_a_file_whose_last_link_is_not_this_trails() {
    // A review: a last line edited to link 9999 made every later export "nothing to export".
    let trail = Trail::new(5).await;
    let out = trail.dir.join("edited.ndjson");
    assert!(export_command(&trail, &out, &[]).status.success());
    let text = std::fs::read_to_string(&out).expect("export");
    let edited = text.replace("\"valueString\":\"5\"", "\"valueString\":\"9999\"");
    assert_ne!(edited, text, "the last link was edited");
    std::fs::write(&out, &edited).expect("edit");
    let output = export_command(&trail, &out, &["--resume"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("is not this trail's"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&out).expect("export"),
        edited,
        "left as it was"
    );
}

#[tokio::test]
async fn a_resume_never_writes_through_a_symbolic_link_or_into_a_fifo() {
    // A review: `--resume --out LINK` created or appended to whatever the link named (as root,
    // any file), and a FIFO hung the command.
    let trail = Trail::new(2).await;
    let victim = trail.dir.join("victim");
    let link = trail.dir.join("planted.ndjson");
    std::os::unix::fs::symlink(&victim, &link).expect("link");
    let output = export_command(&trail, &link, &["--resume"]);
    assert!(!output.status.success());
    assert!(!victim.exists(), "nothing was written through the link");

    let fifo = trail.dir.join("fifo.ndjson");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let child = trail
        .audit_cli("export", &trail.t.admin_url())
        .arg("--resume")
        .arg("--out")
        .arg(&fifo)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rowguard audit export");
    let output = finished_within(
        child,
        Duration::from_secs(30),
        "export --resume into a FIFO",
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

#[tokio::test]
async fn an_export_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let trail = Trail::new(2).await;
    let out = trail.dir.join("private.ndjson");
    assert!(export_command(&trail, &out, &[]).status.success());
    let mode = std::fs::metadata(&out).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}

fn export_command(trail: &Trail, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    trail
        .audit_cli("export", &trail.t.admin_url())
        .arg("--checkpoints")
        .arg(&trail.dir)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("rowguard audit export")
}

fn exported(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("export")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON resource per line"))
        .collect()
}

#[tokio::test]
async fn an_export_of_every_action_outcome_and_purpose_is_valid_fhir_r4() {
    let mut trail = Trail::new(3).await;
    every_kind_of_event(&trail).await;
    trail.seal_all().await;
    let out = trail.dir.join("export.ndjson");
    let output = export_command(&trail, &out, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let resources = exported(&out);
    // 3 reads of one patient, then 64 events with 0, 1 or 2 patients (0 still gives one).
    let expected = 3 + (0..64).map(|n| [1, 1, 2][n % 3]).sum::<usize>();
    assert_eq!(resources.len(), expected);
    let text = std::fs::read_to_string(&out).expect("export");
    for code in [
        "\"TREAT\"",
        "\"ETREAT\"",
        "\"HOPERAT\"",
        "\"HSYSADMIN\"",
        "\"outcome\":\"8\"",
        "\"outcome\":\"4\"",
    ] {
        assert!(text.contains(code), "no {code} in the export");
    }
    let validator = rowguard_tests::browser::client_script("validate-fhir.mjs");
    let validation = std::process::Command::new("node")
        .arg(&validator)
        .arg(&out)
        .output()
        .expect("node");
    let summary = String::from_utf8_lossy(&validation.stdout);
    assert!(
        validation.status.success(),
        "not valid FHIR R4: {summary}{}",
        String::from_utf8_lossy(&validation.stderr)
    );
    assert!(
        summary.contains(&format!("\"valid\":{expected}")),
        "{summary}"
    );
}

#[tokio::test]
async fn a_resumed_export_neither_duplicates_nor_skips_an_event() {
    let mut trail = Trail::new(25).await;
    let out = trail.dir.join("resumed.ndjson");
    let first = export_command(&trail, &out, &["--limit", "10"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(exported(&out).len(), 10);
    // More events arrive between the two runs.
    trail.append(5).await;
    trail.seal_all().await;
    let second = export_command(&trail, &out, &["--resume"]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let links: Vec<i64> = exported(&out)
        .iter()
        .map(|r| rowguard::audit::fhir::link_of(r).expect("link"))
        .collect();
    assert_eq!(links, (1..=30).collect::<Vec<i64>>());
    let again = export_command(&trail, &out, &["--resume"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to export after link 30"));
    assert_eq!(exported(&out).len(), 30);
}

#[tokio::test]
async fn an_export_of_a_tampered_trail_says_so_and_writes_nothing() {
    let trail = Trail::new(12).await;
    trail
        .tamper(
            Attacker::Owner,
            "update rowguard_audit.events set outcome = 'denied' where id = (select event_id from rowguard_audit.chain where seq = 7)",
        )
        .await;
    let out = trail.dir.join("tampered.ndjson");
    let output = export_command(&trail, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("does not verify") && stderr.contains("link 7"),
        "{stderr}"
    );
    assert!(!out.exists(), "a partial export was left behind");
}

#[tokio::test]
async fn nothing_is_sealed_through_a_function_or_trigger_the_migrations_did_not_write() {
    // A review: the owner replaced `final_events()` so the sealer hashed and signed a rewritten
    // event, then edited the stored row to match; or added a trigger scrubbing patient ids as
    // events were written and re-recorded the self-check's baseline. Verify said intact and
    // the self-check passed. Now the sealer and the self-check compare the trail's functions
    // and triggers with the build's own migrations.
    let mut trail = Trail::new(2).await;
    let owner = trail.t.owner().await;
    let original: String = owner
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select pg_get_functiondef('rowguard_audit.final_events(bigint, bigint, integer)'::regprocedure) as def",
        ))
        .await
        .expect("query")
        .expect("row")
        .try_get("", "def")
        .expect("definition");
    let scrub = [
        "create function rowguard_audit.scrub() returns trigger language plpgsql as \
         $$ begin new.patient_ids := '{}'; return new; end $$",
        "create trigger zz_scrub before insert on rowguard_audit.events \
         for each row execute function rowguard_audit.scrub()",
        "select rowguard.record_policies()",
    ];
    let replaced = original.replacen("ORDER BY", "/* rewritten */ ORDER BY", 1);
    assert_ne!(replaced, original);
    // The re-review: a partition moved out of the schema keeps its triggers firing on every
    // insert through the parent; a partition's copy of an append-only trigger can be disabled.
    let partition: String = owner
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select c.relname::text as name from pg_inherits i join pg_class c on c.oid = i.inhrelid \
             where i.inhparent = 'rowguard_audit.events'::regclass \
             and pg_get_expr(c.relpartbound, c.oid) like '%' || to_char(now(), 'YYYY-MM') || '%' \
             order by 1 limit 1",
        ))
        .await
        .expect("query")
        .expect("this month's partition")
        .try_get("", "name")
        .expect("name");
    let moved = [
        format!("alter table rowguard_audit.{partition} set schema rowguard"),
        "create function rowguard.scrub() returns trigger language plpgsql as \
         $$ begin new.patient_ids := '{}'; return new; end $$"
            .to_owned(),
        format!(
            "create trigger scrub before insert on rowguard.{partition} \
             for each row execute function rowguard.scrub()"
        ),
        "select rowguard.record_policies()".to_owned(),
    ];
    let moved_back = [
        format!("drop trigger scrub on rowguard.{partition}"),
        "drop function rowguard.scrub()".to_owned(),
        format!("alter table rowguard.{partition} set schema rowguard_audit"),
        "select rowguard.record_policies()".to_owned(),
    ];
    let disabled = [format!(
        "alter table rowguard_audit.{partition} disable trigger events_append_only"
    )];
    let enabled = [format!(
        "alter table rowguard_audit.{partition} enable trigger events_append_only"
    )];
    let moved_named = format!("partition rowguard.{partition} of the audit trail is outside");
    let disabled_named =
        format!("trigger {partition}.events_append_only on the audit trail is not enabled");
    let (moved, moved_back, disabled, enabled) = (
        as_strs(&moved),
        as_strs(&moved_back),
        as_strs(&disabled),
        as_strs(&enabled),
    );
    let attacks: [(&[&str], &str, &[&str]); 4] = [
        (
            &[replaced.as_str()],
            "function rowguard_audit.final_events differs from the migrations'",
            &[original.as_str()],
        ),
        (
            &scrub,
            "trigger events.zz_scrub on the audit trail is not one of the migrations'",
            &[
                "drop trigger zz_scrub on rowguard_audit.events",
                "drop function rowguard_audit.scrub()",
                "select rowguard.record_policies()",
            ],
        ),
        (&moved, &moved_named, &moved_back),
        (&disabled, &disabled_named, &enabled),
    ];
    for (attack, named, restore) in attacks {
        for sql in attack {
            owner.execute_unprepared(sql).await.expect(sql);
        }
        trail.append(1).await;
        for _ in 0..3 {
            assert!(
                trail
                    .sealer
                    .round(&mut trail.last_checkpoint)
                    .await
                    .is_err(),
                "a seal round ran through {named:?}"
            );
        }
        let admin = trail.t.admin().await;
        assert_eq!(unsealed(&admin).await, 1, "nothing sealed");
        let verified = trail
            .audit_cli("verify", &trail.t.admin_url())
            .arg("--checkpoints")
            .arg(&trail.dir)
            .output()
            .expect("rowguard audit verify");
        let stdout = String::from_utf8_lossy(&verified.stdout);
        assert!(
            stdout.contains("warning: the audit trail's schema differs") && stdout.contains(named),
            "{stdout}"
        );
        let refusal = match trail.db.self_check().await {
            Err(rowguard::db::SelfCheckError::Failed(failed)) => failed.to_string(),
            other => panic!("the self-check should refuse: {other:?}"),
        };
        assert!(refusal.contains(named), "{refusal}");
        for sql in restore {
            owner.execute_unprepared(sql).await.expect(sql);
        }
        trail.seal_all().await;
        assert!(trail.verify().await.is_intact());
    }
}
