//! Signed checkpoints of the chain: "the chain had `seq` links and its last hash was
//! `head_hash`, at `created_at`", signed with the sealer's key. The sealer stores each one in the
//! database and in an append-only directory outside it; `rowguard audit verify` checks that the
//! trail still extends the latest one, so a rewritten, re-hashed or cut trail shows.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::keys::{AuditSigner, SignatureCheck, TrustedKeys};

/// The format tag every checkpoint body carries.
pub const FORMAT: &str = "rowguard-audit-checkpoint/1";

/// What a checkpoint states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    pub format: String,
    /// Links in the chain (the `seq` of its last link).
    pub seq: i64,
    /// The last link's hash, lower-case hex.
    pub head_hash: String,
    pub created_at: String,
    /// Which key signed it (see [`super::keys::key_id`]).
    pub key_id: String,
}

/// A checkpoint as stored: the exact signed text and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub body: String,
    pub signature: Vec<u8>,
}

/// The file form: `{"body": "<the signed JSON text>", "signature": "<base64>"}`.
#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    body: String,
    signature: String,
}

/// Lower-case hex text of `bytes`. The sealer spells two hashes per event this way, so it is a
/// table lookup, not a formatted string per byte (which was a quarter of the sealer's CPU).
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

impl SignedCheckpoint {
    /// Signs the statement that the chain has `seq` links ending in `head_hash`.
    pub fn sign(signer: &AuditSigner, seq: i64, head_hash: &[u8], at: DateTime<Utc>) -> Self {
        let body = CheckpointBody {
            format: FORMAT.to_owned(),
            seq,
            head_hash: hex(head_hash),
            created_at: at.to_rfc3339_opts(SecondsFormat::Micros, true),
            key_id: signer.key_id().to_owned(),
        };
        // Serialising strings and integers cannot fail.
        let body = serde_json::to_string(&body).unwrap_or_default();
        let signature = signer.sign(body.as_bytes());
        Self { body, signature }
    }

    /// The statement, if the body is a checkpoint.
    pub fn parse(&self) -> Option<CheckpointBody> {
        serde_json::from_str::<CheckpointBody>(&self.body)
            .ok()
            .filter(|b| b.format == FORMAT)
    }

    /// Signs any statement that names its key (`key_id`), e.g. an archive statement.
    pub fn sign_statement(signer: &AuditSigner, statement: &impl Serialize) -> Self {
        let body = serde_json::to_string(statement).unwrap_or_default();
        let signature = signer.sign(body.as_bytes());
        Self { body, signature }
    }

    /// Whether a trusted key signed exactly this body (of any statement kind).
    pub fn check(&self, keys: &TrustedKeys) -> SignatureCheck {
        #[derive(Deserialize)]
        struct Signer {
            key_id: String,
        }
        match serde_json::from_str::<Signer>(&self.body) {
            Ok(body) => keys.verify(&body.key_id, self.body.as_bytes(), &self.signature),
            Err(_) => SignatureCheck::Invalid,
        }
    }

    pub fn to_file_text(&self) -> String {
        let file = CheckpointFile {
            body: self.body.clone(),
            signature: STANDARD.encode(&self.signature),
        };
        serde_json::to_string(&file).unwrap_or_default() + "\n"
    }

    pub fn from_file_text(text: &str) -> Option<Self> {
        let file: CheckpointFile = serde_json::from_str(text).ok()?;
        Some(Self {
            body: file.body,
            signature: STANDARD.decode(file.signature).ok()?,
        })
    }
}

/// An append-only directory of checkpoint files, one per checkpoint, filed by day:
/// `DIR/2026/12/01/checkpoint-00000000000000001234.json`. Files are created, never rewritten.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    root: PathBuf,
}

impl CheckpointDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `checkpoint` unless a file for its seq exists already with the same content. A
    /// different file under the same name is never replaced.
    pub fn write(&self, checkpoint: &SignedCheckpoint) -> std::io::Result<()> {
        let body = checkpoint
            .parse()
            .ok_or_else(|| std::io::Error::other("not a checkpoint"))?;
        let day = DateTime::parse_from_rfc3339(&body.created_at)
            .map(|t| t.with_timezone(&Utc).format("%Y/%m/%d").to_string())
            .unwrap_or_else(|_| "undated".to_owned());
        let dir = self.root.join(day);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("checkpoint-{:020}.json", body.seq));
        write_once(&path, &checkpoint.to_file_text())
    }

    /// Writes a signed archive statement as `DIR/archives/archive-<month>.json` (never replacing
    /// a different one).
    pub fn write_archive(&self, month: &str, statement: &SignedCheckpoint) -> std::io::Result<()> {
        let dir = self.root.join("archives");
        std::fs::create_dir_all(&dir)?;
        write_once(
            &dir.join(format!("archive-{month}.json")),
            &statement.to_file_text(),
        )
    }

    /// Every archive statement file, with its path (unreadable ones as `None`).
    pub fn read_archives(&self) -> std::io::Result<Vec<(PathBuf, Option<SignedCheckpoint>)>> {
        self.read_files("archive-")
    }

    /// Every checkpoint file under the directory, with its path (unreadable ones as `None`).
    pub fn read_all(&self) -> std::io::Result<Vec<(PathBuf, Option<SignedCheckpoint>)>> {
        self.read_files("checkpoint-")
    }

    /// Symbolic links under the root are not followed and only regular files are read, each up
    /// to [`LARGEST_FILE`]: whoever can write the directory can make a file unreadable (it is then
    /// reported) but cannot make the reading loop, block or fill memory.
    fn read_files(
        &self,
        prefix: &str,
    ) -> std::io::Result<Vec<(PathBuf, Option<SignedCheckpoint>)>> {
        let mut found = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    pending.push(path);
                } else if path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".json"))
                {
                    let parsed = read_small_regular_file(&path)
                        .and_then(|text| SignedCheckpoint::from_file_text(&text));
                    found.push((path, parsed));
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }
}

