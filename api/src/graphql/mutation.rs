//! Write operations. A mutation runs in one read-write RLS scope and commits whole or not at all.

use async_graphql::{Context, ID, InputObject, Object, Result};
use chrono::NaiveDate;
use entities::{clinician, clinician_patient};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Set};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use uuid::Uuid;

use super::context::{RequestDb, limits, request_db};
use super::inputs::{ClinicianId, GrantId, PatientId};
use super::rows::{self, PatientChanges};
use super::types::{CareRole, Clinician, EmergencyAccessGrant, Patient};
use crate::audit::record::{AuditAction, AuditOutcome};
use crate::db::{DbError, FailureKind};
use crate::error::{ApiError, ErrorCode};

/// Entry points for writing.
#[derive(Debug, Default)]
pub struct Mutation;

/// Changes to a patient's record. Omitted fields stay as they are.
#[derive(Debug, InputObject)]
pub struct UpdatePatientInput {
    /// The patient to change.
    pub id: ID,
    /// The `version` you read: if the record changed since, the update is refused with
    /// `CONFLICT` and nothing is written.
    pub expected_version: i32,
    /// New given name.
    pub given_name: Option<String>,
    /// New family name.
    pub family_name: Option<String>,
    /// New date of birth: from 1850-01-01 to today.
    pub birth_date: Option<NaiveDate>,
    /// New clinical notes (replaces the previous text).
    pub clinical_notes: Option<String>,
}

/// A person to enroll, identified as their identity provider names them.
#[derive(Debug, InputObject)]
pub struct EnrollClinicianInput {
    /// The identity provider's issuer URL, exactly as it appears in their tokens' `iss`.
    pub issuer: String,
    /// Their subject (`sub`) at that issuer.
    pub subject: String,
    /// The name to show for them.
    pub display_name: String,
}

/// An assignment of a clinician to a patient's care team.
#[derive(Debug, InputObject)]
pub struct AssignClinicianInput {
    /// The clinician to assign.
    pub clinician_id: ID,
    /// The patient whose care team they join.
    pub patient_id: ID,
    /// Their role in the patient's care.
    pub care_role: CareRole,
}

/// A request for emergency (break-glass) access to one patient.
#[derive(Debug, InputObject)]
pub struct RequestEmergencyAccessInput {
    /// The patient you need to see.
    pub patient_id: ID,
    /// Why: recorded in the audit trail and reviewed by an auditor (at least 20 characters).
    pub reason: String,
}

/// Removes a clinician from a patient's care team.
#[derive(Debug, InputObject)]
pub struct UnassignClinicianInput {
    /// The clinician to remove.
    pub clinician_id: ID,
    /// The patient whose care team they leave.
    pub patient_id: ID,
}

/// Entry points for writing. A mutation operation runs in one read-write transaction that
/// commits whole or not at all.
#[Object]
impl Mutation {
    /// Updates a patient the signed-in clinician is assigned to. `NOT_FOUND` when the patient
    /// does not exist or is not visible to you; `CONFLICT` when `expectedVersion` is stale.
    async fn update_patient(
        &self,
        ctx: &Context<'_>,
        input: UpdatePatientInput,
    ) -> Result<Patient> {
        let PatientId(id) = PatientId::parse(&input.id, "input.id")?;
        let expected_version = input.expected_version;
        let changes = patient_changes(input)?;
        let request = request_db(ctx)?;
        let result = apply_update(&request, id, expected_version, &changes).await;
        let outcome = match &result {
            Ok(_) => AuditOutcome::Success,
            Err(e) if e.code == ErrorCode::NotFound => AuditOutcome::NotVisible,
            Err(e) => AuditOutcome::from(e),
        };
        super::loaders::forget_loaded(ctx);
        request.record(AuditAction::Update, outcome, [id]);
        Ok(result?)
    }

