-- Same model as migrations/postgres/0004_ai.sql.
alter table runs add column estimated_cost_usd real;
alter table runs add column blocked_reason text;

create table verdict_cache (
    key text primary key,
    intent text not null,
    reasoning text not null,
    expires_at integer not null
);
