//! `cargo xtask dev`: Postgres and Redis (private ones when none answer), the `slipway` schema, and
//! api-server plus job-worker built and running with local sandboxes, until Ctrl-C.
//!
//! Settings already in the environment win; the defaults below fill in the rest. On Ctrl-C (or SIGTERM)
//! the binaries get SIGTERM and are waited for, every sandbox under the dev sandbox root is killed (its
//! processes and its directory: nothing started here keeps running), then the private services stop.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::services::{self, ensure_postgres, ensure_redis};
use crate::workspace::{
    cargo_command, env_or, target_dir, DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL,
};
use crate::{migrate, node, run, token};

pub const DEFAULT_API_ADDR: &str = "127.0.0.1:8000";
/// The preview gateway's listener; previews are `http://{label}.preview.localhost:{port}/`, which browsers
/// and curl resolve to this machine.
pub const DEFAULT_PREVIEW_ADDR: &str = "127.0.0.1:8001";
/// The dev session's preview secret: labels stay the same across restarts. Never a production value.
const DEV_PREVIEW_SECRET: &str = "slipway-dev-preview-secret";
/// The HS256 secret `dev` gives the api-server unless JWT_HS256_SECRET is set (`demo` signs with it too).
pub const DEV_SECRET: &str = "slipway-dev-secret";
const READY_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(30);
const BINARIES: [&str; 2] = ["api-server", "job-worker"];

