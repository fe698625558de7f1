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
    assert!(body["latest_job_id"].is_null());
    assert_eq!(body["sandbox_paused"], Value::Bool(false));
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
