//! The pgbench side of each scenario, built from the gateway's own statement definitions
//! (`rowguard::db::Identity`, `rowguard::graphql::rows`, `rowguard::audit::record`), so the two
//! sides cannot drift apart. Each statement is built with sentinel values where the request's
//! data goes; rendering swaps each sentinel for the pgbench expression that stands for it, and
//! every other bound value for its SQL literal.

use rowguard::audit::batch::{BatchedEvent, Reader, append_batch_statement};
use rowguard::audit::record::{
    AuditAction, AuditContext, AuditEntry, AuditOutcome, append_statement,
};
use rowguard::db::{AccessMode, Identity, RequestIds};
use rowguard::graphql::rows;
use sea_orm::Statement;
use sea_orm::sea_query::{PostgresQueryBuilder, QueryBuilder, Value};
use uuid::Uuid;

/// pgbench's variables: `:c` a clinician, `:n` one of their patients (see the dataset).
const PRELUDE: &str = "\\set c random(1, :clinicians)\n\\set k random(0, :per - 1)\n\\set n (:c - 1) + :clinicians * :k\n";
const CLINICIAN: i32 = 2_000_000_001;
const PATIENT: Uuid = Uuid::from_u128(0x5e17_1e00_0000_4000_8000_0000_0000_0001);
const PAGE_PATIENT: Uuid = Uuid::from_u128(0x5e17_1e00_0000_4000_8000_0000_0000_0002);
const CARE_TEAM_CLINICIAN: i32 = 2_000_000_002;
const REQUEST_ID: Uuid = Uuid::from_u128(0x5e17_1e00_0000_4000_8000_0000_0000_0003);
const ISSUER: &str = "sentinel:issuer";
const SUBJECT: &str = "sentinel:subject";
const VERSION: i32 = 2_000_000_003;
/// The bound the gateway passes with every batch: its default statement timeout.
const LOCK_TIMEOUT_MS: u64 = 5000;

/// What a sentinel value stands for in pgbench.
fn sentinels() -> Vec<(Value, &'static str)> {
    vec![
        (CLINICIAN.into(), ":c"),
        (PATIENT.into(), "md5('patient' || :n)::uuid"),
        (vec![PATIENT].into(), "ARRAY[md5('patient' || :n)::uuid]"),
        (vec![PAGE_PATIENT].into(), ":ids::uuid[]"),
        (vec![CARE_TEAM_CLINICIAN].into(), ":cids::int[]"),
        (REQUEST_ID.to_string().into(), "gen_random_uuid()::text"),
        (ISSUER.into(), ":iss"),
        (SUBJECT.into(), "'clinician-' || :c"),
        (VERSION.into(), "\"patients\".\"version\""),
    ]
}

/// One statement as pgbench SQL (without the terminating `;`).
pub fn render(statement: &Statement) -> String {
    let sentinels = sentinels();
    let mut sql = statement.sql.clone();
    let values = statement
        .values
        .as_ref()
        .map(|v| v.0.clone())
        .unwrap_or_default();
    // Highest placeholder first, so `$1` never matches the start of `$10`.
    for (index, value) in values.iter().enumerate().rev() {
        let replacement = sentinels
            .iter()
            .find(|(sentinel, _)| sentinel == value)
            .map_or_else(
                || PostgresQueryBuilder.value_to_string(value),
                |(_, e)| (*e).to_owned(),
            );
        sql = sql.replace(&format!("${}", index + 1), &replacement);
    }
    sql
}

/// The request's identity, as the gateway sets it for a clinician: a query runs as the reader
/// role, a mutation as the writer role.
fn identity(mode: AccessMode) -> String {
    render(
        &Identity {
            role: if mode == AccessMode::ReadWrite {
                "rowguard_clinician_writer"
            } else {
                "rowguard_clinician"
            },
            issuer: ISSUER,
            subject: SUBJECT,
            request_id: REQUEST_ID,
            statement_timeout_ms: 5000,
            idle_in_transaction_timeout_ms: 15_000,
            mode,
            correlation_id: None,
            trace_id: None,
        }
        .statement(),
    )
}

fn append(action: AuditAction, patients: Uuid, operation: &str) -> String {
    let context = AuditContext {
        operation_name: Some(operation.to_owned()),
        ..AuditContext::default()
    };
    render(&append_statement(
        action,
        AuditOutcome::Success,
        &[patients],
        &context,
    ))
}

/// `patients(first: 20)` for clinician `:c`, recording the page when `audit`.
///
/// With the audit on, the read commits read-only and the gateway's batch writer then appends the
/// events of `batch` requests in one transaction (`batch` is what the gateway averaged in the
/// same run). pgbench has no shared writer, so one transaction in `batch`, at random, appends a
/// batch of `batch` events (each naming the page this client just read): the same statements at
/// the same rate.
pub fn my_patients(audit: bool, batch: u32) -> String {
    let page = render(&rows::patients_page_statement(
        21,
        None,
        None,
        Some(CLINICIAN),
    ));
    let mode = if audit {
        AccessMode::ReadThenRecord
    } else {
        AccessMode::ReadOnly
    };
    let mut sql = format!("{PRELUDE}BEGIN;\n{};\n", identity(mode));
    if audit {
        sql.push_str(&format!(
            "SELECT array_to_json(array_agg(id))::text AS ids FROM ({page}) page \\gset\nCOMMIT;\n{}",
            record_after_commit(batch, PAGE_PATIENT, "MyPatients")
        ));
    } else {
        sql.push_str(&format!("{page};\nCOMMIT;\n"));
    }
    sql
}

