use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::ports::live_store::MockLiveJobStore;
use crate::ports::probe::MockPreviewProbe;
use crate::ports::repository::MockJobRepository;
use crate::ports::sandbox::MockSandboxRuntime;
use crate::ports::{BackgroundCommand, CommandOutput, ProbeError, ProbeResponse};
use crate::usecases::framework::PackageFacts;
use crate::usecases::pipeline::package::MockPackageJsonParser;
use crate::usecases::reconcile::fixtures::{job, ready_job, stateful_repo, user, Row};

struct Mocks {
    repo: MockJobRepository,
    live: MockLiveJobStore,
    runtime: MockSandboxRuntime,
    probe: MockPreviewProbe,
    parser: MockPackageJsonParser,
}

impl Mocks {
    /// Mocks around `job`'s row; activity touches and live saves are accepted.
    fn new(j: &Job) -> (Self, Row) {
        let mut repo = MockJobRepository::new();
        let row = stateful_repo(&mut repo, j);
        repo.expect_touch_activity().returning(|_, _| Ok(()));
        let mut live = MockLiveJobStore::new();
        live.expect_save().returning(|_| Ok(()));
        let mocks = Self {
            repo,
            live,
            runtime: MockSandboxRuntime::new(),
            probe: MockPreviewProbe::new(),
            parser: MockPackageJsonParser::new(),
        };
        (mocks, row)
    }

    fn service(self) -> ResumeService {
        self.service_with(ResumeConfig::default())
    }

    fn service_with(self, config: ResumeConfig) -> ResumeService {
        ResumeService::new(
            ResumeDeps {
                repo: Arc::new(self.repo),
                live: Arc::new(self.live),
                runtime: Arc::new(self.runtime),
                probe: Arc::new(self.probe),
                package_json: Arc::new(self.parser),
            },
            config,
        )
    }
}

fn answer(status: u16) -> Result<ProbeResponse, ProbeError> {
    Ok(ProbeResponse::from_app(status, "https://preview"))
}

fn exit(code: i32) -> Result<CommandOutput, SandboxError> {
    Ok(CommandOutput {
        exit_code: code,
        ..CommandOutput::default()
    })
}

#[tokio::test(start_paused = true)]
async fn concurrent_resumes_share_one_connect_and_one_result() {
    let j = ready_job(SandboxState::Paused);
    let (mut m, row) = Mocks::new(&j);
    m.runtime.expect_connect().times(1).returning(|_, _| Ok(()));
    m.runtime.expect_set_timeout().returning(|_, _| Ok(()));
    m.probe.expect_get().returning(|_| answer(200));
    let service = m.service();

    let u = user();
    let (a, b) = tokio::join!(service.resume(&u, j.id), service.resume(&u, j.id));

    let expected = Resumed {
        preview_url: j.preview_url.clone().unwrap(),
        sandbox_id: j.sandbox_id.clone().unwrap(),
    };
    assert_eq!(a, Ok(expected.clone()));
    assert_eq!(b, Ok(expected));
    assert_eq!(
        row.written(),
        vec![SandboxState::Resuming, SandboxState::Running]
    );
    // The second call joined the flight: it never had to wait on the row for another resumer.
    assert_eq!(row.reads(), 0);
}

