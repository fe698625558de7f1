//! Running commands in a sandbox: to completion with a deadline, or in the background.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::ports::{
    BackgroundCommand, CommandExit, CommandOutput, CommandSpec, OutputSink, OutputStream,
    SandboxError,
};
use domain::usecases::output_tail::{last_lines, TAIL_LINES};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

use super::process::{self, GroupGuard};
use super::record::RunState;
use super::{io_error, paths, Inner, Open};

/// How long output still in the pipes is read after the command exited (a daemon it started may keep
/// them open forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// The most output kept per stream; the tail is kept, since that is where errors are.
const MAX_CAPTURE: usize = 4 << 20;

/// The working directory and environment of a command. A `PORT` the pipeline sets is a sandbox port:
/// the app gets the host port mapped to it instead.
fn prepare(
    open: &mut Open,
    spec: &CommandSpec,
) -> Result<(PathBuf, Vec<(String, String)>), SandboxError> {
    if open.record.state == RunState::Paused {
        return Err(SandboxError::Conflict(format!(
            "sandbox {} is paused",
            open.id
        )));
    }
    let cwd = open.workspace().join(paths::workspace_relative(
        spec.cwd.as_deref().unwrap_or(""),
    )?);
    if !cwd.is_dir() {
        return Err(SandboxError::Invalid(format!(
            "working directory {:?} does not exist",
            spec.cwd.as_deref().unwrap_or("")
        )));
    }
    let mut envs = Vec::with_capacity(spec.envs.len());
    for (k, v) in &spec.envs {
        match (k.as_str(), v.parse::<u16>()) {
            ("PORT", Ok(port)) => {
                let host = open.host_port(port)?;
                envs.push((k.clone(), host.to_string()));
            }
            _ => envs.push((k.clone(), v.clone())),
        }
    }
    Ok((cwd, envs))
}

fn pgid_of(pid: Option<u32>) -> Result<i32, SandboxError> {
    pid.and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| SandboxError::Provider("started command has no pid".into()))
}

impl Inner {
    pub(super) async fn run(
        &self,
        id: &str,
        spec: CommandSpec,
    ) -> Result<CommandOutput, SandboxError> {
        let (mut child, pgid) = {
            let mut open = self.open(id).await?;
            let (cwd, envs) = prepare(&mut open, &spec)?;
            let script = paths::map_command(&spec.cmd, &open.workspace());
            let mut cmd = process::shell_command(&script, &cwd, &open.dir, &envs);
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            let child = cmd.spawn().map_err(|e| io_error("start command", e))?;
            let pgid = pgid_of(child.id())?;
            // Registered so that pause and kill reach it while it runs.
            open.record.groups.push(pgid);
            if let Err(e) = open.save().await {
                let _ = process::signal_group(pgid, Signal::SIGKILL);
                return Err(e);
            }
            (child, pgid)
        };
        let mut guard = GroupGuard::new(pgid);
        let stdout = spawn_reader(
            child.stdout.take(),
            OutputStream::Stdout,
            spec.output.clone(),
        );
        let stderr = spawn_reader(
            child.stderr.take(),
            OutputStream::Stderr,
            spec.output.clone(),
        );

        let status = match tokio::time::timeout(spec.timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => return Err(io_error("wait for command", e)),
            Err(_) => {
                drop(guard);
                let _ = child.wait().await;
                stdout.abort();
                stderr.abort();
                // Drops the dead group from the state (or finds the sandbox gone).
                let _ = self.open(id).await;
                tracing::info!(sandbox_id = %id, timeout = ?spec.timeout, "command timed out");
                return Err(SandboxError::TimedOut(format!(
                    "command ran past its {:?} deadline",
                    spec.timeout
                )));
            }
        };
        // It finished by itself: what it left running in the background stays, as in a microVM.
        guard.disarm();
        let stdout = stdout.collect().await;
        let stderr = stderr.collect().await;
        let exit_code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        // The group stays registered while anything it started is alive; a killed sandbox is NotFound.
        drop(self.open(id).await?);
        Ok(CommandOutput {
            exit_code,
            stdout,
            stderr,
        })
    }

