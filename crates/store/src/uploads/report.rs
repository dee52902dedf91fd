//! Reading a stored upload back: its report (counts, extra columns) and its rejected rows, page by page.
//!
//! Separate from the writer: these are plain reads on committed data, with none of the writer's transaction
//! handling.

use crate::row::DbRow;
use crate::{Page, Paged, Result, Store, StoreError, on_pool};

use super::{UploadError, UploadRecord};

impl Store {
    pub async fn get_upload(&self, workspace: &str, id: &str) -> Result<Option<UploadRecord>> {
        on_pool!(self, pool => {
            let row = sqlx::query(
                "select id, filename, rows_total, rows_accepted, rows_rejected, extra_columns, source, created_at \
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
        source: r.json("source")?,
        created_at: r.time("created_at")?,
    })
}

fn error_from_row(r: &impl DbRow) -> Result<UploadError> {
    Ok(UploadError { line: r.int("line")?, column: r.opt_text("column_name")?, message: r.text("message")? })
}
