//! OpenTelemetry traces: a request continues the client's W3C trace, each SQL statement is a
//! span, the audit row carries the trace id, and nothing a client or a patient record supplies
//! reaches the collector (a real OTLP receiver decoding with the official protobuf definitions).

use std::process::{Command, Stdio};
use std::time::Duration;

use rowguard_tests::TestDb;
use rowguard_tests::fixtures::{admit, assign, enroll_at};
use rowguard_tests::issuer::{SPA_CLIENT_ID, TestIssuer};
use rowguard_tests::otlp::OtlpReceiver;
use rowguard_tests::process::{self, StopOnDrop};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;

const MARKER: &str = "CANARY7Q";

struct Traced {
    base: String,
    metrics: String,
    _server: StopOnDrop,
}

async fn traced_server(t: &TestDb, issuer: &TestIssuer, receiver: &OtlpReceiver) -> Traced {
    let port = rowguard::dev::postgres::free_port().expect("port");
    let metrics_port = rowguard::dev::postgres::free_port().expect("port");
    let server = StopOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rowguard-cli"))
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
            .env("ROWGUARD_PLAYGROUND", "true")
            .env("ROWGUARD_AUDIT_SEALER", "false")
            .env("ROWGUARD_OTEL_ENDPOINT", receiver.endpoint())
            // The SDK's batch delay, shortened so the spec does not wait 5 s for an export.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("ROWGUARD_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("rowguard serve"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert!(process::ready_within(&http, &base, Duration::from_secs(30)).await);
    Traced {
        base,
        metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        _server: server,
    }
}

fn trace_ids(n: u8) -> (String, String) {
    (
        format!("{n:02x}{}", "4bf92f3577b34da6a3ce929d0e0e47"),
        format!("{n:02x}f067aa0ba902b7"),
    )
}

