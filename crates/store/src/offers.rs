//! Offers: what a workspace sells, and to whom.

use leadscore_core::Offer;
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::row::DbRow;
use crate::{Page, Paged, Result, Store, new_id, now, on_pool};

/// A stored offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferRecord {
    pub id: String,
    pub offer: Offer,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, name, value_props, ideal_use_cases, created_at, updated_at";

fn from_row(r: &impl DbRow) -> Result<OfferRecord> {
    Ok(OfferRecord {
        id: r.text("id")?,
        offer: Offer {
            name: r.text("name")?,
            value_props: r.json("value_props")?,
            ideal_use_cases: r.json("ideal_use_cases")?,
        },
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

impl Store {
    pub async fn create_offer(&self, workspace: &str, offer: &Offer) -> Result<OfferRecord> {
        let record = OfferRecord { id: new_id(), offer: offer.clone(), created_at: now(), updated_at: now() };
        on_pool!(self, pool => { sqlx::query(
            "insert into offers (id, workspace_id, name, value_props, ideal_use_cases, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&record.id)
            .bind(workspace)
            .bind(&offer.name)
            .bind(Json(&offer.value_props))
            .bind(Json(&offer.ideal_use_cases))
            .bind(record.created_at)
            .bind(record.updated_at)
            .execute(pool)
            .await?; });
        Ok(record)
    }

    pub async fn get_offer(&self, workspace: &str, id: &str) -> Result<Option<OfferRecord>> {
        on_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {COLUMNS} from offers where id = $1 and workspace_id = $2")))
                .bind(id)
                .bind(workspace)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(from_row).transpose()
        })
    }

    /// The most recently created offer (what the seed-compatible routes score against).
    pub async fn latest_offer(&self, workspace: &str) -> Result<Option<OfferRecord>> {
        on_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {COLUMNS} from offers where workspace_id = $1 order by id desc limit 1")))
                .bind(workspace)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(from_row).transpose()
        })
    }

    pub async fn list_offers(&self, workspace: &str, page: &Page) -> Result<Paged<OfferRecord>> {
        let rows = on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {COLUMNS} from offers where workspace_id = $1 and id > $2 order by id limit $3")))
                .bind(workspace)
                .bind(page.after.as_deref().unwrap_or(""))
                .bind(page.fetch_limit())
                .fetch_all(pool)
                .await?;
            rows.iter().map(from_row).collect::<Result<Vec<_>>>()?
        });
        Ok(page.finish(rows, |o| o.id.clone()))
    }

    /// Replaces an offer's content; `None` when it does not exist in this workspace.
    pub async fn update_offer(
        &self,
        workspace: &str,
        id: &str,
        offer: &Offer,
    ) -> Result<Option<OfferRecord>> {
        on_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "update offers set name = $1, value_props = $2, ideal_use_cases = $3, updated_at = $4 \
                 where id = $5 and workspace_id = $6 returning {COLUMNS}")))
                .bind(&offer.name)
                .bind(Json(&offer.value_props))
                .bind(Json(&offer.ideal_use_cases))
                .bind(now())
                .bind(id)
                .bind(workspace)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(from_row).transpose()
        })
    }

    /// Deletes an offer; false when it does not exist in this workspace.
    pub async fn delete_offer(&self, workspace: &str, id: &str) -> Result<bool> {
        let done = on_pool!(self, pool => sqlx::query("delete from offers where id = $1 and workspace_id = $2")
            .bind(id)
            .bind(workspace)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done > 0)
    }
}
