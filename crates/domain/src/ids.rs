//! Typed identifiers, parsed once at the edge.

use std::fmt;

use uuid::Uuid;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{field} is not a valid UUID")]
    NotAUuid { field: &'static str },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} contains characters other than letters, digits, '-', '_', '.', '|' and '@'")]
    BadCharacters { field: &'static str },
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
            /// Parses a UUID string, naming the field in the error.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|_| IdError::NotAUuid { field: $field })
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// A generation job.
    JobId,
    "job_id"
);
uuid_id!(
    /// A founder's project; jobs build versions of it.
    ProjectId,
    "project_id"
);
uuid_id!(
    /// The id a failure is reported under, to the user and in our logs.
    DebugId,
    "debug_id"
);

fn check_token(s: &str, field: &'static str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { field });
    }
    if s.chars().count() > max {
        return Err(IdError::TooLong { field, max });
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '|' | '@'))
    {
        return Err(IdError::BadCharacters { field });
    }
    Ok(())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                check_token(&s, $field, $max)?;
                Ok(Self(s))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::try_from(s.to_owned())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

token_id!(
    /// The authenticated user: the JWT `sub`.
    UserId,
    "user_id",
    255
);
token_id!(
    /// A sandbox at the provider (E2B's sandboxID, or a local sandbox's directory name).
    SandboxId,
    "sandbox_id",
    255
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_rejects_non_uuid_naming_the_field() {
        assert_eq!(
            JobId::parse("nope"),
            Err(IdError::NotAUuid { field: "job_id" })
        );
    }

    #[test]
    fn job_id_round_trips() {
        let id = JobId::new();
        assert_eq!(JobId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn user_id_rules() {
        assert_eq!(
            UserId::try_from(""),
            Err(IdError::Empty { field: "user_id" })
        );
        assert_eq!(
            UserId::try_from("a".repeat(256)),
            Err(IdError::TooLong {
                field: "user_id",
                max: 255
            })
        );
        assert_eq!(
            UserId::try_from("a b"),
            Err(IdError::BadCharacters { field: "user_id" })
        );
        assert!(UserId::try_from("user_2abcDEF").is_ok());
    }

    #[test]
    fn sandbox_id_rules() {
        assert!(SandboxId::try_from("i1a2b3c4").is_ok());
        assert_eq!(
            SandboxId::try_from("../etc"),
            Err(IdError::BadCharacters {
                field: "sandbox_id"
            })
        );
    }
}
