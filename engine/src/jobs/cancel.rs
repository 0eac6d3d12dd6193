//! Cancelling a job and learning what became of it: a queued or scheduled job is cancelled at once; a running one
//! is stopped by its worker at the worker's next heartbeat (within a second), unless it finishes first — so
//! [`cancel`] waits, for a bounded time, for the job to end and says how it ended.

use std::time::{Duration, Instant};

use envctl_contracts::jobs::JobStatus;

use super::{JobStore, StoreError};

/// How often a running job is looked at while waiting.
const POLL: Duration = Duration::from_millis(50);

/// What became of a job asked to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It is cancelled.
    Cancelled,
    /// It finished with this status before the cancel reached its worker.
    FinishedFirst(JobStatus),
    /// It still runs: its worker stops it at its next heartbeat (or, if the worker is gone, the job's lease runs out
    /// and it is cancelled then).
    Cancelling,
}

/// Cancels job `id` and, when it is running, waits up to `wait` for its worker to stop it. Cancelling a job that
/// has already finished is a [`StoreError::State`] naming its status.
pub fn cancel(store: &dyn JobStore, id: &str, wait: Duration) -> Result<CancelOutcome, StoreError> {
    if store.cancel(id)? == JobStatus::Cancelled {
        return Ok(CancelOutcome::Cancelled);
    }
    let deadline = Instant::now() + wait;
    loop {
        match store.get(id)?.status {
            JobStatus::Cancelled => return Ok(CancelOutcome::Cancelled),
            status if status.is_final() => return Ok(CancelOutcome::FinishedFirst(status)),
            _ => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(CancelOutcome::Cancelling);
        }
        std::thread::sleep(left.min(POLL));
    }
}

#[cfg(test)]
mod tests {
    use envctl_contracts::config::Priority;

    use super::*;
    use crate::jobs::{EmbeddedStore, Finish, NewJob};

    const LEASE: Duration = Duration::from_secs(60);

    fn store_with_jobs(n: usize) -> (tempfile::TempDir, EmbeddedStore, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("jobs.sqlite3")).expect("open");
        let job = NewJob {
            job_type: "noop".into(),
            target: None,
            payload: serde_json::json!({}),
            priority: Priority::Normal,
            max_attempts: 3,
            delay: None,
            input: None,
            after: Vec::new(),
        };
        let ids = store.enqueue(&vec![job; n]).expect("enqueue");
        (dir, store, ids)
    }

    #[test]
    fn a_queued_job_is_cancelled_at_once_and_a_finished_one_is_an_error() {
        let (_dir, store, ids) = store_with_jobs(1);
        assert_eq!(cancel(&store, &ids[0], Duration::ZERO).expect("cancel"), CancelOutcome::Cancelled);
        let again = cancel(&store, &ids[0], Duration::ZERO).expect_err("already finished");
        assert!(matches!(again, StoreError::State { status: "cancelled", .. }), "{again}");
    }

    #[test]
    fn a_running_job_that_ends_while_the_cancel_waits_says_how_it_ended() {
        let (_dir, store, ids) = store_with_jobs(3);
        assert_eq!(store.claim("w", &[], 3, LEASE).expect("claim").len(), 3);
        assert_eq!(cancel(&store, &ids[0], Duration::ZERO).expect("cancel"), CancelOutcome::Cancelling);
        let ends = [
            (Finish::Succeeded(serde_json::Value::Null), CancelOutcome::FinishedFirst(JobStatus::Succeeded)),
            // A retryable failure is not retried once a cancel was asked for.
            (Finish::Failed { error: "boom".into(), retry: true }, CancelOutcome::Cancelled),
        ];
        for (id, (end, outcome)) in ids[1..].iter().zip(ends) {
            let waited = std::thread::scope(|s| {
                let waiting = s.spawn(|| cancel(&store, id, Duration::from_secs(30)));
                // The worker ends the attempt just after the cancel was asked for.
                while store.get(id).expect("get").status != JobStatus::Cancelling {
                    std::thread::sleep(Duration::from_millis(5));
                }
                store.finish("w", &[(id.clone(), end)]).expect("finish");
                waiting.join().expect("join")
            });
            assert_eq!(waited.expect("cancel"), outcome);
        }
    }
}
