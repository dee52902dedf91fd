//! Uploads: one CSV file, stored in ONE transaction with all its leads and rejected rows, so an interrupted
//! upload leaves nothing behind.

use leadscore_core::Lead;
use leadscore_core::csv::RejectedRow;
use sqlx::types::Json;
use sqlx::{Postgres, Sqlite, Transaction};
use time::OffsetDateTime;

use crate::row::DbRow;
use crate::{Page, Paged, Pool, Result, Store, StoreError, new_id, now, on_pool};

/// A stored upload's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: String,
    pub filename: Option<String>,
    pub rows_total: i64,
    pub rows_accepted: i64,
    pub rows_rejected: i64,
    pub extra_columns: Vec<String>,
    pub created_at: OffsetDateTime,
}

/// A rejected row of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadError {
    pub line: i64,
    pub column: Option<String>,
    pub message: String,
}

/// SQLite allows 32,766 bound parameters per statement; 12 per lead.
const SQLITE_LEADS_PER_INSERT: usize = 1000;
const ERRORS_PER_INSERT: usize = 1000;

enum Tx {
    Pg(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
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
}

impl std::fmt::Debug for UploadWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadWriter").field("id", &self.id).field("accepted", &self.accepted).finish()
    }
}

impl Store {
    /// Starts an upload: opens the transaction and creates the upload row.
    pub async fn begin_upload(&self, workspace: &str, filename: Option<&str>) -> Result<UploadWriter> {
        let (id, created_at) = (new_id(), now());
        let sql = "insert into uploads (id, workspace_id, filename, created_at) values ($1, $2, $3, $4)";
        let tx = match &self.pool {
            Pool::Pg(pool) => {
                let mut tx = pool.begin().await?;
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
                // BEGIN IMMEDIATE: take the write lock now, not at the first insert, so a concurrent writer
                // waits on busy_timeout instead of failing with SQLITE_BUSY mid-upload.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
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
        })
    }

    pub async fn get_upload(&self, workspace: &str, id: &str) -> Result<Option<UploadRecord>> {
        on_pool!(self, pool => {
            let row = sqlx::query(
                "select id, filename, rows_total, rows_accepted, rows_rejected, extra_columns, created_at \
                 from uploads where id = $1 and workspace_id = $2")
                .bind(id)
                .bind(workspace)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(upload_from_row).transpose()
        })
    }

    /// An upload's rejected rows in line order; `None` when the upload does not exist in this workspace.
    pub async fn list_upload_errors(
        &self,
        workspace: &str,
        upload_id: &str,
        page: &Page,
    ) -> Result<Option<Paged<UploadError>>> {
        if self.get_upload(workspace, upload_id).await?.is_none() {
            return Ok(None);
        }
        let after: i64 = match page.after.as_deref() {
            None => 0,
            Some(c) => c.parse().map_err(|_| StoreError::Corrupt(format!("bad cursor {c:?}")))?,
        };
        let rows = on_pool!(self, pool => {
            let rows = sqlx::query(
                "select line, column_name, message from upload_errors where upload_id = $1 and line > $2 \
                 order by line limit $3")
                .bind(upload_id)
                .bind(after)
                .bind(page.fetch_limit())
                .fetch_all(pool)
                .await?;
            rows.iter().map(error_from_row).collect::<Result<Vec<_>>>()?
        });
        Ok(Some(page.finish(rows, |e| e.line.to_string())))
    }
}

fn upload_from_row(r: &impl DbRow) -> Result<UploadRecord> {
    Ok(UploadRecord {
        id: r.text("id")?,
        filename: r.opt_text("filename")?,
        rows_total: r.int("rows_total")?,
        rows_accepted: r.int("rows_accepted")?,
        rows_rejected: r.int("rows_rejected")?,
        extra_columns: r.json("extra_columns")?,
        created_at: r.time("created_at")?,
    })
}

fn error_from_row(r: &impl DbRow) -> Result<UploadError> {
    Ok(UploadError { line: r.int("line")?, column: r.opt_text("column_name")?, message: r.text("message")? })
}

impl UploadWriter {
    pub fn id(&self) -> &str {
        &self.id
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
                   min_lead_id = $5, max_lead_id = $6 where id = $7";
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
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        self.store.analyze_after_bulk_write("leads", self.accepted).await;
        Ok(UploadRecord {
            id: self.id,
            filename: self.filename,
            rows_total: total,
            rows_accepted: self.accepted,
            rows_rejected: self.rejected,
            extra_columns: extra_columns.to_vec(),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholders {
    /// `$1, $2, ...` (Postgres).
    Numbered,
    /// `?, ?, ...`: for SQLite, which looks named parameters up one by one while preparing a statement (quadratic
    /// in their number: thousands per bulk insert).
    Positional,
}

/// `prefix ($1, ..., $n), ($n+1, ...), ...` for `rows` rows of `cols` parameters.
fn values_sql(prefix: &str, cols: usize, rows: usize, style: Placeholders) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * cols * 6);
    sql.push_str(prefix);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            match style {
                Placeholders::Numbered => {
                    sql.push('$');
                    sql.push_str(&(r * cols + c + 1).to_string());
                }
                Placeholders::Positional => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

/// One row of `COPY ... (format csv)`: text always quoted (an unquoted empty field would be NULL), NULL as an
/// empty unquoted field.
fn copy_row(
    buf: &mut Vec<u8>,
    id: &str,
    workspace: &str,
    upload: &str,
    line: u64,
    lead: &Lead,
) -> Result<()> {
    let quoted = |buf: &mut Vec<u8>, s: &str| {
        buf.push(b'"');
        for b in s.bytes() {
            if b == b'"' {
                buf.push(b'"');
            }
            buf.push(b);
        }
        buf.push(b'"');
    };
    for s in [id, workspace, upload] {
        quoted(buf, s);
        buf.push(b',');
    }
    buf.extend_from_slice(line.to_string().as_bytes());
    buf.push(b',');
    if let Some(ext) = &lead.external_id {
        quoted(buf, ext);
    }
    for s in [&lead.name, &lead.role, &lead.company, &lead.industry, &lead.location, &lead.linkedin_bio] {
        buf.push(b',');
        quoted(buf, s);
    }
    buf.push(b',');
    let attributes =
        serde_json::to_string(&lead.attributes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    quoted(buf, &attributes);
    buf.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_multi_row_values() {
        assert_eq!(
            values_sql("insert into t values ", 2, 2, Placeholders::Numbered),
            "insert into t values ($1, $2), ($3, $4)"
        );
        assert_eq!(values_sql("v ", 2, 2, Placeholders::Positional), "v (?, ?), (?, ?)");
    }

    #[test]
    fn copy_rows_quote_text_and_leave_null_unquoted() {
        let lead = Lead {
            external_id: None,
            name: "A \"B\"".into(),
            role: String::new(),
            company: "x,y".into(),
            industry: "i".into(),
            location: "l".into(),
            linkedin_bio: "multi\nline".into(),
            attributes: vec![],
        };
        let mut buf = Vec::new();
        copy_row(&mut buf, "id", "ws", "up", 7, &lead).expect("row");
        assert_eq!(
            String::from_utf8(buf).expect("utf8"),
            "\"id\",\"ws\",\"up\",7,,\"A \"\"B\"\"\",\"\",\"x,y\",\"i\",\"l\",\"multi\nline\",\"[]\"\n"
        );
    }
}
