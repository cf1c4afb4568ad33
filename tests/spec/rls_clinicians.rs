//! Row level security on `clinicians`: colleagues on shared care teams are visible; the whole
//! directory only to coordinators.

use std::collections::BTreeSet;

use rowguard::db::AccessMode;
use rowguard::principal::AppRole;
use rowguard_tests::TestDb;
use rowguard_tests::fixtures::{admit, assign, enroll, stranger};

use crate::support::{
    INSUFFICIENT_PRIVILEGE, execute, query_text, scope, sqlstate, visible_clinicians,
};

#[tokio::test]
async fn clinician_sees_themselves_and_their_patients_care_teams_only() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let colleague = enroll(&owner, "colleague").await;
    let outsider = enroll(&owner, "outsider").await;
    let shared = admit(&owner, "S-1").await;
    let elsewhere = admit(&owner, "E-1").await;
    assign(&owner, &alice, shared).await;
    assign(&owner, &colleague, shared).await;
    assign(&owner, &outsider, elsewhere).await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadOnly).await;
    assert_eq!(
        visible_clinicians(&s).await,
        BTreeSet::from([alice.id, colleague.id])
    );
}

#[tokio::test]
async fn clinician_cannot_read_colleagues_identity_provider_subjects() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadOnly).await;
    let err = query_text(
        s.conn(),
        "select oidc_subject as value from rowguard.clinicians",
    )
    .await
    .expect_err("subjects are not granted to clinicians");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
}

#[tokio::test]
async fn coordinator_sees_the_whole_directory_and_can_enroll() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let coordinator = enroll(&owner, "coord").await;
    let alice = enroll(&owner, "alice").await;
    let db = t.gateway(2).await;

    let s = scope(&db, &coordinator.coordinator(), AccessMode::ReadWrite).await;
    assert_eq!(
        visible_clinicians(&s).await,
        BTreeSet::from([coordinator.id, alice.id])
    );
    let inserted = execute(
        s.conn(),
        "insert into rowguard.clinicians (oidc_issuer, oidc_subject, display_name) \
         values ('https://idp.test.invalid', 'new-hire', 'Dr. New')",
        [],
    )
    .await
    .expect("coordinators enroll clinicians");
    assert_eq!(inserted, 1);
    assert_eq!(visible_clinicians(&s).await.len(), 3);
}

#[tokio::test]
async fn clinician_cannot_enroll_anyone() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        "insert into rowguard.clinicians (oidc_issuer, oidc_subject, display_name) \
         values ('https://idp.test.invalid', 'sock-puppet', 'Dr. Puppet')",
        [],
    )
    .await
    .expect_err("clinicians cannot enroll");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
}

#[tokio::test]
async fn unknown_identity_sees_no_clinicians() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    enroll(&owner, "alice").await;
    let db = t.gateway(2).await;

    for role in [AppRole::Clinician, AppRole::Coordinator] {
        let s = scope(&db, &stranger(role), AccessMode::ReadOnly).await;
        assert!(
            visible_clinicians(&s).await.is_empty(),
            "{role} stranger saw clinicians"
        );
    }
}

#[tokio::test]
async fn an_enrolled_auditor_sees_the_directory_and_an_unenrolled_one_sees_nobody() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let auditor = enroll(&owner, "auditor").await;
    let alice = enroll(&owner, "alice").await;
    let db = t.gateway(2).await;

    let s = scope(
        &db,
        &auditor.as_role(AppRole::Auditor),
        AccessMode::ReadOnly,
    )
    .await;
    assert_eq!(
        visible_clinicians(&s).await,
        BTreeSet::from([auditor.id, alice.id])
    );
    drop(s);
    let s = scope(&db, &stranger(AppRole::Auditor), AccessMode::ReadOnly).await;
    assert!(visible_clinicians(&s).await.is_empty());
}

#[tokio::test]
async fn an_unenrolled_coordinator_cannot_enroll_anyone() {
    let t = TestDb::new().await;
    let db = t.gateway(2).await;

    let s = scope(&db, &stranger(AppRole::Coordinator), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        "insert into rowguard.clinicians (oidc_issuer, oidc_subject, display_name) \
         values ('https://idp.test.invalid', 'sock-puppet', 'Dr. Puppet')",
        [],
    )
    .await
    .expect_err("an enrolment needs an identified coordinator");
    assert!(
        err.to_string()
            .contains("violates row-level security policy"),
        "unexpected error: {err}"
    );
}
