//! Quotas: each person (and each OAuth client) has a budget of cost units with a burst and a
//! sustained rate. Over it: 429 RATE_LIMITED with `Retry-After` and the IETF `RateLimit` headers,
//! before any database work. With Redis every replica shares one budget; when Redis dies the
//! replicas carry on with budgets of their own.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rowguard::settings::QuotaMode;
use rowguard_tests::TestDb;
use rowguard_tests::app::TestApp;
use rowguard_tests::fixtures::{admit, assign, enroll_at};
use rowguard_tests::issuer::{SPA_CLIENT_ID, TestIssuer};
use rowguard_tests::process::{self, StopOnDrop};
use rowguard_tests::redis::TestRedis;
use serde_json::{Value, json};

/// Costs 12 units: the field, its `edges`, and one per patient of the page of 10.
const PAGE: &str = "query Page { patients(first: 10) { edges { node { id } } } }";

/// One answer: status, code and the quota headers.
#[derive(Debug)]
struct Answer {
    status: u16,
    code: Option<String>,
    retry_after: Option<u64>,
    policy: Option<String>,
    state: Option<String>,
}

async fn ask(http: &reqwest::Client, base: &str, token: &str) -> Answer {
    let response = http
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": PAGE, "operationName": "Page" }))
        .send()
        .await
        .expect("reply");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (retry_after, policy, state) = (
        header("retry-after").and_then(|v| v.parse().ok()),
        header("ratelimit-policy"),
        header("ratelimit"),
    );
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    Answer {
        status,
        code: body["errors"][0]["extensions"]["code"]
            .as_str()
            .map(str::to_owned),
        retry_after,
        policy,
        state,
    }
}

struct World {
    issuer: TestIssuer,
    app: TestApp,
    t: TestDb,
}

impl World {
    async fn new(mode: QuotaMode, rate: u32, burst: u32, client: Option<(u32, u32)>) -> World {
        let t = TestDb::new().await;
        let issuer = TestIssuer::start().await;
        let owner = t.owner().await;
        for who in ["alice", "bob"] {
            let person = enroll_at(&owner, issuer.url(), who).await;
            let p = admit(&owner, &format!("Q-{who}")).await;
            assign(&owner, &person, p).await;
        }
        let app = TestApp::start_adjusted(&t, &issuer, |s| {
            s.quota.mode = mode;
            s.quota.rate = rate;
            s.quota.burst = burst;
            // A burst must cover the most a request may cost (the page here costs 12).
            s.api.max_complexity = u64::from(burst);
            if let Some((rate, burst)) = client {
                s.quota.client_rate = rate;
                s.quota.client_burst = burst;
                s.api.max_complexity = s.api.max_complexity.min(u64::from(burst));
            }
        })
        .await;
        app.wait_for_keys().await;
        World { issuer, app, t }
    }

    fn base(&self) -> String {
        self.app.url("")
    }

    async fn metric(&self, line_start: &str) -> f64 {
        self.app.metric(line_start).await
    }
}

