//! HIPAA audit controls and emergency access: every PHI access is recorded with the data, the
//! trail is append-only and tamper-evident, and break-glass access works only through its path.

use std::collections::BTreeSet;

use migration::MigratorTrait;
use rowguard::audit::batch::{BatchedEvent, Reader};
use rowguard::audit::record::{AuditAction, AuditContext, AuditEntry, AuditOutcome, append};
use rowguard::db::{AccessMode, RequestIds};
use rowguard::graphql::{RequestBudget, RequestDb};
use rowguard::principal::AppRole;
use rowguard_tests::app::{GraphqlReply, TestApp};
use rowguard_tests::fixtures::{Person, admit, assign, enroll_at, stranger};
use rowguard_tests::issuer::TestIssuer;
use rowguard_tests::{TestDb, connect};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{INSUFFICIENT_PRIVILEGE, execute, query_count, query_text, scope, sqlstate};

/// One stored audit event, as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    action: String,
    outcome: String,
    purpose: String,
    patients: BTreeSet<Uuid>,
    clinician_id: Option<i32>,
}

fn event(
    action: &str,
    outcome: &str,
    purpose: &str,
    patients: &[Uuid],
    clinician: &Person,
) -> Event {
    Event {
        action: action.into(),
        outcome: outcome.into(),
        purpose: purpose.into(),
        patients: patients.iter().copied().collect(),
        clinician_id: Some(clinician.id),
    }
}

async fn events_of(admin: &DatabaseConnection, request_id: Uuid) -> Vec<Event> {
    let rows = admin
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "select action, outcome, purpose, patient_ids, clinician_id from rowguard_audit.events \
             where request_id = $1 order by id",
            [request_id.into()],
        ))
        .await
        .expect("reading events");
    let mut events: Vec<Event> = rows
        .iter()
        .map(|r| Event {
            action: r.try_get("", "action").expect("action"),
            outcome: r.try_get("", "outcome").expect("outcome"),
            purpose: r.try_get("", "purpose").expect("purpose"),
            patients: r
                .try_get::<Vec<Uuid>>("", "patient_ids")
                .expect("ids")
                .into_iter()
                .collect(),
            clinician_id: r.try_get("", "clinician_id").expect("clinician"),
        })
        .collect();
    events.sort();
    events
}

struct World {
    t: TestDb,
    issuer: TestIssuer,
    app: TestApp,
    admin: DatabaseConnection,
    alice: Person,
    carol: Person,
    dave: Person,
    a1: Uuid,
    a2: Uuid,
    s1: Uuid,
    b1: Uuid,
}

impl World {
    async fn new(adjust: impl FnOnce(&mut rowguard::settings::ApiSettings)) -> World {
        Self::serving(|s| adjust(&mut s.api)).await
    }

    async fn serving(adjust: impl FnOnce(&mut rowguard::settings::ServeSettings)) -> World {
        let t = TestDb::new().await;
        let issuer = TestIssuer::start().await;
        let owner = t.owner().await;
        let alice = enroll_at(&owner, issuer.url(), "alice").await;
        let bob = enroll_at(&owner, issuer.url(), "bob").await;
        let carol = enroll_at(&owner, issuer.url(), "carol").await;
        let dave = enroll_at(&owner, issuer.url(), "dave").await;
        let (a1, a2, s1, b1) = (
            admit(&owner, "A-1").await,
            admit(&owner, "A-2").await,
            admit(&owner, "S-1").await,
            admit(&owner, "B-1").await,
        );
        for p in [a1, a2, s1] {
            assign(&owner, &alice, p).await;
        }
        for p in [s1, b1] {
            assign(&owner, &bob, p).await;
        }
        let app = TestApp::start_adjusted(&t, &issuer, adjust).await;
        app.wait_for_keys().await;
        let admin = t.admin().await;
        World {
            t,
            issuer,
            app,
            admin,
            alice,
            carol,
            dave,
            a1,
            a2,
            s1,
            b1,
        }
    }

    fn token(&self, subject: &str, role: &str) -> String {
        self.issuer.token(subject).roles(&[role]).mint()
    }

    /// Runs a client operation; returns the reply and the server's request id, which finds its
    /// audit events.
    async fn run(&self, token: &str, operation: &str, variables: Value) -> (GraphqlReply, Uuid) {
        let body = json!({ "query": rowguard_tests::app::operation(operation), "operationName": operation, "variables": variables });
        self.send(token, body).await
    }

    async fn send(&self, token: &str, body: Value) -> (GraphqlReply, Uuid) {
        let reply = self
            .app
            .http
            .post(self.app.url("/graphql"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("gateway answers");
        let reply = GraphqlReply::from(reply).await;
        let id = reply
            .request_id
            .expect("every reply carries the request id");
        (reply, id)
    }
}

#[tokio::test]
async fn each_client_operation_writes_exactly_the_expected_audit_events() {
    let w = World::new(|_| {}).await;
    let (alice, carol) = (
        w.token("alice", "clinician"),
        w.token("carol", "coordinator"),
    );

    let (_, id) = w.run(&alice, "Me", json!({})).await;
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![],
        "reading yourself touches no PHI"
    );

    let (_, id) = w.run(&alice, "ClinicianDirectory", json!({})).await;
    assert_eq!(events_of(&w.admin, id).await, vec![]);

    let (reply, id) = w.run(&alice, "MyPatients", json!({})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![event(
            "read",
            "success",
            "treatment",
            &[w.a1, w.a2, w.s1],
            &w.alice
        )]
    );

    let (_, id) = w.run(&alice, "PatientDetail", json!({ "id": w.a1 })).await;
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![event("read", "success", "treatment", &[w.a1], &w.alice)]
    );

    let (reply, id) = w.run(&alice, "PatientDetail", json!({ "id": w.b1 })).await;
    assert_eq!(reply.data()["patient"], Value::Null);
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![event("read", "not_visible", "treatment", &[w.b1], &w.alice)]
    );

    let (_, id) = w.run(&carol, "PatientDetail", json!({ "id": w.a1 })).await;
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![
            event("read", "denied", "operations", &[w.a1], &w.carol),
            event("read", "success", "operations", &[w.a1], &w.carol),
        ]
    );

    let update = json!({ "input": { "id": w.a1, "expectedVersion": 1, "clinicalNotes": "seen" } });
    let (reply, id) = w.run(&alice, "UpdatePatient", update.clone()).await;
    assert_eq!(reply.data()["updatePatient"]["version"], 2);
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![
            event("read", "success", "treatment", &[w.a1], &w.alice),
            event("update", "success", "treatment", &[w.a1], &w.alice),
        ],
        "committed together with the data (the mutation also read the notes back)"
    );

    let (reply, id) = w.run(&alice, "UpdatePatient", update).await;
    assert_eq!(reply.code(), Some("CONFLICT"));
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![event("update", "conflict", "treatment", &[w.a1], &w.alice)]
    );

    let enroll = json!({ "input": { "issuer": w.issuer.url(), "subject": "erin", "displayName": "Dr. Erin" } });
    let (reply, id) = w.run(&carol, "EnrollClinician", enroll).await;
    let erin = reply.data()["enrollClinician"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![event("enroll", "success", "operations", &[], &w.carol)]
    );

    let pair =
        json!({ "input": { "clinicianId": erin, "patientId": w.b1, "careRole": "CONSULTING" } });
    let (_, id) = w.run(&carol, "AssignClinician", pair).await;
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![
            event("assign", "success", "operations", &[w.b1], &w.carol),
            event("read", "success", "operations", &[w.b1], &w.carol),
        ]
    );

    let pair = json!({ "input": { "clinicianId": erin, "patientId": w.b1 } });
    let (_, id) = w.run(&carol, "UnassignClinician", pair).await;
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![
            event("read", "success", "operations", &[w.b1], &w.carol),
            event("unassign", "success", "operations", &[w.b1], &w.carol),
        ]
    );
}

#[tokio::test]
async fn events_carry_the_actor_and_the_operation_but_no_phi() {
    let w = World::new(|_| {}).await;
    let (_, id) = w
        .run(&w.token("alice", "clinician"), "MyPatients", json!({}))
        .await;
    let row = w
        .admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "select issuer, subject, app_role, operation_name, to_jsonb(e)::text as everything \
             from rowguard_audit.events e where request_id = $1",
            [id.into()],
        ))
        .await
        .expect("query")
        .expect("one event");
    let issuer: String = row.try_get("", "issuer").expect("issuer");
    let subject: String = row.try_get("", "subject").expect("subject");
    let role: String = row.try_get("", "app_role").expect("role");
    let operation: String = row.try_get("", "operation_name").expect("operation");
    assert_eq!(
        (
            issuer.as_str(),
            subject.as_str(),
            role.as_str(),
            operation.as_str()
        ),
        (w.issuer.url(), "alice", "rgtest_clinician", "MyPatients")
    );
    let everything: String = row.try_get("", "everything").expect("row");
    for phi in ["A-1", "Patient-", "synthetic notes"] {
        assert!(
            !everything.contains(phi),
            "the event holds PHI ({phi}): {everything}"
        );
    }
}

