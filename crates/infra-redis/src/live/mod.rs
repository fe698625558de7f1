//! The live view of a job: its hash, its event channel, and the subscriptions that follow the channel.

mod cached;
mod event;
mod hub;
mod logs;
mod record;
mod store;
mod tracked_entries;
mod written;

pub use cached::CachedLiveStore;

pub use event::{event_from_json, event_to_json};
pub use logs::{LiveLogLimits, RedisLiveLog};
pub use store::RedisLiveStore;
pub use tracked_entries::CacheStats;
