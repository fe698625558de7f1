//! Running a child command to completion while staying alive through Ctrl-C, so that whatever xtask
//! started (private Postgres, Redis) is stopped after the child has finished.

use std::process::{ExitCode, ExitStatus};

use anyhow::Context;
use tokio::process::Command;

/// Runs `command` with inherited stdio and returns how it ended. Ctrl-C reaches the child through the
/// terminal's process group; xtask itself keeps waiting so its callers can clean up afterwards.
pub async fn status(mut command: Command, what: &str) -> anyhow::Result<ExitStatus> {
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut interrupted = false;
    loop {
        tokio::select! {
            status = child.wait() => return status.with_context(|| format!("waiting for `{what}`")),
            _ = &mut interrupt, if !interrupted => interrupted = true,
        }
    }
}

/// Runs `command` and fails with one line naming it unless it exits successfully.
pub async fn checked(command: Command, what: &str) -> anyhow::Result<()> {
    let status = status(command, what).await?;
    if status.success() {
        Ok(())
    } else {
        anyhow::bail!("`{what}` failed ({status})")
    }
}

/// The exit code to hand back for a child's status (a signal death becomes 128 + signal, as in a shell).
pub fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
