//! Pause after READY: once, after READY was accepted, recorded only when the provider confirmed it.

use std::time::Duration;

use mockall::Sequence;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ports::{PauseOutcome, SandboxError};
use crate::{JobStatus, PausePolicy, SandboxState};

/// READY accepted, written with the sandbox `pausing` → READY published → the provider's pause → paused
/// (Postgres) → paused (Redis), each exactly once and in that order.
fn expect_pause_in_order(h: &mut Harness, provider_says: PauseOutcome) {
    let mut seq = Sequence::new();
    let db = h.db.clone();
    h.repo
        .expect_transition()
        .withf(|_, f, t, u| {
            *f == JobStatus::Checks
                && *t == JobStatus::Ready
                && u.sandbox_state == Some(SandboxState::Pausing)
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, f, t, u| Ok(db.transition(f, t, &u)));
    h.live
        .expect_save_and_publish()
        .withf(|job, _| {
            job.status == JobStatus::Ready && job.sandbox_state == SandboxState::Pausing
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    h.runtime
        .expect_pause()
        .withf(|id| *id == sandbox_id())
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| Ok(provider_says));
    let db = h.db.clone();
    h.repo
        .expect_set_sandbox_state()
        .withf(|_, u| u.state == SandboxState::Paused)
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, u| Ok(db.set_sandbox_state(&u)));
    h.live
        .expect_save()
        .withf(|job| job.sandbox_paused() && job.status == JobStatus::Ready)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
}

/// Everything before READY, with READY itself left to the test.
fn builds_to_checks(h: &mut Harness) {
    h.transitions_to_checks();
    h.creates_sandbox();
    h.generates_app();
    h.writes_files();
    h.starts_dev_server();
    h.preview_answers();
}

#[tokio::test(start_paused = true)]
async fn pause_runs_once_after_ready_and_is_recorded_postgres_then_redis() {
    let mut h = Harness::new();
    expect_pause_in_order(&mut h, PauseOutcome::Paused);
    builds_to_checks(&mut h);
    // Any other Redis write must not claim the sandbox is paused.
    h.live
        .expect_save()
        .withf(|job| !job.sandbox_paused())
        .returning(|_| Ok(()));
    h.live.expect_save_and_publish().returning(|_, _| Ok(()));

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_eq!(
        outcome,
        BuildOutcome::Ready {
            paused: true,
            pause_failed: false
        }
    );
    assert_eq!(job.status, JobStatus::Ready);
    assert_eq!(job.sandbox_state, SandboxState::Paused);
    assert!(job.sandbox_paused());
}

#[tokio::test(start_paused = true)]
async fn already_paused_counts_as_paused() {
    let mut h = Harness::new();
    expect_pause_in_order(&mut h, PauseOutcome::AlreadyPaused);
    builds_to_checks(&mut h);
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert!(matches!(outcome, BuildOutcome::Ready { paused: true, .. }));
    assert!(job.sandbox_paused());
}

#[tokio::test(start_paused = true)]
async fn a_pause_error_leaves_the_job_ready_and_unpaused() {
    let mut h = Harness::new();
    builds_to_checks(&mut h);
    h.transitions(&[(JobStatus::Checks, JobStatus::Ready)]);
    let mut seq = Sequence::new();
    h.runtime
        .expect_pause()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(SandboxError::Unavailable("503 from the provider".into())));
    let db = h.db.clone();
    h.repo
        .expect_set_sandbox_state()
        .withf(|_, u| u.state == SandboxState::Running)
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, u| Ok(db.set_sandbox_state(&u)));
    // Never a failed transition (the transition mock has none), never paused in Redis, never a kill.
    h.live
        .expect_save()
        .withf(|job| !job.sandbox_paused())
        .returning(|_| Ok(()));
    h.live
        .expect_save_and_publish()
        .withf(|job, _| job.status != JobStatus::Failed)
        .returning(|_, _| Ok(()));
    h.runtime.expect_kill().never();

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_eq!(
        outcome,
        BuildOutcome::Ready {
            paused: false,
            pause_failed: true
        }
    );
    assert_eq!(job.status, JobStatus::Ready);
    assert_eq!(job.sandbox_state, SandboxState::Running);
    assert!(!job.sandbox_paused());
    assert_eq!(job.error_message, None);
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_gone_at_pause_time_is_recorded_as_expired_not_paused() {
    let mut h = Harness::new();
    builds_to_checks(&mut h);
    h.transitions(&[(JobStatus::Checks, JobStatus::Ready)]);
    let db = h.db.clone();
    h.repo
        .expect_set_sandbox_state()
        .returning(move |_, u| Ok(db.set_sandbox_state(&u)));
    h.runtime
        .expect_pause()
        .times(1)
        .returning(|_| Err(SandboxError::NotFound("sbx-1".into())));
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert!(matches!(
        outcome,
        BuildOutcome::Ready {
            paused: false,
            pause_failed: true
        }
    ));
    assert_eq!(job.status, JobStatus::Ready);
    assert_eq!(job.sandbox_state, SandboxState::Expired);
}

#[tokio::test(start_paused = true)]
async fn policy_never_makes_no_pause_call() {
    for policy in [
        PausePolicy::Never,
        PausePolicy::Idle(Duration::from_secs(300)),
    ] {
        let mut h = Harness::new();
        h.config.pause_policy = policy;
        h.builds_to_ready();
        h.runtime.expect_pause().never();
        h.repo.expect_set_sandbox_state().never();
        h.live_accepts();

        let (outcome, job) = h.run(CancellationToken::new()).await;

        assert_eq!(
            outcome,
            BuildOutcome::Ready {
                paused: false,
                pause_failed: false
            },
            "{policy:?}"
        );
        assert_eq!(job.sandbox_state, SandboxState::Running);
    }
}
