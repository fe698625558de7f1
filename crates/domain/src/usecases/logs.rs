//! Writing a build's log while it runs, and archiving it when it ends.
//!
//! The output callbacks of a command are synchronous and run wherever the runtime reads the output, so
//! lines go through a channel to one writer task per build, which appends them in batches (whatever
//! arrived while the previous append was in flight): a line reaches the live log as soon as it is printed,
//! and a fast printer costs one round trip per batch, not per line. The log is best effort: a store that
//! fails loses lines (logged), never the build.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::log::{clean_line, LogEnd, LogEntry, LogLine, LogLineId, LogSource, NewLogLine};
use crate::ports::logs::{ArchivedLog, LiveLog, LogArchive, LogError, LogWakeups};
use crate::ports::{OutputSink, OutputStream};
use crate::JobId;

/// Lines appended in one batch at most.
const BATCH: usize = 512;
/// Entries read per page when archiving.
const ARCHIVE_PAGE: usize = 1000;
/// How long Redis keeps a log once it is archived.
pub const LIVE_LOG_AFTER_ARCHIVE: Duration = Duration::from_secs(60 * 60);

enum Msg {
    Line(NewLogLine),
    /// Append everything before this, answer, and stop.
    Close(oneshot::Sender<()>),
}

/// One build's log writer. Cheap to clone; [`LogWriter::close`] waits for every line sent before it.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::UnboundedSender<Msg>,
    secrets: Arc<Vec<String>>,
    /// Each sink's unfinished lines (stdout, stderr), flushed at close.
    partials: Arc<Mutex<Vec<Arc<Mutex<Partial>>>>>,
}

