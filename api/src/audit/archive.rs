//! `rowguard audit archive --month YYYY-MM --out FILE`: retires one month of the trail.
//!
//! The month's events are exported (one JSON line per event, with its link), a statement of what
//! was archived is signed with the audit key and stored in the database and the checkpoint
//! directory, and the month's partition is detached. The chain keeps every link, so the rest of
//! the trail still verifies end to end; `audit verify` counts the links of an archived month
//! against the signed statement instead of reporting their events as deleted.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use chrono::{Datelike, NaiveDate, SecondsFormat, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement, TransactionTrait,
};
use sha2::{Digest, Sha256};

use super::canonical::{CanonicalVersion, EVENT_COLUMNS, EventRow, canonical};
use super::checkpoint::{CheckpointDir, SignedCheckpoint, hex};
use super::keys::AuditSigner;
use super::statement::{ArchiveBody, FORMAT, LinksDigest, month_name, parse_month};
use super::verify::{VerifyOptions, verify};

#[derive(Debug, FromQueryResult)]
struct ArchivedLink {
    seq: i64,
    version: i16,
    hash: Vec<u8>,
}

/// Archives `month`: refuses unless the whole trail verifies and every event of the month is
/// sealed; the export goes to `out`.
pub async fn archive(
    owner: &DatabaseConnection,
    month: NaiveDate,
    out: &Path,
    signer: &AuditSigner,
    options: &VerifyOptions,
) -> Result<ArchiveBody, String> {
    let name = month_name(month);
    let this_month = Utc::now().date_naive().with_day(1).unwrap_or(month);
    if month >= this_month {
        return Err(format!(
            "{name} is not over yet: only past months can be archived"
        ));
    }
    let partition = format!("events_{}", name.replace('-', "_"));
    let attached = owner
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "select exists (select 1 from pg_catalog.pg_inherits i \
               join pg_catalog.pg_class c on c.oid = i.inhrelid \
               join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
               where n.nspname = 'rowguard_audit' and c.relname = $1) as attached",
            [partition.clone().into()],
        ))
        .await
        .map_err(|e| e.to_string())?
        .and_then(|r| r.try_get::<bool>("", "attached").ok())
        .unwrap_or(false);
    if !attached {
        return Err(format!(
            "there is no attached partition rowguard_audit.{partition} (already archived?)"
        ));
    }

    let report = verify(owner, options).await.map_err(|e| e.to_string())?;
    if !report.is_intact() {
        let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        return Err(format!(
            "the trail does not verify, so nothing is archived:\n  - {}",
            problems.join("\n  - ")
        ));
    }
    let unsealed = owner
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "select count(*) as n from rowguard_audit.{partition} e \
                 where not exists (select 1 from rowguard_audit.chain c where c.event_id = e.id)"
            ),
        ))
        .await
        .map_err(|e| e.to_string())?
        .and_then(|r| r.try_get::<i64>("", "n").ok())
        .unwrap_or(0);
    if unsealed > 0 {
        return Err(format!("{unsealed} events of {name} are not sealed yet"));
    }

    // The export: every event of the month with its link, in chain order.
    let links = ArchivedLink::find_by_statement(Statement::from_string(
        DbBackend::Postgres,
        format!(
            "select c.seq, c.version, c.hash from rowguard_audit.chain c \
             join rowguard_audit.{partition} e on e.id = c.event_id order by c.seq"
        ),
    ))
    .all(owner)
    .await
    .map_err(|e| e.to_string())?;
    let events: std::collections::HashMap<i64, EventRow> =
        EventRow::find_by_statement(Statement::from_string(
            DbBackend::Postgres,
            format!("select {EVENT_COLUMNS} from rowguard_audit.{partition}"),
        ))
        .all(owner)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|e| (e.id, e))
        .collect();
    let seq_to_event: std::collections::HashMap<i64, i64> = owner
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "select c.seq, c.event_id from rowguard_audit.chain c \
                 join rowguard_audit.{partition} e on e.id = c.event_id"
            ),
        ))
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|r| Some((r.try_get("", "seq").ok()?, r.try_get("", "event_id").ok()?)))
        .collect();

    // The export holds patient ids: readable by its owner only.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let exported = export_and_detach(
        owner,
        ExportOf {
            month,
            name: &name,
            partition: &partition,
            links: &links,
            events: &events,
            seq_to_event: &seq_to_event,
        },
        file,
        out,
        signer,
    )
    .await;
    match exported {
        Ok((body, statement)) => {
            if let Some(dir) = &options.checkpoint_dir {
                dir.write_archive(&name, &statement).map_err(|e| {
                    format!(
                        "the month was archived, but the statement was not written to {}: {e}",
                        dir.root().display()
                    )
                })?;
            }
            Ok(body)
        }
        Err(ArchiveFailed::BeforeCommit(reason)) => {
            // Nothing was archived: the export is not left behind to be taken for one (and to
            // make the next attempt refuse an existing file).
            let _ = std::fs::remove_file(out);
            Err(reason)
        }
        Err(ArchiveFailed::AtCommit(reason)) => Err(format!(
            "committing the archive failed ({reason}); it may or may not have been applied: {} \
             is kept, and `rowguard audit verify` tells whether the month was detached",
            out.display()
        )),
    }
}

/// What one month's export is made of.
struct ExportOf<'a> {
    month: NaiveDate,
    name: &'a str,
    partition: &'a str,
    links: &'a [ArchivedLink],
    events: &'a std::collections::HashMap<i64, EventRow>,
    seq_to_event: &'a std::collections::HashMap<i64, i64>,
}

