//! Jobs the read scenarios need, written through the real adapters (infra-pg, then infra-redis) the way
//! the pipeline writes them, so the status route and the event stream see ordinary jobs.

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use domain::ports::{
    JobRepository, LiveJobStore, SandboxStateUpdate, TransitionOutcome, TransitionUpdate,
};
use domain::{
    Job, JobEvent, JobGoal, JobId, JobStatus, NewJob, NewProject, ProjectId, SandboxId,
    SandboxState, Tier, UserId,
};
use futures::{stream, StreamExt, TryStreamExt};

use super::instant_runtime::PREVIEW_URL;

/// How many seeding writes run at once.
const PARALLEL: usize = 16;

/// The stores the seeding writes to.
#[derive(Clone)]
pub struct Stores {
    pub repo: Arc<dyn JobRepository>,
    pub live: Arc<dyn LiveJobStore>,
}

/// Creates `count` projects of `user`.
pub async fn projects(
    stores: &Stores,
    user: &UserId,
    count: usize,
) -> anyhow::Result<Vec<ProjectId>> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let project = NewProject {
            id: ProjectId::new(),
            user_id: user.clone(),
            name: format!("bench project {n}"),
            description: String::new(),
            github_repo: None,
        };
        stores
            .repo
            .create_project(&project)
            .await
            .context("cannot create a bench project")?;
        ids.push(project.id);
    }
    Ok(ids)
}

/// Inserts a queued job in `project` and mirrors it to Redis (it is not enqueued: no worker takes it).
pub async fn queued_job(stores: &Stores, user: &UserId, project: ProjectId) -> anyhow::Result<Job> {
    let new = NewJob {
        id: JobId::new(),
        project_id: project,
        user_id: user.clone(),
        tier: Tier::Bootstrapper,
        goal: JobGoal::try_from("a benchmark app".to_owned())
            .context("the bench goal is invalid")?,
        status: JobStatus::Queued,
        status_message: None,
    };
    let job = stores
        .repo
        .insert_job(&new)
        .await
        .context("cannot insert a bench job")?;
    stores
        .live
        .save(&job)
        .await
        .context("cannot save a bench job's hash")?;
    Ok(job)
}

/// `count` jobs spread over `projects`, each taken through every stage to READY and saved to Redis.
pub async fn ready_jobs(
    stores: &Stores,
    user: &UserId,
    projects: &[ProjectId],
    count: usize,
) -> anyhow::Result<Vec<JobId>> {
    stream::iter(0..count)
        .map(|n| {
            let project = projects[n % projects.len()];
            async move {
                let job = queued_job(stores, user, project).await?;
                build_to_ready(stores, job, None).await.map(|job| job.id)
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await
}

/// Takes a queued job through every stage to READY and saves it to Redis. With `sandbox` (its id and
/// preview URL), written as the pipeline writes a build: the sandbox recorded running with the move to
/// code, its preview with READY, the sandbox still running; without, the instant preview and no sandbox.
pub async fn build_to_ready(
    stores: &Stores,
    mut job: Job,
    sandbox: Option<(&SandboxId, &str)>,
) -> anyhow::Result<Job> {
    let stages = [
        JobStatus::Starting,
        JobStatus::Scaffold,
        JobStatus::Code,
        JobStatus::Deps,
        JobStatus::Checks,
        JobStatus::Ready,
    ];
    for to in stages {
        let ready = to == JobStatus::Ready;
        let records_sandbox = sandbox.is_some() && (to == JobStatus::Code || ready);
        let update = TransitionUpdate {
            preview_url: ready.then(|| sandbox.map_or(PREVIEW_URL, |(_, url)| url).to_owned()),
            sandbox_id: (to == JobStatus::Code)
                .then(|| sandbox.map(|(id, _)| id.clone()))
                .flatten(),
            sandbox_state: records_sandbox.then_some(SandboxState::Running),
            assign_build_version: ready,
            ..TransitionUpdate::default()
        };
        job = match stores.repo.transition(job.id, job.status, to, update).await {
            Ok(TransitionOutcome::Applied(job)) => *job,
            Ok(TransitionOutcome::Conflict { current }) => {
                anyhow::bail!(
                    "bench job {} moved underneath the seeding (now {current:?})",
                    job.id
                )
            }
            Err(err) => return Err(err).context("cannot move a bench job"),
        };
    }
    stores
        .live
        .save(&job)
        .await
        .context("cannot save a bench job's hash")?;
    Ok(job)
}

/// Moves `job`'s sandbox state to `state` with the repository's compare-and-set on the version `job`
/// carries (as the reconciler and resume do), then mirrors the row to Redis; answers the row as written.
pub async fn set_sandbox_state(
    stores: &Stores,
    job: &Job,
    state: SandboxState,
) -> anyhow::Result<Job> {
    let written = stores
        .repo
        .set_sandbox_state(
            job.id,
            SandboxStateUpdate {
                expected_version: job.sandbox_state_version,
                state,
                preview_url: None,
                expires_at: None,
            },
        )
        .await
        .context("cannot write a bench job's sandbox state")?
        .with_context(|| {
            format!(
                "bench job {} moved underneath the bench (version {} is gone)",
                job.id, job.sandbox_state_version
            )
        })?;
    stores
        .live
        .save(&written)
        .await
        .context("cannot save a bench job's hash")?;
    Ok(written)
}

/// Moves a queued job to starting in Postgres, then writes its hash and publishes the event stamped now.
pub async fn publish_starting(stores: &Stores, id: JobId) -> anyhow::Result<()> {
    let job = match stores
        .repo
        .transition(
            id,
            JobStatus::Queued,
            JobStatus::Starting,
            TransitionUpdate::default(),
        )
        .await
        .context("cannot move a bench job")?
    {
        TransitionOutcome::Applied(job) => *job,
        TransitionOutcome::Conflict { current } => {
            anyhow::bail!("bench job {id} is not queued (now {current:?})")
        }
    };
    let event = JobEvent {
        job_id: id,
        status: job.status,
        message: String::new(),
        preview_url: None,
        timestamp: Utc::now(),
    };
    stores
        .live
        .save_and_publish(&job, &event)
        .await
        .context("cannot publish a bench event")
}
