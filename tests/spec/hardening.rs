//! The adversarial review's findings, each tried the way the reviewer tried it: query limits
//! bypassed through fragments, unbatched nesting, unbounded requests, one person holding every
//! connection, writes from a query, a rolled-back mutation answering data, metrics on the API
//! port, and loopback decided by looking at a name.

use std::time::{Duration, Instant};

use rowguard::db::{AccessMode, RequestIds};
use rowguard::graphql::{RequestBudget, RequestDb};
use rowguard::settings::DatabaseSettings;
use rowguard::settings::ServeSettings;
use rowguard_tests::app::{GraphqlReply, TestApp};
use rowguard_tests::fixtures::{Person, admit, assign, enroll_at, lock_patients};
use rowguard_tests::issuer::TestIssuer;
use rowguard_tests::{TestDb, test_roles};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{
    INSUFFICIENT_PRIVILEGE, READ_ONLY_TRANSACTION, execute, query_count, sqlstate,
};

/// alice (clinician) with A-0..A-2, bob (clinician) with B-0, carol a coordinator.
struct World {
    t: TestDb,
    issuer: TestIssuer,
    app: TestApp,
    alice: Person,
    owner: DatabaseConnection,
    a: Vec<Uuid>,
}

impl World {
    async fn new(adjust: impl FnOnce(&mut ServeSettings)) -> World {
        let t = TestDb::new().await;
        let issuer = TestIssuer::start().await;
        let owner = t.owner().await;
        let alice = enroll_at(&owner, issuer.url(), "alice").await;
        let bob = enroll_at(&owner, issuer.url(), "bob").await;
        enroll_at(&owner, issuer.url(), "carol").await;
        let mut a = Vec::new();
        for i in 0..3 {
            let p = admit(&owner, &format!("A-{i}")).await;
            assign(&owner, &alice, p).await;
            a.push(p);
        }
        let b = admit(&owner, "B-0").await;
        assign(&owner, &bob, b).await;
        let app = TestApp::start_adjusted(&t, &issuer, adjust).await;
        app.wait_for_keys().await;
        World {
            t,
            issuer,
            app,
            alice,
            owner,
            a,
        }
    }

    fn token(&self, subject: &str, role: &str) -> String {
        self.issuer.token(subject).roles(&[role]).mint()
    }

    async fn ask(&self, token: &str, query: &str) -> GraphqlReply {
        self.app.graphql(Some(token), query, json!({})).await
    }
}

fn refused_as_bad_input(reply: &GraphqlReply, about: &str) {
    assert_eq!(
        (reply.status, reply.code()),
        (400, Some("BAD_USER_INPUT")),
        "{}",
        reply.body
    );
    let message = reply.body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains(about),
        "{message:?} should mention {about:?}"
    );
    assert!(reply.data().is_null(), "no data: {}", reply.body);
}

// Query limits ------------------------------------------------------------------------------------

#[tokio::test]
async fn the_reviewers_amplification_query_is_refused_before_any_database_work() {
    let w = World::new(|_| {}).await;
    let inner = "patients(first:100){edges{node{careTeam{clinician{patients(first:100){edges{node{careTeam{clinician{id}}}}}}}}}}";
    let aliases: Vec<String> = (0..30).map(|i| format!("a{i}: {inner}")).collect();
    let query = format!(
        "query Amp {{ ...F }} fragment F on Query {{ {} }}",
        aliases.join(" ")
    );
    let before = w.app.db.statements_executed();
    let reply = w.ask(&w.token("carol", "coordinator"), &query).await;
    refused_as_bad_input(&reply, "records");
    assert_eq!(
        w.app.db.statements_executed(),
        before,
        "refused before any statement ran"
    );
}

