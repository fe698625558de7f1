//! The schema, embedded from the workspace's `migrations/` directory at compile time.

use sqlx::PgPool;

use crate::PgError;

/// The workspace's migrations (reversible `NNNN_name.up.sql` / `.down.sql` pairs).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Applies every pending migration.
#[tracing::instrument(skip_all, err)]
pub async fn migrate(pool: &PgPool) -> Result<(), PgError> {
    MIGRATOR.run(pool).await.map_err(PgError::Migrate)
}
