-- The current result per (lead, offer): the run whose result it is, the most recently created one (highest run
-- id). Kept by triggers on `results`, in the statement that writes the result, so listing current results is a
-- walk of this table's index joined to `results` by primary key: no max() per row, no sort, linear in the
-- rows read (issue 13). Concurrent writers of one key serialize on its row; the `where` keeps the newest run.
create table current_results (
    workspace_id text collate "C" not null,
    lead_id text collate "C" not null,
    offer_id text collate "C" not null,
    run_id text collate "C" not null,
    primary key (workspace_id, lead_id, offer_id)
);
-- One offer's current results, in lead order.
create index current_results_offer on current_results (workspace_id, offer_id, lead_id);

create function current_results_insert() returns trigger language plpgsql as $$
begin
    -- One row per key (a batch may hold one lead of two runs of an offer), in key order (a fixed lock order).
    insert into current_results (workspace_id, lead_id, offer_id, run_id)
    select distinct on (workspace_id, lead_id, offer_id) workspace_id, lead_id, offer_id, run_id from new_rows
    order by workspace_id, lead_id, offer_id, run_id desc
    on conflict (workspace_id, lead_id, offer_id) do update set run_id = excluded.run_id
    where excluded.run_id > current_results.run_id;
    return null;
end $$;

-- A deleted result that was current hands over to the newest result left for its key, if any.
create function current_results_delete() returns trigger language plpgsql as $$
begin
    delete from current_results c using old_rows o
    where c.workspace_id = o.workspace_id and c.lead_id = o.lead_id and c.offer_id = o.offer_id
        and c.run_id = o.run_id;
    insert into current_results (workspace_id, lead_id, offer_id, run_id)
    select r.workspace_id, r.lead_id, r.offer_id, max(r.run_id) from results r
    where (r.workspace_id, r.offer_id, r.lead_id) in (select workspace_id, offer_id, lead_id from old_rows)
    group by r.workspace_id, r.lead_id, r.offer_id
    on conflict (workspace_id, lead_id, offer_id) do nothing;
    return null;
end $$;

create trigger results_current_insert after insert on results referencing new table as new_rows
    for each statement execute function current_results_insert();
create trigger results_current_delete after delete on results referencing old table as old_rows
    for each statement execute function current_results_delete();

-- Results written before this migration.
insert into current_results (workspace_id, lead_id, offer_id, run_id)
select workspace_id, lead_id, offer_id, max(run_id) from results group by workspace_id, lead_id, offer_id;
