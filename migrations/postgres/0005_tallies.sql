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

-- Static statements (plans cached per session); each branch names only the transition tables its event has.
create function tally_jobs() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into run_tallies (run_id, counter, n)
        select run_id, status, count(*) from new_rows group by run_id, status;
    elsif tg_op = 'DELETE' then
        insert into run_tallies (run_id, counter, n)
        select run_id, status, -count(*) from old_rows group by run_id, status;
    else
        insert into run_tallies (run_id, counter, n)
        select run_id, status, sum(n) from (
            select run_id, status, 1 as n from new_rows
            union all select run_id, status, -1 from old_rows) d
        group by run_id, status having sum(n) <> 0;
    end if;
    return null;
end $$;

create trigger jobs_tally_insert after insert on jobs referencing new table as new_rows
    for each statement execute function tally_jobs();
create trigger jobs_tally_update after update on jobs referencing old table as old_rows new table as new_rows
    for each statement execute function tally_jobs();
create trigger jobs_tally_delete after delete on jobs referencing old table as old_rows
    for each statement execute function tally_jobs();

-- What one result adds to its run's tallies (sign -1: what it takes away).
create function result_tally(basis text, prompt_tokens bigint, completion_tokens bigint, cost_usd float8,
    sign int) returns table (counter text, n bigint) language sql immutable as $$
    values (basis, sign::bigint), ('prompt_tokens', sign * coalesce(prompt_tokens, 0)),
        ('completion_tokens', sign * coalesce(completion_tokens, 0)),
        ('cost_nusd', sign * round(coalesce(cost_usd, 0) * 1e9)::bigint)
$$;

create function tally_results() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into run_tallies (run_id, counter, n)
        select r.run_id, t.counter, sum(t.n) from new_rows r
        cross join lateral result_tally(r.score_basis, r.prompt_tokens, r.completion_tokens, r.cost_usd, 1) t
        group by r.run_id, t.counter having sum(t.n) <> 0;
    elsif tg_op = 'DELETE' then
        insert into run_tallies (run_id, counter, n)
        select r.run_id, t.counter, sum(t.n) from old_rows r
        cross join lateral result_tally(r.score_basis, r.prompt_tokens, r.completion_tokens, r.cost_usd, -1) t
        group by r.run_id, t.counter having sum(t.n) <> 0;
    else
        insert into run_tallies (run_id, counter, n)
        select r.run_id, t.counter, sum(t.n) from (
            select run_id, score_basis, prompt_tokens, completion_tokens, cost_usd, 1 as sign from new_rows
            union all
            select run_id, score_basis, prompt_tokens, completion_tokens, cost_usd, -1 from old_rows) r
        cross join lateral result_tally(r.score_basis, r.prompt_tokens, r.completion_tokens, r.cost_usd, r.sign) t
        group by r.run_id, t.counter having sum(t.n) <> 0;
    end if;
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
select r.run_id, t.counter, sum(t.n) from results r
cross join lateral result_tally(r.score_basis, r.prompt_tokens, r.completion_tokens, r.cost_usd, 1) t
group by r.run_id, t.counter having sum(t.n) <> 0;