    /// Enrolls a person so they can sign in. Coordinators only.
    async fn enroll_clinician(
        &self,
        ctx: &Context<'_>,
        input: EnrollClinicianInput,
    ) -> Result<Clinician> {
        let issuer = input.issuer.trim();
        if !is_issuer_url(issuer) {
            return Err(ApiError::bad_input(
                "input.issuer",
                "must be the issuer's http(s) URL, with a host and no query, fragment or spaces (as its tokens' `iss` says)",
            )
            .into());
        }
        let subject = input.subject.trim();
        if subject.is_empty() || subject.len() > 255 || subject.chars().any(is_hidden_control) {
            return Err(ApiError::bad_input(
                "input.subject",
                "must be 1 to 255 bytes (UTF-8) with no control, direction-override or zero-width characters, as the identity provider's `sub` claim",
            )
            .into());
        }
        let display_name = input.display_name.trim();
        if display_name.is_empty() || display_name.chars().count() > 200 {
            return Err(
                ApiError::bad_input("input.displayName", "must be 1 to 200 characters").into(),
            );
        }
        // Shown in care teams and the directory: a line break, an escape sequence or a
        // direction override would let one name pass for another's.
        if hides_characters(display_name) || has_stacked_marks(display_name) {
            return Err(ApiError::bad_input(
                "input.displayName",
                "must not contain control, direction-override, zero-width or stacked combining characters",
            )
            .into());
        }
        let request = request_db(ctx)?;
        let result = enroll(&request, issuer, subject, display_name).await;
        super::loaders::forget_loaded(ctx);
        request.record(AuditAction::Enroll, outcome_of(&result), []);
        Ok(result?)
    }

    /// Adds a clinician to a patient's care team. Coordinators only. `CONFLICT` if already
    /// assigned; `NOT_FOUND` if the clinician or patient does not exist.
    async fn assign_clinician(
        &self,
        ctx: &Context<'_>,
        input: AssignClinicianInput,
    ) -> Result<Patient> {
        let ClinicianId(clinician_id) =
            ClinicianId::parse(&input.clinician_id, "input.clinicianId")?;
        let PatientId(patient_id) = PatientId::parse(&input.patient_id, "input.patientId")?;
        let request = request_db(ctx)?;
        let result = assign(&request, clinician_id, patient_id, input.care_role).await;
        super::loaders::forget_loaded(ctx);
        request.record(AuditAction::Assign, outcome_of(&result), [patient_id]);
        Ok(result?)
    }

    /// Removes a clinician from a patient's care team. Coordinators only. `NOT_FOUND` if there
    /// was no such assignment.
    async fn unassign_clinician(
        &self,
        ctx: &Context<'_>,
        input: UnassignClinicianInput,
    ) -> Result<Patient> {
        let ClinicianId(clinician_id) =
            ClinicianId::parse(&input.clinician_id, "input.clinicianId")?;
        let PatientId(patient_id) = PatientId::parse(&input.patient_id, "input.patientId")?;
        let request = request_db(ctx)?;
        let result = unassign(&request, clinician_id, patient_id).await;
        super::loaders::forget_loaded(ctx);
        request.record(AuditAction::Unassign, outcome_of(&result), [patient_id]);
        Ok(result?)
    }

