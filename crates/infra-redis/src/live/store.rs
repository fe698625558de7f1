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
use super::written::{Diff, Fields, Written};
use crate::error::store_err;
use crate::script::LuaScript;
use crate::Keys;

static SAVE_JOB: LuaScript = LuaScript::new(include_str!("../lua/save_job.lua"));
/// `save_job.lua`'s answers: written; a newer record was there; a change's base is not the stored hash
/// (nothing written for either).
const STORED: i64 = 1;
const STORED_NEWER: i64 = 0;
const BASE_MOVED: i64 = 2;

/// The live job store. Cheap to clone; clones share one subscriber connection, opened on the first
/// [`LiveJobStore::subscribe`] (processes that never subscribe never open it).
#[derive(Clone)]
pub struct RedisLiveStore {
    client: Client,
    keys: Keys,
    hub: Arc<OnceCell<Arc<Hub>>>,
    written: Option<Arc<Written>>,
}

impl std::fmt::Debug for RedisLiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLiveStore")
            .field("keys", &self.keys)
            .field("subscriber_open", &self.hub.initialized())
            .field("remembers_writes", &self.written.is_some())
            .finish()
    }
}

impl RedisLiveStore {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            keys: Keys::new(prefix),
            hub: Arc::default(),
            written: None,
        }
    }

    /// Remembers what this store last wrote for up to `jobs` jobs, so that a job's next write sends only
    /// the fields that changed (see [`Written`]). For a process that writes the same jobs again and again:
    /// the worker, seven writes per build.
    pub fn remembering_writes(mut self, jobs: usize) -> Self {
        self.written = Some(Arc::new(Written::new(jobs)));
        self
    }

    pub(super) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// The payloads published on `channel`, through this store's subscriber connection.
    pub(super) async fn subscribe_raw(
        &self,
        channel: String,
    ) -> Result<super::hub::RawStream, StoreError> {
        self.hub().await?.subscribe_raw(channel).await
    }

    /// The process's subscriber connection, opened on first use.
    async fn hub(&self) -> Result<&Arc<Hub>, StoreError> {
        self.hub.get_or_try_init(|| Hub::start(&self.client)).await
    }

    /// Writes the hash, and publishes `event` in the same script when given. A record older than the stored
    /// one (by `sandbox_state_version`, then `updated_at`) is neither written nor published: a late writer
    /// must not roll the live view back, nor make subscribers see a status go backwards.
    async fn write(&self, job: &Job, event: Option<&JobEvent>) -> Result<(), StoreError> {
        let publish = Publish::new(&self.keys, job, event);
        let fields = to_fields(job);
        let answer = match &self.written {
            None => self.save(job, &publish, Diff::whole(fields)).await?,
            Some(written) => {
                let result = self.save_remembered(written, job, &publish, &fields).await;
                match result {
                    Ok(STORED) => written.remember(job.id, fields),
                    _ => written.forget(job.id),
                }
                result?
            }
        };
        if answer == STORED_NEWER {
            tracing::debug!("stored live record is newer; not overwritten");
        }
        Ok(())
    }

    /// The change alone when Redis still holds the hash last written here, the whole hash otherwise. The
    /// script's answer: stored, or a newer record was there.
    async fn save_remembered(
        &self,
        written: &Written,
        job: &Job,
        publish: &Publish,
        fields: &Fields,
    ) -> Result<i64, StoreError> {
        if let Some(change) = written.diff(job.id, fields) {
            let answer = self.save(job, publish, change).await?;
            if answer != BASE_MOVED {
                return Ok(answer);
            }
            tracing::debug!("live record is not the one last written here; writing it whole");
        }
        self.save(job, publish, Diff::whole(fields.clone())).await
    }

    /// One run of `save_job.lua`.
    async fn save(&self, job: &Job, publish: &Publish, diff: Diff) -> Result<i64, StoreError> {
        let mut args: Vec<Value> =
            Vec::with_capacity(6 + diff.removed.len() + 2 * diff.changed.len());
        args.push(diff.base_revision.into());
        args.push(revision(job).into());
        args.push(publish.channel.as_str().into());
        args.push(publish.payload.as_str().into());
        args.push(publish.failures.as_str().into());
        args.push((diff.removed.len() as i64).into());
        args.extend(diff.removed.into_iter().map(Value::from));
        for (name, value) in diff.changed {
            args.push(name.into());
            args.push(value.into());
        }
        SAVE_JOB
            .run(&self.client, vec![self.keys.job(job.id)], args)
            .await
            .map_err(store_err)
    }
}

/// The channels and payload a write publishes: the job's own channel, and the failures channel for a
/// `failed` event; empty names publish nothing.
struct Publish {
    channel: String,
    payload: String,
    failures: String,
}

impl Publish {
    fn new(keys: &Keys, job: &Job, event: Option<&JobEvent>) -> Self {
        match event {
            Some(e) => Self {
                channel: keys.job_events(job.id),
                payload: event_to_json(e),
                failures: if e.status == JobStatus::Failed {
                    keys.job_failures()
                } else {
                    String::new()
                },
            },
            None => Self {
                channel: String::new(),
                payload: String::new(),
                failures: String::new(),
            },
        }
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
        if let Some(written) = &self.written {
            written.forget(id);
        }
        self.client
            .del::<(), _>(self.keys.job(id))
            .await
            .map_err(store_err)
    }
}
