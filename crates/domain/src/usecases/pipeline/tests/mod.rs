//! Pipeline tests with mockall mocks of every port. The repository mock keeps the job row in a shared cell
//! and applies each compare-and-set to it, so a test can both assert the calls and read the final row.

mod cancel_tests;
mod failure_tests;
mod pause_tests;
mod ready_tests;

use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::package::MockPackageJsonParser;
use super::{run_build, BuildOutcome, PipelineConfig, PipelineDeps};
use crate::ports::generator::MockCodeGenerator;
use crate::ports::live_store::MockLiveJobStore;
use crate::ports::probe::MockPreviewProbe;
use crate::ports::repository::MockJobRepository;
use crate::ports::sandbox::MockSandboxRuntime;
use crate::ports::{
    BackgroundCommand, GeneratedFile, GeneratedFiles, ProbeResponse, SandboxStateUpdate,
    TransitionOutcome, TransitionUpdate,
};
use crate::usecases::framework::PackageFacts;
use crate::{
    BuildVersion, Job, JobId, JobStatus, ProjectId, SandboxId, SandboxState, Tier, UserId,
};

pub(super) const SANDBOX: &str = "sbx-1";
pub(super) const WORKSPACE: &str = "/home/user/project";
pub(super) const PREVIEW: &str = "https://3000-sbx-1.preview.test";

pub(super) fn sandbox_id() -> SandboxId {
    SandboxId::try_from(SANDBOX).unwrap()
}

pub(super) fn queued_job() -> Job {
    let now = Utc::now();
    Job {
        id: JobId::new(),
        project_id: ProjectId::new(),
        user_id: UserId::try_from("user_1").unwrap(),
        tier: Tier::Bootstrapper,
        goal: "A todo app".into(),
        status: JobStatus::Queued,
        status_message: None,
        error_message: None,
        debug_id: None,
        attempts: 1,
        sandbox_id: None,
        preview_url: None,
        workspace_path: None,
        build_version: None,
        sandbox_state: SandboxState::None,
        sandbox_state_version: 0,
        paused_at: None,
        resumed_at: None,
        sandbox_expires_at: None,
        last_activity_at: None,
        enqueued_at: Some(now),
        started_at: None,
        completed_at: None,
        created_at: now,
        updated_at: now,
        duration_seconds: None,
    }
}

/// The job row, as Postgres would hold it.
#[derive(Clone)]
pub(super) struct Db(pub Arc<Mutex<Job>>);

impl Db {
    pub(super) fn get(&self) -> Job {
        self.0.lock().unwrap().clone()
    }

    pub(super) fn set_status(&self, status: JobStatus) {
        self.0.lock().unwrap().status = status;
    }

    /// Another worker took the job for a new attempt (requeued, leased again, its own sandbox recorded).
    pub(super) fn new_attempt(&self) {
        let mut job = self.0.lock().unwrap();
        job.attempts += 1;
        job.sandbox_id = Some(SandboxId::try_from("sbx-2").unwrap());
        job.sandbox_state_version += 2;
    }

    pub(super) fn transition(
        &self,
        from: JobStatus,
        to: JobStatus,
        update: &TransitionUpdate,
    ) -> TransitionOutcome {
        let mut job = self.0.lock().unwrap();
        assert!(from.can_transition(to), "{from} -> {to} is not allowed");
        if job.status != from || update.attempt.is_some_and(|a| a != job.attempts) {
            return TransitionOutcome::Conflict {
                current: Some(job.status),
            };
        }
        job.status = to;
        if let Some(m) = &update.message {
            job.status_message = Some(m.clone());
        }
        if let Some(m) = &update.error_message {
            job.error_message = Some(m.clone());
        }
        job.debug_id = update.debug_id.or(job.debug_id);
        if let Some(s) = &update.sandbox_id {
            job.sandbox_id = Some(s.clone());
        }
        if let Some(u) = &update.preview_url {
            job.preview_url = Some(u.clone());
        }
        if let Some(w) = &update.workspace_path {
            job.workspace_path = Some(w.clone());
        }
        job.sandbox_expires_at = update.sandbox_expires_at.or(job.sandbox_expires_at);
        if update.assign_build_version && to == JobStatus::Ready {
            job.build_version = Some(BuildVersion(1).label());
        }
        if let Some(state) = update.sandbox_state {
            job.sandbox_state = state;
            job.sandbox_state_version += 1;
        }
        TransitionOutcome::Applied(Box::new(job.clone()))
    }

