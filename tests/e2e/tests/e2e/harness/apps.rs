//! Starting the three servers: the E2B-compatible server, the api-server and job-workers, each through its
//! own configuration and wiring.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use domain::usecases::reconcile::{ReconcileDeps, Reconciler};
use infra_local::e2b_server::{self, E2bServerConfig, FaultConfig};
use infra_local::LocalRuntime;

use super::{Generator, Mode, Options, E2B_API_KEY, PREVIEW_SECRET, SECRET};

/// Serves the E2B-compatible server over `local` on an ephemeral port; returns its base URL.
pub(super) async fn serve_e2b(
    local: &LocalRuntime,
    faults: FaultConfig,
    stop: CancellationToken,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind e2b server");
    let addr = listener.local_addr().expect("addr");
    let url = format!("http://{addr}");
    let app = e2b_server::router(
        local.clone(),
        E2bServerConfig {
            api_key: E2B_API_KEY.into(),
            domain: e2b_server::local_domain(addr),
            faults,
        },
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    url
}

pub(super) async fn start_api(
    mode: Mode,
    common: &[String],
    local: &LocalRuntime,
    gateway: Option<&'static str>,
) -> (
    String,
    Option<String>,
    CancellationToken,
    JoinHandle<anyhow::Result<()>>,
) {
    let mut args: Vec<String> = common.to_vec();
    args.extend([
        "--api-addr=127.0.0.1:0".to_owned(),
        format!("--jwt-hs256-secret={SECRET}"),
        "--request-timeout-secs=30".to_owned(),
    ]);
    let mut preview = None;
    let mut preview_domain = None;
    if let Some(access) = gateway {
        // Bound first: the domain names its port.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind preview");
        let addr = listener.local_addr().expect("addr");
        let domain = format!("preview.localhost:{}", addr.port());
        args.extend([
            format!("--preview-addr={addr}"),
            format!("--preview-domain={domain}"),
            format!("--preview-secret={PREVIEW_SECRET}"),
            format!("--preview-access={access}"),
            "--preview-wake-wait-secs=60".to_owned(),
        ]);
        preview = Some(listener);
        preview_domain = Some(domain);
    }
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
    let handle = tokio::spawn(api_server::run_with(
        listener,
        preview,
        state,
        api_server::ServeLimits::default(),
        async move {
            signal.cancelled().await;
        },
    ));
    (address, preview_domain, stop, handle)
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
        resume: domain::usecases::resume::ResumeConfig::default(),
        gateway: config.gateway().expect("gateway settings"),
    })
    .expect("api state")
}

/// The job-worker's command line.
pub(super) fn worker_args(common: &[String], options: &Options, root: &Path) -> Vec<String> {
    let mut args: Vec<String> = common.to_vec();
    args.extend([
        format!("--pause-policy={}", options.pause_policy),
        "--worker-concurrency=2".to_owned(),
        "--poll-interval-ms=50".to_owned(),
        "--shutdown-grace-secs=0".to_owned(),
        format!(
            "--readiness-timeout-secs={}",
            options.readiness_timeout_secs
        ),
        format!("--reconcile-interval-secs={}", options.reconcile_every_secs),
        format!("--idle-pause-secs={}", options.idle_pause_secs),
    ]);
    if options.fast_reconcile {
        // Heartbeats every second, so that a lost lease is noticed within the test's patience.
        args.push("--lease-ttl-secs=3".to_owned());
    }
    if let Generator::Script(script) = &options.generator {
        let path = root.join("generator.sh");
        std::fs::write(&path, script).expect("write generator script");
        args.push("--generator=command".to_owned());
        // GENERATOR_COMMAND is split on whitespace: the root holds none.
        args.push(format!("--generator-command=sh {}", path.display()));
    }
    args
}

/// A job-worker in its own tokio runtime on its own thread, like a process of its own: dropping that
/// runtime ends every task of the worker at once, as a crash would.
pub(super) struct WorkerHandle {
    pub(super) stop: CancellationToken,
    pub(super) crash: Option<oneshot::Sender<()>>,
    pub(super) thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

pub(super) fn start_worker(
    mode: Mode,
    args: Vec<String>,
    fast: bool,
    local: LocalRuntime,
) -> WorkerHandle {
    let stop = CancellationToken::new();
    let (crash, crashed) = oneshot::channel::<()>();
    let token = stop.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let result = rt.block_on(async move {
            tokio::select! {
                result = run_worker(mode, args, fast, local, token) => result,
                // A crash (or the test going away): the runtime is dropped with everything in it.
                _ = crashed => Ok(()),
            }
        });
        rt.shutdown_background();
        result
    });
    WorkerHandle {
        stop,
        crash: Some(crash),
        thread: Some(thread),
    }
}

/// What the binary's `main` does after parsing: wiring, then the build loop and the reconciler until
/// `stop`.
async fn run_worker(
    mode: Mode,
    mut args: Vec<String>,
    fast: bool,
    local: LocalRuntime,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    args.push(format!("--worker-id=e2e-{}", Uuid::new_v4().simple()));
    let config =
        job_worker::Config::try_parse_from(std::iter::once("job-worker".to_owned()).chain(args))
            .expect("job-worker config parses");
    let settings = config.worker_settings();
    let mut wired = job_worker::wiring::build_all(&config).await?;
    if mode == Mode::Local {
        // One owner per root (see `start_api`): the build loop and the reconciler share the api-server's
        // runtime instead of the one the wiring opened.
        wired.worker.pipeline.runtime = Arc::new(local.clone());
    }
    if mode == Mode::Local || fast {
        let mut policy = config.reconcile_config();
        if fast {
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
    // The build loop and the reconciler, stopped together.
    let every = Duration::from_secs(config.reconcile_interval_secs);
    let reconciler = tokio::spawn(job_worker::run_reconciler(
        wired.reconciler,
        wired.lock,
        every,
        stop.clone(),
    ));
    let result = job_worker::run(wired.worker, settings, stop.clone()).await;
    stop.cancel();
    let _ = reconciler.await;
    result
}
