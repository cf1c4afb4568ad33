//! The bytes a chain link's hash covers, defined and versioned here — never by a database
//! function, which whoever controls the database could redefine.
//!
//! A link is `sha256(previous link's hash || canonical(event))`; the first link's "previous hash"
//! is the single byte `0x00`.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use sea_orm::FromQueryResult;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The "previous hash" of the first link.
pub const GENESIS: [u8; 1] = [0];

/// How an event was turned into bytes when it was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanonicalVersion {
    /// Sealed by migration 0004's commit trigger: the columns of that time joined by U+001F, as
    /// its `rowguard_audit.canonical()` spelled them (kept so old trails still verify).
    V1,
    /// Sealed by the gateway's sealer: a JSON object with a fixed field order. Every column is
    /// covered, the transaction id included, and no field can spill into the next.
    V2,
}

impl CanonicalVersion {
    pub fn from_db(version: i16) -> Option<Self> {
        match version {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }

    pub fn as_db(self) -> i16 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }
}

/// Every column of `rowguard_audit.events`.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct EventRow {
    pub id: i64,
    pub occurred_at: DateTime<FixedOffset>,
    pub txid: i64,
    pub request_id: Option<Uuid>,
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
    pub clinician_id: Option<i32>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub app_role: String,
    pub operation_name: Option<String>,
    pub persisted_query_hash: Option<String>,
    pub action: String,
    pub outcome: String,
    pub patient_ids: Vec<Uuid>,
    pub purpose: String,
}

/// The columns of [`EventRow`], for `SELECT` lists.
pub const EVENT_COLUMNS: &str = "id, occurred_at, txid, request_id, correlation_id, trace_id, \
     clinician_id, issuer, subject, client_id, app_role, operation_name, persisted_query_hash, \
     action, outcome, patient_ids, purpose";

/// PostgreSQL's timestamp precision is the microsecond; both forms spell all six digits in UTC.
pub fn timestamp(at: &DateTime<FixedOffset>) -> String {
    at.with_timezone(&Utc)
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The canonical bytes of `event` in `version`.
pub fn canonical(version: CanonicalVersion, event: &EventRow) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_canonical(version, event, &mut bytes);
    bytes
}

/// Writes the canonical bytes of `event` into `out`: a buffer, or straight into a hash (the
/// sealer hashes every event). Serialising plain strings, numbers and UUIDs cannot fail, nor can
/// writing into a buffer or a hasher.
fn write_canonical(version: CanonicalVersion, event: &EventRow, out: &mut impl std::io::Write) {
    let _ = match version {
        CanonicalVersion::V1 => out.write_all(v1(event).as_bytes()),
        CanonicalVersion::V2 => serde_json::to_writer(out, &V2::of(event)).map_err(Into::into),
    };
}

fn v1(e: &EventRow) -> String {
    const NULL: &str = "\\N";
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| NULL.to_owned());
    let ids: Vec<String> = e.patient_ids.iter().map(Uuid::to_string).collect();
    [
        e.id.to_string(),
        timestamp(&e.occurred_at),
        e.request_id
            .map_or_else(|| NULL.to_owned(), |id| id.to_string()),
        e.clinician_id
            .map_or_else(|| NULL.to_owned(), |id| id.to_string()),
        text(&e.issuer),
        text(&e.subject),
        text(&e.client_id),
        e.app_role.clone(),
        text(&e.operation_name),
        text(&e.persisted_query_hash),
        e.action.clone(),
        e.outcome.clone(),
        format!("{{{}}}", ids.join(",")),
        e.purpose.clone(),
    ]
    .join("\u{1f}")
}

#[derive(Serialize)]
struct V2<'a> {
    v: u8,
    id: i64,
    occurred_at: String,
    txid: i64,
    request_id: Option<Uuid>,
    correlation_id: Option<&'a str>,
    trace_id: Option<&'a str>,
    clinician_id: Option<i32>,
    issuer: Option<&'a str>,
    subject: Option<&'a str>,
    client_id: Option<&'a str>,
    app_role: &'a str,
    operation_name: Option<&'a str>,
    persisted_query_hash: Option<&'a str>,
    action: &'a str,
    outcome: &'a str,
    patient_ids: &'a [Uuid],
    purpose: &'a str,
}

