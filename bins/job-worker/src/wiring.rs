//! Builds the adapters from the configuration. The only place that names concrete infra types.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use domain::ports::{CodeGenerator, JobQueue, StepLock};
use domain::usecases::pipeline::PipelineDeps;
use domain::usecases::reconcile::{ReconcileDeps, Reconciler};
use infra_local::{CommandGenerator, TemplateGenerator};
use infra_pg::{PgJobRepository, PgLogArchive};
use infra_redis::{LiveLogLimits, RedisLiveLog, RedisLiveStore, RedisQueue, RedisStepLock};

use crate::config::{Config, GeneratorKind};
use crate::stage_timer::StageTimer;
use crate::worker::WorkerDeps;
use bin_support::JsonPackageParser;

/// Jobs whose last live write the worker remembers, so that a build's later writes send only what changed:
/// a few times the builds a worker runs at once, at about 2 KB each.
pub const REMEMBERED_JOBS: usize = 1024;

/// Everything `main` runs: the build loop's adapters and the reconciler with its step lock.
pub struct Wired {
    pub worker: WorkerDeps,
    pub reconciler: Arc<Reconciler>,
    pub lock: Arc<dyn StepLock>,
}

/// Connects to Postgres and Redis and builds the runtime, generator and probe the configuration names.
pub async fn build(config: &Config) -> anyhow::Result<WorkerDeps> {
    Ok(build_all(config).await?.worker)
}

/// [`build`], plus the reconciler over the same adapters and a Redis step lock.
pub async fn build_all(config: &Config) -> anyhow::Result<Wired> {
    let pool = infra_pg::connect(config.database_url.expose())
        .await
        .context("could not connect to postgres (DATABASE_URL)")?;
    let redis = infra_redis::connect(config.redis_url.expose())
        .await
        .context("could not connect to redis (REDIS_URL)")?;
    let prefix = config.redis_prefix.clone();
    let log_store = RedisLiveStore::new(redis.clone(), prefix.clone());
    let (runtime, probe) = config.runtime.build_with_probe()?;
    let pipeline = PipelineDeps {
        logs: Arc::new(RedisLiveLog::new(log_store, LiveLogLimits::default())),
        log_archive: Arc::new(PgLogArchive::new(pool.clone())),
        repo: Arc::new(PgJobRepository::new(pool)),
        live: Arc::new(StageTimer::new(Arc::new(
            RedisLiveStore::new(redis.clone(), prefix.clone()).remembering_writes(REMEMBERED_JOBS),
        ))),
        runtime,
        generator: generator(config)?,
        probe: Arc::new(probe),
        package_parser: Arc::new(JsonPackageParser),
    };
    // The slot limits must be the api-server's: both read the same tier settings.
    let queue: Arc<dyn JobQueue> = Arc::new(RedisQueue::new(
        redis.clone(),
        prefix.clone(),
        config.limits.tiers(),
    ));
    let reconciler = Reconciler::new(
        ReconcileDeps {
            repo: pipeline.repo.clone(),
            live: pipeline.live.clone(),
            queue: queue.clone(),
            runtime: pipeline.runtime.clone(),
        },
        config.reconcile_config(),
    );
    Ok(Wired {
        worker: WorkerDeps { pipeline, queue },
        reconciler: Arc::new(reconciler),
        lock: Arc::new(RedisStepLock::new(redis, prefix)),
    })
}

fn generator(config: &Config) -> anyhow::Result<Arc<dyn CodeGenerator>> {
    match config.generator {
        GeneratorKind::Template => Ok(Arc::new(TemplateGenerator)),
        GeneratorKind::Command => {
            let line = config
                .generator_command
                .as_deref()
                .context("GENERATOR_COMMAND is required with GENERATOR=command")?;
            let mut words = line.split_whitespace().map(str::to_owned);
            let program = words.next().context("GENERATOR_COMMAND is empty")?;
            Ok(Arc::new(CommandGenerator::new(
                program,
                words.collect(),
                Duration::from_secs(config.generator_timeout_secs),
            )))
        }
    }
}
