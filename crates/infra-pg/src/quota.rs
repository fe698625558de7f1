//! The daily quota, counted with the jobs: a job's `counted_on` is the UTC day it counts against. A submit
//! reads the founder's counts and inserts the job in one transaction, under a transaction-scoped advisory
//! lock on the founder, so two submits of one founder are admitted one after the other and a failed insert
//! counts nothing (its row, and with it the count, is rolled back).

use chrono::NaiveDate;
use domain::ports::{Admitted, RepoError};
use domain::quota::{DailyQuota, QuotaCounts};
use domain::{JobStatus, NewJob, UserId};
use sqlx::{Connection, PgConnection};

use crate::error::map_err;
use crate::jobs;

/// Keys the founder's advisory lock apart from any other advisory lock on the same text.
const LOCK_NAMESPACE: i64 = 0x0051_756f_7461; // "Quota"

/// See [`domain::ports::JobRepository::insert_admitted_job`].
pub(crate) async fn insert_admitted(
    conn: &mut PgConnection,
    job: &NewJob,
    quota: DailyQuota,
) -> Result<Admitted, RepoError> {
    let mut tx = conn.begin().await.map_err(map_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
        .bind(job.user_id.as_str())
        .bind(LOCK_NAMESPACE)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let counts = counts(&mut tx, &job.user_id, quota.day).await?;
    let Some((status, message)) = quota.admit(counts).status() else {
        tx.rollback().await.map_err(map_err)?;
        return Ok(Admitted::TooManyScheduled {
            scheduled: counts.scheduled,
        });
    };
    let queued = status == JobStatus::Queued;
    let admitted = NewJob {
        status,
        status_message: message.map(str::to_owned),
        ..job.clone()
    };
    let inserted = jobs::insert_counted(&mut tx, &admitted, queued.then_some(quota.day)).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(Admitted::Inserted {
        job: Box::new(inserted),
        counted_today: counts.counted_today + u32::from(queued),
    })
}

async fn counts(
    conn: &mut PgConnection,
    user: &UserId,
    day: NaiveDate,
) -> Result<QuotaCounts, RepoError> {
    let (counted_today, scheduled): (i64, i64) = sqlx::query_as(
        "SELECT \
           (SELECT count(*) FROM jobs WHERE user_id = $1 AND counted_on = $2), \
           (SELECT count(*) FROM jobs WHERE user_id = $1 AND status = $3)",
    )
    .bind(user.as_str())
    .bind(day)
    .bind(JobStatus::Scheduled.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(QuotaCounts {
        counted_today: to_u32(counted_today),
        scheduled: to_u32(scheduled),
    })
}

/// How many of `user`'s jobs count against `day`.
pub(crate) async fn counted_on(
    conn: &mut PgConnection,
    user: &UserId,
    day: NaiveDate,
) -> Result<u32, RepoError> {
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE user_id = $1 AND counted_on = $2")
            .bind(user.as_str())
            .bind(day)
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?;
    Ok(to_u32(n))
}

fn to_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}
