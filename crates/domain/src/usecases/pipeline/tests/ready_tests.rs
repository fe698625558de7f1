//! The way to READY: stages in order, the sandbox recorded at once, preview_url written with READY.

use mockall::Sequence;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ports::{BackgroundCommand, CommandOutput};
use crate::JobStatus;

#[tokio::test(start_paused = true)]
async fn preview_url_and_build_version_are_written_with_ready() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    let db = h.db.clone();
    h.repo
        .expect_transition()
        .withf(|_, from, to, u| {
            *from == JobStatus::Checks
                && *to == JobStatus::Ready
                && u.preview_url.as_deref() == Some(PREVIEW)
                && u.sandbox_id == Some(sandbox_id())
                && u.workspace_path.as_deref() == Some(WORKSPACE)
                && u.assign_build_version
                && u.sandbox_state.is_some()
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, f, t, u| Ok(db.transition(f, t, &u)));
    h.live
        .expect_save_and_publish()
        .withf(|job, event| {
            job.status == JobStatus::Ready
                && event.status == JobStatus::Ready
                && event.preview_url.as_deref() == Some(PREVIEW)
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    h.transitions_to_checks();
    h.creates_sandbox();
    h.generates_app();
    h.writes_files();
    h.starts_dev_server();
    h.preview_answers();
    h.pauses();
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_eq!(
        outcome,
        BuildOutcome::Ready {
            paused: true,
            pause_failed: false
        }
    );
    assert_eq!(job.status, JobStatus::Ready);
    assert_eq!(job.preview_url.as_deref(), Some(PREVIEW));
    assert_eq!(job.build_version.as_deref(), Some("build_v0_1"));
    assert_eq!(job.sandbox_id, Some(sandbox_id()));
}

#[tokio::test(start_paused = true)]
async fn the_sandbox_is_recorded_in_both_stores_before_anything_runs_in_it() {
    use JobStatus::*;
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    h.transitions(&[(Queued, Starting), (Starting, Scaffold)]);
    h.runtime
        .expect_create()
        .withf(|spec| spec.user_id.as_str() == "user_1")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(sandbox_id()));
    // The move to code carries the sandbox: one write records it.
    let db = h.db.clone();
    h.repo
        .expect_transition()
        .withf(|_, from, to, update| {
            *from == Scaffold
                && *to == Code
                && update.sandbox_id == Some(sandbox_id())
                && update.sandbox_state == Some(SandboxState::Running)
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, f, t, u| Ok(db.transition(f, t, &u)));
    h.live
        .expect_save_and_publish()
        .withf(|job, _| {
            job.sandbox_id == Some(sandbox_id())
                && job.sandbox_state == SandboxState::Running
                && job.status == Code
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    h.runtime
        .expect_write_files()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    h.repo.expect_record_sandbox().never();
    h.transitions(&[(Code, Deps), (Deps, Checks), (Checks, Ready)]);
    h.generates_app();
    h.starts_dev_server();
    h.preview_answers();
    h.pauses();
    h.live_accepts();

    let (outcome, _) = h.run(CancellationToken::new()).await;
    assert!(matches!(outcome, BuildOutcome::Ready { paused: true, .. }));
}

#[tokio::test(start_paused = true)]
async fn dependencies_are_installed_and_the_framework_decides_the_command() {
    let mut h = Harness::new();
    h.generator
        .expect_generate()
        .times(1)
        .returning(|_| Ok(files(&["package.json", "src/main.tsx", "index.html"])));
    h.parser
        .expect_parse()
        .times(1)
        .returning(|_| Ok(facts(&["vite", "react"], &["dev", "build"])));
    let mut seq = Sequence::new();
    h.runtime
        .expect_write_files()
        .withf(|_, files| {
            let paths: Vec<_> = files.iter().map(|(p, _)| p.as_str()).collect();
            paths == ["index.html", "package.json", "src/main.tsx"]
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    h.runtime
        .expect_run()
        .withf(|_, cmd| cmd.cmd == "npm install")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(CommandOutput::default()));
    h.runtime
        .expect_run_background()
        .withf(|_, cmd| {
            cmd.cmd == "npm run dev" && cmd.envs.get("PORT").map(String::as_str) == Some("5173")
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(BackgroundCommand::unwatched(7)));
    h.runtime
        .expect_preview_url()
        .withf(|_, port| *port == 5173)
        .times(1)
        .returning(|_, _| Ok(PREVIEW.to_owned()));
    h.transitions_to_checks();
    h.transitions(&[(JobStatus::Checks, JobStatus::Ready)]);
    h.creates_sandbox();
    h.preview_answers();
    h.pauses();
    h.live_accepts();

    let (outcome, _) = h.run(CancellationToken::new()).await;
    assert!(matches!(outcome, BuildOutcome::Ready { paused: true, .. }));
}

#[tokio::test(start_paused = true)]
async fn the_preview_is_probed_until_it_answers_below_500() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    h.probe
        .expect_get()
        .times(3)
        .in_sequence(&mut seq)
        .returning(|_| Ok(answer(502)));
    h.probe
        .expect_get()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(answer(404)));
    h.transitions_to_checks();
    h.transitions(&[(JobStatus::Checks, JobStatus::Ready)]);
    h.creates_sandbox();
    h.generates_app();
    h.writes_files();
    h.starts_dev_server();
    h.pauses();
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;
    assert!(matches!(outcome, BuildOutcome::Ready { .. }));
    assert_eq!(job.status, JobStatus::Ready);
}

#[tokio::test]
async fn a_job_that_is_not_queued_is_not_built() {
    let mut h = Harness::new();
    h.db.set_status(JobStatus::Failed);
    h.transitions(&[(JobStatus::Queued, JobStatus::Starting)]);
    let (outcome, _) = h.run(CancellationToken::new()).await;
    assert_eq!(
        outcome,
        BuildOutcome::Lost {
            current: Some(JobStatus::Failed)
        }
    );
}

#[tokio::test]
async fn a_missing_job_is_not_built() {
    let mut h = Harness::new();
    h.repo
        .expect_transition()
        .times(1)
        .returning(|_, _, _, _| Ok(TransitionOutcome::Conflict { current: None }));
    let (outcome, _) = h.run(CancellationToken::new()).await;
    assert_eq!(outcome, BuildOutcome::Lost { current: None });
}
