//! The control plane against a tiny in-test server: pagination, pause outcomes, the SDK's retry rules
//! (statuses, `Should-Retry`, `Retry-After`, the call's deadline, create included), error mapping.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::ports::{PauseOutcome, ProviderState, SandboxError, SandboxRuntime, SandboxSpec};
use domain::{JobId, ProjectId, SandboxId, UserId};
use infra_e2b::{ApiKey, E2bConfig, E2bRuntime};
use serde_json::json;

#[derive(Default)]
struct Calls {
    pauses: AtomicU32,
    lists: AtomicU32,
    timeouts: AtomicU32,
    creates: AtomicU32,
}

/// The whole-call deadline of these tests' clients: retries stop within it.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn runtime(url: &str) -> E2bRuntime {
    E2bRuntime::new(E2bConfig {
        api_url: url.to_owned(),
        sandbox_url: Some(url.to_owned()),
        call_timeout: CALL_TIMEOUT,
        ..E2bConfig::new(ApiKey::new("test-key"), "base")
    })
    .unwrap()
}

fn listed(id: &str, state: &str, job: &str) -> serde_json::Value {
    json!({"templateID":"base","sandboxID":id,"clientID":"c","startedAt":"2026-01-01T00:00:00Z",
           "endAt":"2026-01-01T01:00:00Z","cpuCount":2,"memoryMB":512,"diskSizeMB":1024,
           "state":state,"envdVersion":"0.2.0","metadata":{"slipway":"1","job_id":job}})
}

async fn list(
    State(calls): State<Arc<Calls>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    calls.lists.fetch_add(1, Ordering::SeqCst);
    assert_eq!(headers["x-api-key"], "test-key");
    assert_eq!(q.get("metadata").map(String::as_str), Some("slipway=1"));
    assert_eq!(q.get("state").map(String::as_str), Some("running,paused"));
    let job = JobId::new().to_string();
    match q.get("nextToken").map(String::as_str) {
        None => (
            [("x-next-token", "page2")],
            Json(json!([
                listed("sbx-a", "running", &job),
                listed("sbx-b", "paused", "not-a-uuid")
            ])),
        )
            .into_response(),
        Some("page2") => Json(json!([listed("sbx-c", "paused", &job)])).into_response(),
        Some(other) => panic!("unexpected token {other}"),
    }
}

async fn pause(State(calls): State<Arc<Calls>>, Path(id): Path<String>) -> Response {
    let n = calls.pauses.fetch_add(1, Ordering::SeqCst);
    let err = |status: StatusCode, msg: &str| {
        (
            status,
            Json(json!({"code": status.as_u16(), "message": msg})),
        )
            .into_response()
    };
    match id.as_str() {
        "running" => StatusCode::NO_CONTENT.into_response(),
        "paused" => err(StatusCode::CONFLICT, "sandbox is already paused"),
        "gone" => err(StatusCode::NOT_FOUND, "sandbox not found"),
        "broken" => err(StatusCode::INTERNAL_SERVER_ERROR, "boom"),
        // Busy once, then fine: a transient failure retried away.
        "flaky" if n % 2 == 0 => err(StatusCode::SERVICE_UNAVAILABLE, "busy"),
        "flaky" => StatusCode::NO_CONTENT.into_response(),
        // Rate limited once, asking for a second's wait.
        "limited" if n % 2 == 0 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({"code": 429, "message": "slow down"})),
        )
            .into_response(),
        "limited" => StatusCode::NO_CONTENT.into_response(),
        // Marked as not worth retrying, whatever the status says.
        "marked" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("should-retry", "false")],
            Json(json!({"code": 503, "message": "draining"})),
        )
            .into_response(),
        // Marked as worth retrying although a 500 is not by itself.
        "marked-retry" if n % 2 == 0 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("should-retry", "true")],
            Json(json!({"code": 500, "message": "try again"})),
        )
            .into_response(),
        "marked-retry" => StatusCode::NO_CONTENT.into_response(),
        // Asks for a wait longer than the call has left.
        "later" => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "30")],
            Json(json!({"code": 429, "message": "come back later"})),
        )
            .into_response(),
        _ => err(StatusCode::SERVICE_UNAVAILABLE, "busy"),
    }
}