/// The provider stops the resumed sandbox `provider_timeout` after Slipway last set it (the set_timeout once
/// the preview answers): that is what the row records, and a pause clears it.
#[tokio::test(start_paused = true)]
async fn a_resume_records_when_the_provider_stops_the_sandbox() {
    let j = ready_job(SandboxState::Paused);
    let (mut m, row) = Mocks::new(&j);
    type SetAt = (chrono::DateTime<chrono::Utc>, Duration);
    let set: Arc<Mutex<Vec<SetAt>>> = Default::default();
    let seen = set.clone();
    m.runtime.expect_connect().times(1).returning(|_, _| Ok(()));
    m.runtime.expect_set_timeout().returning(move |_, timeout| {
        seen.lock().unwrap().push((chrono::Utc::now(), timeout));
        Ok(())
    });
    m.probe.expect_get().returning(|_| answer(200));
    let service = m.service();
    assert_eq!(row.current().sandbox_expires_at, None, "null while paused");

    service.resume(&user(), j.id).await.unwrap();

    let (at, timeout) = *set.lock().unwrap().last().expect("a timeout was set");
    assert_eq!(timeout, ResumeConfig::default().provider_timeout);
    let expires = row
        .current()
        .sandbox_expires_at
        .expect("recorded with running");
    let timeout = chrono::Duration::from_std(timeout).unwrap();
    // Taken just before the provider call: never later than it, and within a small tolerance.
    assert!(expires <= at + timeout, "{expires} > {at} + {timeout}");
    assert!(expires >= at + timeout - chrono::Duration::seconds(2));
}

#[tokio::test(start_paused = true)]
async fn a_resume_during_the_pause_waits_for_it_then_resumes() {
    let j = ready_job(SandboxState::Pausing);
    let (mut m, row) = Mocks::new(&j);
    m.runtime.expect_connect().times(1).returning(|_, _| Ok(()));
    m.runtime.expect_set_timeout().returning(|_, _| Ok(()));
    m.probe.expect_get().returning(|_| answer(200));
    // The pause in flight (the worker's) is confirmed a little later.
    let pauser = row.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        pauser.set_elsewhere(SandboxState::Paused);
    });
    let got = m.service().resume(&user(), j.id).await;
    assert_eq!(
        got.map(|r| r.preview_url),
        Ok(j.preview_url.clone().unwrap())
    );
    assert_eq!(
        row.written(),
        vec![SandboxState::Resuming, SandboxState::Running],
        "resumed once the pause landed, never resumed over it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_resume_answers_unreachable_within_the_bound_and_goes_on_for_the_next_call() {
    let j = ready_job(SandboxState::Pausing);
    let (mut m, row) = Mocks::new(&j);
    m.runtime.expect_connect().times(1).returning(|_, _| Ok(()));
    m.runtime.expect_set_timeout().returning(|_, _| Ok(()));
    m.probe.expect_get().returning(|_| answer(200));
    let pauser = row.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        pauser.set_elsewhere(SandboxState::Paused);
    });
    let service = m.service();
    let started = tokio::time::Instant::now();
    let first = service.resume(&user(), j.id).await;
    assert_eq!(started.elapsed(), ResumeConfig::default().answer_within);
    assert_eq!(first.unwrap_err().error_type(), Some("sandbox_unreachable"));

    // The front end's second try, 5 s later, joins the resume that went on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = service.resume(&user(), j.id).await;
    assert_eq!(
        second.map(|r| r.preview_url),
        Ok(j.preview_url.clone().unwrap())
    );
    assert_eq!(
        row.written(),
        vec![SandboxState::Resuming, SandboxState::Running]
    );
}

