-- Usage is what the run's AI calls were billed for, and that only grows: a result that is replaced (`retry`) or
-- deleted (with its lead) takes its score basis out of the tallies but leaves its tokens and cost in. Attempts
-- that produced no result add theirs from the completion statement (`complete_jobs`).
create or replace function tally_results() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into run_tallies (run_id, counter, n)
        select r.run_id, t.counter, sum(t.n) from new_rows r
        cross join lateral result_tally(r.score_basis, r.prompt_tokens, r.completion_tokens, r.cost_usd, 1) t
        group by r.run_id, t.counter having sum(t.n) <> 0;
    elsif tg_op = 'DELETE' then
        insert into run_tallies (run_id, counter, n)
        select run_id, score_basis, -count(*) from old_rows group by run_id, score_basis;
    else
        insert into run_tallies (run_id, counter, n)
        select r.run_id, t.counter, sum(t.n) from (
            select run_id, score_basis, prompt_tokens, completion_tokens, cost_usd, 1 as sign from new_rows
            union all
            select run_id, score_basis, 0, 0, 0, -1 from old_rows) r
        cross join lateral result_tally(r.score_basis, r.prompt_tokens, r.completion_tokens, r.cost_usd, r.sign) t
        group by r.run_id, t.counter having sum(t.n) <> 0;
    end if;
    return null;
end $$;
