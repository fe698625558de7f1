//! [`LiveJobStore`] over a Redis hash per job and a pub/sub channel per job.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use domain::ports::{EventStream, LiveJobStore, StoreError};
use domain::{Job, JobEvent, JobId, JobStatus};
use fred::prelude::{Client, HashesInterface, KeysInterface, Value};
use tokio::sync::OnceCell;

use super::event::event_to_json;
use super::hub::Hub;
use super::record::{from_fields, revision, to_fields};
use crate::error::store_err;
use crate::script::LuaScript;
use crate::Keys;

static SAVE_JOB: LuaScript = LuaScript::new(include_str!("../lua/save_job.lua"));

/// The live job store. Cheap to clone; clones share one subscriber connection, opened on the first
/// [`LiveJobStore::subscribe`] (processes that never subscribe never open it).
#[derive(Clone)]
pub struct RedisLiveStore {
    client: Client,
    keys: Keys,
    hub: Arc<OnceCell<Arc<Hub>>>,
}

impl std::fmt::Debug for RedisLiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLiveStore")
            .field("keys", &self.keys)
            .field("subscriber_open", &self.hub.initialized())
            .finish()
    }
}

impl RedisLiveStore {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            keys: Keys::new(prefix),
            hub: Arc::default(),
        }
    }

    pub(super) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Writes the hash, and publishes `event` in the same script when given. A record older than the stored
    /// one (by `sandbox_state_version`, then `updated_at`) is neither written nor published: a late writer
    /// must not roll the live view back, nor make subscribers see a status go backwards.
    /// The process's subscriber connection, opened on first use.
    async fn hub(&self) -> Result<&Arc<Hub>, StoreError> {
        self.hub.get_or_try_init(|| Hub::start(&self.client)).await
    }

    async fn write(&self, job: &Job, event: Option<&JobEvent>) -> Result<(), StoreError> {
        let (channel, payload) = match event {
            Some(e) => (self.keys.job_events(job.id), event_to_json(e)),
            None => (String::new(), String::new()),
        };
        let failures = match event {
            Some(e) if e.status == JobStatus::Failed => self.keys.job_failures(),
            _ => String::new(),
        };
        let fields = to_fields(job);
        let mut args: Vec<Value> = Vec::with_capacity(4 + 2 * fields.len());
        args.push(revision(job).into());
        args.push(channel.into());
        args.push(payload.into());
        args.push(failures.into());
        for (name, value) in fields {
            args.push(name.into());
            args.push(value.into());
        }
        let written: i64 = SAVE_JOB
            .run(&self.client, vec![self.keys.job(job.id)], args)
            .await
            .map_err(store_err)?;
        if written == 0 {
            tracing::debug!("stored live record is newer; not overwritten");
        }
        Ok(())
    }
}

/// The job in hash `key` read over `client`; `None` when the hash does not exist.
pub(super) async fn read_job(
    client: &Client,
    key: &str,
    id: JobId,
) -> Result<Option<Job>, StoreError> {
    let fields: HashMap<String, String> = client.hgetall(key).await.map_err(store_err)?;
    if fields.is_empty() {
        return Ok(None);
    }
    from_fields(id, fields).map(Some)
}

#[async_trait]
impl LiveJobStore for RedisLiveStore {
    #[tracing::instrument(skip_all, fields(job_id = %job.id), err)]
    async fn save(&self, job: &Job) -> Result<(), StoreError> {
        self.write(job, None).await
    }

    #[tracing::instrument(skip_all, fields(job_id = %job.id, status = %event.status), err)]
    async fn save_and_publish(&self, job: &Job, event: &JobEvent) -> Result<(), StoreError> {
        self.write(job, Some(event)).await
    }

    #[tracing::instrument(skip_all, fields(job_id = %id), err)]
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        read_job(&self.client, &self.keys.job(id), id).await
    }

    #[tracing::instrument(skip_all, fields(job_id = %id), err)]
    async fn subscribe(&self, id: JobId) -> Result<EventStream, StoreError> {
        self.hub().await?.subscribe(self.keys.job_events(id)).await
    }

    #[tracing::instrument(skip_all, err)]
    async fn subscribe_failures(&self) -> Result<EventStream, StoreError> {
        self.hub().await?.subscribe(self.keys.job_failures()).await
    }

    #[tracing::instrument(skip_all, fields(job_id = %id), err)]
    async fn delete(&self, id: JobId) -> Result<(), StoreError> {
        self.client
            .del::<(), _>(self.keys.job(id))
            .await
            .map_err(store_err)
    }
}
