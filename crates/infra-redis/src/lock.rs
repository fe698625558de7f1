//! The reconciler's step lock: `SET NX PX` with a random token, released only by its holder.

use std::time::Duration;

use async_trait::async_trait;
use domain::ports::{LockGuardToken, StepLock, StoreError};
use fred::prelude::{Client, Expiration, KeysInterface, SetOptions, Value};

use crate::error::store_err;
use crate::script::LuaScript;

/// Deletes the lock only while it still holds the caller's token: a lock that expired and was taken by
/// another worker is left alone.
static UNLOCK: LuaScript = LuaScript::new(include_str!("lua/unlock.lua"));

/// Named locks under `<prefix>:lock:<name>`.
#[derive(Clone)]
pub struct RedisStepLock {
    client: Client,
    prefix: String,
}

impl RedisStepLock {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:lock:{name}", self.prefix)
    }
}

#[async_trait]
impl StepLock for RedisStepLock {
    #[tracing::instrument(skip_all, fields(lock = name), err)]
    async fn try_lock(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<LockGuardToken>, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let set: Value = self
            .client
            .set(
                self.key(name),
                token.as_str(),
                Some(Expiration::PX(ms)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(store_err)?;
        Ok((!set.is_null()).then(|| LockGuardToken {
            name: name.to_owned(),
            token,
        }))
    }

    #[tracing::instrument(skip_all, fields(lock = %token.name), err)]
    async fn unlock(&self, token: LockGuardToken) -> Result<(), StoreError> {
        let _: i64 = UNLOCK
            .run(
                &self.client,
                vec![self.key(&token.name)],
                vec![token.token.into()],
            )
            .await
            .map_err(store_err)?;
        Ok(())
    }
}
