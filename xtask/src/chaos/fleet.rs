//! The processes under test: one api-server and the job-workers, each a real process of the debug
//! binaries, which the campaign kills (-9), stalls (SIGSTOP … SIGCONT) and starts again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

const READY_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Which binary a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Worker(usize),
}

impl Role {
    pub fn name(self) -> String {
        match self {
            Role::Api => "api-server".to_owned(),
            Role::Worker(i) => format!("job-worker-{i}"),
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Role::Api => "api-server",
            Role::Worker(_) => "job-worker",
        }
    }
}

/// One process of the fleet: how to start it, and the running child.
pub struct Member {
    pub role: Role,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// How many times it was started (worker ids differ per start, as a restarted pod's would).
    starts: u32,
    pub stalled: bool,
}

impl Member {
    pub fn new(role: Role, env: Vec<(String, String)>, log_dir: &Path) -> Self {
        Self {
            role,
            env,
            log: log_dir.join(format!("{}.log", role.name())),
            child: None,
            starts: 0,
            stalled: false,
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the binary with its environment (and nothing else of ours), its output appended to its log.
    pub fn start(&mut self, bin_dir: &Path) -> anyhow::Result<()> {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut command = Command::new(bin_dir.join(self.role.binary()));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cannot share the log file")?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        if let Role::Worker(i) = self.role {
            command.env("WORKER_ID", format!("chaos-w{i}-{}", self.starts));
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.role.name()))?;
        self.child = Some(child);
        self.stalled = false;
        Ok(())
    }

    fn pid(&self) -> Option<Pid> {
        let pid = self.child.as_ref()?.id()?;
        i32::try_from(pid).ok().map(Pid::from_raw)
    }

    /// kill -9, and reaps it.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.stalled = false;
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`).
    pub fn stall(&mut self, stop: bool) {
        if let Some(pid) = self.pid() {
            let signal = if stop {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            let _ = kill(pid, signal);
            self.stalled = stop;
        }
    }

    /// Whether it exited on its own (a crash the campaign did not cause).
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status.to_string())
    }

    /// SIGCONT, SIGTERM, then SIGKILL after a deadline.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if tokio::time::timeout(STOP_DEADLINE, child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// Waits until the api-server at `base` answers `/healthz`.
pub async fn wait_healthy(base: &str, member: &mut Member) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Some(status) = member.exited() {
            anyhow::bail!(
                "{} exited at start ({status}); see {}",
                member.role.name(),
                member.log.display()
            );
        }
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "api-server did not answer {base}/healthz within {READY_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