#[tokio::test]
async fn a_failed_audit_write_fails_the_request_with_no_phi() {
    let w = World::new(|_| {}).await;
    // A read is recorded by the gateway's batch writer, after the read commits.
    execute(
        &w.admin,
        "revoke execute on function rowguard_audit.append_batch(jsonb, integer) from rgtest_gateway",
        [],
    )
    .await
    .expect("break the audit path");
    let (reply, _) = w
        .run(&w.token("alice", "clinician"), "MyPatients", json!({}))
        .await;
    assert_refused_without_phi(&reply);
}

#[tokio::test]
async fn a_failed_audit_write_fails_an_emergency_grant_holders_read_with_no_phi() {
    let w = World::new(|_| {}).await;
    let alice = w.token("alice", "clinician");
    let granted = request_access(&w, &alice, w.b1).await;
    assert_eq!(granted.data()["requestEmergencyAccess"]["active"], true);
    // A grant holder's read is recorded inside its own transaction (the emergency split).
    execute(
        &w.admin,
        "revoke execute on function rowguard_audit.append(text, text, uuid[], text, text, text) from rgtest_clinician",
        [],
    )
    .await
    .expect("break the audit path");
    let (reply, _) = w.run(&alice, "MyPatients", json!({})).await;
    assert_refused_without_phi(&reply);
}

#[tokio::test]
async fn a_read_whose_events_the_database_drops_as_they_are_written_is_refused() {
    // The trail's owner adds a trigger that silently drops every event naming A-1. `audit
    // verify` cannot see what was never stored; the writer sees fewer rows than events.
    let w = World::new(|_| {}).await;
    w.t.owner()
        .await
        .execute_unprepared(&format!(
            "create function rowguard_audit.drop_vip() returns trigger language plpgsql as $f$ \
               begin if new.patient_ids @> array['{}'::uuid] then return null; end if; return new; end $f$; \
             create trigger drop_vip before insert on rowguard_audit.events \
               for each row execute function rowguard_audit.drop_vip()",
            w.a1
        ))
        .await
        .expect("the owner's trigger");
    let (reply, _) = w
        .run(&w.token("alice", "clinician"), "MyPatients", json!({}))
        .await;
    assert_refused_without_phi(&reply);
}

fn assert_refused_without_phi(reply: &GraphqlReply) {
    assert_eq!(
        (reply.status, reply.code()),
        (503, Some("SERVICE_UNAVAILABLE")),
        "{}",
        reply.body
    );
    assert!(
        reply.body.get("data").is_none_or(Value::is_null),
        "no data without an audit record: {}",
        reply.body
    );
    assert!(!reply.body.to_string().contains("A-1"));
}

#[tokio::test]
async fn the_trail_refuses_update_delete_and_truncate_for_every_role_including_the_owner() {
    let w = World::new(|_| {}).await;
    w.run(&w.token("alice", "clinician"), "MyPatients", json!({}))
        .await;
    let owner = w.t.owner().await;
    for sql in [
        "update rowguard_audit.events set outcome = 'denied'",
        "delete from rowguard_audit.events",
        "truncate rowguard_audit.events",
        "update rowguard_audit.chain set hash = '\\x00'",
        "delete from rowguard_audit.chain",
        "truncate rowguard_audit.chain",
    ] {
        let err = execute(&owner, sql, []).await.expect_err(sql);
        assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE, "owner: {sql}");
    }
    let db = w.app.db.clone();
    for principal in [
        w.alice.clinician(),
        w.carol.coordinator(),
        w.dave.as_role(AppRole::Auditor),
    ] {
        for sql in [
            "update rowguard_audit.events set outcome = 'denied'",
            "delete from rowguard_audit.events",
            "truncate rowguard_audit.events",
        ] {
            let s = scope(&db, &principal, AccessMode::ReadWrite).await;
            let err = execute(s.conn(), sql, []).await.expect_err(sql);
            assert_eq!(
                sqlstate(err),
                INSUFFICIENT_PRIVILEGE,
                "{:?}: {sql}",
                principal.role
            );
        }
    }
}

#[tokio::test]
async fn no_one_can_write_an_event_in_someone_elses_name() {
    let w = World::new(|_| {}).await;
    let s = scope(&w.app.db, &w.alice.clinician(), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        "insert into rowguard_audit.events (clinician_id, app_role, action, outcome, purpose) \
         values (1, 'rgtest_clinician', 'read', 'success', 'treatment')",
        [],
    )
    .await
    .expect_err("no direct insert");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
    drop(s);
    // The append function takes no actor: whatever alice appends is stamped as alice.
    let s = scope(&w.app.db, &w.alice.clinician(), AccessMode::ReadWrite).await;
    let entry = AuditEntry {
        action: AuditAction::Read,
        outcome: AuditOutcome::Success,
        patients: BTreeSet::from([w.a1]),
    };
    append(s.conn(), &AuditContext::default(), &[entry])
        .await
        .expect("append");
    let request = s.request_id();
    s.commit().await.expect("commit");
    assert_eq!(
        events_of(&w.admin, request).await,
        vec![event("read", "success", "treatment", &[w.a1], &w.alice)]
    );
}

#[tokio::test]
async fn concurrent_reads_are_each_recorded_once_before_their_answers() {
    let w = World::new(|_| {}).await;
    let alice = w.token("alice", "clinician");
    // Eight: as many as one person may have in flight.
    let replies =
        futures::future::join_all((0..8).map(|_| w.run(&alice, "MyPatients", json!({})))).await;
    for (reply, request_id) in replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
        // Read as soon as the answer is in: the record committed before it was sent.
        assert_eq!(
            events_of(&w.admin, request_id).await,
            vec![event(
                "read",
                "success",
                "treatment",
                &[w.a1, w.a2, w.s1],
                &w.alice
            )]
        );
    }
}

async fn read_only(s: &rowguard::db::RlsScope) -> Option<String> {
    query_text(
        s.conn(),
        "select current_setting('transaction_read_only') as value",
    )
    .await
    .expect("setting")
}

#[tokio::test]
async fn a_read_runs_read_only_unless_its_reader_holds_a_live_emergency_grant() {
    let w = World::new(|_| {}).await;
    let s = scope(&w.app.db, &w.alice.clinician(), AccessMode::ReadThenRecord).await;
    assert_eq!(
        (read_only(&s).await.as_deref(), s.records_after_commit()),
        (Some("on"), true)
    );
    drop(s);

    let granted = request_access(&w, &w.token("alice", "clinician"), w.b1).await;
    assert_eq!(granted.data()["requestEmergencyAccess"]["active"], true);
    let s = scope(&w.app.db, &w.alice.clinician(), AccessMode::ReadThenRecord).await;
    assert_eq!(
        (read_only(&s).await.as_deref(), s.records_after_commit()),
        (Some("off"), false),
        "a grant holder's read splits emergency from treatment in its own transaction"
    );
}

#[tokio::test]
async fn a_grant_created_while_a_read_runs_is_recorded_as_emergency_access() {
    let w = World::new(|_| {}).await;
    // The read begins with no grant held: read-only, to be recorded after it commits.
    let s = scope(&w.app.db, &w.alice.clinician(), AccessMode::ReadThenRecord).await;
    assert!(s.records_after_commit());
    let granted = request_access(&w, &w.token("alice", "clinician"), w.b1).await;
    assert_eq!(granted.data()["requestEmergencyAccess"]["active"], true);
    // Read committed: the page query sees the grant the identity statement did not.
    let seen = crate::support::visible_patients(&s).await;
    assert!(seen.contains(&w.b1) && seen.contains(&w.a1), "{seen:?}");
    let request_id = s.request_id();
    let events = BatchedEvent::of(
        &Reader {
            ids: &RequestIds::from(request_id),
            clinician_id: s.clinician_id(),
            issuer: w.issuer.url(),
            subject: "alice",
            app_role: s.role(),
        },
        &AuditContext::default(),
        &[AuditEntry {
            action: AuditAction::Read,
            outcome: AuditOutcome::Success,
            patients: BTreeSet::from([w.a1, w.b1]),
        }],
    );
    s.commit().await.expect("commit");
    w.app
        .db
        .record_after_commit(events, None)
        .await
        .expect("recorded");
    assert_eq!(
        events_of(&w.admin, request_id).await,
        vec![
            event("read", "success", "emergency", &[w.b1], &w.alice),
            event("read", "success", "treatment", &[w.a1], &w.alice),
        ]
    );
}

/// alice's read of a1 (assigned) and b1 (open only through her grant), as a request records it.
fn a1_and_b1_read() -> impl Fn(&World) -> AuditEntry {
    |w| AuditEntry {
        action: AuditAction::Read,
        outcome: AuditOutcome::Success,
        patients: BTreeSet::from([w.a1, w.b1]),
    }
}

