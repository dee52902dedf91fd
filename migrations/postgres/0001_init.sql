-- Workspaces own everything; `default` is used while no API key exists (auth off).
create table workspaces (
    id text primary key,
    name text not null,
    created_at timestamptz not null default now()
);
insert into workspaces (id, name) values ('default', 'default');

create table api_keys (
    id text primary key,
    workspace_id text not null references workspaces (id) on delete cascade,
    name text not null,
    key_hash text not null unique, -- sha-256 of the key; the key itself is shown once and never stored
    created_at timestamptz not null default now()
);

create table offers (
    id text primary key, -- UUIDv7: ids sort in creation order, which cursor pagination relies on
    workspace_id text not null references workspaces (id) on delete cascade,
    name text not null,
    value_props jsonb not null,
    ideal_use_cases jsonb not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index offers_workspace on offers (workspace_id, id);

create table uploads (
    id text primary key,
    workspace_id text not null references workspaces (id) on delete cascade,
    filename text,
    rows_total bigint not null default 0,
    rows_accepted bigint not null default 0,
    rows_rejected bigint not null default 0,
    extra_columns jsonb not null default '[]',
    created_at timestamptz not null default now()
);
create index uploads_workspace on uploads (workspace_id, id);

create table upload_errors (
    upload_id text not null references uploads (id) on delete cascade,
    line bigint not null,
    column_name text,
    message text not null,
    primary key (upload_id, line)
);

-- No foreign keys here: leads arrive by the million through COPY, and a per-row FK probe would cost a large
-- share of the upload rate. workspace_id and upload_id are written by the upload transaction that creates both.
create table leads (
    id text primary key,
    workspace_id text not null,
    upload_id text not null,
    line bigint not null,
    external_id text,
    name text not null,
    role text not null,
    company text not null,
    industry text not null,
    location text not null,
    linkedin_bio text not null,
    attributes jsonb not null default '[]',
    created_at timestamptz not null default now()
);
create index leads_workspace on leads (workspace_id, id);
create index leads_upload on leads (upload_id, id);
