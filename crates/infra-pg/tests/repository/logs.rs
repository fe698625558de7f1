//! The archive of finished builds' logs.

use std::time::Duration;

use chrono::Utc;
use domain::log::{LogEnd, LogLine, LogLineId, LogSource};
use domain::ports::{ArchivedLog, LogArchive};
use infra_pg::PgLogArchive;
use sqlx::PgPool;

use crate::helpers::{project, ready_job, repo, user};

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn a_log_is_archived_whole_read_back_in_order_and_purged_after_its_retention(pool: PgPool) {
    let repo = repo(pool.clone());
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = ready_job(&repo, p.id, &alice).await;
    let archive = PgLogArchive::new(pool.clone());
    assert_eq!(archive.read(job.id).await.unwrap(), None);

    let lines: Vec<LogLine> = (0..5000u64)
        .map(|n| LogLine {
            id: LogLineId {
                ms: 1_700_000_000_000 + n / 3,
                seq: n % 3,
            },
            ts: Utc::now(),
            source: if n % 2 == 0 {
                LogSource::Stdout
            } else {
                LogSource::Stderr
            },
            text: format!("added package number {n} of the install"),
            phase: "deps".into(),
        })
        .collect();
    let log = ArchivedLog {
        lines,
        end: LogEnd {
            status: "ready".into(),
        },
    };
    archive.store(job.id, &log).await.unwrap();
    // Archiving again (a retried finish) replaces it.
    archive.store(job.id, &log).await.unwrap();
    let read = archive.read(job.id).await.unwrap().unwrap();
    assert_eq!(read.end, log.end);
    assert_eq!(read.lines.len(), 5000);
    for (a, b) in read.lines.iter().zip(&log.lines) {
        assert_eq!(
            (a.id, a.source, &a.text, &a.phase),
            (b.id, b.source, &b.text, &b.phase)
        );
    }
    // Stored compressed: far smaller than its text.
    let (stored, raw): (i32, i64) = sqlx::query_as(
        "SELECT pg_column_size(texts), sum(octet_length(t))::bigint \
         FROM job_logs, unnest(texts) t WHERE job_id = $1 GROUP BY texts",
    )
    .bind(job.id.as_uuid())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        i64::from(stored) * 3 < raw,
        "{stored} bytes stored for {raw} of text"
    );

    assert_eq!(archive.purge(Duration::from_secs(86_400)).await.unwrap(), 0);
    assert_eq!(archive.purge(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(archive.read(job.id).await.unwrap(), None);
}
