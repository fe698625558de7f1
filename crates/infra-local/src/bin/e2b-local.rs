//! `e2b-local`: an E2B-compatible platform API, sandbox proxy and envd over local sandboxes (see
//! `infra_local::e2b_server`). Point Slipway at it with `E2B_API_URL=http://<addr>`,
//! `E2B_SANDBOX_URL=http://<addr>` and `E2B_SANDBOX_SCHEME=http`; the official SDK with `E2B_API_URL` and
//! `E2B_SANDBOX_URL`.

use clap::Parser;
use infra_local::e2b_server::{local_domain, router, E2bServerConfig, FaultConfig};
use infra_local::LocalRuntime;

/// Serves the E2B API, backed by local process sandboxes.
#[derive(Parser)]
struct Config {
    /// Address to listen on.
    #[arg(long, env = "E2B_LOCAL_ADDR", default_value = "127.0.0.1:49982")]
    addr: std::net::SocketAddr,
    /// Directory the sandboxes live in.
    #[arg(
        long,
        env = "LOCAL_SANDBOX_ROOT",
        default_value = "target/e2b-local-sandboxes"
    )]
    root: std::path::PathBuf,
    /// The only `X-API-Key` accepted.
    #[arg(long, env = "E2B_API_KEY", hide_env_values = true)]
    api_key: String,
    /// The domain sandbox hosts live under (`{port}-{sandboxID}.{domain}`), answered at create and
    /// connect; default `localhost:<port>`, which browsers resolve to this machine.
    #[arg(long, env = "E2B_LOCAL_DOMAIN")]
    domain: Option<String>,
    /// Share of platform API calls answered 503 without being processed (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    control_fail_ratio: f64,
    /// Share of platform API calls processed, then answered 503 anyway (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    ambiguous_fail_ratio: f64,
    /// Share of pauses that fail with a 500 (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    pause_fail_ratio: f64,
    /// A sandbox id every endpoint answers 404 for (repeatable).
    #[arg(long = "not-found-sandbox")]
    not_found_sandboxes: Vec<String>,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = Config::parse();
    let faults = FaultConfig {
        control_fail_ratio: config.control_fail_ratio,
        ambiguous_fail_ratio: config.ambiguous_fail_ratio,
        pause_fail_ratio: config.pause_fail_ratio,
        not_found_sandboxes: config.not_found_sandboxes,
        latency_ms: config.latency_ms,
        ..FaultConfig::default()
    };
    faults.validate()?;
    let runtime = LocalRuntime::new(config.root)?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let domain = config.domain.unwrap_or_else(|| local_domain(addr));
    tracing::info!(%addr, %domain, "e2b-local listening");
    let app = router(
        runtime.clone(),
        E2bServerConfig {
            api_key: config.api_key,
            domain,
            faults,
        },
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Like `cargo xtask dev`, leave nothing running: the sandboxes go with the server.
    runtime.shutdown_all().await;
    Ok(())
}
