//! The harness: api-server and job-worker in-process over a fresh Postgres database, a random Redis prefix
//! and a temporary sandbox root, with the sandbox runtime either local or E2B (the production client against
//! the E2B-compatible local server). Both apps are configured through their own `Config` (as their binaries
//! parse it) and built by their own wiring. Everything is removed at the end, also after a panic.
//! Logs are quiet unless `TEST_LOG` is set.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use clap::Parser;
use fred::prelude::{ClientLike, KeysInterface};
use futures::TryStreamExt;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use domain::ports::{SandboxError, SandboxRuntime};
use domain::usecases::reconcile::{ReconcileDeps, Reconciler};
use domain::{JobId, SandboxId};
use infra_local::e2b_server::{self, FaultConfig};
use infra_local::LocalRuntime;

pub const SECRET: &str = "e2e-hs256-secret";
const E2B_API_KEY: &str = "e2b_e2e_test_key";
/// How long a build may take (npm and node start are slow on a busy machine).
pub const BUILD_DEADLINE: Duration = Duration::from_secs(90);
/// How long a preview request may take before it counts as "not answering".
pub const PREVIEW_TIMEOUT: Duration = Duration::from_secs(2);
/// Between two polls of a condition.
const POLL_EVERY: Duration = Duration::from_millis(200);

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        api_server::telemetry::init(api_server::config::LogFormat::Pretty);
    }
});

/// Which sandbox runtime the apps use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `SANDBOX_RUNTIME=local`.
    Local,
    /// `SANDBOX_RUNTIME=e2b`, pointed at the E2B-compatible local server.
    E2b,
}

/// Who writes the app's code.
#[derive(Debug, Clone)]
pub enum Generator {
    /// The default template (a dependency-free Node app showing the goal).
    Template,
    /// `GENERATOR=command` running this shell script (goal on stdin, `{"files": …}` on stdout).
    Script(&'static str),
}

/// How a test wants its apps.
#[derive(Debug, Clone)]
pub struct Options {
    /// `PAUSE_POLICY`.
    pub pause_policy: &'static str,
    pub generator: Generator,
    /// `RECONCILE_INTERVAL_SECS` (at least 1 here: the harness always runs the reconciler, as `main` does).
    pub reconcile_every_secs: u64,
    /// `IDLE_PAUSE_SECS`.
    pub idle_pause_secs: u64,
    /// The E2B-compatible server's faults at start (e2b mode).
    pub faults: FaultConfig,
    /// The reconciler's grace, backoffs and orphan age in seconds rather than minutes.
    pub fast_reconcile: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pause_policy: "immediate",
            generator: Generator::Template,
            reconcile_every_secs: 1,
            idle_pause_secs: 600,
            faults: FaultConfig::default(),
            fast_reconcile: false,
        }
    }
}

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

/// `DATABASE_URL` with its database replaced by `db_name`.
fn database_url_for(db_name: &str) -> String {
    let mut url = url::Url::parse(&database_url()).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/{db_name}"));
    url.to_string()
}

/// A running Slipway: api-server, job-worker and (in e2b mode) the E2B-compatible server.
pub struct TestApp {
    pub mode: Mode,
    pub address: String,
    pub client: reqwest::Client,
    /// The test's own pool on the test database (for asserting on rows).
    pub pool: PgPool,
    /// The runtime as the apps see it: the shared local runtime, or an E2B client of the local server.
    pub runtime: Arc<dyn SandboxRuntime>,
    /// The local runtime under everything (the E2B server's backend in e2b mode), for the final sweep.
    local: LocalRuntime,
    root: PathBuf,
    /// The E2B-compatible server's base URL (e2b mode).
    e2b_url: Option<String>,
    db_name: String,
    prefix: String,
    api_stop: CancellationToken,
    api: Option<JoinHandle<anyhow::Result<()>>>,
    worker_stop: CancellationToken,
    worker: Option<JoinHandle<anyhow::Result<()>>>,
    e2b_stop: CancellationToken,
}

