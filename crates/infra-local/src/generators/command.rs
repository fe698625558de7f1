//! A generator that runs a configured program (an LLM agent): the goal on its stdin, the files as JSON
//! (`{"files": {"<path>": "<content>", …}}`) on its stdout.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use domain::ports::{CodeGenerator, GeneratedFile, GeneratedFiles, GeneratorError};
use domain::JobGoal;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// How much of the program's stderr a failure reports (its tail).
const STDERR_TAIL: usize = 2000;
/// The exit status (`EX_TEMPFAIL`) by which the program says its upstream is rate limiting it.
pub const EXIT_RATE_LIMITED: i32 = 75;

/// Runs `program args…` with the worker's environment (the agent needs its API keys) in its own process
/// group. Exit 0 with `{"files": {…}}` on stdout is success; exit [`EXIT_RATE_LIMITED`] is `RateLimited`,
/// any other non-zero exit `Failed` (with the tail of stderr), unparsable output `InvalidOutput`, and a run
/// past `timeout` `TimedOut` (the program and everything it started are killed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandGenerator {
    pub program: String,
    pub args: Vec<String>,
    pub timeout: Duration,
}

#[derive(Deserialize)]
struct Output {
    files: BTreeMap<String, String>,
}

impl CommandGenerator {
    pub fn new(program: impl Into<String>, args: Vec<String>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            args,
            timeout,
        }
    }
}

/// Kills the program's process group unless disarmed (timeout, or the build was cancelled).
struct KillGroup(Option<i32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

#[async_trait]
impl CodeGenerator for CommandGenerator {
    #[tracing::instrument(skip_all, fields(program = %self.program), err)]
    async fn generate(&self, goal: &JobGoal) -> Result<GeneratedFiles, GeneratorError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| GeneratorError::Failed(format!("start {}: {e}", self.program)))?;
        let mut guard = KillGroup(child.id().and_then(|p| i32::try_from(p).ok()));
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| GeneratorError::Failed("no stdin".into()))?;
        let goal = goal.as_str().to_owned();
        // Written concurrently with reading the output, so a program that answers before reading all of
        // its input cannot deadlock us; a program that ignores stdin is fine too.
        let feed = tokio::spawn(async move {
            let _ = stdin.write_all(goal.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
        let output = tokio::time::timeout(self.timeout, child.wait_with_output()).await;
        feed.abort();
        let output = match output {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(GeneratorError::Failed(format!(
                    "wait for {}: {e}",
                    self.program
                )))
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "code generator timed out");
                return Err(GeneratorError::TimedOut);
            }
        };
        // It exited by itself: leave nothing else to kill.
        guard.0 = None;
        if !output.status.success() {
            if output.status.code() == Some(EXIT_RATE_LIMITED) {
                return Err(GeneratorError::RateLimited);
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(GeneratorError::Failed(format!(
                "{} exited with {}: {}",
                self.program,
                output.status,
                tail(stderr.trim_end(), STDERR_TAIL)
            )));
        }
        let parsed: Output = serde_json::from_slice(&output.stdout).map_err(|e| {
            GeneratorError::InvalidOutput(format!("expected {{\"files\": {{path: content}}}}: {e}"))
        })?;
        if parsed.files.is_empty() {
            return Err(GeneratorError::InvalidOutput("no files".into()));
        }
        Ok(GeneratedFiles(
            parsed
                .files
                .into_iter()
                .map(|(path, content)| GeneratedFile { path, content })
                .collect(),
        ))
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    &s[cut..]
}
