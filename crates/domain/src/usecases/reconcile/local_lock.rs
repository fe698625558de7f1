//! An in-process [`StepLock`]: enough for one worker process (and for tests); many processes need the
//! Redis one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::ports::{LockGuardToken, StepLock, StoreError};

/// Named locks with expiry, held in memory.
#[derive(Debug, Default)]
pub struct LocalStepLock {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

impl LocalStepLock {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StepLock for LocalStepLock {
    async fn try_lock(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<LockGuardToken>, StoreError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if matches!(held.get(name), Some((_, expires)) if *expires > now) {
            return Ok(None);
        }
        let token = uuid::Uuid::new_v4().to_string();
        held.insert(name.to_owned(), (token.clone(), now + ttl));
        Ok(Some(LockGuardToken {
            name: name.to_owned(),
            token,
        }))
    }

    async fn unlock(&self, token: LockGuardToken) -> Result<(), StoreError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(held.get(&token.name), Some((t, _)) if *t == token.token) {
            held.remove(&token.name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_held_lock_is_refused_until_released_or_expired() {
        let lock = LocalStepLock::new();
        let ttl = Duration::from_secs(10);
        let a = lock.try_lock("s", ttl).await.unwrap().unwrap();
        assert!(lock.try_lock("s", ttl).await.unwrap().is_none());
        lock.unlock(a).await.unwrap();
        let b = lock.try_lock("s", ttl).await.unwrap().unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        let c = lock.try_lock("s", ttl).await.unwrap().unwrap();
        // The expired holder's unlock leaves the new holder alone.
        lock.unlock(b).await.unwrap();
        assert!(lock.try_lock("s", ttl).await.unwrap().is_none());
        lock.unlock(c).await.unwrap();
    }
}
