//! OIDC authentication through Rowguard's real HTTP path: verified tokens become the RLS
//! identity; everything else is refused before a database connection is opened.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use rowguard_tests::TestDb;
use rowguard_tests::app::{GraphqlReply, TestApp, oidc_settings};
use rowguard_tests::fixtures::{admit, assign, enroll_at};
use rowguard_tests::issuer::{TestIssuer, generate_key, shared_key};
use serde_json::{Value, json};

const MY_PATIENTS: &str = "{ patients(first: 100) { edges { node { mrn } } } }";

fn mrns(reply: &GraphqlReply) -> BTreeSet<String> {
    reply.data()["patients"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no patient list in {}", reply.body))
        .iter()
        .map(|e| e["node"]["mrn"].as_str().expect("mrn").to_owned())
        .collect()
}

/// An issuer, a gateway trusting it, and alice (a clinician with patients A-1 and A-2).
async fn world() -> (TestDb, TestIssuer, TestApp) {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    for mrn in ["A-1", "A-2"] {
        let p = admit(&owner, mrn).await;
        assign(&owner, &alice, p).await;
    }
    let app = TestApp::start(&t, &issuer).await;
    (t, issuer, app)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn valid_id_token_runs_as_the_mapped_clinician() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").mint();
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(mrns(&reply), set(&["A-1", "A-2"]));
}

#[tokio::test]
async fn valid_jwt_access_token_runs_as_the_mapped_clinician() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").access_token().mint();
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(mrns(&reply), set(&["A-1", "A-2"]));
}

#[tokio::test]
async fn token_signed_with_an_ec_key_is_accepted() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").signed_by(shared_key("ec-1")).mint();
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(mrns(&reply), set(&["A-1", "A-2"]), "{}", reply.body);
}

#[tokio::test]
async fn valid_token_for_an_unenrolled_subject_sees_nothing_and_me_is_null() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("nobody-enrolled-me").mint();
    let reply = app
        .graphql(
            Some(&token),
            &format!(
                "{{ me {{ id }} {} }}",
                &MY_PATIENTS[2..MY_PATIENTS.len() - 2]
            ),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.data()["me"], Value::Null);
    assert!(mrns(&reply).is_empty());
}

/// Sends `token` (or nothing) and asserts a 401 that did no database work at all.
async fn assert_rejected(
    app: &TestApp,
    request: reqwest::RequestBuilder,
    challenge_error: Option<&str>,
) {
    let before = app.db.statements_executed();
    assert_refused(request, challenge_error).await;
    assert_eq!(
        app.db.statements_executed(),
        before,
        "a rejected request ran a database statement"
    );
}

/// Asserts a 401 with an RFC 6750 challenge.
async fn assert_refused(request: reqwest::RequestBuilder, challenge_error: Option<&str>) {
    let reply = GraphqlReply::from(request.send().await.expect("gateway answers")).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.code(), Some("UNAUTHENTICATED"));
    let challenge = reply
        .www_authenticate
        .expect("a WWW-Authenticate challenge");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    match challenge_error {
        Some(error) => assert!(
            challenge.contains(&format!("error=\"{error}\"")),
            "{challenge}"
        ),
        None => assert!(!challenge.contains("error="), "{challenge}"),
    }
}

fn post(app: &TestApp) -> reqwest::RequestBuilder {
    app.http
        .post(app.url("/graphql"))
        .json(&json!({ "query": MY_PATIENTS }))
}

async fn assert_token_rejected(app: &TestApp, token: &str) {
    assert_rejected(app, post(app).bearer_auth(token), Some("invalid_token")).await;
}

#[tokio::test]
async fn no_token_is_rejected() {
    let (_t, _issuer, app) = world().await;
    assert_rejected(&app, post(&app), None).await;
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let (_t, issuer, app) = world().await;
    let claims = issuer.token("alice").claims().clone();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims"));
    assert_token_rejected(&app, &format!("{header}.{payload}.")).await;
}

#[tokio::test]
async fn hs256_signed_with_the_issuers_public_key_is_rejected() {
    let (_t, issuer, app) = world().await;
    assert_token_rejected(&app, &issuer.token("alice").mint_hs256_with_public_key()).await;
}

