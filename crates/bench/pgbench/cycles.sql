-- One claim/complete cycle of 64 jobs per call, inside the database (one round trip, one commit per cycle):
-- `cycle(w, false)` as the worker does it (claim, then rewrite each job as succeeded and insert its result
-- with constant values), `cycle(w, true)` deleting each job instead of rewriting it, and `noop_cycle(w)`:
-- the minimal SKIP LOCKED loop of no-op jobs.
create or replace function cycle(w text, del bool) returns int language plpgsql as $$
declare r text[]; l text[];
begin
  with picked as (select run_id, lead_id from jobs where run_id = '01RUN' and status in ('queued','retrying') and run_at <= 1
    order by run_at limit 64 for update skip locked),
  claimed as (update jobs set status = 'running', attempts = jobs.attempts + 1, lease_owner = w, lease_expires_at = 99
    from picked where jobs.run_id = picked.run_id and jobs.lead_id = picked.lead_id returning jobs.run_id, jobs.lead_id)
  select array_agg(run_id), array_agg(lead_id) into r, l from claimed;
  -- One statement either way: only the branch `del` picks touches a row.
  with input as (select * from unnest(r, l) u(run_id, lead_id)),
  deleted as (delete from jobs using input where del and jobs.run_id = input.run_id and jobs.lead_id = input.lead_id
    and coalesce(jobs.status, '') = 'running' and jobs.lease_owner = w returning jobs.run_id, jobs.lead_id),
  updated as (update jobs set status = 'succeeded', lease_owner = null, lease_expires_at = null from input
    where not del and jobs.run_id = input.run_id and jobs.lead_id = input.lead_id
    and coalesce(jobs.status, '') = 'running' and jobs.lease_owner = w returning jobs.run_id, jobs.lead_id),
  done as (select * from deleted union all select * from updated)
  insert into results (run_id, lead_id, workspace_id, offer_id, version, rule_score, rule_reasons, ai_status, score_basis, final_score, intent, flags)
  select d.run_id, d.lead_id, '01WORKSPACE000000000000000', '01OFFER0000000000000000000', 1, 40,
    '[{"code":"role_decision_maker","points":20,"detail":"Head of Growth"},{"code":"industry_exact","points":20,"detail":"SaaS"}]'::jsonb,
    'skipped', 'rules_only', 80, 'High', '[]'::jsonb from done d
  on conflict (run_id, lead_id) do update set version = results.version + 1;
  return coalesce(array_length(r, 1), 0);
end $$;
create or replace function noop_cycle(w text) returns int language plpgsql as $$
declare ids bigint[];
begin
  with picked as (select id from noop_jobs where status = 'queued' and run_at <= 1 order by run_at limit 64 for update skip locked),
  claimed as (update noop_jobs set status = 'running', lease_owner = w from picked where noop_jobs.id = picked.id returning noop_jobs.id)
  select array_agg(id) into ids from claimed;
  update noop_jobs set status = 'done', lease_owner = null where id = any(ids) and status = 'running' and lease_owner = w;
  return coalesce(array_length(ids, 1), 0);
end $$;
