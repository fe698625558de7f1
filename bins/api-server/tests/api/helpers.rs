//! The harness: the app in-process on an ephemeral port over a fresh Postgres database and a random Redis
//! prefix, both removed when the [`TestApp`] is dropped (also when the test panicked). Logs are quiet
//! unless `TEST_LOG` is set.

use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fred::prelude::{ClientLike, KeysInterface};
use futures::TryStreamExt;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::sync::oneshot;
use uuid::Uuid;

use api_server::auth::{AuthConfig, JwtVerifier};
use api_server::wiring::{assemble, Parts};
use api_server::AppState;
use domain::ports::probe::MockPreviewProbe;
use domain::ports::sandbox::MockSandboxRuntime;
use domain::ports::{JobRepository, LiveJobStore, ProbeResponse};
use domain::{JobId, ProjectId, TierTable};
use infra_redis::Client;

pub const SECRET: &str = "test-hs256-secret";
pub const ISSUER: &str = "https://issuer.test";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        bin_support::init_telemetry(bin_support::LogFormat::Pretty);
    }
});

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn admin_options() -> PgConnectOptions {
    PgConnectOptions::from_str(&database_url())
        .expect("DATABASE_URL parses")
        .database("postgres")
}

/// How a test wants its app.
pub struct AppOptions {
    pub tiers: TierTable,
    pub sandbox: MockSandboxRuntime,
    pub probe: MockPreviewProbe,
    pub sse_heartbeat: Duration,
    pub request_timeout: Duration,
    /// Replaces the app's live store (to interpose on it).
    pub wrap_live: Option<LiveWrapper>,
    /// Replaces the app's repository.
    pub repo: Option<Arc<dyn JobRepository>>,
    /// The server's connection limits.
    pub serve: api_server::ServeLimits,
}

pub type LiveWrapper = Box<dyn FnOnce(Arc<dyn LiveJobStore>) -> Arc<dyn LiveJobStore> + Send>;

impl Default for AppOptions {
    fn default() -> Self {
        let mut sandbox = MockSandboxRuntime::new();
        sandbox.expect_kill().returning(|_| Ok(()));
        let mut probe = MockPreviewProbe::new();
        probe
            .expect_get()
            .returning(|url| Ok(probe_answer(url, 200)));
        Self {
            tiers: TierTable::default(),
            sandbox,
            probe,
            sse_heartbeat: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
            wrap_live: None,
            repo: None,
            serve: api_server::ServeLimits::default(),
        }
    }
}

