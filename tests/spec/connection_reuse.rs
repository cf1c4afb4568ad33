//! Fail closed on a reused connection: once a request's transaction ends, however it ends, the
//! pooled connection carries no identity into whatever uses it next.

use rowguard::db::{AccessMode, Database};
use rowguard_tests::fixtures::{admit, assign, enroll};
use rowguard_tests::{TestDb, test_roles};
use sea_orm::{DatabaseConnection, TransactionTrait};

use crate::support::{execute, query_count, query_text, scope, visible_patients};

/// A gateway whose pool has exactly one connection, plus a raw handle on that same pool.
async fn one_connection_gateway(t: &TestDb) -> (Database, DatabaseConnection) {
    let raw = t.gateway_pool(1).await;
    (Database::from_pool(raw.clone(), test_roles()), raw)
}

/// What the next user of the connection finds: the login role, an empty identity setting, and,
/// even if a buggy path switched to an application role without setting an identity, zero
/// patients rather than an error.
async fn assert_connection_carries_no_identity(raw: &DatabaseConnection) {
    let who = query_text(raw, "select current_user::text as value")
        .await
        .expect("current_user");
    assert_eq!(who.as_deref(), Some("rgtest_gateway"));
    let identity = query_text(
        raw,
        "select current_setting('app.current_user', true) as value",
    )
    .await
    .expect("reading the leftover setting is not an error");
    assert_eq!(
        identity.as_deref(),
        Some(""),
        "a transaction-local setting reads '' afterwards"
    );
    let request = query_text(
        raw,
        "select current_setting('app.request_id', true) as value",
    )
    .await
    .expect("reading the leftover setting is not an error");
    assert_eq!(request.as_deref(), Some(""));

    let txn = raw.begin().await.expect("begin");
    execute(&txn, "set local role rgtest_clinician", [])
        .await
        .expect("role switch");
    let seen = query_count(&txn, "select count(*) as value from rowguard.patients")
        .await
        .expect("an empty identity must not raise (nullif guards the cast)");
    assert_eq!(seen, 0);
    txn.rollback().await.expect("rollback");
}

async fn alice_with_patients(t: &TestDb) -> rowguard_tests::fixtures::Person {
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    for mrn in ["A-1", "A-2"] {
        let p = admit(&owner, mrn).await;
        assign(&owner, &alice, p).await;
    }
    alice
}

#[tokio::test]
async fn connection_after_a_committed_request_carries_no_identity() {
    let t = TestDb::new().await;
    let alice = alice_with_patients(&t).await;
    let (db, raw) = one_connection_gateway(&t).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadOnly).await;
    assert_eq!(
        visible_patients(&s).await.len(),
        2,
        "the scope itself works"
    );
    s.commit().await.expect("commit");

    assert_connection_carries_no_identity(&raw).await;
}

#[tokio::test]
async fn connection_after_a_rolled_back_request_carries_no_identity() {
    let t = TestDb::new().await;
    let alice = alice_with_patients(&t).await;
    let (db, raw) = one_connection_gateway(&t).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadWrite).await;
    assert_eq!(visible_patients(&s).await.len(), 2);
    s.rollback().await.expect("rollback");

    assert_connection_carries_no_identity(&raw).await;
}

#[tokio::test]
async fn connection_after_a_failed_request_carries_no_identity() {
    let t = TestDb::new().await;
    let alice = alice_with_patients(&t).await;
    let (db, raw) = one_connection_gateway(&t).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadWrite).await;
    assert_eq!(visible_patients(&s).await.len(), 2);
    execute(s.conn(), "select 1 / 0", [])
        .await
        .expect_err("the request fails");
    // Dropped without commit or rollback, as when a handler bails out.
    drop(s);

    assert_connection_carries_no_identity(&raw).await;
}