    /// Break-glass: opens a patient you are not assigned to, for reading, for a limited time
    /// (the server's configured maximum), because of an emergency. Clinicians only. The reason
    /// is required (at least 20 characters); every access under the grant is audited with
    /// purpose "emergency", and auditors review each grant.
    async fn request_emergency_access(
        &self,
        ctx: &Context<'_>,
        input: RequestEmergencyAccessInput,
    ) -> Result<EmergencyAccessGrant> {
        let PatientId(patient_id) = PatientId::parse(&input.patient_id, "input.patientId")?;
        let reason = input.reason.trim();
        // The reason is all an auditor has to judge the grant by: it must be visible text, not
        // zero-width characters, escape sequences or a carriage return that repaint a terminal,
        // or a direction override that reverses what follows. Line breaks are kept (a text
        // area sends `\n`).
        if reason.chars().any(|c| c != '\n' && is_hidden_control(c)) || has_stacked_marks(reason) {
            return Err(ApiError::bad_input(
                "input.reason",
                "must not contain control, direction-override, zero-width or stacked combining characters",
            )
            .into());
        }
        // Counted in letters and digits, and words holding one: blanks that are not whitespace
        // (U+2800) or punctuation alone do not make a reason.
        let visible = reason.chars().filter(|c| c.is_alphanumeric()).count();
        let words = reason
            .split_whitespace()
            .filter(|word| word.chars().any(char::is_alphanumeric))
            .count();
        if visible < 20 || words < 3 || reason.chars().count() > 2000 {
            return Err(ApiError::bad_input(
                "input.reason",
                "describe the emergency (at least 20 characters and 3 words, at most 2000 characters)",
            )
            .into());
        }
        let seconds = limits(ctx)?.emergency_access_secs;
        let request = request_db(ctx)?;
        let result = grant_emergency_access(&request, patient_id, reason, seconds).await;
        super::loaders::forget_loaded(ctx);
        request.record(
            AuditAction::EmergencyAccess,
            outcome_of(&result),
            [patient_id],
        );
        Ok(result?)
    }

    /// Marks an emergency-access grant as reviewed. Auditors only, and never the grant's own
    /// holder. A grant is reviewed once it has ended and no request begun under it can still be
    /// recording what it did (twenty minutes after it ended), so that the review covers
    /// everything done under it: `CONFLICT` until then. `NOT_FOUND` if there is no such grant or it was already reviewed.
    async fn review_emergency_access(
        &self,
        ctx: &Context<'_>,
        grant_id: ID,
    ) -> Result<EmergencyAccessGrant> {
        let GrantId(grant_id) = GrantId::parse(&grant_id, "grantId")?;
        let request = request_db(ctx)?;
        let result = review(&request, grant_id).await;
        let patients: Vec<Uuid> = result.iter().map(|g| g.0.patient_id).collect();
        super::loaders::forget_loaded(ctx);
        request.record(AuditAction::Review, outcome_of(&result), patients);
        Ok(result?)
    }
}

fn outcome_of<T>(result: &Result<T, ApiError>) -> AuditOutcome {
    match result {
        Ok(_) => AuditOutcome::Success,
        Err(e) => AuditOutcome::from(e),
    }
}

/// Validates the input: only the given fields change.
fn patient_changes(input: UpdatePatientInput) -> Result<PatientChanges, ApiError> {
    let name = |field: &str, value: Option<String>| {
        value
            .map(|v| {
                let v = v.trim().to_owned();
                if v.is_empty() || v.chars().count() > 200 {
                    Err(ApiError::bad_input(field, "must be 1 to 200 characters"))
                } else if hides_characters(&v) || has_stacked_marks(&v) {
                    // A patient's name is what a clinician checks before acting on a record:
                    // a direction override or an invisible character lets one pass for another.
                    Err(ApiError::bad_input(
                        field,
                        "must not contain control, direction-override, zero-width or stacked combining characters",
                    ))
                } else {
                    Ok(v)
                }
            })
            .transpose()
    };
    let changes = PatientChanges {
        given_name: name("input.givenName", input.given_name)?,
        family_name: name("input.familyName", input.family_name)?,
        birth_date: input.birth_date,
        clinical_notes: input.clinical_notes,
    };
    // The earliest plausible birth date of anyone with a record (year 0 was stored as 1 BC),
    // and today where it is latest on Earth (UTC+14): a baby born today in Auckland is born
    // tomorrow by UTC's date.
    let earliest = NaiveDate::from_ymd_opt(1850, 1, 1).expect("a valid date");
    let latest = (chrono::Utc::now() + chrono::TimeDelta::hours(14)).date_naive();
    if changes
        .birth_date
        .is_some_and(|d| d > latest || d < earliest)
    {
        return Err(ApiError::bad_input(
            "input.birthDate",
            "must be from 1850-01-01 to today",
        ));
    }
    if changes
        .clinical_notes
        .as_ref()
        .is_some_and(|n| n.chars().count() > 100_000)
    {
        return Err(ApiError::bad_input(
            "input.clinicalNotes",
            "must be at most 100000 characters",
        ));
    }
    if changes.is_empty() {
        return Err(ApiError::bad_input("input", "names no field to change"));
    }
    Ok(changes)
}