pub async fn run() -> anyhow::Result<ExitCode> {
    // Local sandboxes run npm and node here; E2B's run them in the provider's template.
    if env_or("SANDBOX_RUNTIME", "local") == "local" {
        node::require_node_and_npm().await?;
    }
    let database_url = services::parse_url(
        "DATABASE_URL",
        &env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
    )?;
    let redis_url = services::parse_url("REDIS_URL", &env_or("REDIS_URL", DEFAULT_REDIS_URL))?;
    let postgres = ensure_postgres(&database_url).await?;
    let redis = ensure_redis(&redis_url).await?;
    eprintln!("xtask: {}", postgres.describe());
    eprintln!("xtask: {}", redis.describe());
    migrate::up(postgres.url()).await?;

    let mut build = cargo_command();
    build.args(["build", "-p", "api-server", "-p", "job-worker"]);
    run::checked(build, "cargo build -p api-server -p job-worker").await?;

    let settings = Settings::from_env(&postgres, &redis)?;
    std::fs::create_dir_all(&settings.sandbox_root)
        .with_context(|| format!("cannot create {}", settings.sandbox_root.display()))?;
    let mut children = Vec::new();
    for name in BINARIES {
        match spawn(name, &settings) {
            Ok(child) => children.push((name, child)),
            Err(err) => {
                stop_all(&mut children).await;
                return Err(err);
            }
        }
    }
    let ready = tokio::select! {
        ready = wait_until_ready(&settings.api_addr, &mut children) => ready,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    if let Err(err) = ready {
        stop_all(&mut children).await;
        return Err(err);
    }
    print_banner(&settings, &postgres, &redis)?;

    let outcome = wait_for_stop(&mut children).await;
    stop_all(&mut children).await;
    kill_sandboxes(&settings.sandbox_root).await;
    drop(redis);
    drop(postgres);
    outcome
}

/// The environment both binaries get.
struct Settings {
    vars: Vec<(&'static str, String)>,
    api_addr: String,
    /// `PREVIEW_DOMAIN`: where previews are served.
    preview_domain: String,
    sandbox_root: PathBuf,
    /// The HS256 secret, when the api-server verifies tokens with one (so a dev token can be minted).
    secret: Option<String>,
}

impl Settings {
    fn from_env(postgres: &services::Service, redis: &services::Service) -> anyhow::Result<Self> {
        let api_addr = env_or("API_ADDR", DEFAULT_API_ADDR);
        let default_root = target_dir().join("dev").join("sandboxes");
        let sandbox_root = PathBuf::from(env_or(
            "LOCAL_SANDBOX_ROOT",
            &default_root.to_string_lossy(),
        ));
        let preview_addr = env_or("PREVIEW_ADDR", DEFAULT_PREVIEW_ADDR);
        let preview_port = preview_addr
            .rsplit_once(':')
            .map_or("8001", |(_, port)| port)
            .to_owned();
        let preview_domain = env_or(
            "PREVIEW_DOMAIN",
            &format!("preview.localhost:{preview_port}"),
        );
        let mut vars = vec![
            ("PREVIEW_ADDR", preview_addr),
            ("PREVIEW_DOMAIN", preview_domain.clone()),
            (
                "PREVIEW_SECRET",
                env_or("PREVIEW_SECRET", DEV_PREVIEW_SECRET),
            ),
            ("DATABASE_URL", postgres.url().to_string()),
            ("REDIS_URL", redis.url().to_string()),
            ("API_ADDR", api_addr.clone()),
            ("SANDBOX_RUNTIME", env_or("SANDBOX_RUNTIME", "local")),
            (
                "LOCAL_SANDBOX_ROOT",
                sandbox_root.to_string_lossy().into_owned(),
            ),
        ];
        let asymmetric = ["JWT_JWKS_URL", "JWT_PUBLIC_KEY_PEM"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
        let secret = match std::env::var("JWT_HS256_SECRET") {
            Ok(secret) if !secret.is_empty() => Some(secret),
            // Production-style keys are configured: leave auth alone, there is nothing we can sign.
            _ if asymmetric => None,
            _ => Some(DEV_SECRET.to_owned()),
        };
        if let Some(secret) = &secret {
            vars.push(("JWT_HS256_SECRET", secret.clone()));
        }
        Ok(Self {
            vars,
            api_addr,
            preview_domain,
            sandbox_root,
            secret,
        })
    }
}

fn spawn(name: &str, settings: &Settings) -> anyhow::Result<Child> {
    let program = target_dir().join("debug").join(name);
    let mut command = Command::new(&program);
    command
        .current_dir(crate::workspace::root())
        .envs(settings.vars.iter().map(|(key, value)| (*key, value)))
        // Their own process group: Ctrl-C reaches xtask only, which then stops them in order.
        .process_group(0);
    command
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))
}

/// Polls GET /healthz until it answers 200, failing as soon as a binary exits.
async fn wait_until_ready(api_addr: &str, children: &mut [(&str, Child)]) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("cannot build an HTTP client")?;
    let url = format!("http://{api_addr}/healthz");
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        for (name, child) in children.iter_mut() {
            if let Some(status) = child.try_wait().context("cannot poll a child")? {
                anyhow::bail!("{name} exited ({status}) before the API was ready");
            }
        }
        if let Ok(response) = client.get(&url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("api-server did not answer GET {url} within {READY_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_banner(
    settings: &Settings,
    postgres: &services::Service,
    redis: &services::Service,
) -> anyhow::Result<()> {
    let api = format!("http://{}", settings.api_addr);
    println!();
    println!("Slipway is running; Ctrl-C stops it.");
    println!("  API        {api}");
    println!(
        "  Previews   http://<label>.{} (a paused preview wakes when you open it)",
        settings.preview_domain
    );
    println!("  Postgres   {}", postgres.describe());
    println!("  Redis      {}", redis.describe());
    println!("  Sandboxes  {}", display_relative(&settings.sandbox_root));
    let Some(secret) = &settings.secret else {
        println!("  Auth uses JWT_JWKS_URL / JWT_PUBLIC_KEY_PEM: bring a token from your issuer.");
        return Ok(());
    };
    let issuer = std::env::var("JWT_ISSUER")
        .ok()
        .filter(|issuer| !issuer.is_empty());
    let jwt = token::hs256(
        secret,
        token::DEV_USER,
        issuer.as_deref(),
        token::DEV_TOKEN_LIFETIME,
    )?;
    println!();
    println!("Dev token (sub={}, valid 30 days):", token::DEV_USER);
    println!("  export TOKEN={jwt}");
    println!();
    println!("Create a project, then start a build:");
    println!(
        "  PROJECT_ID=$(curl -sf -X POST {api}/api/projects -H \"Authorization: Bearer $TOKEN\" \
         -H 'Content-Type: application/json' -d '{{\"name\":\"demo\"}}' | sed -E 's/.*\"id\":\"([^\"]+)\".*/\\1/')"
    );
    println!(
        "  curl -s -X POST {api}/api/generation/start -H \"Authorization: Bearer $TOKEN\" \
         -H 'Content-Type: application/json' -d \"{{\\\"project_id\\\":\\\"$PROJECT_ID\\\",\\\"goal\\\":\\\"a todo list app\\\"}}\""
    );
    println!("  curl -s {api}/api/generation/<job_id>/status -H \"Authorization: Bearer $TOKEN\"");
    println!();
    Ok(())
}

/// Kills every local sandbox the dev session left (paused ones included): processes and directories.
async fn kill_sandboxes(root: &Path) {
    match infra_local::LocalRuntime::new(root.to_path_buf()) {
        Ok(runtime) => {
            runtime.shutdown_all().await;
            eprintln!(
                "xtask: killed the sandboxes under {}",
                display_relative(root)
            );
        }
        Err(err) => eprintln!("xtask: cannot open {}: {err}", root.display()),
    }
}

/// Waits for Ctrl-C or SIGTERM (a clean stop) or for a binary to exit on its own (an error).
async fn wait_for_stop(children: &mut [(&str, Child)]) -> anyhow::Result<ExitCode> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let waits = children
        .iter_mut()
        .map(|(name, child)| Box::pin(async move { (*name, child.wait().await) }));
    let exited = futures::future::select_all(waits);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
        _ = terminate.recv() => Ok(ExitCode::SUCCESS),
        ((name, status), _, _) = exited => {
            let status = status.with_context(|| format!("waiting for {name}"))?;
            anyhow::bail!("{name} exited ({status}); stopping the rest")
        }
    }
}

/// SIGTERM to every child still running, then waits for each (SIGKILL after the deadline).
async fn stop_all(children: &mut [(&str, Child)]) {
    for (_, child) in children.iter_mut() {
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for (name, child) in children.iter_mut() {
        match tokio::time::timeout(STOP_DEADLINE, child.wait()).await {
            Ok(Ok(status)) => report_stopped(name, status),
            _ => {
                eprintln!("xtask: {name} did not stop within {STOP_DEADLINE:?}; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

fn report_stopped(name: &str, status: ExitStatus) {
    if !status.success() {
        eprintln!("xtask: {name} stopped ({status})");
    }
}

fn display_relative(path: &Path) -> String {
    path.strip_prefix(crate::workspace::root())
        .unwrap_or(path)
        .display()
        .to_string()
}
