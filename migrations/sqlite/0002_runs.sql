-- Same model as migrations/postgres/0002_runs.sql.
create table runs (
    id text primary key,
    workspace_id text not null references workspaces (id) on delete cascade,
    offer_id text not null,
    offer_snapshot text not null,
    status text not null,
    total integer not null default 0,
    max_cost_usd real,
    created_at text not null,
    started_at text,
    finished_at text
);
create index runs_workspace on runs (workspace_id, id);

create table jobs (
    run_id text not null,
    lead_id text not null,
    status text not null,
    attempts integer not null default 0,
    max_attempts integer not null,
    run_at integer not null,
    lease_owner text,
    lease_expires_at integer,
    last_error text,
    primary key (run_id, lead_id)
) without rowid;
create index jobs_claimable on jobs (run_id, run_at) where status in ('queued', 'retrying');
create index jobs_leased on jobs (lease_expires_at) where status = 'running';
-- Whether a run still has open jobs is asked after every completion batch: one index probe.
create index jobs_open on jobs (run_id) where status in ('queued', 'running', 'retrying');

create table results (
    run_id text not null,
    lead_id text not null,
    workspace_id text not null,
    offer_id text not null,
    version integer not null,
    rule_score integer not null,
    rule_reasons text not null,
    ai_intent text,
    ai_score integer,
    ai_reasoning text,
    ai_status text not null,
    score_basis text not null,
    final_score integer not null,
    intent text not null,
    flags text not null,
    model text,
    prompt_version text,
    prompt_tokens integer,
    completion_tokens integer,
    cost_usd real,
    latency_ms integer,
    created_at text not null,
    primary key (run_id, lead_id)
) without rowid;
create index results_lead_offer on results (workspace_id, offer_id, lead_id);
