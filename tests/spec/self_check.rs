//! The startup self-check: the gateway refuses to serve when PostgreSQL would not enforce row
//! level security for its login.

use migration::RoleNames;
use rowguard::db::{Database, SelfCheckError};
use rowguard_tests::{TestDb, connect, test_roles};

use crate::support::execute;

async fn refusal(db: &Database) -> String {
    match db.self_check().await {
        Err(SelfCheckError::Failed(failed)) => failed.to_string(),
        Err(other) => panic!("the check itself failed: {other}"),
        Ok(()) => panic!("the self-check passed but should have refused"),
    }
}

#[tokio::test]
async fn self_check_passes_for_the_migrated_gateway_role() {
    let t = TestDb::new().await;
    let db = t.gateway(1).await;
    db.self_check()
        .await
        .expect("a correctly migrated database passes");
}

#[tokio::test]
async fn self_check_refuses_a_superuser_connection() {
    let t = TestDb::new().await;
    let db = Database::from_pool(connect(&t.admin_url(), 1, None).await, test_roles());
    let message = refusal(&db).await;
    assert!(message.contains("a superuser"), "{message}");
    assert!(
        message.contains("rgtest_gateway"),
        "the message names the role to use: {message}"
    );
}

#[tokio::test]
async fn self_check_refuses_a_table_without_row_level_security() {
    let t = TestDb::new().await;
    execute(
        &t.admin().await,
        "alter table rowguard.clinicians_patients disable row level security",
        [],
    )
    .await
    .expect("misconfigure");
    let message = refusal(&t.gateway(1).await).await;
    assert!(
        message.contains("ALTER TABLE rowguard.clinicians_patients ENABLE ROW LEVEL SECURITY"),
        "{message}"
    );
}

#[tokio::test]
async fn self_check_refuses_patients_without_force() {
    let t = TestDb::new().await;
    execute(
        &t.admin().await,
        "alter table rowguard.patients no force row level security",
        [],
    )
    .await
    .expect("misconfigure");
    let message = refusal(&t.gateway(1).await).await;
    assert!(
        message.contains("ALTER TABLE rowguard.patients FORCE ROW LEVEL SECURITY"),
        "{message}"
    );
}

#[tokio::test]
async fn self_check_refuses_a_gateway_with_table_privileges_of_its_own() {
    let t = TestDb::new().await;
    execute(
        &t.admin().await,
        "grant select on rowguard.patients to rgtest_gateway",
        [],
    )
    .await
    .expect("misconfigure");
    let message = refusal(&t.gateway(1).await).await;
    assert!(
        message.contains("REVOKE ALL ON rowguard.patients FROM rgtest_gateway"),
        "{message}"
    );
}

#[tokio::test]
async fn self_check_refuses_a_role_prefix_that_does_not_match_the_database() {
    let t = TestDb::new().await;
    let pool = t.gateway_pool(1).await;
    let db = Database::from_pool(pool, RoleNames::new("elsewhere").expect("valid prefix"));
    let message = refusal(&db).await;
    assert!(
        message.contains("\"elsewhere_clinician\" does not exist"),
        "{message}"
    );
    assert!(message.contains("ROWGUARD_ROLE_PREFIX"), "{message}");
}
