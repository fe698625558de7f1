//! [`StageTimer`]: times each build stage into `slipway_stage_seconds{stage}` from the live writes the
//! pipeline already makes. Every stage starts with a compare-and-set whose row (its `updated_at` stamped by
//! Postgres) is then saved and published here, so a stage lasted from its own write to the next stage's.
//! Only builds seen starting in this process are followed, and only until they end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::ports::{EventStream, LiveJobStore, StoreError};
use domain::{Job, JobEvent, JobId, JobStatus};

use crate::metrics::STAGE_SECONDS;

/// The stages timed: a build's statuses between leaving the queue and READY.
pub(crate) const TIMED_STAGES: [JobStatus; 5] = [
    JobStatus::Starting,
    JobStatus::Scaffold,
    JobStatus::Code,
    JobStatus::Deps,
    JobStatus::Checks,
];

/// Builds followed at most. Each ends with its last stage; a build stopped without a final write (its
/// process dying is the usual way, which also ends this map) would otherwise stay.
const MAX_BUILDS: usize = 4096;

/// Wraps the worker's live store; see the module documentation.
pub struct StageTimer {
    inner: Arc<dyn LiveJobStore>,
    /// Job → the stage it is in and when that stage started.
    current: Mutex<HashMap<JobId, (JobStatus, DateTime<Utc>)>>,
}

impl StageTimer {
    pub fn new(inner: Arc<dyn LiveJobStore>) -> Self {
        Self {
            inner,
            current: Mutex::default(),
        }
    }

    /// Ends the job's current stage (recording it when the build moved on to the next) and starts the one
    /// `job` is in.
    fn observe(&self, job: &Job) {
        // Every critical section is one map operation: a poisoned lock leaves the map consistent.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = current.remove(&job.id);
        if let Some((stage, since)) = previous {
            if stage.can_transition(job.status) && job.status != JobStatus::Failed {
                let took = (job.updated_at - since).to_std().unwrap_or_default();
                metrics::histogram!(STAGE_SECONDS, "stage" => stage.as_str())
                    .record(took.as_secs_f64());
            }
        }
        let followed = previous.is_some() || job.status == JobStatus::Starting;
        if followed && TIMED_STAGES.contains(&job.status) {
            if current.len() >= MAX_BUILDS {
                tracing::warn!(
                    builds = current.len(),
                    "stage timer full; forgetting the builds it follows"
                );
                current.clear();
            }
            current.insert(job.id, (job.status, job.updated_at));
        }
    }
}

#[async_trait]
impl LiveJobStore for StageTimer {
    async fn save(&self, job: &Job) -> Result<(), StoreError> {
        self.inner.save(job).await
    }

    async fn save_and_publish(&self, job: &Job, event: &JobEvent) -> Result<(), StoreError> {
        // Timed whether Redis took the write or not: the stage happened in Postgres either way.
        self.observe(job);
        self.inner.save_and_publish(job, event).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get(id).await
    }

    async fn subscribe(&self, id: JobId) -> Result<EventStream, StoreError> {
        self.inner.subscribe(id).await
    }

    async fn subscribe_failures(&self) -> Result<EventStream, StoreError> {
        self.inner.subscribe_failures().await
    }

    async fn delete(&self, id: JobId) -> Result<(), StoreError> {
        self.inner.delete(id).await
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use domain::ports::live_store::MockLiveJobStore;
    use domain::{ProjectId, SandboxState, Tier, UserId};
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    fn job_at(id: JobId, status: JobStatus, second: i64) -> Job {
        let at = Utc.timestamp_opt(1_764_000_000 + second, 0).unwrap();
        Job {
            id,
            project_id: ProjectId::new(),
            user_id: UserId::try_from("user_1").unwrap(),
            tier: Tier::Bootstrapper,
            goal: "a todo app".into(),
            status,
            status_message: None,
            error_message: None,
            debug_id: None,
            attempts: 1,
            sandbox_id: None,
            preview_url: None,
            workspace_path: None,
            build_version: None,
            sandbox_state: SandboxState::None,
            sandbox_state_version: 0,
            paused_at: None,
            resumed_at: None,
            sandbox_expires_at: None,
            last_activity_at: None,
            enqueued_at: Some(at),
            started_at: Some(at),
            completed_at: None,
            created_at: at,
            updated_at: at,
            duration_seconds: None,
        }
    }

    /// Feeds `moves` (status, second) of one job through a timer and returns the exposition.
    fn timed(moves: &[(JobStatus, i64)]) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let timer = StageTimer::new(Arc::new(MockLiveJobStore::new()));
        let id = JobId::new();
        metrics::with_local_recorder(&recorder, || {
            for (status, second) in moves {
                timer.observe(&job_at(id, *status, *second));
            }
        });
        handle.render()
    }

    #[test]
    fn each_stage_lasts_from_its_write_to_the_next_stages() {
        use JobStatus::*;
        let text = timed(&[
            (Starting, 0),
            (Scaffold, 1),
            (Code, 3),
            (Deps, 6),
            (Checks, 10),
            (Ready, 15),
        ]);
        for (stage, seconds) in [
            ("starting", 1),
            ("scaffold", 2),
            ("code", 3),
            ("deps", 4),
            ("checks", 5),
        ] {
            let line = format!(r#"slipway_stage_seconds_sum{{stage="{stage}"}} {seconds}"#);
            assert!(text.contains(&line), "missing {line} in:\n{text}");
        }
    }

    #[test]
    fn a_failed_stage_and_a_build_not_seen_starting_are_not_timed() {
        use JobStatus::*;
        let text = timed(&[(Code, 0), (Deps, 2), (Failed, 5)]);
        assert!(!text.contains("slipway_stage_seconds"), "{text}");
        let text = timed(&[(Starting, 0), (Scaffold, 1), (Failed, 5)]);
        assert!(
            text.contains(r#"slipway_stage_seconds_count{stage="starting"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"stage="scaffold""#), "{text}");
    }
}
