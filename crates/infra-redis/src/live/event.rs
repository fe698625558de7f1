//! The JSON an event is published as: the one wire format of `job:{id}:events`, shared with the SSE route.

use chrono::{DateTime, SecondsFormat, Utc};
use domain::event::STAGE_STARTED;
use domain::ports::StoreError;
use domain::{JobEvent, JobId, JobStatus};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct EventWire {
    #[serde(rename = "type")]
    kind: String,
    job_id: String,
    status: String,
    /// The same as `status`: the Python front end reads `stage`.
    stage: String,
    stage_label: String,
    message: String,
    timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preview_url: Option<String>,
}

/// Timestamps as RFC 3339 in UTC with as many fractional digits as needed, so they read back exactly.
pub(crate) fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `{"type":"build.stage.started","job_id","status","stage","stage_label","message","timestamp"}` plus
/// `preview_url` when there is one.
pub fn event_to_json(event: &JobEvent) -> String {
    let wire = EventWire {
        kind: event.kind().to_owned(),
        job_id: event.job_id.to_string(),
        status: event.status.as_str().to_owned(),
        stage: event.status.as_str().to_owned(),
        stage_label: event.status.label().to_owned(),
        message: event.message.clone(),
        timestamp: format_time(event.timestamp),
        preview_url: event.preview_url.clone(),
    };
    // Serialising a struct of strings cannot fail; the fallback keeps this total without a panic.
    serde_json::to_string(&wire).unwrap_or_default()
}

/// Parses what [`event_to_json`] wrote; `Corrupt` names what does not parse.
pub fn event_from_json(json: &str) -> Result<JobEvent, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("event: {what}"));
    let wire: EventWire = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    if wire.kind != STAGE_STARTED {
        return Err(corrupt(format!("unknown type {:?}", wire.kind)));
    }
    Ok(JobEvent {
        job_id: JobId::parse(&wire.job_id).map_err(|e| corrupt(e.to_string()))?,
        status: JobStatus::try_from(wire.status.as_str()).map_err(|e| corrupt(e.to_string()))?,
        message: wire.message,
        preview_url: wire.preview_url,
        timestamp: parse_time(&wire.timestamp)
            .ok_or_else(|| corrupt(format!("bad timestamp {:?}", wire.timestamp)))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(preview_url: Option<&str>) -> JobEvent {
        JobEvent {
            job_id: JobId::new(),
            status: JobStatus::Ready,
            message: "done".into(),
            preview_url: preview_url.map(str::to_owned),
            timestamp: Utc::now(),
        }
    }

    #[test]
    fn round_trips() {
        for e in [event(None), event(Some("https://x.example"))] {
            assert_eq!(event_from_json(&event_to_json(&e)), Ok(e));
        }
    }

    #[test]
    fn wire_shape_is_the_front_ends() {
        let e = event(Some("https://x.example"));
        let v: serde_json::Value = serde_json::from_str(&event_to_json(&e)).unwrap();
        assert_eq!(v["type"], "build.stage.started");
        assert_eq!(v["job_id"], e.job_id.to_string());
        assert_eq!(v["status"], "ready");
        assert_eq!(v["stage"], "ready");
        assert_eq!(v["stage_label"], "Build complete!");
        assert_eq!(v["message"], "done");
        assert_eq!(v["preview_url"], "https://x.example");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        let without: serde_json::Value =
            serde_json::from_str(&event_to_json(&event(None))).unwrap();
        assert!(without.get("preview_url").is_none());
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(matches!(event_from_json("{"), Err(StoreError::Corrupt(_))));
        let mut v: serde_json::Value = serde_json::from_str(&event_to_json(&event(None))).unwrap();
        v["status"] = "cancelled".into();
        assert!(matches!(
            event_from_json(&v.to_string()),
            Err(StoreError::Corrupt(_))
        ));
    }
}