/// Runs a prepared patient update and tells apart success, a stale version and a patient the
/// caller cannot see (which looks exactly like one that does not exist).
async fn apply_update(
    request: &RequestDb,
    id: Uuid,
    expected_version: i32,
    changes: &PatientChanges,
) -> Result<Patient, ApiError> {
    let conn = request.conn_for_write().await?;
    let updated = conn
        .execute_raw(rows::patient_update_statement(
            id,
            expected_version,
            changes,
        ))
        .await
        .map_err(|e| write_error(e.into()))?;
    let row = rows::patient(&conn, id).await?;
    match (updated.rows_affected(), row) {
        (1, Some(row)) => Ok(Patient(row)),
        (_, None) => Err(ApiError::not_found("patient")),
        // Visible at the version sent, yet not updated: read through an emergency grant, which
        // opens a patient for reading only. Retrying would never succeed, so not a conflict.
        (_, Some(row)) if row.version == expected_version => Err(ApiError::forbidden(
            "this patient is open to you for reading only (emergency access); only its care team may change it",
        )),
        (_, Some(row)) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "the patient was changed by someone else (version {} is current, you sent {expected_version}); reload and retry",
                row.version
            ),
        )),
    }
}

async fn enroll(
    request: &RequestDb,
    issuer: &str,
    subject: &str,
    display_name: &str,
) -> Result<Clinician, ApiError> {
    let id = {
        let conn = request.conn_for_write().await?;
        let row = clinician::ActiveModel {
            oidc_issuer: Set(issuer.to_owned()),
            oidc_subject: Set(subject.to_owned()),
            display_name: Set(display_name.to_owned()),
            active: Set(true),
            ..Default::default()
        };
        clinician::Entity::insert(row)
            .exec_without_returning(&conn)
            .await
            .map_err(|e| write_error(e.into()))?;
        let found: Option<i32> = clinician::Entity::find()
            .select_only()
            .column(clinician::Column::Id)
            .filter(clinician::Column::OidcIssuer.eq(issuer))
            .filter(clinician::Column::OidcSubject.eq(subject))
            .into_tuple()
            .one(&conn)
            .await
            .map_err(DbError::from)?;
        found.ok_or_else(|| ApiError::internal("an enrolled clinician could not be read back"))?
    };
    let conn = request.conn().await?;
    rows::clinician(&conn, id)
        .await?
        .map(Clinician)
        .ok_or_else(|| ApiError::internal("an enrolled clinician could not be read back"))
}

async fn assign(
    request: &RequestDb,
    clinician_id: i32,
    patient_id: Uuid,
    care_role: CareRole,
) -> Result<Patient, ApiError> {
    let conn = request.conn_for_write().await?;
    let row = clinician_patient::ActiveModel {
        clinician_id: Set(clinician_id),
        patient_id: Set(patient_id),
        care_role: Set(care_role.into()),
        ..Default::default()
    };
    clinician_patient::Entity::insert(row)
        .exec_without_returning(&conn)
        .await
        .map_err(|e| write_error(e.into()))?;
    read_patient(&conn, patient_id).await
}

async fn unassign(
    request: &RequestDb,
    clinician_id: i32,
    patient_id: Uuid,
) -> Result<Patient, ApiError> {
    let conn = request.conn_for_write().await?;
    let deleted = clinician_patient::Entity::delete_many()
        .filter(clinician_patient::Column::ClinicianId.eq(clinician_id))
        .filter(clinician_patient::Column::PatientId.eq(patient_id))
        .exec(&conn)
        .await
        .map_err(|e| write_error(e.into()))?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::not_found("assignment"));
    }
    read_patient(&conn, patient_id).await
}

