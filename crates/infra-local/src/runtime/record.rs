//! A sandbox's state on disk (`<root>/<id>/state.json`): what survives a restart of the worker.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use domain::ports::{ProviderState, SandboxError};
use serde::{Deserialize, Serialize};

use super::io_error;

/// The file name of a sandbox's state inside its directory.
pub(crate) const STATE_FILE: &str = "state.json";

/// Whether the sandbox's processes run or are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RunState {
    Running,
    Paused,
}

impl From<RunState> for ProviderState {
    fn from(s: RunState) -> Self {
        match s {
            RunState::Running => ProviderState::Running,
            RunState::Paused => ProviderState::Paused,
        }
    }
}

/// The metadata a sandbox was created with, as strings (like E2B's metadata map).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Metadata {
    pub job_id: String,
    pub user_id: String,
    pub project_id: String,
}

/// Everything the runtime knows about one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SandboxRecord {
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Unix milliseconds: past it a running sandbox is paused (`auto_pause`) or killed.
    pub deadline_ms: u64,
    pub auto_pause: bool,
    pub metadata: Metadata,
    pub state: RunState,
    /// The process groups started in the sandbox (their leaders' pids).
    #[serde(default)]
    pub groups: Vec<i32>,
    /// Those of `groups` started in the background (dev servers): they run until killed, unlike a
    /// foreground command, which may end at any moment.
    #[serde(default)]
    pub background: Vec<i32>,
    /// Sandbox port → host port on 127.0.0.1.
    #[serde(default)]
    pub ports: BTreeMap<u16, u16>,
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The deadline `timeout` from now, in Unix milliseconds.
pub(crate) fn deadline_after(timeout: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
}

impl SandboxRecord {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.state == RunState::Running && now_ms >= self.deadline_ms
    }
}

/// Reads a sandbox's state. A missing file is `NotFound` (never created, or killed).
pub(crate) async fn load(dir: &Path, id: &str) -> Result<SandboxRecord, SandboxError> {
    let path = dir.join(STATE_FILE);
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SandboxError::NotFound(id.to_owned()))
        }
        Err(e) => return Err(io_error("read sandbox state", e)),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| SandboxError::Provider(format!("corrupt state of sandbox {id}: {e}")))
}

/// Writes a sandbox's state atomically (a temporary file renamed over the old one), so a crash never
/// leaves a half-written state behind.
pub(crate) async fn save(dir: &Path, record: &SandboxRecord) -> Result<(), SandboxError> {
    let bytes = serde_json::to_vec_pretty(record)
        .map_err(|e| SandboxError::Provider(format!("encode sandbox state: {e}")))?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp-{}", super::id::random_suffix(8)));
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(|e| io_error("write sandbox state", e))?;
    if let Err(e) = tokio::fs::rename(&tmp, dir.join(STATE_FILE)).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io_error("replace sandbox state", e));
    }
    Ok(())
}
