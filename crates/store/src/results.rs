//! Results: what finished jobs produced, read back with their leads.

use leadscore_core::{AiStatus, Flag, Intent, RuleScore, ScoreBasis, Scoring};
use time::OffsetDateTime;

use crate::leads::{LeadRecord, from_row as lead_from_row};
use crate::row::DbRow;
use crate::{Page, Paged, Result, Store, StoreError, on_pool};

/// A stored result and its lead.
#[derive(Debug, Clone)]
pub struct ResultRecord {
    pub lead: LeadRecord,
    pub run_id: String,
    pub offer_id: String,
    pub version: i64,
    pub scoring: Scoring,
    pub model: Option<String>,
    pub prompt_version: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    pub latency_ms: Option<i64>,
    pub scored_at: OffsetDateTime,
}

impl ResultRecord {
    /// Writes this result as one row of the results CSV (DESIGN section 10).
    pub fn write_csv<W: std::io::Write>(
        &self,
        out: &mut leadscore_core::results_csv::ResultsCsv<W>,
    ) -> std::io::Result<()> {
        let scored_at =
            self.scored_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        out.write(&leadscore_core::results_csv::ResultRow {
            lead_id: &self.lead.id,
            lead: &self.lead.lead,
            scoring: &self.scoring,
            run_id: &self.run_id,
            offer_id: &self.offer_id,
            scored_at: &scored_at,
        })
    }
}

/// Which results to list.
#[derive(Debug, Clone, Default)]
pub struct ResultFilter {
    pub intent: Option<Intent>,
    pub min_score: Option<u8>,
    pub score_basis: Option<ScoreBasis>,
}

fn corrupt(what: &str, v: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {v:?}"))
}

fn result_from_row(r: &impl DbRow) -> Result<ResultRecord> {
    let ai_status = r.text("ai_status")?;
    let basis = r.text("score_basis")?;
    let intent = r.text("intent")?;
    let scoring = Scoring {
        rule: RuleScore { score: r.int("rule_score")? as u8, reasons: r.json("rule_reasons")? },
        ai_intent: r
            .opt_text("ai_intent")?
            .map(|i| Intent::parse(&i).ok_or_else(|| corrupt("ai_intent", &i)))
            .transpose()?,
        ai_score: r.opt_int("ai_score")?.map(|v| v as u8),
        ai_reasoning: r.opt_text("ai_reasoning")?,
        ai_status: AiStatus::parse(&ai_status).ok_or_else(|| corrupt("ai_status", &ai_status))?,
        score_basis: ScoreBasis::parse(&basis).ok_or_else(|| corrupt("score_basis", &basis))?,
        final_score: r.int("final_score")? as u8,
        intent: Intent::parse(&intent).ok_or_else(|| corrupt("intent", &intent))?,
        flags: r.json::<Vec<Flag>>("flags")?,
    };
    Ok(ResultRecord {
        lead: lead_from_row(r)?,
        run_id: r.text("run_id")?,
        offer_id: r.text("offer_id")?,
        version: r.int("version")?,
        scoring,
        model: r.opt_text("model")?,
        prompt_version: r.opt_text("prompt_version")?,
        prompt_tokens: r.opt_int("prompt_tokens")?,
        completion_tokens: r.opt_int("completion_tokens")?,
        cost_usd: r.opt_float("cost_usd")?,
        latency_ms: r.opt_int("latency_ms")?,
        scored_at: r.time("scored_at")?,
    })
}

const COLUMNS: &str = "l.id, l.upload_id, l.line, l.external_id, l.name, l.role, l.company, l.industry, l.location, \
    l.linkedin_bio, l.attributes, l.created_at, r.run_id, r.offer_id, r.version, r.rule_score, r.rule_reasons, \
    r.ai_intent, r.ai_score, r.ai_reasoning, r.ai_status, r.score_basis, r.final_score, r.intent, r.flags, r.model, \
    r.prompt_version, r.prompt_tokens, r.completion_tokens, r.cost_usd, r.latency_ms, r.created_at as scored_at";

