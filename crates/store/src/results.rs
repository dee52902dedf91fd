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

/// Most source columns an export writes by default (an upload has at most 512 columns; a run over many uploads
/// with different columns stops here; `include=` picks others).
pub const MAX_SOURCE_COLUMNS: usize = 512;

/// Whose results a listing or export reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultScope {
    /// One run's results, in lead order (cursor: the lead id).
    Run(String),
    /// The current result per (lead, offer): the one from the most recently created run (highest run id),
    /// optionally of one offer, in (lead, offer) order (cursor: `lead_id~offer_id`).
    Current { offer_id: Option<String> },
}

impl ResultScope {
    /// The tables a page reads (`r` results, `l` leads), the `where` conditions including the keyset position
    /// after the cursor, and the order that goes with it. Bindings: `$1` workspace, `$2` run or offer id, `$3`
    /// and `$4` the cursor's (lead, offer). Every shape walks one index in the listed order and reaches the
    /// other rows by primary key: a page costs its own rows, never a scan or sort of the whole set (issue 13).
    fn shape(&self) -> (&'static str, &'static str, &'static str) {
        const RUN: &str = "results r join leads l on l.workspace_id = r.workspace_id and l.id = r.lead_id";
        // `current_results` names the current run per (lead, offer); kept by triggers on `results`.
        const CURRENT: &str = "current_results c \
            join results r on r.run_id = c.run_id and r.lead_id = c.lead_id \
            join leads l on l.workspace_id = c.workspace_id and l.id = c.lead_id";
        match self {
            ResultScope::Run(_) => {
                (RUN, "r.workspace_id = $1 and r.run_id = $2 and r.lead_id > $3", "r.lead_id")
            }
            ResultScope::Current { offer_id: Some(_) } => {
                (CURRENT, "c.workspace_id = $1 and c.offer_id = $2 and c.lead_id > $3", "c.lead_id")
            }
            ResultScope::Current { offer_id: None } => (
                CURRENT,
                "c.workspace_id = $1 and (c.lead_id, c.offer_id) > ($3, $4)",
                "c.lead_id, c.offer_id",
            ),
        }
    }

    /// Whether the scope has a result for a lead in `$3..=$4` (`$1` workspace, `$2` run or offer id): one seek
    /// on the scope's index in lead order.
    fn has_lead_in_range_sql(&self) -> &'static str {
        match self {
            ResultScope::Run(_) => {
                "exists (select 1 from results r where r.run_id = $2 and r.lead_id between u.min_lead_id and \
                 u.max_lead_id)"
            }
            ResultScope::Current { offer_id: Some(_) } => {
                "exists (select 1 from current_results c where c.workspace_id = $1 and c.offer_id = $2 and \
                 c.lead_id between u.min_lead_id and u.max_lead_id)"
            }
            ResultScope::Current { offer_id: None } => {
                "($2 is null and exists (select 1 from current_results c where c.workspace_id = $1 and \
                 c.lead_id between u.min_lead_id and u.max_lead_id))"
            }
        }
    }

    /// How many results the scope holds: `$1` workspace, `$2` run or offer id.
    fn count_sql(&self) -> &'static str {
        match self {
            ResultScope::Run(_) => {
                "select count(*) from results r where r.workspace_id = $1 and r.run_id = $2"
            }
            ResultScope::Current { offer_id: Some(_) } => {
                "select count(*) from current_results c where c.workspace_id = $1 and c.offer_id = $2"
            }
            ResultScope::Current { offer_id: None } => {
                "select count(*) from current_results c where c.workspace_id = $1 and $2 is null"
            }
        }
    }

    fn id(&self) -> Option<&str> {
        match self {
            ResultScope::Run(run) => Some(run),
            ResultScope::Current { offer_id } => offer_id.as_deref(),
        }
    }

    /// The (lead, offer) key a cursor stands for.
    fn decode(&self, cursor: Option<&str>) -> Result<(String, String)> {
        match (self, cursor) {
            (_, None) => Ok((String::new(), String::new())),
            (ResultScope::Run(_), Some(lead)) => Ok((lead.to_owned(), String::new())),
            (ResultScope::Current { .. }, Some(c)) => {
                let (lead, offer) = c.split_once('~').ok_or(StoreError::BadCursor)?;
                Ok((lead.to_owned(), offer.to_owned()))
            }
        }
    }

    fn encode(&self, r: &ResultRecord) -> String {
        match self {
            ResultScope::Run(_) => r.lead.id.clone(),
            ResultScope::Current { .. } => format!("{}~{}", r.lead.id, r.offer_id),
        }
    }
}

/// A page of `scope`'s results: its shape, then the filter (`$5` intent, `$6` least score, `$7` basis), then
/// `$8` rows from offset `$9`.
fn page_sql(scope: &ResultScope) -> String {
    let (from, position, order) = scope.shape();
    format!(
        "select {COLUMNS} from {from} where {position} \
           and ($5 is null or r.intent = $5) and r.final_score >= $6 and ($7 is null or r.score_basis = $7) \
         order by {order} limit $8 offset $9"
    )
}

/// Binds a first page's parameters (the plan of later pages is the same).
fn bind_page<'q, DB>(
    q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    workspace: &'q str,
    scope: &'q ResultScope,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(workspace)
        .bind(scope.id())
        .bind("")
        .bind("")
        .bind(None::<&str>)
        .bind(0_i64)
        .bind(None::<&str>)
        .bind(Page::MAX_LIMIT as i64 + 1)
        .bind(0_i64)
}

