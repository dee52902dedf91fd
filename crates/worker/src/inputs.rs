//! What a claimed job needs before it is scored: its run's context (the offer snapshot with the rule layer
//! prepared for it, cached per run), its lead, and with an AI layer its prompt and cached verdict (looked up
//! for the whole claimed batch at once).

use std::sync::Arc;

use leadscore_core::prompt::injection_suspected;
use leadscore_core::{AiOutcome, AiVerdict, Flag, Lead, Rules, Scoring};
use leadscore_store::{ClaimedJob, ClaimedWork, Completion, NewResult, RunUsage, Store};

use crate::{Ai, RunCache, RunContext, ai, lock, retry_delay};

pub(crate) type JobInput = Result<(Arc<RunContext>, Lead), Completion>;

/// Pairs each claimed job with its run context (cached per run; the lead came with the claim). A job whose
/// inputs cannot be had becomes a completion right away.
pub(crate) async fn load_inputs(
    store: &Store,
    cache: &RunCache,
    work: Vec<ClaimedWork>,
) -> Vec<(ClaimedJob, JobInput)> {
    let mut out = Vec::with_capacity(work.len());
    for ClaimedWork { job, lead, .. } in work {
        let input = match (run_context(store, cache, &job.run_id).await, lead) {
            (Ok(Some(ctx)), Some(lead)) => Ok((ctx, lead.lead)),
            (Ok(_), _) => Err(gone(&job)),
            (Err(e), _) => Err(Completion::Failed {
                job: job.clone(),
                error: e.to_string(),
                retry_in: Some(retry_delay(job.attempts)),
                spent: RunUsage::default(),
            }),
        };
        out.push((job, input));
    }
    out
}

fn gone(job: &ClaimedJob) -> Completion {
    Completion::Failed {
        job: job.clone(),
        error: "the lead or its run no longer exists".into(),
        retry_in: None,
        spent: RunUsage::default(),
    }
}

async fn run_context(
    store: &Store,
    cache: &RunCache,
    run_id: &str,
) -> leadscore_store::Result<Option<Arc<RunContext>>> {
    if let Some(ctx) = lock(cache).get(run_id) {
        return Ok(Some(ctx.clone()));
    }
    let Some(snap) = store.run_snapshot(run_id).await? else { return Ok(None) };
    let ctx = Arc::new(RunContext {
        workspace: snap.workspace,
        rules: Rules::for_offer(&snap.offer),
        offer: snap.offer,
        max_cost_usd: snap.max_cost_usd,
        traceparent: snap.traceparent,
    });
    lock(cache).insert(run_id.to_owned(), ctx.clone());
    Ok(Some(ctx))
}

/// A finished job: its completion and, for a fresh AI verdict, the cache entry to store with it.
pub(crate) struct Done {
    pub(crate) completion: Completion,
    pub(crate) cache: Option<(String, AiVerdict)>,
    /// When its claim returned: the job's duration runs from here to its completion written.
    pub(crate) claimed: std::time::Instant,
    /// The job's span, ended once its completion is written.
    pub(crate) span: tracing::Span,
}

/// The span of a claimed job, continuing the trace of the request that created its run. `job_id` is the job's
/// key (run and lead): a job has no id of its own.
pub(crate) fn job_span(worker: &str, job: &ClaimedJob, input: &JobInput) -> tracing::Span {
    let span = tracing::info_span!(
        "job",
        worker,
        run_id = %job.run_id,
        lead_id = %job.lead_id,
        job_id = %format_args!("{}/{}", job.run_id, job.lead_id),
        attempt = job.attempts,
    );
    if let Ok((ctx, _)) = input
        && let Some(parent) = &ctx.traceparent
    {
        leadscore_ops::telemetry::set_parent(&span, parent);
    }
    span
}

pub(crate) type AiInput = Option<(ai::Prepared, Option<AiVerdict>)>;

/// With an AI layer: each loadable job's prompt and cache key, and the cached verdicts of the whole claimed
/// batch looked up in one round trip.
pub(crate) async fn prepare_ai(
    store: &Store,
    ai: Option<&Ai>,
    inputs: &[(ClaimedJob, JobInput)],
) -> Vec<AiInput> {
    let Some(ai) = ai else { return Vec::new() };
    let prepared: Vec<Option<ai::Prepared>> = inputs
        .iter()
        .map(|(_, input)| input.as_ref().ok().map(|(ctx, lead)| ai.prepare(&ctx.workspace, &ctx.offer, lead)))
        .collect();
    let keys: Vec<String> = prepared.iter().flatten().map(|p| p.key.clone()).collect();
    let mut cached = ai.cached(store, &keys).await;
    prepared
        .into_iter()
        .map(|p| {
            p.map(|p| {
                let hit = cached.remove(&p.key);
                let result = if hit.is_some() { "hit" } else { "miss" };
                metrics::counter!("leadscore_llm_cache_requests_total", "result" => result).increment(1);
                (p, hit)
            })
        })
        .collect()
}

/// Scores one lead on the rule layer alone (no AI layer configured): `ai_status: skipped`.
pub(crate) fn score_rules_only(job: ClaimedJob, ctx: &RunContext, lead: &Lead) -> Completion {
    let flags = if injection_suspected(lead) { vec![Flag::PromptInjection] } else { vec![] };
    let scoring = Scoring::compose(ctx.rules.score(lead), AiOutcome::Skipped, flags);
    let result = NewResult::without_model(scoring);
    Completion::Succeeded { job, result: Box::new(result) }
}
