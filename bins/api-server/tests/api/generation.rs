//! `/api/generation/*` except the event stream.

use serde_json::{json, Value};

use domain::ports::probe::MockPreviewProbe;
use domain::ports::sandbox::MockSandboxRuntime;
use domain::ports::{ProbeError, TransitionUpdate};
use domain::{DebugId, JobStatus, SandboxState, TierTable};

use crate::helpers::{
    error_detail, eventually, probe_answer, spawn_app, spawn_app_with, AppOptions, TestApp,
};
use crate::support::{advance, make_ready, pause, set_sandbox};

const ALICE: &str = "user_alice";
const BOB: &str = "user_bob";

#[tokio::test]
async fn start_answers_201_and_writes_postgres_redis_and_the_queue() {
    let app = spawn_app().await;
    let project = app.create_project(ALICE).await;
    let resp = app
        .post_json(
            "/api/generation/start",
            ALICE,
            &json!({"project_id": project.to_string(), "goal": "a todo app"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(body["build_version"], "build_v0_1");
    let id = domain::JobId::parse(body["job_id"].as_str().unwrap()).unwrap();

    let row = app.job_row(id).await;
    assert_eq!(row.status, JobStatus::Queued);
    assert_eq!(row.user_id.as_str(), ALICE);
    assert!(app.state.live.get(id).await.unwrap().is_some());
    assert!(app.state.queue.contains(id).await.unwrap());
}

#[tokio::test]
async fn start_on_someone_elses_or_a_missing_project_is_project_not_found() {
    let app = spawn_app().await;
    let bobs = app.create_project(BOB).await;
    for project in [bobs.to_string(), uuid::Uuid::new_v4().to_string()] {
        let resp = app
            .post_json(
                "/api/generation/start",
                ALICE,
                &json!({"project_id": project, "goal": "steal"}),
            )
            .await;
        assert_eq!(error_detail(resp, 404).await, "Project not found");
    }
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn status_has_every_field_with_sandbox_paused_a_boolean() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    let resp = app
        .get(&format!("/api/generation/{id}/status"), ALICE)
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    for field in [
        "job_id",
        "status",
        "stage_label",
        "preview_url",
        "build_version",
        "error_message",
        "debug_id",
        "sandbox_expires_at",
        "sandbox_paused",
        "snapshot_url",
        "docs_ready",
    ] {
        assert!(body.get(field).is_some(), "missing {field}");
    }
    assert_eq!(body["job_id"], id.to_string());
    assert_eq!(body["status"], "queued");
    assert_eq!(body["stage_label"], "Queued...");
    assert_eq!(body["sandbox_paused"], Value::Bool(false));
    assert_eq!(body["docs_ready"], Value::Bool(false));
    assert!(body["sandbox_expires_at"].is_null());
}

#[tokio::test]
async fn status_shows_what_the_pipeline_wrote() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    make_ready(&app, id, "https://3000-sbx.example").await;
    let body: Value = app
        .get(&format!("/api/generation/{id}/status"), ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["stage_label"], "Build complete!");
    assert_eq!(body["preview_url"], "https://3000-sbx.example");
    assert_eq!(body["build_version"], "build_v0_1");
    // The figure the build recorded with its sandbox, read as is.
    assert_eq!(body["sandbox_expires_at"], "2100-01-01T00:00:00.000+00:00");
    pause(&app, id).await;
    let body: Value = app
        .get(&format!("/api/generation/{id}/status"), ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["sandbox_paused"], Value::Bool(true));
    assert_eq!(body["sandbox_state"], "paused");
    assert!(body["sandbox_expires_at"].is_null(), "null while paused");

    let failed = app.start_job(ALICE).await;
    let debug_id = DebugId::new();
    advance(
        &app,
        failed,
        JobStatus::Failed,
        TransitionUpdate {
            message: Some("Build failed".into()),
            error_message: Some("npm install failed".into()),
            debug_id: Some(debug_id),
            ..TransitionUpdate::default()
        },
    )
    .await;
    let body: Value = app
        .get(&format!("/api/generation/{failed}/status"), ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error_message"], "npm install failed");
    assert_eq!(body["debug_id"], debug_id.to_string());
}

async fn status_body(app: &TestApp, id: domain::JobId) -> Value {
    app.get(&format!("/api/generation/{id}/status"), ALICE)
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn status_answers_from_memory_and_follows_what_another_process_writes() {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    let ready = make_ready(&app, id, "https://3000-sbx.example").await;
    eventually(WAIT, "a status read answered from memory", || async {
        assert_eq!(
            status_body(&app, id).await["sandbox_paused"],
            Value::Bool(false)
        );
        (app.state.status_reads.stats().hits > 0).then_some(())
    })
    .await;

    // The worker is another process: its write reaches this one only through Redis.
    let worker = infra_redis::RedisLiveStore::new(app.redis.clone(), &app.prefix);
    let paused = app
        .state
        .repo
        .set_sandbox_state(
            id,
            domain::ports::SandboxStateUpdate {
                expected_version: ready.sandbox_state_version,
                state: SandboxState::Paused,
                preview_url: None,
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    domain::ports::LiveJobStore::save(&worker, &paused)
        .await
        .unwrap();
    eventually(WAIT, "the pause in the status route", || async {
        (status_body(&app, id).await["sandbox_paused"] == Value::Bool(true)).then_some(())
    })
    .await;
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("slipway_status_cache_reads_total{result=\"hit\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn another_users_job_is_not_found_exactly_like_a_missing_one() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    let missing = uuid::Uuid::new_v4();
    for path in ["status", "cancel", "preview-check"] {
        for (job, who) in [(id.to_string(), BOB), (missing.to_string(), ALICE)] {
            let url = format!("/api/generation/{job}/{path}");
            let resp = if path == "cancel" {
                app.post_empty(&url, who).await
            } else {
                app.get(&url, who).await
            };
            assert_eq!(error_detail(resp, 404).await, "Job not found", "{path}");
        }
    }
    assert_eq!(app.job_row(id).await.status, JobStatus::Queued);
}

#[tokio::test]
async fn status_falls_back_to_postgres_and_rebuilds_the_hash() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    app.state.live.delete(id).await.unwrap();
    assert!(app.state.live.get(id).await.unwrap().is_none());
    let resp = app
        .get(&format!("/api/generation/{id}/status"), ALICE)
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    let rebuilt = app.state.live.get(id).await.unwrap().expect("hash rebuilt");
    assert_eq!(rebuilt.status, JobStatus::Queued);
    // Another user still gets 404 through the fallback.
    app.state.live.delete(id).await.unwrap();
    let resp = app.get(&format!("/api/generation/{id}/status"), BOB).await;
    assert_eq!(error_detail(resp, 404).await, "Job not found");
}

#[tokio::test]
async fn cancel_a_queued_job_then_cancel_again_is_a_conflict() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    let resp = app
        .post_empty(&format!("/api/generation/{id}/cancel"), ALICE)
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"job_id": id.to_string(), "status": "cancelled", "message": "Build cancelled"})
    );
    let row = app.job_row(id).await;
    assert_eq!(row.status, JobStatus::Failed);
    assert_eq!(row.status_message.as_deref(), Some("Cancelled by user"));
    assert!(!app.state.queue.contains(id).await.unwrap());
    assert_eq!(
        app.state.live.get(id).await.unwrap().unwrap().status,
        JobStatus::Failed
    );

    let resp = app
        .post_empty(&format!("/api/generation/{id}/cancel"), ALICE)
        .await;
    let detail = error_detail(resp, 409).await;
    assert!(detail.as_str().unwrap().contains("terminal state"));
}

#[tokio::test]
async fn cancel_of_a_ready_job_is_a_conflict() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    make_ready(&app, id, "https://3000-sbx.example").await;
    let resp = app
        .post_empty(&format!("/api/generation/{id}/cancel"), ALICE)
        .await;
    let detail = error_detail(resp, 409).await;
    assert!(detail.as_str().unwrap().contains("terminal state (ready)"));
}

#[tokio::test]
async fn cancel_of_a_building_job_kills_its_sandbox() {
    let mut sandbox = MockSandboxRuntime::new();
    sandbox
        .expect_kill()
        .times(1)
        .withf(|s| s.as_str() == "sbx-building")
        .returning(|_| Ok(()));
    let app = spawn_app_with(AppOptions {
        sandbox,
        ..AppOptions::default()
    })
    .await;
    let id = app.start_job(ALICE).await;
    advance(&app, id, JobStatus::Starting, TransitionUpdate::default()).await;
    let sbx = domain::SandboxId::try_from("sbx-building").unwrap();
    app.state.repo.record_sandbox(id, &sbx, 1).await.unwrap();
    advance(&app, id, JobStatus::Scaffold, TransitionUpdate::default()).await;

    let resp = app
        .post_empty(&format!("/api/generation/{id}/cancel"), ALICE)
        .await;
    assert_eq!(resp.status(), 200);
    let row = app.job_row(id).await;
    assert_eq!(row.status, JobStatus::Failed);
    assert_eq!(row.sandbox_state, SandboxState::Killed);
}

#[tokio::test]
async fn at_the_queue_cap_start_is_503_and_nothing_stays_queued() {
    let app = spawn_app_with(AppOptions {
        tiers: TierTable {
            queue_cap: 1,
            ..TierTable::default()
        },
        ..AppOptions::default()
    })
    .await;
    let first = app.start_job(ALICE).await;
    let project = app.create_project(ALICE).await;
    let resp = app
        .post_json(
            "/api/generation/start",
            ALICE,
            &json!({"project_id": project.to_string(), "goal": "second"}),
        )
        .await;
    let detail = error_detail(resp, 503).await;
    let detail = detail.as_str().unwrap();
    assert!(detail.starts_with("System busy. Try again in "), "{detail}");
    assert!(detail.ends_with(" minutes."), "{detail}");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'queued'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(queued, 1);
    assert_eq!(app.state.queue.pending_len().await.unwrap(), 1);
    assert!(app.state.queue.contains(first).await.unwrap());
}

#[tokio::test]
async fn past_the_scheduled_cap_a_build_is_refused_with_nothing_created() {
    let mut tiers = TierTable::default();
    tiers.bootstrapper.daily_jobs = 1;
    tiers.scheduled_cap = 2;
    let app = spawn_app_with(AppOptions {
        tiers,
        ..AppOptions::default()
    })
    .await;
    let project = app.create_project(ALICE).await;
    let body = json!({"project_id": project.to_string(), "goal": "again"});
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let resp = app.post_json("/api/generation/start", ALICE, &body).await;
        assert_eq!(resp.status(), 201);
        let got: Value = resp.json().await.unwrap();
        statuses.push(got["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses, ["queued", "scheduled", "scheduled"]);
    let resp = app.post_json("/api/generation/start", ALICE, &body).await;
    let detail = error_detail(resp, 429).await;
    assert!(
        detail
            .as_str()
            .unwrap()
            .contains("2 builds are already scheduled"),
        "{detail}"
    );
    assert_eq!(app.job_count().await, 3);
    // Another founder is not held by Alice's backlog.
    app.start_job("user_bob").await;
}

#[tokio::test]
async fn past_the_daily_limit_a_build_is_scheduled_and_not_queued() {
    let mut tiers = TierTable::default();
    tiers.bootstrapper.daily_jobs = 1;
    let app = spawn_app_with(AppOptions {
        tiers,
        ..AppOptions::default()
    })
    .await;
    app.start_job(ALICE).await;
    let project = app.create_project(ALICE).await;
    let resp = app
        .post_json(
            "/api/generation/start",
            ALICE,
            &json!({"project_id": project.to_string(), "goal": "one more"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "scheduled");
    let id = domain::JobId::parse(body["job_id"].as_str().unwrap()).unwrap();
    let row = app.job_row(id).await;
    assert_eq!(row.status, JobStatus::Scheduled);
    assert_eq!(
        row.status_message.as_deref(),
        Some("Scheduled for tomorrow")
    );
    assert!(!app.state.queue.contains(id).await.unwrap());
    assert_eq!(app.state.queue.pending_len().await.unwrap(), 1);
}

async fn preview_check(app: &TestApp, id: domain::JobId) -> Value {
    let resp = app
        .get(&format!("/api/generation/{id}/preview-check"), ALICE)
        .await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn preview_check_answers_embeddable_for_a_plain_running_preview() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    let resp = app
        .get(&format!("/api/generation/{id}/preview-check"), ALICE)
        .await;
    assert_eq!(error_detail(resp, 404).await, "No preview URL available");
    make_ready(&app, id, "https://3000-sbx.example").await;
    assert_eq!(
        preview_check(&app, id).await,
        json!({"embeddable": true, "preview_url": "https://3000-sbx.example", "reason": null})
    );
    pause(&app, id).await;
    let body = preview_check(&app, id).await;
    assert_eq!(body["embeddable"], false);
    assert_eq!(body["reason"], "Sandbox is paused");
}

#[tokio::test]
async fn preview_check_refuses_framing_headers_errors_and_unreachable_previews() {
    let mut probe = MockPreviewProbe::new();
    probe.expect_get().returning(|url| {
        if url.contains("xfo") {
            let mut r = probe_answer(url, 200);
            r.x_frame_options = Some("DENY".into());
            Ok(r)
        } else if url.contains("bad-gateway") {
            Ok(probe_answer(url, 502))
        } else {
            Err(ProbeError::Unreachable("connection refused".into()))
        }
    });
    let app = spawn_app_with(AppOptions {
        probe,
        ..AppOptions::default()
    })
    .await;
    for (url, reason) in [
        ("https://xfo.example", "X-Frame-Options"),
        ("https://bad-gateway.example", "502"),
        ("https://gone.example", "unreachable"),
    ] {
        let id = app.start_job(ALICE).await;
        make_ready(&app, id, url).await;
        let body = preview_check(&app, id).await;
        assert_eq!(body["embeddable"], false, "{url}");
        assert!(
            body["reason"].as_str().unwrap().contains(reason),
            "{url}: {body}"
        );
    }
}

/// The front end stops polling at READY: whichever instant its last poll lands on, between READY and the
/// provider's confirmation of the pause, status, preview-check and the project must lead it to Resume.
#[tokio::test]
async fn while_the_pause_is_in_flight_every_answer_leads_to_resume() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    make_ready(&app, id, "https://3000-sbx.example").await;
    let project = app.job_row(id).await.project_id;
    set_sandbox(&app, id, SandboxState::Pausing).await;

    let status = status_body(&app, id).await;
    assert_eq!(status["sandbox_state"], "pausing");
    assert_eq!(status["sandbox_paused"], Value::Bool(true));
    assert!(
        status["sandbox_expires_at"].is_null(),
        "null while (about to be) paused"
    );

    let check: Value = app
        .get(&format!("/api/generation/{id}/preview-check"), ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(check["embeddable"], Value::Bool(false));
    assert_eq!(check["reason"], "Sandbox is paused");

    let read: Value = app
        .get(&format!("/api/projects/{project}"), ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["sandbox_paused"], Value::Bool(true));

    // Postgres still says not paused until the provider confirms.
    assert!(!app.job_row(id).await.sandbox_paused());
}
