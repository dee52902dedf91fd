//! Every (state, event) pair, allowed and refused, against a table written out here independently of the code.

use super::*;

use JobEvent as JE;
use JobStatus as J;
use RunEvent as E;
use RunStatus as R;

/// Every allowed run move: (event, from, to if never started, to if started).
const RUN_MOVES: &[(RunEvent, RunStatus, RunStatus, RunStatus)] = &[
    (E::Claimed, R::Queued, R::Running, R::Running),
    (E::Drained, R::Queued, R::Completed, R::Completed),
    (E::Drained, R::Running, R::Completed, R::Completed),
    (E::Drained, R::Cancelling, R::Cancelled, R::Cancelled),
    (E::Pause, R::Queued, R::Paused, R::Paused),
    (E::Pause, R::Running, R::Paused, R::Paused),
    (E::CostCapReached, R::Queued, R::Paused, R::Paused),
    (E::CostCapReached, R::Running, R::Paused, R::Paused),
    (E::ProviderRejected, R::Queued, R::Blocked, R::Blocked),
    (E::ProviderRejected, R::Running, R::Blocked, R::Blocked),
    (E::Resume, R::Paused, R::Queued, R::Running),
    (E::Resume, R::Blocked, R::Queued, R::Running),
    (E::ProviderRestored, R::Blocked, R::Queued, R::Running),
    (E::Cancel, R::Queued, R::Cancelling, R::Cancelling),
    (E::Cancel, R::Running, R::Cancelling, R::Cancelling),
    (E::Cancel, R::Paused, R::Cancelling, R::Cancelling),
    (E::Cancel, R::Blocked, R::Cancelling, R::Cancelling),
    (E::Retry, R::Queued, R::Queued, R::Queued),
    (E::Retry, R::Running, R::Running, R::Running),
    (E::Retry, R::Paused, R::Paused, R::Paused),
    (E::Retry, R::Blocked, R::Blocked, R::Blocked),
    (E::Retry, R::Completed, R::Queued, R::Running),
];

/// Every allowed job move: (event, from, to).
const JOB_MOVES: &[(JobEvent, JobStatus, JobStatus)] = &[
    (JE::Claim, J::Queued, J::Running),
    (JE::Claim, J::Retrying, J::Running),
    (JE::Succeed, J::Running, J::Succeeded),
    (JE::FailRetryable, J::Running, J::Retrying),
    (JE::FailFinal, J::Running, J::Failed),
    (JE::Defer, J::Running, J::Retrying),
    (JE::LeaseExpired, J::Running, J::Retrying),
    (JE::LeaseExpiredLast, J::Running, J::Failed),
    (JE::Cancel, J::Queued, J::Cancelled),
    (JE::Cancel, J::Retrying, J::Cancelled),
    (JE::Requeue, J::Failed, J::Queued),
    (JE::Requeue, J::Succeeded, J::Queued),
];

#[test]
fn every_run_pair_is_allowed_or_refused_as_the_table_says() {
    let mut checked = 0;
    for event in RunEvent::ALL {
        for from in RunStatus::ALL {
            for started in [false, true] {
                let expected = RUN_MOVES
                    .iter()
                    .find(|(e, f, ..)| *e == event && *f == from)
                    .map(|(_, _, fresh, begun)| if started { *begun } else { *fresh });
                let got = from.on(event, started);
                match expected {
                    Some(to) => assert_eq!(got, Ok(to), "{event:?} from {from:?} (started {started})"),
                    None => {
                        let refused = got.expect_err(&format!("{event:?} from {from:?} must be refused"));
                        assert_eq!(
                            refused.to_string(),
                            format!("cannot {} a run that is {from}", event.as_str())
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, RunEvent::ALL.len() * RunStatus::ALL.len() * 2);
}

#[test]
fn every_job_pair_is_allowed_or_refused_as_the_table_says() {
    for event in JobEvent::ALL {
        for from in JobStatus::ALL {
            let expected = JOB_MOVES.iter().find(|(e, f, _)| *e == event && *f == from).map(|m| m.2);
            match expected {
                Some(to) => assert_eq!(from.on(event), Ok(to), "{event:?} from {from:?}"),
                None => assert!(from.on(event).is_err(), "{event:?} from {from:?} must be refused"),
            }
        }
    }
}

#[test]
fn sources_are_the_states_an_event_may_leave() {
    for event in RunEvent::ALL {
        let mut expected: Vec<RunStatus> = RUN_MOVES.iter().filter(|m| m.0 == event).map(|m| m.1).collect();
        expected.sort();
        assert_eq!(RunStatus::sources(event), expected, "{event:?}");
    }
    for event in JobEvent::ALL {
        let mut expected: Vec<JobStatus> = JOB_MOVES.iter().filter(|m| m.0 == event).map(|m| m.1).collect();
        expected.sort();
        let mut got = JobStatus::sources(event).to_vec();
        got.sort();
        assert_eq!(got, expected, "{event:?}");
    }
}

#[test]
fn names_round_trip_and_are_unique() {
    for s in RunStatus::ALL {
        assert_eq!(RunStatus::parse(s.as_str()), Some(s));
    }
    for s in JobStatus::ALL {
        assert_eq!(JobStatus::parse(s.as_str()), Some(s));
    }
    for s in StopReason::ALL {
        assert_eq!(StopReason::parse(s.as_str()), Some(s));
    }
    assert_eq!(RunStatus::parse("done"), None);
    // Every variant is in ALL: a match without a wildcard fails to compile when one is added...
    let count_run = |s: RunStatus| match s {
        R::Queued | R::Running | R::Paused | R::Blocked | R::Cancelling | R::Cancelled | R::Completed => 1,
    };
    assert_eq!(RunStatus::ALL.iter().map(|s| count_run(*s)).sum::<usize>(), 7);
    let count_job = |s: JobStatus| match s {
        J::Queued | J::Running | J::Retrying | J::Succeeded | J::Failed | J::Cancelled => 1,
    };
    assert_eq!(JobStatus::ALL.iter().map(|s| count_job(*s)).sum::<usize>(), 6);
}

#[test]
fn stopping_events_carry_their_reason() {
    assert_eq!(E::Pause.stop_reason(), Some(StopReason::Requested));
    assert_eq!(E::CostCapReached.stop_reason(), Some(StopReason::CostCap));
    assert_eq!(E::ProviderRejected.stop_reason(), Some(StopReason::ProviderRejected));
    assert!(RunEvent::ALL.iter().filter(|e| e.stop_reason().is_some()).count() == 3);
}

#[test]
fn finished_states_are_the_ends_of_drained() {
    for from in RunStatus::sources(E::Drained) {
        assert!(from.on(E::Drained, true).expect("allowed").is_finished());
    }
}
