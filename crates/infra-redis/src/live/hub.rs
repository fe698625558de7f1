//! One subscriber connection per process, fanned out to any number of event streams.
//!
//! Each channel has an entry with a broadcast sender and a count of live streams. A stream's guard lowers the
//! count when the stream is dropped; at zero a janitor task unsubscribes. SUBSCRIBE and UNSUBSCRIBE of one
//! channel are serialised by the entry's gate, so an unsubscribe of the last stream can never overtake the
//! subscribe of a new one.
//!
//! fred (10.1) resolves SUBSCRIBE as soon as the command is queued and drops Redis's confirmation, so a
//! subscribe is fenced by a PING on the same connection: Redis answers a connection's commands in order,
//! so the PONG means the subscription is in effect and no event published after it can be missed. On a
//! Redis Cluster the PING is sent to the node that got the SUBSCRIBE (see `Hub::fence`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use domain::ports::{EventStream, StoreError};
use fred::clients::SubscriberClient;
use fred::clients::WithOptions;
use fred::prelude::{Client, ClientLike, EventInterface, PubsubInterface, Value};
use fred::types::config::Options;
use fred::types::{ClusterHash, Message};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::event::event_from_json;
use crate::config::builder_like;
use crate::error::store_err;

/// A channel's payloads, in publication order.
pub(crate) type RawStream = std::pin::Pin<Box<dyn futures::Stream<Item = Arc<str>> + Send>>;

/// Events buffered per channel before a slow stream is cut off (a job publishes about ten in its life).
const CHANNEL_CAPACITY: usize = 256;
/// Messages buffered between the connection and the dispatcher, across all channels.
const CONNECTION_CAPACITY: usize = 8192;

struct Channel {
    /// The messages' payloads, parsed by each stream (job events) or only counted (log wake-ups).
    tx: broadcast::Sender<Arc<str>>,
    /// Held across SUBSCRIBE/UNSUBSCRIBE; `true` while Redis has confirmed a subscription to the channel.
    gate: tokio::sync::Mutex<bool>,
}

struct Entry {
    channel: Arc<Channel>,
    streams: usize,
}

type Channels = Arc<Mutex<HashMap<String, Entry>>>;

fn lock(channels: &Channels) -> MutexGuard<'_, HashMap<String, Entry>> {
    // A panic while holding this lock leaves the map consistent (every critical section is a single
    // insert, remove or counter change), so a poisoned lock is safe to keep using.
    channels.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct Hub {
    subscriber: SubscriberClient,
    channels: Channels,
    release_tx: mpsc::UnboundedSender<String>,
    tasks: Vec<JoinHandle<()>>,
    resubscriber: JoinHandle<()>,
}

impl Hub {
    /// Opens the subscriber connection with the client's settings and starts the dispatcher and janitor.
    pub(crate) async fn start(client: &Client) -> Result<Arc<Self>, StoreError> {
        let subscriber = builder_like(client)
            .with_performance_config(|perf| perf.broadcast_channel_capacity = CONNECTION_CAPACITY)
            .build_subscriber_client()
            .map_err(store_err)?;
        subscriber.init().await.map_err(store_err)?;
        let channels: Channels = Arc::default();
        let (release_tx, release_rx) = mpsc::unbounded_channel();
        // Re-subscribes every tracked channel after a reconnect.
        let resubscriber = subscriber.manage_subscriptions();
        let tasks = vec![
            // The receiver is taken here, not in the task, so no message can arrive before it exists.
            tokio::spawn(dispatch(subscriber.message_rx(), channels.clone())),
            tokio::spawn(janitor(subscriber.clone(), channels.clone(), release_rx)),
        ];
        Ok(Arc::new(Self {
            subscriber,
            channels,
            release_tx,
            tasks,
            resubscriber,
        }))
    }

    /// A stream of the channel's events, returned once Redis has confirmed the subscription.
    pub(crate) async fn subscribe(&self, name: String) -> Result<EventStream, StoreError> {
        let raw = self.subscribe_raw(name.clone()).await?;
        Ok(Box::pin(raw.filter_map(
            move |payload| match event_from_json(&payload) {
                Ok(event) => Some(event),
                Err(error) => {
                    tracing::warn!(channel = %name, %error, "dropping unreadable event");
                    None
                }
            },
        )))
    }

