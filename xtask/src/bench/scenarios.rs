//! The scenarios in order (status reads, events, build logs, job throughput, pause bookkeeping from the
//! throughput run, then the preview gateway), and the report built from them.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use domain::ports::JobQueue;
use domain::usecases::pipeline::{PipelineConfig, PipelineDeps};
use domain::{TierTable, UserId};
use fred::prelude::Client;
use infra_pg::PgJobRepository;
use infra_redis::{Keys, RedisLiveStore, RedisQueue};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::instant_runtime::{InstantGenerator, InstantProbe, InstantRuntime};
use super::report::Table;
use super::seed::{self, Stores};
use super::stack::{ApiServer, DATABASE, SECRET};
use super::stats::{
    machine_busy_seconds, redis_counters, settled_pg_counters, StackCpu, OWN_COMMITS,
};
use super::{events, gateway, log_stream, report, status_reads, throughput, Only, Sizes};

/// The report's last note: the history of changes, with their figures before and after, is kept in the docs
/// (earlier runs are not this run's to report).
const PERFORMANCE_JOURNAL: &str =
    "What changed from run to run, and each change's figures before and after it: \
     docs/performance.md.";

/// The user every bench token speaks for.
const USER: &str = "bench-user";

/// What the scenarios run against.
pub struct Context<'a> {
    pub sizes: &'a Sizes,
    /// On the bench database.
    pub pool: &'a PgPool,
    /// On the server's `postgres` database (statistics).
    pub admin: &'a PgPool,
    pub redis: &'a Client,
    pub redis_url: &'a Url,
    pub database_url: &'a Url,
    pub prefix: &'a str,
    pub out_dir: &'a Path,
}

/// Runs every scenario (those of `only` when given) and writes the report; returns how many targets
/// were missed.
pub async fn run(cx: &Context<'_>, api: &ApiServer, only: Option<Only>) -> anyhow::Result<usize> {
    let sizes = cx.sizes;
    let user = UserId::try_from(USER).context("the bench user id is invalid")?;
    let token = crate::token::hs256(SECRET, USER, None, Duration::from_secs(3600))?;
    let stores = Stores {
        repo: Arc::new(PgJobRepository::new(cx.pool.clone())),
        live: Arc::new(RedisLiveStore::new(cx.redis.clone(), cx.prefix)),
    };
    let mut table = Table::default();
    let mut notes = Vec::new();
    notes.push(format!(
        "Mode {}; {} CPUs; the load generator, api-server, worker, Postgres and Redis share them.",
        sizes.mode,
        std::thread::available_parallelism().map_or(0, usize::from)
    ));
    let mut raw = serde_json::Map::new();
    raw.insert("sizes".to_owned(), serde_json::json!(sizes));

    if Only::Core.selected(only) {
        let core = core(cx, api, &user, &token, &stores, &mut table, &mut notes).await?;
        raw.extend(core);
    }
    // Last: its thousand WebSockets would raise the api-server's peak RSS the status reads are held to.
    if Only::Gateway.selected(only) {
        eprintln!("bench: preview gateway");
        let project = seed::projects(&stores, &user, 1).await?[0];
        let result = gateway::run(&gateway::Setup {
            sizes,
            api,
            stores: &stores,
            user: &user,
            project,
            token: &token,
            out_dir: cx.out_dir,
        })
        .await?;
        let figures = gateway::report(&result, &mut table, &mut notes);
        raw.insert("gateway".to_owned(), figures);
    }

    notes.push(PERFORMANCE_JOURNAL.to_owned());
    let raw = serde_json::Value::Object(raw);
    let title = match only {
        None => format!("Slipway bench ({})", sizes.mode),
        Some(only) => format!("Slipway bench ({}, {} only)", sizes.mode, only.name()),
    };
    report::write(cx.out_dir, &title, &table, &notes, &raw)?;
    println!("{}", report::markdown(&title, &table, &notes));
    Ok(table.missed())
}