#[tokio::test(start_paused = true)]
async fn a_resume_claimed_by_another_process_is_awaited_not_repeated() {
    let j = ready_job(SandboxState::Paused);
    let (m, row) = Mocks::new(&j);
    // Another process claims the resume first, and finishes it a little later.
    row.set_elsewhere(SandboxState::Resuming);
    let other = row.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        other.set_elsewhere(SandboxState::Running);
    });
    // No runtime expectation: a connect here would panic.
    let got = m.service().resume(&user(), j.id).await;
    assert_eq!(
        got.map(|r| r.preview_url),
        Ok(j.preview_url.clone().unwrap())
    );
    assert!(row.written().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_expired_sandbox_answers_sandbox_expired_and_is_marked_expired() {
    let j = ready_job(SandboxState::Paused);
    let (mut m, row) = Mocks::new(&j);
    m.runtime
        .expect_connect()
        .times(1)
        .returning(|_, _| Err(SandboxError::NotFound("Paused sandbox not found".into())));
    let got = m.service().resume(&user(), j.id).await;
    let err = got.unwrap_err();
    assert!(matches!(err, ResumeError::Expired { .. }), "{err:?}");
    assert_eq!(err.error_type(), Some("sandbox_expired"));
    assert_eq!(
        row.written(),
        vec![SandboxState::Resuming, SandboxState::Expired]
    );
    assert!(!row.current().sandbox_paused());
}

#[tokio::test(start_paused = true)]
async fn a_live_preview_after_connect_does_not_restart_the_dev_server() {
    let j = ready_job(SandboxState::Paused);
    let (mut m, _row) = Mocks::new(&j);
    m.runtime.expect_connect().times(1).returning(|_, _| Ok(()));
    m.runtime
        .expect_set_timeout()
        .times(1)
        .returning(|_, _| Ok(()));
    m.runtime.expect_read_file().never();
    m.runtime.expect_run().never();
    m.runtime.expect_run_background().never();
    m.probe.expect_get().returning(|_| answer(200));
    let got = m.service().resume(&user(), j.id).await;
    assert!(got.is_ok(), "{got:?}");
}

/// A sandbox whose preview is down until the dev server starts; records every command run.
fn restart_mocks(node_modules: bool) -> (Mocks, Row, Arc<Mutex<Vec<String>>>, Job) {
    let j = ready_job(SandboxState::Paused);
    let (mut m, row) = Mocks::new(&j);
    let started = Arc::new(AtomicBool::new(false));
    let commands = Arc::new(Mutex::new(Vec::new()));
    m.runtime.expect_connect().returning(|_, _| Ok(()));
    m.runtime.expect_set_timeout().returning(|_, _| Ok(()));
    m.runtime
        .expect_read_file()
        .returning(|_, _| Ok(br#"{"dependencies":{"vite":"5"}}"#.to_vec()));
    m.runtime
        .expect_workspace_path()
        .return_const("/home/user/project".to_owned());
    m.parser.expect_parse().returning(|_| {
        Ok(PackageFacts {
            dependencies: vec!["vite".into()],
            scripts: vec!["dev".into()],
        })
    });
    let seen = commands.clone();
    m.runtime.expect_run().returning(move |_, cmd| {
        seen.lock().unwrap().push(cmd.cmd.clone());
        match cmd.cmd.as_str() {
            "test -d node_modules" => exit(if node_modules { 0 } else { 1 }),
            _ => exit(0),
        }
    });
    let (seen, up) = (commands.clone(), started.clone());
    m.runtime.expect_run_background().returning(move |_, cmd| {
        assert_eq!(cmd.envs.get("PORT").map(String::as_str), Some("5173"));
        seen.lock().unwrap().push(cmd.cmd.clone());
        up.store(true, Ordering::SeqCst);
        Ok(BackgroundCommand::unwatched(42))
    });
    m.runtime
        .expect_preview_url()
        .returning(|id, port| Ok(format!("https://{port}-{id}.e2b.app")));
    m.probe.expect_get().returning(move |_| {
        if started.load(Ordering::SeqCst) {
            answer(200)
        } else {
            answer(502)
        }
    });
    (m, row, commands, j)
}

#[tokio::test(start_paused = true)]
async fn a_dead_preview_restarts_the_dev_server_and_reinstalls_only_without_node_modules() {
    let (m, row, commands, j) = restart_mocks(false);
    let got = m.service().resume(&user(), j.id).await.unwrap();
    let sandbox = j.sandbox_id.unwrap();
    assert_eq!(got.preview_url, format!("https://5173-{sandbox}.e2b.app"));
    assert_eq!(
        *commands.lock().unwrap(),
        vec![
            "test -d node_modules",
            "npm install --no-audit --no-fund",
            "npm run dev"
        ]
    );
    assert_eq!(row.current().preview_url, Some(got.preview_url));
    assert_eq!(row.current().sandbox_state, SandboxState::Running);
}

#[tokio::test(start_paused = true)]
async fn node_modules_present_means_no_reinstall() {
    let (m, _row, commands, j) = restart_mocks(true);
    m.service().resume(&user(), j.id).await.unwrap();
    assert_eq!(
        *commands.lock().unwrap(),
        vec!["test -d node_modules", "npm run dev"]
    );
}

/// A restarted dev server that exits ends the attempt at once (not at the readiness deadline), and the
/// proxy's answer for the dead server never counts as up.
#[tokio::test(start_paused = true)]
async fn a_restarted_dev_server_that_exits_fails_the_resume_at_once() {
    let j = ready_job(SandboxState::Paused);
    let (mut m, row) = Mocks::new(&j);
    m.runtime.expect_connect().returning(|_, _| Ok(()));
    m.runtime
        .expect_read_file()
        .returning(|_, _| Ok(br#"{"scripts":{"dev":"vite"}}"#.to_vec()));
    m.runtime
        .expect_workspace_path()
        .return_const("/home/user/project".to_owned());
    m.parser.expect_parse().returning(|_| {
        Ok(PackageFacts {
            dependencies: vec![],
            scripts: vec!["dev".into()],
        })
    });
    m.runtime.expect_run_background().returning(|_, _| {
        let (server, reporter) = BackgroundCommand::watched(42);
        reporter.exited(crate::ports::CommandExit {
            exit_code: 127,
            output_tail: "sh: 1: vite: not found".into(),
        });
        Ok(server)
    });
    m.runtime
        .expect_preview_url()
        .returning(|id, port| Ok(format!("https://{port}-{id}.e2b.app")));
    m.probe.expect_get().returning(|_| {
        Ok(ProbeResponse {
            proxy: Some(crate::ports::ProxyAnswer::PortNotOpen),
            ..ProbeResponse::from_app(502, "https://preview")
        })
    });
    m.runtime
        .expect_state()
        .returning(|_| Ok(ProviderState::Running));
    m.runtime
        .expect_pause()
        .returning(|_| Ok(crate::ports::PauseOutcome::Paused));
    let started = tokio::time::Instant::now();
    let err = m.service().resume(&user(), j.id).await.unwrap_err();
    assert_eq!(err.error_type(), Some("sandbox_unreachable"));
    let ResumeError::Unreachable { reason } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("exited with code 127"), "{reason}");
    assert!(reason.contains("vite: not found"), "{reason}");
    // Two attempts and the backoff, far below the readiness deadline each would otherwise wait out.
    assert!(started.elapsed() < ResumeConfig::default().readiness_deadline);
    assert_eq!(
        row.written(),
        vec![SandboxState::Resuming, SandboxState::Paused]
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_sandbox_is_retried_once_then_set_to_the_provider_state() {
    let j = ready_job(SandboxState::Paused);
    let (mut m, row) = Mocks::new(&j);
    m.runtime.expect_connect().times(2).returning(|_, _| {
        Err(SandboxError::Unavailable(
            "502 from the control plane".into(),
        ))
    });
    m.runtime
        .expect_state()
        .times(1)
        .returning(|_| Ok(ProviderState::Paused));
    let err = m.service().resume(&user(), j.id).await.unwrap_err();
    assert_eq!(err.error_type(), Some("sandbox_unreachable"));
    assert_eq!(
        row.written(),
        vec![SandboxState::Resuming, SandboxState::Paused]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_on_a_sandbox_the_provider_dropped_is_expired() {
    let j = ready_job(SandboxState::Paused);
    let (mut m, row) = Mocks::new(&j);
    m.runtime
        .expect_connect()
        .returning(|_, _| Err(SandboxError::TimedOut("connect".into())));
    m.runtime
        .expect_state()
        .returning(|_| Err(SandboxError::NotFound("gone".into())));
    let err = m.service().resume(&user(), j.id).await.unwrap_err();
    assert_eq!(err.error_type(), Some("sandbox_expired"));
    assert_eq!(
        row.written(),
        vec![SandboxState::Resuming, SandboxState::Expired]
    );
}

#[tokio::test]
async fn a_running_sandbox_answers_at_once_and_counts_as_activity() {
    let j = ready_job(SandboxState::Running);
    let mut repo = MockJobRepository::new();
    stateful_repo(&mut repo, &j);
    repo.expect_touch_activity()
        .with(mockall::predicate::eq(j.id), mockall::predicate::always())
        .times(1)
        .returning(|_, _| Ok(()));
    let m = Mocks {
        repo,
        live: MockLiveJobStore::new(),
        runtime: MockSandboxRuntime::new(),
        probe: MockPreviewProbe::new(),
        parser: MockPackageJsonParser::new(),
    };
    let got = m.service().resume(&user(), j.id).await.unwrap();
    assert_eq!(Some(got.preview_url), j.preview_url);
}

#[tokio::test]
async fn not_ready_and_no_sandbox_are_refused_before_any_provider_call() {
    let mut building = ready_job(SandboxState::Running);
    building.status = JobStatus::Deps;
    let (m, _) = Mocks::new(&building);
    assert_eq!(
        m.service().resume(&user(), building.id).await,
        Err(ResumeError::NotReady(JobStatus::Deps))
    );

    let queued = job(JobStatus::Queued);
    let (m, _) = Mocks::new(&queued);
    assert_eq!(
        m.service().resume(&user(), queued.id).await,
        Err(ResumeError::NoSandbox)
    );
}

#[tokio::test(start_paused = true)]
async fn a_dev_server_that_never_answers_ends_unreachable_within_the_deadline_and_paused_again() {
    let (mut m, row, _commands, j) = restart_mocks(true);
    // Replace the probe: the preview never answers.
    m.probe = MockPreviewProbe::new();
    m.probe.expect_get().returning(|_| answer(502));
    m.runtime
        .expect_state()
        .returning(|_| Ok(ProviderState::Running));
    m.runtime
        .expect_pause()
        .times(1)
        .returning(|_| Ok(crate::ports::PauseOutcome::Paused));
    let started = Instant::now();
    let config = ResumeConfig::default();
    // A caller that waits for the whole resume (the bound on the answer is another test's).
    let patient = ResumeConfig {
        answer_within: config.deadline * 2,
        ..config
    };
    let err = m
        .service_with(patient)
        .resume(&user(), j.id)
        .await
        .unwrap_err();
    assert!(started.elapsed() <= config.deadline + config.settle_timeout);
    assert_eq!(err.error_type(), Some("sandbox_unreachable"));
    assert_eq!(
        row.written(),
        vec![SandboxState::Resuming, SandboxState::Paused]
    );
}

#[tokio::test(start_paused = true)]
async fn a_wake_needs_no_user_and_only_the_first_caller_starts_it() {
    let j = ready_job(SandboxState::Paused);
    let (mut m, row) = Mocks::new(&j);
    m.runtime.expect_connect().times(1).returning(|_, _| Ok(()));
    m.runtime.expect_set_timeout().returning(|_, _| Ok(()));
    m.probe.expect_get().returning(|_| answer(200));
    let service = m.service();

    let (
        Ok(Waking::Flight {
            flight: a,
            started: first,
        }),
        Ok(Waking::Flight {
            flight: b,
            started: second,
        }),
    ) = (service.wake(j.id).await, service.wake(j.id).await)
    else {
        panic!("a paused sandbox wakes through a flight");
    };
    assert!(first && !second, "the second caller joins the first wake");
    let (a, b) = tokio::join!(a, b);
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(
        row.written(),
        vec![SandboxState::Resuming, SandboxState::Running]
    );
    // Running now: the next wake answers at once.
    assert!(matches!(service.wake(j.id).await, Ok(Waking::Running(_))));
}