#[tokio::test]
async fn an_assignment_made_while_a_grant_holders_read_runs_leaves_that_read_emergency() {
    // Before: the split asked whether alice was assigned to b1 when the event was written, a
    // statement after the read; an assignment committed in between recorded the break-glass
    // read as treatment (21 of 24 races in review).
    let w = World::new(|_| {}).await;
    let granted = request_access(&w, &w.token("alice", "clinician"), w.b1).await;
    assert_eq!(granted.data()["requestEmergencyAccess"]["active"], true);
    let s = scope(&w.app.db, &w.alice.clinician(), AccessMode::ReadThenRecord).await;
    assert!(
        !s.records_after_commit(),
        "a grant holder records in its own transaction"
    );
    let seen = crate::support::visible_patients(&s).await;
    assert!(seen.contains(&w.b1), "{seen:?}");
    assign(&w.t.owner().await, &w.alice, w.b1).await;
    append(s.conn(), &AuditContext::default(), &[a1_and_b1_read()(&w)])
        .await
        .expect("recorded");
    let request_id = s.request_id();
    s.commit().await.expect("commit");
    assert_eq!(
        events_of(&w.admin, request_id).await,
        vec![
            event("read", "success", "emergency", &[w.b1], &w.alice),
            event("read", "success", "treatment", &[w.a1], &w.alice),
        ]
    );
}

#[tokio::test]
async fn an_assignment_made_before_a_batched_read_is_written_leaves_that_read_emergency() {
    // The batch path: a grant created while a read ran, then an assignment before the batch
    // was written. Before: recorded as treatment.
    let w = World::new(|_| {}).await;
    let s = scope(&w.app.db, &w.alice.clinician(), AccessMode::ReadThenRecord).await;
    assert!(s.records_after_commit());
    let granted = request_access(&w, &w.token("alice", "clinician"), w.b1).await;
    assert_eq!(granted.data()["requestEmergencyAccess"]["active"], true);
    let seen = crate::support::visible_patients(&s).await;
    assert!(seen.contains(&w.b1), "{seen:?}");
    let request_id = s.request_id();
    let events = BatchedEvent::of(
        &Reader {
            ids: &RequestIds::from(request_id),
            clinician_id: s.clinician_id(),
            issuer: w.issuer.url(),
            subject: "alice",
            app_role: s.role(),
        },
        &AuditContext::default(),
        &[a1_and_b1_read()(&w)],
    );
    s.commit().await.expect("commit");
    assign(&w.t.owner().await, &w.alice, w.b1).await;
    w.app
        .db
        .record_after_commit(events, None)
        .await
        .expect("recorded");
    assert_eq!(
        events_of(&w.admin, request_id).await,
        vec![
            event("read", "success", "emergency", &[w.b1], &w.alice),
            event("read", "success", "treatment", &[w.a1], &w.alice),
        ]
    );
}

/// One read event of alice's, as a request would hand it to the batch writer.
fn read_event(w: &World, request_id: Uuid) -> Vec<BatchedEvent> {
    BatchedEvent::of(
        &Reader {
            ids: &RequestIds::from(request_id),
            clinician_id: Some(w.alice.id),
            issuer: w.issuer.url(),
            subject: "alice",
            app_role: "rgtest_clinician",
        },
        &AuditContext::default(),
        &[AuditEntry {
            action: AuditAction::Read,
            outcome: AuditOutcome::Success,
            patients: BTreeSet::from([w.a1]),
        }],
    )
}

#[tokio::test]
async fn audit_writes_are_durable_where_commits_are_otherwise_asynchronous() {
    // A review: with `synchronous_commit = off` (a common tuning), a crash right after answers
    // had left lost their events, and `audit verify` could not tell. The request transaction
    // and the batch writer's statement each make their commit wait for the local flush.
    let w = World::new(|_| {}).await;
    execute(
        &w.admin,
        &format!(
            "alter role {} in database {} set synchronous_commit = off",
            rowguard_tests::test_roles().gateway(),
            w.t.name()
        ),
        [],
    )
    .await
    .expect("asynchronous commits for the gateway");
    let db = w.t.gateway(1).await;
    let s = scope(&db, &w.alice.clinician(), AccessMode::ReadAndAudit).await;
    assert_eq!(
        query_text(
            s.conn(),
            "select current_setting('synchronous_commit') as value"
        )
        .await
        .expect("setting")
        .as_deref(),
        Some("local"),
        "a request's transaction"
    );
    drop(s);
    let gateway = connect(&w.t.gateway_url(), 1, None).await;
    let txn = sea_orm::TransactionTrait::begin(&gateway)
        .await
        .expect("begin");
    let statement =
        rowguard::audit::batch::append_batch_statement(&read_event(&w, Uuid::new_v4()), 5000)
            .expect("statement");
    txn.query_one_raw(statement).await.expect("append");
    assert_eq!(
        query_text(
            &txn,
            "select current_setting('synchronous_commit') as value"
        )
        .await
        .expect("setting")
        .as_deref(),
        Some("local"),
        "the batch writer's statement"
    );
    txn.rollback().await.expect("rollback");
    execute(
        &w.admin,
        &format!(
            "alter role {} in database {} reset synchronous_commit",
            rowguard_tests::test_roles().gateway(),
            w.t.name()
        ),
        [],
    )
    .await
    .expect("reset");
}

/// Longer than any spec waits for a batch: a writer that waited for its bound instead of for
/// the reads running (set here directly; `serve` allows at most 100 ms).
const WAIT_FOR_EVER_MS: u64 = 600_000;

/// Records `events` through the batch writer, or panics if that takes 10 s.
async fn recorded(
    w: &World,
    events: Vec<BatchedEvent>,
    read: Option<rowguard::audit::batch::ReadInFlight>,
) {
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        w.app.db.record_after_commit(events, read),
    )
    .await
    .expect("the batch writer kept waiting")
    .expect("recorded");
}

/// How many write transactions appended the events of these requests.
async fn write_transactions(w: &World, ids: &[Uuid]) -> i64 {
    let ids: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    query_count(
        &w.admin,
        &format!(
            "select count(distinct txid) as value from rowguard_audit.events \
             where request_id in ({})",
            ids.join(", ")
        ),
    )
    .await
    .expect("counting write transactions")
}

#[tokio::test]
async fn reads_running_together_are_recorded_by_one_write_transaction_once_the_last_hands_in() {
    let w = World::serving(|s| s.audit.batch_wait_ms = WAIT_FOR_EVER_MS).await;
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let reads: Vec<_> = ids.iter().map(|_| w.app.db.reading()).collect();
    // 40 ms apart: without the wait, each would have been written (and answered) before the
    // next arrived; with a wait that ran to its bound, none would be answered in time.
    let w = &w;
    futures::future::join_all(ids.iter().zip(reads).enumerate().map(
        |(i, (&id, read))| async move {
            tokio::time::sleep(std::time::Duration::from_millis(40 * i as u64)).await;
            recorded(w, read_event(w, id), read).await;
        },
    ))
    .await;
    assert_eq!(write_transactions(w, &ids).await, 1);
}

#[tokio::test]
async fn a_read_that_starts_while_the_writer_waits_joins_the_next_batch() {
    let w = World::serving(|s| s.audit.batch_wait_ms = WAIT_FOR_EVER_MS).await;
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let (first_read, second_read) = (w.app.db.reading(), w.app.db.reading());
    let w = &w;
    let (_, later_read) = tokio::join!(recorded(w, read_event(w, first), first_read), async move {
        // The writer now holds the first read's events and waits for the second.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let later = w.app.db.reading();
        recorded(w, read_event(w, second), second_read).await;
        later
    },);
    // Still running, and the batch was written without it.
    assert!(later_read.is_some());
    assert_eq!(write_transactions(w, &[first, second]).await, 1);
}

#[tokio::test]
async fn a_read_that_never_hands_in_its_events_holds_a_batch_only_for_the_wait() {
    let w = World::serving(|s| s.audit.batch_wait_ms = 50).await;
    let _stuck = w.app.db.reading();
    let id = Uuid::new_v4();
    let started = std::time::Instant::now();
    recorded(&w, read_event(&w, id), None).await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(50),
        "the writer did not wait for the running read"
    );
    assert_eq!(events_of(&w.admin, id).await.len(), 1);
}

#[tokio::test]
async fn reads_that_fail_or_read_no_phi_leave_no_batch_waiting() {
    let w = World::serving(|s| s.audit.batch_wait_ms = WAIT_FOR_EVER_MS).await;
    let token = w.token("alice", "clinician");
    // A field clinicians may not read fails the request (rolled back, recorded on its own);
    // the caller's own profile holds no PHI, so nothing is recorded.
    let (failed, _) = w
        .send(
            &token,
            json!({ "query": "{ patients(first: 1) { nodes { id } } auditEvents(first: 1) { nodes { id } } }" }),
        )
        .await;
    assert!(failed.body["errors"].is_array(), "{}", failed.body);
    let (no_phi, _) = w.send(&token, json!({ "query": "{ me { id } }" })).await;
    assert!(no_phi.body["errors"].is_null(), "{}", no_phi.body);
    // Had either left its announcement behind, this batch would wait for ever.
    recorded(&w, read_event(&w, Uuid::new_v4()), None).await;
}

