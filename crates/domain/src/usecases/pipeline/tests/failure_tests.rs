//! Failed builds: one transition to failed with a friendly message and a debug id, the sandbox killed, no
//! pause.

use tokio_util::sync::CancellationToken;

use super::*;
use crate::ports::{
    BackgroundCommand, CommandOutput, GeneratorError, ProbeResponse, ProxyAnswer, RepoError,
    SandboxError,
};
use crate::{JobStatus, SandboxState};

/// The one failed transition, from `from`, whose friendly message passes `check`.
fn fails_from(h: &mut Harness, from: JobStatus, check: fn(&str) -> bool) {
    let db = h.db.clone();
    h.repo
        .expect_transition()
        .withf(move |_, f, t, u| {
            *f == from
                && *t == JobStatus::Failed
                && u.debug_id.is_some()
                && u.error_message.as_deref().is_some_and(check)
                && u.message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("Build failed — debug_id: "))
        })
        .times(1)
        .returning(move |_, f, t, u| Ok(db.transition(f, t, &u)));
}

fn assert_failed(outcome: &BuildOutcome, job: &Job) {
    let BuildOutcome::Failed { debug_id } = outcome else {
        panic!("expected a failed build, got {outcome:?}");
    };
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.debug_id, Some(*debug_id));
    assert!(job.error_message.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_dev_server_that_never_answers_fails_the_build_kills_the_sandbox_and_never_pauses() {
    let mut h = Harness::new();
    fails_from(&mut h, JobStatus::Checks, |m| {
        m.contains("did not become ready") && m.contains(PREVIEW)
    });
    h.transitions_to_checks();
    h.creates_sandbox();
    h.generates_app();
    h.writes_files();
    h.starts_dev_server();
    h.probe.expect_get().returning(|_| Ok(answer(502)));
    h.kills();
    h.runtime.expect_pause().never();
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_failed(&outcome, &job);
    assert_eq!(job.sandbox_state, SandboxState::Killed);
    assert!(!job.sandbox_paused());
}

#[tokio::test(start_paused = true)]
async fn a_dev_server_that_exits_fails_the_build_at_once_with_its_code_and_output() {
    let mut h = Harness::new();
    fails_from(&mut h, JobStatus::Checks, |m| {
        m.contains("exited with code 1")
            && m.contains("Error: Cannot find module 'express'")
            && !m.contains("did not become ready")
    });
    h.transitions_to_checks();
    h.creates_sandbox();
    h.generates_app();
    h.writes_files();
    h.runtime
        .expect_run_background()
        .times(1)
        .returning(|_, cmd| {
            // The dev server prints its error to the sink, then the runtime reports its exit.
            let sink = cmd.output.expect("the dev server's output is followed");
            (sink.0)(
                crate::ports::OutputStream::Stderr,
                "Error: Cannot find module 'express'\n",
            );
            let (server, reporter) = BackgroundCommand::watched(42);
            reporter.exited(crate::ports::CommandExit {
                exit_code: 1,
                output_tail: String::new(),
            });
            Ok(server)
        });
    h.runtime
        .expect_preview_url()
        .returning(|_, _| Ok(PREVIEW.to_owned()));
    // The provider's proxy answers for the dead dev server; that is never READY.
    h.probe.expect_get().returning(|_| {
        Ok(ProbeResponse {
            proxy: Some(ProxyAnswer::PortNotOpen),
            ..answer(502)
        })
    });
    h.kills();
    h.runtime.expect_pause().never();
    h.live_accepts();

    let started = tokio::time::Instant::now();
    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_failed(&outcome, &job);
    assert!(
        started.elapsed() < PipelineConfig::default().readiness_deadline,
        "it did not wait out the readiness deadline"
    );
    assert_eq!(job.sandbox_state, SandboxState::Killed);
}

#[tokio::test(start_paused = true)]
async fn proxy_answers_below_500_never_make_a_build_ready() {
    let mut h = Harness::new();
    fails_from(&mut h, JobStatus::Checks, |m| {
        m.contains("did not become ready") && m.contains("Invalid host")
    });
    h.transitions_to_checks();
    h.creates_sandbox();
    h.generates_app();
    h.writes_files();
    h.starts_dev_server();
    h.probe.expect_get().returning(|_| {
        Ok(ProbeResponse {
            proxy: Some(ProxyAnswer::BadRoute("Invalid host".into())),
            ..answer(400)
        })
    });
    h.kills();
    h.runtime.expect_pause().never();
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_failed(&outcome, &job);
    assert!(job.preview_url.is_none());
}

#[tokio::test(start_paused = true)]
async fn js_without_package_json_fails_naming_package_json() {
    let mut h = Harness::new();
    fails_from(&mut h, JobStatus::Code, |m| m.contains("package.json"));
    h.transitions(&[
        (JobStatus::Queued, JobStatus::Starting),
        (JobStatus::Starting, JobStatus::Scaffold),
        (JobStatus::Scaffold, JobStatus::Code),
    ]);
    h.creates_sandbox();
    h.generator
        .expect_generate()
        .times(1)
        .returning(|_| Ok(files(&["src/app.js", "README.md"])));
    h.runtime.expect_write_files().never();
    h.kills();
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_failed(&outcome, &job);
    assert!(job.error_message.as_deref().unwrap().contains("src/app.js"));
}

#[tokio::test(start_paused = true)]
async fn a_path_escaping_the_workspace_fails_the_build() {
    let mut h = Harness::new();
    fails_from(&mut h, JobStatus::Code, |m| {
        m.contains("outside the workspace")
    });
    h.transitions(&[
        (JobStatus::Queued, JobStatus::Starting),
        (JobStatus::Starting, JobStatus::Scaffold),
        (JobStatus::Scaffold, JobStatus::Code),
    ]);
    h.creates_sandbox();
    h.generator
        .expect_generate()
        .times(1)
        .returning(|_| Ok(files(&["package.json", "../../etc/cron.d/x"])));
    h.runtime.expect_write_files().never();
    h.kills();
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;
    assert_failed(&outcome, &job);
}

#[tokio::test(start_paused = true)]
async fn a_failed_npm_install_reports_the_tail_of_stderr() {
    let mut h = Harness::new();
    fails_from(&mut h, JobStatus::Deps, |m| {
        m.starts_with("npm install failed (exit code 1)")
            && m.ends_with("ERESOLVE could not resolve")
    });
    h.transitions(&[
        (JobStatus::Queued, JobStatus::Starting),
        (JobStatus::Starting, JobStatus::Scaffold),
        (JobStatus::Scaffold, JobStatus::Code),
        (JobStatus::Code, JobStatus::Deps),
    ]);
    h.creates_sandbox();
    h.generator
        .expect_generate()
        .times(1)
        .returning(|_| Ok(files(&["package.json", "index.js"])));
    h.parser
        .expect_parse()
        .returning(|_| Ok(facts(&["express"], &["start"])));
    h.writes_files();
    h.runtime.expect_run().times(1).returning(|_, _| {
        Ok(CommandOutput {
            exit_code: 1,
            stdout: String::new(),
            stderr: format!(
                "{}\nnpm ERR! ERESOLVE could not resolve\n",
                "x".repeat(2000)
            ),
        })
    });
    h.runtime.expect_run_background().never();
    h.kills();
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_failed(&outcome, &job);
    assert!(job.error_message.unwrap().chars().count() < 600);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_generator_is_classified_by_its_variant() {
    let mut h = Harness::new();
    fails_from(&mut h, JobStatus::Code, |m| m.contains("rate limit"));
    h.transitions(&[
        (JobStatus::Queued, JobStatus::Starting),
        (JobStatus::Starting, JobStatus::Scaffold),
        (JobStatus::Scaffold, JobStatus::Code),
    ]);
    h.creates_sandbox();
    h.generator
        .expect_generate()
        .times(1)
        .returning(|_| Err(GeneratorError::RateLimited));
    h.kills();
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;
    assert_failed(&outcome, &job);
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_that_cannot_be_created_fails_without_a_kill() {
    let mut h = Harness::new();
    fails_from(&mut h, JobStatus::Scaffold, |m| {
        m.contains("could not be started")
    });
    h.transitions(&[
        (JobStatus::Queued, JobStatus::Starting),
        (JobStatus::Starting, JobStatus::Scaffold),
    ]);
    h.runtime
        .expect_create()
        .times(1)
        .returning(|_| Err(SandboxError::Provider("quota".into())));
    h.runtime.expect_kill().never();
    h.repo.expect_record_sandbox().never();
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;
    assert_failed(&outcome, &job);
}

#[tokio::test(start_paused = true)]
async fn a_kill_of_a_sandbox_already_gone_is_fine() {
    let mut h = Harness::new();
    fails_from(&mut h, JobStatus::Deps, |_| true);
    h.transitions(&[
        (JobStatus::Queued, JobStatus::Starting),
        (JobStatus::Starting, JobStatus::Scaffold),
        (JobStatus::Scaffold, JobStatus::Code),
        (JobStatus::Code, JobStatus::Deps),
    ]);
    h.creates_sandbox();
    h.generates_app();
    h.runtime
        .expect_write_files()
        .times(1)
        .returning(|_, _| Err(SandboxError::NotFound("sbx-1".into())));
    h.runtime
        .expect_kill()
        .times(1)
        .returning(|_| Err(SandboxError::NotFound("sbx-1".into())));
    let db = h.db.clone();
    h.repo
        .expect_set_sandbox_state()
        .withf(|_, u| u.state == SandboxState::Killed)
        .times(1)
        .returning(move |_, u| Ok(db.set_sandbox_state(&u)));
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;
    assert_failed(&outcome, &job);
    assert_eq!(job.sandbox_state, SandboxState::Killed);
}

/// Postgres failing under a stage write (after the repository's own retries) is not the build's fault: the
/// job is given back to the queue, its sandbox killed, and it is never recorded failed.
#[tokio::test(start_paused = true)]
async fn a_postgres_failure_under_a_stage_gives_the_job_back_and_never_fails_it() {
    use JobStatus::*;
    let mut h = Harness::new();
    h.transitions(&[(Queued, Starting), (Starting, Scaffold), (Scaffold, Code)]);
    h.repo
        .expect_transition()
        .withf(|_, f, t, _| *f == Code && *t == Deps)
        .times(1)
        .returning(|_, _, _, _| Err(RepoError::Unavailable("connection closed".into())));
    h.repo
        .expect_transition()
        .withf(|_, _, t, _| *t == Failed)
        .never();
    let db = h.db.clone();
    h.repo
        .expect_requeue_job()
        .withf(|_, from, attempt| *from == Code && *attempt == 1)
        .times(1)
        .returning(move |_, from, _| Ok(db.requeue(from)));
    h.creates_sandbox();
    h.generates_app();
    h.runtime.expect_kill().times(1).returning(|_| Ok(()));
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_eq!(outcome, BuildOutcome::Interrupted { requeued: true });
    assert_eq!(job.status, Queued);
    assert_eq!(job.error_message, None);
}

/// Fencing: the job was taken by another attempt (this worker stalled past its lease) and stands at the
/// same stage; this build's next write is refused, it stops and kills its own sandbox.
#[tokio::test(start_paused = true)]
async fn a_stale_attempt_cannot_advance_the_job_of_a_new_attempt() {
    use JobStatus::*;
    let mut h = Harness::new();
    h.transitions(&[(Queued, Starting), (Starting, Scaffold), (Scaffold, Code)]);
    let db = h.db.clone();
    h.generator.expect_generate().times(1).returning(move |_| {
        // Meanwhile: the lease expired, the job was requeued and leased again, and reached code again.
        db.new_attempt();
        Ok(files(&["package.json", "./server.js"]))
    });
    h.parser
        .expect_parse()
        .returning(|_| Ok(facts(&[], &["start"])));
    let db = h.db.clone();
    h.repo
        .expect_transition()
        .withf(|_, f, t, u| *f == Code && *t == Deps && u.attempt == Some(1))
        .times(1)
        .returning(move |_, f, t, u| Ok(db.transition(f, t, &u)));
    h.creates_sandbox();
    h.runtime.expect_write_files().never();
    h.runtime
        .expect_kill()
        .withf(|id| id.as_str() == SANDBOX)
        .times(1)
        .returning(|_| Ok(()));
    let db = h.db.clone();
    h.repo
        .expect_set_sandbox_state()
        .returning(move |_, u| Ok(db.set_sandbox_state(&u)));
    h.live_accepts();

    let (outcome, job) = h.run(CancellationToken::new()).await;

    assert_eq!(
        outcome,
        BuildOutcome::Lost {
            current: Some(Code)
        }
    );
    assert_eq!((job.status, job.attempts), (Code, 2));
    // The new attempt's sandbox is untouched.
    assert_eq!(job.sandbox_id.unwrap().as_str(), "sbx-2");
    assert_eq!(job.sandbox_state, SandboxState::Running);
}
