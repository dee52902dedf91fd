//! Writing one upload: the transaction opened by [`Store::begin_upload`], batches of leads (`COPY` on
//! PostgreSQL, multi-row `INSERT` on SQLite) and rejected rows, and the commit that records the counts.
//!
//! Separate from the reads in [`super::report`]: everything here happens inside the one transaction that makes
//! an interrupted upload leave nothing behind.

use leadscore_core::Lead;
use leadscore_core::csv::RejectedRow;
use leadscore_core::csv::SourceReport;
use sqlx::types::Json;
use sqlx::{Postgres, Sqlite};
use time::OffsetDateTime;

use crate::{Pool, Result, Store, WritePool, WriteTx, new_id, now};

use super::UploadRecord;
use super::bulk::{Placeholders, copy_row, values_sql};

/// SQLite allows 32,766 bound parameters per statement; 12 per lead.
const SQLITE_LEADS_PER_INSERT: usize = 1000;
const ERRORS_PER_INSERT: usize = 1000;

enum Tx {
    Pg(WriteTx<Postgres>),
    Sqlite(WriteTx<Sqlite>),
}

/// Runs `$body` with `$tx` bound to the backend's transaction: one source, compiled once per backend.
macro_rules! on_tx {
    ($value:expr, mut $tx:ident => $body:expr) => {
        match $value {
            Tx::Pg(mut $tx) => $body,
            Tx::Sqlite(mut $tx) => $body,
        }
    };
    ($value:expr, $tx:ident => $body:expr) => {
        match $value {
            Tx::Pg($tx) => $body,
            Tx::Sqlite($tx) => $body,
        }
    };
}

/// Writes one upload inside a transaction. Dropping it without [`commit`](Self::commit) rolls everything
/// back: that is what happens when the client goes away mid-upload.
pub struct UploadWriter {
    store: Store,
    tx: Tx,
    id: String,
    workspace: String,
    filename: Option<String>,
    accepted: i64,
    rejected: i64,
    /// Smallest and largest lead id written (min/max rather than first/last: robust to a clock step back).
    id_range: Option<(String, String)>,
    created_at: OffsetDateTime,
    copy_buf: Vec<u8>,
    /// How the file was read, stored with the counts.
    source: SourceReport,
}

impl std::fmt::Debug for UploadWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadWriter").field("id", &self.id).field("accepted", &self.accepted).finish()
    }
}

impl Store {
    /// Starts an upload: opens the transaction and creates the upload row. Called only once the data is at
    /// hand (the body received, the header read): on SQLite this takes the write lock until the commit.
    pub async fn begin_upload(&self, workspace: &str, filename: Option<&str>) -> Result<UploadWriter> {
        let (id, created_at) = (new_id(), now());
        let sql = "insert into uploads (id, workspace_id, filename, created_at) values ($1, $2, $3, $4)";
        let tx = match &self.pool {
            Pool::Pg(pool) => {
                let mut tx = WritePool::begin_write(pool).await?;
                sqlx::query(sql)
                    .bind(&id)
                    .bind(workspace)
                    .bind(filename)
                    .bind(created_at)
                    .execute(&mut *tx)
                    .await?;
                Tx::Pg(tx)
            }
            Pool::Sqlite(pool) => {
                let mut tx = WritePool::begin_write(pool).await?;
                sqlx::query(sql)
                    .bind(&id)
                    .bind(workspace)
                    .bind(filename)
                    .bind(created_at)
                    .execute(&mut *tx)
                    .await?;
                Tx::Sqlite(tx)
            }
        };
        Ok(UploadWriter {
            store: self.clone(),
            tx,
            id,
            workspace: workspace.to_owned(),
            filename: filename.map(str::to_owned),
            accepted: 0,
            rejected: 0,
            id_range: None,
            created_at,
            copy_buf: Vec::new(),
            source: SourceReport::default(),
        })
    }
}

impl UploadWriter {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records how the file was read (stored by [`UploadWriter::commit`]).
    pub fn set_source(&mut self, source: SourceReport) {
        self.source = source;
    }

