-- Usage is what the run's AI calls were billed for, and that only grows: a result that is replaced (`retry`) or
-- deleted (with its lead) takes its score basis out of the tallies but leaves its tokens and cost in. Attempts
-- that produced no result add theirs from `complete_jobs`.
drop trigger results_tally_delete;
drop trigger results_tally_update;
create trigger results_tally_delete after delete on results begin
    insert into run_tallies (run_id, counter, n) values (old.run_id, old.score_basis, -1)
    on conflict (run_id, counter) do update set n = n + excluded.n;
end;
create trigger results_tally_update after update on results begin
    insert into run_tallies (run_id, counter, n) values (old.run_id, old.score_basis, -1),
        (new.run_id, new.score_basis, 1),
        (new.run_id, 'prompt_tokens', coalesce(new.prompt_tokens, 0)),
        (new.run_id, 'completion_tokens', coalesce(new.completion_tokens, 0)),
        (new.run_id, 'cost_nusd', cast(round(coalesce(new.cost_usd, 0) * 1e9) as integer))
    on conflict (run_id, counter) do update set n = n + excluded.n;
end;