#[tokio::test]
async fn tampered_payload_is_rejected() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("mallory").mint();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64")).expect("json");
    claims["sub"] = json!("alice");
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims"));
    assert_token_rejected(&app, &parts.join(".")).await;
}

#[tokio::test]
async fn signature_by_a_key_not_in_the_jwks_is_rejected() {
    let (_t, issuer, app) = world().await;
    // Both an unknown kid, and a published kid with the wrong key behind it.
    let rogue = shared_key("rsa-rogue");
    assert_token_rejected(&app, &issuer.token("alice").signed_by(rogue.clone()).mint()).await;
    assert_token_rejected(
        &app,
        &issuer.token("alice").signed_by(rogue).kid("rsa-1").mint(),
    )
    .await;
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    let (_t, issuer, app) = world().await;
    let token = issuer
        .token("alice")
        .claim("iss", json!(format!("{}/", issuer.url())))
        .mint();
    assert_token_rejected(&app, &token).await;
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let (_t, issuer, app) = world().await;
    let token = issuer
        .token("alice")
        .claim("aud", json!("some-other-app"))
        .mint();
    assert_token_rejected(&app, &token).await;
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let (_t, issuer, app) = world().await;
    // Beyond the 60 s clock skew allowance.
    let token = issuer.token("alice").times(-600, 300).mint();
    assert_token_rejected(&app, &token).await;
}

#[tokio::test]
async fn token_not_valid_yet_is_rejected() {
    let (_t, issuer, app) = world().await;
    let nbf = chrono::Utc::now().timestamp() + 600;
    let token = issuer.token("alice").claim("nbf", json!(nbf)).mint();
    assert_token_rejected(&app, &token).await;
}

#[tokio::test]
async fn lifetime_over_the_maximum_is_rejected() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").times(0, 3 * 3600).mint();
    assert_token_rejected(&app, &token).await;
}

#[tokio::test]
async fn missing_subject_is_rejected() {
    let (_t, issuer, app) = world().await;
    assert_token_rejected(&app, &issuer.token("alice").without("sub").mint()).await;
}

#[tokio::test]
async fn opaque_token_is_rejected_with_a_clear_message() {
    let (_t, _issuer, app) = world().await;
    let reply = GraphqlReply::from(
        post(&app)
            .bearer_auth("2YotnFZFEjr1zCsicMWpAA")
            .send()
            .await
            .expect("reply"),
    )
    .await;
    let message = reply.body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("opaque tokens are not accepted"),
        "{message}"
    );
    assert_token_rejected(&app, "2YotnFZFEjr1zCsicMWpAA").await;
}

#[tokio::test]
async fn malformed_authorization_header_is_rejected() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").mint();
    assert_rejected(
        &app,
        post(&app).header("authorization", format!("Basic {token}")),
        Some("invalid_request"),
    )
    .await;
    assert_rejected(
        &app,
        post(&app).header("authorization", format!("Bearer {token} extra")),
        Some("invalid_request"),
    )
    .await;
}

#[tokio::test]
async fn bearer_with_no_token_is_rejected() {
    let (_t, _issuer, app) = world().await;
    assert_rejected(
        &app,
        post(&app).header("authorization", "Bearer"),
        Some("invalid_request"),
    )
    .await;
    assert_rejected(
        &app,
        post(&app).header("authorization", "Bearer   "),
        Some("invalid_request"),
    )
    .await;
}

#[tokio::test]
async fn token_in_the_query_string_is_rejected() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").mint();
    let request = app
        .http
        .post(app.url(&format!("/graphql?access_token={token}")))
        .json(&json!({ "query": MY_PATIENTS }));
    assert_rejected(&app, request, Some("invalid_request")).await;
}

#[tokio::test]
async fn rejection_describes_the_problem_per_rfc_6750() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").times(-600, 300).mint();
    let reply =
        GraphqlReply::from(post(&app).bearer_auth(token).send().await.expect("reply")).await;
    assert_eq!(
        reply.www_authenticate.as_deref(),
        Some(
            "Bearer realm=\"rowguard\", error=\"invalid_token\", error_description=\"the token has expired\""
        )
    );
    assert_eq!(reply.body["errors"][0]["message"], "the token has expired");
}