/// The largest checkpoint or archive file read (they are well under a kilobyte).
pub const LARGEST_FILE: u64 = 64 * 1024;

/// The text of `path` if it is a regular file (not a link, a FIFO or a device) of at most
/// [`LARGEST_FILE`] bytes. Opened without following a link and without blocking, then checked,
/// so a file swapped for something else between listing and reading is refused too.
fn read_small_regular_file(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let (file, metadata) = open_regular_file(path, std::fs::OpenOptions::new().read(true)).ok()?;
    if metadata.len() > LARGEST_FILE {
        return None;
    }
    let mut text = String::new();
    file.take(LARGEST_FILE + 1).read_to_string(&mut text).ok()?;
    (text.len() as u64 <= LARGEST_FILE).then_some(text)
}

/// Opens `path` with `options`, but never through a symbolic link and without blocking on a
/// FIFO, and only if what it opened is a regular file (checked on the open file, so one swapped
/// in between is refused too): a file an audit command reads or writes cannot be turned into a
/// loop, a hang or a write somewhere else by whoever can write its directory.
pub(crate) fn open_regular_file(
    path: &Path,
    options: &mut std::fs::OpenOptions,
) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = options
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((file, metadata))
}

/// Creates `path` with `text`; a file already there is left alone if it holds the same text and
/// is an error otherwise, unless it holds only the start of `text`: a write cut short (a full
/// disk, a crash) left it, and it is completed. A write that fails takes its partial file away,
/// so the next attempt starts afresh (before, an empty file left by a full disk refused every
/// retry as "other content").
fn write_once(path: &Path, text: &str) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => {
            let written = file
                .write_all(text.as_bytes())
                .and_then(|()| file.sync_all());
            if written.is_err() {
                let _ = std::fs::remove_file(path);
            }
            written
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let existing = std::fs::read(path)?;
            if existing == text.as_bytes() {
                Ok(())
            } else if text.as_bytes().starts_with(&existing) {
                let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
                file.write_all(&text.as_bytes()[existing.len()..])?;
                file.sync_all()
            } else {
                Err(std::io::Error::other(format!(
                    "{} exists with other content; not replaced",
                    path.display()
                )))
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_file_cut_short_is_completed_and_one_with_other_content_is_kept() {
        // A review: a full disk left an empty file, and every retry refused it.
        let dir =
            std::env::temp_dir().join(format!("rowguard-write-once-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("checkpoint.json");
        for partial in ["", "{\"seq\":"] {
            std::fs::write(&path, partial).expect("partial");
            write_once(&path, "{\"seq\":1}").expect("completed");
            assert_eq!(std::fs::read_to_string(&path).expect("read"), "{\"seq\":1}");
        }
        write_once(&path, "{\"seq\":1}").expect("the same text is fine");
        assert!(write_once(&path, "{\"seq\":2}").is_err());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "{\"seq\":1}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_checkpoint_survives_its_file_form_and_any_change_breaks_it() {
        let signer = AuditSigner::generate();
        let keys = TrustedKeys::new(vec![signer.public_key()]);
        let checkpoint = SignedCheckpoint::sign(&signer, 42, &[0xab; 32], Utc::now());
        let again = SignedCheckpoint::from_file_text(&checkpoint.to_file_text()).expect("parses");
        assert_eq!(again, checkpoint);
        assert_eq!(again.check(&keys), SignatureCheck::Valid);
        assert_eq!(again.parse().map(|b| b.seq), Some(42));

        let forged = SignedCheckpoint {
            body: checkpoint.body.replace("\"seq\":42", "\"seq\":41"),
            signature: checkpoint.signature.clone(),
        };
        assert_eq!(forged.check(&keys), SignatureCheck::Invalid);
    }
}
