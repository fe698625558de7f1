//! The cross-process half of a sandbox's lock: an exclusive `flock` on `<root>/<id>/.lock`.
//!
//! Several processes may share a root (`cargo xtask dev` runs the api-server and the job-worker over the
//! same one), so the in-process mutex alone does not keep them from interleaving their read-modify-writes
//! of `state.json` and their signals. The kernel drops a `flock` when its holder dies, so a crashed
//! process never leaves a sandbox locked.
//!
//! The lock file is created with the sandbox and removed with its directory. It is opened without
//! `O_CREAT` (except to adopt a sandbox made before lock files existed), so a sandbox that is gone stays
//! gone: nothing here recreates a directory. A waiter that opened the file before a kill removed it gets
//! the lock on an unlinked file once the killer is done, and sees that (no links left) as `NotFound`.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use domain::ports::SandboxError;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{io_error, record};

/// The lock file's name inside the sandbox directory.
pub(crate) const LOCK_FILE: &str = ".lock";
/// How long to wait for another process to release a sandbox before giving up with `Unavailable`. Long
/// enough for the slowest locked operation (a kill removing `node_modules`).
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// The first and the longest pause between two attempts to take the lock.
const FIRST_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// An exclusive `flock` on a sandbox's lock file, released on drop.
pub(crate) type SandboxFlock = Flock<File>;

/// Creates the lock file of a new sandbox (its directory was just created by us).
pub(crate) async fn create(dir: &Path) -> Result<(), SandboxError> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(LOCK_FILE))
        .await
        .map(drop)
        .map_err(|e| io_error("create sandbox lock file", e))
}

/// Takes the sandbox's lock without blocking the async runtime: the lock is tried, and tried again after
/// a growing pause, until [`LOCK_WAIT`] passes. A sandbox that does not exist (or was removed while we
/// waited) is `NotFound`.
pub(crate) async fn lock(dir: &Path, id: &str) -> Result<SandboxFlock, SandboxError> {
    let mut file = open(dir, id).await?;
    let deadline = Instant::now() + LOCK_WAIT;
    let mut backoff = FIRST_BACKOFF;
    let flock = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => break flock,
            Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(SandboxError::Provider(format!("lock sandbox {id}: {e}"))),
        }
        if Instant::now() >= deadline {
            tracing::warn!(sandbox_id = %id, wait = ?LOCK_WAIT, "sandbox stayed locked by another process");
            return Err(SandboxError::Unavailable(format!(
                "sandbox {id} stayed locked for {LOCK_WAIT:?}"
            )));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    // A kill unlinks the file while holding the lock: a lock on an unlinked file guards nothing.
    let links = flock
        .metadata()
        .map_err(|e| io_error("inspect sandbox lock file", e))?
        .nlink();
    if links == 0 {
        return Err(SandboxError::NotFound(id.to_owned()));
    }
    Ok(flock)
}

/// Opens the lock file, never creating a directory.
async fn open(dir: &Path, id: &str) -> Result<File, SandboxError> {
    let path = dir.join(LOCK_FILE);
    match tokio::fs::OpenOptions::new().read(true).open(&path).await {
        Ok(f) => return Ok(f.into_std().await),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("open sandbox lock file", e)),
    }
    // No lock file: either no sandbox (or a killed one), or a sandbox made before lock files existed.
    // Only the latter has a state file; a kill removes the state first, and O_CREAT never makes the
    // directory itself, so a removed sandbox is not brought back.
    if !tokio::fs::try_exists(dir.join(record::STATE_FILE))
        .await
        .unwrap_or(false)
    {
        return Err(SandboxError::NotFound(id.to_owned()));
    }
    match tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .await
    {
        Ok(f) => Ok(f.into_std().await),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(SandboxError::NotFound(id.to_owned())),
        Err(e) => Err(io_error("create sandbox lock file", e)),
    }
}
