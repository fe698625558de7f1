//! The harness: api-server and job-worker in-process over a fresh Postgres database, a random Redis prefix
//! and a temporary sandbox root, with the sandbox runtime either local or E2B (the production client against
//! the E2B-compatible local server). Both apps are configured through their own `Config` (parsed from the
//! command line their binaries take) and built by their own wiring; in local mode the api-server and the
//! workers then share one `LocalRuntime` (a root has one owner per process), and `Options::fast_reconcile`
//! tunes the reconciler beyond what the configuration offers. Each worker runs in its own tokio runtime, so
//! a test can crash one. Everything is removed at the end, also after a panic. Logs are quiet unless
//! `TEST_LOG` is set. `REDIS_URL` may name a single Redis or a Redis Cluster.

mod apps;
pub mod browser;
mod client;

pub use client::token;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fred::prelude::{ClientLike, KeysInterface, LuaInterface};
use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use domain::ports::SandboxRuntime;
use infra_local::e2b_server::FaultConfig;
use infra_local::LocalRuntime;

pub const SECRET: &str = "e2e-hs256-secret";
/// `PREVIEW_SECRET` of the gateway tests.
pub const PREVIEW_SECRET: &str = "e2e-preview-secret-0123456789";
const E2B_API_KEY: &str = "e2b_e2e_test_key";
/// How long a build may take (npm and node start are slow on a busy machine).
pub const BUILD_DEADLINE: Duration = Duration::from_secs(90);
/// How long a preview request may take before it counts as "not answering".
pub const PREVIEW_TIMEOUT: Duration = Duration::from_secs(2);
/// Between two polls of a condition.
const POLL_EVERY: Duration = Duration::from_millis(200);

use apps::{serve_e2b, start_api, start_worker, worker_args, WorkerHandle};

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        bin_support::init_telemetry(bin_support::LogFormat::Pretty);
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
    /// `READINESS_TIMEOUT_SECS`: how long a dev server has to answer.
    pub readiness_timeout_secs: u64,
    /// The preview gateway with this `PREVIEW_ACCESS` (`public` or `signed`); in e2b mode sandboxes are
    /// then created with private previews.
    pub gateway: Option<&'static str>,
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
            readiness_timeout_secs: 60,
            gateway: None,
        }
    }
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `redis://…` for a single Redis or `redis-cluster://…` for a cluster: `cargo xtask test` runs the suite
/// on both.
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
    /// `PREVIEW_DOMAIN` when the gateway is on (`preview.localhost:{port}`).
    pub preview_domain: Option<String>,
    db_name: String,
    prefix: String,
    api_stop: CancellationToken,
    api: Option<JoinHandle<anyhow::Result<()>>>,
    worker_args: Vec<String>,
    fast_reconcile: bool,
    /// The live workers, oldest first.
    workers: Vec<WorkerHandle>,
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
                "--e2b-sandbox-scheme=http".to_owned(),
            ]);
            let mut config = infra_e2b::E2bConfig::new(infra_e2b::ApiKey::new(E2B_API_KEY), "base");
            config.api_url.clone_from(&url);
            config.sandbox_url = Some(url);
            config.scheme = infra_e2b::Scheme::Http;
            Arc::new(infra_e2b::E2bRuntime::new(config).expect("e2b client"))
        }
    };

    if options.gateway.is_some() && mode == Mode::E2b {
        common.push("--e2b-private-previews".to_owned());
    }
    let (address, preview_domain, api_stop, api) =
        start_api(mode, &common, &local, options.gateway).await;
    let worker_args = worker_args(&common, &options, &root);
    let worker = start_worker(
        mode,
        worker_args.clone(),
        options.fast_reconcile,
        local.clone(),
    );
    TestApp {
        mode,
        address,
        client: reqwest::Client::new(),
        pool,
        runtime,
        local,
        root,
        e2b_url,
        preview_domain,
        db_name,
        prefix,
        api_stop,
        api: Some(api),
        worker_args,
        fast_reconcile: options.fast_reconcile,
        workers: vec![worker],
        e2b_stop,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            worker.stop.cancel();
            // Ends the worker's runtime without waiting for it.
            worker.crash.take();
        }
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
                delete_prefix(&client, &prefix).await;
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

/// Deletes every key of the queue under `prefix` in one script on their slot, atomically.
const DELETE_QUEUE: &str = "local n = 0 local cursor = '0' repeat \
    local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000) cursor = page[1] \
    for _, key in ipairs(page[2]) do n = n + redis.call('DEL', key) end until cursor == '0' return n";

/// Deletes every key under `prefix` and returns how many there were. The queue's keys go first and together,
/// as a lost Redis (or the lost cluster node holding their one slot) loses them: deleted one by one while
/// the reconciler repairs the queue, a job could be left pending without its metadata, which no loss
/// produces and nothing leases. The rest follow one by one; on a Redis Cluster every node is scanned (a
/// plain SCAN sees one).
async fn delete_prefix(client: &infra_redis::Client, prefix: &str) -> usize {
    let queue = infra_redis::Keys::new(prefix);
    let queue_keys: usize = client
        .eval(
            DELETE_QUEUE,
            vec![queue.queue_pending()],
            vec![format!("{prefix}:{{q}}:*")],
        )
        .await
        .expect("delete the queue");
    let pattern = format!("{prefix}:*");
    let keys: Vec<_> = if client.is_clustered() {
        client
            .scan_cluster_buffered(pattern, Some(500), None)
            .try_collect()
            .await
    } else {
        client
            .scan_buffered(pattern, Some(500), None)
            .try_collect()
            .await
    }
    .expect("scan");
    let n = keys.len();
    for key in keys {
        let _: () = client.del(key).await.expect("del");
    }
    queue_keys + n
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

/// GETs a preview as a browser would (`*.localhost` hosts resolve to this machine): `Ok(body)` for a 2xx
/// answer, `Err(reason)` for no answer in time or a 5xx.
pub async fn fetch_preview(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(PREVIEW_TIMEOUT)
        .dns_resolver(Arc::new(infra_e2b::LocalhostResolver))
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