async fn timeout(
    State(calls): State<Arc<Calls>>,
    Json(body): Json<serde_json::Value>,
) -> StatusCode {
    calls.timeouts.fetch_add(1, Ordering::SeqCst);
    assert_eq!(body, json!({"timeout": 90}));
    StatusCode::NO_CONTENT
}

async fn create(
    State(calls): State<Arc<Calls>>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let n = calls.creates.fetch_add(1, Ordering::SeqCst);
    if headers["x-api-key"] != "test-key" {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code":401,"message":"bad key"})),
        )
            .into_response();
    }
    assert_eq!(body["templateID"], "base");
    assert_eq!(body["timeout"], 300);
    assert_eq!(body["autoPause"], true);
    assert_eq!(body["metadata"]["slipway"], "1");
    assert_eq!(body["secure"], true, "every sandbox is created secure");
    if body["metadata"]["user_id"] == "user_busy" && n % 2 == 0 {
        return (
            StatusCode::BAD_GATEWAY,
            Json(json!({"code":502,"message":"backend error"})),
        )
            .into_response();
    }
    (
        StatusCode::CREATED,
        Json(
            json!({"templateID":"base","sandboxID":"sbx-new","clientID":"c","envdVersion":"0.2.0",
                    "envdAccessToken":"tok"}),
        ),
    )
        .into_response()
}

async fn detail(Path(id): Path<String>) -> Response {
    Json(
        json!({"templateID":"base","sandboxID":id,"clientID":"c","startedAt":"2026-01-01T00:00:00Z",
                "endAt":"2026-01-01T01:00:00Z","cpuCount":2,"memoryMB":512,"diskSizeMB":1024,
                "state":"paused","envdVersion":"0.2.0"}),
    )
    .into_response()
}

async fn server() -> (String, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let router = Router::new()
        .route("/v2/sandboxes", get(list))
        .route("/sandboxes", post(create))
        .route("/sandboxes/{id}", get(detail))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/timeout", post(timeout))
        .with_state(calls.clone());
    (serve(router).await, calls)
}

fn sid(s: &str) -> SandboxId {
    SandboxId::try_from(s).unwrap()
}

#[tokio::test]
async fn list_follows_the_next_token_and_reads_job_ids() {
    let (url, calls) = server().await;
    let sandboxes = runtime(&url).list().await.unwrap();
    assert_eq!(calls.lists.load(Ordering::SeqCst), 2);
    let ids: Vec<_> = sandboxes.iter().map(|s| s.sandbox_id.as_str()).collect();
    assert_eq!(ids, ["sbx-a", "sbx-b", "sbx-c"]);
    assert_eq!(sandboxes[1].state, ProviderState::Paused);
    assert!(sandboxes[0].job_id.is_some());
    assert_eq!(sandboxes[1].job_id, None);
}

