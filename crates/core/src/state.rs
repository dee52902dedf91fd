//! The states of runs and jobs and the one table of moves between them (DESIGN section 7a).
//!
//! Every state change in leadscore is an event applied here first: [`RunStatus::on`] and [`JobStatus::on`] say
//! whether the move is allowed and where it leads. The store turns the same table into the guards of its SQL
//! (`where status in (...)`: the states an event may leave) so a write that lost a race changes no row instead
//! of forcing a move the table does not allow. `docs/architecture.md` draws both machines.
//!
//! The names (`as_str`) are what the API shows and the database stores; the store's `states` module is the one
//! place that maps them to and from SQL.

use std::fmt;

/// A scoring run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunStatus {
    /// Created; no job claimed yet. Moved on by the first claim.
    Queued,
    /// Jobs are being claimed. Moved on by the completion batch that writes its last job, or by a control.
    Running,
    /// No job is claimed: by request, or by the cost cap ([`StopReason`]). `resume` moves it on.
    Paused,
    /// The AI provider rejects our key or model: no job is claimed until it is resumed or a worker restarts.
    Blocked,
    /// Cancelled while jobs were running: those finish, then the run is `cancelled`.
    Cancelling,
    /// Final: a cancelled run refuses every control.
    Cancelled,
    /// Every job finished. `retry` re-opens it.
    Completed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Blocked,
        RunStatus::Cancelling,
        RunStatus::Cancelled,
        RunStatus::Completed,
    ];

    /// States whose jobs workers claim.
    pub const CLAIMABLE: [RunStatus; 2] = [RunStatus::Queued, RunStatus::Running];

    /// States after which nothing happens unless someone acts (`finished_at` is set in exactly these).
    pub const FINISHED: [RunStatus; 2] = [RunStatus::Completed, RunStatus::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Blocked => "blocked",
            RunStatus::Cancelling => "cancelling",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        RunStatus::FINISHED.contains(&self)
    }

    /// Where `event` takes a run in this status; `started` says whether a job of it was ever claimed (a run
    /// that goes back to work is `running` if so, else `queued`). THE table of run moves.
    pub fn on(self, event: RunEvent, started: bool) -> Result<RunStatus, Refused> {
        use RunEvent as E;
        use RunStatus as S;
        let back_to_work = if started { S::Running } else { S::Queued };
        let next = match (event, self) {
            (E::Claimed, S::Queued) => S::Running,
            (E::Drained, S::Queued | S::Running) => S::Completed,
            (E::Drained, S::Cancelling) => S::Cancelled,
            (E::Pause | E::CostCapReached, S::Queued | S::Running) => S::Paused,
            (E::ProviderRejected, S::Queued | S::Running) => S::Blocked,
            (E::Resume, S::Paused | S::Blocked) => back_to_work,
            (E::ProviderRestored, S::Blocked) => back_to_work,
            (E::Cancel, S::Queued | S::Running | S::Paused | S::Blocked) => S::Cancelling,
            // Re-queued jobs wait for a paused or blocked run to be resumed; a finished run goes back to work.
            (E::Retry, S::Paused | S::Blocked | S::Queued | S::Running) => self,
            (E::Retry, S::Completed) => back_to_work,
            _ => return Err(Refused { what: "run", from: self.as_str(), event: event.as_str() }),
        };
        Ok(next)
    }

    /// The states `event` may leave: what the store's guard (`where status in (...)`) admits.
    pub fn sources(event: RunEvent) -> Vec<RunStatus> {
        RunStatus::ALL.into_iter().filter(|s| s.on(event, true).is_ok()).collect()
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunEvent {
    /// A worker claimed one of its jobs (the first claim starts it).
    Claimed,
    /// No job is left to work on (the completion batch of its last job, a deleted lead, a control, maintenance).
    Drained,
    /// `POST /v1/runs/{id}/pause`.
    Pause,
    /// The cost spent reached `max_cost_usd`.
    CostCapReached,
    /// The provider rejected our key or model (the circuit breaker opened).
    ProviderRejected,
    /// `POST /v1/runs/{id}/resume` (lifts a cost cap that paused the run).
    Resume,
    /// A worker pool started, possibly with a fixed configuration.
    ProviderRestored,
    /// `POST /v1/runs/{id}/cancel`.
    Cancel,
    /// `POST /v1/runs/{id}/retry`: failed jobs and `rules_only` results are queued again.
    Retry,
}

impl RunEvent {
    pub const ALL: [RunEvent; 9] = [
        RunEvent::Claimed,
        RunEvent::Drained,
        RunEvent::Pause,
        RunEvent::CostCapReached,
        RunEvent::ProviderRejected,
        RunEvent::Resume,
        RunEvent::ProviderRestored,
        RunEvent::Cancel,
        RunEvent::Retry,
    ];

    /// The verb of API messages ("cannot pause a run that is completed").
    pub fn as_str(self) -> &'static str {
        match self {
            RunEvent::Claimed => "claim",
            RunEvent::Drained => "finish",
            RunEvent::Pause => "pause",
            RunEvent::CostCapReached => "cap",
            RunEvent::ProviderRejected => "block",
            RunEvent::Resume => "resume",
            RunEvent::ProviderRestored => "unblock",
            RunEvent::Cancel => "cancel",
            RunEvent::Retry => "retry",
        }
    }

    /// Why a run stopped, for the events that stop one.
    pub fn stop_reason(self) -> Option<StopReason> {
        match self {
            RunEvent::Pause => Some(StopReason::Requested),
            RunEvent::CostCapReached => Some(StopReason::CostCap),
            RunEvent::ProviderRejected => Some(StopReason::ProviderRejected),
            _ => None,
        }
    }
}

