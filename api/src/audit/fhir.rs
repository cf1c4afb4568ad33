//! The trail as FHIR R4 `AuditEvent` resources, shaped after the IHE Basic Audit Log Patterns
//! (BALP): one resource per event and patient. Codes only, as in the trail itself: no PHI
//! values (a patient appears as `Patient/<id>`).

use serde_json::{Value, json};

use super::canonical::{EventRow, timestamp};

const ROWGUARD: &str = "https://rowguard.dev/fhir";

/// Where an event sits in the hash chain, for the receiver to check completeness.
#[derive(Debug, Clone)]
pub struct ChainRef {
    /// The link's number (consecutive: a gap means something is missing).
    pub seq: i64,
    /// The link's hash (hex).
    pub hash: String,
    /// The newest signed checkpoint at export time (links up to it are anchored).
    pub checkpoint: Option<i64>,
}

/// `(restful-interaction code, AuditEvent.action)` for an action.
fn interaction(action: &str) -> (&'static str, &'static str) {
    match action {
        "read" => ("read", "R"),
        "update" | "assign" | "unassign" | "review" => ("update", "U"),
        "enroll" | "emergency_access" => ("create", "C"),
        "audit_read" => ("search-type", "R"),
        _ => ("read", "E"),
    }
}

/// The HL7 PurposeOfUse (v3 ActReason) code of a purpose.
pub fn purpose_of_use(purpose: &str) -> (&'static str, &'static str) {
    match purpose {
        "treatment" => ("TREAT", "treatment"),
        "emergency" => ("ETREAT", "Emergency Treatment"),
        "operations" => ("HOPERAT", "healthcare operations"),
        _ => ("HSYSADMIN", "health system administration"),
    }
}

/// AuditEvent.outcome: 0 success, 4 minor failure (refused, not found, invalid), 8 serious
/// failure (an error, or undone).
fn outcome_code(outcome: &str) -> &'static str {
    match outcome {
        "success" => "0",
        "error" | "rolled_back" => "8",
        _ => "4",
    }
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

/// The AuditEvents of one trail event: one per patient it touched, or one when it touched none.
pub fn audit_events(event: &EventRow, chain: Option<&ChainRef>) -> Vec<Value> {
    let patients: Vec<Option<&uuid::Uuid>> = if event.patient_ids.is_empty() {
        vec![None]
    } else {
        event.patient_ids.iter().map(Some).collect()
    };
    patients
        .into_iter()
        .enumerate()
        .map(|(index, patient)| audit_event(event, patient, index, chain))
        .collect()
}

/// The one `AuditEvent` of [`audit_events`] that is about `patient`, if the event names them:
/// built alone, rather than building one per patient of the event (a page read names up to
/// 100) and keeping one.
pub fn audit_event_about(event: &EventRow, patient: &uuid::Uuid) -> Option<Value> {
    let index = event.patient_ids.iter().position(|p| p == patient)?;
    Some(audit_event(event, Some(patient), index, None))
}

