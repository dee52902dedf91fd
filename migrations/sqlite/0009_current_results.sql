-- Same model as migrations/postgres/0009_current_results.sql: the current result per (lead, offer), kept by
-- triggers on `results` in the statement that writes the result.
create table current_results (
    workspace_id text not null,
    lead_id text not null,
    offer_id text not null,
    run_id text not null,
    primary key (workspace_id, lead_id, offer_id)
) without rowid;
create index current_results_offer on current_results (workspace_id, offer_id, lead_id);

create trigger results_current_insert after insert on results begin
    insert into current_results (workspace_id, lead_id, offer_id, run_id)
    values (new.workspace_id, new.lead_id, new.offer_id, new.run_id)
    on conflict (workspace_id, lead_id, offer_id) do update set run_id = excluded.run_id
    where excluded.run_id > current_results.run_id;
end;

create trigger results_current_delete after delete on results begin
    delete from current_results where workspace_id = old.workspace_id and lead_id = old.lead_id
        and offer_id = old.offer_id and run_id = old.run_id;
    insert into current_results (workspace_id, lead_id, offer_id, run_id)
    select workspace_id, lead_id, offer_id, max(run_id) from results
    where workspace_id = old.workspace_id and offer_id = old.offer_id and lead_id = old.lead_id
    group by workspace_id, lead_id, offer_id
    on conflict (workspace_id, lead_id, offer_id) do nothing;
end;

insert into current_results (workspace_id, lead_id, offer_id, run_id)
select workspace_id, lead_id, offer_id, max(run_id) from results where true group by workspace_id, lead_id, offer_id;
