//! A [`Job`] as the fields of its Redis hash, and back.
//!
//! Optional values that are `None` are absent from the hash (the save replaces the whole hash), never
//! stored empty.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::ports::StoreError;
use domain::{DebugId, Job, JobId, JobStatus, ProjectId, SandboxId, SandboxState, Tier, UserId};

use super::event::{format_time, parse_time};

/// The field holding [`revision`]; the save script compares it.
pub(crate) const REVISION_FIELD: &str = "rev";

/// [`Job::revision`] as a string that sorts like it: the version, then `updated_at` to the nanosecond.
/// Digits only, at fixed width, so that string order is numeric order in Lua under any collation (Redis
/// sets `LC_COLLATE` from its environment).
pub(crate) fn revision(job: &Job) -> String {
    let (version, at) = job.revision();
    format!(
        "{:020}{:020}{:09}",
        version.max(0),
        at.timestamp().max(0),
        at.timestamp_subsec_nanos()
    )
}

/// The hash's fields, `None`s left out.
pub(crate) fn to_fields(job: &Job) -> Vec<(&'static str, String)> {
    let mut f: Vec<(&'static str, String)> = vec![
        ("job_id", job.id.to_string()),
        ("status", job.status.as_str().to_owned()),
        ("stage_label", job.stage_label().to_owned()),
        ("user_id", job.user_id.to_string()),
        ("project_id", job.project_id.to_string()),
        ("goal", job.goal.clone()),
        ("tier", job.tier.as_str().to_owned()),
        ("attempts", job.attempts.to_string()),
        ("sandbox_paused", job.sandbox_paused().to_string()),
        ("sandbox_state", job.sandbox_state.as_str().to_owned()),
        (
            "sandbox_state_version",
            job.sandbox_state_version.to_string(),
        ),
        ("created_at", format_time(job.created_at)),
        ("updated_at", format_time(job.updated_at)),
        (REVISION_FIELD, revision(job)),
    ];
    let mut opt = |name: &'static str, value: Option<String>| {
        if let Some(v) = value {
            f.push((name, v));
        }
    };
    opt("status_message", job.status_message.clone());
    opt("error_message", job.error_message.clone());
    opt("debug_id", job.debug_id.map(|d| d.to_string()));
    opt("sandbox_id", job.sandbox_id.as_ref().map(|s| s.to_string()));
    opt("preview_url", job.preview_url.clone());
    opt("workspace_path", job.workspace_path.clone());
    opt("build_version", job.build_version.clone());
    opt("paused_at", job.paused_at.map(format_time));
    opt("resumed_at", job.resumed_at.map(format_time));
    opt(
        "sandbox_expires_at",
        job.sandbox_expires_at.map(format_time),
    );
    opt("last_activity_at", job.last_activity_at.map(format_time));
    opt("enqueued_at", job.enqueued_at.map(format_time));
    opt("started_at", job.started_at.map(format_time));
    opt("completed_at", job.completed_at.map(format_time));
    opt(
        "duration_seconds",
        job.duration_seconds.map(|d| d.to_string()),
    );
    f
}

