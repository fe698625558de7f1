//! Cancelled and interrupted builds: never READY, sandbox killed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::ports::TransitionOutcome;
use crate::{JobStatus, SandboxState};

/// No READY transition may ever be attempted (the transition mock has only the moves a test allows, so an
/// attempt would panic), and no pause either.
fn never_ready(h: &mut Harness) {
    h.runtime.expect_pause().never();
    h.live
        .expect_save_and_publish()
        .withf(|job, _| job.status != JobStatus::Ready)
        .returning(|_, _| Ok(()));
    h.live.expect_save().returning(|_| Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_seen_by_the_compare_and_set_stops_the_build_and_kills_the_sandbox() {
    let mut h = Harness::new();
    h.transitions(&[
        (JobStatus::Queued, JobStatus::Starting),
        (JobStatus::Starting, JobStatus::Scaffold),
        (JobStatus::Scaffold, JobStatus::Code),
    ]);
    h.creates_sandbox();
    // The API cancels (moves the row to failed) while the code is being written.
    let db = h.db.clone();
    h.generator.expect_generate().times(1).returning(move |_| {
        db.set_status(JobStatus::Failed);
        Ok(files(&["package.json", "server.js"]))
    });
    h.parser
        .expect_parse()
        .returning(|_| Ok(facts(&[], &["start"])));
    let db = h.db.clone();
    h.repo
        .expect_transition()
        .withf(|_, f, t, _| *f == JobStatus::Code && *t == JobStatus::Deps)
        .times(1)
        .returning(move |_, f, t, u| Ok(db.transition(f, t, &u)));
    h.runtime.expect_write_files().never();
    h.kills();
    never_ready(&mut h);

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_eq!(outcome, BuildOutcome::Cancelled);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.sandbox_state, SandboxState::Killed);
}

#[tokio::test(start_paused = true)]
async fn a_token_cancelled_just_before_ready_never_writes_ready() {
    let mut h = Harness::new();
    let cancel = CancellationToken::new();
    h.transitions_to_checks();
    h.creates_sandbox();
    h.generates_app();
    h.writes_files();
    h.starts_dev_server();
    // The heartbeat sees the cancel (the row is failed) and fires the token as the preview comes up.
    let (db, token) = (h.db.clone(), cancel.clone());
    h.probe.expect_get().times(1).returning(move |_| {
        db.set_status(JobStatus::Failed);
        token.cancel();
        Ok(answer(200))
    });
    let db = h.db.clone();
    h.repo
        .expect_requeue_job()
        .times(1)
        .returning(move |_, from, _| Ok(db.requeue(from)));
    h.runtime.expect_kill().times(1).returning(|_| Ok(()));
    never_ready(&mut h);

    let (outcome, job) = h.run(cancel).await;

    assert_eq!(outcome, BuildOutcome::Cancelled);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.preview_url, None);
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_build_kills_its_sandbox_and_gives_the_job_back_to_the_queue() {
    let mut h = Harness::new();
    let cancel = CancellationToken::new();
    h.transitions_to_checks();
    h.creates_sandbox();
    h.generates_app();
    h.writes_files();
    h.starts_dev_server();
    // The dev server never comes up; the worker shuts down meanwhile.
    h.probe.expect_get().returning(|_| Ok(answer(503)));
    let token = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        token.cancel();
    });
    let db = h.db.clone();
    h.repo
        .expect_requeue_job()
        .withf(|_, from, _| *from == JobStatus::Checks)
        .times(1)
        .returning(move |_, from, _| Ok(db.requeue(from)));
    h.runtime.expect_kill().times(1).returning(|_| Ok(()));
    // requeue_job clears the sandbox fields itself.
    h.repo.expect_set_sandbox_state().never();
    never_ready(&mut h);

    let (outcome, job) = h.run(cancel).await;

    assert_eq!(outcome, BuildOutcome::Interrupted { requeued: true });
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.sandbox_id, None);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_that_lands_while_the_sandbox_is_created_kills_it_at_once() {
    let mut h = Harness::new();
    h.transitions(&[
        (JobStatus::Queued, JobStatus::Starting),
        (JobStatus::Starting, JobStatus::Scaffold),
        // Attempted with the sandbox, and lost: the job has moved.
        (JobStatus::Scaffold, JobStatus::Code),
    ]);
    let db = h.db.clone();
    h.runtime.expect_create().times(1).returning(move |_| {
        db.set_status(JobStatus::Failed);
        Ok(sandbox_id())
    });
    // So the sandbox is recorded alone, for the kill and whoever comes after it.
    let db = h.db.clone();
    h.repo
        .expect_record_sandbox()
        .times(1)
        .returning(move |_, s, _| Ok(Some(db.record_sandbox(s))));
    h.generator.expect_generate().never();
    h.kills();
    never_ready(&mut h);

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_eq!(outcome, BuildOutcome::Cancelled);
    assert_eq!(job.sandbox_state, SandboxState::Killed);
}

#[tokio::test(start_paused = true)]
async fn a_token_cancelled_before_the_start_leaves_the_job_queued() {
    let mut h = Harness::new();
    h.repo.expect_transition().never();
    h.runtime.expect_create().never();
    let cancel = CancellationToken::new();
    cancel.cancel();

    let (outcome, job) = h.run(cancel).await;

    assert_eq!(outcome, BuildOutcome::Interrupted { requeued: true });
    assert_eq!(job.status, JobStatus::Queued);
}

#[tokio::test(start_paused = true)]
async fn a_lost_ready_compare_and_set_kills_the_sandbox_and_never_pauses() {
    let mut h = Harness::new();
    h.transitions_to_checks();
    h.creates_sandbox();
    h.generates_app();
    h.writes_files();
    h.starts_dev_server();
    h.preview_answers();
    h.repo
        .expect_transition()
        .withf(|_, f, t, _| *f == JobStatus::Checks && *t == JobStatus::Ready)
        .times(1)
        .returning(|_, _, _, _| {
            Ok(TransitionOutcome::Conflict {
                current: Some(JobStatus::Failed),
            })
        });
    h.kills();
    never_ready(&mut h);

    let (outcome, _) = h.run(CancellationToken::new()).await;
    assert_eq!(outcome, BuildOutcome::Cancelled);
}