pub fn probe_answer(url: &str, status: u16) -> ProbeResponse {
    ProbeResponse::from_app(status, url)
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub pool: PgPool,
    pub redis: Client,
    pub prefix: String,
    db_name: String,
    stop: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    LazyLock::force(&TRACING);
    let db_name = format!("slipway_api_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&admin_options())
        .await
        .expect("postgres is reachable");
    admin
        .execute(format!(r#"CREATE DATABASE "{db_name}""#).as_str())
        .await
        .expect("create test database");
    let _ = admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .connect_with(admin_options().database(&db_name))
        .await
        .expect("connect to test database");
    infra_pg::MIGRATOR.run(&pool).await.expect("migrations run");

    let redis = infra_redis::connect(&redis_url())
        .await
        .expect("redis is reachable");
    let prefix = format!("test-api-{}", Uuid::new_v4());

    let auth = JwtVerifier::new(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        issuer: Some(ISSUER.into()),
        ..AuthConfig::default()
    })
    .expect("verifier");
    let mut state = assemble(Parts {
        pool: pool.clone(),
        redis: redis.clone(),
        redis_prefix: prefix.clone(),
        tiers: options.tiers,
        auth,
        sandbox: Arc::new(options.sandbox),
        probe: Arc::new(options.probe),
        request_timeout: options.request_timeout,
        sse_heartbeat: options.sse_heartbeat,
        resume: domain::usecases::resume::ResumeConfig::default(),
        gateway: None,
    })
    .expect("state");
    let shared = Arc::get_mut(&mut state).expect("the state is not shared yet");
    if let Some(wrap) = options.wrap_live {
        shared.live = wrap(shared.live.clone());
    }
    if let Some(repo) = options.repo {
        shared.repo = repo;
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(api_server::run_with(
        listener,
        None,
        state.clone(),
        options.serve,
        async move {
            let _ = stopped.await;
        },
    ));
    TestApp {
        address,
        client: reqwest::Client::new(),
        state,
        pool,
        redis,
        prefix,
        db_name,
        stop: Some(stop),
        server: Some(server),
    }
}

/// A signed HS256 token with these claims (issuer and expiry filled in unless given).
pub fn token_with(mut claims: Value) -> String {
    let now = chrono::Utc::now().timestamp();
    let obj = claims.as_object_mut().expect("claims object");
    obj.entry("iss").or_insert(json!(ISSUER));
    obj.entry("exp").or_insert(json!(now + 600));
    obj.entry("nbf").or_insert(json!(now - 10));
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode token")
}

pub fn token(user: &str) -> String {
    token_with(json!({ "sub": user }))
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// The `GET /metrics` exposition (the recorder is per process: other tests' series may be there too).
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn get(&self, path: &str, user: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token(user))
            .send()
            .await
            .expect("request")
    }

    pub async fn post_json(&self, path: &str, user: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token(user))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_empty(&self, path: &str, user: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token(user))
            .send()
            .await
            .expect("request")
    }

    /// Creates a project for `user` through the API.
    pub async fn create_project(&self, user: &str) -> ProjectId {
        let resp = self
            .post_json("/api/projects", user, &json!({"name": "My app"}))
            .await;
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.expect("json");
        ProjectId::parse(body["id"].as_str().expect("id")).expect("uuid")
    }

    /// Starts a build for `user` on a new project; returns the job id.
    pub async fn start_job(&self, user: &str) -> JobId {
        let project = self.create_project(user).await;
        let resp = self
            .post_json(
                "/api/generation/start",
                user,
                &json!({"project_id": project.to_string(), "goal": "a todo app"}),
            )
            .await;
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.expect("json");
        JobId::parse(body["job_id"].as_str().expect("job_id")).expect("uuid")
    }

    /// The job row as Postgres has it.
    pub async fn job_row(&self, id: JobId) -> domain::Job {
        self.state
            .repo
            .get_job(id)
            .await
            .expect("repo")
            .expect("job row exists")
    }

    pub async fn job_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Every Redis key of this test.
    pub async fn redis_keys(&self) -> Vec<String> {
        self.redis
            .scan_buffered(format!("{}:*", self.prefix), Some(500), None)
            .map_ok(|k| k.as_str().unwrap_or_default().to_owned())
            .try_collect()
            .await
            .expect("scan")
    }

    /// Stops the server the way SIGTERM would.
    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shut_down();
        let db_name = self.db_name.clone();
        let prefix = self.prefix.clone();
        // Drop cannot await; a thread with its own runtime cleans up even after a panic.
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut admin = PgConnection::connect_with(&admin_options())
                    .await
                    .expect("postgres is reachable");
                admin
                    .execute(
                        format!(r#"DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)"#).as_str(),
                    )
                    .await
                    .expect("drop test database");
                let _ = admin.close().await;
                let client = infra_redis::connect(&redis_url())
                    .await
                    .expect("redis is reachable");
                let keys: Vec<_> = client
                    .scan_buffered(format!("{prefix}:*"), Some(500), None)
                    .try_collect()
                    .await
                    .expect("scan");
                for key in keys {
                    let _: () = client.del(key).await.expect("del");
                }
                let _ = client.quit().await;
            });
        })
        .join();
        if cleaned.is_err() && !std::thread::panicking() {
            panic!(
                "test database {} or prefix {} left behind",
                self.db_name, self.prefix
            );
        }
    }
}

/// Asserts the `{detail, debug_id}` error shape and returns the detail.
pub async fn error_detail(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status, "unexpected status");
    let body: Value = resp.json().await.expect("error body is JSON");
    let debug_id = body["debug_id"].as_str().expect("debug_id present");
    Uuid::parse_str(debug_id).expect("debug_id is a uuid");
    body["detail"].clone()
}

/// Polls `check` until it returns `Some`, failing the test after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
