//! Row level security on `clinicians_patients`: care teams are visible to their members;
//! only coordinators change them.

use std::collections::BTreeSet;

use rowguard::db::{AccessMode, Database};
use rowguard::principal::AppRole;
use rowguard_tests::TestDb;
use rowguard_tests::fixtures::{Person, admit, assign, enroll, stranger};
use sea_orm::EntityTrait;
use uuid::Uuid;

use crate::support::{
    INSUFFICIENT_PRIVILEGE, execute, patients_seen_by, query_count, scope, sqlstate,
    visible_assignments, visible_clinicians,
};

#[tokio::test]
async fn clinician_sees_the_care_team_of_their_own_patients() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let bob = enroll(&owner, "bob").await;
    let shared = admit(&owner, "S-1").await;
    assign(&owner, &alice, shared).await;
    assign(&owner, &bob, shared).await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadOnly).await;
    assert_eq!(
        visible_assignments(&s).await,
        BTreeSet::from([(alice.id, shared), (bob.id, shared)])
    );
}

#[tokio::test]
async fn clinician_cannot_see_assignments_of_other_patients() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let bob = enroll(&owner, "bob").await;
    let alices = admit(&owner, "A-1").await;
    let bobs = admit(&owner, "B-1").await;
    assign(&owner, &alice, alices).await;
    assign(&owner, &bob, bobs).await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadOnly).await;
    assert_eq!(
        visible_assignments(&s).await,
        BTreeSet::from([(alice.id, alices)])
    );
    let s = scope(&db, &stranger(AppRole::Clinician), AccessMode::ReadOnly).await;
    assert!(visible_assignments(&s).await.is_empty());
}

#[tokio::test]
async fn coordinator_can_assign_and_unassign_a_clinician() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let coordinator = enroll(&owner, "coord").await;
    let alice = enroll(&owner, "alice").await;
    let p = admit(&owner, "P-1").await;
    let db = t.gateway(2).await;

    let s = scope(&db, &coordinator.coordinator(), AccessMode::ReadWrite).await;
    let inserted = execute(
        s.conn(),
        "insert into rowguard.clinicians_patients (clinician_id, patient_id, care_role) \
         values ($1, $2, 'consulting')",
        [alice.id.into(), p.into()],
    )
    .await
    .expect("coordinators assign");
    assert_eq!(inserted, 1);
    let assignment = entities::clinician_patient::Entity::find_by_id((alice.id, p))
        .one(s.conn())
        .await
        .expect("read back")
        .expect("visible to the coordinator");
    assert_eq!(
        assignment.assigned_by,
        Some(coordinator.id),
        "signed by the coordinator"
    );
    s.commit().await.expect("commit");
    assert_eq!(
        patients_seen_by(&db, &alice.clinician()).await,
        BTreeSet::from([p])
    );

    let s = scope(&db, &coordinator.coordinator(), AccessMode::ReadWrite).await;
    let deleted = execute(
        s.conn(),
        "delete from rowguard.clinicians_patients where clinician_id = $1 and patient_id = $2",
        [alice.id.into(), p.into()],
    )
    .await
    .expect("coordinators unassign");
    assert_eq!(deleted, 1);
    s.commit().await.expect("commit");
    assert!(patients_seen_by(&db, &alice.clinician()).await.is_empty());
}

#[tokio::test]
async fn a_coordinator_cannot_put_themselves_on_a_care_team() {
    // A review: a coordinator whose identity provider also gave them the clinician role could
    // open any patient to themselves by assigning it. Assigning others is allowed (above).
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let coordinator = enroll(&owner, "coord").await;
    let p = admit(&owner, "P-1").await;
    let db = t.gateway(2).await;

    let s = scope(&db, &coordinator.coordinator(), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        "insert into rowguard.clinicians_patients (clinician_id, patient_id, care_role) \
         values ($1, $2, 'consulting')",
        [coordinator.id.into(), p.into()],
    )
    .await
    .expect_err("a coordinator's own assignment");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
    drop(s);
    assert!(
        patients_seen_by(&db, &coordinator.clinician())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn clinician_cannot_assign_anyone() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let p = admit(&owner, "P-1").await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        "insert into rowguard.clinicians_patients (clinician_id, patient_id, care_role) \
         values ($1, $2, 'attending')",
        [alice.id.into(), p.into()],
    )
    .await
    .expect_err("clinicians cannot assign themselves");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
    drop(s);
    assert!(patients_seen_by(&db, &alice.clinician()).await.is_empty());
}

#[tokio::test]
async fn clinician_cannot_unassign_anyone() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let bob = enroll(&owner, "bob").await;
    let p = admit(&owner, "P-1").await;
    assign(&owner, &alice, p).await;
    assign(&owner, &bob, p).await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        "delete from rowguard.clinicians_patients where clinician_id = $1",
        [bob.id.into()],
    )
    .await
    .expect_err("clinicians cannot change care teams");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
    drop(s);
    assert_eq!(
        patients_seen_by(&db, &bob.clinician()).await,
        BTreeSet::from([p])
    );
}

