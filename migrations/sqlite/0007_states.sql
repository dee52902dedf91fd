-- Typed states (crates/core/src/state.rs is the table of moves): why a run stopped is a value of its own, no
-- longer read from the prefix of a message. SQLite cannot add CHECK constraints to existing columns without
-- rebuilding the tables; the new column is checked, the status columns are pinned by the PostgreSQL schema and
-- by the store, which writes only values rendered from the core's enums.
alter table runs add column stop_reason text check (stop_reason in ('requested', 'cost_cap', 'provider_rejected'));
update runs set stop_reason = case
        when status = 'blocked' then 'provider_rejected'
        when blocked_reason like 'max_cost_usd reached%' then 'cost_cap'
        else 'requested' end
    where status in ('paused', 'blocked');
