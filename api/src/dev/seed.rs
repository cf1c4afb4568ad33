//! Synthetic demo data for `rowguard dev`: clinicians with overlapping and disjoint patient
//! lists, a coordinator, an auditor, and enough patients to page through. Nothing here looks
//! like a real identifier (MRNs are `DEMO-nnnn`, no SSNs).

use chrono::NaiveDate;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait, Value,
};

use crate::principal::AppRole;

/// A person the dev identity provider can mint tokens for.
#[derive(Debug, Clone)]
pub struct DemoUser {
    pub subject: &'static str,
    pub display_name: &'static str,
    pub role: AppRole,
    /// Patients (by demo number, 1-based, inclusive) on this person's care team.
    pub patients: Option<(u32, u32)>,
}

pub fn demo_users() -> Vec<DemoUser> {
    vec![
        DemoUser {
            subject: "alice",
            display_name: "Dr. Alice Nguyen",
            role: AppRole::Clinician,
            patients: Some((1, 25)),
        },
        DemoUser {
            subject: "bob",
            display_name: "Dr. Bob Okafor",
            role: AppRole::Clinician,
            patients: Some((20, 40)),
        },
        DemoUser {
            subject: "chen",
            display_name: "Dr. Chen Li",
            role: AppRole::Clinician,
            patients: Some((41, 55)),
        },
        DemoUser {
            subject: "carol",
            display_name: "Carol Reyes (coordinator)",
            role: AppRole::Coordinator,
            patients: None,
        },
        DemoUser {
            subject: "dave",
            display_name: "Dave Kim (auditor)",
            role: AppRole::Auditor,
            patients: None,
        },
    ]
}

/// How many demo patients exist (numbers 56.. are on nobody's list).
pub const DEMO_PATIENTS: u32 = 60;

const GIVEN: [&str; 12] = [
    "Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea",
];
const FAMILY: [&str; 10] = [
    "Demo",
    "Sample",
    "Testwell",
    "Placeholder",
    "Fictive",
    "Mock",
    "Synth",
    "Example",
    "Trial",
    "Dummy",
];

async fn exec<C: ConnectionTrait, const N: usize>(
    db: &C,
    sql: &str,
    values: [Value; N],
) -> Result<u64, DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await
    .map(|r| r.rows_affected())
}

/// Seeds as the schema owner (`owner` must be a connection running as that role). Idempotent:
/// people are (re)pointed at the current dev issuer on every start; patients and assignments
/// are created once.
pub async fn seed(owner: &DatabaseConnection, issuer: &str) -> Result<(), DbErr> {
    for user in demo_users() {
        // The dev provider's port may differ from the last run: keep demo people on its issuer.
        exec(
            owner,
            "update rowguard.clinicians set oidc_issuer = $1 \
             where oidc_subject = $2 and oidc_issuer <> $1 and oidc_issuer like 'http://127.0.0.1:%' \
             and not exists (select 1 from rowguard.clinicians c where c.oidc_issuer = $1 and c.oidc_subject = $2)",
            [issuer.into(), user.subject.into()],
        )
        .await?;
        exec(
            owner,
            "insert into rowguard.clinicians (oidc_issuer, oidc_subject, display_name) values ($1, $2, $3) \
             on conflict (oidc_issuer, oidc_subject) do nothing",
            [issuer.into(), user.subject.into(), user.display_name.into()],
        )
        .await?;
    }

    // The owner cannot read patients (FORCE row level security), so "already seeded" is judged
    // by the assignments, which it can read.
    let seeded = owner
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select exists (select 1 from rowguard.clinicians_patients) as seeded",
        ))
        .await?
        .map(|row| row.try_get::<bool>("", "seeded"))
        .transpose()?
        .unwrap_or(false);
    if seeded {
        return Ok(());
    }
    // All or nothing, so an interrupted first start does not leave half the demo behind.
    let txn = owner.begin().await?;
    let mut ids = Vec::new();
    for n in 1..=DEMO_PATIENTS {
        let id = uuid::Uuid::new_v4();
        let i = n as usize;
        let birth =
            NaiveDate::from_ymd_opt(1940 + (n as i32 * 7) % 65, 1 + (n % 12), 1 + (n * 3) % 28)
                .unwrap_or_default();
        exec(
            &txn,
            "insert into rowguard.patients (id, mrn, given_name, family_name, birth_date, clinical_notes) \
             values ($1, $2, $3, $4, $5, $6)",
            [
                id.into(),
                format!("DEMO-{n:04}").into(),
                GIVEN[i % GIVEN.len()].into(),
                FAMILY[i % FAMILY.len()].into(),
                birth.into(),
                format!("Synthetic demo record {n}: no real person.").into(),
            ],
        )
        .await?;
        ids.push(id);
    }
    for user in demo_users() {
        let Some((from, to)) = user.patients else {
            continue;
        };
        for n in from..=to {
            exec(
                &txn,
                "insert into rowguard.clinicians_patients (clinician_id, patient_id, care_role) \
                 select id, $3, 'attending' from rowguard.clinicians where oidc_issuer = $1 and oidc_subject = $2",
                [issuer.into(), user.subject.into(), ids[(n - 1) as usize].into()],
            )
            .await?;
        }
    }
    txn.commit().await
}
