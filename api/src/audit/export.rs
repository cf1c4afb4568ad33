//! `rowguard audit export`: the sealed trail as FHIR R4 `AuditEvent` resources (NDJSON), for a
//! hospital's audit repository or SIEM. The whole trail is verified first, so nothing is exported
//! from a trail that does not prove intact; resources carry their chain link, and an export
//! resumes after the last link a file holds, so a receiver gets every event once, in order.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement};

use super::canonical::{EVENT_COLUMNS, EventRow};
use super::checkpoint::{CheckpointDir, hex};
use super::fhir::{ChainRef, audit_events, hash_of, link_of};
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
    /// A link a resumed file holds in part: written again whole whatever `since` and `until`
    /// say, since the file's lines of it are replaced.
    pub redo_link: Option<i64>,
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
        // `until` is a cut in link (commit) order, not a filter: an event committed after one
        // dated at or past it, but dated a little before (its transaction began earlier), waits
        // for the next export instead of being passed over by it.
        let sql = format!(
            "select c.seq as link_seq, c.hash as link_hash, {EVENT_COLUMNS} \
             from rowguard_audit.chain c \
             join rowguard_audit.events e on e.id = c.event_id and e.occurred_at = c.event_occurred_at \
             where c.seq > $1 \
               and ($2::timestamptz is null or e.occurred_at >= $2 or c.seq = $3) \
             order by c.seq limit {remaining}"
        );
        let rows = ExportRow::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [after.into(), range.since.into(), range.redo_link.into()],
        ))
        .all(owner)
        .await
        .map_err(|e| format!("reading the audit trail: {e}"))?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.link_seq;
        let cut = rows.iter().position(|row| {
            Some(row.link_seq) != range.redo_link
                && range
                    .until
                    .is_some_and(|until| row.event.occurred_at >= until)
        });
        for row in &rows[..cut.unwrap_or(rows.len())] {
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
        if cut.is_some() || (rows.len() as u64) < remaining {
            break;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(summary)
}

/// Where an export file stands: its last chain link, that link's hash, how many resources it
/// holds for that link, and the length of the file before that link's first line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumePoint {
    pub link: i64,
    pub hash: String,
    pub resources_of_link: u64,
    pub bytes_before_link: u64,
    /// The file's length without a last line cut off mid-way.
    pub complete_bytes: u64,
}

/// Reads an export file to resume it. A last line cut off mid-way (no newline: the export was
/// killed) is dropped with the rest of its link; any other line that is not a Rowguard
/// AuditEvent is an error.
pub fn resume_point(path: &Path, file: &mut std::fs::File) -> Result<ResumePoint, String> {
    use std::io::{Read, Seek};
    let mut text = Vec::new();
    file.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut point = ResumePoint::default();
    let mut offset = 0u64;
    let mut lines = text.split_inclusive(|b| *b == b'\n').enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        let start = offset;
        offset += line.len() as u64;
        let is_last = lines.peek().is_none();
        let complete = line.ends_with(b"\n");
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if is_last && !complete {
            // Cut off by a killed export (even where what is left still parses, or before a
            // CRLF's last byte): dropped. If it was one of the last link's resources, that link
            // now counts short and is written again whole.
            return Ok(point);
        }
        let parsed: Option<serde_json::Value> = serde_json::from_slice(line).ok();
        let Some(resource) = parsed else {
            return Err(format!(
                "{} line {}: not JSON; the file is damaged (only a last line cut off mid-way is repaired)",
                path.display(),
                number + 1
            ));
        };
        let (Some(link @ 1..), Some(hash)) = (link_of(&resource), hash_of(&resource)) else {
            return Err(format!(
                "{} line {}: not a Rowguard AuditEvent",
                path.display(),
                number + 1
            ));
        };
        if link < point.link {
            return Err(format!(
                "{} line {}: link {link} after link {}; the file is not an export in order",
                path.display(),
                number + 1,
                point.link
            ));
        }
        if link > point.link {
            point = ResumePoint {
                link,
                hash,
                resources_of_link: 0,
                bytes_before_link: start,
                complete_bytes: 0,
            };
        }
        point.resources_of_link += 1;
        point.complete_bytes = offset;
    }
    Ok(point)
}

