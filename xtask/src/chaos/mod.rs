//! `cargo xtask chaos`: Slipway under the faults an operator meets, checked from the outside.
//!
//! An api-server and two or more job-workers run as real processes (the debug binaries) over Postgres (a
//! database of the campaign's own), a private `redis-server` and local sandboxes. Builds are submitted
//! through the API while seeded faults hit: kill -9 of workers and of the api-server (each started again),
//! a worker stopped past its lease then continued, a Redis FLUSHALL, every Slipway backend of the database
//! terminated. Then the campaign waits for quiescence and prints what it found (see [`checks`]); it exits
//! non-zero when a target is missed. Everything listens on and talks to 127.0.0.1 only.

mod checks;
mod faults;
mod fleet;
mod traffic;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use fred::prelude::ClientLike;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use url::Url;

use crate::services;
use crate::workspace::{cargo_command, env_or, target_dir, DEFAULT_DATABASE_URL};
use checks::Counts;
use faults::Kind;
use fleet::{Member, Role};
use traffic::{Api, Founder};

/// The HS256 secret of the campaign's api-server.
const SECRET: &str = "slipway-chaos-secret";
/// The campaign's Redis key prefix (its Redis is private anyway).
const PREFIX: &str = "chaos";
/// Founders the builds are spread over (each has its own concurrency slots).
const FOUNDERS: usize = 6;
/// The ports the campaign may give the api-server.
const API_PORTS: std::ops::Range<u16> = 43000..43100;
/// How often the outcome is observed while waiting for quiescence.
const OBSERVE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Seed of the fault schedule and of the submission times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Builds submitted during the faults (default 30; 8 with --quick).
    #[arg(long)]
    builds: Option<usize>,
    /// Seconds of faults (default 120; 30 with --quick).
    #[arg(long)]
    fault_secs: Option<u64>,
    /// How many job-workers run.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=8))]
    workers: u16,
    /// The short campaign CI runs: fewer builds, 30 s of faults, every kind of fault once.
    #[arg(long)]
    quick: bool,
    /// Run the api-server and job-worker binaries in this directory instead of building them (another
    /// build, or another commit's, to compare).
    #[arg(long)]
    binaries: Option<std::path::PathBuf>,
}

/// The campaign's timing: the intervals the processes are configured with, and what follows from them.
#[derive(Debug, Clone, Copy)]
struct Timing {
    lease_ttl: Duration,
    reconcile_every: Duration,
    window: Duration,
    /// Between two faults, drawn in these bounds.
    gap: (Duration, Duration),
}

impl Timing {
    /// Quiescence must come within one lease TTL and two reconcile intervals after the last fault.
    fn target(&self) -> Duration {
        self.lease_ttl + self.reconcile_every * 2
    }
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let builds = args.builds.unwrap_or(if args.quick { 8 } else { 30 });
    let timing = Timing {
        lease_ttl: Duration::from_secs(10),
        reconcile_every: Duration::from_secs(5),
        window: Duration::from_secs(args.fault_secs.unwrap_or(if args.quick { 30 } else { 120 })),
        gap: if args.quick {
            (Duration::from_secs(2), Duration::from_secs(5))
        } else {
            (Duration::from_secs(3), Duration::from_secs(8))
        },
    };
    println!(
        "chaos: seed {}, {builds} builds, {} s of faults, {} workers, lease TTL {} s, reconcile every {} s",
        args.seed,
        timing.window.as_secs(),
        args.workers,
        timing.lease_ttl.as_secs(),
        timing.reconcile_every.as_secs()
    );
    let bin_dir = match &args.binaries {
        Some(dir) => dir.clone(),
        None => {
            let mut cargo = cargo_command();
            cargo.args(["build", "-p", "api-server", "-p", "job-worker"]);
            crate::run::checked(cargo, "cargo build of api-server and job-worker").await?;
            target_dir().join("debug")
        }
    };

