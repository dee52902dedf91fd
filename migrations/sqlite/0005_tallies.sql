-- Run tallies: job counts by status, result counts by basis, tokens and cost (nano-USD), kept by triggers so
-- that a status poll reads a few rows however large the run is. SQLite has one writer, so one row per
-- (run, counter) updated in place costs nothing in contention.
create table run_tallies (
    run_id text not null,
    counter text not null, -- a job status, a score basis, prompt_tokens, completion_tokens, cost_nusd
    n integer not null,
    primary key (run_id, counter)
);

create trigger jobs_tally_insert after insert on jobs begin
    insert into run_tallies (run_id, counter, n) values (new.run_id, new.status, 1)
    on conflict (run_id, counter) do update set n = n + excluded.n;
end;
create trigger jobs_tally_delete after delete on jobs begin
    insert into run_tallies (run_id, counter, n) values (old.run_id, old.status, -1)
    on conflict (run_id, counter) do update set n = n + excluded.n;
end;
create trigger jobs_tally_update after update of status on jobs when old.status <> new.status begin
    insert into run_tallies (run_id, counter, n) values (old.run_id, old.status, -1), (new.run_id, new.status, 1)
    on conflict (run_id, counter) do update set n = n + excluded.n;
end;

create trigger results_tally_insert after insert on results begin
    insert into run_tallies (run_id, counter, n) values (new.run_id, new.score_basis, 1),
        (new.run_id, 'prompt_tokens', coalesce(new.prompt_tokens, 0)),
        (new.run_id, 'completion_tokens', coalesce(new.completion_tokens, 0)),
        (new.run_id, 'cost_nusd', cast(round(coalesce(new.cost_usd, 0) * 1e9) as integer))
    on conflict (run_id, counter) do update set n = n + excluded.n;
end;
create trigger results_tally_delete after delete on results begin
    insert into run_tallies (run_id, counter, n) values (old.run_id, old.score_basis, -1),
        (old.run_id, 'prompt_tokens', -coalesce(old.prompt_tokens, 0)),
        (old.run_id, 'completion_tokens', -coalesce(old.completion_tokens, 0)),
        (old.run_id, 'cost_nusd', -cast(round(coalesce(old.cost_usd, 0) * 1e9) as integer))
    on conflict (run_id, counter) do update set n = n + excluded.n;
end;
create trigger results_tally_update after update on results begin
    insert into run_tallies (run_id, counter, n) values (old.run_id, old.score_basis, -1),
        (old.run_id, 'prompt_tokens', -coalesce(old.prompt_tokens, 0)),
        (old.run_id, 'completion_tokens', -coalesce(old.completion_tokens, 0)),
        (old.run_id, 'cost_nusd', -cast(round(coalesce(old.cost_usd, 0) * 1e9) as integer)),
        (new.run_id, new.score_basis, 1),
        (new.run_id, 'prompt_tokens', coalesce(new.prompt_tokens, 0)),
        (new.run_id, 'completion_tokens', coalesce(new.completion_tokens, 0)),
        (new.run_id, 'cost_nusd', cast(round(coalesce(new.cost_usd, 0) * 1e9) as integer))
    on conflict (run_id, counter) do update set n = n + excluded.n;
end;

-- Runs created before this migration.
insert into run_tallies (run_id, counter, n) select run_id, status, count(*) from jobs where true
    group by run_id, status;
insert into run_tallies (run_id, counter, n) select run_id, score_basis, count(*) from results where true
    group by run_id, score_basis;
insert into run_tallies (run_id, counter, n) select run_id, 'prompt_tokens', coalesce(sum(prompt_tokens), 0)
    from results where true group by run_id;
insert into run_tallies (run_id, counter, n)
    select run_id, 'completion_tokens', coalesce(sum(completion_tokens), 0) from results where true group by run_id;
insert into run_tallies (run_id, counter, n)
    select run_id, 'cost_nusd', cast(round(coalesce(sum(cost_usd), 0) * 1e9) as integer) from results where true
    group by run_id;
