//! The build's status: its labels and its transition table, each stated once.

use std::fmt;

/// Where a generation job is in its build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Queued,
    Starting,
    Scaffold,
    Code,
    Deps,
    Checks,
    Ready,
    Failed,
    Scheduled,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status {0:?}")]
pub struct UnknownStatus(pub String);

impl JobStatus {
    pub const ALL: [JobStatus; 9] = [
        JobStatus::Queued,
        JobStatus::Starting,
        JobStatus::Scaffold,
        JobStatus::Code,
        JobStatus::Deps,
        JobStatus::Checks,
        JobStatus::Ready,
        JobStatus::Failed,
        JobStatus::Scheduled,
    ];

    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Starting => "starting",
            JobStatus::Scaffold => "scaffold",
            JobStatus::Code => "code",
            JobStatus::Deps => "deps",
            JobStatus::Checks => "checks",
            JobStatus::Ready => "ready",
            JobStatus::Failed => "failed",
            JobStatus::Scheduled => "scheduled",
        }
    }

    /// The label the front end shows for this stage.
    pub fn label(self) -> &'static str {
        match self {
            JobStatus::Queued => "Queued...",
            JobStatus::Starting => "Starting...",
            JobStatus::Scaffold => "Scaffolding workspace...",
            JobStatus::Code => "Writing code...",
            JobStatus::Deps => "Installing dependencies...",
            JobStatus::Checks => "Running checks...",
            JobStatus::Ready => "Build complete!",
            JobStatus::Failed => "Build failed",
            JobStatus::Scheduled => "Scheduled",
        }
    }

    /// The statuses this one may move to: the whole transition table.
    pub fn next(self) -> &'static [JobStatus] {
        use JobStatus::*;
        match self {
            Queued => &[Starting, Scheduled, Failed],
            Starting => &[Scaffold, Failed],
            Scaffold => &[Code, Failed],
            Code => &[Deps, Failed],
            Deps => &[Checks, Failed],
            Checks => &[Ready, Failed],
            Scheduled => &[Queued, Failed],
            Ready | Failed => &[],
        }
    }

    pub fn can_transition(self, to: JobStatus) -> bool {
        self.next().contains(&to)
    }

    /// Ready and failed: nothing follows them.
    pub fn is_terminal(self) -> bool {
        self.next().is_empty()
    }

    /// Whether `later` follows this status on a build's way from starting to ready: the stage order a
    /// stream of events must not go back against.
    pub fn precedes_in_build(self, later: JobStatus) -> bool {
        let mut at = self;
        while at.is_building() {
            match at.next().iter().find(|s| **s != JobStatus::Failed) {
                Some(&next) => at = next,
                None => return false,
            }
            if at == later {
                return true;
            }
        }
        false
    }

    /// A worker holds the job (it has left the queue and has not finished).
    pub fn is_building(self) -> bool {
        matches!(
            self,
            JobStatus::Starting
                | JobStatus::Scaffold
                | JobStatus::Code
                | JobStatus::Deps
                | JobStatus::Checks
        )
    }
}

impl TryFrom<&str> for JobStatus {
    type Error = UnknownStatus;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::JobStatus::{self, *};

    #[test]
    fn the_build_stages_precede_one_another_in_order_only() {
        assert!(Starting.precedes_in_build(Scaffold));
        assert!(Scaffold.precedes_in_build(Ready));
        assert!(!Deps.precedes_in_build(Code));
        assert!(!Deps.precedes_in_build(Deps));
        // Outside the stages: the queue, a failure, a requeue.
        assert!(!Queued.precedes_in_build(Starting));
        assert!(!Code.precedes_in_build(Failed));
        assert!(!Deps.precedes_in_build(Queued));
        assert!(!Ready.precedes_in_build(Ready));
    }

    const ALLOWED: &[(JobStatus, JobStatus)] = &[
        (Queued, Starting),
        (Queued, Scheduled),
        (Queued, Failed),
        (Starting, Scaffold),
        (Starting, Failed),
        (Scaffold, Code),
        (Scaffold, Failed),
        (Code, Deps),
        (Code, Failed),
        (Deps, Checks),
        (Deps, Failed),
        (Checks, Ready),
        (Checks, Failed),
        (Scheduled, Queued),
        (Scheduled, Failed),
    ];

    #[test]
    fn every_allowed_move_is_allowed_and_every_other_refused() {
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                assert_eq!(
                    from.can_transition(to),
                    ALLOWED.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn ready_and_failed_are_the_only_terminal_statuses() {
        let terminal: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, vec![Ready, Failed]);
    }

    #[test]
    fn labels_are_exact() {
        let labels: Vec<_> = JobStatus::ALL.into_iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            vec![
                "Queued...",
                "Starting...",
                "Scaffolding workspace...",
                "Writing code...",
                "Installing dependencies...",
                "Running checks...",
                "Build complete!",
                "Build failed",
                "Scheduled",
            ]
        );
    }

    #[test]
    fn spelling_round_trips_and_unknown_is_refused() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::try_from(s.as_str()), Ok(s));
        }
        assert!(JobStatus::try_from("cancelled").is_err());
    }
}