#[tokio::test]
async fn an_event_the_trail_refuses_fails_only_its_own_request() {
    let w = World::new(|_| {}).await;
    let record = |operation: &str| {
        let events = BatchedEvent::of(
            &Reader {
                ids: &RequestIds::from(Uuid::new_v4()),
                clinician_id: Some(w.alice.id),
                issuer: w.issuer.url(),
                subject: "alice",
                app_role: "rgtest_clinician",
            },
            &AuditContext {
                operation_name: Some(operation.to_owned()),
                ..AuditContext::default()
            },
            &[AuditEntry {
                action: AuditAction::Read,
                outcome: AuditOutcome::Success,
                patients: BTreeSet::from([w.a1]),
            }],
        );
        w.app.db.record_after_commit(events, None)
    };
    // PostgreSQL's jsonb refuses a NUL character: queued together, only that request fails.
    let (bad, good) = tokio::join!(
        record("Bad\u{0}Name"),
        futures::future::join_all((0..8).map(|_| record("MyPatients")))
    );
    assert!(bad.is_err());
    assert!(good.iter().all(Result::is_ok), "{good:?}");
}

#[tokio::test]
async fn only_the_gateways_login_role_appends_a_batch_and_only_for_a_reading_role() {
    let w = World::new(|_| {}).await;
    let batch = |role: &str, clinician: i32| {
        json!([{
            "request_id": Uuid::new_v4(), "clinician_id": clinician, "issuer": w.issuer.url(),
            "subject": "alice", "app_role": role, "action": "read", "outcome": "success",
            "patient_ids": [w.a1]
        }])
        .to_string()
    };
    let append = "select rowguard_audit.append_batch($1::jsonb)";

    // An application role cannot name another actor through the batch.
    let s = scope(&w.app.db, &w.alice.clinician(), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        append,
        [batch("rgtest_clinician", w.carol.id).into()],
    )
    .await
    .expect_err("no batch as an application role");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
    drop(s);

    let gateway = w.t.gateway_pool(1).await;
    let before = query_count(
        &w.admin,
        "select count(*) as value from rowguard_audit.events",
    )
    .await
    .expect("count");
    for role in ["rgtest_clinician_writer", "rgtest_owner", "postgres"] {
        let err = execute(&gateway, append, [batch(role, w.alice.id).into()])
            .await
            .expect_err("only reading roles");
        assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE, "{role}");
    }
    assert_eq!(
        query_count(
            &w.admin,
            "select count(*) as value from rowguard_audit.events"
        )
        .await
        .expect("count"),
        before,
        "a refused batch writes nothing"
    );
    execute(
        &gateway,
        append,
        [batch("rgtest_clinician", w.alice.id).into()],
    )
    .await
    .expect("the gateway records a clinician's read");
    assert_eq!(
        query_text(
            &w.admin,
            "select purpose as value from rowguard_audit.events order by id desc limit 1"
        )
        .await
        .expect("purpose")
        .as_deref(),
        Some("treatment"),
        "the purpose follows from the role, not from the batch"
    );
}

/// Appends `count` events from `tasks` concurrent request scopes.
pub async fn fill(t: &TestDb, people: &[Person], count: usize, tasks: usize) {
    let db = t.gateway(tasks as u32).await;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let db = db.clone();
        let person = people[task % people.len()].clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..count / tasks {
                let s = db
                    .scope(&person.clinician(), AccessMode::ReadWrite, Uuid::new_v4())
                    .await
                    .expect("scope");
                let entry = AuditEntry {
                    action: AuditAction::Read,
                    outcome: AuditOutcome::Success,
                    patients: BTreeSet::new(),
                };
                append(s.conn(), &AuditContext::default(), &[entry])
                    .await
                    .expect("append");
                s.commit().await.expect("commit");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("task");
    }
}

// Break-glass ------------------------------------------------------------------------------------

const REASON: &str =
    "Unconscious patient in the emergency department, no assigned clinician reachable";

#[tokio::test]
async fn a_patient_open_through_an_emergency_grant_cannot_be_changed_and_says_so() {
    // The grant opens the patient for reading; an update is refused as forbidden, not answered
    // as a version conflict that no retry could ever resolve.
    let w = World::new(|_| {}).await;
    let alice = w.token("alice", "clinician");
    let granted = request_access(&w, &alice, w.b1).await;
    assert_eq!(
        granted.data()["requestEmergencyAccess"]["active"],
        true,
        "{}",
        granted.body
    );
    let update = w
        .app
        .graphql(
            Some(&alice),
            "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { version } }",
            json!({ "i": { "id": w.b1, "expectedVersion": 1, "clinicalNotes": "changed under a grant" } }),
        )
        .await;
    assert_eq!(update.code(), Some("FORBIDDEN"), "{}", update.body);
    assert!(
        update.data().is_null() || update.data()["updatePatient"].is_null(),
        "{}",
        update.body
    );
    let notes = query_text(
        &w.admin,
        &format!(
            "select clinical_notes as value from rowguard.patients where id = '{}'",
            w.b1
        ),
    )
    .await
    .expect("notes");
    assert_ne!(notes.as_deref(), Some("changed under a grant"));
}

async fn request_access(w: &World, token: &str, patient: Uuid) -> GraphqlReply {
    let query = "mutation($p: ID!, $r: String!) { requestEmergencyAccess(input: { patientId: $p, reason: $r }) { id active expiresAt } }";
    w.app
        .graphql(Some(token), query, json!({ "p": patient, "r": REASON }))
        .await
}

/// Moves every emergency grant's times back so that it has ended (on the database's clock).
async fn end_grants(w: &World) {
    execute(
        &w.admin,
        "update rowguard.emergency_grants set granted_at = granted_at - interval '25 hours', \
         expires_at = expires_at - interval '25 hours'",
        [],
    )
    .await
    .expect("end the grants");
}

async fn mrn_of(w: &World, token: &str, patient: Uuid) -> Value {
    let reply = w
        .app
        .graphql(
            Some(token),
            "query($id: ID!) { patient(id: $id) { mrn clinicalNotes } }",
            json!({ "id": patient }),
        )
        .await;
    reply.data()["patient"]["mrn"].clone()
}

#[tokio::test]
async fn break_glass_opens_one_patient_audited_as_emergency_and_an_auditor_reviews_it() {
    let w = World::new(|_| {}).await;
    let alice = w.token("alice", "clinician");
    assert_eq!(
        mrn_of(&w, &alice, w.b1).await,
        Value::Null,
        "denied before the grant"
    );

    let granted = request_access(&w, &alice, w.b1).await;
    assert_eq!(
        granted.data()["requestEmergencyAccess"]["active"],
        true,
        "{}",
        granted.body
    );
    let grant_id = granted.data()["requestEmergencyAccess"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let (reply, request_id) = w
        .send(&alice, json!({ "query": "query($id: ID!) { patient(id: $id) { mrn } }", "variables": { "id": w.b1 } }))
        .await;
    assert_eq!(
        reply.data()["patient"]["mrn"],
        "B-1",
        "allowed during the grant"
    );
    assert_eq!(
        events_of(&w.admin, request_id).await,
        vec![event("read", "success", "emergency", &[w.b1], &w.alice)]
    );

    // Only that patient opened.
    let chens = admit(&w.t.owner().await, "C-1").await;
    assert_eq!(mrn_of(&w, &alice, chens).await, Value::Null);

    let dave = w.token("dave", "auditor");
    let pending = w
        .app
        .graphql(
            Some(&dave),
            "{ emergencyAccessGrants(pendingReview: true) { id patientId reason } }",
            json!({}),
        )
        .await;
    assert_eq!(
        pending.data()["emergencyAccessGrants"][0]["id"],
        grant_id.as_str(),
        "{}",
        pending.body
    );
    assert_eq!(pending.data()["emergencyAccessGrants"][0]["reason"], REASON);

    // Reviewed once it has ended, so that the review covers everything done under it.
    end_grants(&w).await;
    let reviewed = w
        .app
        .graphql(
            Some(&dave),
            "mutation($g: ID!) { reviewEmergencyAccess(grantId: $g) { reviewedAt reviewedBy } }",
            json!({ "g": grant_id }),
        )
        .await;
    assert_eq!(
        reviewed.data()["reviewEmergencyAccess"]["reviewedBy"],
        w.dave.id.to_string(),
        "{}",
        reviewed.body
    );
    let pending = w
        .app
        .graphql(
            Some(&dave),
            "{ emergencyAccessGrants(pendingReview: true) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(pending.data()["emergencyAccessGrants"], json!([]));
}

#[tokio::test]
async fn an_emergency_reason_of_invisible_or_terminal_control_characters_is_refused() {
    // A review: the reason is all an auditor judges a grant by, and zero-width spaces passed
    // the length and word counts, as did escape sequences that repaint an auditor's terminal.
    let w = World::new(|_| {}).await;
    let alice = w.token("alice", "clinician");
    let query = "mutation($p: ID!, $r: String!) { requestEmergencyAccess(input: { patientId: $p, reason: $r }) { id } }";
    for reason in [
        "\u{200b} \u{200b} \u{200b} \u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}",
        "\u{1b}[2J\u{1b}[31mAPPROVED by the auditor on call",
        "Cardiac arrest in ward 3 \u{202e}detalsnart",
        // The re-review: a carriage return paints what follows over what precedes it; blanks
        // that are not whitespace, and combining marks piled up, are no text either.
        "personal curiosity about my neighbour\rCardiac arrest in ER bay 3, chart needed now",
        "a b c \u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}\u{2800}",
        "Cardiac arrest in ward 3, Z\u{0489}\u{0489}\u{0489}\u{0489}\u{0489}\u{0489}algo",
    ] {
        let reply = w
            .app
            .graphql(Some(&alice), query, json!({ "p": w.b1, "r": reason }))
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, Some("BAD_USER_INPUT")),
            "{reason:?}: {}",
            reply.body
        );
    }
    assert_eq!(
        query_count(
            &w.admin,
            "select count(*) as value from rowguard.emergency_grants"
        )
        .await
        .expect("count"),
        0,
        "nothing granted"
    );
    let multi_line =
        "Unconscious patient in the emergency department,\nno assigned clinician on site";
    let reply = w
        .app
        .graphql(Some(&alice), query, json!({ "p": w.b1, "r": multi_line }))
        .await;
    assert_eq!(reply.status, 200, "line breaks are text: {}", reply.body);
}

