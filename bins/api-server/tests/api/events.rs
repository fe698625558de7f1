//! `GET /api/generation/{job_id}/events`: ordering, closing, heartbeat, ownership and shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Mutex;

use domain::ports::{
    EventStream, JobRepository, LiveJobStore, StoreError, TransitionOutcome, TransitionUpdate,
};
use domain::{Job, JobEvent, JobId, JobStatus};

use crate::helpers::{error_detail, spawn_app, spawn_app_with, token, AppOptions, TestApp};
use crate::sse_reader::{SseItem, SseReader};
use crate::support::{advance, make_ready};

const ALICE: &str = "user_alice";
const WAIT: Duration = Duration::from_secs(5);

async fn open(app: &TestApp, id: JobId, user: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/generation/{id}/events")))
        .bearer_auth(token(user))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_stream_starts_with_the_current_state_and_follows_to_ready() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    let resp = open(&app, id, ALICE).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    let mut sse = SseReader::new(resp);
    let first = sse.next_data(WAIT).await;
    assert_eq!(first["type"], "build.stage.started");
    assert_eq!(first["status"], "queued");
    assert_eq!(first["stage_label"], "Queued...");
    assert_eq!(first["job_id"], id.to_string());

    make_ready(&app, id, "https://3000-sbx.example").await;
    let mut seen = vec![];
    loop {
        match sse.next(WAIT).await {
            SseItem::Data(v) => seen.push(v["status"].as_str().unwrap().to_owned()),
            SseItem::Comment(_) => {}
            SseItem::End => break,
        }
    }
    assert_eq!(
        seen,
        ["starting", "scaffold", "code", "deps", "checks", "ready"]
    );
}

#[tokio::test]
async fn a_finished_job_sends_one_event_and_closes() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    advance(&app, id, JobStatus::Failed, TransitionUpdate::default()).await;
    let mut sse = SseReader::new(open(&app, id, ALICE).await);
    assert_eq!(sse.next_data(WAIT).await["status"], "failed");
    assert!(matches!(sse.next(WAIT).await, SseItem::End));
}

/// A live store that, on the route's read of the current state, first lets a transition land: the
/// moment between subscribing and reading.
struct TransitionOnRead {
    inner: Arc<dyn LiveJobStore>,
    /// Set once the test is ready; taken by the first read after that.
    armed: Arc<Mutex<Option<Arc<dyn JobRepository>>>>,
}

#[async_trait]
impl LiveJobStore for TransitionOnRead {
    async fn save(&self, job: &Job) -> Result<(), StoreError> {
        self.inner.save(job).await
    }
    async fn save_and_publish(&self, job: &Job, event: &JobEvent) -> Result<(), StoreError> {
        self.inner.save_and_publish(job, event).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let current = self.inner.get(id).await?;
        if let Some(repo) = self.armed.lock().await.take() {
            let TransitionOutcome::Applied(job) = repo
                .transition(
                    id,
                    JobStatus::Queued,
                    JobStatus::Starting,
                    TransitionUpdate::default(),
                )
                .await
                .unwrap()
            else {
                panic!("transition conflicted");
            };
            let event = JobEvent {
                job_id: id,
                status: JobStatus::Starting,
                message: "Starting generation pipeline".into(),
                preview_url: None,
                timestamp: Utc::now(),
            };
            self.inner.save_and_publish(&job, &event).await?;
        }
        // The state as read before the transition: the event above is only on the channel.
        Ok(current)
    }
    async fn subscribe(&self, id: JobId) -> Result<EventStream, StoreError> {
        self.inner.subscribe(id).await
    }
    async fn subscribe_failures(&self) -> Result<EventStream, StoreError> {
        self.inner.subscribe_failures().await
    }
    async fn delete(&self, id: JobId) -> Result<(), StoreError> {
        self.inner.delete(id).await
    }
}

#[tokio::test]
async fn an_event_published_between_subscribe_and_read_is_not_lost() {
    let armed: Arc<Mutex<Option<Arc<dyn JobRepository>>>> = Arc::new(Mutex::new(None));
    let slot = armed.clone();
    let app = spawn_app_with(AppOptions {
        wrap_live: Some(Box::new(move |inner| {
            Arc::new(TransitionOnRead { inner, armed: slot })
        })),
        ..AppOptions::default()
    })
    .await;
    let id = app.start_job(ALICE).await;
    // Arm the interposer only now, so the start route's own reads are untouched.
    *armed.lock().await = Some(app.state.repo.clone());
    let mut sse = SseReader::new(open(&app, id, ALICE).await);
    assert_eq!(sse.next_data(WAIT).await["status"], "queued");
    let next = sse.next_data(WAIT).await;
    assert_eq!(next["status"], "starting");
    assert_eq!(next["message"], "Starting generation pipeline");
}

#[tokio::test]
async fn a_quiet_stream_sends_heartbeats() {
    let app = spawn_app_with(AppOptions {
        sse_heartbeat: Duration::from_millis(50),
        ..AppOptions::default()
    })
    .await;
    let id = app.start_job(ALICE).await;
    let mut sse = SseReader::new(open(&app, id, ALICE).await);
    sse.next_data(WAIT).await;
    match sse.next(WAIT).await {
        SseItem::Comment(c) => assert_eq!(c, "heartbeat"),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
}

#[tokio::test]
async fn another_users_stream_is_not_found() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    assert_eq!(
        error_detail(open(&app, id, "user_bob").await, 404).await,
        "Job not found"
    );
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_the_server() {
    let mut app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    let mut sse = SseReader::new(open(&app, id, ALICE).await);
    sse.next_data(WAIT).await;
    app.shut_down();
    loop {
        match sse.next(WAIT).await {
            SseItem::End => break,
            SseItem::Comment(_) => {}
            SseItem::Data(v) => panic!("unexpected event {v}"),
        }
    }
    let server = app.server.take().unwrap();
    tokio::time::timeout(WAIT, server)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
}

/// How many subscribers Redis counts on the job's channel.
async fn subscribers(app: &TestApp, id: JobId) -> i64 {
    use fred::prelude::PubsubInterface;
    let channel = format!("{}:job:{{{id}}}:events", app.prefix);
    let reply: Vec<fred::types::Value> = app.redis.pubsub_numsub(channel).await.unwrap();
    reply.get(1).and_then(|v| v.as_i64()).unwrap_or(0)
}

async fn wait_for_subscribers(app: &TestApp, id: JobId, expected: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while subscribers(app, id).await != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "channel never had {expected} subscribers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_ends_its_subscription() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    let mut sse = SseReader::new(open(&app, id, ALICE).await);
    sse.next_data(WAIT).await;
    wait_for_subscribers(&app, id, 1).await;
    drop(sse);
    wait_for_subscribers(&app, id, 0).await;
}