    pub(super) fn record_sandbox(&self, sandbox: &SandboxId) -> Job {
        let mut job = self.0.lock().unwrap();
        job.sandbox_id = Some(sandbox.clone());
        job.sandbox_state = SandboxState::Running;
        job.sandbox_state_version += 1;
        job.clone()
    }

    pub(super) fn set_sandbox_state(&self, update: &SandboxStateUpdate) -> Option<Job> {
        let mut job = self.0.lock().unwrap();
        if job.sandbox_state_version != update.expected_version {
            return None;
        }
        job.sandbox_state = update.state;
        job.sandbox_state_version += 1;
        Some(job.clone())
    }

    pub(super) fn requeue(&self, from: JobStatus) -> TransitionOutcome {
        let mut job = self.0.lock().unwrap();
        if job.status != from {
            return TransitionOutcome::Conflict {
                current: Some(job.status),
            };
        }
        job.status = JobStatus::Queued;
        job.sandbox_id = None;
        job.sandbox_state = SandboxState::None;
        job.sandbox_state_version += 1;
        TransitionOutcome::Applied(Box::new(job.clone()))
    }
}

pub(super) fn answer(status: u16) -> ProbeResponse {
    ProbeResponse::from_app(status, PREVIEW)
}

pub(super) fn files(paths: &[&str]) -> GeneratedFiles {
    GeneratedFiles(
        paths
            .iter()
            .map(|p| GeneratedFile {
                path: (*p).to_owned(),
                content: format!("// {p}"),
            })
            .collect(),
    )
}

pub(super) fn facts(deps: &[&str], scripts: &[&str]) -> PackageFacts {
    PackageFacts {
        dependencies: deps.iter().map(|d| d.to_string()).collect(),
        scripts: scripts.iter().map(|s| s.to_string()).collect(),
    }
}

/// The mocks of one build, with helpers that set the usual expectations. Tests declare their specific
/// expectations first: mockall uses the first matching expectation that is not yet used up.
pub(super) struct Harness {
    pub repo: MockJobRepository,
    pub live: MockLiveJobStore,
    pub runtime: MockSandboxRuntime,
    pub generator: MockCodeGenerator,
    pub probe: MockPreviewProbe,
    pub parser: MockPackageJsonParser,
    pub db: Db,
    pub config: PipelineConfig,
    /// The build's log, live and archived.
    pub logs: Arc<crate::usecases::logs::MemoryLog>,
}

impl Harness {
    pub(super) fn new() -> Self {
        let mut runtime = MockSandboxRuntime::new();
        runtime
            .expect_workspace_path()
            .return_const(WORKSPACE.to_owned());
        Self {
            repo: MockJobRepository::new(),
            live: MockLiveJobStore::new(),
            runtime,
            generator: MockCodeGenerator::new(),
            probe: MockPreviewProbe::new(),
            parser: MockPackageJsonParser::new(),
            db: Db(Arc::new(Mutex::new(queued_job()))),
            config: PipelineConfig::default(),
            logs: Arc::default(),
        }
    }

    pub(super) fn job_id(&self) -> JobId {
        self.db.get().id
    }

    /// Each move once, applied to the row.
    pub(super) fn transitions(&mut self, moves: &[(JobStatus, JobStatus)]) {
        for &(from, to) in moves {
            let db = self.db.clone();
            self.repo
                .expect_transition()
                .withf(move |_, f, t, _| *f == from && *t == to)
                .times(1)
                .returning(move |_, f, t, u| Ok(db.transition(f, t, &u)));
        }
    }

