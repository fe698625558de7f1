//! `cargo xtask migrate [status|down [N]]`: the schema in `migrations/`, embedded at build time, applied
//! to or reverted from DATABASE_URL. Each migration runs in its own transaction, so a failed one leaves
//! the schema as it was before it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::{MigrateDatabase, MigrateError, Migrator};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres};
use url::Url;

use crate::services::{self, postgres_error};
use crate::workspace::DEFAULT_DATABASE_URL;

/// Every migration in `migrations/`, checked and embedded when xtask is built.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The database to migrate (created by `migrate` when missing).
    #[arg(long, global = true, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Apply every pending migration (the default).
    Up,
    /// List applied and pending migrations.
    Status,
    /// Revert the last N applied migrations with their .down.sql files.
    Down {
        /// How many to revert.
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
    },
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let url = services::parse_url("DATABASE_URL", &args.database_url)?;
    match args.action.unwrap_or(Action::Up) {
        Action::Up => up(&url).await?,
        Action::Status => status(&url).await?,
        Action::Down { n } => down(&url, n).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates the database when missing and applies every pending migration, printing one line each.
pub async fn up(url: &Url) -> anyhow::Result<()> {
    let exists = with_timeout(url, Postgres::database_exists(url.as_str())).await?;
    if !exists {
        with_timeout(url, Postgres::create_database(url.as_str())).await?;
        println!("created database {}", database_name(url));
    }
    let mut conn = connect(url).await?;
    let applied = applied(&mut conn, url).await?;
    let pending: Vec<_> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect();
    MIGRATOR
        .run(&mut conn)
        .await
        .map_err(|err| migrate_failed(url, err))?;
    for migration in &pending {
        println!(
            "applied  {:04}  {}",
            migration.version, migration.description
        );
    }
    if pending.is_empty() {
        println!("{} is up to date", database_name(url));
    }
    conn.close().await.ok();
    Ok(())
}

async fn status(url: &Url) -> anyhow::Result<()> {
    let applied = match connect(url).await {
        Ok(mut conn) => Some(applied(&mut conn, url).await?),
        Err(_) if !with_timeout(url, Postgres::database_exists(url.as_str())).await? => None,
        Err(err) => return Err(err),
    };
    println!("database {}", services::redact(url));
    let applied = applied.unwrap_or_else(|| {
        println!("(it does not exist yet; `cargo xtask migrate` creates it)");
        Vec::new()
    });
    for migration in MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        match applied.iter().find(|a| a.version == migration.version) {
            Some(row) => {
                let note = if !row.success {
                    "  FAILED"
                } else if row.checksum != *migration.checksum {
                    "  (file changed since it was applied)"
                } else {
                    ""
                };
                println!(
                    "applied  {:04}  {}  {}{note}",
                    migration.version, migration.description, row.installed_on
                );
            }
            None => println!(
                "pending  {:04}  {}",
                migration.version, migration.description
            ),
        }
    }
    for row in &applied {
        if !MIGRATOR.iter().any(|m| m.version == row.version) {
            println!(
                "applied  {:04}  {}  {}  (not in migrations/)",
                row.version, row.description, row.installed_on
            );
        }
    }
    Ok(())
}

async fn down(url: &Url, n: u32) -> anyhow::Result<()> {
    let mut conn = connect(url).await?;
    let applied = applied(&mut conn, url).await?;
    if applied.is_empty() {
        println!("nothing to revert: no migration is applied");
        return Ok(());
    }
    let keep = applied.len().saturating_sub(n as usize);
    // `undo` reverts every applied migration newer than the target version.
    let target = keep
        .checked_sub(1)
        .map_or(0, |last_kept| applied[last_kept].version);
    MIGRATOR
        .undo(&mut conn, target)
        .await
        .map_err(|err| migrate_failed(url, err))?;
    for row in applied[keep..].iter().rev() {
        println!("reverted {:04}  {}", row.version, row.description);
    }
    conn.close().await.ok();
    Ok(())
}

/// A row of `_sqlx_migrations`.
struct Applied {
    version: i64,
    description: String,
    checksum: Vec<u8>,
    success: bool,
    installed_on: String,
}

/// What `_sqlx_migrations` records, oldest first; nothing when the table does not exist yet.
async fn applied(conn: &mut PgConnection, url: &Url) -> anyhow::Result<Vec<Applied>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| postgres_error(url, &err))?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, String, Vec<u8>, bool, String)> = sqlx::query_as(
        "SELECT version, description, checksum, success, \
         to_char(installed_on AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"') \
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|err| postgres_error(url, &err))?;
    Ok(rows
        .into_iter()
        .map(
            |(version, description, checksum, success, installed_on)| Applied {
                version,
                description,
                checksum,
                success,
                installed_on,
            },
        )
        .collect())
}

async fn connect(url: &Url) -> anyhow::Result<PgConnection> {
    let options = PgConnectOptions::from_url(url).context("DATABASE_URL is not a Postgres URL")?;
    with_timeout(url, PgConnection::connect_with(&options)).await
}

async fn with_timeout<T>(
    url: &Url,
    operation: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CONNECT_TIMEOUT, operation).await {
        Ok(result) => result.map_err(|err| postgres_error(url, &err)),
        Err(_) => Err(postgres_error(url, &sqlx::Error::PoolTimedOut)),
    }
}

fn migrate_failed(url: &Url, err: MigrateError) -> anyhow::Error {
    match err {
        MigrateError::ExecuteMigration(cause, version) => {
            let description = MIGRATOR
                .iter()
                .find(|m| m.version == version)
                .map_or_else(String::new, |m| format!(" ({})", m.description));
            anyhow::anyhow!(
                "migration {version:04}{description} failed and was rolled back: {}",
                services::describe_postgres_error(&cause)
            )
        }
        MigrateError::Execute(cause) => postgres_error(url, &cause),
        other => anyhow::anyhow!("{other}"),
    }
}

fn database_name(url: &Url) -> &str {
    url.path().trim_start_matches('/')
}
