-- SQLite only: a run's open jobs are counted from its tallies (exact, kept by triggers in the same transaction),
-- not probed in `jobs_open`, which its planner did not use anyway (it walked the run's jobs by primary key).
-- Every claim and completion rewrote the index's entries for nothing (BENCHMARKS.md, issue 17).
drop index jobs_open;

-- A result's usage counters are upserted only when they are not zero: a result of the rule layer alone, or a
-- verdict from the cache, bills nothing, and three upserts of 0 per result were a third of its insert's cost.
drop trigger results_tally_insert;
create trigger results_tally_insert after insert on results begin
    insert into run_tallies (run_id, counter, n) values (new.run_id, new.score_basis, 1)
    on conflict (run_id, counter) do update set n = n + excluded.n;
    insert into run_tallies (run_id, counter, n)
    select new.run_id, u.column1, u.column2 from (values
        ('prompt_tokens', coalesce(new.prompt_tokens, 0)),
        ('completion_tokens', coalesce(new.completion_tokens, 0)),
        ('cost_nusd', cast(round(coalesce(new.cost_usd, 0) * 1e9) as integer))) u
    where u.column2 <> 0
    on conflict (run_id, counter) do update set n = n + excluded.n;
end;
