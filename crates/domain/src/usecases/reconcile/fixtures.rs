//! Test fixtures shared by the lifecycle use cases' tests (resume, snapshot, activity, reconcile).

use chrono::{Duration as ChronoDuration, Utc};

use crate::ports::SandboxStateUpdate;
use crate::{Job, JobId, JobStatus, ProjectId, SandboxId, SandboxState, Tier, UserId};

pub fn user() -> UserId {
    UserId::try_from("user_1").unwrap()
}

pub fn sandbox_id(s: &str) -> SandboxId {
    SandboxId::try_from(s).unwrap()
}

/// A job with `status`, no sandbox, created an hour ago.
pub fn job(status: JobStatus) -> Job {
    let now = Utc::now();
    let hour_ago = now - ChronoDuration::hours(1);
    Job {
        id: JobId::new(),
        project_id: ProjectId::new(),
        user_id: user(),
        tier: Tier::Bootstrapper,
        goal: "a todo app".into(),
        status,
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
        enqueued_at: Some(hour_ago),
        started_at: None,
        completed_at: None,
        created_at: hour_ago,
        updated_at: hour_ago,
        duration_seconds: None,
    }
}

/// A READY job whose sandbox is in `state`, with a preview URL, completed an hour ago.
pub fn ready_job(state: SandboxState) -> Job {
    let mut j = job(JobStatus::Ready);
    let id = format!("sbx{}", &j.id.to_string()[..8]);
    j.preview_url = Some(format!("https://3000-{id}.e2b.app"));
    j.sandbox_id = Some(sandbox_id(&id));
    j.workspace_path = Some("/home/user/project".into());
    j.sandbox_state = state;
    j.sandbox_state_version = 7;
    j.completed_at = Some(j.updated_at);
    j
}

/// What the repository would write for `update` on `job` (when the version matches).
pub fn applied(job: &Job, update: &SandboxStateUpdate) -> Job {
    let mut j = job.clone();
    j.sandbox_state = update.state;
    j.sandbox_state_version = update.expected_version + 1;
    if let Some(url) = &update.preview_url {
        j.preview_url = Some(url.clone());
    }
    // As the Postgres adapter writes it: cleared by a move to paused or a dead state, else kept or replaced.
    if update.state.is_paused() || !update.state.is_live() {
        j.sandbox_expires_at = None;
    } else if update.expires_at.is_some() {
        j.sandbox_expires_at = update.expires_at;
    }
    // As the Postgres adapter stamps them: resumed_at only on a move to running from paused or resuming.
    let now = Utc::now();
    match (job.sandbox_state, update.state) {
        (_, SandboxState::Paused) => j.paused_at = Some(now),
        (SandboxState::Paused | SandboxState::Resuming, SandboxState::Running) => {
            j.resumed_at = Some(now)
        }
        _ => {}
    }
    j.updated_at = now;
    j
}

/// An in-memory row behind a mock repository: `set_sandbox_state` is a real compare-and-set on it, and
/// every state written is logged in order.
#[derive(Clone)]
pub struct Row {
    pub job: std::sync::Arc<std::sync::Mutex<Job>>,
    pub states: std::sync::Arc<std::sync::Mutex<Vec<SandboxState>>>,
    /// How many times `get_job` read the row.
    pub reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Row {
    pub fn current(&self) -> Job {
        self.job.lock().unwrap().clone()
    }
    pub fn written(&self) -> Vec<SandboxState> {
        self.states.lock().unwrap().clone()
    }
    pub fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Changes the row as another process would.
    pub fn set_elsewhere(&self, state: SandboxState) {
        let mut cur = self.job.lock().unwrap();
        cur.sandbox_state = state;
        cur.sandbox_state_version += 1;
    }
}

/// Wires `get_job`, `get_job_for_user` and `set_sandbox_state` of `repo` to an in-memory row.
pub fn stateful_repo(repo: &mut crate::ports::repository::MockJobRepository, job: &Job) -> Row {
    let row = Row {
        job: std::sync::Arc::new(std::sync::Mutex::new(job.clone())),
        states: Default::default(),
        reads: Default::default(),
    };
    let r = row.clone();
    repo.expect_get_job().returning(move |_| {
        r.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Some(r.current()))
    });
    let r = row.clone();
    repo.expect_get_job_for_user()
        .returning(move |_, _| Ok(Some(r.current())));
    let r = row.clone();
    repo.expect_set_sandbox_state().returning(move |_, update| {
        let mut cur = r.job.lock().unwrap();
        if cur.sandbox_state_version != update.expected_version {
            return Ok(None);
        }
        *cur = applied(&cur, &update);
        r.states.lock().unwrap().push(update.state);
        Ok(Some(cur.clone()))
    });
    row
}

/// A reconciler over the given mocks, with the default policy.
pub fn reconciler(
    repo: crate::ports::repository::MockJobRepository,
    live: crate::ports::live_store::MockLiveJobStore,
    queue: crate::ports::queue::MockJobQueue,
    runtime: crate::ports::sandbox::MockSandboxRuntime,
    config: super::ReconcileConfig,
) -> super::Reconciler {
    super::Reconciler::new(
        super::ReconcileDeps {
            repo: std::sync::Arc::new(repo),
            live: std::sync::Arc::new(live),
            queue: std::sync::Arc::new(queue),
            runtime: std::sync::Arc::new(runtime),
        },
        config,
    )
}

/// A live store that accepts every write.
pub fn live_accepting() -> crate::ports::live_store::MockLiveJobStore {
    let mut live = crate::ports::live_store::MockLiveJobStore::new();
    live.expect_save().returning(|_| Ok(()));
    live.expect_save_and_publish().returning(|_, _| Ok(()));
    live
}
