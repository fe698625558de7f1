//! [`LogArchive`] in Postgres: one `job_logs` row per finished job, its lines as parallel arrays that
//! Postgres compresses (lz4) as one value each.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::log::{LogEnd, LogLine, LogLineId, LogSource};
use domain::ports::{ArchivedLog, LogArchive, LogError};
use domain::JobId;
use sqlx::PgPool;

/// Archived job logs.
#[derive(Clone, Debug)]
pub struct PgLogArchive {
    pool: PgPool,
}

impl PgLogArchive {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn log_err(e: sqlx::Error) -> LogError {
    LogError::Unavailable(e.to_string())
}

#[derive(sqlx::FromRow)]
struct Row {
    end_status: String,
    line_ids: Vec<String>,
    line_ts: Vec<DateTime<Utc>>,
    sources: Vec<String>,
    texts: Vec<String>,
    phases: Vec<String>,
}

#[async_trait]
impl LogArchive for PgLogArchive {
    #[tracing::instrument(skip_all, fields(job_id = %job, lines = log.lines.len()), err)]
    async fn store(&self, job: JobId, log: &ArchivedLog) -> Result<(), LogError> {
        let lines = &log.lines;
        let count = i32::try_from(lines.len()).unwrap_or(i32::MAX);
        sqlx::query(
            "INSERT INTO job_logs (job_id, end_status, line_count, line_ids, line_ts, sources, texts, phases) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (job_id) DO UPDATE SET end_status = $2, line_count = $3, line_ids = $4, \
                 line_ts = $5, sources = $6, texts = $7, phases = $8, archived_at = now()",
        )
        .bind(job.as_uuid())
        .bind(&log.end.status)
        .bind(count)
        .bind(lines.iter().map(|l| l.id.to_string()).collect::<Vec<_>>())
        .bind(lines.iter().map(|l| l.ts).collect::<Vec<_>>())
        .bind(lines.iter().map(|l| l.source.as_str()).collect::<Vec<_>>())
        .bind(lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>())
        .bind(lines.iter().map(|l| l.phase.as_str()).collect::<Vec<_>>())
        .execute(&self.pool)
        .await
        .map_err(log_err)?;
        Ok(())
    }

    async fn read(&self, job: JobId) -> Result<Option<ArchivedLog>, LogError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT end_status, line_ids, line_ts, sources, texts, phases FROM job_logs WHERE job_id = $1",
        )
        .bind(job.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(log_err)?;
        let Some(row) = row else { return Ok(None) };
        let n = row.line_ids.len();
        if [
            row.line_ts.len(),
            row.sources.len(),
            row.texts.len(),
            row.phases.len(),
        ]
        .iter()
        .any(|&len| len != n)
        {
            return Err(LogError::Corrupt(format!(
                "job {job}: arrays of different lengths"
            )));
        }
        let mut lines = Vec::with_capacity(n);
        let parts = row
            .line_ids
            .into_iter()
            .zip(row.line_ts)
            .zip(row.sources)
            .zip(row.texts)
            .zip(row.phases);
        for ((((id, ts), source), text), phase) in parts {
            lines.push(LogLine {
                id: LogLineId::parse(&id)
                    .ok_or_else(|| LogError::Corrupt(format!("line id {id:?}")))?,
                ts,
                source: LogSource::parse(&source)
                    .ok_or_else(|| LogError::Corrupt(format!("source {source:?}")))?,
                text,
                phase,
            });
        }
        Ok(Some(ArchivedLog {
            lines,
            end: LogEnd {
                status: row.end_status,
            },
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn purge(&self, older_than: Duration) -> Result<u64, LogError> {
        let secs = older_than.as_secs_f64();
        let done = sqlx::query(
            "DELETE FROM job_logs WHERE archived_at < now() - make_interval(secs => $1)",
        )
        .bind(secs)
        .execute(&self.pool)
        .await
        .map_err(log_err)?;
        Ok(done.rows_affected())
    }
}
