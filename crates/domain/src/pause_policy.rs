//! When a READY build's sandbox is paused.

use std::time::Duration;

use crate::SandboxState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PausePolicy {
    /// Pause as soon as the build is READY (the default).
    #[default]
    Immediate,
    /// Leave it running; the reconciler pauses it after this long without activity.
    Idle(Duration),
    /// Never pause (the provider timeout still applies).
    Never,
}

impl PausePolicy {
    /// The sandbox state the READY write records: `pausing` when the pause follows at once (one write less
    /// between READY and paused), `running` otherwise.
    pub fn sandbox_state_at_ready(self) -> SandboxState {
        match self {
            PausePolicy::Immediate => SandboxState::Pausing,
            PausePolicy::Idle(_) | PausePolicy::Never => SandboxState::Running,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PAUSE_POLICY must be `immediate`, `never` or `idle:<seconds>`, not {0:?}")]
pub struct PausePolicyError(pub String);

impl std::str::FromStr for PausePolicy {
    type Err = PausePolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "immediate" => Ok(PausePolicy::Immediate),
            "never" => Ok(PausePolicy::Never),
            other => other
                .strip_prefix("idle:")
                .and_then(|n| n.parse::<u64>().ok())
                .map(|n| PausePolicy::Idle(Duration::from_secs(n)))
                .ok_or_else(|| PausePolicyError(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_policy() {
        assert_eq!("immediate".parse(), Ok(PausePolicy::Immediate));
        assert_eq!("never".parse(), Ok(PausePolicy::Never));
        assert_eq!(
            "idle:30".parse(),
            Ok(PausePolicy::Idle(Duration::from_secs(30)))
        );
        assert!("idle:x".parse::<PausePolicy>().is_err());
        assert!("sometimes".parse::<PausePolicy>().is_err());
    }
}
