//! Clients that give up: a request abandoned at any point (during BEGIN, the identity statement,
//! a query, the audit append, COMMIT) must not leave a pooled connection inside a transaction,
//! must not make the next request's BEGIN run inside it, and must not commit.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rowguard::dev::postgres::free_port;
use rowguard_tests::TestDb;
use rowguard_tests::fixtures::{admit, assign, enroll_at, lock_patients};
use rowguard_tests::issuer::{SPA_CLIENT_ID, TestIssuer};
use rowguard_tests::process;
use sea_orm::ConnectionTrait;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::query_count;

/// A raw HTTP/1.1 POST of `body`, with the client's own request id.
fn http_request(port: u16, token: &str, body: &serde_json::Value, correlation: &str) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nX-Request-Id: {correlation}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `request` and hangs up (with a reset, as a crashed or impatient client does) after
/// `after`.
async fn abandon(port: u16, request: Vec<u8>, after: Duration) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let _ = stream.set_zero_linger();
    let _ = stream.write_all(&request).await;
    tokio::time::sleep(after).await;
    drop(stream);
}

/// Requests whose clients left before the answer, as the gateway counts them.
async fn abandoned(app: &rowguard_tests::app::TestApp) -> u64 {
    let base = format!("http://{}", app.metrics_addr);
    metric(
        &app.http,
        &base,
        "rowguard_graphql_requests_abandoned_total",
    )
    .await
}

/// A gauge or counter from the gateway's metrics.
async fn metric(http: &reqwest::Client, metrics: &str, name: &str) -> u64 {
    rowguard_tests::app::metric(http, &format!("{metrics}/metrics"), &format!("{name} ")).await
        as u64
}