#[tokio::test]
async fn an_audit_report_aliased_side_by_side_is_refused_before_any_database_work() {
    // The second review's finding: 20 copies of a patient's FHIR bundle in one operation each
    // loaded up to 10,000 events, at a cost of 0 (a text field), for seconds of CPU and
    // hundreds of MB per request.
    let w = World::new(|_| {}).await;
    let dave = w.token("dave", "auditor");
    let patient = w.a[0];
    for field in [
        "patientAccessFhirBundle",
        "patientAccessReport { occurredAt }",
    ] {
        let name = field.split(' ').next().unwrap_or_default();
        let copies: Vec<String> = (0..20)
            .map(|i| {
                format!(
                    "r{i}: {}",
                    field.replacen(name, &format!("{name}(patientId: \"{patient}\")"), 1)
                )
            })
            .collect();
        let before = w.app.db.statements_executed();
        let reply = w.ask(&dave, &format!("{{ {} }}", copies.join(" "))).await;
        refused_as_bad_input(&reply, "only once");
        assert_eq!(
            w.app.db.statements_executed(),
            before,
            "refused before any statement ran"
        );
    }
    let one = w
        .ask(
            &dave,
            &format!("{{ patientAccessFhirBundle(patientId: \"{patient}\") }}"),
        )
        .await;
    assert_eq!(one.status, 200, "{}", one.body);
}

#[tokio::test]
async fn the_directory_aliased_side_by_side_is_refused() {
    // Before: 20 aliased copies of the directory (up to 1,000 entries each) ran, costed 20.
    let w = World::new(|_| {}).await;
    let copies: Vec<String> = (0..20)
        .map(|i| format!("c{i}: clinicians {{ id displayName active }}"))
        .collect();
    let carol = w.token("carol", "coordinator");
    refused_as_bad_input(
        &w.ask(&carol, &format!("{{ {} }}", copies.join(" "))).await,
        "only once",
    );
    let once = w
        .ask(&carol, "{ clinicians { id displayName active } }")
        .await;
    assert_eq!(once.status, 200, "{}", once.body);
}

#[tokio::test]
async fn every_entry_of_a_list_counts_even_when_it_selects_only_scalars() {
    // Before: a list whose entries select only scalars cost 1 however many it returned, so
    // the directory passed a limit of 100 records.
    let w = World::new(|s| s.api.max_complexity = 100).await;
    let carol = w.token("carol", "coordinator");
    refused_as_bad_input(
        &w.ask(&carol, "{ clinicians { id displayName active } }")
            .await,
        "records",
    );
    let team = w
        .ask(
            &carol,
            &format!(
                "{{ patient(id: \"{}\") {{ careTeam {{ careRole }} }} }}",
                w.a[0]
            ),
        )
        .await;
    assert_eq!(
        team.status, 200,
        "a care team costs its 10 members: {}",
        team.body
    );
}

#[tokio::test]
async fn root_fields_spread_from_a_fragment_count_against_the_root_field_limit() {
    let w = World::new(|_| {}).await;
    let fields: Vec<String> = (0..25).map(|i| format!("m{i}: me {{ id }}")).collect();
    let query = format!(
        "query Wide {{ ...F }} fragment F on Query {{ {} }}",
        fields.join(" ")
    );
    refused_as_bad_input(
        &w.ask(&w.token("alice", "clinician"), &query).await,
        "root fields",
    );
}

#[tokio::test]
async fn aliases_inside_a_fragment_count_each_time_it_is_spread() {
    let w = World::new(|_| {}).await;
    let aliases: Vec<String> = (0..10).map(|i| format!("x{i}: id")).collect();
    let query = format!(
        "{{ me {{ ...F }} again: me {{ ...F }} more: me {{ ...F }} }} fragment F on Clinician {{ {} }}",
        aliases.join(" ")
    );
    refused_as_bad_input(
        &w.ask(&w.token("alice", "clinician"), &query).await,
        "aliases",
    );
}

#[tokio::test]
async fn nested_lists_are_costed_by_their_first() {
    let w = World::new(|_| {}).await;
    let nested = |n: u32| {
        format!(
            "{{ patients(first: {n}) {{ edges {{ node {{ careTeam {{ clinician {{ patients(first: {n}) {{ edges {{ node {{ id }} }} }} }} }} }} }} }} }}"
        )
    };
    let carol = w.token("carol", "coordinator");
    refused_as_bad_input(&w.ask(&carol, &nested(100)).await, "records");
    let small = w.ask(&carol, &nested(2)).await;
    assert_eq!(small.status, 200, "{}", small.body);
}

