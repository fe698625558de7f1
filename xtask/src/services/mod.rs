//! Postgres and Redis for `test`, `dev` and `bench` (and a Redis Cluster for `test`): use the configured
//! server when it answers, otherwise start a private one from the installed server binaries and stop it
//! again when the returned [`Service`] is dropped.
//!
//! Private servers live under `target/services/` (Postgres' data directory is kept between runs so that
//! `initdb` runs once; nothing is stored that a later run needs).

mod postgres;
mod redis;
mod redis_cluster;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use url::Url;

pub use postgres::{describe_postgres_error, ensure_postgres, postgres_error};
pub use redis::{ensure_redis, private_redis};
pub use redis_cluster::ensure_redis_cluster;

/// A server xtask uses: its URL and, when xtask started it, the guard that stops it on drop.
pub struct Service {
    name: &'static str,
    url: Url,
    /// The private server xtask started (its `Drop` stops it); `None` for one that was already running.
    private: Option<Box<dyn std::any::Any + Send>>,
}

impl Service {
    fn external(name: &'static str, url: Url) -> Self {
        Self {
            name,
            url,
            private: None,
        }
    }

    /// The URL to hand to clients (the configured one, or the private server's).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// One line saying which server this is, with any password hidden.
    pub fn describe(&self) -> String {
        let origin = match self.private {
            Some(_) => "private, stopped on exit",
            None => "already running",
        };
        format!("{} at {} ({origin})", self.name, redact(&self.url))
    }
}

/// `url` as it may be printed: the password replaced.
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one does.
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// Parses a service URL from configuration, naming the variable when it is malformed.
pub fn parse_url(variable: &str, value: &str) -> anyhow::Result<Url> {
    Url::parse(value)
        .map_err(|err| anyhow::anyhow!("{variable} is not a valid URL ({value:?}): {err}"))
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|err| anyhow::anyhow!("cannot find a free port on 127.0.0.1: {err}"))?;
    Ok(listener.local_addr()?.port())
}

/// `target/services/`, created when missing.
fn services_dir() -> anyhow::Result<PathBuf> {
    let dir = crate::workspace::target_dir().join("services");
    std::fs::create_dir_all(&dir)
        .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", dir.display()))?;
    Ok(dir)
}

/// The first directory on PATH holding all of `programs`, then the `extra` directories in order.
fn find_programs(programs: &[&str], extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .find(|dir| {
            programs
                .iter()
                .all(|program| is_executable(&dir.join(program)))
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