/// Why a run is `paused` or `blocked`: typed, so nothing is decided by reading a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// Paused through the API.
    Requested,
    /// Paused because the cost spent reached `max_cost_usd`; resuming lifts the cap.
    CostCap,
    /// Blocked: the provider rejected our key or model.
    ProviderRejected,
}

impl StopReason {
    pub const ALL: [StopReason; 3] =
        [StopReason::Requested, StopReason::CostCap, StopReason::ProviderRejected];

    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Requested => "requested",
            StopReason::CostCap => "cost_cap",
            StopReason::ProviderRejected => "provider_rejected",
        }
    }

    pub fn parse(s: &str) -> Option<StopReason> {
        StopReason::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// One job's status (one lead inside one run).
///
/// Room for the Batch API (issue 20): a job handed to a provider batch would get a state of its own here
/// (`queued | retrying -> batched -> succeeded | retrying | failed`), holding no lease, so the rescue of expired
/// leases (which only reads `running`) never touches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    /// Waiting to be claimed (`run_at` says from when).
    Queued,
    /// A worker holds its lease.
    Running,
    /// An attempt failed (or was deferred); claimable again at `run_at`.
    Retrying,
    /// Has a result (hybrid or `rules_only`).
    Succeeded,
    /// No result after its last attempt (or the lead vanished); `retry` re-queues it.
    Failed,
    /// Cancelled before it ran.
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// States a job can still make progress from (what keeps its run open).
    pub const OPEN: [JobStatus; 3] = [JobStatus::Queued, JobStatus::Running, JobStatus::Retrying];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Where `event` takes a job in this status (see [`JobEvent::rule`], the table of job moves).
    pub fn on(self, event: JobEvent) -> Result<JobStatus, Refused> {
        let (sources, target) = event.rule();
        if sources.contains(&self) {
            Ok(target)
        } else {
            Err(Refused { what: "job", from: self.as_str(), event: event.as_str() })
        }
    }

    /// The states `event` may leave: what the store's guard admits.
    pub fn sources(event: JobEvent) -> &'static [JobStatus] {
        event.rule().0
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobEvent {
    /// A worker takes it with a lease (an attempt starts).
    Claim,
    /// Its result is written.
    Succeed,
    /// The attempt failed and attempts remain: back to the queue with backoff.
    FailRetryable,
    /// The attempt failed for good (last attempt, or an error not worth retrying).
    FailFinal,
    /// Not worked on for a reason that is not its own (provider blocked or cooling down): the attempt is given back.
    Defer,
    /// Its worker's lease expired (the worker died) and attempts remain.
    LeaseExpired,
    /// Its worker's lease expired on its last attempt.
    LeaseExpiredLast,
    /// Its run was cancelled before it started.
    Cancel,
    /// Its run was retried: failed jobs and `rules_only` results are scored again.
    Requeue,
}

impl JobEvent {
    pub const ALL: [JobEvent; 9] = [
        JobEvent::Claim,
        JobEvent::Succeed,
        JobEvent::FailRetryable,
        JobEvent::FailFinal,
        JobEvent::Defer,
        JobEvent::LeaseExpired,
        JobEvent::LeaseExpiredLast,
        JobEvent::Cancel,
        JobEvent::Requeue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobEvent::Claim => "claim",
            JobEvent::Succeed => "succeed",
            JobEvent::FailRetryable => "fail (retryable)",
            JobEvent::FailFinal => "fail",
            JobEvent::Defer => "defer",
            JobEvent::LeaseExpired => "expire",
            JobEvent::LeaseExpiredLast => "expire (last attempt)",
            JobEvent::Cancel => "cancel",
            JobEvent::Requeue => "requeue",
        }
    }

    /// THE table of job moves: the states this event may leave, and the one state it leads to.
    pub fn rule(self) -> (&'static [JobStatus], JobStatus) {
        use JobStatus as S;
        const RUNNING: &[JobStatus] = &[S::Running];
        const WAITING: &[JobStatus] = &[S::Queued, S::Retrying];
        match self {
            JobEvent::Claim => (WAITING, S::Running),
            JobEvent::Succeed => (RUNNING, S::Succeeded),
            JobEvent::FailRetryable | JobEvent::Defer | JobEvent::LeaseExpired => (RUNNING, S::Retrying),
            JobEvent::FailFinal | JobEvent::LeaseExpiredLast => (RUNNING, S::Failed),
            JobEvent::Cancel => (WAITING, S::Cancelled),
            JobEvent::Requeue => (&[S::Failed, S::Succeeded], S::Queued),
        }
    }

    /// The status this event leads to.
    pub fn target(self) -> JobStatus {
        self.rule().1
    }
}

/// A move the table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event} a {what} that is {from}")]
pub struct Refused {
    /// "run" or "job".
    pub what: &'static str,
    pub from: &'static str,
    pub event: &'static str,
}

#[cfg(test)]
mod tests;
