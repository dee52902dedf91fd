//! The one place where run and job states meet SQL: every status literal a statement contains is rendered here
//! from the core's transition table ([`leadscore_core::state`]), so a guard (`where status in (...)`) admits
//! exactly the states the table lets an event leave, and the value written is the one the table leads to.
//!
//! Fragments used on hot paths are rendered once per process. The lists keep the order of the core's `ALL`
//! arrays: the partial indexes of migration 0002 (`runs_active`, `jobs_claimable`, `jobs_open`) are written in
//! that order, and a statement whose guard implies an index's predicate can use it.

use std::sync::LazyLock;

use leadscore_core::{JobEvent, JobStatus, RunEvent, RunStatus, StopReason};

use crate::{Result, StoreError};

/// `'a', 'b'`: a SQL list of state names.
fn list<T: Copy>(states: &[T], name: impl Fn(T) -> &'static str) -> String {
    states.iter().map(|s| format!("'{}'", name(*s))).collect::<Vec<_>>().join(", ")
}

/// `'name'`: one state as a SQL literal.
pub(crate) fn lit_run(s: RunStatus) -> String {
    format!("'{}'", s.as_str())
}

pub(crate) fn lit_job(s: JobStatus) -> String {
    format!("'{}'", s.as_str())
}

/// `{column} in (...)`: the run states `event` may leave.
pub(crate) fn run_guard(column: &str, event: RunEvent) -> String {
    guard(column, &RunStatus::sources(event), RunStatus::as_str)
}

/// `{column} in (...)`, or `{column} = ...` for one state: SQLite uses a partial index only when the statement
/// repeats its predicate's terms, and `status in ('running')` is not the term `status = 'running'` of
/// `jobs_leased` (the lease rescue scanned every job).
fn guard<T: Copy>(column: &str, states: &[T], name: impl Fn(T) -> &'static str) -> String {
    match states {
        [one] => format!("{column} = '{}'", name(*one)),
        _ => format!("{column} in ({})", list(states, name)),
    }
}

/// The run's next status after `event` as a SQL expression over its `status` and `started_at` columns (the
/// table's target can depend on both). Only meaningful under [`run_guard`] for the same event.
pub(crate) fn run_target(event: RunEvent) -> String {
    let mut arms = String::new();
    for from in RunStatus::sources(event) {
        let (fresh, begun) = match (from.on(event, false), from.on(event, true)) {
            (Ok(fresh), Ok(begun)) => (fresh, begun),
            _ => continue,
        };
        if fresh == begun {
            arms.push_str(&format!(" when status = '{from}' then '{fresh}'"));
        } else {
            arms.push_str(&format!(
                " when status = '{from}' then case when started_at is null then '{fresh}' else '{begun}' end"
            ));
        }
    }
    format!("case{arms} else status end")
}

/// `status = ..., stop_reason = ..., blocked_reason = ...`: the columns `event` sets on a run. A stopping
/// event records its typed reason and `message` (a SQL expression) as the human-readable one; any other event
/// keeps both while the run stays stopped (`retry` of a paused run) and clears them when it leaves.
pub(crate) fn run_set(event: RunEvent, message: &str) -> String {
    let target = run_target(event);
    match event.stop_reason() {
        Some(reason) => {
            format!("status = {target}, stop_reason = '{}', blocked_reason = {message}", reason.as_str())
        }
        None => {
            let stopped = format!("({target}) in ('{}', '{}')", RunStatus::Paused, RunStatus::Blocked);
            format!(
                "status = {target}, stop_reason = case when {stopped} then stop_reason end, \
                 blocked_reason = case when {stopped} then blocked_reason end"
            )
        }
    }
}

/// `{column} in (...)`: the job states `event` may leave.
pub(crate) fn job_guard(column: &str, event: JobEvent) -> String {
    guard(column, JobStatus::sources(event), JobStatus::as_str)
}