fn audit_event(
    event: &EventRow,
    patient: Option<&uuid::Uuid>,
    index: usize,
    chain: Option<&ChainRef>,
) -> Value {
    let (interaction, action) = interaction(&event.action);
    let (purpose, purpose_display) = purpose_of_use(&event.purpose);
    let purpose_concept = json!([{ "coding": [coding(
        "http://terminology.hl7.org/CodeSystem/v3-ActReason",
        purpose,
        purpose_display,
    )] }]);

    let mut user = json!({
        "type": { "coding": [coding(
            "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
            "humanuser",
            "human user",
        )] },
        "role": [{ "coding": [{ "system": format!("{ROWGUARD}/CodeSystem/database-role"), "code": event.app_role }] }],
        "requestor": true,
        "purposeOfUse": purpose_concept,
    });
    match (&event.issuer, &event.subject) {
        (Some(issuer), Some(subject)) => {
            user["who"] = json!({ "identifier": { "system": issuer, "value": subject } });
        }
        _ => user["who"] = json!({ "display": "unidentified caller" }),
    }
    if let Some(clinician) = event.clinician_id {
        user["altId"] = json!(clinician.to_string());
    }
    let mut agents = vec![user];
    if let Some(client) = &event.client_id {
        agents.push(json!({
            "type": { "coding": [coding("http://dicom.nema.org/resources/ontology/DCM", "110150", "Application")] },
            "who": { "identifier": { "system": format!("{ROWGUARD}/oauth-client"), "value": client } },
            "requestor": false,
        }));
    }

    let mut entities = Vec::new();
    if let Some(patient) = patient {
        entities.push(json!({
            "what": { "reference": format!("Patient/{patient}") },
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"),
            "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
        }));
    }
    if let Some(request) = &event.request_id {
        entities.push(json!({
            "what": { "identifier": { "system": format!("{ROWGUARD}/request-id"), "value": request.to_string() } },
            "type": coding("https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "XrequestId", "X-Request-Id"),
        }));
    }
    if let Some(trace) = &event.trace_id {
        entities.push(json!({
            "what": { "identifier": { "system": "https://www.w3.org/TR/trace-context/", "value": trace } },
            "type": coding("https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "XrequestId", "X-Request-Id"),
            "description": "W3C trace id",
        }));
    }
    if event.operation_name.is_some() || event.persisted_query_hash.is_some() {
        let mut query = json!({
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
            "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "24", "Query"),
        });
        if let Some(hash) = &event.persisted_query_hash {
            query["what"] = json!({ "identifier": { "system": format!("{ROWGUARD}/persisted-query-sha256"), "value": hash } });
        }
        if let Some(name) = &event.operation_name {
            query["name"] = json!(name);
        }
        entities.push(query);
    }

    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": format!("rowguard-{}-{index}", event.id),
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "Restful Operation"),
        "subtype": [
            coding("http://hl7.org/fhir/restful-interaction", interaction, interaction),
            { "system": format!("{ROWGUARD}/CodeSystem/action"), "code": event.action },
        ],
        "action": action,
        "recorded": timestamp(&event.occurred_at),
        "outcome": outcome_code(&event.outcome),
        "outcomeDesc": event.outcome,
        "purposeOfEvent": purpose_concept,
        "agent": agents,
        "source": {
            "site": "rowguard",
            "observer": { "display": "Rowguard GraphQL gateway" },
            "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
        },
    });
    if !entities.is_empty() {
        resource["entity"] = json!(entities);
    }
    let mut chain_extension = vec![json!({ "url": "event", "valueString": event.id.to_string() })];
    if let Some(chain) = chain {
        chain_extension.push(json!({ "url": "link", "valueString": chain.seq.to_string() }));
        chain_extension.push(json!({ "url": "hash", "valueString": chain.hash }));
        if let Some(checkpoint) = chain.checkpoint {
            chain_extension
                .push(json!({ "url": "checkpoint", "valueString": checkpoint.to_string() }));
        }
    }
    resource["extension"] = json!([{
        "url": format!("{ROWGUARD}/StructureDefinition/audit-chain"),
        "extension": chain_extension,
    }]);
    resource
}

/// The chain link number recorded in an exported resource (to resume after it).
pub fn link_of(resource: &Value) -> Option<i64> {
    chain_value(resource, "link")?.parse().ok()
}

/// The chain link hash recorded in an exported resource.
pub fn hash_of(resource: &Value) -> Option<String> {
    chain_value(resource, "hash").map(str::to_owned)
}

/// One value of a resource's audit-chain extension.
fn chain_value<'r>(resource: &'r Value, name: &str) -> Option<&'r str> {
    resource["extension"].as_array()?.iter().find(|e| {
        e["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/audit-chain"))
    })?["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == name)?["valueString"]
        .as_str()
}