#[tokio::test]
async fn the_review_queue_lists_the_oldest_pending_grant_first_however_many_follow() {
    // A review: the list was the newest 1,000, so a clinician who then requested a thousand
    // more grants pushed the one they wanted nobody to look at out of the auditor's queue.
    let w = World::new(|_| {}).await;
    let alice = w.token("alice", "clinician");
    let first = request_access(&w, &alice, w.b1).await;
    let first_id = first.data()["requestEmergencyAccess"]["id"].clone();
    assert!(first_id.is_string(), "{}", first.body);
    execute(
        &w.admin,
        "insert into rowguard.emergency_grants (clinician_id, patient_id, reason, expires_at) \
         select g.clinician_id, g.patient_id, g.reason, g.expires_at \
         from rowguard.emergency_grants g, generate_series(1, 1000)",
        [],
    )
    .await
    .expect("a thousand more");
    let dave = w.token("dave", "auditor");
    let pending = w
        .app
        .graphql(
            Some(&dave),
            "{ emergencyAccessGrants(pendingReview: true) { id } }",
            json!({}),
        )
        .await;
    let listed = pending.data()["emergencyAccessGrants"]
        .as_array()
        .expect("a list");
    assert_eq!(listed.len(), 1000, "{}", pending.body);
    assert_eq!(listed[0]["id"], first_id, "the oldest first");
}

/// A request of `who` that read `patient` and then failed in another field, held open so that
/// the test can change the world between the read and its recording.
async fn a_read_that_then_fails(w: &World, who: &Person, patient: Uuid) -> (RequestDb, Uuid) {
    let request_id = Uuid::new_v4();
    let request = RequestDb::new(
        w.app.db.clone(),
        who.clinician(),
        false,
        RequestIds::from(request_id),
        Some(AuditContext {
            operation_name: Some("ReadThenFail".into()),
            persisted_query_hash: None,
            client_id: None,
            failures: Default::default(),
        }),
        RequestBudget::starting_now(50, 1 << 20, std::time::Duration::from_secs(30)),
    );
    {
        let conn = request.conn().await.expect("the request's scope");
        let seen = query_count(
            &conn,
            &format!("select count(*) as value from rowguard.patients where id = '{patient}'"),
        )
        .await
        .expect("the read");
        assert_eq!(seen, 1, "the patient is visible to the read");
    }
    request.record(AuditAction::Read, AuditOutcome::Success, [patient]);
    (request, request_id)
}

#[tokio::test]
async fn a_failed_request_records_its_read_with_the_reader_the_read_ran_as() {
    // A review: a request with an error was recorded in a new transaction that looked the
    // person up again, so a clinician deactivated meanwhile was recorded as nobody.
    let w = World::new(|_| {}).await;
    let (request, request_id) = a_read_that_then_fails(&w, &w.alice, w.a1).await;
    execute(
        &w.admin,
        "update rowguard.clinicians set active = false where id = $1",
        [w.alice.id.into()],
    )
    .await
    .expect("deactivated");
    request.finish(true).await.expect("recorded");
    assert_eq!(
        events_of(&w.admin, request_id).await,
        vec![event("read", "success", "treatment", &[w.a1], &w.alice)]
    );
}

#[tokio::test]
async fn a_failed_request_records_a_read_through_a_grant_that_expired_since_as_emergency() {
    // A review: the purpose was decided again when the failed request was recorded, so a read
    // made through a grant that expired in between was recorded as treatment.
    let w = World::new(|_| {}).await;
    execute(
        &w.admin,
        "insert into rowguard.emergency_grants (clinician_id, patient_id, reason, granted_at, expires_at) \
         values ($1, $2, 'Unconscious patient, no assigned clinician on site', \
                 now() - interval '10 minutes', now() + interval '1 hour')",
        [w.alice.id.into(), w.b1.into()],
    )
    .await
    .expect("a grant");
    let (request, request_id) = a_read_that_then_fails(&w, &w.alice, w.b1).await;
    execute(
        &w.admin,
        "update rowguard.emergency_grants set expires_at = now() - interval '1 second'",
        [],
    )
    .await
    .expect("expired");
    request.finish(true).await.expect("recorded");
    assert_eq!(
        events_of(&w.admin, request_id).await,
        vec![event("read", "success", "emergency", &[w.b1], &w.alice)]
    );
}

#[tokio::test]
async fn a_read_whose_answer_a_failing_non_null_field_nulled_is_recorded_as_an_error() {
    // A review: `patients` is Non-Null, so its error nulls the whole answer; the patient the
    // other field read was never shown, yet it was recorded as a successful disclosure.
    let w = World::new(|_| {}).await;
    let alice = w.token("alice", "clinician");
    let (reply, request_id) = w
        .send(
            &alice,
            json!({ "query": "query($id: ID!) { a: patient(id: $id) { mrn } b: patients(first: 2, after: \"garbage\") { edges { node { id } } } }", "variables": { "id": w.a1 } }),
        )
        .await;
    assert_eq!(reply.body["data"], Value::Null, "{}", reply.body);
    assert_eq!(
        events_of(&w.admin, request_id).await,
        vec![event("read", "error", "treatment", &[w.a1], &w.alice)]
    );
    // The re-review: nulled up to a nullable root field, the answer is `{"patient": null}`.
    let (reply, request_id) = w
        .send(
            &alice,
            json!({ "query": "query($id: ID!) { patient(id: $id) { mrn careTeam { clinician { patients(after: \"garbage\") { edges { node { id } } } } } } }", "variables": { "id": w.a1 } }),
        )
        .await;
    assert_eq!(
        reply.body["data"],
        json!({ "patient": null }),
        "{}",
        reply.body
    );
    assert_eq!(
        events_of(&w.admin, request_id).await,
        vec![event("read", "error", "treatment", &[w.a1], &w.alice)]
    );
}

#[tokio::test]
async fn a_read_appended_in_its_own_transaction_is_recorded_when_the_commit_fails() {
    // A re-review: the reads of a grant holder are appended inside their transaction, so a
    // COMMIT that failed took the record with it and the request left no trace.
    let w = World::new(|_| {}).await;
    let alice = w.token("alice", "clinician");
    let granted = request_access(&w, &alice, w.b1).await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    // A deferred check that fails every request transaction's COMMIT once it has appended an
    // event (the batch writer's own transactions carry no request id).
    for sql in [
        "create function public.refuse_at_commit() returns trigger language plpgsql as \
         $$ begin raise exception 'refused at commit'; end $$",
        "create constraint trigger refuse_at_commit after insert on rowguard_audit.events \
         deferrable initially deferred for each row \
         when (coalesce(current_setting('app.request_id', true), '') <> '') \
         execute function public.refuse_at_commit()",
    ] {
        execute(&w.admin, sql, []).await.expect(sql);
    }
    let (reply, request_id) = w
        .send(
            &alice,
            json!({ "query": "query($id: ID!) { patient(id: $id) { mrn } }", "variables": { "id": w.b1 } }),
        )
        .await;
    assert!(
        reply.code().is_some(),
        "the answer is withheld: {}",
        reply.body
    );
    assert_eq!(reply.body["data"], Value::Null, "{}", reply.body);
    assert_eq!(
        events_of(&w.admin, request_id).await,
        vec![event("read", "error", "emergency", &[w.b1], &w.alice)]
    );
}

