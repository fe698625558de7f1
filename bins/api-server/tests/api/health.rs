//! Liveness, readiness, metrics, the OpenAPI document, and the 5xx debug id in the log.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;

use domain::ports::repository::MockJobRepository;
use domain::ports::RepoError;

use crate::helpers::{spawn_app, spawn_app_with, AppOptions};

#[tokio::test]
async fn healthz_and_readyz_answer_ok() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    app.start_job("user_m").await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(text.contains(r#"route="/api/generation/start""#), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("slipway_jobs{"), "{text}");
}

#[tokio::test]
async fn invented_methods_add_no_series() {
    let app = spawn_app().await;
    for i in 0..20 {
        let method = format!("INVENTED{i}{}", "X".repeat(200));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for path in ["/healthz", "/api/nope"] {
            let resp = app
                .client
                .request(method.clone(), app.url(path))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_client_error(), "{}", resp.status());
        }
    }
    let text = app.metrics_text().await;
    assert!(
        !text.contains("INVENTED"),
        "an invented method became a label"
    );
    assert!(text.contains(r#"method="other""#), "{text}");
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/generation/start",
        "/api/generation/{job_id}/status",
        "/api/generation/{job_id}/cancel",
        "/api/generation/{job_id}/preview-check",
        "/api/generation/{job_id}/events",
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/logs",
        "/api/jobs/{job_id}/logs/stream",
        "/api/projects",
        "/api/projects/{project_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// A current-thread runtime runs the server on this thread, so a thread-local subscriber sees its logs.
#[tokio::test(flavor = "current_thread")]
async fn a_5xx_is_generic_and_its_debug_id_is_in_the_log() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut repo = MockJobRepository::new();
    repo.expect_list_projects()
        .returning(|_| Err(RepoError::Unavailable("connection refused by db-7".into())));
    let app = spawn_app_with(AppOptions {
        repo: Some(Arc::new(repo)),
        ..AppOptions::default()
    })
    .await;
    let resp = app
        .client
        .get(app.url("/api/projects"))
        .bearer_auth(crate::helpers::token("user_x"))
        .send()
        .await
        .unwrap();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .expect("request id header");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["detail"], "Service temporarily unavailable");
    let debug_id = body["debug_id"].as_str().unwrap().to_owned();
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&debug_id))
        .unwrap_or_else(|| panic!("debug id not logged: {text}"));
    assert!(line.contains("connection refused by db-7"), "{line}");
    assert!(line.contains(&request_id), "{line}");
    assert!(!body.to_string().contains("db-7"));
}

#[tokio::test]
async fn a_panicking_handler_answers_the_json_500_shape() {
    let mut repo = MockJobRepository::new();
    repo.expect_list_projects()
        .returning(|_| panic!("a bug in a handler"));
    let app = spawn_app_with(AppOptions {
        repo: Some(Arc::new(repo)),
        ..AppOptions::default()
    })
    .await;
    let resp = app
        .client
        .get(app.url("/api/projects"))
        .bearer_auth(crate::helpers::token("user_x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["detail"], "Internal server error");
    uuid::Uuid::parse_str(body["debug_id"].as_str().unwrap()).unwrap();
    // The server is still up.
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