/// Why an archive failed: before its transaction's commit was sent (nothing changed), or at the
/// commit (the outcome is unknown).
enum ArchiveFailed {
    BeforeCommit(String),
    AtCommit(String),
}

/// How long the detach waits for the month's partition: it needs the partition to itself, and
/// while it waits every new audit event queues behind it.
const DETACH_LOCK_TIMEOUT: &str = "5s";

/// Writes the export to `file`, then records the signed statement and detaches the partition
/// in one transaction.
async fn export_and_detach(
    owner: &DatabaseConnection,
    of: ExportOf<'_>,
    mut file: std::fs::File,
    out: &Path,
    signer: &AuditSigner,
) -> Result<(ArchiveBody, SignedCheckpoint), ArchiveFailed> {
    use ArchiveFailed::BeforeCommit;
    let ExportOf {
        month,
        name,
        partition,
        links,
        events,
        seq_to_event,
    } = of;
    let mut file_hash = Sha256::new();
    let mut digest = LinksDigest::default();
    for link in links {
        let event = seq_to_event
            .get(&link.seq)
            .and_then(|id| events.get(id))
            .ok_or_else(|| {
                BeforeCommit(format!("link {} lost its event while exporting", link.seq))
            })?;
        let event_json = String::from_utf8(canonical(CanonicalVersion::V2, event))
            .map_err(|e| BeforeCommit(e.to_string()))?;
        let line = format!(
            "{{\"seq\":{},\"link_version\":{},\"link_hash\":\"{}\",\"event\":{}}}\n",
            link.seq,
            link.version,
            hex(&link.hash),
            event_json
        );
        file.write_all(line.as_bytes())
            .map_err(|e| BeforeCommit(format!("{}: {e}", out.display())))?;
        file_hash.update(line.as_bytes());
        digest.add(link.seq, &link.hash);
    }
    file.sync_all()
        .map_err(|e| BeforeCommit(format!("{}: {e}", out.display())))?;
    // The file's name too, before the partition is detached: a power loss must not keep the
    // detach and lose the directory entry.
    let directory = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(directory)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| BeforeCommit(format!("{}: {e}", directory.display())))?;

    let body = ArchiveBody {
        format: FORMAT.to_owned(),
        month: name.to_owned(),
        events: digest.count,
        links_digest: digest.finish(),
        export_sha256: hex(&file_hash.finalize()),
        created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        key_id: signer.key_id().to_owned(),
    };
    let statement = SignedCheckpoint::sign_statement(signer, &body);

    // Record the statement and detach the partition in one transaction: either both or neither.
    let database = |e: sea_orm::DbErr| BeforeCommit(e.to_string());
    let txn = owner.begin().await.map_err(database)?;
    txn.execute_unprepared(&format!("set local lock_timeout = '{DETACH_LOCK_TIMEOUT}'"))
        .await
        .map_err(database)?;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "insert into rowguard_audit.archives (month, body, signature) values ($1, $2, $3)",
        [
            month.into(),
            statement.body.clone().into(),
            statement.signature.clone().into(),
        ],
    ))
    .await
    .map_err(database)?;
    txn.execute_unprepared(&format!(
        "alter table rowguard_audit.events detach partition rowguard_audit.{partition}; \
         alter table rowguard_audit.{partition} rename to archived_{partition}"
    ))
    .await
    .map_err(|e| {
        if crate::db::DbError::Statement(e.clone())
            .sqlstate()
            .as_deref()
            == Some("55P03")
        {
            BeforeCommit(format!(
                "rowguard_audit.{partition} stayed in use for {DETACH_LOCK_TIMEOUT} (a long \
                 query or an open transaction reads it), so nothing was archived; try again \
                 when it is free"
            ))
        } else {
            database(e)
        }
    })?;
    txn.commit()
        .await
        .map_err(|e| ArchiveFailed::AtCommit(e.to_string()))?;
    Ok((body, statement))
}

/// `rowguard audit archive`.
pub async fn run_command(
    settings: &crate::settings::MigrationSettings,
    month: &str,
    out: &Path,
    signing_key: &Path,
    public_keys: &[std::path::PathBuf],
    checkpoints: Option<std::path::PathBuf>,
) -> Result<String, String> {
    let month = parse_month(month).ok_or_else(|| format!("--month {month:?} is not YYYY-MM"))?;
    let signer = AuditSigner::from_file(signing_key)
        .map_err(|e| format!("ROWGUARD_AUDIT_SIGNING_KEY {e}"))?;
    let mut keys: Vec<_> = vec![signer.public_key()];
    if !public_keys.is_empty() {
        keys.extend(
            super::keys::TrustedKeys::from_files(public_keys)
                .map_err(|e| format!("--public-key {e}"))?
                .keys(),
        );
    }
    let options = VerifyOptions {
        keys: super::keys::TrustedKeys::new(keys),
        checkpoint_dir: checkpoints.map(CheckpointDir::new),
        ..VerifyOptions::default()
    };
    let owner = crate::db::connect_as_role(&settings.url, &settings.role_prefix.owner())
        .await
        .map_err(|e| {
            format!(
                "connecting to archive the audit trail: {}",
                crate::db::with_cause(&e)
            )
        })?;
    let result = archive(&owner, month, out, &signer, &options).await;
    let _ = owner.close().await;
    let body = result?;
    Ok(format!(
        "archived {}: {} events exported to {} (sha256 {}); the partition was detached as \
         rowguard_audit.archived_events_{} — drop it once the export is stored\n",
        body.month,
        body.events,
        out.display(),
        body.export_sha256,
        body.month.replace('-', "_")
    ))
}
