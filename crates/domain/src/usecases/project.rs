//! Deleting a project: the soft delete, then every build of it stopped and every sandbox of it killed.

use crate::ports::RepoError;
use crate::usecases::cancel::{cancel_job, kill_sandbox, CancelDeps, CancelError};
use crate::{Project, ProjectId, UserId};

/// Soft-deletes the project (`None` when `user` owns no such project), then cancels its unfinished builds
/// (their sandboxes killed with them) and kills the live sandboxes of its finished ones. The delete is
/// recorded first, so no build can be submitted for the project meanwhile; a build or sandbox that cannot
/// be stopped now is logged (a failed job's live sandbox is the reconciler's to kill).
#[tracing::instrument(skip_all, fields(project_id = %id, user_id = %user), err)]
pub async fn delete_project(
    deps: CancelDeps<'_>,
    user: &UserId,
    id: ProjectId,
) -> Result<Option<Project>, RepoError> {
    let Some(project) = deps.repo.delete_project(id, user).await? else {
        return Ok(None);
    };
    for mut job in deps.repo.list_jobs_for_project(id).await? {
        if &job.user_id != user {
            continue;
        }
        if !job.status.is_terminal() {
            match cancel_job(deps, user, job.id).await {
                Ok(_) | Err(CancelError::NotFound) => continue,
                // It finished meanwhile: its sandbox, if live, is killed below.
                Err(CancelError::Terminal(_)) => match deps.repo.get_job(job.id).await? {
                    Some(now) => job = now,
                    None => continue,
                },
                Err(error) => {
                    tracing::warn!(job_id = %job.id, error = %error, "build of a deleted project not cancelled");
                    continue;
                }
            }
        }
        if job.sandbox_state.is_live() {
            kill_sandbox(deps, job).await;
        }
    }
    Ok(Some(project))
}
