//! Hostile input at the HTTP endpoint: random and mutated documents, bodies, headers and
//! tokens never cause a panic or a 500, and every refusal is a GraphQL error with a code.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rowguard_tests::TestDb;
use rowguard_tests::app::{TestApp, operation};
use rowguard_tests::fixtures::{admit, assign, enroll_at};
use rowguard_tests::issuer::TestIssuer;
use serde_json::{Value, json};

async fn world() -> (TestDb, TestIssuer, TestApp) {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    assign(&owner, &alice, admit(&owner, "A-1").await).await;
    let app = TestApp::start(&t, &issuer).await;
    (t, issuer, app)
}

/// A raw request to throw at the endpoint.
#[derive(Debug, Clone)]
struct Attack {
    content_type: Option<String>,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// Sends `attack` and checks the contract: no 500, and either data or a coded error.
async fn assert_handled(app: &TestApp, attack: &Attack) -> u16 {
    let mut request = app.http.post(app.url("/graphql")).body(attack.body.clone());
    if let Some(content_type) = &attack.content_type {
        request = request.header("content-type", content_type.as_str());
    }
    if let Some(authorization) = &attack.authorization {
        request = request.header("authorization", authorization.as_str());
    }
    let reply = request
        .send()
        .await
        .expect("the server answers (no crash, no dropped connection)");
    let status = reply.status().as_u16();
    let text = reply.text().await.expect("body");
    assert!(status < 500, "status {status} for {attack:?}: {text}");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON for {attack:?}: {text}"));
    if let Some(errors) = body.get("errors").and_then(Value::as_array) {
        for error in errors {
            assert!(
                error["extensions"]["code"].is_string(),
                "an error without a code for {attack:?}: {text}"
            );
        }
    } else {
        assert!(
            body.get("data").is_some(),
            "neither data nor errors for {attack:?}: {text}"
        );
    }
    status
}

fn fragments() -> Vec<&'static str> {
    vec![
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ":",
        "$",
        "...",
        "@include(if: true)",
        "query",
        "mutation",
        "fragment",
        "on",
        "patients",
        "patient",
        "me",
        "careTeam",
        "clinician",
        "edges",
        "node",
        "mrn",
        "clinicalNotes",
        "first: 1",
        "first: -1",
        "first: 99999999999999999999",
        "after: \"x\"",
        "id: \"00000000-0000-0000-0000-000000000000\"",
        "search: \"\\u0000\"",
        "__typename",
        "__schema",
        "a: me",
        "\"\\uD800\"",
        "\u{0}",
        "é",
        "😀",
        "#",
        ",",
        "\n",
        "updatePatient(input: {})",
        "enrollClinician",
        "$x: Int",
        "1e400",
        "true",
        "null",
    ]
}

fn document() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(fragments()), 0..40)
        .prop_map(|parts| parts.join(" "))
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn mutate(text: String, edits: Vec<(usize, u8)>) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    for (at, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match byte % 3 {
            0 => bytes[at] = byte,
            1 => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, byte),
        }
    }
    bytes
}

