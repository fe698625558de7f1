use domain::ports::{JobRepository, TransitionOutcome, TransitionUpdate};
use domain::{
    Job, JobGoal, JobId, JobStatus, NewJob, NewProject, Project, ProjectId, SandboxState, Tier,
    UserId,
};
use infra_pg::PgJobRepository;
use sqlx::PgPool;

pub fn repo(pool: PgPool) -> PgJobRepository {
    PgJobRepository::new(pool)
}

pub fn user(name: &str) -> UserId {
    UserId::try_from(name).unwrap()
}

pub async fn project(repo: &PgJobRepository, owner: &UserId) -> Project {
    repo.create_project(&NewProject {
        id: ProjectId::new(),
        user_id: owner.clone(),
        name: "todo app".into(),
        description: String::new(),
        github_repo: None,
    })
    .await
    .unwrap()
}

/// The build version the project's next READY job would get, as submit predicts it.
pub async fn predicted(repo: &PgJobRepository, project: &Project) -> String {
    repo.get_project_for_user(project.id, &project.user_id)
        .await
        .unwrap()
        .expect("the project exists")
        .next_build_version()
        .label()
}

pub fn new_job(project: ProjectId, owner: &UserId, status: JobStatus) -> NewJob {
    NewJob {
        id: JobId::new(),
        project_id: project,
        user_id: owner.clone(),
        tier: Tier::Partner,
        goal: JobGoal::try_from("a todo app".to_owned()).unwrap(),
        status,
        status_message: Some("Queued...".into()),
    }
}

pub fn applied(outcome: TransitionOutcome) -> Job {
    match outcome {
        TransitionOutcome::Applied(job) => *job,
        other => panic!("expected Applied, got {other:?}"),
    }
}

/// The building path from the queue up to checks.
const PATH: [JobStatus; 6] = [
    JobStatus::Queued,
    JobStatus::Starting,
    JobStatus::Scaffold,
    JobStatus::Code,
    JobStatus::Deps,
    JobStatus::Checks,
];

/// Inserts a queued job and walks it along the pipeline to `target` (a building status or checks).
pub async fn job_at(
    repo: &PgJobRepository,
    project: ProjectId,
    owner: &UserId,
    target: JobStatus,
) -> Job {
    let mut job = repo
        .insert_job(&new_job(project, owner, JobStatus::Queued))
        .await
        .unwrap();
    for pair in PATH.windows(2) {
        if job.status == target {
            break;
        }
        job = applied(
            repo.transition(job.id, pair[0], pair[1], TransitionUpdate::default())
                .await
                .unwrap(),
        );
    }
    assert_eq!(job.status, target, "job_at only walks queued..checks");
    job
}

/// A job moved to READY with a build version and a running sandbox.
pub async fn ready_job(repo: &PgJobRepository, project: ProjectId, owner: &UserId) -> Job {
    let job = job_at(repo, project, owner, JobStatus::Checks).await;
    applied(
        repo.transition(
            job.id,
            JobStatus::Checks,
            JobStatus::Ready,
            TransitionUpdate {
                assign_build_version: true,
                sandbox_state: Some(SandboxState::Running),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    )
}
