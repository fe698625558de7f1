//! Bad input: each a 4xx `{detail, debug_id}` naming the problem, and nothing written anywhere.

use serde_json::{json, Value};

use crate::helpers::{error_detail, spawn_app, token, TestApp};

const ALICE: &str = "user_alice";

async fn post_raw(app: &TestApp, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token(ALICE))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn assert_nothing_written(app: &TestApp) {
    assert_eq!(app.job_count().await, 0);
    assert_eq!(app.state.queue.pending_len().await.unwrap(), 0);
    assert_eq!(app.redis_keys().await, Vec::<String>::new());
}

#[tokio::test]
async fn each_bad_start_body_is_refused_naming_the_problem() {
    let app = spawn_app().await;
    let project = app.create_project(ALICE).await.to_string();
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "Malformed JSON"),
        (json!({"project_id": project}).to_string(), 422, "goal"),
        (json!({"goal": "x"}).to_string(), 422, "project_id"),
        (
            json!({"project_id": project, "goal": ""}).to_string(),
            422,
            "goal",
        ),
        (
            json!({"project_id": project, "goal": "   "}).to_string(),
            422,
            "goal",
        ),
        (
            json!({"project_id": project, "goal": 5}).to_string(),
            422,
            "goal",
        ),
        (
            json!({"project_id": 7, "goal": "x"}).to_string(),
            422,
            "project_id",
        ),
        (
            json!({"project_id": "", "goal": "x"}).to_string(),
            422,
            "project_id",
        ),
        (
            json!({"project_id": "nope", "goal": "x"}).to_string(),
            422,
            "project_id",
        ),
        (
            json!({"project_id": project, "goal": "x", "admin": true}).to_string(),
            422,
            "unknown field",
        ),
        (
            json!({"project_id": project, "goal": "x".repeat(10_001)}).to_string(),
            422,
            "goal",
        ),
        // Postgres text cannot store NUL: refused before anything is counted or written.
        (
            json!({"project_id": project, "goal": "a todo app\u{0}"}).to_string(),
            422,
            "goal",
        ),
    ];
    for (body, status, needle) in cases {
        for path in ["/api/generation/start", "/api/jobs"] {
            let resp = post_raw(&app, path, body.clone()).await;
            let detail = error_detail(resp, status).await;
            let detail = detail.as_str().unwrap().to_owned();
            assert!(detail.contains(needle), "{path} {body:.80}: {detail}");
        }
    }
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn a_project_name_with_nul_is_422_naming_name() {
    let app = spawn_app().await;
    let resp = post_raw(
        &app,
        "/api/projects",
        json!({"name": "app\u{0}"}).to_string(),
    )
    .await;
    let detail = error_detail(resp, 422).await;
    assert!(detail.as_str().unwrap().contains("name"), "{detail}");
    let projects: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(projects, 0);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let app = spawn_app().await;
    let project = app.create_project(ALICE).await.to_string();
    let body = json!({"project_id": project, "goal": "x".repeat(1024 * 1024 + 10)}).to_string();
    let resp = post_raw(&app, "/api/generation/start", body).await;
    error_detail(resp, 413).await;
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn a_body_without_json_content_type_is_refused() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/api/generation/start"))
        .bearer_auth(token(ALICE))
        .body("{}")
        .send()
        .await
        .unwrap();
    error_detail(resp, 415).await;
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn an_id_that_is_not_a_uuid_is_404_like_any_unknown_id() {
    let app = spawn_app().await;
    for (method, path, detail) in [
        ("GET", "/api/generation/not-a-uuid/status", "Job not found"),
        ("POST", "/api/generation/not-a-uuid/cancel", "Job not found"),
        (
            "GET",
            "/api/generation/not-a-uuid/preview-check",
            "Job not found",
        ),
        ("POST", "/api/generation/not-a-uuid/resume", "Job not found"),
        ("GET", "/api/generation/not-a-uuid/events", "Job not found"),
        ("GET", "/api/jobs/not-a-uuid", "Job not found"),
        ("GET", "/api/jobs/not-a-uuid/logs", "Job not found"),
        ("GET", "/api/jobs/not-a-uuid/logs/stream", "Job not found"),
        ("GET", "/api/projects/not-a-uuid", "Project not found"),
        ("DELETE", "/api/projects/not-a-uuid", "Project not found"),
    ] {
        let req = match method {
            "GET" => app.client.get(app.url(path)),
            "DELETE" => app.client.delete(app.url(path)),
            _ => app.client.post(app.url(path)),
        };
        let resp = req.bearer_auth(token(ALICE)).send().await.unwrap();
        assert_eq!(
            error_detail(resp, 404).await,
            Value::from(detail),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let resp = app.get("/api/nope", ALICE).await;
    assert_eq!(error_detail(resp, 404).await, Value::from("Not found"));
    let resp = app
        .client
        .delete(app.url("/api/projects"))
        .send()
        .await
        .unwrap();
    error_detail(resp, 405).await;
}