fn attacks(token: String) -> impl Strategy<Value = Attack> {
    let operations: Vec<String> = [
        "Me",
        "MyPatients",
        "PatientDetail",
        "UpdatePatient",
        "AssignClinician",
    ]
    .iter()
    .map(|name| operation(name))
    .collect();
    let content_type = prop_oneof![
        4 => Just(Some("application/json".to_owned())),
        1 => Just(None),
        1 => Just(Some("text/plain".to_owned())),
        1 => Just(Some("multipart/form-data; boundary=x".to_owned())),
        1 => Just(Some("application/json; charset=latin1".to_owned())),
        1 => Just(Some("application/graphql".to_owned())),
    ];
    let authorization = {
        let valid = format!("Bearer {token}");
        let mutated_token = (prop::collection::vec((any::<usize>(), any::<u8>()), 1..4))
            // Only bytes HTTP allows in a header value: the client could not send others.
            .prop_map(move |edits| {
                let mutated: String = mutate(token.clone(), edits)
                    .into_iter()
                    .map(|b| {
                        if b.is_ascii_graphic() {
                            char::from(b)
                        } else {
                            'x'
                        }
                    })
                    .collect();
                format!("Bearer {mutated}")
            });
        prop_oneof![
            6 => Just(Some(valid)),
            1 => Just(None),
            1 => mutated_token.prop_map(Some),
            1 => "[ -~]{0,40}".prop_map(Some),
        ]
    };
    let body = prop_oneof![
        // Random documents in a well-formed envelope.
        3 => (document(), json_value()).prop_map(|(q, v)| json!({ "query": q, "variables": v }).to_string().into_bytes()),
        // Real client operations, mutated byte by byte.
        3 => (prop::sample::select(operations), prop::collection::vec((any::<usize>(), any::<u8>()), 1..6))
            .prop_map(|(q, edits)| json!({ "query": String::from_utf8_lossy(&mutate(q, edits)), "variables": {} }).to_string().into_bytes()),
        // Random JSON envelopes.
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        // Raw bytes.
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ];
    (content_type, authorization, body).prop_map(|(content_type, authorization, body)| Attack {
        content_type,
        authorization,
        body,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_requests_never_cause_a_500_and_always_get_a_coded_answer() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").times(0, 3000).mint();
    let handle = tokio::runtime::Handle::current();
    let app = std::sync::Arc::new(app);
    let cases = 400;
    let statuses = tokio::task::spawn_blocking({
        let app = app.clone();
        move || {
            let mut runner = TestRunner::new(Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            });
            let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
            runner
                .run(&attacks(token), |attack| {
                    let status = handle.block_on(assert_handled(&app, &attack));
                    *statuses.lock().expect("lock").entry(status).or_default() += 1;
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{e}"));
            statuses.into_inner().expect("statuses")
        }
    })
    .await
    .expect("fuzz task");
    eprintln!(
        "hostile input: {} cases, statuses {statuses:?}",
        statuses.values().sum::<u32>()
    );
    assert_eq!(statuses.values().sum::<u32>(), cases);
}

fn json_attack(token: &str, body: Vec<u8>) -> Attack {
    Attack {
        content_type: Some("application/json".into()),
        authorization: Some(format!("Bearer {token}")),
        body,
    }
}

#[tokio::test]
async fn named_hostile_inputs_get_coded_4xx_answers() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").mint();
    let aliases: Vec<String> = (0..10_000).map(|i| format!("a{i}: me {{ id }}")).collect();
    let mut deep = String::from("__typename");
    for _ in 0..500 {
        deep = format!(
            "me {{ patients {{ edges {{ node {{ careTeam {{ clinician {{ {deep} }} }} }} }} }} }}"
        );
    }
    let cases: Vec<(&str, Attack, u16)> = vec![
        ("10 MB body", json_attack(&token, json!({ "query": "{ me { id } }", "variables": { "x": "y".repeat(10 * 1024 * 1024) } }).to_string().into_bytes()), 413),
        ("10,000 aliases", json_attack(&token, json!({ "query": format!("{{ {} }}", aliases.join(" ")) }).to_string().into_bytes()), 400),
        ("depth 500", json_attack(&token, json!({ "query": format!("{{ {deep} }}") }).to_string().into_bytes()), 400),
        ("invalid UTF-8", json_attack(&token, b"{\"query\": \"{ me { id } }\xff\xfe\"}".to_vec()), 400),
        ("null bytes", json_attack(&token, json!({ "query": "{ me\u{0} { id } }" }).to_string().into_bytes()), 400),
        ("duplicate JSON keys", json_attack(&token, br#"{"query": "{ me { id } }", "query": "{ patients { edges { cursor } } }"}"#.to_vec()), 400),
        ("huge integer", json_attack(&token, br#"{"query": "query($n: Int) { patients(first: $n) { edges { cursor } } }", "variables": {"n": 123456789012345678901234567890}}"#.to_vec()), 400),
        ("wrong content type", Attack { content_type: Some("text/plain".into()), authorization: Some(format!("Bearer {token}")), body: br#"{"query": "{ me { id } }"}"#.to_vec() }, 415),
        ("form content type", Attack { content_type: Some("application/x-www-form-urlencoded".into()), authorization: Some(format!("Bearer {token}")), body: b"query=%7B+me+%7B+id+%7D+%7D".to_vec() }, 415),
        ("100 KB token", Attack { content_type: Some("application/json".into()), authorization: Some(format!("Bearer {}", "a".repeat(100 * 1024))), body: br#"{"query": "{ me { id } }"}"#.to_vec() }, 401),
    ];
    for (name, attack, expected) in cases {
        let status = assert_handled(&app, &attack).await;
        assert_eq!(status, expected, "{name}");
    }
}

/// Documents nested far past any schema, up to the body limit: a recursive parser without a
/// bound would overflow the stack and abort the process, which no panic handler can turn into
/// an answer (the parser in use refuses them at a few thousand levels). Tried against a real
/// `rowguard serve` process, so an abort would show as a dropped connection rather than taking
/// the test run down.
#[tokio::test]
async fn documents_nested_past_the_parsers_depth_are_refused_and_the_gateway_lives_on() {
    use std::process::Stdio;

    let (t, issuer, _app) = world().await;
    let port = rowguard::dev::postgres::free_port().expect("port");
    let mut serve = crate::commands::serve_command(&issuer, &t.gateway_url(), port);
    let _server = rowguard_tests::process::StopOnDrop(
        serve
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rowguard serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    crate::commands::wait_until_ready(&http, &base).await;
    let token = issuer.token("alice").mint();
    let levels = 200_000;
    let documents = [
        (
            "selections",
            format!("{}{}", "{a".repeat(levels), "}".repeat(levels)),
        ),
        (
            "list values",
            format!(
                "{{ patient(id: {}1{}) {{ mrn }} }}",
                "[".repeat(levels),
                "]".repeat(levels)
            ),
        ),
        (
            "object values",
            format!(
                "{{ patient(id: {}1{}) {{ mrn }} }}",
                "{a:".repeat(levels),
                "}".repeat(levels)
            ),
        ),
    ];
    for (what, query) in documents {
        let reply = http
            .post(format!("{base}/graphql"))
            .bearer_auth(&token)
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what} nested {levels} deep: the gateway died ({e})"));
        let status = reply.status().as_u16();
        let body: Value = reply.json().await.expect("JSON");
        assert_eq!(
            (status, body["errors"][0]["extensions"]["code"].as_str()),
            (400, Some("BAD_USER_INPUT")),
            "{what}: {body}"
        );
    }
    let reply = http
        .post(format!("{base}/graphql"))
        .bearer_auth(&token)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .expect("the gateway still answers");
    assert_eq!(reply.status().as_u16(), 200);
}

#[tokio::test]
async fn text_and_dates_the_database_cannot_hold_are_the_callers_mistake() {
    let (t, issuer, app) = world().await;
    enroll_at(&t.owner().await, issuer.url(), "dave").await;
    let clinician = issuer.token("alice").roles(&["clinician"]).mint();
    let auditor = issuer.token("dave").roles(&["auditor"]).mint();
    let search = "query($s: String) { patients(first: 2, search: $s) { edges { cursor } } }";
    let cases = [
        // PostgreSQL cannot store or compare a NUL character.
        (&clinician, search, json!({ "s": "Ja\u{0}ne" })),
        (
            &clinician,
            r#"{ patients(first: 2, search: "Ja\u0000ne") { edges { cursor } } }"#,
            json!({}),
        ),
        // A valid date the database's timestamps cannot reach.
        (
            &auditor,
            r#"{ auditEvents(first: 1, filter: { from: "-200000-01-01T00:00:00Z" }) { edges { cursor } } }"#,
            json!({}),
        ),
    ];
    for (token, query, variables) in cases {
        let reply = app.graphql(Some(token), query, variables.clone()).await;
        assert!(reply.status < 500, "{query} {variables}: {}", reply.body);
        assert_eq!(
            reply.code(),
            Some("BAD_USER_INPUT"),
            "{query} {variables}: {}",
            reply.body
        );
        // The NUL is refused by the gate, before the request's transaction opens.
        if query.contains("patients") {
            assert!(
                reply.body["errors"][0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("NUL")),
                "{}",
                reply.body
            );
        }
    }
}

#[tokio::test]
async fn names_no_one_could_read_and_birth_dates_no_one_could_have_are_refused() {
    // A review: a display name of lone or piled-up combining marks was enrolled (patient names
    // and reasons were already held to it), and a birth date of year 0 stored as 1 BC.
    let (t, issuer, app) = world().await;
    let owner = t.owner().await;
    enroll_at(&owner, issuer.url(), "carol").await;
    let patient = admit(&owner, "A-2").await;
    let alice = enroll_at(&owner, issuer.url(), "alice2").await;
    assign(&owner, &alice, patient).await;
    let coordinator = issuer.token("carol").roles(&["coordinator"]).mint();
    let enroll = "mutation($n: String!) { enrollClinician(input: { issuer: \"https://idp.example.org\", subject: \"new\", displayName: $n }) { id } }";
    let piled = format!("Ann{}", "\u{301}\u{302}\u{303}\u{304}\u{5b0}".repeat(10));
    // Joiners between groups of four marks do not break the pile.
    let joined = format!(
        "Test{}",
        "\u{1ab0}\u{1ab1}\u{1ab2}\u{1ab3}\u{200d}".repeat(6)
    );
    for name in [
        "\u{301}\u{301}",
        "Z\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}",
        // Marks of other scripts pile up just the same, and sit on nothing just the same.
        piled.as_str(),
        joined.as_str(),
        "\u{5b8}Jose",
        "Ann \u{301}",
        // A joiner between Latin letters only hides itself.
        "Ali\u{200d}ce",
        // So does one between Han or Hangul letters, which never need it.
        "王\u{200d}明",
        "김\u{200c}민",
    ] {
        let reply = app
            .graphql(Some(&coordinator), enroll, json!({ "n": name }))
            .await;
        assert_eq!(
            reply.code(),
            Some("BAD_USER_INPUT"),
            "{name:?}: {}",
            reply.body
        );
    }
    let clinician = issuer.token("alice2").roles(&["clinician"]).mint();
    let update = "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { version } }";
    let two_days_ahead = (chrono::Utc::now() + chrono::TimeDelta::days(2))
        .date_naive()
        .to_string();
    for date in ["0000-01-01", "1849-12-31", two_days_ahead.as_str()] {
        let reply = app
            .graphql(
                Some(&clinician),
                update,
                json!({ "i": { "id": patient, "expectedVersion": 1, "birthDate": date } }),
            )
            .await;
        assert_eq!(
            reply.code(),
            Some("BAD_USER_INPUT"),
            "{date}: {}",
            reply.body
        );
    }
    // Real names with their accents and the joiners their scripts spell with (Vietnamese,
    // Sinhala, Persian, decomposed Latin), and a real old birth date, still go through.
    let enroll_as = |subject: &str| {
        format!(
            "mutation($n: String!) {{ enrollClinician(input: {{ issuer: \"https://idp.example.org\", subject: \"{subject}\", displayName: $n }}) {{ id }} }}"
        )
    };
    for (i, name) in [
        "Dr. Lê Thị Hồng",
        "ශ්\u{200d}රී",
        "علی\u{200c}رضا",
        // Malayalam's older chillu spelling: virama and joiner at the end of a word.
        "അര്\u{200d}ജുന്\u{200d} നായര്\u{200d}",
        "葛\u{e0100}飾",
        "Zoe\u{308} Jose\u{301}",
    ]
    .into_iter()
    .enumerate()
    {
        let reply = app
            .graphql(
                Some(&coordinator),
                &enroll_as(&format!("real{i}")),
                json!({ "n": name }),
            )
            .await;
        assert!(
            reply.data()["enrollClinician"]["id"].is_string(),
            "{name:?}: {}",
            reply.body
        );
    }
    let reply = app
        .graphql(
            Some(&clinician),
            update,
            json!({ "i": { "id": patient, "expectedVersion": 1, "birthDate": "1921-03-04" } }),
        )
        .await;
    assert_eq!(
        reply.data()["updatePatient"]["version"],
        2,
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn a_body_declared_twice_or_in_a_coding_the_gateway_does_not_undo_is_refused() {
    // A review: only the first Content-Type and Content-Encoding line was read, so a proxy
    // joining the lines (`identity, gzip`) saw another body than the gateway; `gzip, chunked`
    // was read as if only chunked.
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").roles(&["clinician"]).mint();
    let body = r#"{"query":"{ me { id } }"}"#;
    let cases = [
        (
            format!(
                "Content-Type: application/json\r\nContent-Type: application/json;charset=utf-16\r\nContent-Length: {}\r\n",
                body.len()
            ),
            body.to_owned(),
            "415",
        ),
        (
            format!(
                "Content-Type: application/json\r\nContent-Encoding: identity\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n",
                body.len()
            ),
            body.to_owned(),
            "415",
        ),
        (
            "Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n".to_owned(),
            format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()),
            "501",
        ),
        (
            "Content-Type: application/json\r\nTransfer-Encoding: chunked, chunked\r\n".to_owned(),
            format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()),
            "501",
        ),
    ];
    for (headers, payload, status) in cases {
        let answer = post_raw(
            &app,
            &format!("Authorization: Bearer {token}\r\n{headers}"),
            &payload,
        )
        .await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{headers}: {answer}"
        );
        assert!(answer.contains("BAD_USER_INPUT"), "{headers}: {answer}");
    }
    // Repeated `identity` and empty list elements (RFC 9110 §5.6.1) change nothing.
    for headers in [
        format!(
            "Content-Encoding: identity, identity\r\nContent-Length: {}\r\n",
            body.len()
        ),
        format!(
            "Content-Encoding: ,identity\r\nContent-Length: {}\r\n",
            body.len()
        ),
    ] {
        let answer = post_raw(
            &app,
            &format!(
                "Authorization: Bearer {token}\r\nContent-Type: application/json\r\n{headers}"
            ),
            body,
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{headers}: {answer}");
    }
}

/// The first answer to a POST to `/graphql` written by hand: `headers` (each line ending in
/// CRLF), then `body` as given.
async fn post_raw(app: &TestApp, headers: &str, body: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let request = format!("POST /graphql HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}");
    stream.write_all(request.as_bytes()).await.expect("request");
    first_answer(&mut stream).await.expect("an answer")
}

/// Reads what the server sends on `stream` until it closes the connection (or 40 s pass).
async fn until_closed(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(40),
        stream.read_to_end(&mut received),
    )
    .await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

/// The first HTTP response on `stream`, head and body (`None` if none came within 40 s).
async fn first_answer(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(40);
    let mut received = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return Some(text);
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (!received.is_empty()).then_some(text),
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_body_announced_over_the_limit_is_refused_before_the_client_is_invited_to_send_it() {
    // A review: `Expect: 100-continue` with a Content-Length of 99,999,999 was answered
    // `100 Continue`, then 408 when the request timeout ran out, instead of 413 at once.
    use tokio::io::AsyncWriteExt;
    let (_t, issuer, app) = world().await;
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 99999999\r\nExpect: 100-continue\r\n\r\n",
        issuer.token("alice").mint()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let started = std::time::Instant::now();
    let answer = first_answer(&mut stream).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("BAD_USER_INPUT"), "{answer}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_request_head_is_closed() {
    use tokio::io::AsyncWriteExt;
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let app = TestApp::start_adjusted(&t, &issuer, |s| s.api.request_head_timeout_secs = 2).await;
    let mut silent = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let mut slow = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    slow.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("partial head");
    // Both are cut off after ROWGUARD_REQUEST_HEAD_TIMEOUT_SECS (before: held for ever), not
    // at once and not at hyper's own default (30 s).
    let started = std::time::Instant::now();
    let (silent, slow) = tokio::join!(until_closed(&mut silent), until_closed(&mut slow));
    assert!(silent.is_some(), "a silent connection was kept open");
    assert!(
        slow.is_some(),
        "a connection with half a request head was kept open"
    );
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(1500)
            && waited < std::time::Duration::from_secs(20),
        "closed after {waited:?}, not after the 2 s set"
    );
}

#[tokio::test]
async fn connections_past_the_client_connection_limit_wait_until_one_closes() {
    use tokio::io::AsyncWriteExt;
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let app = TestApp::start_adjusted(&t, &issuer, |s| {
        s.api.max_client_connections = Some(2);
    })
    .await;
    let silent = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let _also_silent = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    // The kernel completes the third handshake; the gateway does not take the connection.
    let mut third = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let waiting = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        first_answer(&mut third),
    )
    .await;
    assert!(
        waiting.is_err(),
        "a third connection was served past a limit of 2: {waiting:?}"
    );
    drop(silent);
    let answer = first_answer(&mut third)
        .await
        .expect("the waiting connection was never served after a slot freed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answers_loses_its_connection() {
    use tokio::io::AsyncWriteExt;
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let app = TestApp::start_adjusted(&t, &issuer, |s| {
        s.api.max_client_connections = Some(1);
        s.api.request_head_timeout_secs = 2;
    })
    .await;
    // A tiny receive window and requests pipelined until the gateway stops taking them: it is
    // then stuck writing answers nobody reads.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(1024).expect("receive buffer");
    let mut stalled = socket.connect(app.addr).await.expect("connect");
    let requests = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    while let Ok(Ok(())) = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        stalled.write_all(&requests),
    )
    .await
    {}
    // The only connection slot is held by it. Before: for as long as the client stayed, so the
    // next client was never served.
    let mut next = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let answer = tokio::time::timeout(std::time::Duration::from_secs(20), first_answer(&mut next))
        .await
        .ok()
        .flatten()
        .expect("the next client was not served while an unread answer held the only slot");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(stalled);
}

/// Rowguard as a process whose open-file limit is `files`, with a pool of 4 connections.
fn serve_with_open_file_limit(
    t: &TestDb,
    issuer: &TestIssuer,
    files: u32,
    port: u16,
    metrics_port: u16,
) -> rowguard_tests::process::StopOnDrop {
    use std::process::{Command, Stdio};
    rowguard_tests::process::StopOnDrop(
        Command::new("prlimit")
            .arg(format!("--nofile={files}:{files}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_rowguard-cli"))
            .arg("serve")
            .env("DATABASE_URL", t.gateway_url())
            .env("ROWGUARD_ROLE_PREFIX", "rgtest")
            .env("ROWGUARD_OIDC_ISSUER", issuer.url())
            .env(
                "ROWGUARD_OIDC_AUDIENCES",
                rowguard_tests::issuer::SPA_CLIENT_ID,
            )
            .env("ROWGUARD_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "ROWGUARD_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("ROWGUARD_DB_MAX_CONNECTIONS", "4")
            .env("ROWGUARD_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prlimit rowguard serve"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_leaves_the_gateway_the_descriptors_it_needs_for_its_database() {
    use rowguard::dev::postgres::free_port;
    use sea_orm::ConnectionTrait;
    use tokio::io::AsyncWriteExt;
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    assign(&owner, &alice, admit(&owner, "A-1").await).await;
    let (port, metrics_port) = (free_port().expect("port"), free_port().expect("port"));
    let _server = serve_with_open_file_limit(&t, &issuer, 128, port, metrics_port);
    let http = reqwest::Client::new();
    assert!(
        rowguard_tests::process::ready_within(
            &http,
            &format!("http://127.0.0.1:{port}"),
            std::time::Duration::from_secs(30)
        )
        .await,
        "serve never became ready"
    );
    let token = issuer.token("alice").mint();
    let body = json!({ "query": "{ patients { edges { node { mrn } } } }" }).to_string();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // A client already connected before the flood, kept alive.
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    client.write_all(request.as_bytes()).await.expect("send");
    let first = first_answer(&mut client).await.expect("an answer");
    assert!(first.contains("A-1"), "{first}");
    // The pool's connections die (a failover, a restart), so the next request needs new ones.
    t.admin()
        .await
        .execute_unprepared(&format!(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where datname = '{}' and application_name = 'rowguard'",
            t.name()
        ))
        .await
        .expect("terminate the gateway's connections");
    // Far more connections than the process has descriptors; each is held open.
    let flood: Vec<_> = futures::future::join_all((0..300).map(|_| {
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
    }))
    .await;
    let held = flood.iter().filter(|c| matches!(c, Ok(Ok(_)))).count();
    assert!(held > 128, "only {held} connections were opened");
    // Past the pool's idle check (1 s), so the dead connections are replaced, not used.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    client.write_all(request.as_bytes()).await.expect("send");
    let answer = first_answer(&mut client).await.expect("an answer");
    // Before: the pool could not open a connection (EMFILE), SERVICE_UNAVAILABLE.
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("A-1"), "{answer}");
    drop(flood);
}

#[tokio::test]
async fn a_body_that_stalls_or_breaks_off_is_answered_without_waiting_for_it() {
    use tokio::io::AsyncWriteExt;
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let app = TestApp::start_adjusted(&t, &issuer, |s| s.api.request_timeout_ms = 500).await;
    app.wait_for_keys().await;
    let token = issuer.token("alice").mint();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"query\":"
    );
    // Stalls: 10 of the 100 bytes announced, and then nothing (before: no answer, ever).
    let mut stalled = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    stalled.write_all(head.as_bytes()).await.expect("send");
    // Breaks off: the same, and the client closes its side (before: "larger than" 413).
    let mut broken = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    broken.write_all(head.as_bytes()).await.expect("send");
    broken.shutdown().await.expect("half-close");
    let (stalled, broken) = tokio::join!(first_answer(&mut stalled), first_answer(&mut broken));
    let stalled = stalled.expect("a stalled body got no answer");
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    assert!(stalled.contains("BAD_USER_INPUT"), "{stalled}");
    let broken = broken.expect("a broken-off body got no answer");
    assert!(broken.starts_with("HTTP/1.1 400"), "{broken}");
    assert!(broken.contains("broke off"), "{broken}");
    assert!(broken.contains("BAD_USER_INPUT"), "{broken}");
}

#[tokio::test]
async fn a_wrong_method_or_path_gets_a_coded_json_error_and_is_not_counted_as_a_success() {
    let (_t, _issuer, app) = world().await;
    let ok_before = app
        .metric("rowguard_graphql_requests_total{operation=\"<unauthenticated>\",code=\"OK\"}")
        .await;
    let put = app
        .http
        .put(app.url("/graphql"))
        .body("{}")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 405);
    assert_eq!(
        put.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST")
    );
    let body: Value = put.json().await.expect("a JSON body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let ok_after = app
        .metric("rowguard_graphql_requests_total{operation=\"<unauthenticated>\",code=\"OK\"}")
        .await;
    assert_eq!(ok_after, ok_before, "a refused PUT was counted as OK");
    assert_eq!(
        app.metric(
            "rowguard_graphql_requests_total{operation=\"<unauthenticated>\",code=\"BAD_USER_INPUT\"}"
        )
        .await,
        1.0
    );

    let missing = app
        .http
        .get(app.url("/graphql/extra"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("a JSON body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn every_refusal_at_the_http_edge_is_coded_options_and_head_included() {
    // A review: any OPTIONS (no Origin, any path) was answered 200 with an empty body as a
    // preflight; HEAD /graphql was advertised in Allow but answered 400; a playground asset
    // that does not exist, or a name that is not UTF-8, got an empty or plain-text answer; and
    // another method on /healthz an empty 405.
    let (_t, _issuer, app) = world().await;
    let coded = |status: u16, code: &'static str| {
        move |response: reqwest::Response| async move {
            assert_eq!(response.status(), status, "{}", response.url());
            let body: Value = response.json().await.expect("a JSON body");
            assert_eq!(body["errors"][0]["extensions"]["code"], code, "{body}");
        }
    };
    let options = |path: &str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url(path))
            .send()
    };
    coded(405, "BAD_USER_INPUT")(options("/graphql").await.expect("options")).await;
    coded(405, "BAD_USER_INPUT")(options("/healthz").await.expect("options")).await;
    coded(404, "NOT_FOUND")(options("/nowhere").await.expect("options")).await;
    coded(405, "BAD_USER_INPUT")(
        app.http
            .post(app.url("/healthz"))
            .send()
            .await
            .expect("post"),
    )
    .await;
    for asset in ["/playground/assets/nope.js", "/playground/assets/%FF%FE"] {
        coded(404, "NOT_FOUND")(app.http.get(app.url(asset)).send().await.expect("asset")).await;
    }
    let head = app
        .http
        .head(app.url("/graphql"))
        .query(&[("query", "{ me { id } }")])
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), 405);
    assert_eq!(
        head.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST")
    );
}
