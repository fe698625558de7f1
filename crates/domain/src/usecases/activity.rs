//! Preview activity: what keeps a resumed sandbox awake.
//!
//! The preview-check route, resume, and the status polls of a job whose sandbox is running note activity;
//! the reconciler's idle re-pause ([`crate::usecases::reconcile::Reconciler::repause_idle`]) pauses a
//! sandbox that has had none for `idle_pause_after`.

use std::sync::Arc;

use chrono::Utc;

use crate::ports::{JobRepository, RepoError};
use crate::{Job, JobId, SandboxState};

/// Notes preview activity on jobs.
#[derive(Clone)]
pub struct Activity {
    repo: Arc<dyn JobRepository>,
}

impl Activity {
    pub fn new(repo: Arc<dyn JobRepository>) -> Self {
        Self { repo }
    }

    /// Notes activity on `job_id` now (the preview-check route, resume).
    #[tracing::instrument(skip_all, fields(job_id = %job_id), err)]
    pub async fn touch(&self, job_id: JobId) -> Result<(), RepoError> {
        touch(self.repo.as_ref(), job_id).await
    }

    /// Notes activity only when the job's sandbox is running (a status poll of a paused job is not a
    /// reason to keep anything awake). Returns whether it touched.
    pub async fn touch_if_running(&self, job: &Job) -> Result<bool, RepoError> {
        if job.sandbox_state != SandboxState::Running {
            return Ok(false);
        }
        self.touch(job.id).await.map(|()| true)
    }
}

/// Notes activity on `job_id` now.
pub async fn touch(repo: &dyn JobRepository, job_id: JobId) -> Result<(), RepoError> {
    repo.touch_activity(job_id, Utc::now()).await
}

#[cfg(test)]
mod tests {
    use mockall::predicate::eq;

    use super::*;
    use crate::ports::repository::MockJobRepository;
    use crate::usecases::reconcile::fixtures::ready_job;

    #[tokio::test]
    async fn touch_if_running_touches_only_running_sandboxes() {
        let running = ready_job(SandboxState::Running);
        let paused = ready_job(SandboxState::Paused);
        let mut repo = MockJobRepository::new();
        repo.expect_touch_activity()
            .with(eq(running.id), mockall::predicate::always())
            .times(1)
            .returning(|_, _| Ok(()));
        let activity = Activity::new(Arc::new(repo));
        assert!(activity.touch_if_running(&running).await.unwrap());
        assert!(!activity.touch_if_running(&paused).await.unwrap());
    }
}
