//! What is published on a job's event channel.

use chrono::{DateTime, Utc};

use crate::{JobId, JobStatus};

/// The type string of an accepted transition's event (kept from the Python implementation's front end).
pub const STAGE_STARTED: &str = "build.stage.started";

/// One accepted transition, as subscribers see it:
/// `{type:"build.stage.started", job_id, status, stage, stage_label, message, timestamp}` (+ preview_url).
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub job_id: JobId,
    pub status: JobStatus,
    pub message: String,
    pub preview_url: Option<String>,
    pub timestamp: DateTime<Utc>,
}

impl JobEvent {
    pub fn kind(&self) -> &'static str {
        STAGE_STARTED
    }

    /// The event that closes a stream (ready or failed).
    pub fn is_final(&self) -> bool {
        self.status.is_terminal()
    }
}