    /// Stores a batch of accepted leads (with their line numbers) and rejected rows; returns the new leads' ids
    /// in order.
    pub async fn write_batch(
        &mut self,
        leads: &[(u64, Lead)],
        rejects: &[RejectedRow],
    ) -> Result<Vec<String>> {
        let ids: Vec<String> = leads.iter().map(|_| new_id()).collect();
        if !leads.is_empty() {
            match &mut self.tx {
                Tx::Pg(tx) => {
                    self.copy_buf.clear();
                    for ((line, lead), id) in leads.iter().zip(&ids) {
                        copy_row(&mut self.copy_buf, id, &self.workspace, &self.id, *line, lead)?;
                    }
                    let mut copy = tx
                        .copy_in_raw(
                            "copy leads (id, workspace_id, upload_id, line, external_id, name, role, company, \
                             industry, location, linkedin_bio, attributes) from stdin (format csv)",
                        )
                        .await?;
                    copy.send(self.copy_buf.as_slice()).await?;
                    copy.finish().await?;
                }
                Tx::Sqlite(tx) => {
                    for (chunk, chunk_ids) in
                        leads.chunks(SQLITE_LEADS_PER_INSERT).zip(ids.chunks(SQLITE_LEADS_PER_INSERT))
                    {
                        // `?` rather than `$N`: SQLite looks named parameters up one by one while preparing,
                        // which is quadratic in their number (13,000 here).
                        let sql = values_sql(
                            "insert into leads (id, workspace_id, upload_id, line, external_id, name, role, company, \
                             industry, location, linkedin_bio, attributes, created_at) values ",
                            13,
                            chunk.len(),
                            Placeholders::Positional,
                        );
                        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                        for ((line, lead), id) in chunk.iter().zip(chunk_ids) {
                            q = q
                                .bind(id)
                                .bind(&self.workspace)
                                .bind(&self.id)
                                .bind(*line as i64)
                                .bind(&lead.external_id)
                                .bind(&lead.name)
                                .bind(&lead.role)
                                .bind(&lead.company)
                                .bind(&lead.industry)
                                .bind(&lead.location)
                                .bind(&lead.linkedin_bio)
                                .bind(Json(&lead.attributes))
                                .bind(self.created_at);
                        }
                        q.execute(&mut **tx).await?;
                    }
                }
            }
        }
        for chunk in rejects.chunks(ERRORS_PER_INSERT) {
            let style = match self.tx {
                Tx::Pg(_) => Placeholders::Numbered,
                Tx::Sqlite(_) => Placeholders::Positional,
            };
            let sql = values_sql(
                "insert into upload_errors (upload_id, line, column_name, message) values ",
                4,
                chunk.len(),
                style,
            );
            on_tx!(&mut self.tx, tx => {
                bind_errors(sqlx::query(sqlx::AssertSqlSafe(sql)), &self.id, chunk).execute(&mut **tx).await?;
            });
        }
        self.accepted += leads.len() as i64;
        self.rejected += rejects.len() as i64;
        if let (Some(lo), Some(hi)) = (ids.iter().min(), ids.iter().max()) {
            self.id_range = Some(match self.id_range.take() {
                None => (lo.clone(), hi.clone()),
                Some((a, b)) => (a.min(lo.clone()), b.max(hi.clone())),
            });
        }
        Ok(ids)
    }

    /// Records the counts and commits: from here on the upload and its leads exist.
    pub async fn commit(self, extra_columns: &[String]) -> Result<UploadRecord> {
        let sql = "update uploads set rows_total = $1, rows_accepted = $2, rows_rejected = $3, extra_columns = $4, \
                   min_lead_id = $5, max_lead_id = $6, source = $8 where id = $7";
        let (min_id, max_id) = self.id_range.clone().unzip();
        let total = self.accepted + self.rejected;
        on_tx!(self.tx, mut tx => {
            sqlx::query(sql)
                .bind(total)
                .bind(self.accepted)
                .bind(self.rejected)
                .bind(Json(extra_columns))
                .bind(&min_id)
                .bind(&max_id)
                .bind(&self.id)
                .bind(Json(&self.source))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        self.store.analyze_after_bulk_write("leads", self.accepted).await;
        // Counted once the upload is stored: an interrupted or refused one stores (and counts) nothing.
        metrics::counter!("leadscore_upload_rows_total", "outcome" => "accepted")
            .increment(self.accepted as u64);
        metrics::counter!("leadscore_upload_rows_total", "outcome" => "rejected")
            .increment(self.rejected as u64);
        Ok(UploadRecord {
            id: self.id,
            filename: self.filename,
            rows_total: total,
            rows_accepted: self.accepted,
            rows_rejected: self.rejected,
            extra_columns: extra_columns.to_vec(),
            source: self.source,
            created_at: self.created_at,
        })
    }
}

fn bind_errors<'q, DB: sqlx::Database>(
    mut q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    upload_id: &'q str,
    rejects: &'q [RejectedRow],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for r in rejects {
        q = q.bind(upload_id).bind(r.line as i64).bind(r.column.as_deref()).bind(r.message.as_str());
    }
    q
}
