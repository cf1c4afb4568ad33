//! Test data, inserted as the schema owner (the way `rowguard dev` seeds), never through the
//! gateway. Everything is synthetic.

use chrono::{NaiveDate, TimeDelta, Utc};
use rowguard::principal::{AppRole, Principal};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait, Value,
};
use uuid::Uuid;

/// The issuer the fixtures' people belong to unless a test says otherwise.
pub const ISSUER: &str = "https://idp.test.invalid/realms/rowguard";

/// A person enrolled in `clinicians`.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: i32,
    pub issuer: String,
    pub subject: String,
}

impl Person {
    /// The principal a verified token for this person would produce, with `role`.
    pub fn as_role(&self, role: AppRole) -> Principal {
        Principal {
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            role,
            client_id: None,
            expires_at: Utc::now() + TimeDelta::hours(1),
        }
    }

    pub fn clinician(&self) -> Principal {
        self.as_role(AppRole::Clinician)
    }

    pub fn coordinator(&self) -> Principal {
        self.as_role(AppRole::Coordinator)
    }
}

/// A principal nobody enrolled.
pub fn stranger(role: AppRole) -> Principal {
    Principal {
        issuer: ISSUER.to_owned(),
        subject: format!("never-enrolled-{}", Uuid::new_v4()),
        role,
        client_id: None,
        expires_at: Utc::now() + TimeDelta::hours(1),
    }
}

async fn exec<const N: usize>(db: &DatabaseConnection, sql: &str, values: [Value; N]) {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await
    .unwrap_or_else(|e| panic!("fixture statement failed: {sql}: {e}"));
}

/// Enrolls a person at [`ISSUER`] with `subject`.
pub async fn enroll(owner: &DatabaseConnection, subject: &str) -> Person {
    enroll_at(owner, ISSUER, subject).await
}

/// Enrolls a person at `issuer` with `subject`.
pub async fn enroll_at(owner: &DatabaseConnection, issuer: &str, subject: &str) -> Person {
    let row = owner
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "insert into rowguard.clinicians (oidc_issuer, oidc_subject, display_name) \
             values ($1, $2, $3) returning id",
            [
                issuer.into(),
                subject.into(),
                format!("Dr. {subject}").into(),
            ],
        ))
        .await
        .expect("enrolling a clinician")
        .expect("enrolment returns the id");
    Person {
        id: row.try_get("", "id").expect("clinician id"),
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
    }
}

/// Marks a person inactive.
pub async fn deactivate(owner: &DatabaseConnection, person: &Person) {
    exec(
        owner,
        "update rowguard.clinicians set active = false where id = $1",
        [person.id.into()],
    )
    .await;
}

/// Admits a synthetic patient and returns its id. The id is made here because the owner may
/// insert patients but (FORCE row level security) not read them back, not even via RETURNING.
pub async fn admit(owner: &DatabaseConnection, mrn: &str) -> Uuid {
    let id = Uuid::new_v4();
    let birth = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    exec(
        owner,
        "insert into rowguard.patients (id, mrn, given_name, family_name, birth_date, clinical_notes) \
         values ($1, $2, $3, $4, $5, $6)",
        [
            id.into(),
            mrn.into(),
            "Test".into(),
            format!("Patient-{mrn}").into(),
            birth.into(),
            format!("synthetic notes for {mrn}").into(),
        ],
    )
    .await;
    id
}

/// Admits `count` patients with MRNs `<prefix>-0`, `<prefix>-1`, ...
pub async fn admit_many(owner: &DatabaseConnection, prefix: &str, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        ids.push(admit(owner, &format!("{prefix}-{i}")).await);
    }
    ids
}

/// Puts `person` on `patient`'s care team.
pub async fn assign(owner: &DatabaseConnection, person: &Person, patient: Uuid) {
    exec(
        owner,
        "insert into rowguard.clinicians_patients (clinician_id, patient_id, care_role) \
         values ($1, $2, 'attending')",
        [person.id.into(), patient.into()],
    )
    .await;
}

/// Holds an ACCESS EXCLUSIVE lock on `patients` until the returned transaction ends, so any
/// request that reads patients blocks: a slow statement, or a backend in flight to kill.
pub async fn lock_patients(admin: &DatabaseConnection) -> DatabaseTransaction {
    lock_table(admin, "rowguard.patients").await
}

/// Holds an ACCESS EXCLUSIVE lock on `table` until the returned transaction ends. Locking a
/// partitioned table takes its partitions one by one, so it can deadlock with the gateway's own
/// work (the audit sealer) and be the one PostgreSQL cancels: it then tries again.
pub async fn lock_table(admin: &DatabaseConnection, table: &str) -> DatabaseTransaction {
    let mut attempts = 0;
    loop {
        let lock = admin.begin().await.expect("begin");
        match lock
            .execute_unprepared(&format!("lock table {table} in access exclusive mode"))
            .await
        {
            Ok(_) => return lock,
            Err(e) if attempts < 5 && e.to_string().contains("deadlock") => {
                attempts += 1;
                lock.rollback().await.expect("rollback");
            }
            Err(e) => panic!("lock: {e:?}"),
        }
    }
}
