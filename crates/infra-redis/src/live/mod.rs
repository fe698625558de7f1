//! The live view of a job: its hash, its event channel, and the subscriptions that follow the channel.

mod event;
mod hub;
mod record;
mod store;

pub use event::{event_from_json, event_to_json};
pub use store::RedisLiveStore;
