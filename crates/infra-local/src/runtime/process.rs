//! Process groups: how a sandbox's commands are started, signalled and found alive.
//!
//! Every command runs in its own process group (its leader's pid is the group id), so one signal reaches
//! the command and everything it started (npm, then node): SIGSTOP pauses, SIGCONT resumes, SIGKILL kills.
//! The group is also a session of its own (`setsid`), so the sandbox does not depend on the process that
//! started it: when that process exits (a crash, a restart, a deploy), the kernel sends SIGHUP and SIGCONT
//! to every stopped process group it orphans *in its own session*, which killed paused dev servers.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;

/// Used when the worker itself has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A shell command with the workspace as cwd, a clean environment (`PATH` and `LANG` of the worker,
/// `HOME` = the sandbox directory, then `envs`), in a session and process group of its own.
pub(crate) fn shell_command(
    script: &str,
    cwd: &Path,
    home: &Path,
    envs: &[(String, String)],
) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| OsString::from(DEFAULT_PATH)),
        )
        .env(
            "LANG",
            std::env::var_os("LANG").unwrap_or_else(|| OsString::from("C.UTF-8")),
        )
        .env("HOME", home)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent; it is all the child runs
    // between fork and exec. It also makes the child a process group leader (pgid = pid). The one unsafe
    // block of the crate: tokio offers no safe way to start a session.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    cmd
}

/// Sends `sig` to a process group. A group that no longer exists is not an error.
pub(crate) fn signal_group(pgid: i32, sig: Signal) -> Result<(), Errno> {
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a process group still has a live (non-zombie) member.
#[cfg(target_os = "linux")]
pub(crate) fn group_alive(pgid: i32) -> bool {
    // killpg(pgid, 0) also succeeds for zombies, which linger when nobody reaps them (an init that does
    // not, or a worker that died), so it only answers "dead" for sure; a live leader answers "alive";
    // otherwise the process table is read.
    match killpg(Pid::from_raw(pgid), None) {
        Err(Errno::ESRCH) => return false,
        Err(_) => return true,
        Ok(()) => {}
    }
    if live_member(pgid, pgid) {
        return true;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            return false;
        };
        live_member(pid, pgid)
    })
}

/// `pid` is a running (or stopped) process, not a zombie, in the group `pgid`.
#[cfg(target_os = "linux")]
fn live_member(pid: i32, pgid: i32) -> bool {
    matches!(proc_stat(pid), Some((state, pgrp)) if pgrp == pgid && state != 'Z' && state != 'X')
}

/// Whether a process group still has a live member.
#[cfg(not(target_os = "linux"))]
pub(crate) fn group_alive(pgid: i32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// A process's state letter and process group, from `/proc/<pid>/stat`.
#[cfg(target_os = "linux")]
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// A free TCP port on 127.0.0.1, for a sandbox port to be mapped to.
pub(crate) fn free_local_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Kills a foreground command's process group when the command's future is dropped (a cancelled build)
/// or times out, so nothing it started is left behind.
pub(crate) struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    pub fn new(pgid: i32) -> Self {
        Self { pgid: Some(pgid) }
    }

    /// The command finished on its own: leave whatever it started in the background alone.
    pub fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            let _ = signal_group(pgid, Signal::SIGKILL);
        }
    }
}
