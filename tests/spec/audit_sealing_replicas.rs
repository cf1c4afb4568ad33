//! Several `rowguard serve` replicas on one database, with REPEATABLE READ as the database's
//! default, under concurrent load: exactly one seals at a time, another takes over when the
//! sealing leader is killed, and the result is one chain that verifies, holding every committed
//! event and nothing of a rolled-back transaction.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rowguard::audit::checkpoint::CheckpointDir;
use rowguard::audit::keys::TrustedKeys;
use rowguard::audit::record::{AuditAction, AuditContext, AuditEntry, AuditOutcome, append};
use rowguard::audit::verify::{VerifyOptions, verify};
use rowguard::db::AccessMode;
use rowguard::dev::postgres::free_port;
use rowguard_tests::TestDb;
use rowguard_tests::fixtures::{admit, assign, enroll_at};
use rowguard_tests::issuer::{SPA_CLIENT_ID, TestIssuer};
use rowguard_tests::process;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::support::query_count;

const CLI: &str = env!("CARGO_BIN_EXE_rowguard-cli");

struct Replica {
    child: Child,
    base: String,
    metrics: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        process::stop(
            &mut self.child,
            rowguard_tests::process::Signal::SIGTERM,
            Duration::from_secs(10),
        );
    }
}

async fn is_leader(http: &reqwest::Client, replica: &Replica) -> bool {
    let Ok(reply) = http
        .get(format!("{}/metrics", replica.metrics))
        .send()
        .await
    else {
        return false;
    };
    reply
        .text()
        .await
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim() == "rowguard_audit_sealer_leader 1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_under_repeatable_read_keep_one_chain_when_the_sealing_leader_dies() {
    let t = TestDb::new().await;
    let admin = t.admin().await;
    admin
        .execute_unprepared(&format!(
            "alter database {} set default_transaction_isolation = 'repeatable read'",
            t.name()
        ))
        .await
        .expect("repeatable read by default");
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let mut people = Vec::new();
    for (subject, prefix) in [("alice", "A"), ("bob", "B")] {
        let person = enroll_at(&owner, issuer.url(), subject).await;
        people.push(person.clone());
        for i in 0..3 {
            let p = admit(&owner, &format!("{prefix}-{i}")).await;
            assign(&owner, &person, p).await;
        }
    }

    let dir = std::env::temp_dir().join(format!("rowguard-replicas-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let key = dir.join("audit.pem");
    rowguard::audit::keys::write_new_key(&key).expect("key");
    let checkpoints = dir.join("checkpoints");
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| {
            let port = free_port().expect("port");
            let metrics_port = free_port().expect("port");
            let log = std::fs::File::create(dir.join(format!("replica-{i}.log"))).expect("log");
            let child = Command::new(CLI)
                .arg("serve")
                // Budgets this load never reaches: it measures other things.
                .env("ROWGUARD_QUOTA_RATE", "10000000")
                .env("ROWGUARD_QUOTA_BURST", "10000000")
                .env("DATABASE_URL", t.gateway_url())
                .env("ROWGUARD_ROLE_PREFIX", "rgtest")
                .env("ROWGUARD_OIDC_ISSUER", issuer.url())
                .env("ROWGUARD_OIDC_AUDIENCES", SPA_CLIENT_ID)
                .env("ROWGUARD_LISTEN", format!("127.0.0.1:{port}"))
                .env(
                    "ROWGUARD_METRICS_LISTEN",
                    format!("127.0.0.1:{metrics_port}"),
                )
                .env("ROWGUARD_DB_MAX_CONNECTIONS", "4")
                .env("ROWGUARD_AUDIT_SIGNING_KEY", &key)
                .env("ROWGUARD_AUDIT_CHECKPOINT_DIR", &checkpoints)
                .env("ROWGUARD_AUDIT_SEAL_INTERVAL_MS", "50")
                .env("ROWGUARD_AUDIT_CHECKPOINT_SECS", "1")
                .env("ROWGUARD_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting rowguard serve");
            Replica {
                child,
                base: format!("http://127.0.0.1:{port}"),
                metrics: format!("http://127.0.0.1:{metrics_port}"),
            }
        })
        .collect();
    let http = reqwest::Client::new();
    for replica in &replicas {
        assert!(
            process::ready_within(&http, &replica.base, Duration::from_secs(30)).await,
            "a replica never became ready"
        );
    }

    // Load on every replica: reads by two clinicians, each answered request leaving its events.
    let running = Arc::new(AtomicBool::new(true));
    let answered = Arc::new(Mutex::new(BTreeSet::<Uuid>::new()));
    let bases: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(
        replicas.iter().map(|r| r.base.clone()).collect(),
    ));
    let mut clients = Vec::new();
    for client in 0..6 {
        let token = issuer
            .token(if client % 2 == 0 { "alice" } else { "bob" })
            .mint();
        let (running, answered, bases, http) = (
            running.clone(),
            answered.clone(),
            bases.clone(),
            http.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = client;
            while running.load(Ordering::Relaxed) {
                let base = {
                    let bases = bases.lock().await;
                    bases[n % bases.len()].clone()
                };
                n += 1;
                let Ok(reply) = http
                    .post(format!("{base}/graphql"))
                    .bearer_auth(&token)
                    .json(&json!({ "query": "{ patients(first: 10) { edges { node { mrn } } } }" }))
                    .send()
                    .await
                else {
                    continue;
                };
                let id = reply
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<Uuid>().ok());
                if reply.status().is_success()
                    && let Some(id) = id
                {
                    answered.lock().await.insert(id);
                }
            }
        }));
    }
    // Meanwhile, transactions that append and then roll back.
    let db = t.gateway(2).await;
    let alice = people[0].clone();
    let rollbacks = {
        let running = running.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while running.load(Ordering::Relaxed) {
                let scope = db
                    .scope(&alice.clinician(), AccessMode::ReadWrite, Uuid::new_v4())
                    .await
                    .expect("scope");
                let entry = AuditEntry {
                    action: AuditAction::Read,
                    outcome: AuditOutcome::Success,
                    patients: BTreeSet::new(),
                };
                let context = AuditContext {
                    operation_name: Some("RolledBack".into()),
                    ..AuditContext::default()
                };
                append(scope.conn(), &context, &[entry])
                    .await
                    .expect("append");
                scope.rollback().await.expect("rollback");
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut leaders = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        if is_leader(&http, replica).await {
            leaders.push(i);
        }
    }
    assert_eq!(leaders.len(), 1, "exactly one replica seals: {leaders:?}");
    let mut leader = replicas.remove(leaders[0]);
    bases.lock().await.retain(|b| *b != leader.base);
    leader.child.kill().expect("SIGKILL the sealing leader");
    let _ = leader.child.wait();
    let sealed_before_kill =
        query_count(&admin, "select count(*) as value from rowguard_audit.chain")
            .await
            .expect("links");

    tokio::time::sleep(Duration::from_secs(5)).await;
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    let rolled_back = rollbacks.await.expect("rollbacks");

    // Another replica takes the lease and seals everything that committed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let unsealed = query_count(
            &admin,
            "select count(*) as value from rowguard_audit.events e \
             where not exists (select 1 from rowguard_audit.chain c where c.event_id = e.id)",
        )
        .await
        .expect("unsealed");
        if unsealed == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unsealed} events still unsealed 30 s after the leader died"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut new_leaders = 0;
    for replica in &replicas {
        new_leaders += usize::from(is_leader(&http, replica).await);
    }
    assert_eq!(new_leaders, 1, "a surviving replica took over sealing");

    let answered = answered.lock().await.clone();
    let ids: Vec<Uuid> = answered.iter().copied().collect();
    let row = admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "select count(distinct e.request_id) as sealed_requests, \
                    (select count(*) from rowguard_audit.events) as events, \
                    (select count(*) from rowguard_audit.chain) as links, \
                    (select count(*) from rowguard_audit.events where operation_name = 'RolledBack') as rolled_back \
             from rowguard_audit.events e join rowguard_audit.chain c on c.event_id = e.id \
             where e.request_id = any($1)",
            [ids.into()],
        ))
        .await
        .expect("query")
        .expect("row");
    let get = |c: &str| row.try_get::<i64>("", c).expect("count");
    eprintln!(
        "replicas: {} answered requests, {} events, {} links ({} sealed before the leader was killed), {} rolled-back appends",
        answered.len(),
        get("events"),
        get("links"),
        sealed_before_kill,
        rolled_back
    );
    assert!(answered.len() > 100, "the load ran: {}", answered.len());
    assert!(
        sealed_before_kill > 0,
        "the first leader sealed before it died"
    );
    assert_eq!(
        get("sealed_requests"),
        answered.len() as i64,
        "every answered request's events are sealed"
    );
    assert_eq!(
        get("links"),
        get("events"),
        "every committed event sealed once"
    );
    assert_eq!(get("rolled_back"), 0);
    assert!(rolled_back > 10, "rolled-back appends ran: {rolled_back}");

    let options = VerifyOptions {
        keys: TrustedKeys::from_files(&[dir.join("audit.pem.pub")]).expect("public key"),
        checkpoint_dir: Some(CheckpointDir::new(&checkpoints)),
        max_seal_lag: Duration::from_secs(300),
    };
    let report = verify(&t.owner().await, &options).await.expect("verify");
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(report.is_intact(), "{problems:#?}");
    assert_eq!(report.links as i64, get("links"));
    assert!(report.checkpoints > 0);
    drop(replicas);
    let _ = std::fs::remove_dir_all(&dir);
}