#[tokio::test]
async fn rotated_key_is_accepted_without_restart_and_the_retired_key_is_refused() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    assign(&owner, &alice, admit(&owner, "A-1").await).await;
    // No cooldown, so the unknown key id triggers a refetch at once (the cooldown itself is
    // specified by the flood spec below).
    let mut settings = oidc_settings(&issuer);
    settings.jwks_cooldown_secs = 0;
    let app = TestApp::start_adjusted(&t, &issuer, |s| s.oidc = settings).await;
    app.wait_for_keys().await;
    let old = issuer.token("alice").mint();
    assert_eq!(
        app.graphql(Some(&old), MY_PATIENTS, json!({})).await.status,
        200
    );

    // The issuer rotates: it publishes and signs with rsa-2, and retires rsa-1.
    let new_key = shared_key("rsa-2");
    issuer.publish(&[&new_key]);
    issuer.sign_with(new_key);
    let fresh = issuer.token("alice").mint();
    let reply = app.graphql(Some(&fresh), MY_PATIENTS, json!({})).await;
    assert_eq!(mrns(&reply), set(&["A-1"]), "{}", reply.body);

    // A token signed by the retired key that was never seen before is refused.
    let retired = issuer
        .token("alice")
        .signed_by(shared_key("rsa-1"))
        .claim("jti", json!("new"))
        .mint();
    assert_refused(post(&app).bearer_auth(retired), Some("invalid_token")).await;
}

#[tokio::test]
async fn a_token_verified_before_its_key_was_withdrawn_is_refused_afterwards() {
    // Before: the verified-token cache kept vouching for it until its `exp`, so tokens minted
    // with a compromised key and used before the issuer withdrew it kept working.
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    assign(&owner, &alice, admit(&owner, "A-1").await).await;
    let mut settings = oidc_settings(&issuer);
    settings.jwks_cooldown_secs = 0;
    let app = TestApp::start_adjusted(&t, &issuer, |s| s.oidc = settings).await;
    app.wait_for_keys().await;
    let used_before = issuer.token("alice").mint();
    let reply = app
        .graphql(Some(&used_before), MY_PATIENTS, json!({}))
        .await;
    assert_eq!(mrns(&reply), set(&["A-1"]), "{}", reply.body);

    // The issuer withdraws rsa-1; a token of the new key makes the gateway fetch the new set.
    let new_key = shared_key("rsa-2");
    issuer.publish(&[&new_key]);
    issuer.sign_with(new_key);
    let fresh = issuer.token("alice").mint();
    let reply = app.graphql(Some(&fresh), MY_PATIENTS, json!({})).await;
    assert_eq!(mrns(&reply), set(&["A-1"]), "{}", reply.body);

    assert_refused(post(&app).bearer_auth(&used_before), Some("invalid_token")).await;
}

#[tokio::test]
async fn requests_that_wait_for_the_key_fetch_their_new_key_started_are_verified_with_its_keys() {
    // Before: when a provider rotated, one request fetched the new set and the others, waiting
    // for that fetch, then found the cooldown running and were refused 401 with the key loaded.
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let subjects: Vec<String> = (0..8).map(|i| format!("clinician-{i}")).collect();
    for subject in &subjects {
        let person = enroll_at(&owner, issuer.url(), subject).await;
        assign(
            &owner,
            &person,
            admit(&owner, &format!("MRN-{subject}")).await,
        )
        .await;
    }
    let mut settings = oidc_settings(&issuer);
    settings.jwks_cooldown_secs = 1;
    let app = TestApp::start_adjusted(&t, &issuer, |s| s.oidc = settings).await;
    app.wait_for_keys().await;
    // The start-up fetch's cooldown is over: the first new key id may fetch at once.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let new_key = shared_key("rsa-2");
    issuer.publish(&[&shared_key("rsa-1"), &new_key]);
    issuer.sign_with(new_key);
    issuer.set_jwks_delay(Duration::from_millis(600));
    let tokens: Vec<String> = subjects.iter().map(|s| issuer.token(s).mint()).collect();
    let replies = futures::future::join_all(
        tokens
            .iter()
            .map(|token| app.graphql(Some(token), MY_PATIENTS, json!({}))),
    )
    .await;
    for (subject, reply) in subjects.iter().zip(&replies) {
        assert_eq!(reply.status, 200, "{subject}: {}", reply.body);
        assert_eq!(
            mrns(reply),
            set(&[&format!("MRN-{subject}")]),
            "{}",
            reply.body
        );
    }
}