    pub(super) async fn run_background(
        &self,
        id: &str,
        spec: CommandSpec,
    ) -> Result<BackgroundCommand, SandboxError> {
        let mut open = self.open(id).await?;
        let (cwd, envs) = prepare(&mut open, &spec)?;
        let script = paths::map_command(&spec.cmd, &open.workspace());
        let logs = open.dir.join("logs");
        tokio::fs::create_dir_all(&logs)
            .await
            .map_err(|e| io_error("create log directory", e))?;
        // Named after the pid once it is known.
        let starting = logs.join(format!("starting-{}.log", super::id::random_suffix(8)));
        let log = std::fs::File::create(&starting).map_err(|e| io_error("create log file", e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| io_error("create log file", e))?;
        let mut cmd = process::shell_command(&script, &cwd, &open.dir, &envs);
        cmd.stdout(log).stderr(log_err);
        let mut child = cmd
            .spawn()
            .map_err(|e| io_error("start background command", e))?;
        let pgid = pgid_of(child.id())?;
        let named = logs.join(format!("{pgid}.log"));
        let log_path = match tokio::fs::rename(&starting, &named).await {
            Ok(()) => named,
            Err(_) => starting,
        };
        open.record.groups.push(pgid);
        open.record.background.push(pgid);
        if let Err(e) = open.save().await {
            let _ = process::signal_group(pgid, Signal::SIGKILL);
            return Err(e);
        }
        tracing::info!(sandbox_id = %id, pid = pgid, "background command started");
        let pid = u32::try_from(pgid).map_err(|_| SandboxError::Provider("negative pid".into()))?;
        let (mut command, reporter) = BackgroundCommand::watched(pid);
        // The output goes to its log file (it must outlive this process); the sink follows the file.
        let (exited_tx, exited_rx) = tokio::sync::watch::channel(false);
        if let Some(sink) = spec.output.clone() {
            let (catch_up_tx, catch_up_rx) = tokio::sync::mpsc::channel(4);
            command = command.with_output_catch_up(catch_up_tx);
            tokio::spawn(follow_log(log_path.clone(), sink, exited_rx, catch_up_rx));
        }
        // Reaps it when it ends, so it does not linger as a zombie, and reports how it ended.
        tokio::spawn(async move {
            let waited = child.wait().await;
            let _ = exited_tx.send(true);
            let Ok(status) = waited else {
                return;
            };
            let exit_code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            reporter.exited(CommandExit {
                exit_code,
                output_tail: log_tail(&log_path).await,
            });
        });
        Ok(command)
    }
}

/// How often a background command's log file is read for new output: at first, and again after output;
/// the wait doubles while the file is quiet, up to `FOLLOW_IDLE` (a paused dev server is followed too).
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
const FOLLOW_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Feeds a background command's log file to its sink, a line at a time (newline included), from the start
/// until the command has exited and the rest is read. Stdout and stderr share the file: both are reported
/// as stdout. A catch-up request is answered once the file has been read to its current end.
async fn follow_log(
    path: std::path::PathBuf,
    sink: OutputSink,
    mut exited: tokio::sync::watch::Receiver<bool>,
    mut catch_up: tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
) {
    use tokio::io::AsyncReadExt;
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return;
    };
    let mut pending = String::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut wait = FOLLOW_EVERY;
    let mut caught_up: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    loop {
        let last_round = *exited.borrow();
        wait = (wait * 2).min(FOLLOW_IDLE);
        loop {
            match file.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    wait = FOLLOW_EVERY;
                    pending.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    while let Some(at) = pending.find('\n') {
                        let line: String = pending.drain(..=at).collect();
                        (sink.0)(OutputStream::Stdout, &line);
                    }
                }
            }
        }
        for asked in caught_up.drain(..) {
            let _ = asked.send(());
        }
        if last_round {
            if !pending.is_empty() {
                (sink.0)(OutputStream::Stdout, &pending);
            }
            return;
        }
        tokio::select! {
            _ = exited.changed() => {}
            Some(asked) = catch_up.recv() => caught_up.push(asked),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The last lines of a background command's log (empty when it cannot be read, e.g. the sandbox is gone).
async fn log_tail(path: &std::path::Path) -> String {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    const TAIL_BYTES: u64 = 16 * 1024;
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return String::new();
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    if file
        .seek(std::io::SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .await
        .is_err()
    {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).await.is_err() {
        return String::new();
    }
    last_lines(&String::from_utf8_lossy(&bytes), TAIL_LINES)
}

/// A stream being read: the task, and the output read so far.
struct Reader {
    task: JoinHandle<()>,
    out: Arc<Mutex<String>>,
}

/// Reads a stream line by line, passing each line (newline included, so the calls concatenate to the
/// output) to the sink and keeping the output.
fn spawn_reader<R>(reader: Option<R>, stream: OutputStream, sink: Option<OutputSink>) -> Reader
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let out = Arc::new(Mutex::new(String::new()));
    let kept = out.clone();
    let task = tokio::spawn(async move {
        let Some(reader) = reader else {
            return;
        };
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    if let Some(sink) = &sink {
                        (sink.0)(stream, &line);
                    }
                    let mut out = kept.lock().unwrap_or_else(|e| e.into_inner());
                    out.push_str(&line);
                    if out.len() > 2 * MAX_CAPTURE {
                        keep_tail(&mut out, MAX_CAPTURE);
                    }
                }
            }
        }
    });
    Reader { task, out }
}

impl Reader {
    /// The output, once the stream ended or [`OUTPUT_GRACE`] passed.
    async fn collect(self) -> String {
        let abort = self.task.abort_handle();
        if tokio::time::timeout(OUTPUT_GRACE, self.task).await.is_err() {
            abort.abort();
        }
        let mut out = std::mem::take(&mut *self.out.lock().unwrap_or_else(|e| e.into_inner()));
        keep_tail(&mut out, MAX_CAPTURE);
        out
    }

    fn abort(&self) {
        self.task.abort();
    }
}

fn keep_tail(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s.drain(..cut);
}