/// Fragments that each spread the next twice, ending in `leaf`: 2^40 selections if expanded.
fn fragment_bomb(on: &str, leaf: &str) -> String {
    let mut fragments = format!("fragment F40 on {on} {{ {leaf} }}");
    for level in (0..40).rev() {
        fragments.push_str(&format!(
            " fragment F{level} on {on} {{ ...F{next} ...F{next} }}",
            next = level + 1
        ));
    }
    fragments
}

#[tokio::test]
async fn a_fragment_bomb_of_typename_is_refused_before_it_is_expanded() {
    let w = World::new(|_| {}).await;
    let query = format!("{{ ...F0 }} {}", fragment_bomb("Query", "__typename"));
    let reply = w.ask(&w.token("alice", "clinician"), &query).await;
    refused_as_bad_input(&reply, "selections");
    let after = w.ask(&w.token("alice", "clinician"), "{ me { id } }").await;
    assert_eq!(
        after.status, 200,
        "the gateway still answers: {}",
        after.body
    );
}

#[tokio::test]
async fn a_fragment_bomb_in_an_operation_that_is_not_run_is_refused() {
    // The engine validates every operation of the document, fragments expanded, before it runs
    // the one named: the bomb need not be in that one.
    let w = World::new(|_| {}).await;
    let query = format!(
        "query A {{ me {{ id }} }} query B {{ ...F0 }} {}",
        fragment_bomb("Query", "__typename")
    );
    let sent = w
        .app
        .http
        .post(w.app.url("/graphql"))
        .bearer_auth(w.token("alice", "clinician"))
        .json(&json!({ "query": query, "operationName": "A" }))
        .send()
        .await
        .expect("the gateway answers");
    refused_as_bad_input(&GraphqlReply::from(sent).await, "selections");
}

#[tokio::test]
async fn a_page_size_built_from_a_repeated_list_variable_is_refused_without_copying_it() {
    // `first: [$v $v ...]` with `$v` a long list by default: copying `$v` at every use while
    // costing the request would build 400 million values (tens of GB) from 100 KB of text.
    let w = World::new(|_| {}).await;
    let query = format!(
        "query($v: Int = [{}]) {{ patients(first: [{}]) {{ edges {{ cursor }} }} }}",
        vec!["0"; 20_000].join(" "),
        vec!["$v"; 20_000].join(" ")
    );
    let reply = w.ask(&w.token("alice", "clinician"), &query).await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, Some("BAD_USER_INPUT")),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn a_repeated_list_variable_given_in_the_request_is_refused_before_validation_copies_it() {
    // The engine's argument check copies an argument's value, variables filled in, at every use:
    // 20,000 uses of a 9,000-item list would be 180 million values.
    let w = World::new(|_| {}).await;
    let query = format!(
        "query($v: Int) {{ patients(first: [{}]) {{ edges {{ cursor }} }} }}",
        vec!["$v"; 20_000].join(" ")
    );
    let reply = w
        .app
        .graphql(
            Some(&w.token("alice", "clinician")),
            &query,
            // Under the request's bound on JSON values (10,000), so it reaches the use count.
            json!({ "v": vec![0; 9_000] }),
        )
        .await;
    // A large value written 20,001 times is refused before its uses are even counted.
    refused_as_bad_input(&reply, "variables $v");
}

#[tokio::test]
async fn a_chain_of_fragments_no_operation_uses_is_refused_before_validation_walks_it() {
    // The engine validates every fragment definition, following spreads once per link (and the
    // field-merge rule once per pair): 20,000 linked fragments take it tens of seconds, or its
    // stack.
    let w = World::new(|_| {}).await;
    let mut query = String::from("{ __typename } fragment f20000 on Query { __typename }");
    for i in 0..20_000 {
        query.push_str(&format!(" fragment f{i} on Query {{ ...f{} }}", i + 1));
    }
    let reply = w.ask(&w.token("alice", "clinician"), &query).await;
    refused_as_bad_input(&reply, "never used");
}

