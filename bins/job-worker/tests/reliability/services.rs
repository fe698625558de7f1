//! The services one test owns: a fresh database, a temporary sandbox root and the E2B-compatible server,
//! each removed (or stopped) when dropped, also after a panic.

use std::path::PathBuf;
use std::str::FromStr;

use infra_e2b::{ApiKey, E2bConfig, E2bRuntime, Scheme};
use infra_local::e2b_server::{self, E2bServerConfig, FaultConfig};
use infra_local::LocalRuntime;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

pub const API_KEY: &str = "reliability-test-key";
fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn admin_options() -> PgConnectOptions {
    PgConnectOptions::from_str(&database_url())
        .expect("DATABASE_URL parses")
        .database("postgres")
}

/// A fresh, migrated database; dropped (connections forced off) on drop.
pub struct TestDb {
    pub pool: PgPool,
    name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("slipway_reliability_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&admin_options())
            .await
            .expect("postgres is reachable");
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(admin_options().database(&name))
            .await
            .expect("connect to the test database");
        infra_pg::MIGRATOR.run(&pool).await.expect("migrations run");
        Self { pool, name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await: a thread with its own runtime cleans up (also after a panic).
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut admin = PgConnection::connect_with(&admin_options())
                    .await
                    .expect("postgres is reachable");
                admin
                    .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                    .await
                    .expect("drop the test database");
                let _ = admin.close().await;
            });
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("test database {} was not dropped", self.name);
        }
    }
}

/// A temporary sandbox root; every sandbox under it is killed and the directory removed on drop.
pub struct Sandboxes {
    pub local: LocalRuntime,
    root: PathBuf,
}

impl Sandboxes {
    pub fn new() -> Self {
        let root = std::env::temp_dir().join(format!(
            "slipway-reliability-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let local = LocalRuntime::new(root.clone()).expect("sandbox root");
        Self { local, root }
    }
}

impl Drop for Sandboxes {
    fn drop(&mut self) {
        let local = self.local.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(local.shutdown_all());
        })
        .join();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The E2B-compatible server on an ephemeral port; stopped when the test's runtime ends.
pub struct E2bServer {
    pub url: String,
    http: reqwest::Client,
}

impl E2bServer {
    pub async fn start(local: &LocalRuntime) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let url = format!("http://{addr}");
        let app = e2b_server::router(
            local.clone(),
            E2bServerConfig {
                api_key: API_KEY.into(),
                domain: e2b_server::local_domain(addr),
                faults: FaultConfig::default(),
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            http: reqwest::Client::new(),
        }
    }

    pub fn client(&self) -> E2bRuntime {
        E2bRuntime::new(E2bConfig {
            api_url: self.url.clone(),
            sandbox_url: Some(self.url.clone()),
            scheme: Scheme::Http,
            ..E2bConfig::new(ApiKey::new(API_KEY), "base")
        })
        .expect("E2B client")
    }

    /// Replaces the server's faults (`POST /_faults`).
    pub async fn set_faults(&self, faults: &FaultConfig) {
        let resp = self
            .http
            .post(format!("{}/_faults", self.url))
            .header("X-API-Key", API_KEY)
            .json(faults)
            .send()
            .await
            .expect("fault request");
        assert_eq!(resp.status(), 200, "faults accepted");
    }
}