/// A sink's text since its last newline, per stream, with the phase it was printed in.
struct Partial {
    phase: String,
    stdout: String,
    stderr: String,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the value whole: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogWriter {
    /// Starts the writer task of `job`'s log. `secrets`: values redacted wherever they appear.
    pub fn start(log: Arc<dyn LiveLog>, job: JobId, secrets: Vec<String>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut lines = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let mut closed = None;
                for msg in batch.drain(..) {
                    match msg {
                        Msg::Line(line) if closed.is_none() => lines.push(line),
                        Msg::Line(_) => {}
                        Msg::Close(done) => closed = Some(done),
                    }
                }
                if !lines.is_empty() {
                    let count = lines.len();
                    let sent = std::mem::replace(&mut lines, Vec::with_capacity(BATCH));
                    if let Err(error) = log.append(job, sent).await {
                        tracing::warn!(job_id = %job, lines = count, error = %error, "build log lines lost");
                    }
                }
                if let Some(done) = closed {
                    let _ = done.send(());
                    return;
                }
            }
        });
        Self {
            tx,
            secrets: Arc::new(secrets),
            partials: Arc::default(),
        }
    }

    /// Adds a line (cleaned here).
    pub fn line(&self, source: LogSource, phase: &str, raw: &str) {
        let line = NewLogLine {
            ts: Utc::now(),
            source,
            text: clean_line(raw, &self.secrets),
            phase: phase.to_owned(),
        };
        // Fails only once the writer is closed: a line printed after the build ended is dropped.
        let _ = self.tx.send(Msg::Line(line));
    }

    /// A `system` line: the pipeline's own words.
    pub fn system(&self, phase: &str, text: &str) {
        self.line(LogSource::System, phase, text);
    }

    /// The sink a command's output goes to: its chunks are cut into lines (a runtime may hand over several
    /// lines, or part of one, at a time), stdout and stderr kept apart.
    pub fn sink(&self, phase: &str) -> OutputSink {
        let writer = self.clone();
        let partial = Arc::new(Mutex::new(Partial {
            phase: phase.to_owned(),
            stdout: String::new(),
            stderr: String::new(),
        }));
        locked(&self.partials).push(partial.clone());
        OutputSink(Arc::new(move |stream, chunk| {
            let mut partial = locked(&partial);
            let Partial {
                phase,
                stdout,
                stderr,
            } = &mut *partial;
            let (source, buffer) = match stream {
                OutputStream::Stdout => (LogSource::Stdout, stdout),
                OutputStream::Stderr => (LogSource::Stderr, stderr),
            };
            buffer.push_str(chunk);
            while let Some(at) = buffer.find('\n') {
                let line: String = buffer.drain(..=at).collect();
                writer.line(source, phase, &line);
            }
        }))
    }

    /// Waits until every line sent before it is appended; lines sent afterwards (by a clone a command's
    /// callback still holds, such as the dev server's) are dropped.
    pub async fn close(&self) {
        let partials: Vec<_> = locked(&self.partials).drain(..).collect();
        for partial in partials {
            let mut partial = locked(&partial);
            let phase = partial.phase.clone();
            for (source, text) in [
                (LogSource::Stdout, std::mem::take(&mut partial.stdout)),
                (LogSource::Stderr, std::mem::take(&mut partial.stderr)),
            ] {
                if !text.is_empty() {
                    self.line(source, &phase, &text);
                }
            }
        }
        let (done, closed) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// Ends `job`'s live log with its terminal `status`, then archives the whole log (lines and end) in
/// `archive`, and lets the live store drop it an hour later. A log that cannot be archived stays live
/// (until its TTL): it is read from there.
#[tracing::instrument(skip_all, fields(job_id = %job, status), err)]
pub async fn finish_log(
    live: &dyn LiveLog,
    archive: &dyn LogArchive,
    job: JobId,
    status: &str,
) -> Result<usize, LogError> {
    let end = LogEnd {
        status: status.to_owned(),
    };
    live.end(job, end.clone()).await?;
    let mut lines = Vec::new();
    let mut after = None;
    loop {
        let page = live.read_after(job, after, ARCHIVE_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id());
        let full = page.len() == ARCHIVE_PAGE;
        lines.extend(page.into_iter().filter_map(|e| match e {
            LogEntry::Line(line) => Some(line),
            LogEntry::End { .. } => None,
        }));
        if !full {
            break;
        }
    }
    let count = lines.len();
    archive.store(job, &ArchivedLog { lines, end }).await?;
    live.expire(job, LIVE_LOG_AFTER_ARCHIVE).await?;
    tracing::info!(lines = count, "build log archived");
    Ok(count)
}

/// Logs held in memory: for tests and the benchmark's stacks that have no log to keep. Ids count up from
/// `1-0` per job.
#[derive(Default)]
pub struct MemoryLog {
    jobs: Mutex<std::collections::HashMap<JobId, Vec<LogEntry>>>,
    archived: Mutex<std::collections::HashMap<JobId, ArchivedLog>>,
}

impl MemoryLog {
    fn push(&self, job: JobId, make: impl FnOnce(LogLineId) -> LogEntry) {
        let mut jobs = locked(&self.jobs);
        let entries = jobs.entry(job).or_default();
        let id = LogLineId {
            ms: entries.len() as u64 + 1,
            seq: 0,
        };
        entries.push(make(id));
    }
}

#[async_trait::async_trait]
impl LiveLog for MemoryLog {
    async fn append(&self, job: JobId, lines: Vec<NewLogLine>) -> Result<(), LogError> {
        for line in lines {
            self.push(job, |id| {
                LogEntry::Line(LogLine {
                    id,
                    ts: line.ts,
                    source: line.source,
                    text: line.text,
                    phase: line.phase,
                })
            });
        }
        Ok(())
    }

    async fn end(&self, job: JobId, end: LogEnd) -> Result<(), LogError> {
        self.push(job, |id| LogEntry::End { id, end });
        Ok(())
    }

    async fn read_after(
        &self,
        job: JobId,
        after: Option<LogLineId>,
        count: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        let jobs = locked(&self.jobs);
        Ok(jobs
            .get(&job)
            .into_iter()
            .flatten()
            .filter(|e| after.is_none_or(|a| e.id() > a))
            .take(count)
            .cloned()
            .collect())
    }

    async fn read_before(
        &self,
        job: JobId,
        before: Option<LogLineId>,
        count: usize,
    ) -> Result<Vec<LogLine>, LogError> {
        let jobs = locked(&self.jobs);
        Ok(jobs
            .get(&job)
            .into_iter()
            .flatten()
            .rev()
            .filter_map(|e| match e {
                LogEntry::Line(l) if before.is_none_or(|b| l.id < b) => Some(l.clone()),
                _ => None,
            })
            .take(count)
            .collect())
    }

    async fn follow(&self, _job: JobId) -> Result<LogWakeups, LogError> {
        Ok(Box::pin(futures::stream::pending()))
    }

    async fn exists(&self, job: JobId) -> Result<bool, LogError> {
        Ok(locked(&self.jobs).contains_key(&job))
    }

    async fn expire(&self, _job: JobId, _after: Duration) -> Result<(), LogError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl LogArchive for MemoryLog {
    async fn store(&self, job: JobId, log: &ArchivedLog) -> Result<(), LogError> {
        locked(&self.archived).insert(job, log.clone());
        Ok(())
    }

    async fn read(&self, job: JobId) -> Result<Option<ArchivedLog>, LogError> {
        Ok(locked(&self.archived).get(&job).cloned())
    }

    async fn purge(&self, _older_than: Duration) -> Result<u64, LogError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[LogLine]) -> Vec<(LogSource, String)> {
        lines.iter().map(|l| (l.source, l.text.clone())).collect()
    }

    #[tokio::test]
    async fn chunks_become_lines_in_order_and_close_flushes_them_then_finish_archives_them() {
        let log = Arc::new(MemoryLog::default());
        let job = JobId::new();
        let writer = LogWriter::start(log.clone(), job, vec!["hunter22".into()]);
        writer.system("starting", "--- Starting generation pipeline ---");
        let sink = writer.sink("deps");
        (sink.0)(OutputStream::Stdout, "one\ntw");
        (sink.0)(OutputStream::Stderr, "warn hunter22\n");
        (sink.0)(OutputStream::Stdout, "o\nthree");
        writer.close().await;
        // After close, a callback still held prints into nothing.
        (sink.0)(OutputStream::Stdout, "late\n");

        finish_log(log.as_ref(), log.as_ref(), job, "ready")
            .await
            .unwrap();
        let archived = LogArchive::read(log.as_ref(), job).await.unwrap().unwrap();
        assert_eq!(
            texts(&archived.lines),
            vec![
                (
                    LogSource::System,
                    "--- Starting generation pipeline ---".into()
                ),
                (LogSource::Stdout, "one".into()),
                (LogSource::Stderr, "warn [REDACTED]".into()),
                (LogSource::Stdout, "two".into()),
                (LogSource::Stdout, "three".into()),
            ]
        );
        assert_eq!(archived.end.status, "ready");
        assert!(archived.lines.iter().skip(1).all(|l| l.phase == "deps"));
        let live = log.read_after(job, None, 100).await.unwrap();
        assert!(matches!(live.last(), Some(LogEntry::End { .. })));
    }
}
