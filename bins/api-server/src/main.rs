//! The api-server binary: configuration, telemetry, adapters, then serve until SIGTERM.

use clap::Parser;
use tokio::net::TcpListener;

use api_server::{wiring, Config};
use bin_support::init_telemetry;

/// mimalloc: glibc's malloc (with its fastbin consolidation) was a fifth of the status route's CPU profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_telemetry(config.log_format);
    tracing::info!(
        addr = %config.api_addr,
        runtime = ?config.runtime.sandbox_runtime,
        redis_prefix = %config.redis_prefix,
        "starting api-server"
    );
    let limits = config.serve_limits(api_server::serve::file_limit::raise_to_hard());
    let state = wiring::build_state(&config).await?;
    let listener = TcpListener::bind(config.api_addr).await?;
    let preview = match config.preview_addr {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    api_server::run_with(
        listener,
        preview,
        state,
        limits,
        api_server::shutdown_signal(),
    )
    .await
}