impl<'a> V2<'a> {
    fn of(e: &'a EventRow) -> Self {
        V2 {
            v: 2,
            id: e.id,
            occurred_at: timestamp(&e.occurred_at),
            txid: e.txid,
            request_id: e.request_id,
            correlation_id: e.correlation_id.as_deref(),
            trace_id: e.trace_id.as_deref(),
            clinician_id: e.clinician_id,
            issuer: e.issuer.as_deref(),
            subject: e.subject.as_deref(),
            client_id: e.client_id.as_deref(),
            app_role: &e.app_role,
            operation_name: e.operation_name.as_deref(),
            persisted_query_hash: e.persisted_query_hash.as_deref(),
            action: &e.action,
            outcome: &e.outcome,
            patient_ids: &e.patient_ids,
            purpose: &e.purpose,
        }
    }
}

/// The hash of the link that seals `event` after `previous`.
pub fn link_hash(previous: &[u8], version: CanonicalVersion, event: &EventRow) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    write_canonical(version, event, &mut hasher);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> EventRow {
        EventRow {
            id: 7,
            occurred_at: DateTime::parse_from_rfc3339("2026-12-01T10:11:12.000034+01:00")
                .expect("timestamp"),
            txid: 901,
            request_id: None,
            correlation_id: Some("abc".into()),
            trace_id: None,
            clinician_id: Some(3),
            issuer: Some("https://idp".into()),
            subject: Some("alice".into()),
            client_id: None,
            app_role: "rowguard_clinician".into(),
            operation_name: Some("MyPatients".into()),
            persisted_query_hash: None,
            action: "read".into(),
            outcome: "success".into(),
            patient_ids: vec![Uuid::from_u128(1), Uuid::from_u128(0xabcdef)],
            purpose: "treatment".into(),
        }
    }

    #[test]
    fn v1_spells_the_event_as_migration_0004_did() {
        assert_eq!(
            String::from_utf8(canonical(CanonicalVersion::V1, &event())).expect("utf-8"),
            "7\u{1f}2026-12-01T09:11:12.000034Z\u{1f}\\N\u{1f}3\u{1f}https://idp\u{1f}alice\u{1f}\\N\u{1f}\
             rowguard_clinician\u{1f}MyPatients\u{1f}\\N\u{1f}read\u{1f}success\u{1f}\
             {00000000-0000-0000-0000-000000000001,00000000-0000-0000-0000-000000abcdef}\u{1f}treatment"
        );
    }

    #[test]
    fn v2_covers_every_column_and_changes_with_each() {
        let base = canonical(CanonicalVersion::V2, &event());
        let mut changed = event();
        changed.txid = 902;
        assert_ne!(base, canonical(CanonicalVersion::V2, &changed));
        let mut changed = event();
        changed.correlation_id = None;
        assert_ne!(base, canonical(CanonicalVersion::V2, &changed));
        // A separator inside a value cannot shift the fields (it could in V1).
        let mut a = event();
        a.issuer = Some("x\u{1f}y".into());
        a.subject = Some("z".into());
        let mut b = event();
        b.issuer = Some("x".into());
        b.subject = Some("y\u{1f}z".into());
        assert_ne!(
            canonical(CanonicalVersion::V2, &a),
            canonical(CanonicalVersion::V2, &b)
        );
    }

    #[test]
    fn a_link_depends_on_its_predecessor() {
        let e = event();
        assert_ne!(
            link_hash(&GENESIS, CanonicalVersion::V2, &e),
            link_hash(&[1], CanonicalVersion::V2, &e)
        );
    }

    #[test]
    fn v2_spells_the_event_as_sealed_trails_were_hashed() {
        assert_eq!(
            String::from_utf8(canonical(CanonicalVersion::V2, &event())).expect("utf-8"),
            r#"{"v":2,"id":7,"occurred_at":"2026-12-01T09:11:12.000034Z","txid":901,"request_id":null,"correlation_id":"abc","trace_id":null,"clinician_id":3,"issuer":"https://idp","subject":"alice","client_id":null,"app_role":"rowguard_clinician","operation_name":"MyPatients","persisted_query_hash":null,"action":"read","outcome":"success","patient_ids":["00000000-0000-0000-0000-000000000001","00000000-0000-0000-0000-000000abcdef"],"purpose":"treatment"}"#
        );
    }

    #[test]
    fn a_link_hashes_its_predecessor_then_the_canonical_bytes() {
        let e = event();
        for version in [CanonicalVersion::V1, CanonicalVersion::V2] {
            let mut whole = vec![5, 6];
            whole.extend(canonical(version, &e));
            let expected: [u8; 32] = Sha256::digest(&whole).into();
            assert_eq!(link_hash(&[5, 6], version, &e), expected);
        }
    }
}
