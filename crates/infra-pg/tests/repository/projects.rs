//! Projects and the dashboard listing.

use domain::ports::{JobRepository, RepoError, SandboxStateUpdate};
use domain::{JobId, NewProject, Project, ProjectId, ProjectStatus, SandboxState};
use sqlx::PgPool;

use crate::helpers::{project, ready_job, repo, user};

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn create_then_get_for_owner_only(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let new = NewProject {
        id: ProjectId::new(),
        user_id: alice.clone(),
        name: "shop".into(),
        description: String::new(),
        github_repo: None,
    };
    let created = repo.create_project(&new).await.unwrap();
    assert_eq!(created.id, new.id);
    assert_eq!(created.user_id, alice);
    assert_eq!(created.name, "shop");

    assert_eq!(
        repo.get_project_for_user(new.id, &alice).await.unwrap(),
        Some(created)
    );
    assert_eq!(
        repo.get_project_for_user(new.id, &user("mallory"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.get_project_for_user(ProjectId::new(), &alice)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.create_project(&new).await,
        Err(RepoError::AlreadyExists)
    );
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn list_projects_shows_the_latest_ready_job_and_its_pause(pool: PgPool) {
    let repo = repo(pool.clone());
    let alice = user("alice");
    let bob = user("bob");
    let empty = project(&repo, &alice).await;
    let built = project(&repo, &alice).await;
    let bobs = project(&repo, &bob).await;

    let older = ready_job(&repo, built.id, &alice).await;
    let latest = ready_job(&repo, built.id, &alice).await;
    assert_ne!(older.id, latest.id);
    let paused = repo
        .set_sandbox_state(
            latest.id,
            SandboxStateUpdate {
                expected_version: latest.sandbox_state_version,
                state: SandboxState::Paused,
                preview_url: None,
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(paused.sandbox_paused());

    // Bob's READY job filed against Alice's project (the Python service allowed such rows, and insert_job
    // now refuses them, so it is written directly), completed after Alice's: it must not surface.
    let intruder = JobId::new();
    sqlx::query(
        "INSERT INTO jobs (id, project_id, user_id, tier, goal, status, completed_at) \
         VALUES ($1, $2, 'bob', 'partner', 'x', 'ready', now() + interval '1 hour')",
    )
    .bind(intruder.as_uuid())
    .bind(built.id.as_uuid())
    .execute(&pool)
    .await
    .unwrap();
    ready_job(&repo, bobs.id, &bob).await;

    let listed = repo.list_projects(&alice).await.unwrap();
    let ids: Vec<ProjectId> = listed.iter().map(|s| s.project.id).collect();
    assert_eq!(ids, vec![built.id, empty.id], "alice's own, newest first");

    // Two READY builds of Alice's own (the intruder's row, written directly, took no version).
    assert_eq!(
        listed[0].project,
        Project {
            last_build_version: 2,
            ..built.clone()
        }
    );
    assert_eq!(listed[0].latest_job_id, Some(latest.id));
    assert!(listed[0].sandbox_paused());
    assert_eq!(listed[1].latest_job_id, None);
    assert!(!listed[1].sandbox_paused());

    // Bob sees only his own project.
    let bobs_list = repo.list_projects(&bob).await.unwrap();
    assert_eq!(bobs_list.len(), 1);
    assert_eq!(bobs_list[0].project.id, bobs.id);
    assert!(bobs_list[0].latest_job_id.is_some());
    assert_ne!(bobs_list[0].latest_job_id, Some(intruder));

    assert!(repo
        .list_projects(&user("nobody"))
        .await
        .unwrap()
        .is_empty());
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn a_project_keeps_its_description_and_repo_and_a_delete_hides_it_from_the_list(
    pool: PgPool,
) {
    let repo = repo(pool);
    let alice = user("alice");
    let new = NewProject {
        description: "a shop for socks".into(),
        github_repo: Some("alice/socks".into()),
        ..NewProject::named(alice.clone(), "socks")
    };
    let created = repo.create_project(&new).await.unwrap();
    assert_eq!(created.description, "a shop for socks");
    assert_eq!(created.github_repo.as_deref(), Some("alice/socks"));
    assert_eq!(created.status, ProjectStatus::Active);
    let kept = project(&repo, &alice).await;

    let summary = repo
        .get_project_summary(new.id, &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.project, created);
    assert_eq!(summary.latest_job_id, None);
    assert!(repo
        .get_project_summary(new.id, &user("mallory"))
        .await
        .unwrap()
        .is_none());

    assert!(repo
        .delete_project(new.id, &user("mallory"))
        .await
        .unwrap()
        .is_none());
    let deleted = repo.delete_project(new.id, &alice).await.unwrap().unwrap();
    assert_eq!(deleted.status, ProjectStatus::Deleted);
    // Again: harmless, same answer.
    let again = repo.delete_project(new.id, &alice).await.unwrap().unwrap();
    assert_eq!(again.status, ProjectStatus::Deleted);

    let listed: Vec<ProjectId> = repo
        .list_projects(&alice)
        .await
        .unwrap()
        .iter()
        .map(|s| s.project.id)
        .collect();
    assert_eq!(listed, vec![kept.id]);
    let read = repo
        .get_project_summary(new.id, &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.project.status, ProjectStatus::Deleted);
}
