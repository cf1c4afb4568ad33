//! Behind PgBouncer (three server connections for sixteen concurrent clients): thousands of
//! interleaved reads and mutations from 20 clinicians, each answer checked against that
//! clinician's true patient list.
//!
//! Session mode: sqlx 0.9 names every prepared statement even with the statement cache off, and
//! Debian's PgBouncer 1.18 cannot share named statements between clients in transaction mode
//! (42P05 duplicate prepared statement). Transaction mode needs PgBouncer >= 1.21 with
//! `max_prepared_statements` (see the README).

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use rowguard::config::DatabaseSettings;
use rowguard::db::Database;
use rowguard::graphql::ApiLimits;
use rowguard_tests::app::{GraphqlReply, TestApp, oidc_settings};
use rowguard_tests::fixtures::{admit_many, assign, enroll_at};
use rowguard_tests::issuer::TestIssuer;
use rowguard_tests::pooler::Pooler;
use rowguard_tests::{TestDb, cluster, test_roles};
use serde_json::json;
use uuid::Uuid;

const CLINICIANS: usize = 20;
const REQUESTS: usize = 2000;

struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_pooled_reads_and_mutations_from_twenty_clinicians_never_leak() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let patients = admit_many(&owner, "P", 60).await;
    let mut rng = XorShift(0x0ddb_a11c_e5ee_d001);
    let mut truth: Vec<(String, BTreeSet<Uuid>)> = Vec::new();
    for c in 0..CLINICIANS {
        let subject = format!("clinician-{c}");
        let person = enroll_at(&owner, issuer.url(), &subject).await;
        let mut mine = BTreeSet::new();
        for _ in 0..(3 + c % 5) {
            mine.insert(patients[rng.below(patients.len())]);
        }
        for p in &mine {
            assign(&owner, &person, *p).await;
        }
        truth.push((subject, mine));
    }
    let mrn_of: BTreeMap<Uuid, String> = patients
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, format!("P-{i}")))
        .collect();

    let pooler = Pooler::start(
        cluster().port(),
        t.name(),
        &["rgtest_gateway"],
        3,
        "session",
    );
    let mut settings = DatabaseSettings::new(
        format!(
            "postgres://rgtest_gateway@127.0.0.1:{}/{}",
            pooler.port,
            t.name()
        ),
        test_roles(),
    );
    settings.statement_cache_capacity = 0;
    // In session mode a client connection holds a server connection for its life.
    settings.max_connections = 3;
    let db = Database::connect(&settings)
        .await
        .expect("pool through pgbouncer");
    let app = TestApp::start_on(db, oidc_settings(&issuer), ApiLimits::default(), None).await;
    app.wait_for_keys().await;
    let tokens: Vec<String> = truth
        .iter()
        .map(|(s, _)| issuer.token(s).times(0, 3000).mint())
        .collect();

    let plan: Vec<(usize, usize, bool)> = (0..REQUESTS)
        .map(|_| {
            (
                rng.below(CLINICIANS),
                rng.below(patients.len()),
                rng.below(4) == 0,
            )
        })
        .collect();
    let app = &app;
    let results: Vec<Result<(), String>> = futures::stream::iter(plan)
        .map(|(c, target, mutate)| {
            let token = tokens[c].clone();
            let mine = truth[c].1.clone();
            let target = patients[target];
            let expected: BTreeSet<String> = mine.iter().map(|p| mrn_of[p].clone()).collect();
            async move {
                if !mutate {
                    let reply = app.graphql(Some(&token), "{ patients(first: 100) { edges { node { mrn } } } }", json!({})).await;
                    let seen: BTreeSet<String> = reply.body["data"]["patients"]["edges"]
                        .as_array()
                        .map(|e| e.iter().filter_map(|e| e["node"]["mrn"].as_str().map(str::to_owned)).collect())
                        .unwrap_or_default();
                    return if seen == expected { Ok(()) } else { Err(format!("read: {seen:?} != {expected:?}: {}", reply.body)) };
                }
                // A stale version: visible patients answer CONFLICT (with the current version),
                // invisible ones NOT_FOUND. Then a real update with the current version.
                let update = |version: i64| {
                    json!({ "query": "mutation($id: ID!, $v: Int!) { updatePatient(input: { id: $id, expectedVersion: $v, clinicalNotes: \"pooled\" }) { id version } }",
                            "variables": { "id": target, "v": version } })
                };
                let send = |body: serde_json::Value| {
                    let token = token.clone();
                    async move {
                        GraphqlReply::from(app.http.post(app.url("/graphql")).bearer_auth(token).json(&body).send().await.expect("reply")).await
                    }
                };
                let probe = send(update(0)).await;
                match (mine.contains(&target), probe.code()) {
                    (true, Some("CONFLICT")) => {
                        let message = probe.body["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
                        let current: i64 = message.split("version ").nth(1).and_then(|r| r.split_whitespace().next()?.parse().ok()).unwrap_or(1);
                        let reply = send(update(current)).await;
                        match reply.code() {
                            None if reply.body["data"]["updatePatient"]["id"] == target.to_string() => Ok(()),
                            Some("CONFLICT") => Ok(()), // another clinician on the care team won the race
                            _ => Err(format!("update of own patient: {}", reply.body)),
                        }
                    }
                    (false, Some("NOT_FOUND")) => Ok(()),
                    (visible, code) => Err(format!("probe visible={visible} got {code:?}: {}", probe.body)),
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!(
        "behind pgbouncer (session mode, 3 server connections, 16 clients): checked {} requests from {CLINICIANS} clinicians, {} failures",
        results.len(),
        failures.len()
    );
    assert_eq!(results.len(), REQUESTS);
    assert!(
        failures.is_empty(),
        "{} wrong answers, first: {}",
        failures.len(),
        failures[0]
    );
    drop(pooler);
}