#[tokio::test]
async fn a_fragment_bomb_inside_introspection_is_refused_when_introspection_is_on() {
    let w = World::new(|s| s.api.introspection = true).await;
    let query = format!(
        "{{ __schema {{ ...F0 }} }} {}",
        fragment_bomb("__Schema", "queryType { name }")
    );
    let reply = w.ask(&w.token("alice", "clinician"), &query).await;
    // The bomb's one field, repeated, is refused before its selections are all counted.
    refused_as_bad_input(&reply, "selection");
}

#[tokio::test]
async fn graphiqls_full_introspection_query_runs_when_introspection_is_on() {
    // graphql-js 16's query nests `ofType` nine deep: 15 levels, past the depth limit, which
    // introspection is not measured by.
    let w = World::new(|s| s.api.introspection = true).await;
    let query = include_str!("../../api/src/graphql/testdata/introspection_query.graphql");
    let reply = w.ask(&w.token("alice", "clinician"), query).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.data()["__schema"]["queryType"]["name"],
        "Query",
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn a_page_size_given_as_a_variables_default_is_costed_as_it_runs() {
    let w = World::new(|_| {}).await;
    // Eight pages of 100 patients with their care teams: about 9,600 records, over the 2,000
    // allowed; costed as pages of 20 when the variable's default was not read.
    let pages: Vec<String> = (0..8)
        .map(|i| format!("p{i}: patients(first: $n) {{ edges {{ node {{ careTeam {{ clinician {{ id }} }} }} }} }}"))
        .collect();
    let query = format!("query Pages($n: Int = 100) {{ {} }}", pages.join(" "));
    let carol = w.token("carol", "coordinator");
    let before = w.app.db.statements_executed();
    refused_as_bad_input(&w.ask(&carol, &query).await, "records");
    assert_eq!(
        w.app.db.statements_executed(),
        before,
        "refused before any statement ran"
    );
    // The same operation with the page size given as a variable is costed the same way.
    let given = w
        .app
        .graphql(
            Some(&carol),
            &query.replace("$n: Int = 100", "$n: Int"),
            json!({ "n": 100 }),
        )
        .await;
    refused_as_bad_input(&given, "records");
}

#[tokio::test]
async fn clinician_patients_under_a_list_of_clinicians_costs_one_statement() {
    let w = World::new(|_| {}).await;
    let query = "{ patients(first: 20) { edges { node { careTeam { clinician { patients(first: 5) { edges { node { mrn } } } } } } } } }";
    let carol = w.token("carol", "coordinator");
    let mut costs = Vec::new();
    let mut joined = 0;
    for team_size in [1, 6] {
        // Colleagues with two patients of their own each join A-0's care team.
        while joined < team_size {
            let colleague =
                enroll_at(&w.owner, w.issuer.url(), &format!("colleague-{joined}")).await;
            assign(&w.owner, &colleague, w.a[0]).await;
            for k in 0..2 {
                let own = admit(&w.owner, &format!("C-{joined}-{k}")).await;
                assign(&w.owner, &colleague, own).await;
            }
            joined += 1;
        }
        let before = w.app.db.statements_executed();
        let reply = w.ask(&carol, query).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        costs.push(w.app.db.statements_executed() - before);
    }
    eprintln!(
        "statements for a page whose care teams list 1 and then 6 more clinicians, each with patients: {costs:?}"
    );
    assert_eq!(
        costs[0], costs[1],
        "nesting under more clinicians costs no more statements"
    );
}

// The request's budget ---------------------------------------------------------------------------

#[tokio::test]
async fn a_request_over_its_statement_budget_is_stopped_and_answers_no_data() {
    let w = World::new(|s| s.api.max_statements = 2).await;
    let roots: Vec<String> =
        w.a.iter()
            .enumerate()
            .map(|(i, id)| format!("p{i}: patient(id: \"{id}\") {{ mrn }}"))
            .collect();
    let reply = w
        .ask(
            &w.token("alice", "clinician"),
            &format!("{{ {} }}", roots.join(" ")),
        )
        .await;
    refused_as_bad_input(&reply, "database statements");
}

#[tokio::test]
async fn an_answer_over_the_byte_limit_is_refused() {
    let w = World::new(|s| s.api.max_response_bytes = 4096).await;
    execute(
        &w.t.admin().await,
        "update rowguard.patients set clinical_notes = repeat('n', 6000) where mrn = 'A-0'",
        [],
    )
    .await
    .expect("long notes");
    let reply = w
        .app
        .operation(
            &w.token("alice", "clinician"),
            "PatientDetail",
            json!({ "id": w.a[0] }),
        )
        .await;
    refused_as_bad_input(&reply, "larger than 4096 bytes");
    let small = w
        .app
        .operation(
            &w.token("alice", "clinician"),
            "PatientDetail",
            json!({ "id": w.a[1] }),
        )
        .await;
    assert_eq!(small.status, 200, "{}", small.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_cancelled_with_its_transaction() {
    let w = World::new(|s| s.api.request_timeout_ms = 400).await;
    let admin = w.t.admin().await;
    let lock = lock_patients(&admin).await;
    let started = Instant::now();
    let reply = w
        .app
        .operation(&w.token("alice", "clinician"), "MyPatients", json!({}))
        .await;
    let took = started.elapsed();
    assert_eq!(
        (reply.status, reply.code()),
        (503, Some("SERVICE_UNAVAILABLE")),
        "{}",
        reply.body
    );
    assert!(
        took < Duration::from_secs(3),
        "answered after {took:?}; the statement timeout alone is 5 s"
    );
    lock.rollback().await.expect("unlock");
    let stuck = query_count(
        &w.t.admin().await,
        "select count(*) as value from pg_stat_activity \
         where datname = current_database() and usename = 'rgtest_gateway' and application_name = 'rowguard' and (state like 'idle in transaction%' or wait_event_type = 'Lock')",
    )
    .await
    .expect("activity");
    let detail: Vec<String> = w
        .t
        .admin()
        .await
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "select application_name || ' | ' || state || ' | ' || coalesce(wait_event_type, '-') || ' | ' || coalesce(query, '') || ' | xact ' || coalesce((now() - xact_start)::text, '-') as line \
             from pg_stat_activity where datname = current_database() and usename = 'rgtest_gateway'",
        ))
        .await
        .expect("activity")
        .iter()
        .filter_map(|r| r.try_get::<String>("", "line").ok())
        .collect();
    assert_eq!(
        stuck, 0,
        "the cancelled request left no transaction behind: {detail:#?}"
    );
}

// One person, many requests ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_cannot_hold_more_than_their_share_of_requests_in_flight() {
    let w = World::new(|s| s.quota.concurrency = 2).await;
    let admin = w.t.admin().await;
    let lock = lock_patients(&w.t.admin().await).await;
    let alice = w.token("alice", "clinician");
    let mut blocked = Vec::new();
    for _ in 0..2 {
        let (http, url, token) = (w.app.http.clone(), w.app.url("/graphql"), alice.clone());
        blocked.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({ "query": "{ patients { edges { node { mrn } } } }" }))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    // Wait until both are in the database, waiting for the lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while query_count(
        &admin,
        "select count(*) as value from pg_stat_activity where datname = current_database() and usename = 'rgtest_gateway' and application_name = 'rowguard' and wait_event_type = 'Lock'",
    )
    .await
    .expect("activity")
        < 2
    {
        assert!(Instant::now() < deadline, "the first two requests never reached the database");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let third = w
        .app
        .http
        .post(w.app.url("/graphql"))
        .bearer_auth(&alice)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .expect("reply");
    let retry_after = third
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let third = GraphqlReply::from(third).await;
    assert_eq!(
        (third.status, third.code()),
        (429, Some("RATE_LIMITED")),
        "{}",
        third.body
    );
    assert!(retry_after.is_some(), "429 carries Retry-After");

    let bob = w.ask(&w.token("bob", "clinician"), "{ me { id } }").await;
    assert_eq!(
        bob.status, 200,
        "another person is unaffected: {}",
        bob.body
    );

    lock.rollback().await.expect("unlock");
    for request in blocked {
        assert_eq!(request.await.expect("task").expect("reply"), 200);
    }
    let again = w.ask(&alice, "{ me { id } }").await;
    assert_eq!(again.status, 200, "slots free up when requests end");
}