/// pgbench's lines that record one read the way the gateway's batch writer does: one read in
/// `batch` appends `batch` events.
fn record_after_commit(batch: u32, patients: Uuid, operation: &str) -> String {
    format!(
        "\\set b random(1, {batch})\n\\if :b = 1\n{};\n\\endif\n",
        append_batch(batch, patients, operation)
    )
}

/// The batch writer's statement for `size` reads of `patients` (a sentinel).
fn append_batch(size: u32, patients: Uuid, operation: &str) -> String {
    let entry = AuditEntry {
        action: AuditAction::Read,
        outcome: AuditOutcome::Success,
        patients: [patients].into_iter().collect(),
    };
    let ids = RequestIds::from(REQUEST_ID);
    let reader = Reader {
        ids: &ids,
        clinician_id: Some(CLINICIAN),
        issuer: ISSUER,
        subject: SUBJECT,
        app_role: "rowguard_clinician",
    };
    let context = AuditContext {
        operation_name: Some(operation.to_owned()),
        ..AuditContext::default()
    };
    let events: Vec<BatchedEvent> = (0..size.max(1))
        .flat_map(|_| BatchedEvent::of(&reader, &context, std::slice::from_ref(&entry)))
        .collect();
    let statement = append_batch_statement(&events, LOCK_TIMEOUT_MS).expect("a batch serializes");
    // The events travel as one JSON text, here one SQL literal in which each sentinel becomes a
    // concatenated pgbench expression. A space after each key's colon keeps pgbench from reading
    // `:null` as a variable.
    let json = match statement.values.as_ref().map(|v| v.0[0].clone()) {
        Some(sea_orm::sea_query::Value::String(Some(json))) => json.replace("\":", "\": "),
        other => panic!("the batch is bound as one text, not {other:?}"),
    };
    let expression = format!("'{}'", json.replace('\'', "''"))
        .replace(
            &format!("\"{REQUEST_ID}\""),
            "' || to_json(gen_random_uuid())::text || '",
        )
        .replace(
            &format!("\"{ISSUER}\""),
            "' || to_json(:iss::text)::text || '",
        )
        .replace(
            &format!("\"{SUBJECT}\""),
            "' || to_json('clinician-' || :c)::text || '",
        )
        .replace(&format!("[\"{PAGE_PATIENT}\"]"), "' || :ids || '")
        .replace(
            &format!("[\"{PATIENT}\"]"),
            "' || to_json(ARRAY[md5('patient' || :n)::uuid])::text || '",
        )
        .replace(&CLINICIAN.to_string(), "' || :c || '");
    statement
        .sql
        .replace("$1", &format!("({expression})"))
        .replace("$2", &LOCK_TIMEOUT_MS.to_string())
}

/// `patient(id) { careTeam }`: the patient, its assignments, their clinicians; the record after
/// the read-only commit, batched as in [`my_patients`].
pub fn patient_with_care_team(batch: u32) -> String {
    let assignments = render(&rows::care_team_assignments_statement(&[PATIENT]));
    format!(
        "{PRELUDE}BEGIN;\n{};\n{};\nSELECT array_agg(clinician_id)::text AS cids FROM ({assignments}) team \\gset\n{};\nCOMMIT;\n{}",
        identity(AccessMode::ReadThenRecord),
        render(&rows::patient_statement(PATIENT)),
        render(&rows::clinicians_by_id_statement(&[CARE_TEAM_CLINICIAN])),
        record_after_commit(batch, PATIENT, "PatientDetail"),
    )
}

/// `updatePatient(clinicalNotes)`: the update, the re-read, the record.
pub fn update_patient() -> String {
    let changes = rows::PatientChanges {
        clinical_notes: Some("benchmark note".into()),
        ..rows::PatientChanges::default()
    };
    format!(
        "{PRELUDE}BEGIN;\n{};\n{};\n{};\n{};\nCOMMIT;\n",
        identity(AccessMode::ReadWrite),
        render(&rows::patient_update_statement(PATIENT, VERSION, &changes)),
        render(&rows::patient_statement(PATIENT)),
        append(AuditAction::Update, PATIENT, "UpdatePatient"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sentinel_is_replaced() {
        for script in [
            my_patients(true, 4),
            my_patients(false, 1),
            patient_with_care_team(3),
            update_patient(),
        ] {
            assert!(!script.contains("sentinel"), "{script}");
            assert!(!script.contains("5e171e00"), "{script}");
            assert!(!script.contains("2000000"), "{script}");
            assert!(!script.contains('$'), "{script}");
        }
    }
}
