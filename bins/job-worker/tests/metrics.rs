//! The job-worker binary, run as an operator runs it, serves its Prometheus metrics on WORKER_METRICS_ADDR.
//! Needs DATABASE_URL (a server where databases can be created) and REDIS_URL, like the other tests.

mod support;

use std::process::Stdio;
use std::time::Duration;

use sqlx::PgPool;

use support::{eventually, redis_url, TestRedis};

const WAIT: Duration = Duration::from_secs(30);

#[sqlx::test(migrations = "../../migrations")]
async fn the_binary_serves_its_reconciler_metrics(pool: PgPool) {
    let redis = TestRedis::new().await;
    let database = pool
        .connect_options()
        .get_database()
        .expect("sqlx::test names its database")
        .to_owned();
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for sqlx::test");
    let (server, _) = server.rsplit_once('/').expect("DATABASE_URL has a path");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let root = std::env::temp_dir().join(format!("slipway-metrics-{}", uuid::Uuid::new_v4()));

    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_job-worker"))
        .env("DATABASE_URL", format!("{server}/{database}"))
        .env("REDIS_URL", redis_url())
        .env("REDIS_PREFIX", &redis.prefix)
        .env("WORKER_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RECONCILE_INTERVAL_SECS", "1")
        .env("SANDBOX_RUNTIME", "local")
        .env("LOCAL_SANDBOX_ROOT", &root)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("job-worker starts");

    let url = format!("http://127.0.0.1:{port}/metrics");
    let client = reqwest::Client::new();
    let text = eventually(WAIT, "the reconciler's first pass on /metrics", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let text = client.get(&url).send().await.ok()?.text().await.ok()?;
            text.contains("slipway_reconcile_step_seconds_bucket")
                .then_some(text)
        }
    })
    .await;
    assert!(text.contains(r#"step="leases""#), "{text}");

    worker.start_kill().expect("stop the worker");
    let _ = worker.wait().await;
    let _ = std::fs::remove_dir_all(&root);
}