// A query cannot write -----------------------------------------------------------------------------

#[tokio::test]
async fn a_query_cannot_change_a_patient_even_through_a_wrong_resolver_statement() {
    let w = World::new(|_| {}).await;
    let principal = w.alice.clinician();
    // What a query operation's resolvers get, with auditing on (the default).
    let request = RequestDb::new(
        w.app.db.clone(),
        principal.clone(),
        true,
        RequestIds::from(Uuid::new_v4()),
        Some(Default::default()),
        RequestBudget::starting_now(50, 1 << 20, Duration::from_secs(10)),
    );
    let conn = request.conn().await.expect("the query's connection");
    for sql in [
        "update rowguard.patients set clinical_notes = 'changed by a buggy resolver' where id = $1",
        "delete from rowguard.clinicians_patients where patient_id = $1",
    ] {
        conn.execute_unprepared("SAVEPOINT before_write")
            .await
            .expect("savepoint");
        let err = execute(&conn, sql, [w.a[0].into()]).await.expect_err(sql);
        // A query's transaction is read-only (its access is recorded after it commits), and its
        // role holds no write privilege either: the first refusal is the transaction's.
        assert_eq!(sqlstate(err), READ_ONLY_TRANSACTION, "{sql}");
        conn.execute_unprepared("ROLLBACK TO SAVEPOINT before_write")
            .await
            .expect("rollback to savepoint");
    }
    drop(conn);
    // And at the scope level, whatever the caller's role.
    for principal in [w.alice.clinician(), w.alice.coordinator()] {
        let scope = w
            .app
            .db
            .scope(&principal, AccessMode::ReadAndAudit, Uuid::new_v4())
            .await
            .expect("scope");
        let err = execute(
            scope.conn(),
            "update rowguard.patients set given_name = 'X' where id = $1",
            [w.a[0].into()],
        )
        .await
        .expect_err("update");
        assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
    }
}