#[tokio::test]
async fn a_token_re_encoded_in_its_signatures_unused_bits_is_refused() {
    // Before: the signature's last base64url character carries bits no byte uses; changing them
    // still verified, so one issued token was up to 16 accepted strings (each its own entry in
    // the verified-token cache, and past any deny-list keyed on the token's text).
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").mint();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *token.as_bytes().last().expect("a token");
    let index = ALPHABET.iter().position(|&c| c == last).expect("base64url");
    let variant = format!(
        "{}{}",
        &token[..token.len() - 1],
        char::from(ALPHABET[index | 1])
    );
    assert_ne!(variant, token);
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_token_rejected(&app, &variant).await;
}

#[tokio::test]
async fn unknown_kid_floods_cause_at_most_a_handful_of_jwks_fetches() {
    let (_t, issuer, app) = world().await;
    let before = issuer.jwks_fetches();
    let rogue = generate_key("flood", Algorithm::RS256);
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            issuer
                .token("alice")
                .signed_by(rogue.clone())
                .kid(&format!("kid-{i}"))
                .mint()
        })
        .collect();
    let mut rejected = 0;
    for chunk in tokens.chunks(50) {
        let replies = futures::future::join_all(
            chunk
                .iter()
                .map(|token| post(&app).bearer_auth(token).send()),
        )
        .await;
        for reply in replies {
            if reply.expect("reply").status() == 401 {
                rejected += 1;
            }
        }
    }
    let fetched = issuer.jwks_fetches() - before;
    eprintln!("unknown-kid flood: {rejected} of 1000 rejected, {fetched} JWKS fetches");
    assert_eq!(rejected, 1000);
    assert!(fetched <= 2, "{fetched} JWKS fetches for 1000 unknown kids");
}

#[tokio::test]
async fn issuer_down_at_startup_means_not_ready_until_it_comes_up() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    assign(&owner, &alice, admit(&owner, "A-1").await).await;
    issuer.set_up(false);
    let app = TestApp::start_adjusted(&t, &issuer, |_| {}).await;

    assert_eq!(app.readiness().await, 503);
    let token = issuer.token("alice").mint();
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (503, Some("SERVICE_UNAVAILABLE")),
        "{}",
        reply.body
    );

    issuer.set_up(true);
    assert!(
        rowguard_tests::process::ready_within(&app.http, &app.url(""), Duration::from_secs(15))
            .await,
        "never became ready"
    );
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(mrns(&reply), set(&["A-1"]), "{}", reply.body);
}

#[tokio::test]
async fn cached_keys_keep_working_when_the_issuer_goes_down() {
    let (_t, issuer, app) = world().await;
    issuer.set_up(false);
    let token = issuer.token("alice").mint();
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(mrns(&reply), set(&["A-1", "A-2"]), "{}", reply.body);
}

#[tokio::test]
async fn same_subject_at_another_issuer_never_maps_to_the_same_clinician() {
    let (t, issuer, app) = world().await;
    let elsewhere = TestIssuer::start().await;
    let owner = t.owner().await;
    // "alice" at the other issuer is a different person with no patients.
    enroll_at(&owner, elsewhere.url(), "alice").await;
    let foreign = elsewhere.token("alice").mint();
    assert_token_rejected(&app, &foreign).await;
    // Even signed with our issuer's key, a foreign `iss` is refused.
    let forged = issuer
        .token("alice")
        .claim("iss", json!(elsewhere.url()))
        .mint();
    assert_token_rejected(&app, &forged).await;
    let reply = app
        .graphql(Some(&issuer.token("alice").mint()), MY_PATIENTS, json!({}))
        .await;
    assert_eq!(mrns(&reply), set(&["A-1", "A-2"]));
}