async fn grant_emergency_access(
    request: &RequestDb,
    patient_id: Uuid,
    reason: &str,
    seconds: u64,
) -> Result<EmergencyAccessGrant, ApiError> {
    let conn = request.conn_for_write().await?;
    let values: [sea_orm::Value; 3] = [
        patient_id.into(),
        reason.into(),
        format!("{seconds} seconds").into(),
    ];
    let row = conn
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "select rowguard.request_emergency_access($1, $2, $3::interval) as id",
            values,
        ))
        .await
        .map_err(|e| write_error(e.into()))?
        .ok_or_else(|| ApiError::internal("the emergency grant returned no id"))?;
    let id: i64 = row
        .try_get("", "id")
        .map_err(|e| ApiError::from(DbError::from(e)))?;
    find_grant(&conn, id)
        .await?
        .ok_or_else(|| ApiError::internal("a new emergency grant could not be read back"))
}

async fn review(request: &RequestDb, grant_id: i64) -> Result<EmergencyAccessGrant, ApiError> {
    let conn = request.conn_for_write().await?;
    let row = conn
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "select rowguard.review_emergency_access($1) as reviewed",
            [grant_id.into()],
        ))
        .await
        .map_err(|e| {
            let e = DbError::from(e);
            // 55000, object_not_in_prerequisite_state: the grant has not ended yet.
            if e.sqlstate().as_deref() == Some("55000") {
                ApiError::new(
                    ErrorCode::Conflict,
                    "the emergency access grant is still live, or ended less than twenty minutes ago: review it once no request under it can still be recording",
                )
            } else {
                write_error(e)
            }
        })?
        .ok_or_else(|| ApiError::internal("reviewing returned no row"))?;
    let reviewed: bool = row
        .try_get("", "reviewed")
        .map_err(|e| ApiError::from(DbError::from(e)))?;
    if !reviewed {
        return Err(ApiError::not_found("unreviewed emergency access grant"));
    }
    find_grant(&conn, grant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("emergency access grant"))
}

async fn find_grant(
    conn: &impl ConnectionTrait,
    id: i64,
) -> Result<Option<EmergencyAccessGrant>, ApiError> {
    Ok(rows::grant(conn, id).await?.map(EmergencyAccessGrant))
}

async fn read_patient(conn: &impl ConnectionTrait, id: Uuid) -> Result<Patient, ApiError> {
    let row = rows::patient(conn, id).await?;
    Ok(Patient(row.ok_or_else(|| ApiError::not_found("patient"))?))
}

/// Maps constraint violations to the caller's codes; the database's own message (which may
/// quote values) is never passed on.
fn write_error(err: DbError) -> ApiError {
    match err.kind() {
        FailureKind::AlreadyExists => ApiError::new(ErrorCode::Conflict, "that already exists"),
        FailureKind::MissingReference => ApiError::not_found("clinician or patient"),
        FailureKind::InvalidValue => {
            ApiError::new(ErrorCode::BadUserInput, "a value is not acceptable")
        }
        _ => err.into(),
    }
}

/// An OpenID issuer identifier (OpenID Connect Discovery §2: a URL with a host and no query or
/// fragment); `http` is allowed for identity providers on a private network. It is stored as
/// typed and compared byte for byte with tokens' `iss`, so it must already be in the form a URL
/// parser gives back (a trailing slash aside): `HTTPS://IDP`, `https:idp` or a backslash path
/// would be enrolled and never match a login.
fn is_issuer_url(issuer: &str) -> bool {
    if issuer.len() > 500
        || issuer
            .chars()
            .any(|c| c.is_whitespace() || is_hidden_control(c))
    {
        return false;
    }
    openidconnect::url::Url::parse(issuer).is_ok_and(|url| {
        let normal = url.as_str();
        matches!(url.scheme(), "https" | "http")
            && url.host_str().is_some_and(|host| !host.is_empty())
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none()
            && (normal == issuer || normal.strip_suffix('/') == Some(issuer))
    })
}