// A forbidden field does not turn the rest into server errors -----------------------------------------

#[tokio::test]
async fn fields_after_a_forbidden_one_are_refused_with_its_code_not_as_server_errors() {
    // The second review's finding: the forbidden field's statement ends the request's one
    // transaction, and each field after it failed as INTERNAL_SERVER_ERROR (SQLSTATE 25P02),
    // logged as an error.
    let w = World::new(|_| {}).await;
    enroll_at(&w.owner, w.issuer.url(), "dave").await;
    let dave = w.token("dave", "auditor");
    for later in [
        "me { id }",
        "auditEvents(first: 1) { edges { node { id } } }",
    ] {
        let reply = w
            .ask(
                &dave,
                &format!(
                    "{{ patients(first: 1) {{ edges {{ node {{ mrn }} }} }} later: {later} }}"
                ),
            )
            .await;
        assert_eq!(reply.status, 403, "{}", reply.body);
        let errors = reply.body["errors"].as_array().cloned().unwrap_or_default();
        assert_eq!(errors.len(), 2, "{}", reply.body);
        for error in &errors {
            assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{}", reply.body);
        }
        let later_error = errors
            .iter()
            .find(|e| e["path"][0] == "later")
            .expect("an error for the later field");
        assert!(
            later_error["message"]
                .as_str()
                .is_some_and(|m| m.contains("another field of this request failed first")),
            "{later_error}"
        );
    }
}

