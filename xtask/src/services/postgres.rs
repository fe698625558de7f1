//! Postgres: probe the configured server; otherwise `initdb` (trust auth) into `target/services/pg` and
//! start it with `pg_ctl` on a free port, stopping it again on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use url::Url;

use super::Service;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const INSTALL_HINT: &str = "install them with `apt-get install postgresql`";

/// The configured Postgres when it answers a query, otherwise a private one started here. The returned
/// URL keeps the configured database name; the database itself may not exist yet.
pub async fn ensure_postgres(configured: &Url) -> anyhow::Result<Service> {
    let reason = match probe(configured).await {
        Ok(()) => return Ok(Service::external("Postgres", configured.clone())),
        Err(reason) => reason,
    };
    eprintln!(
        "xtask: Postgres at {} is not usable ({reason}); starting a private one",
        super::redact(configured)
    );
    let private = PrivatePostgres::start().await?;
    let mut url = Url::parse(&format!("postgres://postgres@127.0.0.1:{}", private.port))?;
    url.set_path(configured.path());
    if let Err(reason) = probe(&url).await {
        anyhow::bail!(
            "the private Postgres started but does not answer ({reason}); see {}",
            private.log().display()
        );
    }
    Ok(Service {
        name: "Postgres",
        url,
        private: Some(Box::new(private)),
    })
}

/// Connects and runs a query. A server that answers "no such database" is reachable: migrate creates it.
async fn probe(url: &Url) -> Result<(), String> {
    let options = PgConnectOptions::from_url(url).map_err(|err| err.to_string())?;
    let attempt = async {
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        conn.close().await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err("timed out".to_owned()),
        Ok(Ok(())) => Ok(()),
        Ok(Err(sqlx::Error::Database(db))) if db.code().as_deref() == Some("3D000") => Ok(()),
        Ok(Err(err)) => Err(describe_postgres_error(&err)),
    }
}

/// A short, lower-case description of a connection or query failure.
pub fn describe_postgres_error(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::TimedOut => "timed out".to_owned(),
            _ => io.to_string(),
        },
        sqlx::Error::PoolTimedOut => "timed out".to_owned(),
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// The error for a server that cannot be used at all: one line with the redacted URL.
pub fn postgres_error(url: &Url, err: &sqlx::Error) -> anyhow::Error {
    let url = super::redact(url);
    let reason = describe_postgres_error(err);
    match err {
        sqlx::Error::Database(_) => anyhow::anyhow!("Postgres at {url} refused: {reason}"),
        _ => anyhow::anyhow!("cannot reach Postgres at {url}: {reason}"),
    }
}

/// A Postgres cluster under `target/services/pg` that xtask started and stops on drop.
pub struct PrivatePostgres {
    pg_ctl: PathBuf,
    data: PathBuf,
    /// Postgres refuses to run as root: when we are root, its programs run as this user.
    run_as: Option<(u32, u32)>,
    port: u16,
}

impl PrivatePostgres {
    async fn start() -> anyhow::Result<Self> {
        let bin = find_bin_dir().with_context(|| {
            format!("no Postgres server binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin; {INSTALL_HINT}")
        })?;
        let run_as = postgres_user()?;
        let mut this = Self {
            pg_ctl: bin.join("pg_ctl"),
            data: super::services_dir()?.join("pg"),
            run_as,
            port: 0,
        };
        if !this.data.join("PG_VERSION").exists() {
            this.init(&bin.join("initdb")).await?;
        }
        this.stop_leftover().await;
        this.port = super::free_port()?;
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
            this.port
        );
        let log = this.log();
        let output = this
            .command(&this.pg_ctl)
            .arg("-D")
            .arg(&this.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .await
            .context("cannot run pg_ctl")?;
        if !output.status.success() {
            anyhow::bail!(
                "the private Postgres did not start: {}; see {}",
                last_line(&output.stderr),
                log.display()
            );
        }
        Ok(this)
    }

    /// Where the server writes its log (inside the data directory, which only the server user may write).
    fn log(&self) -> PathBuf {
        self.data.join("server.log")
    }

    async fn init(&self, initdb: &Path) -> anyhow::Result<()> {
        // A half-made directory from an interrupted initdb would make it refuse; start from nothing.
        if self.data.exists() {
            std::fs::remove_dir_all(&self.data)
                .with_context(|| format!("cannot remove {}", self.data.display()))?;
        }
        std::fs::create_dir_all(&self.data)
            .with_context(|| format!("cannot create {}", self.data.display()))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.data, Some(uid), Some(gid)).with_context(|| {
                format!("cannot hand {} to the postgres user", self.data.display())
            })?;
        }
        let output = self
            .command(initdb)
            .arg("-D")
            .arg(&self.data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .await
            .context("cannot run initdb")?;
        if !output.status.success() {
            anyhow::bail!("initdb failed: {}", last_line(&output.stderr));
        }
        Ok(())
    }

    /// A server left running by an earlier run that was killed holds the data directory: stop it.
    async fn stop_leftover(&self) {
        if !self.data.join("postmaster.pid").exists() {
            return;
        }
        let _ = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .await;
    }

    fn command(&self, program: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command
            .current_dir(&self.data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut command = std::process::Command::new(&self.pg_ctl);
        command
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .current_dir(&self.data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        // Nothing useful can be done if stopping fails; the next start stops any leftover.
        let _ = command.status();
    }
}

/// A directory with `initdb` and `pg_ctl`: PATH first (symlinks resolved, so `pg_ctl` finds its
/// `postgres`), then Debian's /usr/lib/postgresql/<version>/bin, newest first.
fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let extra: Vec<PathBuf> = versions.into_iter().map(|(_, dir)| dir).collect();
    let dir = super::find_programs(&["initdb", "pg_ctl"], &extra)?;
    let real_dir = std::fs::canonicalize(dir.join("initdb"))
        .ok()
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
        .filter(|real| super::is_executable(&real.join("pg_ctl")));
    Some(real_dir.unwrap_or(dir))
}

/// When running as root, the `postgres` account the server programs must run as.
fn postgres_user() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .context("cannot look up the postgres user")?
        .with_context(|| {
            format!("Postgres will not run as root and there is no `postgres` user; {INSTALL_HINT}")
        })?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_owned()
}
