-- Same model as migrations/postgres; timestamps are RFC 3339 text, JSON is text.
create table workspaces (
    id text primary key,
    name text not null,
    created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
insert into workspaces (id, name) values ('default', 'default');

create table api_keys (
    id text primary key,
    workspace_id text not null references workspaces (id) on delete cascade,
    name text not null,
    key_hash text not null unique,
    created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

create table offers (
    id text primary key,
    workspace_id text not null references workspaces (id) on delete cascade,
    name text not null,
    value_props text not null,
    ideal_use_cases text not null,
    created_at text not null,
    updated_at text not null
);
create index offers_workspace on offers (workspace_id, id);

create table uploads (
    id text primary key,
    workspace_id text not null references workspaces (id) on delete cascade,
    filename text,
    rows_total integer not null default 0,
    rows_accepted integer not null default 0,
    rows_rejected integer not null default 0,
    extra_columns text not null default '[]',
    min_lead_id text,
    max_lead_id text,
    created_at text not null
);
create index uploads_workspace on uploads (workspace_id, id);

create table upload_errors (
    upload_id text not null references uploads (id) on delete cascade,
    line integer not null,
    column_name text,
    message text not null,
    primary key (upload_id, line)
) without rowid;

create table leads (
    id text not null,
    workspace_id text not null,
    upload_id text not null,
    line integer not null,
    external_id text,
    name text not null,
    role text not null,
    company text not null,
    industry text not null,
    location text not null,
    linkedin_bio text not null,
    attributes text not null default '[]',
    created_at text not null,
    primary key (workspace_id, id)
) without rowid;
