//! Trusted documents: only the operations in the manifest run (`enforce`), or everything runs and
//! the unknown ones are counted (`log`); refusals happen before any database work; the manifest
//! is replaced without a restart; a bad manifest stops start-up naming the file and the entry;
//! an operation listed for some roles is refused for the others.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rowguard::server::Application;
use rowguard::settings::TrustMode;
use rowguard_tests::TestDb;
use rowguard_tests::app::{GraphqlReply, TestApp, operation};
use rowguard_tests::fixtures::{admit, assign, enroll_at};
use rowguard_tests::issuer::TestIssuer;
use serde_json::{Value, json};

fn operations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("operations")
}

/// The committed manifest of `tests/operations`.
fn committed_manifest() -> PathBuf {
    operations_dir().join("manifest.json")
}

fn manifest_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(committed_manifest()).expect("manifest"))
        .expect("manifest is JSON")
}

fn id_of(name: &str) -> String {
    manifest_json()["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .find(|o| o["name"] == name)
        .and_then(|o| o["id"].as_str())
        .unwrap_or_else(|| panic!("{name} is in the manifest"))
        .to_owned()
}

/// A copy of `manifest` in a file of its own (so a spec may change it).
fn manifest_file(manifest: &Value) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("rowguard-manifest-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, serde_json::to_vec_pretty(manifest).expect("json")).expect("write");
    path
}

struct World {
    t: TestDb,
    issuer: TestIssuer,
    app: TestApp,
    alice: String,
    carol: String,
}

impl World {
    async fn new(mode: TrustMode, manifest: &Path, introspection: bool) -> World {
        let t = TestDb::new().await;
        let issuer = TestIssuer::start().await;
        let owner = t.owner().await;
        let alice = enroll_at(&owner, issuer.url(), "alice").await;
        enroll_at(&owner, issuer.url(), "carol").await;
        let p = admit(&owner, "T-1").await;
        assign(&owner, &alice, p).await;
        let manifest = manifest.to_path_buf();
        let app = TestApp::start_adjusted(&t, &issuer, |s| {
            s.api.trusted_documents = Some(manifest);
            s.api.trusted_documents_mode = mode;
            s.api.introspection = introspection;
        })
        .await;
        app.wait_for_keys().await;
        let alice = issuer.token("alice").mint();
        let carol = issuer.token("carol").roles(&["coordinator"]).mint();
        World {
            t,
            issuer,
            app,
            alice,
            carol,
        }
    }

    async fn post(&self, token: &str, body: Value) -> GraphqlReply {
        let reply = self
            .app
            .http
            .post(self.app.url("/graphql"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("reply");
        GraphqlReply::from(reply).await
    }

    async fn get(&self, token: &str, query: &[(&str, String)]) -> GraphqlReply {
        let reply = self
            .app
            .http
            .get(self.app.url("/graphql"))
            .bearer_auth(token)
            .query(query)
            .send()
            .await
            .expect("reply");
        GraphqlReply::from(reply).await
    }

    fn statements(&self) -> u64 {
        self.app.db.statements_executed()
    }

    async fn metric(&self, line_start: &str) -> f64 {
        self.app.metric(line_start).await
    }
}

const UNLISTED: &str =
    "query Unlisted { patients(first: 5) { edges { node { id mrn givenName } } } }";

fn persisted(id: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": id } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_mode_refuses_a_document_not_in_the_manifest_before_any_database_work() {
    let w = World::new(TrustMode::Enforce, &committed_manifest(), false).await;
    let before = w.statements();
    let by_post = w
        .post(
            &w.alice,
            json!({ "query": UNLISTED, "operationName": "Unlisted" }),
        )
        .await;
    let by_get = w.get(&w.alice, &[("query", UNLISTED.to_owned())]).await;
    for reply in [&by_post, &by_get] {
        assert_eq!(reply.status, 403, "{:?}", reply.body);
        assert_eq!(reply.code(), Some("QUERY_NOT_IN_SAFELIST"));
        assert_eq!(reply.data(), &Value::Null);
        assert!(!reply.body.to_string().contains("T-1"));
    }
    assert_eq!(w.statements(), before, "a refused document ran SQL");
    assert_eq!(
        w.metric("rowguard_graphql_untrusted_operations_total{reason=\"enforce\"} ")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_mode_refuses_an_unknown_persisted_query_id() {
    let w = World::new(TrustMode::Enforce, &committed_manifest(), false).await;
    let unknown = "0".repeat(64);
    let before = w.statements();
    let by_post = w
        .post(&w.alice, json!({ "extensions": persisted(&unknown) }))
        .await;
    let by_get = w
        .get(&w.alice, &[("extensions", persisted(&unknown).to_string())])
        .await;
    for reply in [&by_post, &by_get] {
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        assert_eq!(reply.code(), Some("PERSISTED_QUERY_NOT_IN_LIST"));
    }
    // An APQ registration of an unlisted document is refused too, so the id stays unknown.
    let hash = rowguard::graphql::documents::query_hash(UNLISTED);
    let register = w
        .post(
            &w.alice,
            json!({ "query": UNLISTED, "extensions": persisted(&hash) }),
        )
        .await;
    assert_eq!(register.code(), Some("QUERY_NOT_IN_SAFELIST"));
    let again = w
        .post(&w.alice, json!({ "extensions": persisted(&hash) }))
        .await;
    assert_eq!(again.code(), Some("PERSISTED_QUERY_NOT_IN_LIST"));
    assert_eq!(w.statements(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_mode_runs_listed_operations_by_id_and_by_body_in_any_formatting() {
    let w = World::new(TrustMode::Enforce, &committed_manifest(), false).await;
    let by_id = w
        .post(
            &w.alice,
            json!({ "operationName": "MyPatients", "variables": { "first": 5 }, "extensions": persisted(&id_of("MyPatients")) }),
        )
        .await;
    assert_eq!(by_id.status, 200, "{:?}", by_id.body);
    assert_eq!(by_id.data()["patients"]["edges"][0]["node"]["mrn"], "T-1");

    let by_get = w
        .get(
            &w.alice,
            &[
                ("operationName", "Me".to_owned()),
                ("extensions", persisted(&id_of("Me")).to_string()),
            ],
        )
        .await;
    assert_eq!(by_get.status, 200, "{:?}", by_get.body);
    assert!(by_get.data()["me"]["id"].is_string());

    // The file's text, reformatted and with a comment: still the listed document.
    let reformatted = format!(
        "# my patients\n{}",
        operation("MyPatients")
            .replace('\n', " ")
            .replace("  ", " ")
    );
    let by_body = w
        .post(
            &w.alice,
            json!({ "query": reformatted, "operationName": "MyPatients" }),
        )
        .await;
    assert_eq!(by_body.status, 200, "{:?}", by_body.body);
    assert_eq!(by_body.data()["patients"]["edges"][0]["node"]["mrn"], "T-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_mode_serves_unknown_operations_and_counts_them() {
    let w = World::new(TrustMode::Log, &committed_manifest(), false).await;
    let reply = w
        .post(
            &w.alice,
            json!({ "query": UNLISTED, "operationName": "Unlisted" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.data()["patients"]["edges"][0]["node"]["mrn"], "T-1");
    let listed = w.app.operation(&w.alice, "Me", json!({})).await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        w.metric("rowguard_graphql_untrusted_operations_total{reason=\"log\"} ")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_manifest_takes_effect_without_a_restart() {
    let mut manifest = manifest_json();
    let all = manifest["operations"]
        .as_array()
        .expect("operations")
        .clone();
    manifest["operations"] = json!(all.iter().filter(|o| o["name"] != "Me").collect::<Vec<_>>());
    let path = manifest_file(&manifest);
    let w = World::new(TrustMode::Enforce, &path, false).await;
    let refused = w.app.operation(&w.alice, "Me", json!({})).await;
    assert_eq!(refused.code(), Some("QUERY_NOT_IN_SAFELIST"));

    manifest["operations"] = json!(all);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("json")).expect("write");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = w.app.operation(&w.alice, "Me", json!({})).await;
        if reply.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new manifest never took effect: {:?}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken file does not replace the manifest in force.
    std::fs::write(&path, b"{ not json").expect("write");
    let reloads = "rowguard_trusted_documents_reloads_total{reason=\"refused\"} ";
    let deadline = Instant::now() + Duration::from_secs(15);
    while w.metric(reloads).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the broken manifest was never read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still = w.app.operation(&w.alice, "Me", json!({})).await;
    assert_eq!(still.status, 200, "{:?}", still.body);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_manifest_is_refused_at_start_up_naming_the_file_and_the_entry() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let good = manifest_json()["operations"][0].clone();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "format": "apollo-persisted-query-manifest", "version": 1, "operations": [good.clone(), { "id": "x1", "name": "Leak", "type": "query", "body": "query Leak { patients { edges { node { ssn } } } }" }] }),
            "operations[1] (\"Leak\")",
        ),
        (
            json!({ "format": "apollo-persisted-query-manifest", "version": 1, "operations": [good.clone(), { "id": "x2", "name": "Other", "type": "query", "body": "query Me { me { id } }" }] }),
            "operations[1] (\"Other\")",
        ),
        (
            json!({ "format": "apollo-persisted-query-manifest", "version": 1, "operations": [good.clone(), good.clone()] }),
            "is listed twice",
        ),
        // The same document twice, formatted apart, with different roles: which list applied
        // to a client sending the text depended on the order of the file.
        (
            json!({ "format": "apollo-persisted-query-manifest", "version": 1, "operations": [
                { "id": "a1", "name": "Me", "type": "query", "body": "query Me { me { id } }", "roles": ["coordinator"] },
                { "id": "a2", "name": "Me", "type": "query", "body": "query Me {\n  me {\n    id\n  }\n}" }] }),
            "the same document with different roles",
        ),
        (
            json!({ "format": "something-else", "version": 1, "operations": [] }),
            "format must be",
        ),
    ];
    for (manifest, expected) in cases {
        let path = manifest_file(&manifest);
        let audit = rowguard_tests::app::TestAudit::new();
        let mut settings = rowguard_tests::app::serve_settings(&t, &issuer, &audit);
        settings.api.trusted_documents = Some(path.clone());
        let error = Application::build(&settings)
            .await
            .err()
            .unwrap_or_else(|| panic!("started with {manifest}"))
            .to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains(expected), "{error}");
        let _ = std::fs::remove_file(&path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_restricted_operation_is_refused_for_other_roles_before_the_database() {
    let w = World::new(TrustMode::Enforce, &committed_manifest(), false).await;
    let input =
        json!({ "input": { "issuer": w.issuer.url(), "subject": "dora", "displayName": "Dora" } });
    let before = w.statements();
    let by_clinician = w
        .app
        .operation(&w.alice, "EnrollClinician", input.clone())
        .await;
    assert_eq!(by_clinician.status, 403, "{:?}", by_clinician.body);
    assert_eq!(by_clinician.code(), Some("FORBIDDEN"));
    assert_eq!(w.statements(), before, "a refused operation ran SQL");
    let by_coordinator = w.app.operation(&w.carol, "EnrollClinician", input).await;
    assert_eq!(by_coordinator.status, 200, "{:?}", by_coordinator.body);
    assert_eq!(
        by_coordinator.data()["enrollClinician"]["displayName"],
        "Dora"
    );
    let admin = w.t.admin().await;
    let enrolled = crate::support::query_count(
        &admin,
        "select count(*) as value from rowguard.clinicians where oidc_subject = 'dora'",
    )
    .await
    .expect("count");
    assert_eq!(enrolled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_keeps_its_own_setting_under_enforce() {
    let query = json!({ "query": "{ __schema { queryType { name } } }" });
    let on = World::new(TrustMode::Enforce, &committed_manifest(), true).await;
    let reply = on.post(&on.alice, query.clone()).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.data()["__schema"]["queryType"]["name"], "Query");
    let off = World::new(TrustMode::Enforce, &committed_manifest(), false).await;
    let refused = off.post(&off.alice, query).await;
    assert_ne!(refused.status, 200);
    assert!(refused.data().is_null());
}

#[test]
fn the_committed_manifest_is_the_one_generated_from_tests_operations() {
    let generated = rowguard::trusted::generate::manifest_of(&operations_dir()).expect("generates");
    let mut text = serde_json::to_string_pretty(&generated).expect("json");
    text.push('\n');
    if std::env::var("UPDATE_SCHEMA").as_deref() == Ok("1") {
        std::fs::write(committed_manifest(), &text).expect("rewrite");
        return;
    }
    let committed = std::fs::read_to_string(committed_manifest()).expect("committed");
    assert!(
        committed == text,
        "tests/operations/manifest.json is stale: run `cargo run -- operations manifest tests/operations --out tests/operations/manifest.json`"
    );
}

#[test]
fn generating_a_manifest_refuses_a_document_the_schema_does_not_have() {
    let dir = std::env::temp_dir().join(format!("rowguard-ops-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Leak.graphql"),
        "query Leak { patients { edges { node { ssn } } } }",
    )
    .expect("write");
    let error = rowguard::trusted::generate::manifest_of(&dir).expect_err("refused");
    assert!(error.contains("ssn"), "{error}");
    assert!(error.contains("Leak.graphql"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_misspelt_roles_line_is_refused_not_read_as_open_to_every_role() {
    // A review: `# Roles: coordinator` and `#  roles : coordinator` gave entries with no roles
    // (every role may run them), exit 0; `# roles: coordinators` was written and then refused
    // by `serve` at start-up.
    for (line, expected) in [
        ("# Roles: coordinator", "not a roles line"),
        ("#  roles : coordinator", "not a roles line"),
        ("# role: coordinator", "not a roles line"),
        // The review of the fix: other spellings that still failed open.
        ("# roles= coordinator", "not a roles line"),
        ("# roles coordinator", "not a roles line"),
        ("# rolse: coordinator", "not a roles line"),
        ("# ROLE(S): coordinator", "not a roles line"),
        ("# allowed roles: coordinator", "not a roles line"),
        ("# roles\u{ff1a}coordinator", "not a roles line"),
        ("#\u{a0}Roles: coordinator", "not a roles line"),
        ("# roles: coordinators", "unknown role \"coordinators\""),
        ("# roles:", "names no role"),
        ("# roles: auditor\n# roles: coordinator", "more than one"),
    ] {
        let dir = std::env::temp_dir().join(format!("rowguard-ops-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("Assign.graphql"),
            format!("{line}\nquery Directory {{ clinicians {{ id }} }}\n"),
        )
        .expect("write");
        let error = rowguard::trusted::generate::manifest_of(&dir)
            .map(|m| format!("accepted: {:?}", m.operations[0].roles))
            .expect_err(line);
        assert!(error.contains(expected), "{line}: {error}");
        assert!(error.contains("Assign.graphql"), "{line}: {error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_roles_line_restricts_its_file_and_other_comments_are_left_alone() {
    let dir = std::env::temp_dir().join(format!("rowguard-ops-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Directory.graphql"),
        "# Only coordinators and auditors page the directory.\n\
         # roles: coordinator, auditor\nquery Directory { clinicians { id } }\n",
    )
    .expect("write");
    let manifest = rowguard::trusted::generate::manifest_of(&dir).expect("generates");
    assert_eq!(
        manifest.operations[0].roles,
        Some(vec!["coordinator".to_owned(), "auditor".to_owned()])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apollo_client_with_a_persisted_query_list_runs_against_enforce_mode() {
    let w = World::new(TrustMode::Enforce, &committed_manifest(), false).await;
    let script = rowguard_tests::browser::client_script("persisted-query-list.mjs");
    let output = std::process::Command::new("node")
        .arg(&script)
        .arg(w.app.url("/graphql"))
        .arg(committed_manifest())
        .arg(operations_dir().join("Me.graphql"))
        .arg(operations_dir().join("MyPatients.graphql"))
        .env("ROWGUARD_TOKEN", &w.alice)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let me = &lines[0];
    assert_eq!(me["name"], "Me");
    assert!(me["data"]["me"]["id"].is_string(), "{me}");
    let patients = &lines[1];
    assert_eq!(
        patients["data"]["patients"]["edges"][0]["node"]["mrn"], "T-1",
        "{patients}"
    );
    let sent = lines[2]["sent"].as_array().expect("sent");
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0]["id"], id_of("Me"));
    assert_eq!(sent[1]["id"], id_of("MyPatients"));
    assert!(
        sent.iter().all(|s| s["hasQuery"] == false),
        "query text went over the wire: {sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_manifest_of_a_running_server() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    enroll_at(&owner, issuer.url(), "alice").await;
    // Me's entry under another id of the same length: the file changes in content only.
    let mut manifest = manifest_json();
    let real = id_of("Me");
    let stand_in = "f".repeat(real.len());
    for op in manifest["operations"].as_array_mut().expect("operations") {
        if op["name"] == "Me" {
            op["id"] = json!(stand_in);
        }
    }
    let path = manifest_file(&manifest);
    let port = rowguard::dev::postgres::free_port().expect("port");
    let server = rowguard_tests::process::StopOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_rowguard-cli"))
            .arg("serve")
            .env("DATABASE_URL", t.gateway_url())
            .env("ROWGUARD_ROLE_PREFIX", "rgtest")
            .env("ROWGUARD_OIDC_ISSUER", issuer.url())
            .env(
                "ROWGUARD_OIDC_AUDIENCES",
                rowguard_tests::issuer::SPA_CLIENT_ID,
            )
            .env("ROWGUARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("ROWGUARD_METRICS_LISTEN", "127.0.0.1:0")
            .env("ROWGUARD_TRUSTED_DOCUMENTS", &path)
            .env("ROWGUARD_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("rowguard serve"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert!(rowguard_tests::process::ready_within(&http, &base, Duration::from_secs(30)).await);
    let token = issuer.token("alice").mint();
    let by_real_id = || async {
        let reply = http
            .post(format!("{base}/graphql"))
            .bearer_auth(&token)
            .json(&json!({ "operationName": "Me", "extensions": persisted(&real) }))
            .send()
            .await
            .expect("reply");
        GraphqlReply::from(reply).await
    };
    assert_eq!(
        by_real_id().await.code(),
        Some("PERSISTED_QUERY_NOT_IN_LIST")
    );

    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replace(&stand_in, &real);
    std::fs::write(&path, text).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(modified))
        .expect("restore mtime");
    // Size and time unchanged, so only the signal tells the server to look again.
    rowguard_tests::process::signal(&server.0, rowguard_tests::process::Signal::SIGHUP)
        .expect("SIGHUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = by_real_id().await;
        if reply.status == 200 {
            assert!(reply.data()["me"]["id"].is_string(), "{:?}", reply.body);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload: {:?}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);
    let _ = std::fs::remove_file(&path);
}