    /// starting, scaffold, code, deps and checks.
    pub(super) fn transitions_to_checks(&mut self) {
        use JobStatus::*;
        self.transitions(&[
            (Queued, Starting),
            (Starting, Scaffold),
            (Scaffold, Code),
            (Code, Deps),
            (Deps, Checks),
        ]);
    }

    /// The sandbox is created once; the move to code records it, so no separate record is made.
    pub(super) fn creates_sandbox(&mut self) {
        self.runtime
            .expect_create()
            .times(1)
            .returning(|_| Ok(sandbox_id()));
        self.repo.expect_record_sandbox().never();
    }

    /// A dependency-free app with a start script.
    pub(super) fn generates_app(&mut self) {
        self.generator
            .expect_generate()
            .times(1)
            .returning(|_| Ok(files(&["package.json", "./server.js"])));
        self.parser
            .expect_parse()
            .times(1)
            .returning(|_| Ok(facts(&[], &["start"])));
    }

    pub(super) fn writes_files(&mut self) {
        self.runtime
            .expect_write_files()
            .times(1)
            .returning(|_, _| Ok(()));
    }

    pub(super) fn starts_dev_server(&mut self) {
        self.runtime
            .expect_run_background()
            .withf(|_, cmd| {
                cmd.cmd == "npm start" && cmd.envs.get("PORT").map(String::as_str) == Some("3000")
            })
            .times(1)
            .returning(|_, _| Ok(BackgroundCommand::unwatched(42)));
        self.runtime
            .expect_preview_url()
            .times(1)
            .returning(|_, port| Ok(format!("https://{port}-{SANDBOX}.preview.test")));
    }

    pub(super) fn preview_answers(&mut self) {
        self.probe.expect_get().returning(|_| Ok(answer(200)));
    }

    /// Everything up to an accepted READY.
    pub(super) fn builds_to_ready(&mut self) {
        self.transitions_to_checks();
        self.transitions(&[(JobStatus::Checks, JobStatus::Ready)]);
        self.creates_sandbox();
        self.generates_app();
        self.writes_files();
        self.starts_dev_server();
        self.preview_answers();
    }

    /// Pausing as the provider confirms it: running → pausing → paused.
    pub(super) fn pauses(&mut self) {
        let db = self.db.clone();
        self.repo
            .expect_set_sandbox_state()
            .returning(move |_, u| Ok(db.set_sandbox_state(&u)));
        self.runtime
            .expect_pause()
            .times(1)
            .returning(|_| Ok(crate::ports::PauseOutcome::Paused));
    }

    /// Kill once, and record it.
    pub(super) fn kills(&mut self) {
        self.runtime.expect_kill().times(1).returning(|_| Ok(()));
        let db = self.db.clone();
        self.repo
            .expect_set_sandbox_state()
            .withf(|_, u| u.state == SandboxState::Killed)
            .returning(move |_, u| Ok(db.set_sandbox_state(&u)));
    }

    /// Redis accepts every write.
    pub(super) fn live_accepts(&mut self) {
        self.live.expect_save().returning(|_| Ok(()));
        self.live.expect_save_and_publish().returning(|_, _| Ok(()));
    }

    pub(super) async fn run(self, cancel: CancellationToken) -> (BuildOutcome, Job) {
        let db = self.db.clone();
        let id = self.job_id();
        let deps = PipelineDeps {
            repo: Arc::new(self.repo),
            live: Arc::new(self.live),
            runtime: Arc::new(self.runtime),
            generator: Arc::new(self.generator),
            probe: Arc::new(self.probe),
            package_parser: Arc::new(self.parser),
            logs: self.logs.clone(),
            log_archive: self.logs.clone(),
        };
        let outcome = run_build(&deps, &self.config, id, cancel).await;
        (outcome, db.get())
    }
}
