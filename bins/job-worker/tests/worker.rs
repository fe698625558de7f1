//! The worker against the real Postgres and Redis, with a scripted sandbox runtime: each test gets a fresh
//! database (`#[sqlx::test]`, migrated and dropped afterwards; needs DATABASE_URL pointing at a server where
//! databases can be created) and its own Redis key prefix (deleted at the end; REDIS_URL, default local).

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use domain::ports::{
    JobQueue, JobRepository, LiveJobStore, ProviderState, QueuedJob, SandboxRuntime,
};
use domain::usecases::cancel::{cancel_job, CancelDeps};
use domain::usecases::pipeline::{PipelineConfig, PipelineDeps};
use domain::{
    JobGoal, JobId, JobStatus, NewJob, NewProject, ProjectId, SandboxState, Tier, TierTable, UserId,
};
use fred::prelude::HashesInterface;
use infra_local::TemplateGenerator;
use infra_pg::PgJobRepository;
use infra_redis::{Keys, RedisLiveStore, RedisQueue};
use job_worker::{JsonPackageParser, WorkerDeps, WorkerSettings};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use support::{eventually, FixedProbe, Scripted, ScriptedRuntime, TestRedis};

const WAIT: Duration = Duration::from_secs(30);

struct Env {
    repo: Arc<PgJobRepository>,
    live: Arc<RedisLiveStore>,
    queue: Arc<RedisQueue>,
    runtime: Arc<ScriptedRuntime>,
    redis: TestRedis,
}

impl Env {
    async fn new(pool: PgPool) -> Self {
        support::init_logs();
        let redis = TestRedis::new().await;
        Self {
            repo: Arc::new(PgJobRepository::new(pool)),
            live: Arc::new(RedisLiveStore::new(
                redis.client.clone(),
                redis.prefix.clone(),
            )),
            queue: Arc::new(RedisQueue::new(
                redis.client.clone(),
                redis.prefix.clone(),
                TierTable::default(),
            )),
            runtime: Arc::new(ScriptedRuntime::default()),
            redis,
        }
    }

    fn deps(&self, probe_status: u16) -> WorkerDeps {
        WorkerDeps {
            pipeline: PipelineDeps {
                repo: self.repo.clone(),
                live: self.live.clone(),
                runtime: self.runtime.clone(),
                generator: Arc::new(TemplateGenerator),
                probe: Arc::new(FixedProbe(probe_status)),
                package_parser: Arc::new(JsonPackageParser),
                logs: Arc::new(domain::usecases::logs::MemoryLog::default()),
                log_archive: Arc::new(domain::usecases::logs::MemoryLog::default()),
            },
            queue: self.queue.clone(),
        }
    }

    /// Starts a worker; it runs until `shutdown` fires.
    fn start_worker(
        &self,
        id: &str,
        probe_status: u16,
        shutdown_grace: Duration,
        shutdown: &CancellationToken,
    ) -> JoinHandle<anyhow::Result<()>> {
        self.start_worker_with_ttl(
            id,
            probe_status,
            shutdown_grace,
            Duration::from_secs(3),
            shutdown,
        )
    }

    /// Starts a worker whose leases last `lease_ttl` (heartbeats every third of it).
    fn start_worker_with_ttl(
        &self,
        id: &str,
        probe_status: u16,
        shutdown_grace: Duration,
        lease_ttl: Duration,
        shutdown: &CancellationToken,
    ) -> JoinHandle<anyhow::Result<()>> {
        let settings = WorkerSettings {
            worker_id: id.to_owned(),
            concurrency: 2,
            lease_ttl,
            shutdown_grace,
            poll_interval: Duration::from_millis(20),
            pipeline: PipelineConfig {
                readiness_deadline: Duration::from_secs(60),
                readiness_interval: Duration::from_millis(50),
                ..PipelineConfig::default()
            },
        };
        tokio::spawn(job_worker::run(
            self.deps(probe_status),
            settings,
            shutdown.clone(),
        ))
    }

    /// What the api-server does on submit: the row, the live hash, the queue entry.
    async fn submit(&self, user: &str) -> JobId {
        let user = UserId::try_from(user).unwrap();
        let project = self
            .repo
            .create_project(&NewProject {
                id: ProjectId::new(),
                user_id: user.clone(),
                name: "todo".into(),
                description: String::new(),
                github_repo: None,
            })
            .await
            .unwrap();
        let job = self
            .repo
            .insert_job(&NewJob {
                id: JobId::new(),
                project_id: project.id,
                user_id: user.clone(),
                tier: Tier::Partner,
                goal: JobGoal::try_from("A todo app".to_owned()).unwrap(),
                status: JobStatus::Queued,
                status_message: Some("Queued...".into()),
            })
            .await
            .unwrap();
        self.live.save(&job).await.unwrap();
        self.queue
            .enqueue(&QueuedJob {
                job_id: job.id,
                user_id: user,
                project_id: project.id,
                tier: Tier::Partner,
            })
            .await
            .unwrap();
        job.id
    }

