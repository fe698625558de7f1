//! Faults the server injects on request, for the reliability tests: control-plane calls answered with an
//! error before or after they were processed, failed pauses, sandboxes that answer 404, and added latency.
//! Set at start and replaced at run time with `POST /_faults`.

use serde::{Deserialize, Serialize};

/// What to break. The default breaks nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// The share of platform API calls answered `control_fail_status` without being processed.
    pub control_fail_ratio: f64,
    /// The share of platform API calls processed, then answered `control_fail_status` anyway: a create
    /// that made its sandbox although the client saw an error.
    pub ambiguous_fail_ratio: f64,
    /// The next this-many creates are processed, then answered `control_fail_status` anyway (each one
    /// counts down): a create retried after an ambiguous failure, deterministically.
    pub ambiguous_next_creates: u32,
    /// The status of these failures, 503 by default.
    pub control_fail_status: u16,
    /// Sent as `Retry-After` with those answers, when set.
    pub retry_after_secs: Option<u64>,
    /// The share of pauses that fail with a 500, from 0.0 (none) to 1.0 (all).
    pub pause_fail_ratio: f64,
    /// Sandboxes every endpoint answers 404 for (and the list leaves out).
    pub not_found_sandboxes: Vec<String>,
    /// Added before every answer.
    pub latency_ms: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            control_fail_ratio: 0.0,
            ambiguous_fail_ratio: 0.0,
            ambiguous_next_creates: 0,
            control_fail_status: 503,
            retry_after_secs: None,
            pause_fail_ratio: 0.0,
            not_found_sandboxes: Vec::new(),
            latency_ms: 0,
        }
    }
}

/// Why a fault configuration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultConfigError {
    #[error("{field} must be between 0.0 and 1.0, got {value}")]
    RatioOutOfRange { field: &'static str, value: f64 },
    #[error("control_fail_ratio and ambiguous_fail_ratio together must not exceed 1.0")]
    RatiosOverOne,
    #[error("control_fail_status must be an HTTP error status (400-599), got {0}")]
    NotAnErrorStatus(u16),
}

/// What happens to one platform API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlFault {
    None,
    /// Answered with the error, not processed.
    Refused,
    /// Processed, then answered with the error.
    Ambiguous,
}

impl FaultConfig {
    /// Checks the ranges; the server refuses a configuration that fails.
    pub fn validate(&self) -> Result<(), FaultConfigError> {
        for (field, value) in [
            ("control_fail_ratio", self.control_fail_ratio),
            ("ambiguous_fail_ratio", self.ambiguous_fail_ratio),
            ("pause_fail_ratio", self.pause_fail_ratio),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultConfigError::RatioOutOfRange { field, value });
            }
        }
        if self.control_fail_ratio + self.ambiguous_fail_ratio > 1.0 {
            return Err(FaultConfigError::RatiosOverOne);
        }
        if !(400..=599).contains(&self.control_fail_status) {
            return Err(FaultConfigError::NotAnErrorStatus(self.control_fail_status));
        }
        Ok(())
    }

    pub(crate) fn hides(&self, sandbox_id: &str) -> bool {
        self.not_found_sandboxes.iter().any(|id| id == sandbox_id)
    }

    /// Draws whether this pause fails.
    pub(crate) fn pause_fails(&self) -> bool {
        self.pause_fail_ratio > 0.0 && rand::random::<f64>() < self.pause_fail_ratio
    }

    /// Draws what happens to this platform API call (the countdown of ambiguous creates is the caller's).
    pub(crate) fn control_fault(&self) -> ControlFault {
        if self.control_fail_ratio + self.ambiguous_fail_ratio <= 0.0 {
            return ControlFault::None;
        }
        let draw = rand::random::<f64>();
        if draw < self.control_fail_ratio {
            ControlFault::Refused
        } else if draw < self.control_fail_ratio + self.ambiguous_fail_ratio {
            ControlFault::Ambiguous
        } else {
            ControlFault::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_must_be_shares() {
        assert!(FaultConfig::default().validate().is_ok());
        let bad = FaultConfig {
            pause_fail_ratio: 1.5,
            ..FaultConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(FaultConfigError::RatioOutOfRange {
                field: "pause_fail_ratio",
                value: 1.5
            })
        );
        let over = FaultConfig {
            control_fail_ratio: 0.6,
            ambiguous_fail_ratio: 0.6,
            ..FaultConfig::default()
        };
        assert_eq!(over.validate(), Err(FaultConfigError::RatiosOverOne));
        let ok_status = FaultConfig {
            control_fail_status: 200,
            ..FaultConfig::default()
        };
        assert_eq!(
            ok_status.validate(),
            Err(FaultConfigError::NotAnErrorStatus(200))
        );
    }

    #[test]
    fn extremes_are_deterministic() {
        let always = FaultConfig {
            pause_fail_ratio: 1.0,
            control_fail_ratio: 1.0,
            ..FaultConfig::default()
        };
        assert!((0..100).all(|_| always.pause_fails()));
        assert!((0..100).all(|_| always.control_fault() == ControlFault::Refused));
        let ambiguous = FaultConfig {
            ambiguous_fail_ratio: 1.0,
            ..FaultConfig::default()
        };
        assert!((0..100).all(|_| ambiguous.control_fault() == ControlFault::Ambiguous));
        let none = FaultConfig::default();
        assert!((0..100).all(|_| !none.pause_fails() && none.control_fault() == ControlFault::None));
    }

    #[test]
    fn partial_json_keeps_defaults() {
        let parsed: FaultConfig = serde_json::from_str(r#"{"latency_ms": 5}"#).unwrap();
        assert_eq!(parsed.latency_ms, 5);
        assert_eq!(parsed.pause_fail_ratio, 0.0);
        assert_eq!(parsed.control_fail_status, 503);
    }
}