    let server = services::parse_url(
        "DATABASE_URL",
        &env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
    )?;
    let postgres = services::ensure_postgres(&server).await?;
    let redis = services::private_redis().await?;
    println!("chaos: {}", postgres.describe());
    println!("chaos: {} (the campaign's own)", redis.describe());

    let run_dir = target_dir()
        .join("chaos")
        .join(format!("seed-{}-{}", args.seed, short_id()));
    let root = run_dir.join("sandboxes");
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let database =
        Database::create(postgres.url(), &format!("slipway_chaos_{}", short_id())).await?;
    let outcome = campaign(
        &args,
        builds,
        timing,
        &database,
        redis.url(),
        (&bin_dir, &run_dir, &root),
    )
    .await;
    kill_sandboxes(&root);
    let _ = std::fs::remove_dir_all(&root);
    database.drop_it().await;
    let report = outcome?;
    let path = run_dir.join("report.md");
    std::fs::write(&path, &report.markdown)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", report.markdown);
    println!("chaos: report and logs in {}", run_dir.display());
    Ok(if report.met {
        ExitCode::SUCCESS
    } else {
        eprintln!("chaos: a target was missed");
        ExitCode::FAILURE
    })
}

/// The campaign's database, created fresh and dropped at the end.
struct Database {
    url: Url,
    name: String,
    admin: PgPool,
    /// The checks' own connections, named so that the Postgres fault does not terminate them.
    checker: PgPool,
}

impl Database {
    async fn create(server: &Url, name: &str) -> anyhow::Result<Self> {
        let admin_url = crate::bench::stack::database_url(server, "postgres");
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(PgConnectOptions::from_url(&admin_url)?.application_name("slipway-chaos"))
            .await
            .context("cannot connect to the postgres database")?;
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&admin)
            .await
            .with_context(|| format!("cannot create {name}"))?;
        let url = crate::bench::stack::database_url(server, name);
        let checker = PgPoolOptions::new()
            .max_connections(3)
            .connect_with(PgConnectOptions::from_url(&url)?.application_name("slipway-chaos"))
            .await
            .with_context(|| format!("cannot connect to {name}"))?;
        infra_pg::migrate(&checker)
            .await
            .with_context(|| format!("cannot migrate {name}"))?;
        Ok(Self {
            url,
            name: name.to_owned(),
            admin,
            checker,
        })
    }

    /// Terminates every backend of Slipway's processes on the campaign's database; how many.
    async fn terminate_backends(&self) -> anyhow::Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'slipway'",
        )
        .bind(&self.name)
        .fetch_one(&self.admin)
        .await
        .context("cannot terminate the backends")
    }

    async fn drop_it(self) {
        self.checker.close().await;
        let dropped = sqlx::query(&format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            self.name
        ))
        .execute(&self.admin)
        .await;
        if let Err(error) = dropped {
            eprintln!("chaos: could not drop {}: {error}", self.name);
        }
    }
}

/// What the campaign found.
struct Report {
    markdown: String,
    met: bool,
}

async fn campaign(
    args: &ChaosArgs,
    builds: usize,
    timing: Timing,
    database: &Database,
    redis_url: &Url,
    (bin_dir, run_dir, root): (&Path, &Path, &Path),
) -> anyhow::Result<Report> {
    let port = free_api_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let common = common_env(database, redis_url, root, timing);
    let mut api_env = common.clone();
    api_env.extend([
        ("API_ADDR".to_owned(), format!("127.0.0.1:{port}")),
        ("JWT_HS256_SECRET".to_owned(), SECRET.to_owned()),
    ]);
    let mut fleet = vec![Member::new(Role::Api, api_env, run_dir)];
    for i in 0..usize::from(args.workers) {
        fleet.push(Member::new(Role::Worker(i), common.clone(), run_dir));
    }
    let mut fleet = Fleet(fleet);
    for member in &mut fleet.0 {
        member.start(bin_dir)?;
    }
    let result = async {
        fleet::wait_healthy(&base, &mut fleet.0[0]).await?;
        run_phases(
            args, builds, timing, database, redis_url, &base, bin_dir, &mut fleet, root,
        )
        .await
    }
    .await;
    for member in &mut fleet.0 {
        member.stop().await;
    }
    result
}