async fn statements(http: &reqwest::Client, metrics: &str) -> f64 {
    rowguard_tests::app::metric(http, metrics, "rowguard_db_statements ").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_continues_the_clients_trace_with_one_span_per_statement_and_the_audit_row_carries_it()
 {
    let receiver = OtlpReceiver::start().await;
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    for i in 0..2 {
        let p = admit(&owner, &format!("TR-{i}")).await;
        assign(&owner, &alice, p).await;
    }
    let server = traced_server(&t, &issuer, &receiver).await;
    let http = reqwest::Client::new();
    let token = issuer.token("alice").mint();
    let query = json!({ "query": "query MyPatients { patients(first: 5) { edges { node { mrn careTeam { careRole } } } } }", "operationName": "MyPatients" });
    // A first request warms the token cache and the pool.
    http.post(format!("{}/graphql", server.base))
        .bearer_auth(&token)
        .json(&query)
        .send()
        .await
        .expect("warm-up");

    let (trace, parent) = trace_ids(1);
    let before = statements(&http, &server.metrics).await;
    let response = http
        .post(format!("{}/graphql", server.base))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .json(&query)
        .send()
        .await
        .expect("reply");
    assert_eq!(response.status(), 200);
    let returned = response
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        returned.starts_with(&format!("00-{trace}-")),
        "{returned:?}"
    );
    let request_id: uuid::Uuid = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("request id");
    let executed = statements(&http, &server.metrics).await - before;

    let expected = [
        "POST /graphql",
        "verify token",
        "GraphQL parse",
        "GraphQL validate",
        "GraphQL execute",
        "BEGIN",
        "SET identity",
        "SELECT rowguard.patients",
        "SELECT rowguard.clinicians_patients",
        "COMMIT",
        "SELECT rowguard_audit.append_batch",
    ];
    // Waits for every expected span: one that never comes fails the test after 30 s.
    let spans = receiver.trace(&trace, &expected).await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let root = spans
        .iter()
        .find(|s| s.name == "POST /graphql")
        .expect("http span");
    assert_eq!(
        root.parent_span_id, parent,
        "the server span continues the client's"
    );
    // Validation happens inside the engine's run, and the resolvers' statements belong to it.
    let span_named = |name: &str| spans.iter().find(|s| s.name == name).expect(name);
    let execute = span_named("GraphQL execute");
    assert_eq!(
        span_named("GraphQL validate").parent_span_id,
        execute.span_id,
        "validation is part of the engine's run: {spans:#?}"
    );
    assert_eq!(
        span_named("SELECT rowguard.patients").parent_span_id,
        execute.span_id,
        "the page query belongs to the execution: {spans:#?}"
    );
    // The gateway's phases belong to the request's span, and a statement run by a data loader
    // on a task of its own still belongs to the execution.
    for name in ["verify token", "GraphQL parse", "GraphQL execute", "COMMIT"] {
        assert_eq!(
            span_named(name).parent_span_id,
            root.span_id,
            "{name} belongs to the request: {spans:#?}"
        );
    }
    assert_eq!(
        span_named("SELECT rowguard.clinicians_patients").parent_span_id,
        execute.span_id,
        "the care-team query belongs to the execution: {spans:#?}"
    );
    // A span ends only after every span inside it, as a trace viewer draws them.
    for child in &spans {
        if let Some(parent) = spans.iter().find(|s| s.span_id == child.parent_span_id) {
            assert!(
                parent.start <= child.start && child.end <= parent.end,
                "{} is not inside {}: {spans:#?}",
                child.name,
                parent.name
            );
        }
    }
    // One span per statement the pool ran (the metric leaves out BEGIN and COMMIT, which have
    // spans of their own).
    let statement_spans = spans
        .iter()
        .filter(|s| {
            s.attributes
                .iter()
                .any(|(k, v)| k == "db.system.name" && v == "postgresql")
                && !matches!(s.name.as_str(), "BEGIN" | "COMMIT" | "ROLLBACK")
        })
        .count();
    assert_eq!(
        statement_spans as f64, executed,
        "one span per SQL statement: {names:?}"
    );
    assert!(
        spans.iter().any(|s| s
            .attributes
            .iter()
            .any(|(k, v)| k == "rowguard.token.cache" && v == "hit")),
        "the token span says the cache answered: {spans:#?}"
    );

    let row = t
        .admin()
        .await
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "select trace_id from rowguard_audit.events where request_id = $1",
            [request_id.into()],
        ))
        .await
        .expect("query")
        .expect("the request's audit event");
    let recorded: Option<String> = row.try_get("", "trace_id").expect("column");
    assert_eq!(recorded.as_deref(), Some(trace.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_canary_from_a_request_or_a_record_reaches_the_trace_collector() {
    let receiver = OtlpReceiver::start().await;
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    let patient = admit(&owner, "CANARY-MRN").await;
    assign(&owner, &alice, patient).await;
    // As the superuser: row level security is forced on the owner too.
    t.admin()
        .await
        .execute_unprepared(&format!(
            "update rowguard.patients set given_name = '{MARKER}-name', family_name = '{MARKER}-family', clinical_notes = '{MARKER}-notes'"
        ))
        .await
        .expect("canary record");
    let server = traced_server(&t, &issuer, &receiver).await;
    let http = reqwest::Client::new();
    let token = issuer.token("alice").mint();
    let mut traces = Vec::new();

    let (trace, parent) = trace_ids(2);
    let search = http
        .post(format!("{}/graphql", server.base))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .header("x-request-id", format!("{MARKER}-correlation"))
        // Vendor state rides along with the trace id; whatever a client puts there must not
        // reach the collector.
        .header("tracestate", format!("vendor={MARKER}-state"))
        .header("user-agent", format!("{MARKER}-agent"))
        .header("x-custom", format!("{MARKER}-header"))
        .header("cookie", format!("session={MARKER}-cookie"))
        .json(&json!({
            "query": format!("query {MARKER}_op($s: String) {{ patients(search: $s) {{ edges {{ node {{ givenName familyName clinicalNotes }} }} }} }}"),
            "operationName": format!("{MARKER}_op"),
            "variables": { "s": format!("{MARKER}") },
        }))
        .send()
        .await
        .expect("search");
    assert_eq!(search.status(), 200);
    let body = search.text().await.expect("body");
    assert!(
        body.contains(&format!("{MARKER}-notes")),
        "the canary record was found: {body}"
    );
    traces.push(("POST /graphql", trace));

    let (trace, parent) = trace_ids(3);
    let by_get = http
        .get(format!("{}/graphql", server.base))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .query(&[
            (
                "query",
                "query Q($s: String) { patients(search: $s) { edges { node { mrn } } } }"
                    .to_owned(),
            ),
            (
                "variables",
                json!({ "s": format!("{MARKER}-get") }).to_string(),
            ),
        ])
        .send()
        .await
        .expect("get");
    assert_eq!(by_get.status(), 200);
    traces.push(("GET /graphql", trace));

    let version: i32 = t
        .admin()
        .await
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "select version from rowguard.patients where id = $1",
            [patient.into()],
        ))
        .await
        .expect("version")
        .expect("row")
        .try_get("", "version")
        .expect("column");
    let (trace, parent) = trace_ids(4);
    let update = http
        .post(format!("{}/graphql", server.base))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .json(&json!({
            "query": "mutation U($i: UpdatePatientInput!) { updatePatient(input: $i) { version } }",
            "variables": { "i": { "id": patient, "expectedVersion": version, "clinicalNotes": format!("{MARKER}-new-notes") } },
        }))
        .send()
        .await
        .expect("update");
    assert_eq!(update.status(), 200);
    traces.push(("POST /graphql", trace));

    let (trace, parent) = trace_ids(5);
    let refused = http
        .post(format!("{}/graphql", server.base))
        .bearer_auth(format!("{MARKER}.not.a.token"))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .expect("refused");
    assert_eq!(refused.status(), 401);
    traces.push(("POST /graphql", trace));

    let (trace, parent) = trace_ids(6);
    let asset = http
        .get(format!("{}/playground/assets/{MARKER}.js", server.base))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .send()
        .await
        .expect("asset");
    assert_eq!(asset.status(), 404);
    traces.push(("GET /playground/assets/{name}", trace));

    // A method is the client's text too, like a path.
    let (trace, parent) = trace_ids(7);
    let invented = http
        .request(
            reqwest::Method::from_bytes(format!("{MARKER}-METHOD").as_bytes()).expect("method"),
            format!("{}/graphql", server.base),
        )
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .send()
        .await
        .expect("invented method");
    assert_eq!(invented.status(), 405);
    traces.push(("other /graphql", trace));

    // A trace's server span ends last, so once it is in, the whole trace is.
    for (root, trace) in &traces {
        receiver.trace(trace, &[root]).await;
    }
    assert!(
        receiver.spans().len() > 20,
        "the receiver got the traces: {}",
        receiver.spans().len()
    );
    // The search finds what is there (so its silence about the marker means something).
    assert!(receiver.contains("SELECT rowguard.patients"));
    assert!(
        !receiver.contains(MARKER),
        "a canary reached the trace collector: {:#?}",
        receiver
            .spans()
            .into_iter()
            .filter(|s| s.name.contains(MARKER)
                || s.attributes
                    .iter()
                    .any(|(k, v)| k.contains(MARKER) || v.contains(MARKER)))
            .collect::<Vec<_>>()
    );
}
