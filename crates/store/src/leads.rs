//! Leads: accepted CSV rows, one lead each.

use leadscore_core::Lead;
use time::OffsetDateTime;

use crate::row::DbRow;
use crate::{Page, Paged, Result, Store, on_pool};

/// A stored lead and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadRecord {
    pub id: String,
    pub upload_id: String,
    /// Line of the upload the lead was read from.
    pub line: i64,
    pub lead: Lead,
    pub created_at: OffsetDateTime,
}

pub(crate) const LEAD_COLUMNS: &str = "id, upload_id, line, external_id, name, role, company, industry, location, \
                                       linkedin_bio, attributes, created_at";

pub(crate) fn from_row(r: &impl DbRow) -> Result<LeadRecord> {
    Ok(LeadRecord {
        id: r.text("id")?,
        upload_id: r.text("upload_id")?,
        line: r.int("line")?,
        lead: Lead {
            external_id: r.opt_text("external_id")?,
            name: r.text("name")?,
            role: r.text("role")?,
            company: r.text("company")?,
            industry: r.text("industry")?,
            location: r.text("location")?,
            linkedin_bio: r.text("linkedin_bio")?,
            attributes: r.json("attributes")?,
        },
        created_at: r.time("created_at")?,
    })
}

impl Store {
    /// Leads of a workspace in upload order, optionally of one upload only.
    pub async fn list_leads(
        &self,
        workspace: &str,
        upload_id: Option<&str>,
        page: &Page,
    ) -> Result<Paged<LeadRecord>> {
        let after = page.after.as_deref().unwrap_or("");
        let rows = on_pool!(self, pool => {
            let rows = match upload_id {
                // The upload's id range turns this into a range scan of the leads' key.
                Some(upload) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "select {LEAD_COLUMNS} from leads where upload_id = $1 and workspace_id = $2 and id > $3 \
                     and id >= (select min_lead_id from uploads where id = $1) \
                     and id <= (select max_lead_id from uploads where id = $1) \
                     order by id limit $4")))
                    .bind(upload)
                    .bind(workspace)
                    .bind(after)
                    .bind(page.fetch_limit())
                    .fetch_all(pool)
                    .await?,
                None => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "select {LEAD_COLUMNS} from leads where workspace_id = $1 and id > $2 order by id limit $3")))
                    .bind(workspace)
                    .bind(after)
                    .bind(page.fetch_limit())
                    .fetch_all(pool)
                    .await?,
            };
            rows.iter().map(from_row).collect::<Result<Vec<_>>>()?
        });
        Ok(page.finish(rows, |l| l.id.clone()))
    }

    /// Number of leads in a workspace (for page-number pagination on the seed-compatible routes).
    pub async fn count_leads(&self, workspace: &str) -> Result<i64> {
        let n = on_pool!(self, pool => sqlx::query_scalar::<_, i64>("select count(*) from leads where workspace_id = $1")
            .bind(workspace)
            .fetch_one(pool)
            .await?);
        Ok(n)
    }

    /// Leads by offset, for page-number pagination (`/api/leads/?page=N`).
    pub async fn leads_at_offset(&self, workspace: &str, offset: i64, limit: i64) -> Result<Vec<LeadRecord>> {
        on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {LEAD_COLUMNS} from leads where workspace_id = $1 order by id limit $2 offset $3")))
                .bind(workspace)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            rows.iter().map(from_row).collect()
        })
    }

    pub async fn get_lead(&self, workspace: &str, id: &str) -> Result<Option<LeadRecord>> {
        on_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {LEAD_COLUMNS} from leads where id = $1 and workspace_id = $2")))
                .bind(id)
                .bind(workspace)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(from_row).transpose()
        })
    }

    /// The leads with these ids (those that exist in the workspace), in any order: one query for a batch.
    pub async fn leads_by_ids(&self, workspace: &str, ids: &[String]) -> Result<Vec<LeadRecord>> {
        // Postgres: a text[] parameter takes the column's "C" collation, so the primary key is probed per id;
        // ids from jsonb would compare in the default collation and scan the workspace's leads instead.
        match &self.pool {
            crate::Pool::Pg(pool) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "select {LEAD_COLUMNS} from leads where workspace_id = $1 and id = any($2)"
                )))
                .bind(workspace)
                .bind(ids)
                .fetch_all(pool)
                .await?;
                rows.iter().map(from_row).collect()
            }
            crate::Pool::Sqlite(pool) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "select {LEAD_COLUMNS} from leads where workspace_id = $1 and id in (select value from json_each($2))")))
                    .bind(workspace)
                    .bind(sqlx::types::Json(ids))
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(from_row).collect()
            }
        }
    }

    /// Deletes a lead with its jobs and results, in one transaction; false when it does not exist in this
    /// workspace. Each run that had a job for it loses that job from its `total` and its counts (the tally
    /// triggers take the job and the result out), and is finished if that was its last open job. A worker
    /// scoring the lead right now finds its job gone: its completion is ignored like any stale one.
    pub async fn delete_lead(&self, workspace: &str, id: &str) -> Result<bool> {
        let (deleted, runs) = on_pool!(self, pool => {
            let mut tx = crate::WritePool::begin_write(pool).await?;
            let runs: Vec<String> = sqlx::query_scalar(
                "delete from jobs where lead_id = $2 and run_id in (select id from runs where workspace_id = $1) \
                 returning run_id")
                .bind(workspace)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
            for run in &runs {
                sqlx::query("update runs set total = total - 1 where id = $1")
                    .bind(run)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "delete from results where lead_id = $2 and run_id in (select id from runs where workspace_id = $1)")
                .bind(workspace)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let deleted = sqlx::query("delete from leads where id = $1 and workspace_id = $2")
                .bind(id)
                .bind(workspace)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // Nothing else of the workspace changes when there was no such lead.
            if deleted == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            tx.commit().await?;
            (deleted, runs)
        });
        let runs: Vec<&str> = runs.iter().map(String::as_str).collect();
        self.settle_after_write(&runs).await;
        Ok(deleted > 0)
    }
}