/// `'queued', 'running'`: runs whose jobs are claimed (the predicate of `runs_active`).
pub(crate) static CLAIMABLE_RUNS: LazyLock<String> =
    LazyLock::new(|| list(&RunStatus::CLAIMABLE, RunStatus::as_str));

/// `'completed', 'cancelled'`.
pub(crate) static FINISHED_RUNS: LazyLock<String> =
    LazyLock::new(|| list(&RunStatus::FINISHED, RunStatus::as_str));

/// `'queued', 'running', 'paused', 'blocked', 'cancelling'`: runs not finished (the predicate of `runs_unfinished`).
pub(crate) static UNFINISHED_RUNS: LazyLock<String> = LazyLock::new(|| {
    let unfinished: Vec<RunStatus> = RunStatus::ALL.into_iter().filter(|s| !s.is_finished()).collect();
    list(&unfinished, RunStatus::as_str)
});

/// `'queued', 'running', 'retrying'`: jobs that keep their run open (the predicate of `jobs_open`).
pub(crate) static OPEN_JOBS: LazyLock<String> = LazyLock::new(|| list(&JobStatus::OPEN, JobStatus::as_str));

/// `'queued', 'retrying'`: jobs a claim may take (the predicate of `jobs_claimable`).
pub(crate) static CLAIMABLE_JOBS: LazyLock<String> =
    LazyLock::new(|| list(JobStatus::sources(JobEvent::Claim), JobStatus::as_str));

/// `'succeeded', 'cancelled'`: the jobs of a finished run that pruning deletes (failed ones stay for `retry`).
pub(crate) static PRUNABLE_JOBS: LazyLock<String> =
    LazyLock::new(|| list(&[JobStatus::Succeeded, JobStatus::Cancelled], JobStatus::as_str));

/// A run status read from the database.
pub(crate) fn run_status(s: &str) -> Result<RunStatus> {
    RunStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("run status {s:?}")))
}

/// A job status read from the database.
pub(crate) fn job_status(s: &str) -> Result<JobStatus> {
    JobStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("job status {s:?}")))
}

/// A stop reason read from the database.
pub(crate) fn stop_reason(s: Option<String>) -> Result<Option<StopReason>> {
    s.map(|s| StopReason::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("stop reason {s:?}"))))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_follow_the_table() {
        assert_eq!(run_guard("status", RunEvent::Claimed), "status = 'queued'");
        assert_eq!(
            run_guard("r.status", RunEvent::Drained),
            "r.status in ('queued', 'running', 'cancelling')"
        );
        assert_eq!(job_guard("status", JobEvent::Claim), "status in ('queued', 'retrying')");
        assert_eq!(job_guard("status", JobEvent::Succeed), "status = 'running'");
    }

    #[test]
    fn fragments_match_the_partial_indexes_of_migration_0002() {
        let migration = include_str!("../../../migrations/postgres/0002_runs.sql");
        for predicate in [
            format!("where status in ({})", *CLAIMABLE_RUNS),
            format!("where status in ({})", *CLAIMABLE_JOBS),
            format!("where status in ({})", *OPEN_JOBS),
        ] {
            assert!(migration.contains(&predicate), "no partial index with `{predicate}`");
        }
    }

    #[test]
    fn unfinished_runs_match_the_partial_index_of_migration_0011() {
        for migration in [
            include_str!("../../../migrations/postgres/0011_unfinished_runs.sql"),
            include_str!("../../../migrations/sqlite/0011_unfinished_runs.sql"),
        ] {
            let predicate = format!("where status in ({})", *UNFINISHED_RUNS);
            assert!(migration.contains(&predicate), "no partial index with `{predicate}`");
        }
    }

    #[test]
    fn targets_depend_on_whether_the_run_started() {
        assert_eq!(
            run_target(RunEvent::Drained),
            "case when status = 'queued' then 'completed' when status = 'running' then 'completed' \
             when status = 'cancelling' then 'cancelled' else status end"
        );
        assert!(run_target(RunEvent::Resume).contains(
            "when status = 'paused' then case when started_at is null then 'queued' else 'running' end"
        ));
    }
}
