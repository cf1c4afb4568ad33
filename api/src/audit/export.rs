//! `rowguard audit export`: the sealed trail as FHIR R4 `AuditEvent` resources (NDJSON), for a
//! hospital's audit repository or SIEM. The whole trail is verified first, so nothing is exported
//! from a trail that does not prove intact; resources carry their chain link, and an export
//! resumes after the last link a file holds, so a receiver gets every event once, in order.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbBackend, FromQueryResult, Statement};

use super::canonical::{EVENT_COLUMNS, EventRow};
use super::checkpoint::{CheckpointDir, hex};
use super::fhir::{ChainRef, audit_events, link_of};
use super::keys::TrustedKeys;
use super::verify::{VerifyOptions, verify};

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportRange {
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only links after this one (resuming).
    pub after_link: i64,
    /// At most this many events (the rest on the next run).
    pub limit: Option<u64>,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub events: u64,
    pub resources: u64,
    pub first_link: Option<i64>,
    pub last_link: Option<i64>,
    pub checkpoint: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct ExportRow {
    link_seq: i64,
    link_hash: Vec<u8>,
    #[sea_orm(nested)]
    event: EventRow,
}

const PAGE: u64 = 2000;

/// Verifies the trail, then writes the sealed events of `range` to `out`, one resource a line.
pub async fn export(
    owner: &DatabaseConnection,
    options: &VerifyOptions,
    range: &ExportRange,
    out: &mut impl Write,
) -> Result<ExportSummary, String> {
    let report = verify(owner, options)
        .await
        .map_err(|e| format!("reading the audit trail: {e}"))?;
    if !report.is_intact() {
        let mut message = format!(
            "the audit trail does not verify ({} problems); nothing was exported:",
            report.problems.len()
        );
        for problem in report.problems.iter().take(20) {
            message.push_str(&format!("\n  - {problem}"));
        }
        return Err(message);
    }
    let mut summary = ExportSummary {
        checkpoint: report.latest_checkpoint,
        ..ExportSummary::default()
    };
    let mut after = range.after_link;
    loop {
        let remaining = range
            .limit
            .map_or(PAGE, |l| l.saturating_sub(summary.events).min(PAGE));
        if remaining == 0 {
            break;
        }
        let sql = format!(
            "select c.seq as link_seq, c.hash as link_hash, {EVENT_COLUMNS} \
             from rowguard_audit.chain c \
             join rowguard_audit.events e on e.id = c.event_id and e.occurred_at = c.event_occurred_at \
             where c.seq > $1 \
               and ($2::timestamptz is null or e.occurred_at >= $2) \
               and ($3::timestamptz is null or e.occurred_at < $3) \
             order by c.seq limit {remaining}"
        );
        let rows = ExportRow::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [after.into(), range.since.into(), range.until.into()],
        ))
        .all(owner)
        .await
        .map_err(|e| format!("reading the audit trail: {e}"))?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.link_seq;
        for row in &rows {
            let chain = ChainRef {
                seq: row.link_seq,
                hash: hex(&row.link_hash),
                checkpoint: summary.checkpoint,
            };
            for resource in audit_events(&row.event, Some(&chain)) {
                serde_json::to_writer(&mut *out, &resource).map_err(|e| e.to_string())?;
                out.write_all(b"\n").map_err(|e| e.to_string())?;
                summary.resources += 1;
            }
            summary.events += 1;
            summary.first_link.get_or_insert(row.link_seq);
            summary.last_link = Some(row.link_seq);
        }
        if (rows.len() as u64) < remaining {
            break;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(summary)
}

/// The last chain link an export file holds (0 for an empty or new file).
pub fn last_link_in(path: &Path) -> Result<i64, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut last = 0;
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let resource: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
            format!(
                "{} line {}: not JSON ({e}); was it cut off?",
                path.display(),
                number + 1
            )
        })?;
        last = link_of(&resource).ok_or_else(|| {
            format!(
                "{} line {}: not a Rowguard AuditEvent",
                path.display(),
                number + 1
            )
        })?;
    }
    Ok(last)
}

/// `rowguard audit export`.
#[allow(clippy::too_many_arguments)]
pub async fn run_command(
    settings: &crate::settings::MigrationSettings,
    range: ExportRange,
    out: Option<PathBuf>,
    resume: bool,
    public_keys: &[PathBuf],
    checkpoints: Option<PathBuf>,
) -> Result<String, String> {
    let keys = TrustedKeys::from_files(public_keys).map_err(|e| format!("--public-key {e}"))?;
    let options = VerifyOptions {
        keys,
        checkpoint_dir: checkpoints.map(CheckpointDir::new),
        ..VerifyOptions::default()
    };
    let mut range = range;
    let mut writer: Box<dyn Write> = match &out {
        Some(path) if resume => {
            range.after_link = range.after_link.max(last_link_in(path)?);
            Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ))
        }
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| {
                    format!(
                        "{} (use --resume to continue an export): {e}",
                        path.display()
                    )
                })?,
        )),
        None if resume => return Err("--resume needs --out FILE".into()),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let owner = crate::db::connect_as_role(&settings.url, &settings.role_prefix.owner())
        .await
        .map_err(|e| format!("connecting to export the audit trail: {e}"))?;
    let result = export(&owner, &options, &range, &mut writer).await;
    let _ = owner.close().await;
    drop(writer);
    if result.is_err()
        && !resume
        && let Some(path) = &out
    {
        // Nothing was written to the new file; do not leave it behind looking like an export.
        let _ = std::fs::remove_file(path);
    }
    let summary = result?;
    Ok(match (summary.first_link, summary.last_link) {
        (Some(first), Some(last)) => format!(
            "exported {} AuditEvent resources for {} events (links {first}..{last}); newest signed checkpoint: {}\n",
            summary.resources,
            summary.events,
            summary
                .checkpoint
                .map_or_else(|| "none".to_owned(), |c| format!("link {c}"))
        ),
        _ => format!(
            "nothing to export after link {} (the trail verifies)\n",
            range.after_link
        ),
    })
}