#[tokio::test]
async fn break_glass_ends_when_the_grant_expires() {
    let w = World::new(|s| s.emergency_access_secs = 600).await;
    let alice = w.token("alice", "clinician");
    let granted = request_access(&w, &alice, w.b1).await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    let expires: chrono::DateTime<chrono::Utc> =
        granted.data()["requestEmergencyAccess"]["expiresAt"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("expiresAt");
    let length = expires - chrono::Utc::now();
    assert!(
        length > chrono::TimeDelta::seconds(590) && length <= chrono::TimeDelta::seconds(600),
        "the grant lasts the configured 600 s: {length}"
    );
    assert_eq!(mrn_of(&w, &alice, w.b1).await, "B-1");
    // Ten minutes later, on the database's clock (the grant's times move back instead).
    execute(
        &w.admin,
        "update rowguard.emergency_grants set granted_at = granted_at - interval '11 minutes', \
         expires_at = expires_at - interval '11 minutes'",
        [],
    )
    .await
    .expect("age the grant");
    assert_eq!(
        mrn_of(&w, &alice, w.b1).await,
        Value::Null,
        "denied after expiry"
    );
}

#[tokio::test]
async fn a_live_emergency_grant_cannot_be_signed_off_until_it_has_ended() {
    let w = World::new(|_| {}).await;
    let granted = request_access(&w, &w.token("alice", "clinician"), w.b1).await;
    let grant = granted.data()["requestEmergencyAccess"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", granted.body))
        .to_owned();
    let dave = w.token("dave", "auditor");
    let review = "mutation($g: ID!) { reviewEmergencyAccess(grantId: $g) { reviewedBy } }";
    let early = w
        .app
        .graphql(Some(&dave), review, json!({ "g": grant }))
        .await;
    assert_eq!(early.code(), Some("CONFLICT"), "{}", early.body);
    // Still waiting for its review: what alice does in the rest of the hour is covered by it.
    let pending = w
        .app
        .graphql(
            Some(&dave),
            "{ emergencyAccessGrants(pendingReview: true) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        pending.data()["emergencyAccessGrants"][0]["id"],
        grant.as_str(),
        "{}",
        pending.body
    );

    // Ended ten minutes ago: a request begun under it may still be recording what it did.
    execute(
        &w.admin,
        "update rowguard.emergency_grants set granted_at = granted_at - interval '70 minutes', \
         expires_at = expires_at - interval '70 minutes'",
        [],
    )
    .await
    .expect("end the grant ten minutes ago");
    let recent = w
        .app
        .graphql(Some(&dave), review, json!({ "g": grant }))
        .await;
    assert_eq!(recent.code(), Some("CONFLICT"), "{}", recent.body);

    end_grants(&w).await;
    let done = w
        .app
        .graphql(Some(&dave), review, json!({ "g": grant }))
        .await;
    assert_eq!(
        done.data()["reviewEmergencyAccess"]["reviewedBy"],
        w.dave.id.to_string(),
        "{}",
        done.body
    );
}

#[tokio::test]
async fn break_glass_needs_a_real_reason() {
    let w = World::new(|_| {}).await;
    let query = "mutation($p: ID!) { requestEmergencyAccess(input: { patientId: $p, reason: \"need it\" }) { id } }";
    let reply = w
        .app
        .graphql(
            Some(&w.token("alice", "clinician")),
            query,
            json!({ "p": w.b1 }),
        )
        .await;
    assert_eq!(reply.code(), Some("BAD_USER_INPUT"), "{}", reply.body);
    assert!(
        reply.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("input.reason")
    );
}

#[tokio::test]
async fn grants_cannot_be_created_or_extended_outside_the_break_glass_path() {
    let w = World::new(|_| {}).await;
    request_access(&w, &w.token("alice", "clinician"), w.b1).await;
    for sql in [
        "insert into rowguard.emergency_grants (clinician_id, patient_id, reason, expires_at) \
         select id, id::text::uuid, 'xxxxxxxxxxxxxxxxxxxxxxxx', now() + interval '1 day' from rowguard.clinicians limit 0",
        "update rowguard.emergency_grants set expires_at = now() + interval '1 day'",
        "delete from rowguard.emergency_grants",
    ] {
        let s = scope(&w.app.db, &w.alice.clinician(), AccessMode::ReadWrite).await;
        let err = execute(s.conn(), sql, []).await.expect_err(sql);
        assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE, "{sql}");
    }
    let s = scope(&w.app.db, &w.carol.coordinator(), AccessMode::ReadWrite).await;
    let err = execute(
        s.conn(),
        "select rowguard.request_emergency_access($1, 'a long enough reason here', '1 hour')",
        [w.a1.into()],
    )
    .await
    .expect_err("only clinicians may break the glass");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
}

// Auditor API -----------------------------------------------------------------------------------

#[tokio::test]
async fn auditors_filter_the_trail_and_get_a_patients_access_report() {
    let w = World::new(|_| {}).await;
    let alice = w.token("alice", "clinician");
    w.run(&alice, "PatientDetail", json!({ "id": w.a2 })).await;
    w.run(&alice, "MyPatients", json!({})).await;
    let dave = w.token("dave", "auditor");
    let events = w
        .app
        .graphql(
            Some(&dave),
            "query($p: ID!) { auditEvents(filter: { patientId: $p, action: READ }) { edges { node { action outcome purpose patientIds clinicianId operationName } } } }",
            json!({ "p": w.a2 }),
        )
        .await;
    let alice_id = w.alice.id.to_string();
    let edges = events.data()["auditEvents"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{}", events.body));
    assert_eq!(edges.len(), 2, "{}", events.body);
    assert!(
        edges
            .iter()
            .all(|e| e["node"]["clinicianId"] == alice_id.as_str())
    );

    let report = w
        .app
        .graphql(Some(&dave), "query($p: ID!) { patientAccessReport(patientId: $p) { clinicianName action purpose } }", json!({ "p": w.a2 }))
        .await;
    assert_eq!(
        report.data()["patientAccessReport"],
        json!([
            { "clinicianName": "Dr. alice", "action": "READ", "purpose": "TREATMENT" },
            { "clinicianName": "Dr. alice", "action": "READ", "purpose": "TREATMENT" },
            // Reading the trail about the patient is itself an access to their record.
            { "clinicianName": "Dr. dave", "action": "AUDIT_READ", "purpose": "AUDIT" },
        ]),
        "{}",
        report.body
    );
}

#[tokio::test]
async fn a_patients_accounting_is_refused_rather_than_cut_short_and_can_be_asked_for_a_period() {
    // Before: the report and the FHIR bundle answered the oldest 10,000 events and silently
    // left the rest out, so a flood of lookups hid every later access.
    let w = World::new(|_| {}).await;
    w.admin
        .execute_unprepared(&format!(
            "insert into rowguard_audit.events (occurred_at, app_role, action, outcome, patient_ids, purpose) \
             select now() - interval '1 hour', 'rgtest_clinician', 'read', 'not_visible', array['{}'::uuid], 'treatment' \
             from generate_series(1, 10001)",
            w.a2
        ))
        .await
        .expect("an old flood of lookups");
    let alice = w.token("alice", "clinician");
    let (later, _) = w.run(&alice, "PatientDetail", json!({ "id": w.a2 })).await;
    assert_eq!(later.status, 200, "{}", later.body);
    let dave = w.token("dave", "auditor");
    let plain = w
        .app
        .graphql(
            Some(&dave),
            "query($p: ID!) { patientAccessReport(patientId: $p) { action } }",
            json!({ "p": w.a2 }),
        )
        .await;
    let shown: String = plain.body.to_string().chars().take(300).collect();
    assert_eq!(plain.code(), Some("BAD_USER_INPUT"), "{shown}");
    for field in [
        "patientAccessReport(patientId: $p, from: $from) { action clinicianName }",
        "patientAccessFhirBundle(patientId: $p, from: $from)",
    ] {
        let query = format!("query($p: ID!, $from: DateTime) {{ {field} }}");
        let whole = w
            .app
            .graphql(Some(&dave), &query, json!({ "p": w.a2 }))
            .await;
        assert_eq!(whole.code(), Some("BAD_USER_INPUT"), "{}", whole.body);
        let recent = w
            .app
            .graphql(
                Some(&dave),
                &query,
                json!({ "p": w.a2, "from": (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339() }),
            )
            .await;
        assert_eq!(recent.status, 200, "{}", recent.body);
        let backwards = w
            .app
            .graphql(
                Some(&dave),
                &format!(
                    "query($p: ID!, $from: DateTime, $to: DateTime) {{ {} }}",
                    field.replace("from: $from)", "from: $from, to: $to)")
                ),
                json!({ "p": w.a2, "from": "2030-01-01T00:00:00Z", "to": "2020-01-01T00:00:00Z" }),
            )
            .await;
        assert_eq!(
            backwards.code(),
            Some("BAD_USER_INPUT"),
            "{}",
            backwards.body
        );
        let text = recent.body.to_string();
        assert!(
            text.contains("Dr. alice") || text.contains(&w.alice.id.to_string()),
            "{text}"
        );
    }
}

#[tokio::test]
async fn an_auditor_pages_through_a_patients_events_one_at_a_time_and_with_another_filter() {
    let w = World::new(|_| {}).await;
    let alice = w.token("alice", "clinician");
    let dave = w.token("dave", "auditor");
    // A-2's trail: a read, two audit reads (dave's reports), two more reads.
    w.run(&alice, "PatientDetail", json!({ "id": w.a2 })).await;
    for _ in 0..2 {
        w.app
            .graphql(
                Some(&dave),
                "query($p: ID!) { patientAccessReport(patientId: $p) { action } }",
                json!({ "p": w.a2 }),
            )
            .await;
    }
    for _ in 0..2 {
        w.run(&alice, "PatientDetail", json!({ "id": w.a2 })).await;
    }
    let page = |filter: Value, after: Value| {
        let dave = dave.clone();
        let w = &w;
        async move {
            let reply = w
                .app
                .graphql(
                    Some(&dave),
                    "query($f: AuditEventFilter, $a: String) { auditEvents(filter: $f, first: 1, after: $a) { edges { node { action patientIds } } pageInfo { hasNextPage endCursor } } }",
                    json!({ "f": filter, "a": after }),
                )
                .await;
            let connection = reply.data()["auditEvents"].clone();
            assert!(connection.is_object(), "{}", reply.body);
            connection
        }
    };
    // Paging is recorded as well: every page adds one more audit read naming A-2, at the end.
    for (filter, actions, more) in [
        (
            json!({ "patientId": w.a2 }),
            ["READ", "AUDIT_READ", "AUDIT_READ", "READ", "READ"],
            [true, true, true, true, true],
        ),
        // With another condition the patient's next ids may not match it: the reads after the
        // audit reads must still be found.
        (
            json!({ "patientId": w.a2, "action": "READ" }),
            ["READ", "READ", "READ", "", ""],
            [true, true, false, false, false],
        ),
    ] {
        let mut after = Value::Null;
        for (n, (action, more)) in actions.iter().zip(more).enumerate() {
            if action.is_empty() {
                break;
            }
            let connection = page(filter.clone(), after).await;
            let edges = connection["edges"].as_array().cloned().unwrap_or_default();
            assert_eq!(edges.len(), 1, "{filter} page {n}: {connection}");
            assert_eq!(edges[0]["node"]["action"], *action, "{filter} page {n}");
            assert!(
                edges[0]["node"]["patientIds"]
                    .as_array()
                    .is_some_and(|ids| ids.contains(&json!(w.a2))),
                "{filter} page {n}: {connection}"
            );
            assert_eq!(
                connection["pageInfo"]["hasNextPage"], more,
                "{filter} page {n}: {connection}"
            );
            after = connection["pageInfo"]["endCursor"].clone();
        }
    }
}

/// Scans of the trail's patient index, and sequential scans of its partitions that hold events
/// (an empty partition is read sequentially whatever the query), in the current transaction.
async fn trail_scans(conn: &impl ConnectionTrait) -> (i64, i64) {
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select \
               (select coalesce(sum(pg_stat_get_xact_numscans(c.oid)), 0) from pg_class c \
                 where c.relnamespace = 'rowguard_audit'::regnamespace and c.relkind = 'i' \
                   and c.relname like 'events%patient_ids_idx')::bigint as gin, \
               (select coalesce(sum(s.seq_scan), 0) from pg_stat_xact_user_tables s \
                 join pg_class c on c.oid = s.relid \
                 where s.schemaname = 'rowguard_audit' and s.relname like 'events%' and c.reltuples > 0)::bigint as seq",
        ))
        .await
        .expect("scan counts")
        .expect("one row");
    (
        row.try_get("", "gin").expect("gin"),
        row.try_get("", "seq").expect("seq"),
    )
}

#[tokio::test]
async fn a_patients_accesses_are_found_through_the_patient_index_not_by_reading_the_whole_trail() {
    let w = World::new(|_| {}).await;
    // A trail of 20,000 events over 2,000 patients, each read about 20 times (so the planner
    // knows from the statistics that one patient is a small share of it); two of them name A-1.
    w.admin
        .execute_unprepared(&format!(
            "insert into rowguard_audit.events (clinician_id, app_role, action, outcome, purpose, patient_ids) \
             select 1, 'rgtest_clinician', 'read', 'success', 'treatment', \
                    array[md5('bulk' || (n % 1000))::uuid, md5('bulk' || (1000 + n % 997))::uuid] \
             from generate_series(1, 20000) n; \
             insert into rowguard_audit.events (clinician_id, app_role, action, outcome, purpose, patient_ids) \
             select 1, 'rgtest_clinician', 'read', 'success', 'treatment', array['{}'::uuid] from generate_series(1, 2); \
             analyze rowguard_audit.events",
            w.a1
        ))
        .await
        .expect("a large trail");

    let auditor = scope(
        &w.app.db,
        &w.dave.as_role(AppRole::Auditor),
        AccessMode::ReadOnly,
    )
    .await;
    let (events, _) =
        rowguard::graphql::rows::patient_accesses(auditor.conn(), w.a1, Default::default())
            .await
            .expect("report");
    assert_eq!(events.len(), 2);
    let (gin, seq) = trail_scans(auditor.conn()).await;
    assert!(gin >= 1, "the patient index was not used ({gin} scans)");
    assert_eq!(seq, 0, "the report read the trail sequentially");
}

#[tokio::test]
async fn the_patient_index_lookup_answers_only_an_auditor_with_an_identity() {
    let w = World::new(|_| {}).await;
    execute(
        &w.admin,
        "insert into rowguard_audit.events (clinician_id, app_role, action, outcome, purpose, patient_ids) \
         values (1, 'rgtest_clinician', 'read', 'success', 'treatment', array[$1::uuid])",
        [w.a1.into()],
    )
    .await
    .expect("an event about A-1");
    let lookup = format!(
        "select count(*) as value from rowguard_audit.patient_event_ids('{}', null, null)",
        w.a1
    );

    let auditor = scope(
        &w.app.db,
        &w.dave.as_role(AppRole::Auditor),
        AccessMode::ReadOnly,
    )
    .await;
    assert_eq!(
        query_count(auditor.conn(), &lookup).await.expect("auditor"),
        1
    );
    drop(auditor);

    // An auditor token whose person is not enrolled: no identity, no rows.
    let nobody = scope(&w.app.db, &stranger(AppRole::Auditor), AccessMode::ReadOnly).await;
    assert_eq!(
        query_count(nobody.conn(), &lookup).await.expect("stranger"),
        0
    );
    drop(nobody);

    // Other application roles may not call it at all.
    for role in [AppRole::Clinician, AppRole::Coordinator] {
        let s = scope(&w.app.db, &w.alice.as_role(role), AccessMode::ReadOnly).await;
        let err = query_count(s.conn(), &lookup).await.expect_err("refused");
        assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE, "{role:?}");
    }

    // Nor may the gateway's login role outside a request's scope: it holds the application roles
    // without inheriting their rights.
    let gateway = w.t.gateway_pool(1).await;
    let err = query_count(&gateway, &lookup).await.expect_err("refused");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
}