/// Waits until the gateway has finished every operation it started (abandoned ones included).
async fn settled(http: &reqwest::Client, metrics: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let busy = metric(http, metrics, "rowguard_graphql_requests_in_flight").await;
        if busy == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{busy} operations never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_abandoned_requests_leave_no_open_transaction_and_nothing_half_written() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    let mut patients = Vec::new();
    for i in 0..3 {
        let p = admit(&owner, &format!("A-{i}")).await;
        assign(&owner, &alice, p).await;
        patients.push(p);
    }
    let port = free_port().expect("port");
    let metrics_port = free_port().expect("port");
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    let dir = std::env::temp_dir().join(format!("rowguard-abandon-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let log_path = dir.join("serve.log");
    let mut server = rowguard_tests::process::StopOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rowguard-cli"))
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
            .env("ROWGUARD_QUOTA_CONCURRENCY", "64")
            // PostgreSQL's warnings reach the gateway's log through the driver at `warn`.
            .env("ROWGUARD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log"))
            .spawn()
            .expect("rowguard serve"),
    );
    let http = reqwest::Client::new();
    assert!(
        process::ready_within(
            &http,
            &format!("http://127.0.0.1:{port}"),
            Duration::from_secs(30)
        )
        .await,
        "serve never became ready"
    );
    let token = issuer.token("alice").mint();

    let mut tasks = Vec::new();
    let mut sent = (0, 0);
    for n in 0..1000 {
        let (body, kind) = if n % 3 == 0 {
            let patient = patients[n % patients.len()];
            (
                json!({ "query": "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { version } }",
                        "variables": { "i": { "id": patient, "expectedVersion": 1 + n / 9, "clinicalNotes": format!("abandoned {n}") } } }),
                1,
            )
        } else {
            (
                json!({ "query": "{ patients { edges { node { mrn careTeam { careRole } } } } }" }),
                0,
            )
        };
        if kind == 1 {
            sent.1 += 1;
        } else {
            sent.0 += 1;
        }
        // Spread over 0.5–6 ms, so clients leave during every step of the request.
        let after = Duration::from_micros(500 + (n as u64 * 7919) % 5500);
        let request = http_request(port, &token, &body, &format!("abandon-{n}"));
        tasks.push(tokio::spawn(abandon(port, request, after)));
        if tasks.len() >= 16 {
            for task in tasks.drain(..) {
                task.await.expect("client");
            }
        }
    }
    for task in tasks {
        task.await.expect("client");
    }
    let admin = t.admin().await;
    settled(&http, &metrics).await;

    // The pool hands out no connection that is inside a transaction: requests still work and
    // nothing waits idle in a transaction.
    let reply = http
        .post(format!("http://127.0.0.1:{port}/graphql"))
        .bearer_auth(&token)
        .json(&json!({ "query": "{ patients { edges { node { mrn } } } }" }))
        .send()
        .await
        .expect("reply");
    assert_eq!(reply.status().as_u16(), 200);
    let idle_in_transaction = query_count(
        &admin,
        "select count(*) as value from pg_stat_activity \
         where datname = current_database() and usename = 'rgtest_gateway' and application_name = 'rowguard' and state like 'idle in transaction%'",
    )
    .await
    .expect("activity");
    let detail: Vec<String> = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "select state || ' | ' || coalesce(query, '') || ' | xact ' || coalesce((now() - xact_start)::text, '-') || ' | change ' || coalesce((now() - state_change)::text, '-') as line \
             from pg_stat_activity where datname = current_database() and usename = 'rgtest_gateway'",
        ))
        .await
        .expect("activity")
        .iter()
        .filter_map(|r| r.try_get::<String>("", "line").ok())
        .collect();
    assert_eq!(idle_in_transaction, 0, "{detail:#?}");

    // Nothing half-written: every committed update has its audit event and vice versa.
    let versions = query_count(
        &admin,
        "select coalesce(sum(version - 1), 0)::bigint as value from rowguard.patients",
    )
    .await
    .expect("versions");
    let recorded = query_count(
        &admin,
        "select count(*) as value from rowguard_audit.events where action = 'update' and outcome = 'success'",
    )
    .await
    .expect("events");
    let summary: Vec<String> = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "select action || '/' || outcome || ': ' || count(*) as line from rowguard_audit.events group by action, outcome order by 1",
        ))
        .await
        .expect("events")
        .iter()
        .filter_map(|r| r.try_get::<String>("", "line").ok())
        .collect();
    assert_eq!(
        versions, recorded,
        "committed updates and their audit events must match; events: {summary:?}"
    );

    process::stop(
        &mut server.0,
        rowguard_tests::process::Signal::SIGTERM,
        Duration::from_secs(15),
    );
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    eprintln!(
        "abandoned {} reads and {} updates; {versions} updates committed before their clients left",
        sent.0, sent.1
    );
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("transaction in progress"))
        .collect();
    assert!(
        warnings.is_empty(),
        "a BEGIN or ROLLBACK ran in the wrong transaction state:\n{}",
        warnings.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_whose_client_left_while_it_waited_is_rolled_back() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    let patient = admit(&owner, "A-0").await;
    assign(&owner, &alice, patient).await;
    let app = rowguard_tests::app::TestApp::start(&t, &issuer).await;
    let port = app.addr.port();
    let token = issuer.token("alice").mint();

    let lock_holder = t.admin().await;
    let lock = lock_patients(&lock_holder).await;
    let mut tasks = Vec::new();
    for n in 0..5 {
        let body = json!({ "query": "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { version } }",
                           "variables": { "i": { "id": patient, "expectedVersion": 1, "clinicalNotes": format!("left {n}") } } });
        let request = http_request(port, &token, &body, &format!("left-{n}"));
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream.set_zero_linger().expect("linger");
        stream.write_all(&request).await.expect("send");
        tasks.push(stream);
    }
    // Wait until they are blocked in the database, then leave.
    let admin = t.admin().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while query_count(
        &admin,
        "select count(*) as value from pg_stat_activity where datname = current_database() and usename = 'rgtest_gateway' and application_name = 'rowguard' and wait_event_type = 'Lock'",
    )
    .await
    .expect("activity")
        == 0
    {
        assert!(Instant::now() < deadline, "the updates never reached the database");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tasks);
    // Release the lock only once the gateway has seen all five clients leave.
    let deadline = Instant::now() + Duration::from_secs(10);
    while abandoned(&app).await < 5 {
        assert!(
            Instant::now() < deadline,
            "the gateway never noticed the clients leave"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lock.rollback().await.expect("unlock");
    settled(&app.http, &format!("http://{}", app.metrics_addr)).await;

    let version = query_count(
        &admin,
        &format!("select version::bigint as value from rowguard.patients where id = '{patient}'"),
    )
    .await
    .expect("version");
    assert_eq!(version, 1, "an update whose client had gone was committed");
    let outcomes = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "select outcome from rowguard_audit.events where correlation_id like 'left-%'",
        ))
        .await
        .expect("events");
    assert!(
        outcomes
            .iter()
            .all(|r| r.try_get::<String>("", "outcome").ok().as_deref() != Some("success")),
        "no abandoned update is recorded as done"
    );
}