/// The processes, the api-server first.
struct Fleet(Vec<Member>);

impl Fleet {
    fn member(&mut self, role: Role) -> &mut Member {
        // Every role the campaign names is in the fleet.
        let at = self.0.iter().position(|m| m.role == role).unwrap_or(0);
        &mut self.0[at]
    }

    /// The workers a fault may pick: running and not stopped.
    fn available_workers(&self) -> Vec<Role> {
        self.0
            .iter()
            .filter(|m| matches!(m.role, Role::Worker(_)) && m.is_running() && !m.stalled)
            .map(|m| m.role)
            .collect()
    }
}

/// Undoing a fault: a process started again, or continued.
#[derive(Debug, Clone, Copy)]
enum Restore {
    Start(Role),
    Continue(Role),
}

#[allow(clippy::too_many_arguments)]
async fn run_phases(
    args: &ChaosArgs,
    builds: usize,
    timing: Timing,
    database: &Database,
    redis_url: &Url,
    base: &str,
    bin_dir: &Path,
    fleet: &mut Fleet,
    root: &Path,
) -> anyhow::Result<Report> {
    let api = Api::new(base.to_owned())?;
    let mut founders = Vec::new();
    for i in 0..FOUNDERS {
        let token = crate::token::hs256(
            SECRET,
            &format!("chaos-founder-{i}"),
            None,
            Duration::from_secs(3600),
        )?;
        let project = api.create_project(&token).await?;
        founders.push(Founder { token, project });
    }
    let redis = infra_redis::connect(redis_url.as_str())
        .await
        .context("cannot connect to the campaign's Redis")?;
    let keys = infra_redis::Keys::new(PREFIX);

    let mut rng = StdRng::seed_from_u64(args.seed);
    let plan = faults::schedule(&mut rng, timing.window, timing.gap, timing.lease_ttl);
    let submit_at = faults::submissions(&mut rng, builds, timing.window, 0.7);
    let start = tokio::time::Instant::now();
    let submissions: Vec<_> = submit_at
        .into_iter()
        .enumerate()
        .map(|(n, at)| {
            let api = api.clone();
            let founder = founders[n % founders.len()].clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(start + at).await;
                api.submit(&founder, n).await
            })
        })
        .collect();

    // The faults, each undone after its hold; restores due before the next fault come first.
    let mut done: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut restores: Vec<(tokio::time::Instant, Restore)> = Vec::new();
    let mut crashes = 0;
    for fault in &plan {
        let due = start + fault.at;
        restore_until(&mut restores, Some(due), fleet, bin_dir).await?;
        tokio::time::sleep_until(due).await;
        crashes += restart_crashed(fleet, bin_dir)?;
        let now = tokio::time::Instant::now();
        let applied = match fault.kind {
            Kind::KillWorker | Kind::StallWorker => {
                let workers = fleet.available_workers();
                if workers.is_empty() {
                    false
                } else {
                    let role = workers[fault.pick % workers.len()];
                    if fault.kind == Kind::KillWorker {
                        fleet.member(role).kill9().await;
                        restores.push((now + fault.hold, Restore::Start(role)));
                    } else {
                        fleet.member(role).stall(true);
                        restores.push((now + fault.hold, Restore::Continue(role)));
                    }
                    true
                }
            }
            Kind::KillApi => {
                let api = fleet.member(Role::Api);
                let running = api.is_running();
                if running {
                    api.kill9().await;
                    restores.push((now + fault.hold, Restore::Start(Role::Api)));
                }
                running
            }
            Kind::FlushRedis => {
                let _: () = redis.flushall(false).await.context("FLUSHALL failed")?;
                true
            }
            Kind::TerminatePostgres => database.terminate_backends().await? > 0,
        };
        if applied {
            *done.entry(fault.kind.label()).or_default() += 1;
            println!(
                "chaos: {:>6.1} s  {}",
                fault.at.as_secs_f64(),
                fault.kind.label()
            );
        }
    }
    tokio::time::sleep_until(start + timing.window).await;
    restore_until(&mut restores, None, fleet, bin_dir).await?;
    crashes += restart_crashed(fleet, bin_dir)?;
    let faults_ended = Instant::now();
    println!("chaos: faults over; waiting for quiescence");

    let mut accepted = HashSet::new();
    let mut refused = 0;
    for submission in submissions {
        match submission.await.context("a submission task panicked")? {
            Ok(id) => {
                accepted.insert(id);
            }
            Err(error) => {
                refused += 1;
                eprintln!("chaos: a build was never accepted: {error:#}");
            }
        }
    }

    let patience = (timing.target() * 4).max(Duration::from_secs(90));
    let mut quiet_after = None;
    let mut counts;
    loop {
        crashes += restart_crashed(fleet, bin_dir)?;
        counts = checks::observe(&database.checker, &redis, &keys, root, &accepted).await?;
        if counts.quiescent() {
            quiet_after = Some(faults_ended.elapsed());
            break;
        }
        if faults_ended.elapsed() > patience {
            break;
        }
        tokio::time::sleep(OBSERVE_EVERY).await;
    }
    let _ = redis.quit().await;
    Ok(report(ReportInput {
        args,
        builds,
        timing,
        accepted: accepted.len(),
        refused,
        crashes,
        done,
        counts,
        quiet_after,
        patience,
    }))
}