/// Where a read starts: after a cursor (keyset pages), or at an offset (the page numbers of the seed routes).
enum Start<'a> {
    After(Option<&'a str>),
    Offset(i64),
}

impl Store {
    /// THE results pager: a page of `scope`'s results after `page.after`, filtered. Every listing and export
    /// reads through it.
    pub async fn list_results(
        &self,
        workspace: &str,
        scope: &ResultScope,
        filter: &ResultFilter,
        page: &Page,
    ) -> Result<Paged<ResultRecord>> {
        let rows = self
            .read_results(workspace, scope, filter, Start::After(page.after.as_deref()), page.fetch_limit())
            .await?;
        Ok(page.finish(rows, |r| scope.encode(r)))
    }

    /// Results by offset, for the page-number pagination of the seed-compatible `/api/leads/results/`.
    pub async fn list_results_at(
        &self,
        workspace: &str,
        scope: &ResultScope,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<ResultRecord>> {
        self.read_results(workspace, scope, &ResultFilter::default(), Start::Offset(offset), limit).await
    }

    /// Every result of `scope`, one page of `page_size` at a time as the consumer asks for them: memory stays
    /// flat however many there are (exports).
    pub fn result_pages(
        &self,
        workspace: String,
        scope: ResultScope,
        filter: ResultFilter,
        page_size: u32,
    ) -> impl futures_util::Stream<Item = Result<Vec<ResultRecord>>> + Send + 'static {
        let store = self.clone();
        futures_util::stream::try_unfold(Some(None::<String>), move |cursor| {
            let (store, workspace, scope, filter) =
                (store.clone(), workspace.clone(), scope.clone(), filter.clone());
            async move {
                let Some(after) = cursor else { return Ok(None) };
                let page = store
                    .list_results(&workspace, &scope, &filter, &Page { limit: page_size, after })
                    .await?;
                let next = page.next_cursor.map(Some);
                Ok(Some((page.items, next)))
            }
        })
    }

    /// The database's plan for a page of `scope` (tests check its shape: an index walk, no sort of the whole
    /// set, no subquery per row).
    #[doc(hidden)]
    pub async fn explain_results_page(&self, workspace: &str, scope: &ResultScope) -> Result<Vec<String>> {
        use sqlx::Row;
        let sql = page_sql(scope);
        let lines = match &self.pool {
            crate::Pool::Pg(pool) => {
                let rows =
                    bind_page(sqlx::query(sqlx::AssertSqlSafe(format!("explain {sql}"))), workspace, scope)
                        .fetch_all(pool)
                        .await?;
                rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<sqlx::Result<_>>()?
            }
            crate::Pool::Sqlite(pool) => {
                let sql = format!("explain query plan {sql}");
                let rows = bind_page(sqlx::query(sqlx::AssertSqlSafe(sql)), workspace, scope)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(|r| r.try_get::<String, _>("detail")).collect::<sqlx::Result<_>>()?
            }
        };
        Ok(lines)
    }

    /// The source columns of every upload `scope` has results from (at most [`MAX_SOURCE_COLUMNS`]), in upload
    /// order, each name once: the header
    /// an export needs to carry every lead's own columns back. An upload is found by its leads' id range, one
    /// index seek per upload of the workspace (leads have no index on their upload, to keep uploads fast); uploads
    /// made at the very same moment can interleave their ids, and then one may be counted that has no result in
    /// the scope (its columns are empty).
    pub async fn source_columns(&self, workspace: &str, scope: &ResultScope) -> Result<Vec<String>> {
        let sql = format!(
            "select u.extra_columns from uploads u where u.workspace_id = $1 and u.min_lead_id is not null and {} \
             order by u.id",
            scope.has_lead_in_range_sql()
        );
        let lists: Vec<Vec<String>> = on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(workspace)
                .bind(scope.id())
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| r.json::<Vec<String>>("extra_columns")).collect::<Result<_>>()?
        });
        let mut columns: Vec<String> = Vec::new();
        for name in lists.into_iter().flatten() {
            if columns.len() == MAX_SOURCE_COLUMNS {
                break;
            }
            if !columns.contains(&name) {
                columns.push(name);
            }
        }
        Ok(columns)
    }

    /// How many results `scope` holds (unfiltered).
    pub async fn count_results(&self, workspace: &str, scope: &ResultScope) -> Result<i64> {
        let n = on_pool!(self, pool => sqlx::query_scalar::<_, i64>(scope.count_sql())
            .bind(workspace)
            .bind(scope.id())
            .fetch_one(pool)
            .await?);
        Ok(n)
    }

    async fn read_results(
        &self,
        workspace: &str,
        scope: &ResultScope,
        filter: &ResultFilter,
        start: Start<'_>,
        limit: i64,
    ) -> Result<Vec<ResultRecord>> {
        let (after, offset) = match start {
            Start::After(cursor) => (scope.decode(cursor)?, 0),
            Start::Offset(n) => ((String::new(), String::new()), n),
        };
        let sql = page_sql(scope);
        on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(workspace)
                .bind(scope.id())
                .bind(&after.0)
                .bind(&after.1)
                .bind(filter.intent.map(|i| i.as_str()))
                .bind(i64::from(filter.min_score.unwrap_or(0)))
                .bind(filter.score_basis.map(|b| b.as_str()))
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            rows.iter().map(result_from_row).collect()
        })
    }
}
