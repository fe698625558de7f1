//! Driver errors, translated once into the domain's [`RepoError`] (and [`PgError`] for setup).

use domain::ports::RepoError;
use sqlx::error::ErrorKind;

/// Why the pool could not be built or the schema not migrated (setup, not the repository port).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid database url")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("could not connect to postgres")]
    Connect(#[source] sqlx::Error),
    #[error("could not run migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// The one translation of a sqlx error into the port's vocabulary.
///
/// `Unavailable` means "it may work if run again", and the repository does run it again within a bound:
/// the database could not be reached, the connection was closed or terminated under the statement
/// (SQLSTATE class 08, and 57P01-57P03 when an administrator or a restart ends the backend), the server is
/// out of connections or resources (class 53), the statement was cancelled (57014), or the transaction
/// lost a serialization or deadlock race (class 40). Any other database error is a statement Postgres will
/// refuse again (a value the schema forbids, a bug): `Corrupt`, so that nobody retries it.
///
/// A foreign-key violation only happens on inserts that name a missing parent (a job for a project that is
/// gone), hence `NotFound`.
pub(crate) fn map_err(e: sqlx::Error) -> RepoError {
    match e {
        sqlx::Error::RowNotFound => RepoError::NotFound,
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => RepoError::AlreadyExists,
            ErrorKind::ForeignKeyViolation => RepoError::NotFound,
            _ if db.code().as_deref().is_some_and(is_transient_code) => {
                RepoError::Unavailable(db.to_string())
            }
            _ => RepoError::Corrupt(format!("statement refused: {}", db.message())),
        },
        e @ (sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }) => RepoError::Corrupt(e.to_string()),
        // Io, Tls, PoolTimedOut, PoolClosed, Protocol, WorkerCrashed and the rest: the database could not be
        // reached or the connection broke, and the caller may retry.
        e => RepoError::Unavailable(e.to_string()),
    }
}

/// SQLSTATEs of failures that pass: connection exceptions, insufficient resources, operator intervention
/// (admin or crash shutdown, cannot connect now, query cancelled), serialization failures and deadlocks.
fn is_transient_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("40")
        || matches!(code, "57P01" | "57P02" | "57P03" | "57014")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_map_to_port_variants() {
        assert_eq!(map_err(sqlx::Error::RowNotFound), RepoError::NotFound);
        assert!(matches!(
            map_err(sqlx::Error::PoolTimedOut),
            RepoError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(sqlx::Error::PoolClosed),
            RepoError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(sqlx::Error::Decode("bad".into())),
            RepoError::Corrupt(_)
        ));
        assert!(matches!(
            map_err(sqlx::Error::ColumnNotFound("status".into())),
            RepoError::Corrupt(_)
        ));
    }

    #[test]
    fn passing_failures_are_told_from_refusals_by_sqlstate() {
        for transient in [
            "57P01", "57P02", "57P03", "57014", "08006", "08003", "40001", "40P01", "53300",
        ] {
            assert!(is_transient_code(transient), "{transient}");
        }
        for refused in ["22P05", "22021", "42703", "23514", "XX000"] {
            assert!(!is_transient_code(refused), "{refused}");
        }
    }
}
