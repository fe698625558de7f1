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
/// A foreign-key violation only happens on inserts that name a missing parent (a job for a project that is
/// gone), hence `NotFound`. A check or not-null violation means we tried to write a value the schema
/// forbids: a bug, reported as `Corrupt` so that nobody retries it.
pub(crate) fn map_err(e: sqlx::Error) -> RepoError {
    match e {
        sqlx::Error::RowNotFound => RepoError::NotFound,
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => RepoError::AlreadyExists,
            ErrorKind::ForeignKeyViolation => RepoError::NotFound,
            ErrorKind::CheckViolation | ErrorKind::NotNullViolation => {
                RepoError::Corrupt(format!("constraint violated: {}", db.message()))
            }
            _ => RepoError::Unavailable(db.to_string()),
        },
        e @ (sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }) => RepoError::Corrupt(e.to_string()),
        // Io, Tls, PoolTimedOut, PoolClosed, Protocol, WorkerCrashed and the rest: the database could not be
        // reached or failed, and the caller may retry.
        e => RepoError::Unavailable(e.to_string()),
    }
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
}
