//! Behind PgBouncer in transaction mode — the pooler serverless and managed PostgreSQL put in
//! front of the database — with fewer server connections than concurrent clients: thousands of
//! interleaved reads and updates from 20 clinicians and a stranger, each answer checked against
//! that caller's true patient list.
//!
//! Debian's PgBouncer (1.18) does not manage prepared statements, so the gateway runs with
//! `ROWGUARD_DB_TRANSACTION_POOLER=true` (see the README).

use rowguard::db::AccessMode;
use rowguard::principal::AppRole;
use rowguard::settings::DatabaseSettings;
use rowguard_tests::app::TestApp;
use rowguard_tests::fixtures::stranger;
use rowguard_tests::issuer::TestIssuer;
use rowguard_tests::pooler::Pooler;
use rowguard_tests::workload::Ward;
use rowguard_tests::{TestDb, cluster, test_roles};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

const CLINICIANS: usize = 20;
const STEPS: usize = 2000;
const SERVER_CONNECTIONS: u32 = 3;
const GATEWAY_CONNECTIONS: u32 = 8;
const CONCURRENT_CLIENTS: usize = 16;

fn through(pooler: &Pooler, t: &TestDb) -> DatabaseSettings {
    let mut settings = DatabaseSettings::new(
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            test_roles().gateway(),
            pooler.port,
            t.name()
        ),
        test_roles(),
    );
    settings.transaction_pooler = true;
    settings.max_connections = GATEWAY_CONNECTIONS;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_reads_and_updates_through_a_transaction_pooler_never_leak() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let ward = Ward::admit(&t.owner().await, &issuer, CLINICIANS, 60, 3000).await;
    let pooler = Pooler::start(
        cluster().port(),
        t.name(),
        &[&test_roles().gateway()],
        SERVER_CONNECTIONS,
        "transaction",
    );
    // The startup self-check runs through the pooler too (the app would not start otherwise).
    let app = TestApp::start_on(through(&pooler, &t), &issuer).await;
    app.wait_for_keys().await;

    let tally = ward
        .run(
            &app.http,
            &app.url("/graphql"),
            ward.plan(0x9e37_79b9_7f4a_7c15).take(STEPS),
            CONCURRENT_CLIENTS,
        )
        .await;
    eprintln!(
        "behind pgbouncer (transaction mode, {SERVER_CONNECTIONS} server connections, \
         {GATEWAY_CONNECTIONS} gateway connections, {CONCURRENT_CLIENTS} clients, \
         {} callers): {}",
        ward.callers(),
        tally.summary()
    );
    assert!(
        tally.failures.is_empty(),
        "{} wrong answers, first: {}",
        tally.failures.len(),
        tally.failures[0]
    );
    assert!(tally.reads > 1000 && tally.updates > 0 && tally.refused > 0);
    drop(app);
    drop(pooler);
}

#[tokio::test]
async fn without_a_statement_cache_no_prepared_statement_outlives_its_transaction() {
    let t = TestDb::new().await;
    let db = t.gateway_with(1, |s| s.statement_cache_capacity = 0).await;
    let nobody = stranger(AppRole::Clinician);
    for _ in 0..20 {
        let scope = db
            .scope(&nobody, AccessMode::ReadOnly, Uuid::new_v4())
            .await
            .expect("scope");
        scope
            .conn()
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "select id from rowguard.patients",
            ))
            .await
            .expect("read");
        scope.commit().await.expect("commit");
    }
    let scope = db
        .scope(&nobody, AccessMode::ReadOnly, Uuid::new_v4())
        .await
        .expect("scope");
    let row = scope
        .conn()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select count(*)::int8 as n from pg_catalog.pg_prepared_statements",
        ))
        .await
        .expect("count")
        .expect("row");
    let left: i64 = row.try_get("", "n").expect("n");
    // Only this transaction's own two statements (the identity and this count).
    assert!(left <= 2, "{left} prepared statements piled up");
}