/// Rebuilds the job from its hash; `Corrupt` names the first field that is missing or does not parse.
pub(crate) fn from_fields(id: JobId, mut h: HashMap<String, String>) -> Result<Job, StoreError> {
    let mut r = Reader { h: &mut h };
    let stored_id: JobId = r.req("job_id", |s| JobId::parse(s).ok())?;
    if stored_id != id {
        return Err(StoreError::Corrupt(format!(
            "job hash of {id} holds job {stored_id}"
        )));
    }
    let sandbox_state = r.req("sandbox_state", |s| SandboxState::try_from(s).ok())?;
    Ok(Job {
        id,
        project_id: r.req("project_id", |s| ProjectId::parse(s).ok())?,
        user_id: r.req("user_id", |s| UserId::try_from(s).ok())?,
        tier: r.req("tier", |s| Tier::try_from(s).ok())?,
        goal: r.take("goal").ok_or_else(|| missing("goal"))?,
        status: r.req("status", |s| JobStatus::try_from(s).ok())?,
        status_message: r.take("status_message"),
        error_message: r.take("error_message"),
        debug_id: r.opt("debug_id", |s| DebugId::parse(s).ok())?,
        attempts: r.req("attempts", |s| s.parse().ok())?,
        sandbox_id: r.opt("sandbox_id", |s| SandboxId::try_from(s).ok())?,
        preview_url: r.take("preview_url"),
        workspace_path: r.take("workspace_path"),
        build_version: r.take("build_version"),
        sandbox_state,
        sandbox_state_version: r.req("sandbox_state_version", |s| s.parse().ok())?,
        paused_at: r.opt("paused_at", parse_time)?,
        resumed_at: r.opt("resumed_at", parse_time)?,
        sandbox_expires_at: r.opt("sandbox_expires_at", parse_time)?,
        last_activity_at: r.opt("last_activity_at", parse_time)?,
        enqueued_at: r.opt("enqueued_at", parse_time)?,
        started_at: r.opt("started_at", parse_time)?,
        completed_at: r.opt("completed_at", parse_time)?,
        created_at: r.req::<DateTime<Utc>>("created_at", parse_time)?,
        updated_at: r.req::<DateTime<Utc>>("updated_at", parse_time)?,
        duration_seconds: r.opt("duration_seconds", |s| s.parse().ok())?,
    })
}

fn missing(field: &str) -> StoreError {
    StoreError::Corrupt(format!("job hash lacks {field}"))
}

struct Reader<'a> {
    h: &'a mut HashMap<String, String>,
}

impl Reader<'_> {
    fn take(&mut self, field: &str) -> Option<String> {
        self.h.remove(field)
    }

    fn req<T>(&mut self, field: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, StoreError> {
        let raw = self.take(field).ok_or_else(|| missing(field))?;
        parse(&raw).ok_or_else(|| StoreError::Corrupt(format!("job hash field {field} is {raw:?}")))
    }

    fn opt<T>(
        &mut self,
        field: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        match self.take(field) {
            None => Ok(None),
            Some(raw) => parse(&raw)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("job hash field {field} is {raw:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn job() -> Job {
        let t = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        Job {
            id: JobId::new(),
            project_id: ProjectId::new(),
            user_id: UserId::try_from("user_1").unwrap(),
            tier: Tier::Partner,
            goal: "a todo app".into(),
            status: JobStatus::Ready,
            status_message: Some("done".into()),
            error_message: None,
            debug_id: Some(DebugId::new()),
            attempts: 1,
            sandbox_id: Some(SandboxId::try_from("sbx1").unwrap()),
            preview_url: Some("https://p.example".into()),
            workspace_path: Some("/home/user/app".into()),
            build_version: Some("build_v0_1".into()),
            sandbox_state: SandboxState::Paused,
            sandbox_state_version: 3,
            paused_at: Some(t),
            resumed_at: None,
            sandbox_expires_at: None,
            last_activity_at: Some(t),
            enqueued_at: Some(t),
            started_at: Some(t),
            completed_at: Some(t),
            created_at: t,
            updated_at: t,
            duration_seconds: Some(42),
        }
    }

    fn map(job: &Job) -> HashMap<String, String> {
        to_fields(job)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn round_trips_exactly() {
        let j = job();
        assert_eq!(from_fields(j.id, map(&j)), Ok(j));
    }

    #[test]
    fn sandbox_paused_is_derived_from_the_state() {
        let j = job();
        assert_eq!(map(&j)["sandbox_paused"], "true");
    }

    #[test]
    fn revision_orders_by_version_then_time() {
        let a = job();
        let mut b = a.clone();
        b.updated_at += chrono::Duration::nanoseconds(1);
        assert!(revision(&a) < revision(&b));
        let mut c = a.clone();
        c.sandbox_state_version += 1;
        c.updated_at -= chrono::Duration::days(1);
        assert!(revision(&b) < revision(&c));
    }

    #[test]
    fn bad_field_is_corrupt() {
        let j = job();
        let mut m = map(&j);
        m.insert("status".into(), "cancelled".into());
        assert!(matches!(from_fields(j.id, m), Err(StoreError::Corrupt(_))));
        let mut m = map(&j);
        m.remove("tier");
        assert!(matches!(from_fields(j.id, m), Err(StoreError::Corrupt(_))));
    }
}