#[tokio::test]
async fn a_charged_request_stopped_by_a_limit_while_it_ran_still_carries_the_quota_headers() {
    // A review: a request charged and then stopped while running (its answer over the size
    // limit, or past its statement budget) answered without `RateLimit` headers.
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    for i in 0..10 {
        let p = admit(&owner, &format!("Q-{i}")).await;
        assign(&owner, &alice, p).await;
    }
    let app = TestApp::start_adjusted(&t, &issuer, |s| {
        s.quota.mode = QuotaMode::Enforce;
        s.api.max_response_bytes = 300;
    })
    .await;
    app.wait_for_keys().await;
    let answer = ask(&app.http, &app.url(""), &issuer.token("alice").mint()).await;
    assert_eq!(
        (answer.status, answer.code.as_deref()),
        (400, Some("BAD_USER_INPUT")),
        "{answer:?}"
    );
    assert!(
        answer
            .state
            .as_deref()
            .is_some_and(|s| s.starts_with("\"person\";r=")),
        "{answer:?}"
    );
    assert!(answer.policy.is_some(), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_that_does_not_parse_is_charged_and_says_so() {
    // A review: a document refused before it was measured (not valid GraphQL, not a trusted
    // document, an unknown persisted query) was never charged, so it could be sent without end,
    // and parsing a megabyte of it is the dearest thing an unauthorised-to-run request can ask.
    let w = World::new(QuotaMode::Enforce, 1, 30, None).await;
    let alice = w.issuer.token("alice").mint();
    let mut codes = Vec::new();
    for _ in 0..60 {
        let response = w
            .app
            .http
            .post(w.app.url("/graphql"))
            .bearer_auth(&alice)
            .json(&json!({ "query": "{ me { id }" }))
            .send()
            .await
            .expect("reply");
        let state = response
            .headers()
            .get("ratelimit")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = response.status().as_u16();
        if status == 400 {
            assert!(
                state
                    .as_deref()
                    .is_some_and(|s| s.starts_with("\"person\";r=")),
                "a charged refusal carries the quota's state: {state:?}"
            );
        }
        codes.push(status);
    }
    assert_eq!(codes[0], 400);
    assert!(
        codes.contains(&429),
        "sixty unparseable documents within a burst of 30: {codes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_persons_burst_is_limited_before_the_database_and_others_are_unaffected() {
    // 30 units at once, one more per second: two pages of 12 fit, the third does not.
    let w = World::new(QuotaMode::Enforce, 1, 30, None).await;
    let alice = w.issuer.token("alice").mint();
    let bob = w.issuer.token("bob").mint();
    let base = w.base();
    for _ in 0..2 {
        let ok = ask(&w.app.http, &base, &alice).await;
        assert_eq!(ok.status, 200, "{ok:?}");
        assert_eq!(ok.policy.as_deref(), Some("\"person\";q=30;w=30"));
    }
    let before = w.app.db.statements_executed();
    let refused = ask(&w.app.http, &base, &alice).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.code.as_deref(), Some("RATE_LIMITED"));
    // 6 units left, 12 needed, one per second.
    let retry = refused.retry_after.expect("Retry-After");
    assert!((5..=6).contains(&retry), "{refused:?}");
    assert_eq!(refused.policy.as_deref(), Some("\"person\";q=30;w=30"));
    assert!(
        refused
            .state
            .as_deref()
            .is_some_and(|s| s.starts_with("\"person\";r=0;t=")),
        "{refused:?}"
    );
    assert_eq!(
        w.app.db.statements_executed(),
        before,
        "a refused request ran SQL"
    );
    assert_eq!(
        w.metric("rowguard_quota_exceeded_total{reason=\"person_enforce\"} ")
            .await,
        1.0
    );

    let other = ask(&w.app.http, &base, &bob).await;
    assert_eq!(other.status, 200, "bob has a budget of his own: {other:?}");
    let admin = w.t.admin().await;
    let refused_events = crate::support::query_count(
        &admin,
        "select count(*) as value from rowguard_audit.events where outcome <> 'success'",
    )
    .await
    .expect("events");
    assert_eq!(
        refused_events, 0,
        "a refused request reached the audit trail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_documents_are_charged_so_they_cannot_be_repeated_for_free() {
    // The review's finding: a document naming an operation it does not hold (or refused by a
    // limit) was parsed and walked but never charged; a megabyte of it cost the gateway up to a
    // second of CPU per request, as often as the person liked.
    let w = World::new(QuotaMode::Enforce, 1, 12, None).await;
    let token = w.issuer.token("alice").mint();
    let mut statuses = Vec::new();
    for body in [
        json!({ "query": PAGE, "operationName": "NotInTheDocument" }),
        json!({ "query": "{ patients(first: 1000) { edges { node { id } } } }" }),
    ] {
        for _ in 0..14 {
            let reply = w
                .app
                .http
                .post(w.app.url("/graphql"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .expect("reply");
            statuses.push(reply.status().as_u16());
        }
    }
    assert!(statuses[..12].iter().all(|s| *s == 400), "{statuses:?}");
    assert!(
        statuses[12..].contains(&429),
        "refusals were not charged: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_mode_serves_over_quota_requests_and_counts_them() {
    let w = World::new(QuotaMode::Measure, 1, 30, None).await;
    let alice = w.issuer.token("alice").mint();
    for _ in 0..3 {
        let answer = ask(&w.app.http, &w.base(), &alice).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(
        w.metric("rowguard_quota_exceeded_total{reason=\"person_measure\"} ")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_budget_caps_all_of_a_clients_users_together() {
    let w = World::new(QuotaMode::Enforce, 1000, 100_000, Some((1, 30))).await;
    let alice = w
        .issuer
        .token("alice")
        .claim("azp", json!("reporting-tool"))
        .mint();
    let bob = w
        .issuer
        .token("bob")
        .claim("azp", json!("reporting-tool"))
        .mint();
    let bob_in_the_app = w
        .issuer
        .token("bob")
        .claim("azp", json!(SPA_CLIENT_ID))
        .mint();
    assert_eq!(ask(&w.app.http, &w.base(), &alice).await.status, 200);
    assert_eq!(ask(&w.app.http, &w.base(), &bob).await.status, 200);
    let refused = ask(&w.app.http, &w.base(), &bob).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.policy.as_deref(), Some("\"client\";q=30;w=30"));
    let elsewhere = ask(&w.app.http, &w.base(), &bob_in_the_app).await;
    assert_eq!(
        elsewhere.status, 200,
        "another client has its own budget: {elsewhere:?}"
    );
}

/// A `rowguard serve` process sharing budgets through `redis`.
struct Replica {
    base: String,
    metrics: String,
    _process: StopOnDrop,
}

fn replica(t: &TestDb, issuer: &TestIssuer, redis: &str, rate: u32, burst: u32) -> Replica {
    replica_in(t, issuer, redis, rate, burst, None)
}

/// A replica of the deployment whose budgets are `namespace` in Redis (`None`: the default).
fn replica_in(
    t: &TestDb,
    issuer: &TestIssuer,
    redis: &str,
    rate: u32,
    burst: u32,
    namespace: Option<&str>,
) -> Replica {
    let port = rowguard::dev::postgres::free_port().expect("port");
    let metrics_port = rowguard::dev::postgres::free_port().expect("port");
    let child = Command::new(env!("CARGO_BIN_EXE_rowguard-cli"))
        .arg("serve")
        .env("DATABASE_URL", t.gateway_url())
        .env("ROWGUARD_ROLE_PREFIX", "rgtest")
        .env("ROWGUARD_OIDC_ISSUER", issuer.url())
        .env("ROWGUARD_OIDC_AUDIENCES", SPA_CLIENT_ID)
        .env("ROWGUARD_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "ROWGUARD_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("ROWGUARD_DB_MAX_CONNECTIONS", "2")
        .env("ROWGUARD_AUDIT_SEALER", "false")
        .env("ROWGUARD_QUOTA_REDIS_URL", redis)
        // A loaded CI machine can take longer than the production default to answer; a timeout
        // here would fall back to per-replica budgets and test the outage path instead.
        .env("ROWGUARD_QUOTA_REDIS_TIMEOUT_MS", "2000")
        .env("ROWGUARD_QUOTA_RATE", rate.to_string())
        .env("ROWGUARD_QUOTA_BURST", burst.to_string())
        .env("ROWGUARD_MAX_COMPLEXITY", burst.to_string())
        .env("ROWGUARD_LOG", "warn")
        .envs(namespace.map(|n| ("ROWGUARD_QUOTA_REDIS_NAMESPACE", n)))
        .stdout(Stdio::null())
        .spawn()
        .expect("rowguard serve");
    Replica {
        base: format!("http://127.0.0.1:{port}"),
        metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        _process: StopOnDrop(child),
    }
}

async fn readyz_quota(http: &reqwest::Client, base: &str) -> String {
    let body: Value = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    body["checks"]["quota"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_sharing_one_redis_keep_their_budgets_apart() {
    // Before: every deployment's budgets were `rowguard:quota:person:<hash>`, so a person's
    // spending on one deployment emptied their budget on another using the same Redis.
    let redis = TestRedis::start();
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    assign(&owner, &alice, admit(&owner, "R-alice").await).await;
    let deployments = [
        replica_in(&t, &issuer, &redis.url(), 1, 60, Some("ward-a")),
        replica_in(&t, &issuer, &redis.url(), 1, 60, Some("ward-b")),
    ];
    let http = reqwest::Client::new();
    for d in &deployments {
        assert!(
            process::ready_within(&http, &d.base, Duration::from_secs(30)).await,
            "replica never became ready"
        );
    }
    let token = issuer.token("alice").mint();
    for d in &deployments {
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(ask(&http, &d.base, &token).await.status);
        }
        assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "{}", d.base);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_one_persons_budget_is_shared_by_every_replica_and_survives_redis_dying() {
    let mut redis = TestRedis::start();
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    for who in ["alice", "bob"] {
        let person = enroll_at(&owner, issuer.url(), who).await;
        let p = admit(&owner, &format!("R-{who}")).await;
        assign(&owner, &person, p).await;
    }
    // 60 units at once, one more per second: five pages of 12, wherever they are asked.
    let replicas = [
        replica(&t, &issuer, &redis.url(), 1, 60),
        replica(&t, &issuer, &redis.url(), 1, 60),
    ];
    let http = reqwest::Client::new();
    for r in &replicas {
        assert!(
            process::ready_within(&http, &r.base, Duration::from_secs(30)).await,
            "replica never became ready"
        );
    }
    let alice = issuer.token("alice").mint();
    let bob = issuer.token("bob").mint();

    let mut allowed = 0;
    let mut first_refusal = None;
    for i in 0..10 {
        let answer = ask(&http, &replicas[i % 2].base, &alice).await;
        match answer.status {
            200 => allowed += 1,
            429 => {
                first_refusal.get_or_insert(answer);
            }
            other => panic!("unexpected {other}: {answer:?}"),
        }
    }
    assert_eq!(
        allowed, 5,
        "the two replicas together allowed {allowed} pages, not one burst's 5"
    );
    let refusal = first_refusal.expect("a refusal");
    assert_eq!(refusal.code.as_deref(), Some("RATE_LIMITED"));
    // The budget is empty (60 of 60 used), 12 units are needed at one per second.
    let retry = refusal.retry_after.expect("Retry-After");
    assert!((11..=12).contains(&retry), "{refusal:?}");
    assert_eq!(refusal.policy.as_deref(), Some("\"person\";q=60;w=60"));
    for r in &replicas {
        assert_eq!(
            ask(&http, &r.base, &bob).await.status,
            200,
            "bob is unaffected"
        );
        assert_eq!(readyz_quota(&http, &r.base).await, "shared");
    }

    // Redis dies: both replicas keep serving, each on a budget of its own.
    redis.kill();
    let carol = issuer.token("bob").claim("sub", json!("carol")).mint();
    for r in &replicas {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let answer = ask(&http, &r.base, &carol).await;
            if answer.status == 200
                && readyz_quota(&http, &r.base).await == "local (redis unreachable)"
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica did not fall back to local budgets: {answer:?}"
            );
        }
        assert_eq!(
            rowguard_tests::app::metric(&http, &r.metrics, "rowguard_quota_shared ").await,
            0.0
        );
        assert!(
            rowguard_tests::app::metric(&http, &r.metrics, "rowguard_quota_redis_errors_total ")
                .await
                >= 1.0
        );
        assert_eq!(
            readyz_status(&http, &r.base).await,
            200,
            "a Redis outage does not take the replica out of rotation"
        );
    }
    // Local budgets still limit: bob's own burst on one replica runs out.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(ask(&http, &replicas[0].base, &bob).await.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_falls_back_from_redis_does_not_hand_out_a_fresh_budget() {
    // The review's finding: the local budgets were never charged while Redis answered, so the
    // first Redis timeout (one is enough, under load) gave everyone a full burst again.
    let mut redis = TestRedis::start();
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    assign(&owner, &alice, admit(&owner, "R-alice").await).await;
    let r = replica(&t, &issuer, &redis.url(), 1, 60);
    let http = reqwest::Client::new();
    assert!(
        process::ready_within(&http, &r.base, Duration::from_secs(30)).await,
        "replica never became ready"
    );
    let token = issuer.token("alice").mint();
    for page in 0..5 {
        let answer = ask(&http, &r.base, &token).await;
        assert_eq!(answer.status, 200, "page {page}: {answer:?}");
    }
    assert_eq!(ask(&http, &r.base, &token).await.status, 429);

    redis.kill();
    let answer = ask(&http, &r.base, &token).await;
    assert_eq!(
        readyz_quota(&http, &r.base).await,
        "local (redis unreachable)"
    );
    assert_eq!(
        answer.status, 429,
        "the local budget was full again: {answer:?}"
    );
}

async fn readyz_status(http: &reqwest::Client, base: &str) -> u16 {
    http.get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz")
        .status()
        .as_u16()
}