    /// A stream of the channel's payloads, returned once Redis has confirmed the subscription.
    pub(crate) async fn subscribe_raw(&self, name: String) -> Result<RawStream, StoreError> {
        let (channel, rx) = {
            let mut map = lock(&self.channels);
            let entry = map.entry(name.clone()).or_insert_with(|| Entry {
                channel: Arc::new(Channel {
                    tx: broadcast::channel(CHANNEL_CAPACITY).0,
                    gate: tokio::sync::Mutex::new(false),
                }),
                streams: 0,
            });
            entry.streams += 1;
            (entry.channel.clone(), entry.channel.tx.subscribe())
        };
        // Made before any await: if subscribing fails or this future is dropped, the count goes back down.
        let guard = StreamGuard {
            name: name.clone(),
            channels: self.channels.clone(),
            release_tx: self.release_tx.clone(),
        };
        {
            let mut subscribed = channel.gate.lock().await;
            if !*subscribed {
                self.subscriber
                    .subscribe(name.as_str())
                    .await
                    .map_err(store_err)?;
                let _pong: Value = self.fence().ping(None).await.map_err(store_err)?;
                *subscribed = true;
            }
        }
        let stream = BroadcastStream::new(rx).map_while(move |item| {
            let _keep_subscribed = &guard;
            match item {
                Ok(payload) => Some(payload),
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    // Ending the stream beats a silent gap: the reader reconnects and reads the state.
                    tracing::warn!(channel = %guard.name, missed, "event stream fell behind; closing it");
                    None
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

impl Hub {
    /// The subscriber connection SUBSCRIBE went to. fred sends a cluster's (non-sharded) SUBSCRIBEs to the
    /// node owning the slot of the client's id, and commands without a key to any node: the fencing PING
    /// must go the same way, or its answer says nothing about the subscription.
    fn fence(&self) -> WithOptions<SubscriberClient> {
        let slot = fred::util::redis_keyslot(self.subscriber.id().as_bytes());
        self.subscriber.with_options(&Options {
            cluster_hash: Some(ClusterHash::Custom(slot)),
            ..Options::default()
        })
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.resubscriber.abort();
        // Dropping the senders ends every open stream: the store has gone away.
        lock(&self.channels).clear();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let subscriber = self.subscriber.clone();
            rt.spawn(async move {
                let _ = subscriber.quit().await;
            });
        }
    }
}

/// Lowers the channel's stream count when its stream is dropped; at zero the janitor unsubscribes.
struct StreamGuard {
    name: String,
    channels: Channels,
    release_tx: mpsc::UnboundedSender<String>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let last = match lock(&self.channels).get_mut(&self.name) {
            Some(entry) => {
                entry.streams = entry.streams.saturating_sub(1);
                entry.streams == 0
            }
            None => false,
        };
        if last {
            // A send fails only when the hub is gone, and then there is nothing left to unsubscribe.
            let _ = self.release_tx.send(self.name.clone());
        }
    }
}

/// Routes each message to its channel's streams, parsing it once.
async fn dispatch(mut rx: broadcast::Receiver<Message>, channels: Channels) {
    loop {
        let message = match rx.recv().await {
            Ok(message) => message,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "pub/sub dispatcher fell behind; events were lost");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let name: &str = &message.channel;
        let Some(channel) = lock(&channels).get(name).map(|e| e.channel.clone()) else {
            continue;
        };
        match message.value.as_str() {
            // No receivers is fine: the last stream went away after the lookup.
            Some(payload) => {
                let _ = channel.tx.send(Arc::from(&*payload));
            }
            None => tracing::warn!(channel = name, "dropping a message that is not a string"),
        }
    }
}

/// Unsubscribes channels whose last stream went away, unless a new stream arrived meanwhile.
async fn janitor(
    subscriber: SubscriberClient,
    channels: Channels,
    mut release_rx: mpsc::UnboundedReceiver<String>,
) {
    while let Some(name) = release_rx.recv().await {
        let Some(channel) = lock(&channels).get(&name).map(|e| e.channel.clone()) else {
            continue;
        };
        let mut subscribed = channel.gate.lock().await;
        let idle = |map: &HashMap<String, Entry>| {
            map.get(&name)
                .is_some_and(|e| e.streams == 0 && Arc::ptr_eq(&e.channel, &channel))
        };
        if !idle(&lock(&channels)) {
            continue;
        }
        if *subscribed {
            if let Err(error) = subscriber.unsubscribe(name.as_str()).await {
                // The entry stays: a later stream re-subscribes, and a later release retries.
                tracing::warn!(channel = %name, %error, "unsubscribe failed");
                continue;
            }
            *subscribed = false;
        }
        let mut map = lock(&channels);
        if idle(&map) {
            map.remove(&name);
        }
    }
}
