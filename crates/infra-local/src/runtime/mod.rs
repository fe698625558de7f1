//! [`LocalRuntime`]: sandboxes as directories plus process groups on this machine, the embedded default
//! [`SandboxRuntime`](domain::ports::SandboxRuntime).
//!
//! Layout: `<root>/<sandbox_id>/` holds `workspace/` (the app's files; see [`paths`] for how the logical
//! workspace path maps to it), `logs/<pid>.log` (background commands' output), `state.json` (see
//! [`record`]), `.lock` (see below) and serves as the sandbox's `HOME`. All state is on disk, so a fresh
//! `LocalRuntime` over the same root (a restarted worker) finds every sandbox, adopting the process
//! groups that are still alive.
//!
//! Several processes may share a root (the api-server and the job-worker of `cargo xtask dev` do): every
//! operation on a sandbox holds its in-process async mutex (so tasks of one process queue without
//! blocking threads) and an exclusive `flock` on its `.lock` (so processes take turns on `state.json` and
//! on signals; see [`flock`]). A kill removes the state first and the directory while still holding the
//! lock, so whoever waited for it finds the sandbox `NotFound` and never recreates it. The root-level
//! operations need no lock of their own: creating draws a fresh directory with an atomic `mkdir`, and
//! listing, `shutdown_all` and the reaper visit each sandbox through the same per-sandbox lock, taking a
//! sandbox another process removed meanwhile as `NotFound`.
//!
//! Commands run as `bash -c <cmd>` (not a login shell, so the worker's `PATH` survives), in their own
//! session and process group (so they outlive the process that started them), with a clean environment: the worker's `PATH` and `LANG`, `HOME` = the sandbox
//! directory, then the command's envs. A `PORT` env is a sandbox port: the process gets the free host port
//! mapped to it instead, and [`preview_url`](domain::ports::SandboxRuntime::preview_url) for that port is
//! `http://127.0.0.1:<host port>/`. Output reaches the sink one line at a time, newline included.
//! Pause sends SIGSTOP to every process group and resume (`connect`) SIGCONT; starting a command in a
//! paused sandbox is a `Conflict`. Past its timeout a running sandbox is paused (`auto_pause`) or killed. A
//! paused sandbox whose background processes died anyway (stopped processes only die when killed) is reported as what
//! it is, gone (`NotFound`), and removed.
//!
//! This is isolation for convenience, not security: commands run as the worker's user.

mod exec;
mod flock;
mod id;
pub mod paths;
mod process;
mod record;
mod sandbox;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use domain::ports::SandboxError;
use nix::sys::signal::Signal;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use record::{RunState, SandboxRecord};

pub use paths::LOGICAL_WORKSPACE;

/// How often the reaper looks for sandboxes past their timeout.
const REAPER_TICK: Duration = Duration::from_secs(1);

/// The local sandbox runtime. Cheap to clone: clones share their state.
#[derive(Clone)]
pub struct LocalRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRuntime")
            .field("root", &self.inner.root)
            .finish()
    }
}

struct Inner {
    /// Absolute, so workspace paths handed to commands are absolute.
    root: PathBuf,
    /// One lock per sandbox: every read-modify-write of its state happens under it.
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// A sandbox whose lock is held and whose state is loaded (with dead process groups dropped and its
/// timeout enforced).
struct Open {
    /// Released before the in-process mutex (fields drop in order), so a waiter of this process that
    /// gets the mutex finds the file lock free.
    _flock: flock::SandboxFlock,
    _guard: OwnedMutexGuard<()>,
    id: String,
    dir: PathBuf,
    record: SandboxRecord,
}

impl Open {
    fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    async fn save(&self) -> Result<(), SandboxError> {
        record::save(&self.dir, &self.record).await
    }

    /// Sends `sig` to every process group of the sandbox.
    fn signal_all(&self, sig: Signal) -> Result<(), SandboxError> {
        for &pgid in &self.record.groups {
            process::signal_group(pgid, sig).map_err(|e| {
                SandboxError::Provider(format!("send {sig} to process group {pgid}: {e}"))
            })?;
        }
        Ok(())
    }

    /// The host port a sandbox port is mapped to, allocating one the first time.
    fn host_port(&mut self, port: u16) -> Result<u16, SandboxError> {
        if let Some(&host) = self.record.ports.get(&port) {
            return Ok(host);
        }
        let host = process::free_local_port().map_err(|e| io_error("allocate a local port", e))?;
        self.record.ports.insert(port, host);
        Ok(host)
    }
}

pub(crate) fn io_error(context: &str, e: std::io::Error) -> SandboxError {
    SandboxError::Provider(format!("{context}: {e}"))
}

impl LocalRuntime {
    /// A runtime keeping its sandboxes under `root` (created if missing). When called inside a tokio
    /// runtime it also starts the reaper, which pauses (`auto_pause`) or kills sandboxes past their
    /// timeout; every operation enforces the timeout too, so the reaper is a backstop.
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        let root = root.canonicalize()?;
        let inner = Arc::new(Inner {
            root,
            locks: Mutex::new(HashMap::new()),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(reaper(Arc::downgrade(&inner)));
        }
        Ok(Self { inner })
    }

