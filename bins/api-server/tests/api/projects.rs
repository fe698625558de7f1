//! `/api/projects`.

use serde_json::{json, Value};

use crate::helpers::{error_detail, spawn_app};
use crate::support::{make_ready, pause};

const ALICE: &str = "user_alice";

#[tokio::test]
async fn create_answers_201_with_the_dashboard_fields() {
    let app = spawn_app().await;
    let resp = app
        .post_json("/api/projects", ALICE, &json!({"name": "Todo"}))
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["name"], "Todo");
    uuid::Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
    assert!(body["created_at"].is_string());
    assert_contract_fields(&body);
    assert_eq!(body["description"], "");
    assert!(body["github_repo"].is_null());
    assert_eq!(body["status"], "active");
    assert!(body["latest_job_id"].is_null());
    assert_eq!(body["sandbox_paused"], Value::Bool(false));
}

/// The 13 fields of the front end's project answer, each with its type (no more, no fewer).
fn assert_contract_fields(body: &Value) {
    let object = body.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "description",
            "github_repo",
            "has_brief",
            "has_execution_plan",
            "has_pending_gate",
            "has_understanding_session",
            "id",
            "latest_job_id",
            "name",
            "sandbox_paused",
            "stage_number",
            "status",
        ]
    );
    for text in ["id", "name", "description", "created_at", "status"] {
        assert!(body[text].is_string(), "{text}: {body}");
    }
    for flag in [
        "has_pending_gate",
        "has_understanding_session",
        "has_brief",
        "has_execution_plan",
        "sandbox_paused",
    ] {
        assert!(body[flag].is_boolean(), "{flag}: {body}");
    }
    for nullable_text in ["github_repo", "latest_job_id"] {
        assert!(
            body[nullable_text].is_null() || body[nullable_text].is_string(),
            "{nullable_text}: {body}"
        );
    }
    assert!(body["stage_number"].is_null() || body["stage_number"].is_i64());
}

#[tokio::test]
async fn get_answers_the_same_fields_as_the_list_for_the_owner_only() {
    let app = spawn_app().await;
    let resp = app
        .post_json(
            "/api/projects",
            ALICE,
            &json!({"name": "Socks", "description": "a shop for socks", "github_repo": "alice/socks"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap();

    let resp = app.get(&format!("/api/projects/{id}"), ALICE).await;
    assert_eq!(resp.status(), 200);
    let read: Value = resp.json().await.unwrap();
    assert_contract_fields(&read);
    assert_eq!(read, created);
    assert_eq!(read["description"], "a shop for socks");
    assert_eq!(read["github_repo"], "alice/socks");

    let list: Value = app.get("/api/projects", ALICE).await.json().await.unwrap();
    assert_eq!(list[0], read);
    assert_contract_fields(&list[0]);

    let resp = app.get(&format!("/api/projects/{id}"), "user_bob").await;
    assert_eq!(
        error_detail(resp, 404).await,
        Value::from("Project not found")
    );
    let resp = app
        .get(&format!("/api/projects/{}", uuid::Uuid::new_v4()), ALICE)
        .await;
    assert_eq!(
        error_detail(resp, 404).await,
        Value::from("Project not found")
    );
}

#[tokio::test]
async fn get_shows_the_latest_ready_job_and_its_pause() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    let project = app.job_row(id).await.project_id;
    make_ready(&app, id, "https://3000-sbx.example").await;
    let path = format!("/api/projects/{project}");
    let read: Value = app.get(&path, ALICE).await.json().await.unwrap();
    assert_eq!(read["latest_job_id"], id.to_string());
    assert_eq!(read["sandbox_paused"], Value::Bool(false));
    pause(&app, id).await;
    let read: Value = app.get(&path, ALICE).await.json().await.unwrap();
    assert_eq!(read["sandbox_paused"], Value::Bool(true));
}

#[tokio::test]
async fn delete_hides_the_project_cancels_its_builds_and_refuses_new_ones() {
    let app = spawn_app().await;
    let queued = app.start_job(ALICE).await;
    let project = app.job_row(queued).await.project_id;
    let path = format!("/api/projects/{project}");

    let resp = app
        .client
        .delete(app.url(&path))
        .bearer_auth(crate::helpers::token("user_bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_detail(resp, 404).await,
        Value::from("Project not found")
    );

    for _ in 0..2 {
        let resp = app
            .client
            .delete(app.url(&path))
            .bearer_auth(crate::helpers::token(ALICE))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"status": "deleted"}));
    }

    let job = app.job_row(queued).await;
    assert_eq!(
        job.status,
        domain::JobStatus::Failed,
        "its queued build is cancelled"
    );
    let list: Value = app.get("/api/projects", ALICE).await.json().await.unwrap();
    assert_eq!(list, json!([]));
    let read: Value = app.get(&path, ALICE).await.json().await.unwrap();
    assert_eq!(read["status"], "deleted");

    let resp = app
        .post_json(
            "/api/generation/start",
            ALICE,
            &json!({"project_id": project.to_string(), "goal": "again"}),
        )
        .await;
    assert_eq!(
        error_detail(resp, 404).await,
        Value::from("Project not found")
    );
}

#[tokio::test]
async fn delete_kills_the_sandbox_of_a_ready_build() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    let project = app.job_row(id).await.project_id;
    make_ready(&app, id, "https://3000-sbx.example").await;
    let resp = app
        .client
        .delete(app.url(&format!("/api/projects/{project}")))
        .bearer_auth(crate::helpers::token(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let job = app.job_row(id).await;
    assert_eq!(job.sandbox_state, domain::SandboxState::Killed);
}

#[tokio::test]
async fn list_shows_only_the_callers_projects_with_their_latest_ready_job() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    app.create_project("user_bob").await;

    let list: Value = app.get("/api/projects", ALICE).await.json().await.unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0]["latest_job_id"].is_null());

    make_ready(&app, id, "https://3000-sbx.example").await;
    pause(&app, id).await;
    let list: Value = app.get("/api/projects", ALICE).await.json().await.unwrap();
    assert_eq!(list[0]["latest_job_id"], id.to_string());
    assert_eq!(list[0]["sandbox_paused"], Value::Bool(true));
}

#[tokio::test]
async fn a_blank_or_missing_name_is_422() {
    let app = spawn_app().await;
    for body in [
        json!({"name": "  "}),
        json!({}),
        json!({"name": "x".repeat(201)}),
    ] {
        let resp = app.post_json("/api/projects", ALICE, &body).await;
        let detail = error_detail(resp, 422).await;
        assert!(detail.as_str().unwrap().contains("name"), "{detail}");
    }
    let list: Value = app.get("/api/projects", ALICE).await.json().await.unwrap();
    assert_eq!(list, json!([]));
}
