-- The queue-depth gauges (leadscore_queue_jobs) add up the tallies of the unfinished runs every few seconds: this
-- index finds those runs at a cost that follows how many are unfinished, not how many runs were ever made.
-- Written in the order of the core's RunStatus::ALL, as the statements render it.
create index runs_unfinished on runs (id) where status in ('queued', 'running', 'paused', 'blocked', 'cancelling');