/// The export file, opened to append: a regular file (created if missing, readable by its
/// owner only), never through a symbolic link, and never a FIFO or a device.
fn open_for_resume(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let (file, metadata) = super::checkpoint::open_regular_file(
        path,
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600),
    )
    .map_err(|e| {
        format!(
            "{}: {e} (an export file is never opened through a symbolic link)",
            path.display()
        )
    })?;
    // Patient ids go into it: only a file of this account's own, with no other name.
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    if metadata.uid() != nix::unistd::Uid::effective().as_raw() {
        return Err(format!(
            "{}: owned by another account; an export is resumed only into a file of its own",
            path.display()
        ));
    }
    if metadata.nlink() > 1 {
        return Err(format!(
            "{}: has other names (hard links); an export is resumed only into a file of its own",
            path.display()
        ));
    }
    if metadata.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(file)
}

/// Appends to the file from `keep` bytes on, cutting it there on the first write: a link the
/// file held in part is written again whole, and nothing is cut if nothing is exported.
struct ResumedFile {
    file: std::fs::File,
    keep: Option<u64>,
}

impl Write for ResumedFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(keep) = self.keep.take() {
            use std::io::Seek;
            self.file.set_len(keep)?;
            self.file.seek(std::io::SeekFrom::Start(keep))?;
        }
        self.file.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Checks that the file's last link is this trail's (same hash) and whether the file holds all
/// of its resources; returns the link to export after.
async fn resume_after(owner: &DatabaseConnection, point: &ResumePoint) -> Result<i64, String> {
    if point.link == 0 {
        return Ok(0);
    }
    // The chain keeps every link, also those whose month was archived (its events detached).
    let hash = owner
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "select hash from rowguard_audit.chain where seq = $1",
            [point.link.into()],
        ))
        .await
        .map_err(|e| format!("reading the audit trail: {e}"))?
        .and_then(|row| row.try_get::<Vec<u8>>("", "hash").ok());
    if hash.as_deref().map(hex) != Some(point.hash.clone()) {
        return Err(format!(
            "the file's last link {} is not this trail's (no such link, or another hash): a file from another database, or edited; nothing was exported",
            point.link
        ));
    }
    let sql = format!(
        "select c.seq as link_seq, c.hash as link_hash, {EVENT_COLUMNS} \
         from rowguard_audit.chain c \
         join rowguard_audit.events e on e.id = c.event_id and e.occurred_at = c.event_occurred_at \
         where c.seq = $1"
    );
    let row = ExportRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [point.link.into()],
    ))
    .one(owner)
    .await
    .map_err(|e| format!("reading the audit trail: {e}"))?;
    // Its event archived: it cannot be written again, so the file is taken as holding it.
    let Some(row) = row else {
        return Ok(point.link);
    };
    let resources = audit_events(&row.event, None).len() as u64;
    Ok(if point.resources_of_link == resources {
        point.link
    } else {
        point.link - 1
    })
}

/// The file to resume, positioned: `range` then starts after what the file holds in full, and
/// a link it holds in part is written again.
async fn resume_file(
    path: &Path,
    owner: &DatabaseConnection,
    range: &mut ExportRange,
) -> Result<ResumedFile, String> {
    let mut file = open_for_resume(path)?;
    let point = resume_point(path, &mut file)?;
    let after = resume_after(owner, &point).await?;
    range.after_link = range.after_link.max(after);
    let keep = if after < point.link {
        range.redo_link = Some(point.link);
        point.bytes_before_link
    } else {
        // Written in full: appended to as it is (a cut last line aside).
        point.complete_bytes
    };
    Ok(ResumedFile {
        file,
        keep: Some(keep),
    })
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
    if resume && out.is_none() {
        return Err("--resume needs --out FILE".into());
    }
    // Connected first, so a database that cannot be reached leaves no file behind.
    let owner = crate::db::connect_as_role(&settings.url, &settings.role_prefix.owner())
        .await
        .map_err(|e| {
            format!(
                "connecting to export the audit trail: {}",
                crate::db::with_cause(&e)
            )
        })?;
    let opened: Result<Box<dyn Write>, String> = match &out {
        Some(path) if resume => resume_file(path, &owner, &mut range)
            .await
            .map(|file| Box::new(std::io::BufWriter::new(file)) as Box<dyn Write>),
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map(|file| Box::new(std::io::BufWriter::new(file)) as Box<dyn Write>)
                .map_err(|e| {
                    format!(
                        "{} (use --resume to continue an export): {e}",
                        path.display()
                    )
                })
        }
        None => Ok(Box::new(std::io::BufWriter::new(std::io::stdout()))),
    };
    let mut writer = match opened {
        Ok(writer) => writer,
        Err(e) => {
            let _ = owner.close().await;
            return Err(e);
        }
    };
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
