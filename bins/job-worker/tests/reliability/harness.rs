//! The reliability harness: a fresh Postgres database (migrated, dropped on drop), a random Redis prefix
//! (its keys deleted on drop), a temporary LOCAL_SANDBOX_ROOT (its sandboxes killed and the directory
//! removed on drop) and, where faults are needed, the E2B-compatible server over that root with the
//! production E2B client pointed at it. Everything is removed also when the test panicked.

use std::sync::Arc;
use std::time::Duration;

use domain::ports::{
    CodeGenerator, JobQueue, JobRepository, LiveJobStore, ProviderState, QueuedJob, SandboxError,
    SandboxRuntime,
};
use domain::usecases::pipeline::{run_build, BuildOutcome, PipelineConfig, PipelineDeps};
use domain::usecases::reconcile::{ReconcileConfig, ReconcileDeps, Reconciler};
use domain::usecases::resume::{ResumeConfig, ResumeDeps, ResumeService};
use domain::{
    Job, JobGoal, JobId, JobStatus, NewJob, NewProject, PausePolicy, ProjectId, SandboxId, Tier,
    TierTable, UserId,
};
use fred::prelude::{HashesInterface, KeysInterface};
use futures::TryStreamExt;
use infra_e2b::HttpPreviewProbe;
use infra_local::TemplateGenerator;
use infra_pg::PgJobRepository;
use infra_redis::{Keys, RedisLiveStore, RedisQueue};
use job_worker::{JsonPackageParser, WorkerDeps, WorkerSettings};
use tokio_util::sync::CancellationToken;

use crate::fakes::CountingRuntime;
use crate::services::{E2bServer, Sandboxes, TestDb};
use crate::support::{self, TestRedis};

/// The longest any one wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(25);

/// Which runtime the pipeline, the reconciler and resume use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `LocalRuntime` directly.
    Local,
    /// `E2bRuntime` against the E2B-compatible server over the `LocalRuntime` (fault injection).
    E2b,
}

/// One test's world. Field order is drop order: the server stops using the sandboxes, the sandboxes are
/// killed, then the Redis keys and the database go.
pub struct Harness {
    pub e2b: Option<E2bServer>,
    pub runtime: Arc<CountingRuntime>,
    pub repo: Arc<PgJobRepository>,
    pub live: Arc<RedisLiveStore>,
    pub queue: Arc<RedisQueue>,
    /// Held for its drop.
    #[allow(dead_code)]
    sandboxes: Sandboxes,
    pub redis: TestRedis,
    /// Held for its drop.
    #[allow(dead_code)]
    db: TestDb,
}

impl Harness {
    pub async fn new(provider: Provider) -> Self {
        support::init_logs();
        let db = TestDb::new().await;
        let redis = TestRedis::new().await;
        let sandboxes = Sandboxes::new();
        let (e2b, inner): (_, Arc<dyn SandboxRuntime>) = match provider {
            Provider::Local => (None, Arc::new(sandboxes.local.clone())),
            Provider::E2b => {
                let server = E2bServer::start(&sandboxes.local).await;
                let client = Arc::new(server.client());
                (Some(server), client)
            }
        };
        Self {
            e2b,
            runtime: Arc::new(CountingRuntime::new(inner)),
            repo: Arc::new(PgJobRepository::new(db.pool.clone())),
            live: Arc::new(RedisLiveStore::new(
                redis.client.clone(),
                redis.prefix.clone(),
            )),
            queue: Arc::new(RedisQueue::new(
                redis.client.clone(),
                redis.prefix.clone(),
                TierTable::default(),
            )),
            sandboxes,
            redis,
            db,
        }
    }

    /// The fault-injecting server (E2B harnesses only).
    pub fn server(&self) -> &E2bServer {
        self.e2b.as_ref().expect("an E2B harness")
    }

    pub fn pipeline(&self, generator: Arc<dyn CodeGenerator>) -> PipelineDeps {
        PipelineDeps {
            repo: self.repo.clone(),
            live: self.live.clone(),
            runtime: self.runtime.clone(),
            generator,
            probe: Arc::new(HttpPreviewProbe::new().expect("probe")),
            package_parser: Arc::new(JsonPackageParser),
            logs: Arc::new(domain::usecases::logs::MemoryLog::default()),
            log_archive: Arc::new(domain::usecases::logs::MemoryLog::default()),
        }
    }

    pub fn pipeline_config(policy: PausePolicy) -> PipelineConfig {
        PipelineConfig {
            pause_policy: policy,
            readiness_deadline: WAIT,
            readiness_interval: Duration::from_millis(50),
            ..PipelineConfig::default()
        }
    }

    pub fn reconciler(&self, config: ReconcileConfig) -> Reconciler {
        Reconciler::new(
            ReconcileDeps {
                repo: self.repo.clone(),
                live: self.live.clone(),
                queue: self.queue.clone(),
                runtime: self.runtime.clone(),
            },
            config,
        )
    }

