-- Idempotency-Key of POST /v1/leads/score: the same key (per workspace and route) returns the same run for 24 h.
create table idempotency_keys (
    workspace_id text collate "C" not null,
    route text not null,
    key text not null,
    body_hash text not null,
    run_id text collate "C" not null,
    created_at timestamptz not null default now(),
    primary key (workspace_id, route, key)
);
