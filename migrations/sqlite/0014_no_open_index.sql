-- SQLite only: a run's open jobs are counted from its tallies (exact, kept by triggers in the same transaction),
-- not probed in `jobs_open`, which its planner did not use anyway (it walked the run's jobs by primary key).
-- Every claim and completion rewrote the index's entries for nothing (BENCHMARKS.md, issue 17).
drop index if exists jobs_open;
