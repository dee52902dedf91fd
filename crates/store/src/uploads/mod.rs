//! Uploads: one CSV file, stored in ONE transaction with all its leads and rejected rows, so an interrupted
//! upload leaves nothing behind.
//!
//! This module holds the upload types; the body waits on disk in [`spool`] until its last byte has arrived,
//! writing an upload is in [`writer`] (with the statement text its bulk inserts need in [`bulk`]), reading a
//! stored upload's report and rejected rows in [`report`].

mod bulk;
mod report;
mod spool;
mod writer;

use time::OffsetDateTime;

pub(crate) use spool::{Spool, SpoolWriter};
pub use writer::UploadWriter;

/// A stored upload's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: String,
    pub filename: Option<String>,
    pub rows_total: i64,
    pub rows_accepted: i64,
    pub rows_rejected: i64,
    pub extra_columns: Vec<String>,
    /// How the file was read (encoding, delimiter, the columns each field came from); empty for uploads stored
    /// before it was recorded.
    pub source: leadscore_core::csv::SourceReport,
    pub created_at: OffsetDateTime,
}

/// A rejected row of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadError {
    pub line: i64,
    pub column: Option<String>,
    pub message: String,
}