impl Store {
    /// A run's results in lead order (cursor = lead id), filtered.
    pub async fn list_run_results(
        &self,
        workspace: &str,
        run_id: &str,
        filter: &ResultFilter,
        page: &Page,
    ) -> Result<Paged<ResultRecord>> {
        let rows = on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {COLUMNS} from results r join leads l on l.workspace_id = r.workspace_id and l.id = r.lead_id \
                 where r.run_id = $1 and r.workspace_id = $2 and r.lead_id > $3 \
                   and ($4 is null or r.intent = $4) and r.final_score >= $5 and ($6 is null or r.score_basis = $6) \
                 order by r.lead_id limit $7")))
                .bind(run_id)
                .bind(workspace)
                .bind(page.after.as_deref().unwrap_or(""))
                .bind(filter.intent.map(|i| i.as_str()))
                .bind(i64::from(filter.min_score.unwrap_or(0)))
                .bind(filter.score_basis.map(|b| b.as_str()))
                .bind(page.fetch_limit())
                .fetch_all(pool)
                .await?;
            rows.iter().map(result_from_row).collect::<Result<Vec<_>>>()?
        });
        Ok(page.finish(rows, |r| r.lead.id.clone()))
    }
}

/// The current result of each lead for an offer: the one from the most recently created run.
const CURRENT: &str = "r.workspace_id = $1 and r.offer_id = $2 and r.run_id = (select max(r2.run_id) from results r2 \
    where r2.workspace_id = r.workspace_id and r2.offer_id = r.offer_id and r2.lead_id = r.lead_id)";

impl Store {
    /// Current results for an offer by offset (page-number pagination of the seed-compatible routes).
    pub async fn current_results(
        &self,
        workspace: &str,
        offer_id: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<ResultRecord>> {
        on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {COLUMNS} from results r join leads l on l.workspace_id = r.workspace_id and l.id = r.lead_id \
                 where {CURRENT} order by r.lead_id limit $3 offset $4")))
                .bind(workspace)
                .bind(offer_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            rows.iter().map(result_from_row).collect()
        })
    }

    pub async fn count_current_results(&self, workspace: &str, offer_id: &str) -> Result<i64> {
        let n = on_pool!(self, pool => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "select count(*) from results r where {CURRENT}")))
            .bind(workspace)
            .bind(offer_id)
            .fetch_one(pool)
            .await?);
        Ok(n)
    }
}

impl Store {
    /// The current result per (lead, offer) of a workspace, optionally of one offer, filtered, in (lead, offer)
    /// order. The cursor is `lead_id~offer_id` of the last item.
    pub async fn list_current_results(
        &self,
        workspace: &str,
        offer_id: Option<&str>,
        filter: &ResultFilter,
        page: &Page,
    ) -> Result<Paged<ResultRecord>> {
        let (after_lead, after_offer) = match page.after.as_deref() {
            None => (String::new(), String::new()),
            Some(c) => {
                let (l, o) =
                    c.split_once('~').ok_or_else(|| StoreError::Corrupt(format!("bad cursor {c:?}")))?;
                (l.to_owned(), o.to_owned())
            }
        };
        let rows = on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {COLUMNS} from results r join leads l on l.workspace_id = r.workspace_id and l.id = r.lead_id \
                 where r.workspace_id = $1 and ($2 is null or r.offer_id = $2) \
                   and r.run_id = (select max(r2.run_id) from results r2 where r2.workspace_id = r.workspace_id \
                     and r2.offer_id = r.offer_id and r2.lead_id = r.lead_id) \
                   and (r.lead_id > $3 or (r.lead_id = $3 and r.offer_id > $4)) \
                   and ($5 is null or r.intent = $5) and r.final_score >= $6 and ($7 is null or r.score_basis = $7) \
                 order by r.lead_id, r.offer_id limit $8")))
                .bind(workspace)
                .bind(offer_id)
                .bind(&after_lead)
                .bind(&after_offer)
                .bind(filter.intent.map(|i| i.as_str()))
                .bind(i64::from(filter.min_score.unwrap_or(0)))
                .bind(filter.score_basis.map(|b| b.as_str()))
                .bind(page.fetch_limit())
                .fetch_all(pool)
                .await?;
            rows.iter().map(result_from_row).collect::<Result<Vec<_>>>()?
        });
        Ok(page.finish(rows, |r| format!("{}~{}", r.lead.id, r.offer_id)))
    }
}
