-- Typed states (crates/core/src/state.rs is the table of moves): why a run stopped is a value of its own, no
-- longer read from the prefix of a message, and the schema pins the values each status column may hold.
alter table runs add column stop_reason text;
update runs set stop_reason = case
        when status = 'blocked' then 'provider_rejected'
        when blocked_reason like 'max_cost_usd reached%' then 'cost_cap'
        else 'requested' end
    where status in ('paused', 'blocked');
alter table runs add constraint runs_status_valid
    check (status in ('queued', 'running', 'paused', 'blocked', 'cancelling', 'cancelled', 'completed'));
alter table runs add constraint runs_stop_reason_valid
    check (stop_reason in ('requested', 'cost_cap', 'provider_rejected'));
-- A stopped run says why; no other run does.
alter table runs add constraint runs_stop_reason_when_stopped
    check ((stop_reason is not null) = (status in ('paused', 'blocked')));
alter table jobs add constraint jobs_status_valid
    check (status in ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'));
-- A job holds a lease exactly while it runs (the lease guard of every completion relies on it).
alter table jobs add constraint jobs_lease_when_running
    check (status = 'running' or lease_owner is null);
