-- Workspaces own everything; `default` is used while no API key exists (auth off).
-- Ids are text in the C collation: byte-wise comparison, the same order as SQLite's, and several times cheaper
-- to index than a linguistic collation (a million-row upload maintains three id indexes).
create table workspaces (
    id text collate "C" primary key,
    name text not null,
    created_at timestamptz not null default now()
);
insert into workspaces (id, name) values ('default', 'default');

create table api_keys (
    id text collate "C" primary key,
    workspace_id text collate "C" not null references workspaces (id) on delete cascade,
    name text not null,
    key_hash text not null unique, -- sha-256 of the key; the key itself is shown once and never stored
    created_at timestamptz not null default now()
);

create table offers (
    id text collate "C" primary key, -- UUIDv7: ids sort in creation order, which cursor pagination relies on
    workspace_id text collate "C" not null references workspaces (id) on delete cascade,
    name text not null,
    value_props jsonb not null,
    ideal_use_cases jsonb not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index offers_workspace on offers (workspace_id, id);

create table uploads (
    id text collate "C" primary key,
    workspace_id text collate "C" not null references workspaces (id) on delete cascade,
    filename text,
    rows_total bigint not null default 0,
    rows_accepted bigint not null default 0,
    rows_rejected bigint not null default 0,
    extra_columns jsonb not null default '[]',
    -- The smallest and largest lead id of the upload: its leads are found by a range scan of the leads' key,
    -- which spares leads a second index (a large share of the cost of loading a million rows).
    min_lead_id text collate "C",
    max_lead_id text collate "C",
    created_at timestamptz not null default now()
);
create index uploads_workspace on uploads (workspace_id, id);

create table upload_errors (
    upload_id text collate "C" not null references uploads (id) on delete cascade,
    line bigint not null,
    column_name text,
    message text not null,
    primary key (upload_id, line)
);

-- No foreign keys and one index here: leads arrive by the million through COPY, and every per-row probe or
-- index costs a share of the upload rate. workspace_id and upload_id are written by the upload transaction
-- that creates both; an upload's leads are found through uploads.min_lead_id/max_lead_id.
create table leads (
    id text collate "C" not null,
    workspace_id text collate "C" not null,
    upload_id text collate "C" not null,
    line bigint not null,
    external_id text,
    name text not null,
    role text not null,
    company text not null,
    industry text not null,
    location text not null,
    linkedin_bio text not null,
    attributes jsonb not null default '[]',
    created_at timestamptz not null default now(),
    -- Every lookup names the workspace, so (workspace_id, id) is the key and lists a workspace's leads in order;
    -- ids are unique on their own too (time-ordered with a random part), so no separate index is kept for them.
    primary key (workspace_id, id)
);