/// Combining marks piled on one character ("Zalgo" text), which draw over the lines around
/// it. Real scripts stack a few (Vietnamese two, some Indic scripts three); more than four
/// non-spacing or enclosing marks in a row is refused (joiners and variation selectors between
/// them do not break the row), and so is a mark with no character before it to sit on (first,
/// or after a space: it draws over whatever is shown before it). Marks are Unicode's general
/// categories Mn, Mc and Me, in every script.
fn has_stacked_marks(text: &str) -> bool {
    let mut run = 0;
    let mut after_base = false;
    text.chars().any(|c| {
        if is_joiner_or_selector(c) {
            return false;
        }
        let category = c.general_category();
        let mark = matches!(
            category,
            GeneralCategory::NonspacingMark
                | GeneralCategory::SpacingMark
                | GeneralCategory::EnclosingMark
        );
        let piles = mark && category != GeneralCategory::SpacingMark;
        let lone = mark && !after_base;
        run = if piles { run + 1 } else { 0 };
        after_base = mark || !c.is_whitespace();
        lone || run > 4
    })
}

/// Zero-width joiners and non-joiners, and variation selectors.
fn is_joiner_or_selector(c: char) -> bool {
    matches!(c,
        '\u{200C}' | '\u{200D}' | '\u{180B}'..='\u{180F}' | '\u{FE00}'..='\u{FE0F}'
        | '\u{E0100}'..='\u{E01EF}')
}

/// Scripts whose spelling uses zero-width joiners and non-joiners: Arabic, Syriac, Thaana and
/// N'Ko, the Indic scripts and Sinhala, Tibetan, Myanmar, Khmer, Mongolian.
fn spells_with_joiners(c: char) -> bool {
    matches!(c,
        '\u{0600}'..='\u{08FF}'
        | '\u{0900}'..='\u{0DFF}'
        | '\u{0F00}'..='\u{0FFF}'
        | '\u{1000}'..='\u{109F}'
        | '\u{1780}'..='\u{17FF}'
        | '\u{1800}'..='\u{18AF}'
        | '\u{A8E0}'..='\u{A8FF}'
        | '\u{FB50}'..='\u{FDFF}'
        | '\u{FE70}'..='\u{FEFF}')
}

/// Whether `text` holds a character that changes how the rest of it displays without showing
/// itself ([`is_hidden_control`]). Some scripts spell with a few of them, and there they are
/// allowed: a zero-width joiner or non-joiner after a letter or mark of a script that uses them
/// (Sinhala, Persian, Malayalam's chillu at the end of a word), a variation selector after a Han
/// ideograph (Japanese place and family names) or a Mongolian letter. Anywhere else (between
/// Latin, Greek, Cyrillic, Han or Hangul letters, which never need them) they would let one name
/// pass for another's.
fn hides_characters(text: &str) -> bool {
    let mut before: Option<char> = None;
    text.chars().any(|c| {
        let hidden = match c {
            '\u{200C}' | '\u{200D}' => !before.is_some_and(spells_with_joiners),
            '\u{180B}'..='\u{180F}' => {
                !before.is_some_and(|b| matches!(b, '\u{1820}'..='\u{18AF}'))
            }
            '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' => !before.is_some_and(|b| {
                matches!(b,
                    '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}'
                    | '\u{20000}'..='\u{3FFFF}')
            }),
            _ => is_hidden_control(c),
        };
        before = Some(c);
        hidden
    })
}

/// Characters that change how the rest of a name displays without showing themselves: controls,
/// line and paragraph separators, Unicode's default-ignorable code points (format characters,
/// bidirectional controls, zero-width and filler characters, variation selectors, tags) and the
/// other format characters that render as nothing.
fn is_hidden_control(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'
            | '\u{034F}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}')
}
