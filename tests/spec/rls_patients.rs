//! Row level security on `patients`: who sees and edits which patient.

use std::collections::BTreeSet;

use rowguard::db::AccessMode;
use rowguard::principal::AppRole;
use rowguard_tests::TestDb;
use rowguard_tests::fixtures::{
    admit, admit_many, assign, deactivate, enroll, enroll_at, stranger,
};
use sea_orm::EntityTrait;

use crate::support::{
    INSUFFICIENT_PRIVILEGE, READ_ONLY_TRANSACTION, execute, patients_seen_by, query_count, scope,
    sqlstate, visible_patients,
};

#[tokio::test]
async fn clinician_sees_exactly_their_assigned_patients() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let bob = enroll(&owner, "bob").await;
    let alices = admit_many(&owner, "A", 3).await;
    let bobs = admit_many(&owner, "B", 2).await;
    let shared = admit(&owner, "S-1").await;
    for p in alices.iter().chain([&shared]) {
        assign(&owner, &alice, *p).await;
    }
    for p in bobs.iter().chain([&shared]) {
        assign(&owner, &bob, *p).await;
    }
    let db = t.gateway(2).await;

    let expected: BTreeSet<_> = alices.iter().copied().chain([shared]).collect();
    assert_eq!(patients_seen_by(&db, &alice.clinician()).await, expected);
}

#[tokio::test]
async fn clinician_cannot_read_another_clinicians_patient() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let bob = enroll(&owner, "bob").await;
    let bobs_patient = admit(&owner, "B-1").await;
    assign(&owner, &bob, bobs_patient).await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadOnly).await;
    let found = entities::patient::Entity::find_by_id(bobs_patient)
        .one(s.conn())
        .await
        .expect("lookup by id is not an error");
    assert!(
        found.is_none(),
        "an unassigned patient must not exist for alice"
    );
    assert!(
        patients_seen_by(&db, &bob.clinician())
            .await
            .contains(&bobs_patient)
    );
}

#[tokio::test]
async fn clinician_with_no_assignments_sees_no_patients() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let idle = enroll(&owner, "idle").await;
    let busy = enroll(&owner, "busy").await;
    for p in admit_many(&owner, "P", 3).await {
        assign(&owner, &busy, p).await;
    }
    let db = t.gateway(2).await;

    assert!(patients_seen_by(&db, &idle.clinician()).await.is_empty());
    assert_eq!(patients_seen_by(&db, &busy.clinician()).await.len(), 3);
}

#[tokio::test]
async fn unknown_identity_sees_no_patients_without_error() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    for p in admit_many(&owner, "P", 3).await {
        assign(&owner, &alice, p).await;
    }
    let db = t.gateway(2).await;

    // (Auditors hold no privilege on patients at all; see auditor_sees_no_patients.)
    for role in [AppRole::Clinician, AppRole::Coordinator] {
        let s = scope(&db, &stranger(role), AccessMode::ReadOnly).await;
        assert_eq!(s.clinician_id(), None);
        assert!(
            visible_patients(&s).await.is_empty(),
            "{role} stranger saw patients"
        );
    }
}

#[tokio::test]
async fn same_subject_at_another_issuer_is_a_different_person() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, "https://issuer-a.test.invalid", "same-sub").await;
    let mallory = enroll_at(&owner, "https://issuer-b.test.invalid", "same-sub").await;
    let alices = admit(&owner, "A-1").await;
    assign(&owner, &alice, alices).await;
    let db = t.gateway(2).await;

    assert_eq!(
        patients_seen_by(&db, &alice.clinician()).await,
        BTreeSet::from([alices])
    );
    assert!(patients_seen_by(&db, &mallory.clinician()).await.is_empty());
    let s = scope(&db, &mallory.clinician(), AccessMode::ReadOnly).await;
    assert_eq!(s.clinician_id(), Some(mallory.id));
}

#[tokio::test]
async fn deactivated_clinician_sees_no_patients() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let p = admit(&owner, "A-1").await;
    assign(&owner, &alice, p).await;
    let db = t.gateway(2).await;
    assert_eq!(patients_seen_by(&db, &alice.clinician()).await.len(), 1);

    deactivate(&owner, &alice).await;
    assert!(patients_seen_by(&db, &alice.clinician()).await.is_empty());
}

#[tokio::test]
async fn clinician_can_update_an_assigned_patient_and_the_version_moves() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let p = admit(&owner, "A-1").await;
    assign(&owner, &alice, p).await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadWrite).await;
    let updated = execute(
        s.conn(),
        "update rowguard.patients set clinical_notes = 'seen today' where id = $1 and version = 1",
        [p.into()],
    )
    .await
    .expect("update");
    assert_eq!(updated, 1);
    let row = entities::patient::Entity::find_by_id(p)
        .one(s.conn())
        .await
        .expect("read back")
        .expect("still visible");
    assert_eq!(
        (row.clinical_notes.as_str(), row.version),
        ("seen today", 2)
    );
    s.commit().await.expect("commit");
}