#[tokio::test]
async fn unenrolled_coordinator_can_neither_see_nor_assign() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let p = admit(&owner, "P-1").await;
    assign(&owner, &alice, p).await;
    let db = t.gateway(2).await;
    let nobody = stranger(AppRole::Coordinator);

    assert!(patients_seen_by(&db, &nobody).await.is_empty());
    let s = scope(&db, &nobody, AccessMode::ReadWrite).await;
    assert!(visible_assignments(&s).await.is_empty());
    let err = execute(
        s.conn(),
        "insert into rowguard.clinicians_patients (clinician_id, patient_id, care_role) \
         values ($1, $2, 'consulting')",
        [alice.id.into(), p.into()],
    )
    .await
    .expect_err("an assignment must be signed by an identified coordinator");
    assert!(
        err.to_string()
            .contains("violates row-level security policy"),
        "unexpected error: {err}"
    );
}

#[tokio::test]
async fn an_emergency_grant_opens_the_care_team_only_while_it_lasts() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let bob = enroll(&owner, "bob").await;
    let bobs_patient = admit(&owner, "B-1").await;
    assign(&owner, &bob, bobs_patient).await;
    let db = t.gateway(2).await;
    let before = scope(&db, &alice.clinician(), AccessMode::ReadOnly).await;
    assert_eq!(visible_assignments(&before).await, BTreeSet::new());
    assert_eq!(
        visible_clinicians(&before).await,
        BTreeSet::from([alice.id])
    );
    before.rollback().await.expect("rollback");

    break_glass(&db, &alice, bobs_patient).await;

    let during = scope(&db, &alice.clinician(), AccessMode::ReadOnly).await;
    assert_eq!(
        visible_assignments(&during).await,
        BTreeSet::from([(bob.id, bobs_patient)])
    );
    assert_eq!(
        visible_clinicians(&during).await,
        BTreeSet::from([alice.id, bob.id])
    );
    during.rollback().await.expect("rollback");

    // Past its end, on the database's clock: the grant's times move back instead of waiting.
    execute(
        &t.admin().await,
        "update rowguard.emergency_grants set granted_at = granted_at - interval '11 minutes', \
         expires_at = expires_at - interval '11 minutes'",
        [],
    )
    .await
    .expect("age the grant");
    let after = scope(&db, &alice.clinician(), AccessMode::ReadOnly).await;
    assert_eq!(visible_assignments(&after).await, BTreeSet::new());
    assert_eq!(visible_clinicians(&after).await, BTreeSet::from([alice.id]));
}

#[tokio::test]
async fn an_unenrolled_coordinator_cannot_unassign_anyone() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let p = admit(&owner, "P-1").await;
    assign(&owner, &alice, p).await;
    let db = t.gateway(2).await;

    let s = scope(&db, &stranger(AppRole::Coordinator), AccessMode::ReadWrite).await;
    execute(
        s.conn(),
        "delete from rowguard.clinicians_patients where clinician_id = $1",
        [alice.id.into()],
    )
    .await
    .expect("a delete that matches nothing");
    s.commit().await.expect("commit");
    let coordinator = enroll(&owner, "coord").await;
    let s = scope(&db, &coordinator.coordinator(), AccessMode::ReadOnly).await;
    assert_eq!(
        visible_assignments(&s).await,
        BTreeSet::from([(alice.id, p)]),
        "the assignment is still there"
    );
}

#[tokio::test]
async fn another_clinicians_emergency_grant_opens_nothing_to_me() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let carl = enroll(&owner, "carl").await;
    let bob = enroll(&owner, "bob").await;
    let bobs_patient = admit(&owner, "B-1").await;
    assign(&owner, &bob, bobs_patient).await;
    let db = t.gateway(2).await;
    break_glass(&db, &alice, bobs_patient).await;

    assert_eq!(
        patients_seen_by(&db, &alice.clinician()).await,
        BTreeSet::from([bobs_patient]),
        "the grant opens the patient to its holder"
    );
    assert!(
        patients_seen_by(&db, &carl.clinician()).await.is_empty(),
        "alice's grant opened the patient to carl"
    );
    let s = scope(&db, &carl.clinician(), AccessMode::ReadOnly).await;
    assert_eq!(
        query_count(
            s.conn(),
            "select count(*) as value from rowguard.emergency_grants"
        )
        .await
        .expect("count"),
        0,
        "carl sees alice's grant"
    );
    drop(s);
    let s = scope(&db, &alice.clinician(), AccessMode::ReadOnly).await;
    assert_eq!(
        query_count(
            s.conn(),
            "select count(*) as value from rowguard.emergency_grants"
        )
        .await
        .expect("count"),
        1,
        "alice sees her own grant"
    );
    drop(s);
    let s = scope(&db, &stranger(AppRole::Auditor), AccessMode::ReadOnly).await;
    assert_eq!(
        query_count(
            s.conn(),
            "select count(*) as value from rowguard.emergency_grants"
        )
        .await
        .expect("count"),
        0,
        "an auditor nobody enrolled sees the grant"
    );
}

/// `person` takes a ten-minute emergency grant for `patient`.
async fn break_glass(db: &Database, person: &Person, patient: Uuid) {
    let s = scope(db, &person.clinician(), AccessMode::ReadWrite).await;
    execute(
        s.conn(),
        "select rowguard.request_emergency_access($1, 'unresponsive in the emergency department', interval '10 minutes')",
        [patient.into()],
    )
    .await
    .expect("break glass");
    s.commit().await.expect("commit");
}