#[tokio::test]
async fn pause_outcomes_follow_the_status() {
    let (url, calls) = server().await;
    let rt = runtime(&url);
    assert_eq!(rt.pause(&sid("running")).await, Ok(PauseOutcome::Paused));
    assert_eq!(
        rt.pause(&sid("paused")).await,
        Ok(PauseOutcome::AlreadyPaused)
    );
    assert!(matches!(
        rt.pause(&sid("gone")).await,
        Err(SandboxError::NotFound(_))
    ));

    // A 500 is not transient: one call, a provider error.
    let before = calls.pauses.load(Ordering::SeqCst);
    assert!(matches!(
        rt.pause(&sid("broken")).await,
        Err(SandboxError::Provider(_))
    ));
    assert_eq!(calls.pauses.load(Ordering::SeqCst) - before, 1);

    // A 503 is retried with backoff until the call's deadline, then Unavailable.
    let before = calls.pauses.load(Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    assert!(matches!(
        rt.pause(&sid("busy")).await,
        Err(SandboxError::Unavailable(_))
    ));
    let tries = calls.pauses.load(Ordering::SeqCst) - before;
    assert!(tries >= 4, "retried with backoff, {tries} tries");
    assert!(
        started.elapsed() < CALL_TIMEOUT,
        "within the call's deadline"
    );
}

#[tokio::test]
async fn retry_after_and_should_retry_are_honoured() {
    let (url, calls) = server().await;
    let rt = runtime(&url);

    // 429 with Retry-After: 1 → one wait of a second, then success.
    calls.pauses.store(0, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    assert_eq!(rt.pause(&sid("limited")).await, Ok(PauseOutcome::Paused));
    assert_eq!(calls.pauses.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited as asked"
    );

    // Should-Retry: false on a 503 → one call.
    calls.pauses.store(0, Ordering::SeqCst);
    assert!(matches!(
        rt.pause(&sid("marked")).await,
        Err(SandboxError::Unavailable(_))
    ));
    assert_eq!(calls.pauses.load(Ordering::SeqCst), 1);

    // Should-Retry: true on a 500 → retried.
    calls.pauses.store(0, Ordering::SeqCst);
    assert_eq!(
        rt.pause(&sid("marked-retry")).await,
        Ok(PauseOutcome::Paused)
    );
    assert_eq!(calls.pauses.load(Ordering::SeqCst), 2);

    // A Retry-After past the call's deadline is not waited for: the call fails at once.
    calls.pauses.store(0, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    assert!(matches!(
        rt.pause(&sid("later")).await,
        Err(SandboxError::Unavailable(_))
    ));
    assert_eq!(calls.pauses.load(Ordering::SeqCst), 1);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn create_is_retried_like_every_other_call() {
    let (url, calls) = server().await;
    let spec = SandboxSpec {
        job_id: JobId::new(),
        user_id: UserId::try_from("user_busy").unwrap(),
        project_id: ProjectId::new(),
        timeout: Duration::from_secs(300),
        auto_pause: true,
    };
    assert_eq!(
        runtime(&url).create(&spec).await.unwrap().as_str(),
        "sbx-new"
    );
    assert_eq!(
        calls.creates.load(Ordering::SeqCst),
        2,
        "a 502, then the sandbox"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_to_success() {
    let (url, calls) = server().await;
    calls.pauses.store(0, Ordering::SeqCst);
    assert_eq!(
        runtime(&url).pause(&sid("flaky")).await,
        Ok(PauseOutcome::Paused)
    );
    assert_eq!(calls.pauses.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn create_sends_template_timeout_and_metadata() {
    let (url, calls) = server().await;
    let rt = runtime(&url);
    let spec = SandboxSpec {
        job_id: JobId::new(),
        user_id: UserId::try_from("user_1").unwrap(),
        project_id: ProjectId::new(),
        timeout: Duration::from_secs(300),
        auto_pause: true,
    };
    assert_eq!(rt.create(&spec).await.unwrap().as_str(), "sbx-new");
    rt.set_timeout(&sid("sbx-new"), Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(calls.timeouts.load(Ordering::SeqCst), 1);
    assert_eq!(rt.state(&sid("sbx-new")).await, Ok(ProviderState::Paused));

    let bad_key = E2bRuntime::new(E2bConfig {
        api_url: url.clone(),
        call_timeout: CALL_TIMEOUT,
        ..E2bConfig::new(ApiKey::new("wrong"), "base")
    })
    .unwrap();
    assert!(matches!(
        bad_key.create(&spec).await,
        Err(SandboxError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn unreachable_provider_is_unavailable() {
    // Bind then drop a listener so the port is closed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let result = runtime(&url).kill(&sid("any")).await;
    assert!(
        matches!(result, Err(SandboxError::Unavailable(_))),
        "{result:?}"
    );
}

/// Counts WARN and ERROR events, so a test can show an expected condition is not logged as a problem.
#[derive(Clone, Default)]
struct Loud(Arc<std::sync::atomic::AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Loud {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Loud {
    /// Installs the counter for this thread (the tests run on a current-thread runtime).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Killing a sandbox that is already gone answers NotFound, which every caller expects: no WARN or ERROR.
#[tokio::test]
async fn killing_a_sandbox_already_gone_is_not_found_and_not_logged_as_a_problem() {
    let router = Router::new().route(
        "/sandboxes/{id}",
        axum::routing::delete(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"code":404,"message":"not found"})),
            )
                .into_response()
        }),
    );
    let url = serve(router).await;
    let loud = Loud::default();
    let _guard = loud.install();
    let result = runtime(&url).kill(&sid("gone")).await;
    assert!(
        matches!(result, Err(SandboxError::NotFound(_))),
        "{result:?}"
    );
    assert_eq!(loud.count(), 0, "no WARN or ERROR for an expected NotFound");
}