#[tokio::test]
async fn mapped_coordinator_role_gets_coordinator_access() {
    let (_t, issuer, app) = world_with_realm_roles().await;
    let token = issuer
        .token("carol")
        .claim(
            "realm_access",
            json!({ "roles": ["offline_access", "care-coordinator"] }),
        )
        .mint();
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(mrns(&reply), set(&["U-1", "U-2"]), "{}", reply.body);
}

#[tokio::test]
async fn unmapped_role_is_forbidden() {
    let (_t, issuer, app) = world().await;
    let token = issuer.token("alice").roles(&["janitor"]).mint();
    let before = app.db.statements_executed();
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (403, Some("FORBIDDEN")),
        "{}",
        reply.body
    );
    assert_eq!(app.db.statements_executed(), before, "no database work");
}

#[tokio::test]
async fn a_namespaced_roles_claim_is_matched_whole() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    assign(&owner, &alice, admit(&owner, "A-1").await).await;
    let mut settings = oidc_settings(&issuer);
    settings.roles_claim = "https://rowguard.example/roles".into();
    let app = TestApp::start_adjusted(&t, &issuer, |s| s.oidc = settings).await;
    app.wait_for_keys().await;
    let token = issuer
        .token("alice")
        .without("roles")
        .claim("https://rowguard.example/roles", json!(["clinician"]))
        .mint();
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(mrns(&reply), set(&["A-1"]), "{}", reply.body);
}

/// A gateway reading roles from Keycloak's `realm_access.roles`, mapping `doctor` and
/// `care-coordinator`; carol is enrolled and two patients exist.
async fn world_with_realm_roles() -> (TestDb, TestIssuer, TestApp) {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    enroll_at(&owner, issuer.url(), "carol").await;
    admit(&owner, "U-1").await;
    admit(&owner, "U-2").await;
    let mut settings = oidc_settings(&issuer);
    settings.roles_claim = "realm_access.roles".into();
    settings.role_map = rowguard::settings::RoleMap(
        [
            ("doctor".to_owned(), rowguard::principal::AppRole::Clinician),
            (
                "care-coordinator".to_owned(),
                rowguard::principal::AppRole::Coordinator,
            ),
        ]
        .into_iter()
        .collect(),
    );
    let app = TestApp::start_adjusted(&t, &issuer, |s| s.oidc = settings).await;
    app.wait_for_keys().await;
    (t, issuer, app)
}

