//! The founder's description of the app to build.

/// Longest goal accepted, in characters.
pub const MAX_GOAL_CHARS: usize = 10_000;

/// A non-blank goal of at most [`MAX_GOAL_CHARS`] characters, without NUL (which Postgres text cannot
/// store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobGoal(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobGoalError {
    #[error("goal must not be empty")]
    Empty,
    #[error("goal is longer than {MAX_GOAL_CHARS} characters")]
    TooLong,
    #[error("goal must not contain NUL characters")]
    Nul,
}

impl TryFrom<String> for JobGoal {
    type Error = JobGoalError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.trim().is_empty() {
            return Err(JobGoalError::Empty);
        }
        if s.chars().count() > MAX_GOAL_CHARS {
            return Err(JobGoalError::TooLong);
        }
        if s.contains('\0') {
            return Err(JobGoalError::Nul);
        }
        Ok(Self(s))
    }
}

impl AsRef<str> for JobGoal {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl JobGoal {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_goal_is_rejected() {
        assert_eq!(
            JobGoal::try_from("  \n".to_owned()),
            Err(JobGoalError::Empty)
        );
    }

    #[test]
    fn goal_over_limit_is_rejected() {
        let s = "x".repeat(MAX_GOAL_CHARS + 1);
        assert_eq!(JobGoal::try_from(s), Err(JobGoalError::TooLong));
    }

    #[test]
    fn goal_with_nul_is_rejected() {
        assert_eq!(
            JobGoal::try_from("a todo app\0".to_owned()),
            Err(JobGoalError::Nul)
        );
    }

    #[test]
    fn goal_at_limit_is_accepted() {
        let s = "é".repeat(MAX_GOAL_CHARS);
        assert!(JobGoal::try_from(s).is_ok());
    }
}
