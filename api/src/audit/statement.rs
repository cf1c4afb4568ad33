//! The signed statement `audit archive` leaves for an archived month, and the digest of its
//! links: written by [`super::archive`], checked by [`super::verify`].

use chrono::{Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checkpoint::{SignedCheckpoint, hex};

/// The format tag of archive statements.
pub const FORMAT: &str = "rowguard-audit-archive/1";

/// What an archive statement says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveBody {
    pub format: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Events (= links) archived.
    pub events: u64,
    /// SHA-256 over every archived link in chain order: its number (8 bytes, big-endian) then
    /// its hash. Verification recomputes it from the links left in the chain.
    pub links_digest: String,
    /// SHA-256 of the export file.
    pub export_sha256: String,
    pub created_at: String,
    pub key_id: String,
}

impl ArchiveBody {
    pub fn parse(statement: &SignedCheckpoint) -> Option<Self> {
        serde_json::from_str::<Self>(&statement.body)
            .ok()
            .filter(|b| b.format == FORMAT)
    }
}

/// Accumulates [`ArchiveBody::links_digest`].
#[derive(Debug, Clone, Default)]
pub struct LinksDigest {
    hasher: Sha256,
    pub count: u64,
}

impl LinksDigest {
    pub fn add(&mut self, seq: i64, hash: &[u8]) {
        self.hasher.update(seq.to_be_bytes());
        self.hasher.update(hash);
        self.count += 1;
    }

    pub fn finish(self) -> String {
        hex(&self.hasher.finalize())
    }
}

/// `YYYY-MM` of a month's first day.
pub fn month_name(month: NaiveDate) -> String {
    format!("{:04}-{:02}", month.year(), month.month())
}

/// `YYYY-MM` (UTC) of a moment.
pub fn month_of(at: &chrono::DateTime<chrono::FixedOffset>) -> String {
    at.with_timezone(&Utc).format("%Y-%m").to_string()
}

/// Parses `YYYY-MM`.
pub fn parse_month(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok()
}