#[tokio::test]
async fn a_token_naming_roles_both_under_the_path_and_as_a_claim_of_that_name_gets_no_role() {
    let (_t, issuer, app) = world_with_realm_roles().await;
    // A claim literally named `realm_access.roles` (say, a profile attribute the user can edit,
    // copied by a mapper) beside the provider's own nested roles.
    let token = issuer
        .token("carol")
        .claim("realm_access", json!({ "roles": ["doctor"] }))
        .claim("realm_access.roles", json!(["care-coordinator"]))
        .mint();
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (403, Some("FORBIDDEN")),
        "{}",
        reply.body
    );
    // The re-review: nor when the provider's claim is there without roles (a user with none).
    for realm_access in [json!({}), json!(null), json!(["offline_access"])] {
        let token = issuer
            .token("carol")
            .claim("realm_access", realm_access.clone())
            .claim("realm_access.roles", json!(["care-coordinator"]))
            .mint();
        let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
        assert_eq!(
            (reply.status, reply.code()),
            (403, Some("FORBIDDEN")),
            "realm_access {realm_access}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn a_roles_claim_given_as_one_text_is_one_value_matched_whole() {
    let (_t, issuer, app) = world_with_realm_roles().await;
    let title = issuer
        .token("carol")
        .claim(
            "realm_access",
            json!({ "roles": "former care-coordinator" }),
        )
        .mint();
    let reply = app.graphql(Some(&title), MY_PATIENTS, json!({})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (403, Some("FORBIDDEN")),
        "{}",
        reply.body
    );

    let single = issuer
        .token("carol")
        .claim("realm_access", json!({ "roles": "care-coordinator" }))
        .mint();
    let reply = app.graphql(Some(&single), MY_PATIENTS, json!({})).await;
    assert_eq!(mrns(&reply), set(&["U-1", "U-2"]), "{}", reply.body);
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused_as_such_not_as_expired() {
    let (_t, issuer, app) = world().await;
    // Past the 60 s clock skew allowance, and well within its lifetime.
    let token = issuer.token("alice").times(600, 300).mint();
    let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.body["errors"][0]["message"],
        "the token was issued in the future (check the issuer's clock)"
    );
}

// Which application a token was minted for ----------------------------------------------------

/// A gateway that accepts tokens of the SPA client only, for either audience.
async fn world_for_the_spa_only(
    adjust: impl FnOnce(&mut rowguard::settings::OidcSettings),
) -> (TestDb, TestIssuer, TestApp) {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    assign(&owner, &alice, admit(&owner, "A-1").await).await;
    let mut settings = oidc_settings(&issuer);
    settings.client_ids = vec![rowguard_tests::issuer::SPA_CLIENT_ID.to_owned()];
    adjust(&mut settings);
    let app = TestApp::start_adjusted(&t, &issuer, |s| s.oidc = settings).await;
    app.wait_for_keys().await;
    (t, issuer, app)
}

#[tokio::test]
async fn a_token_minted_for_another_client_is_refused_when_client_ids_are_listed() {
    let (_t, issuer, app) = world_for_the_spa_only(|_| {}).await;
    // Another app of the same organisation, with an audience Rowguard accepts (Okta's shared
    // `api://default` pattern): its users' tokens must not work here.
    let foreign_access = issuer
        .token("alice")
        .access_token()
        .claim("client_id", json!("billing-app"))
        .mint();
    assert_token_rejected(&app, &foreign_access).await;
    let foreign_id = issuer
        .token("alice")
        .claim(
            "aud",
            json!([rowguard_tests::issuer::SPA_CLIENT_ID, "billing-app"]),
        )
        .claim("azp", json!("billing-app"))
        .mint();
    assert_token_rejected(&app, &foreign_id).await;
    let okta_style = issuer
        .token("alice")
        .access_token()
        .without("client_id")
        .claim("cid", json!("billing-app"))
        .mint();
    assert_token_rejected(&app, &okta_style).await;

    for ours in [
        issuer.token("alice").access_token().mint(),
        issuer.token("alice").mint(),
        issuer
            .token("alice")
            .claim("azp", json!(rowguard_tests::issuer::SPA_CLIENT_ID))
            .mint(),
    ] {
        let reply = app.graphql(Some(&ours), MY_PATIENTS, json!({})).await;
        assert_eq!(mrns(&reply), set(&["A-1"]), "{}", reply.body);
    }
}

/// An access token as Okta (no `typ`, the client in `cid`) or Entra ID v1 (`typ: JWT`, the
/// client in `appid`) issue them: for the API's audience, looking like an ID token.
fn vendor_access_token(
    issuer: &TestIssuer,
    typ: Option<&str>,
    claim: &str,
    client: &str,
) -> String {
    issuer
        .token("alice")
        .typ(typ)
        .claim("aud", json!(rowguard_tests::issuer::API_AUDIENCE))
        .claim(claim, json!(client))
        .mint()
}

#[tokio::test]
async fn okta_and_entra_v1_access_tokens_are_matched_by_the_client_they_name() {
    // Before: a token without `typ: at+jwt` was taken for an ID token, whose client is its
    // single audience, so these were refused as issued to the application "api".
    let (_t, issuer, app) = world_for_the_spa_only(|_| {}).await;
    let spa = rowguard_tests::issuer::SPA_CLIENT_ID;
    for token in [
        vendor_access_token(&issuer, None, "cid", spa),
        vendor_access_token(&issuer, Some("JWT"), "appid", spa),
    ] {
        let reply = app.graphql(Some(&token), MY_PATIENTS, json!({})).await;
        assert_eq!(mrns(&reply), set(&["A-1"]), "{}", reply.body);
    }
}

#[tokio::test]
async fn a_token_naming_another_client_is_refused_even_when_the_api_audience_is_listed_as_a_client()
{
    // Before: with the API's audience in ROWGUARD_OIDC_CLIENT_IDS (what the old refusal's log
    // line led an operator to add), any application's Okta or Entra ID v1 token was accepted.
    let (_t, issuer, app) = world_for_the_spa_only(|s| {
        s.client_ids
            .push(rowguard_tests::issuer::API_AUDIENCE.to_owned());
    })
    .await;
    for token in [
        vendor_access_token(&issuer, None, "cid", "billing-app"),
        vendor_access_token(&issuer, Some("JWT"), "appid", "billing-app"),
        vendor_access_token(&issuer, Some("JWT"), "client_id", "billing-app"),
        // Two claims naming different clients: neither is picked.
        issuer
            .token("alice")
            .claim("aud", json!(rowguard_tests::issuer::API_AUDIENCE))
            .claim("client_id", json!(123))
            .claim("cid", json!(rowguard_tests::issuer::SPA_CLIENT_ID))
            .mint(),
    ] {
        assert_token_rejected(&app, &token).await;
    }
}

#[tokio::test]
async fn a_subject_with_a_nul_character_is_an_unusable_token() {
    // Before: accepted, then refused by PostgreSQL inside the request as BAD_USER_INPUT (400).
    let (_t, issuer, app) = world_for_the_spa_only(|_| {}).await;
    assert_token_rejected(&app, &issuer.token("alice\u{0}").mint()).await;
}

#[tokio::test]
async fn a_token_bound_to_a_key_is_refused_as_a_bearer_token() {
    // A review: a DPoP- or mTLS-bound access token (a `cnf` claim) was accepted with no proof of
    // its key, so a stolen one worked here as if it were not bound.
    let (_t, issuer, app) = world_for_the_spa_only(|_| {}).await;
    for cnf in [
        json!({ "jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I" }),
        json!({ "x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2" }),
    ] {
        let bound = issuer
            .token("alice")
            .access_token()
            .claim("cnf", cnf)
            .mint();
        assert_token_rejected(&app, &bound).await;
    }
}

#[tokio::test]
async fn a_token_without_a_required_scope_is_refused() {
    let (_t, issuer, app) = world_for_the_spa_only(|s| {
        s.required_scopes = vec!["rowguard.api".to_owned()];
    })
    .await;
    let unscoped = issuer.token("alice").access_token().mint();
    assert_token_rejected(&app, &unscoped).await;
    let other = issuer
        .token("alice")
        .access_token()
        .claim("scope", json!("openid profile"))
        .mint();
    assert_token_rejected(&app, &other).await;
    // RFC 6749 separates scopes with a space alone: these are single, unknown scopes.
    for glued in [
        "x\u{a0}rowguard.api",
        "x\u{3000}rowguard.api",
        "x\nrowguard.api",
    ] {
        let token = issuer
            .token("alice")
            .access_token()
            .claim("scope", json!(glued))
            .mint();
        assert_token_rejected(&app, &token).await;
    }
    let scoped = issuer
        .token("alice")
        .access_token()
        .claim("scope", json!("openid rowguard.api"))
        .mint();
    let reply = app.graphql(Some(&scoped), MY_PATIENTS, json!({})).await;
    assert_eq!(mrns(&reply), set(&["A-1"]), "{}", reply.body);
    let scp_list = issuer
        .token("alice")
        .access_token()
        .claim("scp", json!(["rowguard.api"]))
        .mint();
    let reply = app.graphql(Some(&scp_list), MY_PATIENTS, json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn a_plain_http_issuer_is_refused_unless_it_is_a_loopback_ip_address() {
    let check =
        |issuer: &str| rowguard::settings::OidcSettings::new(issuer, &["aud"]).check_issuer();
    for refused in [
        "http://localhost:8080/realms/x",
        "http://127.evil.example/realms/x",
        "http://idp.hospital.example",
        "ftp://idp.hospital.example",
        // A loopback address in the user-info part: the host is evil.example.
        "http://[::1]@evil.example",
        "http://[::1]:80@evil.example/x",
        "http://127.0.0.1@evil.example",
        "http://127.0.0.1:9000@evil.example",
        "http://127.0.0.1.nip.io:9000",
    ] {
        assert!(check(refused).is_err(), "{refused} accepted");
    }
    for accepted in [
        "https://idp.hospital.example/realms/x",
        "http://127.0.0.1:9000",
        "http://[::1]:9000/",
    ] {
        assert!(check(accepted).is_ok(), "{accepted} refused");
    }
}
