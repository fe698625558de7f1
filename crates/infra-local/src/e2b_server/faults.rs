//! Faults the server injects on request, for the reliability tests: failed pauses, sandboxes that answer
//! 404, and added latency. Set at start and replaced at run time with `POST /_faults`.

use serde::{Deserialize, Serialize};

/// What to break. The default breaks nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// The share of pauses that fail with a 500, from 0.0 (none) to 1.0 (all).
    pub pause_fail_ratio: f64,
    /// Sandboxes every endpoint answers 404 for (and the list leaves out).
    pub not_found_sandboxes: Vec<String>,
    /// Added before every answer.
    pub latency_ms: u64,
}

/// Why a fault configuration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultConfigError {
    #[error("pause_fail_ratio must be between 0.0 and 1.0, got {0}")]
    RatioOutOfRange(f64),
}

impl FaultConfig {
    /// Checks the ranges; the server refuses a configuration that fails.
    pub fn validate(&self) -> Result<(), FaultConfigError> {
        if !(0.0..=1.0).contains(&self.pause_fail_ratio) {
            return Err(FaultConfigError::RatioOutOfRange(self.pause_fail_ratio));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_must_be_a_share() {
        assert!(FaultConfig::default().validate().is_ok());
        let bad = FaultConfig {
            pause_fail_ratio: 1.5,
            ..FaultConfig::default()
        };
        assert_eq!(bad.validate(), Err(FaultConfigError::RatioOutOfRange(1.5)));
    }

    #[test]
    fn extremes_are_deterministic() {
        let always = FaultConfig {
            pause_fail_ratio: 1.0,
            ..FaultConfig::default()
        };
        assert!((0..100).all(|_| always.pause_fails()));
        assert!((0..100).all(|_| !FaultConfig::default().pause_fails()));
    }

    #[test]
    fn partial_json_keeps_defaults() {
        let parsed: FaultConfig = serde_json::from_str(r#"{"latency_ms": 5}"#).unwrap();
        assert_eq!(parsed.latency_ms, 5);
        assert_eq!(parsed.pause_fail_ratio, 0.0);
    }
}