    pub fn resume_service(&self) -> ResumeService {
        ResumeService::new(
            ResumeDeps {
                repo: self.repo.clone(),
                live: self.live.clone(),
                runtime: self.runtime.clone(),
                probe: Arc::new(HttpPreviewProbe::new().expect("probe")),
                package_json: Arc::new(JsonPackageParser),
            },
            ResumeConfig {
                retry_backoff: Duration::from_millis(200),
                poll_interval: Duration::from_millis(50),
                probe_interval: Duration::from_millis(100),
                ..ResumeConfig::default()
            },
        )
    }

    /// Inserts a queued job (row and live hash) on a new project of `user`, as submit does.
    pub async fn insert_queued(&self, user: &str) -> Job {
        let user = UserId::try_from(user).expect("user id");
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
            .expect("project");
        let job = self
            .repo
            .insert_job(&NewJob {
                id: JobId::new(),
                project_id: project.id,
                user_id: user,
                tier: Tier::Partner,
                goal: JobGoal::try_from("A todo app".to_owned()).expect("goal"),
                status: JobStatus::Queued,
                status_message: Some("Queued...".into()),
            })
            .await
            .expect("job row");
        self.live.save(&job).await.expect("live hash");
        job
    }

    /// What the api-server does on submit: the row, the live hash, the queue entry.
    pub async fn submit(&self, user: &str) -> JobId {
        let job = self.insert_queued(user).await;
        self.queue
            .enqueue(&QueuedJob {
                job_id: job.id,
                user_id: job.user_id.clone(),
                project_id: job.project_id,
                tier: job.tier,
            })
            .await
            .expect("enqueued");
        job.id
    }

    /// Builds a new job to READY with the template app (node), as a worker would, under `policy`.
    pub async fn build_ready(&self, user: &str, policy: PausePolicy) -> (Job, BuildOutcome) {
        let job = self.insert_queued(user).await;
        let outcome = tokio::time::timeout(
            WAIT,
            run_build(
                &self.pipeline(Arc::new(TemplateGenerator)),
                &Self::pipeline_config(policy),
                job.id,
                CancellationToken::new(),
            ),
        )
        .await
        .expect("the build ends within the deadline");
        let job = self.job(job.id).await;
        assert_eq!(
            job.status,
            JobStatus::Ready,
            "{outcome:?}: {:?}",
            job.error_message
        );
        (job, outcome)
    }

    /// A worker over this harness (template generator, concurrency 2); it runs until `shutdown` fires.
    pub fn start_worker(
        &self,
        id: &str,
        lease_ttl: Duration,
        shutdown: &CancellationToken,
    ) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        self.start_worker_with(id, Arc::new(TemplateGenerator), lease_ttl, shutdown)
    }

    /// [`Harness::start_worker`] with its own generator.
    pub fn start_worker_with(
        &self,
        id: &str,
        generator: Arc<dyn CodeGenerator>,
        lease_ttl: Duration,
        shutdown: &CancellationToken,
    ) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let deps = WorkerDeps {
            pipeline: self.pipeline(generator),
            queue: self.queue.clone(),
        };
        let settings = WorkerSettings {
            worker_id: id.to_owned(),
            concurrency: 2,
            lease_ttl,
            shutdown_grace: WAIT,
            poll_interval: Duration::from_millis(20),
            pipeline: Self::pipeline_config(PausePolicy::Immediate),
        };
        tokio::spawn(job_worker::run(deps, settings, shutdown.clone()))
    }

    pub async fn job(&self, id: JobId) -> Job {
        self.repo
            .get_job(id)
            .await
            .expect("repo")
            .expect("job row exists")
    }

    /// One field of the job's live hash, read straight from Redis.
    pub async fn redis_field(&self, id: JobId, field: &str) -> Option<String> {
        let key = Keys::new(self.redis.prefix.clone()).job(id);
        self.redis
            .client
            .hget(key, field)
            .await
            .expect("redis hget")
    }

    /// Every key under this test's prefix.
    pub async fn redis_keys(&self) -> Vec<String> {
        self.redis
            .client
            .scan_buffered(format!("{}:*", self.redis.prefix), Some(500), None)
            .map_ok(|k| k.as_str().unwrap_or_default().to_owned())
            .try_collect()
            .await
            .expect("scan")
    }

    /// "Redis loss" for this test only: deletes every key under its prefix (never FLUSHALL: other tests
    /// share the server).
    pub async fn lose_redis(&self) {
        for key in self.redis_keys().await {
            let _: () = self.redis.client.del(key).await.expect("del");
        }
        assert!(self.redis_keys().await.is_empty(), "every key deleted");
    }

    /// The provider's view of a sandbox, through the runtime under test.
    pub async fn provider_state(&self, id: &SandboxId) -> Result<ProviderState, SandboxError> {
        self.runtime.state(id).await
    }
}

/// Stops workers, failing the test when one does not end cleanly within the deadline.
pub async fn stop_workers(
    shutdown: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) {
    shutdown.cancel();
    for worker in workers {
        tokio::time::timeout(WAIT, worker)
            .await
            .expect("the worker stops within the deadline")
            .expect("the worker task did not panic")
            .expect("the worker ends cleanly");
    }
}
