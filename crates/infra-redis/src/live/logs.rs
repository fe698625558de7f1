//! [`LiveLog`] over one capped Redis stream per job (`XADD MAXLEN ~`, with a TTL, as the Python pipeline
//! kept it), whose entry ids are the lines' ids, and a pub/sub channel per job that wakes followers after
//! each append, through the live store's one subscriber connection.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::log::{LogEnd, LogEntry, LogLine, LogLineId, LogSource, NewLogLine};
use domain::ports::{LiveLog, LogError, LogWakeups, StoreError};
use domain::JobId;
use fred::prelude::{KeysInterface, Value};
use futures::StreamExt;

use super::store::RedisLiveStore;
use crate::script::LuaScript;

static APPEND: LuaScript = LuaScript::new(include_str!("../lua/log_append.lua"));
static READ: LuaScript = LuaScript::new(include_str!("../lua/log_read.lua"));

/// The `source` of the entry that ends a log; its `text` is the job's terminal status.
const END: &str = "end";

/// The live log's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveLogLimits {
    /// Entries kept per job (approximately: Redis trims whole nodes).
    pub max_lines: usize,
    /// How long a log is kept after its last write.
    pub ttl: Duration,
}

impl Default for LiveLogLimits {
    fn default() -> Self {
        Self {
            max_lines: 50_000,
            ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Job logs in Redis. Cheap to clone; shares the live store's connections.
#[derive(Clone, Debug)]
pub struct RedisLiveLog {
    store: RedisLiveStore,
    limits: LiveLogLimits,
}

impl RedisLiveLog {
    pub fn new(store: RedisLiveStore, limits: LiveLogLimits) -> Self {
        Self { store, limits }
    }

    async fn add(&self, job: JobId, entries: Vec<[String; 4]>) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        let keys = self.store.keys();
        let mut args: Vec<Value> = Vec::with_capacity(3 + entries.len() * 4);
        args.push(keys.job_logs_wake(job).into());
        args.push((self.limits.max_lines as i64).into());
        args.push((self.limits.ttl.as_secs().max(1) as i64).into());
        for entry in entries {
            args.extend(entry.into_iter().map(Value::from));
        }
        APPEND
            .run::<Value>(self.store.client(), vec![keys.job_logs(job)], args)
            .await
            .map(|_| ())
            .map_err(log_err)
    }

    async fn read(
        &self,
        job: JobId,
        forward: bool,
        from: String,
        count: usize,
    ) -> Result<Vec<Raw>, LogError> {
        let args: Vec<Value> = vec![
            if forward { "fwd" } else { "rev" }.into(),
            from.into(),
            (count.max(1) as i64).into(),
        ];
        let flat: Vec<String> = READ
            .run(
                self.store.client(),
                vec![self.store.keys().job_logs(job)],
                args,
            )
            .await
            .map_err(log_err)?;
        flat.chunks_exact(5).map(Raw::parse).collect()
    }
}

fn log_err(e: fred::error::Error) -> LogError {
    LogError::Unavailable(e.to_string())
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One entry as the read script answers it.
struct Raw {
    id: LogLineId,
    ts: DateTime<Utc>,
    source: String,
    text: String,
    phase: String,
}

impl Raw {
    fn parse(f: &[String]) -> Result<Self, LogError> {
        let corrupt = |what: &str| LogError::Corrupt(format!("{what}: {f:?}"));
        Ok(Self {
            id: LogLineId::parse(&f[0]).ok_or_else(|| corrupt("id"))?,
            ts: DateTime::parse_from_rfc3339(&f[1])
                .map_err(|_| corrupt("ts"))?
                .with_timezone(&Utc),
            source: f[2].clone(),
            text: f[3].clone(),
            phase: f[4].clone(),
        })
    }

    fn entry(self) -> Result<LogEntry, LogError> {
        if self.source == END {
            return Ok(LogEntry::End {
                id: self.id,
                end: LogEnd { status: self.text },
            });
        }
        let source = LogSource::parse(&self.source)
            .ok_or_else(|| LogError::Corrupt(format!("source {:?}", self.source)))?;
        Ok(LogEntry::Line(LogLine {
            id: self.id,
            ts: self.ts,
            source,
            text: self.text,
            phase: self.phase,
        }))
    }
}

#[async_trait]
impl LiveLog for RedisLiveLog {
    #[tracing::instrument(skip_all, fields(job_id = %job, lines = lines.len()), err)]
    async fn append(&self, job: JobId, lines: Vec<NewLogLine>) -> Result<(), LogError> {
        let entries = lines
            .into_iter()
            .map(|l| [ts(l.ts), l.source.as_str().to_owned(), l.text, l.phase])
            .collect();
        self.add(job, entries).await
    }

    #[tracing::instrument(skip_all, fields(job_id = %job), err)]
    async fn end(&self, job: JobId, end: LogEnd) -> Result<(), LogError> {
        let entry = [ts(Utc::now()), END.to_owned(), end.status, String::new()];
        self.add(job, vec![entry]).await
    }

    async fn read_after(
        &self,
        job: JobId,
        after: Option<LogLineId>,
        count: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        let from = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        self.read(job, true, from, count)
            .await?
            .into_iter()
            .map(Raw::entry)
            .collect()
    }

    async fn read_before(
        &self,
        job: JobId,
        before: Option<LogLineId>,
        count: usize,
    ) -> Result<Vec<LogLine>, LogError> {
        let from = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        // The end entry is the newest when there is one: read one more so that a page is still full.
        let raw = self.read(job, false, from, count + 1).await?;
        let mut lines = Vec::with_capacity(count);
        for r in raw {
            if let LogEntry::Line(line) = r.entry()? {
                lines.push(line);
            }
        }
        lines.truncate(count);
        Ok(lines)
    }

    async fn follow(&self, job: JobId) -> Result<LogWakeups, LogError> {
        let raw = self
            .store
            .subscribe_raw(self.store.keys().job_logs_wake(job))
            .await
            .map_err(|e: StoreError| LogError::Unavailable(e.to_string()))?;
        Ok(Box::pin(raw.map(|_| ())))
    }

    async fn exists(&self, job: JobId) -> Result<bool, LogError> {
        let n: i64 = self
            .store
            .client()
            .exists(self.store.keys().job_logs(job))
            .await
            .map_err(log_err)?;
        Ok(n > 0)
    }

    async fn expire(&self, job: JobId, after: Duration) -> Result<(), LogError> {
        self.store
            .client()
            .expire::<(), _>(
                self.store.keys().job_logs(job),
                after.as_secs().max(1) as i64,
                None,
            )
            .await
            .map_err(log_err)
    }
}
