//! The state of a job's sandbox after the build: separate from the job status, which stays `ready`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxState {
    /// No sandbox yet (or never).
    None,
    Running,
    Pausing,
    Paused,
    Resuming,
    /// Repeated pause failures; the reconciler keeps an eye on it.
    PauseFailed,
    /// The provider no longer has it.
    Expired,
    /// We killed it.
    Killed,
}

impl SandboxState {
    pub const ALL: [SandboxState; 8] = [
        SandboxState::None,
        SandboxState::Running,
        SandboxState::Pausing,
        SandboxState::Paused,
        SandboxState::Resuming,
        SandboxState::PauseFailed,
        SandboxState::Expired,
        SandboxState::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::None => "none",
            SandboxState::Running => "running",
            SandboxState::Pausing => "pausing",
            SandboxState::Paused => "paused",
            SandboxState::Resuming => "resuming",
            SandboxState::PauseFailed => "pause_failed",
            SandboxState::Expired => "expired",
            SandboxState::Killed => "killed",
        }
    }

    /// The moves our own operations make. Expired and killed can follow any live state, because the
    /// provider can lose a sandbox at any time and a kill can come at any time.
    pub fn can_move(self, to: SandboxState) -> bool {
        use SandboxState::*;
        match (self, to) {
            (Expired | Killed, _) => false,
            (_, Expired | Killed) => true,
            (None, Running) => true,
            (Running, Pausing | Paused) => true,
            (Pausing, Paused | Running | PauseFailed) => true,
            (PauseFailed, Pausing | Paused | Running | Resuming) => true,
            (Paused, Resuming | Running) => true,
            (Resuming, Running | Paused) => true,
            _ => false,
        }
    }

    /// `sandbox_paused` is true exactly when the state is paused.
    pub fn is_paused(self) -> bool {
        self == SandboxState::Paused
    }

    /// What the front end is told as `sandbox_paused`: paused, or pausing (the preview is no longer served
    /// and a resume will work: it waits for the pause, then resumes). Postgres records `sandbox_paused`
    /// only once the provider confirmed ([`SandboxState::is_paused`]); the front end must be led to its
    /// Resume path from the moment the pause starts, or a poll landing between READY and the confirmation
    /// leaves it on a blocked preview with no Resume button.
    pub fn leads_to_resume(self) -> bool {
        matches!(self, SandboxState::Paused | SandboxState::Pausing)
    }

    /// The provider may still be billing for it.
    pub fn is_live(self) -> bool {
        !matches!(
            self,
            SandboxState::None | SandboxState::Expired | SandboxState::Killed
        )
    }

    /// Live and not paused: the provider bills it as running (running, pausing, pause_failed, and resuming,
    /// so that a resume cut short by a crash counts too). The reconciler re-pauses READY jobs in these
    /// states, and their number is the idle-billing gauge.
    pub fn is_live_unpaused(self) -> bool {
        self.is_live() && !self.is_paused()
    }
}

impl TryFrom<&str> for SandboxState {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        SandboxState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown sandbox state {s:?}"))
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SandboxState::*;
    use super::*;

    #[test]
    fn lifecycle_moves() {
        assert!(None.can_move(Running));
        assert!(Running.can_move(Pausing));
        assert!(Pausing.can_move(Paused));
        assert!(Paused.can_move(Resuming));
        assert!(Resuming.can_move(Running));
        assert!(Running.can_move(Expired));
        assert!(Paused.can_move(Killed));
        assert!(
            PauseFailed.can_move(Resuming),
            "a resume can claim a sandbox whose pause failed"
        );
    }

    #[test]
    fn refused_moves() {
        assert!(!None.can_move(Paused));
        assert!(!Paused.can_move(Pausing));
        assert!(!Expired.can_move(Running));
        assert!(!Killed.can_move(Running));
        assert!(!Running.can_move(Resuming));
    }

    #[test]
    fn live_unpaused_is_every_state_a_provider_bills_as_running() {
        let billing: Vec<SandboxState> = SandboxState::ALL
            .into_iter()
            .filter(|s| s.is_live_unpaused())
            .collect();
        assert_eq!(billing, [Running, Pausing, Resuming, PauseFailed]);
    }

    #[test]
    fn only_paused_is_paused() {
        for s in SandboxState::ALL {
            assert_eq!(s.is_paused(), s == Paused);
            assert_eq!(SandboxState::try_from(s.as_str()), Ok(s));
        }
    }
}
