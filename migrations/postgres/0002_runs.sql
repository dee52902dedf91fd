-- Scoring runs, their jobs (our own queue table, see docs/adr/0001-queue.md) and results.
create table runs (
    id text collate "C" primary key,
    workspace_id text collate "C" not null references workspaces (id) on delete cascade,
    offer_id text collate "C" not null, -- no FK: the offer may be edited or deleted; the snapshot is what counts
    offer_snapshot jsonb not null,
    status text not null, -- queued | running | paused | cancelling | cancelled | completed | blocked
    total bigint not null default 0,
    max_cost_usd double precision,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz
);
create index runs_workspace on runs (workspace_id, id);
create index runs_active on runs (id) where status in ('queued', 'running');

-- Times in the queue are epoch milliseconds: one representation for both backends, cheap to compare.
create table jobs (
    run_id text collate "C" not null,
    lead_id text collate "C" not null,
    status text not null, -- queued | running | retrying | succeeded | failed | cancelled
    attempts bigint not null default 0,
    max_attempts bigint not null,
    run_at bigint not null,
    lease_owner text,
    lease_expires_at bigint,
    last_error text,
    primary key (run_id, lead_id)
);
-- Claimable rows only: the index stays small however many jobs have finished.
create index jobs_claimable on jobs (run_id, run_at) where status in ('queued', 'retrying');
create index jobs_leased on jobs (lease_expires_at) where status = 'running';
-- Whether a run still has open jobs is asked after every completion batch: one index probe.
create index jobs_open on jobs (run_id) where status in ('queued', 'running', 'retrying');

create table results (
    run_id text collate "C" not null,
    lead_id text collate "C" not null,
    workspace_id text collate "C" not null,
    offer_id text collate "C" not null,
    version bigint not null,
    rule_score bigint not null,
    rule_reasons jsonb not null,
    ai_intent text,
    ai_score bigint,
    ai_reasoning text,
    ai_status text not null,
    score_basis text not null,
    final_score bigint not null,
    intent text not null,
    flags jsonb not null,
    model text,
    prompt_version text,
    prompt_tokens bigint,
    completion_tokens bigint,
    cost_usd double precision,
    latency_ms bigint,
    created_at timestamptz not null default now(),
    primary key (run_id, lead_id)
);
create index results_lead_offer on results (workspace_id, offer_id, lead_id);