    /// The directory the sandboxes live in.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The real directory behind a sandbox's workspace (for tools and tests; commands should use
    /// [`LOGICAL_WORKSPACE`]).
    pub fn workspace_dir(&self, id: &domain::SandboxId) -> PathBuf {
        self.inner.dir(id.as_str()).join("workspace")
    }

    /// Kills every sandbox under the root, processes and directories (for `cargo xtask dev` on Ctrl-C).
    #[tracing::instrument(skip_all, fields(root = %self.inner.root.display()))]
    pub async fn shutdown_all(&self) {
        for id in self.inner.sandbox_ids().await {
            match self.inner.kill(&id).await {
                Ok(()) | Err(SandboxError::NotFound(_)) => {}
                Err(e) => tracing::warn!(sandbox_id = %id, error = %e, "could not kill sandbox"),
            }
        }
    }
}

impl Inner {
    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn lock_for(&self, id: &str) -> Arc<AsyncMutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_owned()).or_default().clone()
    }

    fn forget_lock(&self, id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(id);
    }

    /// Locks and loads a sandbox. Process groups with no live member are dropped (that is how a restarted
    /// worker adopts the live ones), and a sandbox past its timeout is paused or killed first.
    async fn open(&self, id: &str) -> Result<Open, SandboxError> {
        if !id::is_local_id(id) {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let guard = self.lock_for(id).lock_owned().await;
        let dir = self.dir(id);
        let flock = flock::lock(&dir, id).await?;
        let record = record::load(&dir, id).await?;
        let mut open = Open {
            _flock: flock,
            _guard: guard,
            id: id.to_owned(),
            dir,
            record,
        };
        let before = (open.record.groups.len(), open.record.background.len());
        open.record
            .groups
            .retain(|&pgid| process::group_alive(pgid));
        let groups = &open.record.groups;
        open.record.background.retain(|pgid| groups.contains(pgid));
        let after = (open.record.groups.len(), open.record.background.len());
        let mut dirty = after != before;
        // Stopped processes do not exit: a paused sandbox that lost a background process (its dev server)
        // was killed from outside (an OOM kill, a reboot, a signal), and what it held in memory is gone.
        // That is a sandbox the provider no longer has, as E2B answers for one it lost, not a paused one:
        // say so, and clean up. (A foreground command may have ended just before the pause stopped it.)
        if after.1 < before.1 && open.record.state == RunState::Paused {
            tracing::warn!(sandbox_id = %id, "paused sandbox lost its processes: it is gone");
            self.kill_open(open).await?;
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        if open.record.is_expired(record::now_ms()) {
            if !open.record.auto_pause {
                tracing::info!(sandbox_id = %id, "sandbox timed out: killing it");
                self.kill_open(open).await?;
                return Err(SandboxError::NotFound(id.to_owned()));
            }
            tracing::info!(sandbox_id = %id, "sandbox timed out: pausing it");
            open.signal_all(Signal::SIGSTOP)?;
            open.record.state = RunState::Paused;
            dirty = true;
        }
        if dirty {
            open.save().await?;
        }
        Ok(open)
    }

    async fn kill(&self, id: &str) -> Result<(), SandboxError> {
        let open = self.open(id).await?;
        self.kill_open(open).await
    }

    /// Kills every process group of the sandbox and removes its directory.
    async fn kill_open(&self, open: Open) -> Result<(), SandboxError> {
        open.signal_all(Signal::SIGKILL)?;
        // The state goes first: without it the directory is no sandbox, even if removing the rest fails
        // (then the leftovers are never listed, and an opener gets `NotFound`).
        match tokio::fs::remove_file(open.dir.join(record::STATE_FILE)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove sandbox state", e)),
        }
        // A process that was mid-write when killed can recreate an entry while we delete: try again.
        let mut last = None;
        for _ in 0..3 {
            match tokio::fs::remove_dir_all(&open.dir).await {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let id = open.id.clone();
        drop(open);
        self.forget_lock(&id);
        match last {
            Some(e) => Err(io_error("remove sandbox directory", e)),
            None => Ok(()),
        }
    }

    /// The ids of every directory under the root that looks like one of our sandboxes.
    async fn sandbox_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let Ok(mut entries) = tokio::fs::read_dir(&self.root).await else {
            return ids;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            if let Some(name) = entry.file_name().to_str() {
                if id::is_local_id(name) && entry.path().join(record::STATE_FILE).is_file() {
                    ids.push(name.to_owned());
                }
            }
        }
        ids.sort();
        ids
    }

    /// Enforces the timeout of every sandbox.
    async fn sweep(&self) {
        for id in self.sandbox_ids().await {
            match self.open(&id).await {
                Ok(_) | Err(SandboxError::NotFound(_)) => {}
                Err(e) => tracing::warn!(sandbox_id = %id, error = %e, "could not check sandbox"),
            }
        }
    }
}

/// Ticks until the last `LocalRuntime` handle is dropped.
async fn reaper(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(REAPER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.sweep().await;
    }
}
