-- The queue's tables as in migrations/postgres (0002, 0005), without foreign keys, filled with one run of
-- 600,000 queued jobs; and a minimal no-op queue of 1,500,000 jobs. Recreated before every measurement.
drop table if exists jobs, results, run_tallies, noop_jobs cascade;
drop function if exists tally_jobs, tally_results, result_tally cascade;
create table jobs (
    run_id text collate "C" not null, lead_id text collate "C" not null, status text not null,
    attempts bigint not null default 0, max_attempts bigint not null, run_at bigint not null,
    lease_owner text, lease_expires_at bigint, last_error text, primary key (run_id, lead_id));
create index jobs_claimable on jobs (run_id, run_at) where status in ('queued', 'retrying');
create index jobs_leased on jobs (lease_expires_at) where status = 'running';
create index jobs_open on jobs (run_id) where status in ('queued', 'running', 'retrying');
create table results (
    run_id text collate "C" not null, lead_id text collate "C" not null, workspace_id text collate "C" not null,
    offer_id text collate "C" not null, version bigint not null, rule_score bigint not null, rule_reasons jsonb not null,
    ai_intent text, ai_score bigint, ai_reasoning text, ai_status text not null, score_basis text not null,
    final_score bigint not null, intent text not null, flags jsonb not null, model text, prompt_version text,
    prompt_tokens bigint, completion_tokens bigint, cost_usd double precision, latency_ms bigint,
    created_at timestamptz not null default now(), primary key (run_id, lead_id));
create index results_lead_offer on results (workspace_id, offer_id, lead_id);
create table run_tallies (run_id text collate "C" not null, counter text collate "C" not null, n bigint not null);
create index run_tallies_run on run_tallies (run_id);
create function tally_jobs() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into run_tallies (run_id, counter, n) select run_id, status, count(*) from new_rows group by run_id, status;
    elsif tg_op = 'DELETE' then
        insert into run_tallies (run_id, counter, n) select run_id, status, -count(*) from old_rows group by run_id, status;
    else
        insert into run_tallies (run_id, counter, n)
        select run_id, status, sum(n) from (select run_id, status, 1 as n from new_rows
            union all select run_id, status, -1 from old_rows) d group by run_id, status having sum(n) <> 0;
    end if;
    return null;
end $$;
create trigger jobs_tally_insert after insert on jobs referencing new table as new_rows for each statement execute function tally_jobs();
create trigger jobs_tally_update after update on jobs referencing old table as old_rows new table as new_rows for each statement execute function tally_jobs();
create trigger jobs_tally_delete after delete on jobs referencing old table as old_rows for each statement execute function tally_jobs();
create function result_tally(basis text, prompt_tokens bigint, completion_tokens bigint, cost_usd float8, sign int)
 returns table (counter text, n bigint) language sql immutable as $$
    values (basis, sign::bigint), ('prompt_tokens', sign * coalesce(prompt_tokens, 0)),
        ('completion_tokens', sign * coalesce(completion_tokens, 0)), ('cost_nusd', sign * round(coalesce(cost_usd, 0) * 1e9)::bigint) $$;
create function tally_results() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into run_tallies (run_id, counter, n) select r.run_id, t.counter, sum(t.n) from new_rows r
        cross join lateral result_tally(r.score_basis, r.prompt_tokens, r.completion_tokens, r.cost_usd, 1) t
        group by r.run_id, t.counter having sum(t.n) <> 0;
    end if;
    return null;
end $$;
create trigger results_tally_insert after insert on results referencing new table as new_rows for each statement execute function tally_results();
insert into jobs (run_id, lead_id, status, max_attempts, run_at)
 select '01RUN', lpad(g::text, 26, '0'), 'queued', 5, 0 from generate_series(1, 600000) g;
create table noop_jobs (id bigserial primary key, status text not null, lease_owner text, run_at bigint not null);
create index noop_claimable on noop_jobs (run_at) where status = 'queued';
insert into noop_jobs (status, run_at) select 'queued', 0 from generate_series(1, 1500000);
vacuum analyze;
