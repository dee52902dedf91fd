-- API keys can be listed and revoked: a short public prefix to name a key by (null for keys created before this
-- migration: name them by their name), when the key was last used (written at most once a minute per key) and
-- when it was revoked (a revoked key is refused; the row stays so `leadscore keys list` still shows it).
alter table api_keys add column prefix text;
alter table api_keys add column last_used_at text;
alter table api_keys add column revoked_at text;
