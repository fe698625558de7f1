//! `/api/jobs`: submission with usage counters.

use serde_json::{json, Value};

use crate::helpers::{error_detail, spawn_app, token_with};

const ALICE: &str = "user_alice";

#[tokio::test]
async fn submit_answers_201_with_usage_counters() {
    let app = spawn_app().await;
    let project = app.create_project(ALICE).await;
    let resp = app
        .post_json(
            "/api/jobs",
            ALICE,
            &json!({"project_id": project.to_string(), "goal": "a blog"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(body["position"], 1);
    assert_eq!(body["message"], "Queued at position 1");
    assert_eq!(body["usage"]["jobs_used"], 1);
    assert_eq!(body["usage"]["jobs_remaining"], 4);
    let resets = body["usage"]["daily_limit_resets_at"].as_str().unwrap();
    let resets = chrono::DateTime::parse_from_rfc3339(resets).unwrap();
    assert!(resets > chrono::Utc::now());
    assert!(body.get("estimated_wait").is_some());
}

#[tokio::test]
async fn position_is_the_jobs_own_place_in_the_queue() {
    let app = spawn_app().await;
    let project = app.create_project(ALICE).await;
    let body = json!({"project_id": project.to_string(), "goal": "a shop"});
    let mut ids = Vec::new();
    for expected in 1..=3 {
        let resp: Value = app
            .post_json("/api/jobs", ALICE, &body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(resp["position"], expected);
        assert_eq!(resp["message"], format!("Queued at position {expected}"));
        ids.push(resp["job_id"].as_str().unwrap().to_owned());
    }
    // The first job leaves the queue: the others move up, and the first reads 0.
    let first = domain::JobId::parse(&ids[0]).unwrap();
    assert!(app.state.queue.remove(first).await.unwrap());
    let app = &app;
    let place = |id: String| async move {
        let body: Value = app
            .get(&format!("/api/jobs/{id}"), ALICE)
            .await
            .json()
            .await
            .unwrap();
        body["position"].as_u64().unwrap()
    };
    assert_eq!(place(ids[2].clone()).await, 2);
    assert_eq!(place(ids[1].clone()).await, 1);
    assert_eq!(place(ids[0].clone()).await, 0);
}

#[tokio::test]
async fn the_sixth_bootstrapper_job_of_the_day_is_scheduled() {
    let app = spawn_app().await;
    let project = app.create_project(ALICE).await;
    let body = json!({"project_id": project.to_string(), "goal": "again"});
    let submit = || app.post_json("/api/jobs", ALICE, &body);
    for _ in 0..5 {
        assert_eq!(submit().await.status(), 201);
    }
    let body: Value = submit().await.json().await.unwrap();
    assert_eq!(body["status"], "scheduled");
    assert_eq!(body["position"], 0);
    assert_eq!(
        body["message"],
        "Daily limit reached. Scheduled for tomorrow."
    );
    assert_eq!(body["usage"]["jobs_used"], 6);
    assert_eq!(body["usage"]["jobs_remaining"], 0);
    assert_eq!(app.state.queue.pending_len().await.unwrap(), 5);
}

#[tokio::test]
async fn the_tier_claim_sets_the_daily_limit() {
    let app = spawn_app().await;
    let project = app.create_project(ALICE).await;
    let resp = app
        .client
        .post(app.url("/api/jobs"))
        .bearer_auth(token_with(
            json!({"sub": ALICE, "public_metadata": {"tier": "partner"}}),
        ))
        .json(&json!({"project_id": project.to_string(), "goal": "paid"}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["usage"]["jobs_remaining"], 49);
    let id = domain::JobId::parse(body["job_id"].as_str().unwrap()).unwrap();
    assert_eq!(app.job_row(id).await.tier, domain::Tier::Partner);
}

#[tokio::test]
async fn get_answers_the_owner_and_hides_the_job_from_others() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    let resp = app.get(&format!("/api/jobs/{id}"), ALICE).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["job_id"], id.to_string());
    assert_eq!(body["status"], "queued");
    assert!(body["position"].as_u64().unwrap() >= 1);
    assert_eq!(body["usage"]["jobs_used"], 1);
    assert!(body.get("message").is_some());

    let resp = app.get(&format!("/api/jobs/{id}"), "user_bob").await;
    assert_eq!(error_detail(resp, 404).await, "Job not found");
    let resp = app
        .get(&format!("/api/jobs/{}", uuid::Uuid::new_v4()), ALICE)
        .await;
    assert_eq!(error_detail(resp, 404).await, "Job not found");
}

#[tokio::test]
async fn submit_without_a_token_is_401() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/api/jobs"))
        .json(&json!({"project_id": uuid::Uuid::new_v4().to_string(), "goal": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_detail(resp, 401).await,
        "Missing authorization header"
    );
    assert_eq!(app.job_count().await, 0);
}