#[tokio::test]
async fn clinician_cannot_update_an_unassigned_patient() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let bob = enroll(&owner, "bob").await;
    let bobs = admit(&owner, "B-1").await;
    assign(&owner, &bob, bobs).await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadWrite).await;
    let updated = execute(
        s.conn(),
        "update rowguard.patients set clinical_notes = 'tampered' where id = $1",
        [bobs.into()],
    )
    .await
    .expect("an invisible row is not an error, just zero rows");
    assert_eq!(updated, 0);
    s.commit().await.expect("commit");

    let s = scope(&db, &bob.clinician(), AccessMode::ReadOnly).await;
    let row = entities::patient::Entity::find_by_id(bobs)
        .one(s.conn())
        .await
        .expect("read")
        .expect("bob sees his patient");
    assert_eq!(
        (row.clinical_notes.as_str(), row.version),
        ("synthetic notes for B-1", 1)
    );
}

/// The grants already keep `id` out of a clinician's reach; this proves the policy's WITH CHECK
/// holds on its own, should a later grant ever widen what a clinician may update.
#[tokio::test]
async fn clinician_cannot_move_a_patient_out_of_their_reach() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let p = admit(&owner, "A-1").await;
    assign(&owner, &alice, p).await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        "update rowguard.patients set id = gen_random_uuid() where id = $1",
        [p.into()],
    )
    .await
    .expect_err("the id column is not granted");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
    drop(s);

    let admin = t.admin().await;
    execute(
        &admin,
        "grant update (id) on rowguard.patients to rgtest_clinician",
        [],
    )
    .await
    .expect("widen the grant for this database only");
    let s = scope(&db, &alice.clinician(), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        "update rowguard.patients set id = gen_random_uuid() where id = $1",
        [p.into()],
    )
    .await
    .expect_err("WITH CHECK refuses a row alice could no longer see");
    assert!(
        err.to_string()
            .contains("violates row-level security policy"),
        "unexpected error: {err}"
    );
}

#[tokio::test]
async fn clinician_cannot_delete_a_patient() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let p = admit(&owner, "A-1").await;
    assign(&owner, &alice, p).await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        "delete from rowguard.patients where id = $1",
        [p.into()],
    )
    .await
    .expect_err("nobody deletes patients through the gateway");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
    drop(s);
    assert_eq!(patients_seen_by(&db, &alice.clinician()).await.len(), 1);
}

#[tokio::test]
async fn coordinator_sees_demographics_of_all_patients() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let coordinator = enroll(&owner, "coord").await;
    let alice = enroll(&owner, "alice").await;
    let assigned = admit(&owner, "A-1").await;
    assign(&owner, &alice, assigned).await;
    let unassigned = admit(&owner, "U-1").await;
    let db = t.gateway(2).await;

    assert_eq!(
        patients_seen_by(&db, &coordinator.coordinator()).await,
        BTreeSet::from([assigned, unassigned])
    );
}

#[tokio::test]
async fn coordinator_gets_a_permission_error_on_clinical_notes() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let coordinator = enroll(&owner, "coord").await;
    admit(&owner, "U-1").await;
    let db = t.gateway(2).await;

    let s = scope(&db, &coordinator.coordinator(), AccessMode::ReadOnly).await;
    let err = query_count(
        s.conn(),
        "select count(clinical_notes) as value from rowguard.patients",
    )
    .await
    .expect_err("clinical notes are not granted to coordinators");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
}

#[tokio::test]
async fn coordinator_cannot_update_patients() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let coordinator = enroll(&owner, "coord").await;
    let p = admit(&owner, "U-1").await;
    let db = t.gateway(2).await;

    let s = scope(&db, &coordinator.coordinator(), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        "update rowguard.patients set given_name = 'X' where id = $1",
        [p.into()],
    )
    .await
    .expect_err("coordinators have no update grant on patients");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
}

#[tokio::test]
async fn auditor_sees_no_patients() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let auditor = enroll(&owner, "auditor").await;
    admit(&owner, "U-1").await;
    let db = t.gateway(2).await;

    let s = scope(
        &db,
        &auditor.as_role(AppRole::Auditor),
        AccessMode::ReadOnly,
    )
    .await;
    let err = query_count(s.conn(), "select count(*) as value from rowguard.patients")
        .await
        .expect_err("auditors read the audit trail only");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
}

#[tokio::test]
async fn read_only_scope_refuses_writes() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let p = admit(&owner, "A-1").await;
    assign(&owner, &alice, p).await;
    let db = t.gateway(2).await;

    let s = scope(&db, &alice.clinician(), AccessMode::ReadOnly).await;
    let err = execute(
        s.conn(),
        "update rowguard.patients set clinical_notes = 'x' where id = $1",
        [p.into()],
    )
    .await
    .expect_err("a query operation cannot write");
    assert_eq!(sqlstate(err), READ_ONLY_TRANSACTION);
}

#[tokio::test]
async fn gateway_login_alone_reads_no_patient_rows() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let alice = enroll(&owner, "alice").await;
    let p = admit(&owner, "A-1").await;
    assign(&owner, &alice, p).await;
    let raw = t.gateway_pool(1).await;

    let err = query_count(&raw, "select count(*) as value from rowguard.patients")
        .await
        .expect_err("the login role has no privileges of its own");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
}

#[tokio::test]
async fn owner_role_cannot_read_patients_because_rls_is_forced() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    admit(&owner, "A-1").await;

    let seen = query_count(&owner, "select count(*) as value from rowguard.patients")
        .await
        .expect("the owner may query");
    assert_eq!(seen, 0);
    let admin = t.admin().await;
    let stored = query_count(&admin, "select count(*) as value from rowguard.patients")
        .await
        .expect("a superuser bypasses RLS");
    assert_eq!(stored, 1);
}
