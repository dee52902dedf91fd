-- The AI layer: a run's cost estimate and why it is blocked (the provider rejected the key or model, or its
-- cost cap was reached), and the verdict cache of embedded mode (cluster mode caches in Redis).
alter table runs add column estimated_cost_usd double precision;
alter table runs add column blocked_reason text;

create table verdict_cache (
    key text collate "C" primary key, -- hex sha-256 of model, prompt version and prompt
    intent text not null,
    reasoning text not null,
    expires_at bigint not null -- epoch ms
);
