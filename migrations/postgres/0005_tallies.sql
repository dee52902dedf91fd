-- Run tallies: job counts by status, result counts by basis, tokens and cost (nano-USD), kept by triggers so
-- that a status poll reads a few rows however large the run is (docs/adr/0001-queue.md, "Counting").
-- Append-only deltas: each statement that changes `jobs` or `results` inserts its net change per (run, counter),
-- so no row is updated per job and concurrent workers never queue on a hot row. Maintenance folds a run's deltas
-- into one row per counter (`Store::compact_tallies`).
create table run_tallies (
    run_id text collate "C" not null,
    counter text collate "C" not null, -- a job status, a score basis, prompt_tokens, completion_tokens, cost_nusd
    n bigint not null
);
create index run_tallies_run on run_tallies (run_id);

-- Transition tables are read through EXECUTE so that one statement serves inserts, updates and deletes.
create function tally_jobs() returns trigger language plpgsql as $$
declare
    changed text := case tg_op
        when 'INSERT' then 'select run_id, status, 1 as n from new_rows'
        when 'DELETE' then 'select run_id, status, -1 as n from old_rows'
        else 'select run_id, status, 1 as n from new_rows union all select run_id, status, -1 from old_rows'
    end;
begin
    execute 'insert into run_tallies (run_id, counter, n) select run_id, status, sum(n) from (' || changed
        || ') d group by run_id, status having sum(n) <> 0';
    return null;
end $$;

create trigger jobs_tally_insert after insert on jobs referencing new table as new_rows
    for each statement execute function tally_jobs();
create trigger jobs_tally_update after update on jobs referencing old table as old_rows new table as new_rows
    for each statement execute function tally_jobs();
create trigger jobs_tally_delete after delete on jobs referencing old table as old_rows
    for each statement execute function tally_jobs();

create function tally_results() returns trigger language plpgsql as $$
declare
    cols text := 'run_id, score_basis, coalesce(prompt_tokens, 0) as p, coalesce(completion_tokens, 0) as c, '
        || 'round(coalesce(cost_usd, 0) * 1e9)::bigint as usd';
    changed text := case tg_op
        when 'INSERT' then 'select ' || cols || ', 1 as sign from new_rows'
        when 'DELETE' then 'select ' || cols || ', -1 as sign from old_rows'
        else 'select ' || cols || ', 1 as sign from new_rows union all select ' || cols || ', -1 from old_rows'
    end;
begin
    execute 'insert into run_tallies (run_id, counter, n) select d.run_id, t.counter, sum(d.sign * t.n) from ('
        || changed || ') d cross join lateral (values (d.score_basis, 1::bigint), (''prompt_tokens'', d.p), '
        || '(''completion_tokens'', d.c), (''cost_nusd'', d.usd)) as t(counter, n) '
        || 'group by d.run_id, t.counter having sum(d.sign * t.n) <> 0';
    return null;
end $$;

create trigger results_tally_insert after insert on results referencing new table as new_rows
    for each statement execute function tally_results();
create trigger results_tally_update after update on results referencing old table as old_rows new table as new_rows
    for each statement execute function tally_results();
create trigger results_tally_delete after delete on results referencing old table as old_rows
    for each statement execute function tally_results();

-- Runs created before this migration.
insert into run_tallies (run_id, counter, n) select run_id, status, count(*) from jobs group by run_id, status;
insert into run_tallies (run_id, counter, n)
select run_id, t.counter, sum(t.n) from results r cross join lateral (values (r.score_basis, 1::bigint),
    ('prompt_tokens', coalesce(r.prompt_tokens, 0)), ('completion_tokens', coalesce(r.completion_tokens, 0)),
    ('cost_nusd', round(coalesce(r.cost_usd, 0) * 1e9)::bigint)) as t(counter, n)
group by run_id, t.counter having sum(t.n) <> 0;
