create table idempotency_keys (
    workspace_id text not null,
    route text not null,
    key text not null,
    body_hash text not null,
    run_id text not null,
    created_at text not null,
    primary key (workspace_id, route, key)
) without rowid;