#[tokio::test]
async fn only_auditors_read_the_trail() {
    let w = World::new(|_| {}).await;
    for (subject, role) in [("alice", "clinician"), ("carol", "coordinator")] {
        let reply = w
            .app
            .graphql(
                Some(&w.token(subject, role)),
                "{ auditEvents { edges { cursor } } }",
                json!({}),
            )
            .await;
        assert_eq!(reply.code(), Some("FORBIDDEN"), "{role}: {}", reply.body);
    }
}

#[tokio::test]
async fn migrations_include_the_audit_schema() {
    let pending = migration::Migrator::get_pending_migrations(
        &connect(&TestDb::new().await.admin_url(), 1, None).await,
    )
    .await
    .expect("status");
    assert!(pending.is_empty());
}

// Every PHI read by every role, one id per request ---------------------------------------------

#[tokio::test]
async fn listing_emergency_grants_is_an_audited_access() {
    let w = World::new(|_| {}).await;
    request_access(&w, &w.token("alice", "clinician"), w.b1).await;
    let query = json!({ "query": "{ emergencyAccessGrants { patientId reason } }" });

    let (reply, id) = w.send(&w.token("dave", "auditor"), query.clone()).await;
    assert_eq!(
        reply.data()["emergencyAccessGrants"][0]["patientId"],
        w.b1.to_string(),
        "{}",
        reply.body
    );
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![event("audit_read", "success", "audit", &[w.b1], &w.dave)],
        "an auditor reading grants (patient ids and reasons) is recorded"
    );

    let (_, id) = w.send(&w.token("alice", "clinician"), query).await;
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![event("read", "success", "emergency", &[w.b1], &w.alice)],
        "so is the clinician reading their own grants"
    );
}