/// Status reads, events, build logs, job throughput and pause bookkeeping: their rows and notes, and their
/// raw figures.
async fn core(
    cx: &Context<'_>,
    api: &ApiServer,
    user: &UserId,
    token: &str,
    stores: &Stores,
    table: &mut Table,
    notes: &mut Vec<String>,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let sizes = cx.sizes;

    // 1. Status reads.
    eprintln!("bench: seeding {} READY jobs", sizes.status_jobs);
    let projects = seed::projects(stores, user, 10).await?;
    let ready = seed::ready_jobs(stores, user, &projects, sizes.status_jobs).await?;
    eprintln!(
        "bench: status reads: {} connections for {:?}",
        sizes.connections, sizes.status_duration
    );
    let cache_before = api.status_cache_reads().await;
    let api_cpu_before = api.cpu_seconds();
    let load = status_reads::load(
        &api.base,
        token,
        &ready,
        sizes.connections,
        sizes.status_duration,
    )
    .await?;
    let api_cpu_per_read = api_cpu_before
        .zip(api.cpu_seconds())
        .map(|(before, after)| (after - before) / load.requests.max(1) as f64);
    let cache_hit_share =
        cache_before
            .zip(api.status_cache_reads().await)
            .map(|((hits0, all0), (hits1, all1))| {
                hits1.saturating_sub(hits0) as f64 / all1.saturating_sub(all0).max(1) as f64
            });
    // VmHWM is a high-water mark: read now, it is the peak of the seeding and the status reads.
    let rss_reads = api.peak_rss_mib();
    let hash_key = Keys::new(cx.prefix).job(ready[0]);
    let hgetall = status_reads::redis_hgetall(
        cx.redis_url,
        &hash_key,
        sizes.connections,
        sizes.hgetall_requests,
    )
    .await?;
    let s = "status reads";
    let read_ratio = load.rps / hgetall.rps;
    table.info(
        s,
        "requests (errors)",
        format!("{} ({})", load.requests, load.errors),
    );
    table.info(s, "status requests/s", format!("{:.0}", load.rps));
    table.info(
        s,
        "redis-benchmark HGETALL requests/s",
        format!("{:.0}", hgetall.rps),
    );
    table.check(
        s,
        "ratio status / HGETALL",
        format!("{read_ratio:.2}"),
        "≥ 0.5",
        read_ratio >= 0.5,
    );
    table.info(
        s,
        "api-server CPU per status read",
        api_cpu_per_read.map_or("not measured".into(), |c| format!("{:.1} µs", c * 1e6)),
    );
    table.info(
        s,
        "reads answered from the status cache",
        cache_hit_share.map_or("not measured".into(), |h| format!("{:.1}%", h * 100.0)),
    );
    table.info(s, "p50", ms(load.latency.p50_ms));
    table.check(
        s,
        "p99",
        ms(load.latency.p99_ms),
        "≤ 5 ms",
        load.latency.p99_ms <= 5.0,
    );
    table.info(s, "p99.9", ms(load.latency.p999_ms));
    table.check(s, "errors", load.errors.to_string(), "0", load.errors == 0);

    // 4. Events (before the throughput run, so the worker's traffic does not disturb it).
    eprintln!("bench: events: {} streams", sizes.event_streams);
    let mut streamed = Vec::with_capacity(sizes.event_streams);
    for n in 0..sizes.event_streams {
        streamed.push(
            seed::queued_job(stores, user, projects[n % projects.len()])
                .await?
                .id,
        );
    }
    let events = events::run(&api.base, token, stores, &streamed).await?;

    // 4b. Build logs: a line written by the pipeline's log writer to its SSE delivery, 200 streams.
    eprintln!("bench: log streams: {}", log_stream::STREAMS);
    let mut logged = Vec::with_capacity(log_stream::STREAMS);
    for n in 0..log_stream::STREAMS {
        logged.push(
            seed::queued_job(stores, user, projects[n % projects.len()])
                .await?
                .id,
        );
    }
    let live_log: Arc<dyn domain::ports::LiveLog> = Arc::new(infra_redis::RedisLiveLog::new(
        RedisLiveStore::new(cx.redis.clone(), cx.prefix),
        infra_redis::LiveLogLimits::default(),
    ));
    let log_lines = log_stream::run(&api.base, token, live_log, &logged).await?;

    // 2. Job throughput.
    eprintln!(
        "bench: throughput: {} jobs over {} projects, worker concurrency {}",
        sizes.throughput_jobs, sizes.throughput_projects, sizes.worker_concurrency
    );
    let job_projects = seed::projects(stores, user, sizes.throughput_projects).await?;
    let runtime = Arc::new(InstantRuntime::default());
    // The worker's own pool, sized as job-worker's (a separate process in production).
    let worker_pool = infra_pg::connect(cx.database_url.as_str())
        .await
        .context("cannot connect the worker to Postgres")?;
    let worker_repo = Arc::new(PgJobRepository::new(worker_pool.clone()));
    let queue: Arc<dyn JobQueue> = Arc::new(RedisQueue::new(
        cx.redis.clone(),
        cx.prefix,
        TierTable::unlimited(),
    ));
    let worker = job_worker::WorkerDeps {
        queue,
        pipeline: PipelineDeps {
            repo: worker_repo,
            live: Arc::new(
                RedisLiveStore::new(cx.redis.clone(), cx.prefix)
                    .remembering_writes(job_worker::wiring::REMEMBERED_JOBS),
            ),
            runtime: runtime.clone(),
            generator: Arc::new(InstantGenerator),
            probe: Arc::new(InstantProbe),
            package_parser: Arc::new(job_worker::JsonPackageParser),
            logs: Arc::new(infra_redis::RedisLiveLog::new(
                RedisLiveStore::new(cx.redis.clone(), cx.prefix),
                infra_redis::LiveLogLimits::default(),
            )),
            log_archive: Arc::new(infra_pg::PgLogArchive::new(worker_pool.clone())),
        },
    };
    let settings = job_worker::WorkerSettings {
        worker_id: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        concurrency: sizes.worker_concurrency,
        lease_ttl: Duration::from_secs(300),
        shutdown_grace: Duration::from_secs(10),
        poll_interval: Duration::from_millis(2),
        pipeline: PipelineConfig {
            readiness_interval: Duration::from_millis(1),
            ..PipelineConfig::default()
        },
    };
    let pg_before = settled_pg_counters(cx.admin, cx.pool, DATABASE).await?;
    let own_before = OWN_COMMITS.load(Ordering::Relaxed);
    let redis_before = redis_counters(cx.redis).await?;
    let stop = CancellationToken::new();
    let worker_task = tokio::spawn(job_worker::run(worker, settings, stop.clone()));
    let busy_before = machine_busy_seconds();
    let stack_before = StackCpu::now(api.pid());
    let started = Instant::now();
    let submitted =
        throughput::submit(&api.base, token, &job_projects, sizes.throughput_jobs).await;
    let submit_s = started.elapsed().as_secs_f64();
    let done = match submitted {
        Ok(()) => {
            throughput::wait_done(
                cx.pool,
                &job_projects,
                sizes.throughput_jobs,
                || runtime.pause_stats().0,
                started,
                submit_s,
                sizes.job_deadline,
            )
            .await
        }
        Err(err) => Err(err),
    };
    let busy = busy_before
        .zip(machine_busy_seconds())
        .map(|(before, after)| after - before);
    let stack_cpu = stack_before
        .zip(StackCpu::now(api.pid()))
        .map(|(before, after)| after.minus(before));
    if let Ok(done) = &done {
        eprintln!(
            "bench: throughput: {} jobs READY and paused in {:.2} s",
            done.ready_paused, done.total_s
        );
    }
    let redis_after = redis_counters(cx.redis).await;
    // The worker stays up (idle, it touches only Redis) while the counters settle, then builds the
    // one-at-a-time pause sample.
    let counted = match (done, redis_after) {
        (Ok(done), Ok(redis_after)) => {
            match settled_pg_counters(cx.admin, cx.pool, DATABASE).await {
                Ok(pg_after) => {
                    let own = OWN_COMMITS.load(Ordering::Relaxed) - own_before;
                    let before = runtime.pause_stats().0;
                    let paused = || runtime.pause_stats().0.saturating_sub(before);
                    let solo = solo_pause_sample(cx, api, token, stores, user, paused).await;
                    solo.map(|solo| (done, redis_after, pg_after, own, solo))
                }
                Err(err) => Err(err),
            }
        }
        (Err(err), _) | (_, Err(err)) => Err(err),
    };
    stop.cancel();
    worker_task
        .await
        .context("the bench worker panicked")?
        .context("the bench worker failed")?;
    worker_pool.close().await;
    let (done, redis_after, pg_after, own, (solo_projects, solo_count)) = counted?;
    let (pauses, runtime_pause) = runtime.pause_stats();
    let pause = throughput::pause_delays(cx.pool, &job_projects, runtime_pause).await?;
    let solo = throughput::pause_delays(cx.pool, &solo_projects, runtime_pause).await?;
    let pg = pg_after.minus(pg_before);
    let redis = redis_after.minus(&redis_before);
    let jobs = done.jobs as f64;
    let commits_per_job = (pg.xact_commit - own) as f64 / jobs;
    let pgbench =
        throughput::pgbench(cx.pool, cx.database_url, cx.out_dir, sizes.pgbench_seconds).await?;
    let limit = pgbench.tps / commits_per_job;
    let throughput_ratio = done.jobs_per_s / limit;
    let s = "job throughput";
    table.info(
        s,
        "jobs READY and paused (failed)",
        format!("{} of {} ({})", done.ready_paused, done.jobs, done.failed),
    );
    table.check(
        s,
        "jobs/s",
        format!("{:.0}", done.jobs_per_s),
        "≥ 500",
        done.jobs_per_s >= 500.0,
    );
    table.info(
        s,
        "CPU per job, whole machine",
        busy.map_or("not measured".into(), |b| {
            format!("{:.2} ms", b * 1e3 / jobs)
        }),
    );
    table.info(
        s,
        "CPU per job by process: Postgres, bench and worker, api-server, Redis",
        stack_cpu.map_or("not measured".into(), |c| {
            let ms = |seconds: f64| format!("{:.2}", seconds * 1e3 / jobs);
            format!(
                "{} / {} / {} / {} ms",
                ms(c.postgres),
                ms(c.bench_and_worker),
                ms(c.api_server),
                ms(c.redis)
            )
        }),
    );
    table.info(
        s,
        "Postgres commits per job",
        format!("{commits_per_job:.1}"),
    );
    table.info(
        s,
        "Postgres rows written per job",
        per(pg.rows_written, jobs),
    );
    table.info(
        s,
        "Postgres table scans per job (statements, lower bound)",
        per(pg.scans, jobs),
    );
    table.info(s, "Redis commands per job", per(redis.total_commands, jobs));
    table.info(
        s,
        "pgbench one-row UPDATE TPS",
        format!("{:.0}", pgbench.tps),
    );
    table.info(
        s,
        "Postgres limit jobs/s (TPS ÷ commits per job)",
        format!("{limit:.0}"),
    );
    table.check(
        s,
        "ratio jobs/s ÷ limit",
        format!("{throughput_ratio:.2}"),
        "≥ 0.5",
        throughput_ratio >= 0.5,
    );

    let s = "pause bookkeeping";
    table.info(
        s,
        "jobs measured in the throughput run",
        pause.samples.to_string(),
    );
    table.info(s, "p50 under the throughput run", ms(pause.p50_ms));
    table.info(s, "p99 under the throughput run", ms(pause.p99_ms));
    table.info(s, "jobs built one at a time", solo.samples.to_string());
    table.info(s, "p50 one at a time", ms(solo.p50_ms));
    table.check(
        s,
        "p99 one at a time",
        ms(solo.p99_ms),
        "≤ 5 ms",
        solo.p99_ms <= 5.0,
    );

    let s = "events";
    table.info(
        s,
        "streams open (delivered)",
        format!("{} ({})", events.streams, events.delivered),
    );
    table.info(s, "p50", ms(events.latency.p50_ms));
    table.check(
        s,
        "p99",
        ms(events.latency.p99_ms),
        "≤ 10 ms",
        events.latency.p99_ms <= 10.0,
    );
    table.check(
        s,
        "missing events",
        events.missing.to_string(),
        "0",
        events.missing == 0,
    );

    let s = "build logs";
    table.info(
        s,
        "streams open (delivered)",
        format!("{} ({})", log_lines.streams, log_lines.delivered),
    );
    table.info(s, "line to SSE p50", ms(log_lines.latency.p50_ms));
    table.check(
        s,
        "line to SSE p99",
        ms(log_lines.latency.p99_ms),
        "≤ 50 ms",
        log_lines.latency.p99_ms <= 50.0,
    );
    table.check(
        s,
        "missing lines",
        log_lines.missing.to_string(),
        "0",
        log_lines.missing == 0,
    );

    let rss = api.peak_rss_mib();
    let shown =
        |rss: Option<f64>| rss.map_or_else(|| "unknown".to_owned(), |mib| format!("{mib:.1} MiB"));
    table.check(
        "status reads",
        "api-server peak RSS after the status reads",
        shown(rss_reads),
        "≤ 50 MB",
        rss_reads.is_some_and(|mib| mib * 1.048_576 <= 50.0),
    );
    table.info(
        "all",
        "api-server peak RSS, whole run (SSE streams included)",
        shown(rss),
    );

    notes.push(format!(
        "Status reads: {} READY jobs read in turn by {} keep-alive HTTP/1.1 connections (one thread, \
         prebuilt requests, as redis-benchmark) for {:.1} s; redis-benchmark -c {} -n {} HGETALL on one \
         of their hashes. The api-server's CPU per read (its threads' schedstat) moves less across runs than \
         requests/s, which follows whatever else shares the CPUs. The status route reads through an \
         in-process cache that Redis client-side tracking keeps coherent; these hashes do not change during \
         the run, which is the cache's best case (a READY job polled by its founder is the common one); a \
         miss costs one HGETALL, as every read did before.",
        ready.len(),
        load.connections,
        load.duration_s,
        sizes.connections,
        hgetall.requests
    ));
    notes.push(format!(
        "Job throughput: from the first POST /api/generation/start to the last job READY with \
         sandbox_paused true in Postgres ({:.2} s, of which submitting {:.2} s; the bench counts them in \
         Postgres every 500 ms until the runtime has paused every job, then every 2 ms, so that its own \
         reads stay off the figures); worker in-process \
         (job_worker::run over the Redis queue, instant runtime, concurrency {}). Commits from \
         pg_stat_database.xact_commit of {DATABASE} minus the bench's own {own} queries, read once \
         every backend has published its counters (Postgres holds the last second's until a backend has \
         been idle 10 s, so the bench waits 11 s before and after the run); \
         pg_stat_statements is not loaded, so statements are bounded below by table scans. Redis \
         commands from INFO total_commands_processed (server-wide: other clients of the same Redis \
         are included). CPU per job by process: utime + stime of every postgres and redis-server process, \
         api-server, and this process (the worker, the submitting client, the polling), over the run ÷ jobs; \
         what the whole-machine figure holds beyond their sum is the host's other work. \
         CPU per job: the machine's busy time (/proc/stat) over the run ÷ jobs, every \
         process included. On a loopback host the bench connects to Postgres without TLS, pgbench \
         too (sslmode=disable unless the URL names a mode).",
        done.total_s, done.submit_s, sizes.worker_concurrency
    ));
    notes.push(format!(
        "Pause bookkeeping: per job paused_at − completed_at, both stamped by Postgres (READY write to \
         paused write), minus the instant runtime's mean pause time ({} pauses, {:?} each); measured \
         for the throughput run ({} builds at once over job-worker's 10-connection pool) and for jobs \
         submitted one at a time (the target applies to the latter: the bookkeeping itself).",
        pauses, runtime_pause, sizes.worker_concurrency
    ));
    notes.push(
        "Events: every stream received its snapshot first; then each job moved queued → starting \
         (Postgres compare-and-set, then the Redis hash and event, stamped just before publishing); the \
         delay is arrival time − the event's timestamp."
            .to_owned(),
    );

    let raw = serde_json::json!({
        "status_reads": {"load": load, "hgetall": hgetall, "ratio": read_ratio, "api_peak_rss_mib_after_reads": rss_reads, "api_peak_rss_mib_whole_run": rss, "api_cpu_s_per_read": api_cpu_per_read, "status_cache_hit_share": cache_hit_share},
        "throughput": {
            "run": done, "postgres": pg, "own_commits": own, "commits_per_job": commits_per_job,
            "machine_busy_s": busy, "stack_cpu_s": stack_cpu,
            "redis_commands": redis, "pgbench": pgbench, "limit_jobs_per_s": limit, "ratio": throughput_ratio,
        },
        "pause": {"latency": pause, "one_at_a_time": solo, "one_at_a_time_jobs": solo_count, "runtime_pauses": pauses, "runtime_pause_mean_ns": runtime_pause.as_nanos() as u64},
        "events": events,
        "log_stream": log_lines,
    });
    match raw {
        serde_json::Value::Object(raw) => Ok(raw),
        _ => unreachable!("a JSON object literal"),
    }
}

/// Jobs submitted one at a time, each waited for until READY and paused: the pause bookkeeping without
/// the queueing of a throughput run. `paused` counts the runtime's pauses since the sample began. Returns
/// their project and how many were built.
async fn solo_pause_sample(
    cx: &Context<'_>,
    api: &ApiServer,
    token: &str,
    stores: &Stores,
    user: &UserId,
    paused: impl Fn() -> u64,
) -> anyhow::Result<(Vec<domain::ProjectId>, usize)> {
    let count = cx.sizes.pause_solo_jobs;
    eprintln!("bench: pause bookkeeping: {count} jobs one at a time");
    let projects = seed::projects(stores, user, 1).await?;
    for n in 1..=count {
        throughput::submit(&api.base, token, &projects, 1).await?;
        throughput::wait_done(
            cx.pool,
            &projects,
            n,
            &paused,
            Instant::now(),
            0.0,
            Duration::from_secs(10),
        )
        .await?;
    }
    Ok((projects, count))
}

fn ms(v: f64) -> String {
    format!("{v:.2} ms")
}

fn per(n: i64, jobs: f64) -> String {
    format!("{:.1}", n as f64 / jobs)
}
