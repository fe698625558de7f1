//! A named, expiring lock: one reconciler step at a time across every worker process.

use std::time::Duration;

use async_trait::async_trait;

use crate::ports::StoreError;

/// Proof of holding a lock: the name and the random token it was taken with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGuardToken {
    pub name: String,
    pub token: String,
}

/// A lock store (Redis `SET NX PX` in production).
///
/// Errors: `StoreError::Unavailable` when the store cannot be reached. A lock held by someone else is not an
/// error: `try_lock` answers `Ok(None)`.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait StepLock: Send + Sync {
    /// Takes `name` for `ttl` unless it is held; `Ok(None)` when another holder has it. The ttl bounds how
    /// long a crashed holder blocks the others.
    async fn try_lock(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<LockGuardToken>, StoreError>;

    /// Releases the lock only if `token` still holds it (one that expired and was retaken is left alone).
    async fn unlock(&self, token: LockGuardToken) -> Result<(), StoreError>;
}