#[tokio::test]
async fn reading_the_trail_is_recorded_against_every_patient_its_events_name() {
    // Before: the auditor's read was recorded with no patient at all (only a filtered-on
    // patient was named), so it never showed in those patients' access reports.
    let w = World::new(|_| {}).await;
    w.run(
        &w.token("alice", "clinician"),
        "PatientDetail",
        json!({ "id": w.a1 }),
    )
    .await;
    let query = json!({ "query": "{ auditEvents(first: 100) { edges { node { patientIds } } } }" });
    let (reply, id) = w.send(&w.token("dave", "auditor"), query).await;
    let shown: std::collections::BTreeSet<String> = reply.data()["auditEvents"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .flat_map(|e| {
            e["node"]["patientIds"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    assert!(shown.contains(&w.a1.to_string()), "{}", reply.body);
    let shown: Vec<Uuid> = shown.iter().filter_map(|p| p.parse().ok()).collect();
    assert_eq!(
        events_of(&w.admin, id).await,
        vec![event("audit_read", "success", "audit", &shown, &w.dave)],
    );
}

#[tokio::test]
async fn the_patient_access_report_lists_accesses_by_every_role() {
    let w = World::new(|_| {}).await;
    w.run(
        &w.token("alice", "clinician"),
        "PatientDetail",
        json!({ "id": w.a1 }),
    )
    .await;
    w.run(
        &w.token("carol", "coordinator"),
        "PatientDetail",
        json!({ "id": w.a1 }),
    )
    .await;
    let report = w
        .app
        .graphql(
            Some(&w.token("dave", "auditor")),
            "query($p: ID!) { patientAccessReport(patientId: $p) { clinicianName role purpose outcome } }",
            json!({ "p": w.a1 }),
        )
        .await;
    let accesses = report.data()["patientAccessReport"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{}", report.body));
    let by = |name: &str| {
        accesses
            .iter()
            .filter(|a| a["clinicianName"] == name)
            .count()
    };
    assert_eq!(by("Dr. alice"), 1, "{}", report.body);
    assert_eq!(
        by("Dr. carol"),
        2,
        "the coordinator's read and their refused clinical-notes read: {}",
        report.body
    );
    assert!(
        accesses
            .iter()
            .any(|a| a["role"] == "COORDINATOR" && a["purpose"] == "OPERATIONS"),
        "{}",
        report.body
    );
}

#[tokio::test]
async fn one_request_id_reaches_the_response_and_the_audit_row_and_the_clients_own_stays_apart() {
    let w = World::new(|_| {}).await;
    let alice = w.token("alice", "clinician");
    let body = json!({ "query": rowguard_tests::app::operation("MyPatients"), "operationName": "MyPatients" });
    for client_id in ["web-7f3a.2", &Uuid::new_v4().to_string()] {
        let reply = w
            .app
            .http
            .post(w.app.url("/graphql"))
            .bearer_auth(&alice)
            .header("x-request-id", client_id)
            .json(&body)
            .send()
            .await
            .expect("gateway answers");
        let header = reply
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .expect("x-request-id");
        let server_id: Uuid = header.parse().unwrap_or_else(|_| {
            panic!("the response's X-Request-Id is the server's UUID, not the client's {header:?}")
        });
        assert_ne!(
            server_id.to_string(),
            client_id,
            "a client-chosen id never becomes the audit row's id"
        );
        let row = w
            .admin
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "select correlation_id from rowguard_audit.events where request_id = $1",
                [server_id.into()],
            ))
            .await
            .expect("query")
            .unwrap_or_else(|| panic!("no audit row carries the response's id {server_id}"));
        let correlation: Option<String> = row.try_get("", "correlation_id").expect("column");
        assert_eq!(correlation.as_deref(), Some(client_id));
    }
}

// Separation of duties ---------------------------------------------------------------------------

#[tokio::test]
async fn an_auditor_cannot_review_an_emergency_grant_they_hold_themselves() {
    let w = World::new(|_| {}).await;
    // dave works shifts as a clinician too: the same enrolled person, another role.
    let granted = request_access(&w, &w.token("dave", "clinician"), w.b1).await;
    let grant = granted.data()["requestEmergencyAccess"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", granted.body))
        .to_owned();
    end_grants(&w).await;
    let review = "mutation($g: ID!) { reviewEmergencyAccess(grantId: $g) { reviewedBy } }";
    let own = w
        .app
        .graphql(
            Some(&w.token("dave", "auditor")),
            review,
            json!({ "g": grant }),
        )
        .await;
    assert_eq!(own.code(), Some("FORBIDDEN"), "{}", own.body);

    // Enforced by the database, whatever the client: straight through the RLS scope too.
    let s = scope(
        &w.app.db,
        &w.dave.as_role(AppRole::Auditor),
        AccessMode::ReadWrite,
    )
    .await;
    let err = execute(
        s.conn(),
        "select rowguard.review_emergency_access($1)",
        [grant.parse::<i64>().expect("id").into()],
    )
    .await
    .expect_err("reviewing one's own grant");
    assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE);
    drop(s);

    // Another auditor may.
    let erin = enroll_at(&w.t.owner().await, w.issuer.url(), "erin").await;
    let other = w
        .app
        .graphql(
            Some(&w.token("erin", "auditor")),
            review,
            json!({ "g": grant }),
        )
        .await;
    assert_eq!(
        other.data()["reviewEmergencyAccess"]["reviewedBy"],
        erin.id.to_string(),
        "{}",
        other.body
    );
}

#[tokio::test]
async fn coordinators_cannot_rename_or_deactivate_anyone() {
    let w = World::new(|_| {}).await;
    for sql in [
        "update rowguard.clinicians set display_name = 'Renamed' where id = $1",
        "update rowguard.clinicians set active = false where id = $1",
    ] {
        let s = scope(&w.app.db, &w.carol.coordinator(), AccessMode::ReadWrite).await;
        let err = execute(s.conn(), sql, [w.dave.id.into()])
            .await
            .expect_err(sql);
        assert_eq!(sqlstate(err), INSUFFICIENT_PRIVILEGE, "{sql}");
    }
}

#[tokio::test]
async fn an_auditor_gets_a_patients_accounting_as_a_valid_fhir_bundle_of_that_patient_only() {
    let w = World::new(|_| {}).await;
    // One request that reads two patients: the bundle about a1 must not name a2.
    w.run(&w.token("alice", "clinician"), "MyPatients", json!({}))
        .await;
    w.run(
        &w.token("carol", "coordinator"),
        "PatientDetail",
        json!({ "id": w.a1 }),
    )
    .await;
    let reply = w
        .app
        .graphql(
            Some(&w.token("dave", "auditor")),
            "query($p: ID!) { patientAccessFhirBundle(patientId: $p) }",
            json!({ "p": w.a1 }),
        )
        .await;
    let text = reply.data()["patientAccessFhirBundle"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", reply.body))
        .to_owned();
    let bundle: Value = serde_json::from_str(&text).expect("JSON");
    let entries = bundle["entry"].as_array().expect("entries");
    assert!(entries.len() >= 3, "{text}");
    assert!(
        !text.contains(&w.a2.to_string()),
        "another patient appears: {text}"
    );
    assert!(
        text.contains("\"HOPERAT\"") && text.contains("\"TREAT\""),
        "{text}"
    );

    let file =
        std::env::temp_dir().join(format!("rowguard-bundle-{}.ndjson", uuid::Uuid::new_v4()));
    std::fs::write(&file, format!("{text}\n")).expect("write");
    let validation = std::process::Command::new("node")
        .arg(rowguard_tests::browser::client_script("validate-fhir.mjs"))
        .arg(&file)
        .output()
        .expect("node");
    let _ = std::fs::remove_file(&file);
    assert!(
        validation.status.success(),
        "not valid FHIR R4: {}{}",
        String::from_utf8_lossy(&validation.stdout),
        String::from_utf8_lossy(&validation.stderr)
    );

    let clinician = w
        .app
        .graphql(
            Some(&w.token("alice", "clinician")),
            "query($p: ID!) { patientAccessFhirBundle(patientId: $p) }",
            json!({ "p": w.a1 }),
        )
        .await;
    assert!(
        clinician.data().is_null() || clinician.data()["patientAccessFhirBundle"].is_null(),
        "a clinician read the trail: {}",
        clinician.body
    );
}

#[tokio::test]
async fn the_trail_its_links_and_its_checkpoints_are_read_by_an_auditor_with_an_identity_only() {
    // Both sides of the auditor policies on events, chain and checkpoints.
    let w = World::new(|_| {}).await;
    execute(
        &w.admin,
        "insert into rowguard_audit.events (clinician_id, app_role, action, outcome, purpose, patient_ids) \
         values (1, 'rgtest_clinician', 'read', 'success', 'treatment', array[$1::uuid])",
        [w.a1.into()],
    )
    .await
    .expect("an event");
    for sql in [
        "insert into rowguard_audit.chain (seq, event_id, event_txid, event_occurred_at, version, prev_hash, hash) \
         select 1, max(id), 1, now(), 2, '\\x00', '\\x01' from rowguard_audit.events",
        "insert into rowguard_audit.checkpoints (seq, head_hash, created_at, key_id, body, signature) \
         values (1, '\\x01', now(), 'k', '{}', '\\x02')",
    ] {
        execute(&w.admin, sql, []).await.expect(sql);
    }
    let tables = [
        "rowguard_audit.events",
        "rowguard_audit.chain",
        "rowguard_audit.checkpoints",
    ];
    let auditor = scope(
        &w.app.db,
        &w.dave.as_role(AppRole::Auditor),
        AccessMode::ReadOnly,
    )
    .await;
    for table in tables {
        let sql = format!("select count(*) as value from {table}");
        assert_eq!(
            query_count(auditor.conn(), &sql).await.expect("auditor"),
            1,
            "{table}"
        );
    }
    drop(auditor);
    let nobody = scope(&w.app.db, &stranger(AppRole::Auditor), AccessMode::ReadOnly).await;
    for table in tables {
        let sql = format!("select count(*) as value from {table}");
        assert_eq!(
            query_count(nobody.conn(), &sql).await.expect("stranger"),
            0,
            "an auditor nobody enrolled read {table}"
        );
    }
}
