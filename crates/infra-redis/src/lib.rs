//! Redis, the live side of Slipway: the job hash the status route reads, the per-job event channel SSE
//! streams follow, and the priority queue with leases and concurrency slots.
//! Everything here can be rebuilt from Postgres.
//!
//! Every multi-step change is one Lua script, so it is atomic and two processes cannot interleave inside it.
//! Keys are built once, in [`Keys`], under a configurable prefix, with hash tags so that every multi-key
//! script touches a single Redis Cluster slot. `connect` takes `redis-cluster://` URLs as well; with the
//! `local-cluster` feature, `LocalCluster` starts a three-node cluster on loopback for tests.

mod config;
mod error;
mod keys;
mod live;
#[cfg(feature = "local-cluster")]
mod local_cluster;
mod lock;
mod queue;
mod script;

pub use config::{connect, ConnectError, RedisConfig};
pub use fred::prelude::Client;
pub use keys::Keys;
pub use live::{
    event_from_json, event_to_json, CacheStats, CachedLiveStore, LiveLogLimits, RedisLiveLog,
    RedisLiveStore,
};
#[cfg(feature = "local-cluster")]
pub use local_cluster::{LocalCluster, LocalClusterError};
pub use lock::RedisStepLock;
pub use queue::RedisQueue;