/// Starts Slipway with `options` in `mode`.
pub async fn spawn_app(mode: Mode, options: Options) -> TestApp {
    LazyLock::force(&TRACING);
    let id = Uuid::new_v4().simple().to_string();
    let db_name = format!("slipway_e2e_{id}");
    let prefix = format!("e2e-{id}");
    let root = std::env::temp_dir().join(format!("slipway-e2e-{id}"));
    std::fs::create_dir_all(&root).expect("create sandbox root");

    let mut admin = PgConnection::connect_with(&admin_options())
        .await
        .expect("postgres is reachable");
    admin
        .execute(format!(r#"CREATE DATABASE "{db_name}""#).as_str())
        .await
        .expect("create test database");
    let _ = admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(admin_options().database(&db_name))
        .await
        .expect("connect to test database");
    infra_pg::MIGRATOR.run(&pool).await.expect("migrations run");

    let local = LocalRuntime::new(root.join("sandboxes")).expect("local runtime");
    let e2b_stop = CancellationToken::new();
    let mut e2b_url = None;
    let mut common: Vec<String> = vec![
        format!("--database-url={}", database_url_for(&db_name)),
        format!("--redis-url={}", redis_url()),
        format!("--redis-prefix={prefix}"),
        format!("--local-sandbox-root={}", local.root().display()),
    ];
    let runtime: Arc<dyn SandboxRuntime> = match mode {
        Mode::Local => {
            common.push("--sandbox-runtime=local".into());
            Arc::new(local.clone())
        }
        Mode::E2b => {
            let url = serve_e2b(&local, options.faults.clone(), e2b_stop.clone()).await;
            e2b_url = Some(url.clone());
            common.extend([
                "--sandbox-runtime=e2b".to_owned(),
                format!("--e2b-api-key={E2B_API_KEY}"),
                format!("--e2b-api-url={url}"),
                format!("--e2b-sandbox-url={url}"),
            ]);
            let mut config = infra_e2b::E2bConfig::new(infra_e2b::ApiKey::new(E2B_API_KEY), "base");
            config.api_url.clone_from(&url);
            config.sandbox_url = Some(url);
            Arc::new(infra_e2b::E2bRuntime::new(config).expect("e2b client"))
        }
    };

    let (address, api_stop, api) = start_api(mode, &common, &local).await;
    let (worker_stop, worker) = start_worker(mode, &common, &options, &root, &local).await;
    TestApp {
        mode,
        address,
        client: reqwest::Client::new(),
        pool,
        runtime,
        local,
        root,
        e2b_url,
        db_name,
        prefix,
        api_stop,
        api: Some(api),
        worker_stop,
        worker: Some(worker),
        e2b_stop,
    }
}

/// Serves the E2B-compatible server over `local` on an ephemeral port; returns its base URL.
async fn serve_e2b(local: &LocalRuntime, faults: FaultConfig, stop: CancellationToken) -> String {
    let app = e2b_server::router(Arc::new(local.clone()), E2B_API_KEY, faults);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind e2b server");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    url
}

async fn start_api(
    mode: Mode,
    common: &[String],
    local: &LocalRuntime,
) -> (String, CancellationToken, JoinHandle<anyhow::Result<()>>) {
    let args = common.iter().cloned().chain([
        "--api-addr=127.0.0.1:0".to_owned(),
        format!("--jwt-hs256-secret={SECRET}"),
        "--request-timeout-secs=30".to_owned(),
    ]);
    let config =
        api_server::Config::try_parse_from(std::iter::once("api-server".to_owned()).chain(args))
            .expect("api-server config parses");
    let state = match mode {
        Mode::E2b => api_server::wiring::build_state(&config)
            .await
            .expect("api-server wiring"),
        // The wiring would open a second LocalRuntime over the same root, and a root must have one owner
        // per process (its per-sandbox locks are in memory): hand the shared one to `assemble` instead.
        Mode::Local => local_api_state(&config, local).await,
    };
    let listener = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .expect("bind api");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let handle = tokio::spawn(api_server::run(listener, state, async move {
        signal.cancelled().await;
    }));
    (address, stop, handle)
}

/// `wiring::build_state` with the shared local runtime in place of the one it would build.
async fn local_api_state(
    config: &api_server::Config,
    local: &LocalRuntime,
) -> api_server::AppState {
    use api_server::auth::{AuthConfig, JwtVerifier};
    let auth = JwtVerifier::new(AuthConfig {
        hs256_secret: config
            .jwt_hs256_secret
            .as_ref()
            .map(|s| s.expose().to_owned()),
        ..AuthConfig::default()
    })
    .expect("verifier");
    let pool = infra_pg::connect(config.database_url.expose())
        .await
        .expect("api connects to postgres");
    let redis = infra_redis::connect(config.redis_url.expose())
        .await
        .expect("api connects to redis");
    api_server::wiring::assemble(api_server::wiring::Parts {
        pool,
        redis,
        redis_prefix: config.redis_prefix.clone(),
        tiers: config.tiers(),
        auth,
        sandbox: Arc::new(local.clone()),
        probe: Arc::new(infra_e2b::HttpPreviewProbe::new().expect("probe")),
        request_timeout: config.request_timeout(),
        sse_heartbeat: api_server::SSE_HEARTBEAT,
    })
}

async fn start_worker(
    mode: Mode,
    common: &[String],
    options: &Options,
    root: &Path,
    local: &LocalRuntime,
) -> (CancellationToken, JoinHandle<anyhow::Result<()>>) {
    let mut args: Vec<String> = common.to_vec();
    args.extend([
        format!("--pause-policy={}", options.pause_policy),
        "--worker-concurrency=2".to_owned(),
        "--poll-interval-ms=50".to_owned(),
        "--shutdown-grace-secs=0".to_owned(),
        "--readiness-timeout-secs=60".to_owned(),
        format!("--reconcile-interval-secs={}", options.reconcile_every_secs),
        format!("--idle-pause-secs={}", options.idle_pause_secs),
        format!("--worker-id=e2e-{}", Uuid::new_v4().simple()),
    ]);
    if let Generator::Script(script) = &options.generator {
        let path = root.join("generator.sh");
        std::fs::write(&path, script).expect("write generator script");
        args.push("--generator=command".to_owned());
        // GENERATOR_COMMAND is split on whitespace: the root holds none.
        args.push(format!("--generator-command=sh {}", path.display()));
    }
    let config =
        job_worker::Config::try_parse_from(std::iter::once("job-worker".to_owned()).chain(args))
            .expect("job-worker config parses");
    let settings = config.worker_settings();
    let mut wired = job_worker::wiring::build_all(&config)
        .await
        .expect("job-worker wiring");
    if mode == Mode::Local {
        // One owner per root (see `start_api`): the build loop and the reconciler share the api-server's
        // runtime instead of the one the wiring opened.
        wired.worker.pipeline.runtime = Arc::new(local.clone());
    }
    if mode == Mode::Local || options.fast_reconcile {
        let mut policy = config.reconcile_config();
        if options.fast_reconcile {
            // Not settable through the configuration: seconds instead of the production minutes.
            policy.pause_grace = Duration::from_secs(1);
            policy.pause_backoff_base = Duration::from_secs(1);
            policy.pause_backoff_max = Duration::from_secs(2);
            policy.orphan_after = Duration::from_secs(3);
        }
        wired.reconciler = Arc::new(Reconciler::new(
            ReconcileDeps {
                repo: wired.worker.pipeline.repo.clone(),
                live: wired.worker.pipeline.live.clone(),
                queue: wired.worker.queue.clone(),
                runtime: wired.worker.pipeline.runtime.clone(),
            },
            policy,
        ));
    }
    let stop = CancellationToken::new();
    // What the binary's `main` does: the build loop and the reconciler, stopped together.
    let (builds_stop, reconcile_stop) = (stop.clone(), stop.clone());
    let every = Duration::from_secs(config.reconcile_interval_secs);
    let reconciler = tokio::spawn(job_worker::run_reconciler(
        wired.reconciler,
        wired.lock,
        every,
        reconcile_stop,
    ));
    let handle = tokio::spawn(async move {
        let result = job_worker::run(wired.worker, settings, builds_stop.clone()).await;
        builds_stop.cancel();
        let _ = reconciler.await;
        result
    });
    (stop, handle)
}
/// A signed HS256 token for `user`.
pub fn token(user: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    encode(
        &Header::default(),
        &json!({ "sub": user, "exp": now + 600, "nbf": now - 10 }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode token")
}

/// The job row's sandbox columns.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SandboxRow {
    pub status: String,
    pub sandbox_id: Option<String>,
    pub sandbox_state: String,
    pub sandbox_paused: bool,
    pub preview_url: Option<String>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str, user: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token(user))
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, user: &str, body: Option<Value>) -> reqwest::Response {
        let req = self.client.post(self.url(path)).bearer_auth(token(user));
        let req = match body {
            Some(body) => req.json(&body),
            None => req,
        };
        req.send().await.expect("request")
    }

    /// Creates a project and starts a build of `goal` on it; returns the job id.
    pub async fn start_build(&self, user: &str, goal: &str) -> JobId {
        let resp = self
            .post("/api/projects", user, Some(json!({"name": "e2e app"})))
            .await;
        assert_eq!(resp.status(), 201, "create project");
        let project: Value = resp.json().await.expect("json");
        let project_id = project["id"].as_str().expect("project id").to_owned();
        let resp = self
            .post(
                "/api/generation/start",
                user,
                Some(json!({"project_id": project_id, "goal": goal})),
            )
            .await;
        assert_eq!(resp.status(), 201, "start build");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["status"], "queued");
        JobId::parse(body["job_id"].as_str().expect("job_id")).expect("uuid")
    }

    pub async fn status(&self, job: JobId, user: &str) -> Value {
        let resp = self
            .get(&format!("/api/generation/{job}/status"), user)
            .await;
        assert_eq!(resp.status(), 200, "status");
        resp.json().await.expect("status json")
    }

    /// Polls the status until `done` holds, failing after `deadline`.
    pub async fn wait_status(
        &self,
        job: JobId,
        user: &str,
        deadline: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = tokio::time::Instant::now() + deadline;
        let mut last;
        let found = loop {
            last = self.status(job, user).await;
            if done(&last) {
                break true;
            }
            if tokio::time::Instant::now() >= end {
                break false;
            }
            tokio::time::sleep(POLL_EVERY).await;
        };
        assert!(
            found,
            "[{:?}] {what}: not within {deadline:?}; last status {last:#}",
            self.mode
        );
        last
    }

    pub async fn row(&self, job: JobId) -> SandboxRow {
        sqlx::query_as::<_, SandboxRow>(
            "SELECT status, sandbox_id, sandbox_state, sandbox_paused, preview_url \
             FROM jobs WHERE id = $1",
        )
        .bind(job.as_uuid())
        .fetch_one(&self.pool)
        .await
        .expect("job row")
    }

    /// Our sandboxes the runtime still has for `job`.
    pub async fn sandboxes_of(&self, job: JobId) -> Vec<SandboxId> {
        self.runtime
            .list()
            .await
            .expect("list sandboxes")
            .into_iter()
            .filter(|s| s.job_id == Some(job))
            .map(|s| s.sandbox_id)
            .collect()
    }

    /// Replaces the E2B-compatible server's faults (`None` in local mode, which has no faults to inject).
    pub async fn set_faults(&self, faults: &FaultConfig) -> Option<()> {
        let url = self.e2b_url.as_ref()?;
        let resp = self
            .client
            .post(format!("{url}/_faults"))
            .header("X-API-Key", E2B_API_KEY)
            .json(faults)
            .send()
            .await
            .expect("set faults");
        assert!(
            resp.status().is_success(),
            "faults refused: {}",
            resp.status()
        );
        Some(())
    }

    /// `true` when the runtime no longer has the sandbox.
    pub async fn sandbox_gone(&self, id: &SandboxId) -> bool {
        matches!(self.runtime.state(id).await, Err(SandboxError::NotFound(_)))
    }

    /// Stops the worker, the api-server and the E2B server, and kills every sandbox left. Call at the end of
    /// a test; `Drop` removes the database, the Redis keys and the directory either way.
    pub async fn shut_down(mut self) {
        self.worker_stop.cancel();
        if let Some(worker) = self.worker.take() {
            let ended = tokio::time::timeout(Duration::from_secs(30), worker).await;
            assert!(
                matches!(ended, Ok(Ok(Ok(())))),
                "worker did not stop cleanly: {ended:?}"
            );
        }
        self.api_stop.cancel();
        if let Some(api) = self.api.take() {
            let ended = tokio::time::timeout(Duration::from_secs(30), api).await;
            assert!(
                matches!(ended, Ok(Ok(Ok(())))),
                "api-server did not stop cleanly: {ended:?}"
            );
        }
        self.local.shutdown_all().await;
        self.e2b_stop.cancel();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.worker_stop.cancel();
        self.api_stop.cancel();
        self.e2b_stop.cancel();
        let local = self.local.clone();
        let db_name = self.db_name.clone();
        let prefix = self.prefix.clone();
        let root = self.root.clone();
        // Drop cannot await; a thread with its own runtime cleans up even after a panic.
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                // No process of a sandbox may outlive the test (a paused one would stay stopped forever).
                local.shutdown_all().await;
                let _ = std::fs::remove_dir_all(&root);
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

/// Polls `cond` until it holds (`true`) or `deadline` passes (`false`).
pub async fn wait_until<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// GETs a preview: `Ok(body)` for a 2xx answer, `Err(reason)` for no answer in time or a 5xx.
pub async fn fetch_preview(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(PREVIEW_TIMEOUT)
        .build()
        .expect("client");
    match client.get(url).send().await {
        Err(e) => Err(format!("no answer: {e}")),
        Ok(resp) if resp.status().is_server_error() => Err(format!("answered {}", resp.status())),
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(body)
            } else {
                Err(format!("answered {status}"))
            }
        }
    }
}