/// Applies the restores due by `until` (all of them when `None`), in time order.
async fn restore_until(
    restores: &mut Vec<(tokio::time::Instant, Restore)>,
    until: Option<tokio::time::Instant>,
    fleet: &mut Fleet,
    bin_dir: &Path,
) -> anyhow::Result<()> {
    restores.sort_by_key(|(at, _)| *at);
    while let Some(&(at, restore)) = restores.first() {
        if until.is_some_and(|until| at > until) {
            break;
        }
        restores.remove(0);
        tokio::time::sleep_until(at).await;
        match restore {
            Restore::Start(role) => fleet.member(role).start(bin_dir)?,
            Restore::Continue(role) => fleet.member(role).stall(false),
        }
    }
    Ok(())
}

/// Starts again any process that exited without being killed (a crash is reported, not hidden).
fn restart_crashed(fleet: &mut Fleet, bin_dir: &Path) -> anyhow::Result<usize> {
    let mut crashed = 0;
    for member in &mut fleet.0 {
        if let Some(status) = member.exited() {
            eprintln!(
                "chaos: {} exited on its own ({status}); starting it again",
                member.role.name()
            );
            crashed += 1;
            member.start(bin_dir)?;
        }
    }
    Ok(crashed)
}

/// The settings every process gets.
fn common_env(
    database: &Database,
    redis_url: &Url,
    root: &Path,
    timing: Timing,
) -> Vec<(String, String)> {
    let unlimited = "1000000";
    let secs = |d: Duration| d.as_secs().to_string();
    [
        ("DATABASE_URL", database.url.to_string()),
        ("REDIS_URL", redis_url.to_string()),
        ("REDIS_PREFIX", PREFIX.to_owned()),
        ("SANDBOX_RUNTIME", "local".to_owned()),
        ("LOCAL_SANDBOX_ROOT", root.display().to_string()),
        ("QUEUE_CAP", unlimited.to_owned()),
        ("DAILY_JOBS_BOOTSTRAPPER", unlimited.to_owned()),
        ("DAILY_JOBS_PARTNER", unlimited.to_owned()),
        ("DAILY_JOBS_CTO_SCALE", unlimited.to_owned()),
        ("WORKER_CONCURRENCY", "3".to_owned()),
        ("LEASE_TTL_SECS", secs(timing.lease_ttl)),
        ("RECONCILE_INTERVAL_SECS", secs(timing.reconcile_every)),
        ("PAUSE_RETRY_AFTER_SECS", "2".to_owned()),
        ("PAUSE_BACKOFF_BASE_SECS", "1".to_owned()),
        ("PAUSE_BACKOFF_MAX_SECS", secs(timing.reconcile_every)),
        ("PAUSING_STALE_SECS", secs(timing.reconcile_every)),
        ("POLL_INTERVAL_MS", "100".to_owned()),
        ("SHUTDOWN_GRACE_SECS", "0".to_owned()),
        ("READINESS_TIMEOUT_SECS", "60".to_owned()),
        ("RUST_LOG", "info".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A free port in the campaign's range.
fn free_api_port() -> anyhow::Result<u16> {
    API_PORTS
        .clone()
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .with_context(|| format!("no free port in {API_PORTS:?} for the api-server"))
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Kills every process of every sandbox under `root` (a paused one is continued first, so it dies).
fn kill_sandboxes(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("state.json")) else {
            continue;
        };
        let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        for pgid in state["groups"].as_array().into_iter().flatten() {
            if let Some(pgid) = pgid.as_i64().and_then(|g| i32::try_from(g).ok()) {
                let group = nix::unistd::Pid::from_raw(pgid);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGCONT);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

struct ReportInput<'a> {
    args: &'a ChaosArgs,
    builds: usize,
    timing: Timing,
    accepted: usize,
    refused: usize,
    crashes: usize,
    done: BTreeMap<&'static str, usize>,
    counts: Counts,
    quiet_after: Option<Duration>,
    patience: Duration,
}

/// The table: every number with its target (0), and the time to quiescence against its own.
fn report(input: ReportInput<'_>) -> Report {
    let c = &input.counts;
    let lost = c.lost + input.refused;
    let rows: Vec<(&str, usize)> = vec![
        ("lost jobs (accepted or submitted, never finished)", lost),
        ("jobs failed by the chaos", c.failed),
        ("records paused, sandbox running", c.paused_but_running),
        ("records paused, sandbox dead", c.paused_but_dead),
        ("READY sandboxes left running", c.ready_left_running),
        ("leaked sandboxes", c.leaks),
        ("Redis ≠ Postgres (jobs)", c.redis_differs),
        ("jobs with two live sandboxes", c.two_live_sandboxes),
        ("sandboxes still pausing or resuming", c.in_transition),
        ("processes that crashed on their own", input.crashes),
    ];
    let target = input.timing.target();
    let mut met = rows.iter().all(|(_, n)| *n == 0);
    let mut md = format!(
        "**Slipway chaos campaign, seed {}**\n\n| Check | Value | Target | Met |\n|---|---|---|---|\n",
        input.args.seed
    );
    for (name, n) in &rows {
        md.push_str(&format!("| {name} | {n} | 0 | {} |\n", yes(*n == 0)));
    }
    let (quiet, quiet_met) = match input.quiet_after {
        Some(t) => (format!("{:.1} s", t.as_secs_f64()), t <= target),
        None => (format!("not within {} s", input.patience.as_secs()), false),
    };
    met &= quiet_met;
    md.push_str(&format!(
        "| time to quiescence after the last fault | {quiet} | ≤ {} s (lease TTL + 2 reconcile intervals) | {} |\n",
        target.as_secs(),
        yes(quiet_met)
    ));
    let faults: Vec<String> = input
        .done
        .iter()
        .map(|(kind, n)| format!("{kind} ×{n}"))
        .collect();
    md.push_str(&format!(
        "\n{} builds submitted ({} accepted), {} workers, {} s of faults: {}.\n",
        input.builds,
        input.accepted,
        input.args.workers,
        input.timing.window.as_secs(),
        faults.join(", ")
    ));
    Report { markdown: md, met }
}

fn yes(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}