#[tokio::test]
async fn a_field_that_could_not_run_takes_the_code_of_the_statement_that_failed_not_of_a_bad_argument()
 {
    // The review of the fix: with a malformed id first (refused before any statement), the
    // field after the forbidden one took BAD_USER_INPUT from it.
    let w = World::new(|_| {}).await;
    enroll_at(&w.owner, w.issuer.url(), "dave").await;
    let reply = w
        .ask(
            &w.token("dave", "auditor"),
            "{ x: patient(id: \"zzz\") { id } patients(first: 1) { edges { node { mrn } } } later: me { id } }",
        )
        .await;
    let errors = reply.body["errors"].as_array().cloned().unwrap_or_default();
    let code_of = |field: &str| {
        errors
            .iter()
            .find(|e| e["path"][0] == field)
            .map(|e| e["extensions"]["code"].clone())
    };
    assert_eq!(
        code_of("x"),
        Some(json!("BAD_USER_INPUT")),
        "{}",
        reply.body
    );
    assert_eq!(
        code_of("patients"),
        Some(json!("FORBIDDEN")),
        "{}",
        reply.body
    );
    assert_eq!(code_of("later"), Some(json!("FORBIDDEN")), "{}", reply.body);
}

// A rolled-back mutation answers nothing ------------------------------------------------------------

#[tokio::test]
async fn a_mutation_rolled_back_half_way_returns_no_data() {
    let w = World::new(|_| {}).await;
    let query = "mutation($a: ID!, $b: ID!) { \
                 first: updatePatient(input: { id: $a, expectedVersion: 1, clinicalNotes: \"seen\" }) { mrn clinicalNotes } \
                 second: updatePatient(input: { id: $b, expectedVersion: 1, clinicalNotes: \"seen\" }) { mrn } }";
    let b0: Uuid =
        w.t.admin()
            .await
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "select id from rowguard.patients where mrn = 'B-0'",
            ))
            .await
            .expect("query")
            .expect("row")
            .try_get("", "id")
            .expect("id");
    let reply = w
        .app
        .graphql(
            Some(&w.token("alice", "clinician")),
            query,
            json!({ "a": w.a[0], "b": b0 }),
        )
        .await;
    assert_eq!(reply.code(), Some("NOT_FOUND"), "{}", reply.body);
    assert_eq!(
        reply.data(),
        &Value::Null,
        "the first update was rolled back, so nothing of it is answered: {}",
        reply.body
    );
    assert!(!reply.body.to_string().contains("A-0"));
}

// Metrics --------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_are_not_served_on_the_api_port() {
    let w = World::new(|_| {}).await;
    let on_api = w
        .app
        .http
        .get(w.app.url("/metrics"))
        .send()
        .await
        .expect("reply");
    assert_eq!(on_api.status().as_u16(), 404);
    let apart = w
        .app
        .http
        .get(w.app.metrics_url())
        .send()
        .await
        .expect("reply");
    assert_eq!(apart.status().as_u16(), 200);
}

#[tokio::test]
async fn the_metrics_listener_answers_other_paths_and_methods_with_coded_errors() {
    let w = World::new(|_| {}).await;
    let base = w.app.metrics_url().replace("/metrics", "");
    let unknown = w
        .app
        .http
        .get(format!("{base}/nope"))
        .send()
        .await
        .expect("reply");
    assert_eq!(unknown.status().as_u16(), 404);
    let body: serde_json::Value = unknown.json().await.expect("a JSON body");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{body}"
    );
    let posted = w
        .app
        .http
        .post(w.app.metrics_url())
        .send()
        .await
        .expect("reply");
    assert_eq!(posted.status().as_u16(), 405);
    assert!(posted.headers().get("allow").is_some());
}

// Loopback is an address -----------------------------------------------------------------------------

#[test]
fn a_database_host_that_only_looks_like_loopback_needs_verified_tls() {
    let settings = DatabaseSettings::new(
        "postgres://rowguard_gateway@127.evil.example:5432/rowguard",
        test_roles(),
    );
    assert!(
        settings.check_transport_security().is_err(),
        "127.evil.example is a remote host"
    );
}