    async fn status(&self, id: JobId) -> JobStatus {
        self.repo.get_job(id).await.unwrap().unwrap().status
    }

    async fn redis_field(&self, id: JobId, field: &str) -> Option<String> {
        let key = Keys::new(self.redis.prefix.clone()).job(id);
        self.redis.client.hget(key, field).await.unwrap()
    }
}

async fn stop(shutdown: CancellationToken, workers: Vec<JoinHandle<anyhow::Result<()>>>) {
    shutdown.cancel();
    for worker in workers {
        tokio::time::timeout(WAIT, worker)
            .await
            .expect("the worker stops within the deadline")
            .expect("the worker task did not panic")
            .expect("the worker ends cleanly");
    }
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn two_workers_build_every_job_to_ready_with_its_sandbox_paused(pool: PgPool) {
    let env = Env::new(pool).await;
    let mut jobs = Vec::new();
    for n in 0..6 {
        jobs.push(env.submit(&format!("user_{}", n % 3)).await);
    }
    let shutdown = CancellationToken::new();
    let workers = vec![
        env.start_worker("worker-a", 200, WAIT, &shutdown),
        env.start_worker("worker-b", 200, WAIT, &shutdown),
    ];

    for &id in &jobs {
        eventually(WAIT, "every job READY and paused in Postgres", || async {
            let job = env.repo.get_job(id).await.unwrap().unwrap();
            (job.status == JobStatus::Ready && job.sandbox_paused()).then_some(())
        })
        .await;
    }

    for &id in &jobs {
        let job = env.repo.get_job(id).await.unwrap().unwrap();
        assert_eq!(job.sandbox_state, SandboxState::Paused);
        assert_eq!(job.build_version.as_deref(), Some("build_v0_1"));
        assert_eq!(job.attempts, 1);
        let preview = job
            .preview_url
            .clone()
            .expect("preview_url written with READY");
        let live = env.live.get(id).await.unwrap().expect("live hash");
        assert_eq!(live.status, JobStatus::Ready);
        assert!(live.sandbox_paused());
        assert_eq!(live.preview_url.as_deref(), Some(preview.as_str()));
        assert_eq!(
            env.redis_field(id, "sandbox_paused").await.as_deref(),
            Some("true")
        );
        assert!(!env.queue.contains(id).await.unwrap(), "lease acked");
    }
    // Each job built once, in its own sandbox, paused once.
    assert_eq!(env.runtime.count(Scripted::Paused), jobs.len());
    assert_eq!(env.runtime.pause_calls.load(Ordering::SeqCst), 6);
    let mut built: Vec<_> = env
        .runtime
        .sandboxes
        .lock()
        .unwrap()
        .values()
        .map(|(job, _)| *job)
        .collect();
    built.sort();
    let mut expected = jobs.clone();
    expected.sort();
    assert_eq!(built, expected);
    assert_eq!(env.queue.pending_len().await.unwrap(), 0);

    stop(shutdown, workers).await;
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn shutdown_requeues_a_build_that_outlives_the_grace_period(pool: PgPool) {
    let env = Env::new(pool).await;
    let id = env.submit("user_1").await;
    let shutdown = CancellationToken::new();
    // The preview never comes up, so the build waits in checks until it is stopped.
    let worker = env.start_worker("worker-a", 503, Duration::from_millis(200), &shutdown);
    eventually(WAIT, "the build reaches checks", || async {
        (env.status(id).await == JobStatus::Checks).then_some(())
    })
    .await;

    stop(shutdown, vec![worker]).await;

    let job = env.repo.get_job(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.sandbox_id, None);
    assert_eq!(env.runtime.count(Scripted::Killed), 1);
    assert_eq!(env.runtime.pause_calls.load(Ordering::SeqCst), 0);
    assert!(env.queue.contains(id).await.unwrap(), "back in the queue");
    assert_eq!(env.queue.pending_len().await.unwrap(), 1);
    assert_eq!(
        env.redis_field(id, "status").await.as_deref(),
        Some("queued")
    );
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn a_build_cancelled_from_the_api_stops_and_never_becomes_ready(pool: PgPool) {
    let env = Env::new(pool).await;
    let id = env.submit("user_1").await;
    let shutdown = CancellationToken::new();
    let worker = env.start_worker("worker-a", 503, WAIT, &shutdown);
    eventually(WAIT, "the build reaches checks", || async {
        (env.status(id).await == JobStatus::Checks).then_some(())
    })
    .await;

    let user = UserId::try_from("user_1").unwrap();
    let deps = CancelDeps {
        repo: env.repo.as_ref(),
        live: env.live.as_ref(),
        queue: env.queue.as_ref(),
        sandbox: env.runtime.as_ref(),
    };
    cancel_job(deps, &user, id).await.expect("cancelled");

    // The heartbeat (every second here) notices, the build stops and the lease is acked.
    eventually(WAIT, "the lease is acked", || async {
        (!env.queue.contains(id).await.unwrap()).then_some(())
    })
    .await;
    let job = env.repo.get_job(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.preview_url, None);
    assert_eq!(env.runtime.count(Scripted::Killed), 1);
    assert_eq!(env.runtime.pause_calls.load(Ordering::SeqCst), 0);

    stop(shutdown, vec![worker]).await;
}

/// With a 60 s lease the heartbeat looks at the row only every 20 s: the cancel must reach the build
/// through the job's event channel, within seconds.
#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn a_cancel_stops_the_build_within_seconds_not_at_the_next_heartbeat(pool: PgPool) {
    const PROMPTLY: Duration = Duration::from_secs(5);
    let env = Env::new(pool).await;
    let id = env.submit("user_1").await;
    let shutdown = CancellationToken::new();
    let worker =
        env.start_worker_with_ttl("worker-a", 503, WAIT, Duration::from_secs(60), &shutdown);
    eventually(WAIT, "the build reaches checks", || async {
        (env.status(id).await == JobStatus::Checks).then_some(())
    })
    .await;

    let user = UserId::try_from("user_1").unwrap();
    let deps = CancelDeps {
        repo: env.repo.as_ref(),
        live: env.live.as_ref(),
        queue: env.queue.as_ref(),
        sandbox: env.runtime.as_ref(),
    };
    cancel_job(deps, &user, id).await.expect("cancelled");

    // The build ended (its lease acked) long before the first heartbeat at 20 s.
    eventually(
        PROMPTLY,
        "the build stops and its lease is acked",
        || async { (!env.queue.contains(id).await.unwrap()).then_some(()) },
    )
    .await;
    let job = env.repo.get_job(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.preview_url, None);
    assert_eq!(env.runtime.count(Scripted::Killed), 1);
    assert_eq!(env.runtime.pause_calls.load(Ordering::SeqCst), 0);

    stop(shutdown, vec![worker]).await;
}

/// The real thing, minus E2B: the local runtime runs the template app with node, the HTTP probe waits for
/// it, and the sandbox is paused (SIGSTOP) after READY. Needs node (a prerequisite: it fails without).
#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn a_job_builds_for_real_on_the_local_runtime(pool: PgPool) {
    support::require_node();
    let env = Env::new(pool).await;
    let root = std::env::temp_dir().join(format!("slipway-worker-test-{}", uuid::Uuid::new_v4()));
    let runtime = infra_local::LocalRuntime::new(root.clone()).unwrap();
    let mut deps = env.deps(200);
    deps.pipeline.runtime = Arc::new(runtime.clone());
    deps.pipeline.probe = Arc::new(infra_e2b::HttpPreviewProbe::new().unwrap());
    let settings = WorkerSettings {
        worker_id: "worker-local".into(),
        concurrency: 1,
        lease_ttl: Duration::from_secs(30),
        shutdown_grace: WAIT,
        poll_interval: Duration::from_millis(20),
        pipeline: PipelineConfig {
            readiness_deadline: WAIT,
            readiness_interval: Duration::from_millis(100),
            ..PipelineConfig::default()
        },
    };
    let id = env.submit("user_1").await;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(job_worker::run(deps, settings, shutdown.clone()));

    let job = eventually(WAIT, "the job READY and paused", || async {
        let job = env.repo.get_job(id).await.unwrap().unwrap();
        assert_ne!(job.status, JobStatus::Failed, "{:?}", job.error_message);
        (job.status == JobStatus::Ready && job.sandbox_paused()).then_some(job)
    })
    .await;
    stop(shutdown, vec![worker]).await;

    let sandbox = job.sandbox_id.clone().unwrap();
    assert_eq!(
        runtime.state(&sandbox).await.unwrap(),
        ProviderState::Paused
    );
    assert!(job
        .preview_url
        .as_deref()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(
        env.redis_field(id, "sandbox_paused").await.as_deref(),
        Some("true")
    );
    runtime.shutdown_all().await;
    let _ = std::fs::remove_dir_all(&root);
}
