//! The open connections, in the order they were admitted, each with its count of requests in flight.
//!
//! At the cap a new connection is admitted by evicting the oldest connection with no request in flight
//! (idle keep-alive sockets and sockets still sending their headers: slowloris); when every connection is
//! busy the new one is refused. So idle sockets, however many, never keep real users out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

/// The open connections, at most `cap`.
#[derive(Debug)]
pub struct Registry {
    cap: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    by_age: BTreeMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    in_flight: Arc<AtomicUsize>,
    evict: CancellationToken,
}

/// What [`Registry::admit`] did.
#[derive(Debug)]
pub enum Admission {
    /// Admitted, with room to spare or after evicting this many idle connections.
    Admitted { slot: Slot, evicted: usize },
    /// Every open connection has a request in flight.
    Full,
}

impl Registry {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            open: Mutex::new(Open::default()),
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// How many connections are open (evicted ones are no longer counted).
    pub fn len(&self) -> usize {
        self.lock().by_age.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits one connection, evicting the oldest idle one when the registry is full.
    ///
    /// A request that starts on the evicted connection at this very moment is lost with it, before any
    /// handler ran: the client sees its connection closed and nothing was done.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut open = self.lock();
        let mut evicted = 0;
        while open.by_age.len() >= self.cap {
            let idle = open
                .by_age
                .iter()
                .find(|(_, e)| e.in_flight.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id);
            let Some(id) = idle else {
                return Admission::Full;
            };
            if let Some(entry) = open.by_age.remove(&id) {
                entry.evict.cancel();
                evicted += 1;
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let evict = CancellationToken::new();
        open.by_age.insert(
            id,
            Entry {
                in_flight: in_flight.clone(),
                evict: evict.clone(),
            },
        );
        Admission::Admitted {
            slot: Slot {
                id,
                registry: self.clone(),
                in_flight,
                evict,
            },
            evicted,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The map stays consistent across a panic (each change is one insert or remove).
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One admitted connection; leaves the registry when dropped.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    registry: Arc<Registry>,
    in_flight: Arc<AtomicUsize>,
    evict: CancellationToken,
}

impl Slot {
    /// Resolves when the registry evicted this connection to admit a newer one.
    pub fn evicted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.evict.cancelled()
    }

    /// Counts one request in flight until the returned guard is dropped (with the response's body).
    pub fn begin_request(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.in_flight.clone())
    }

    /// Whether no request is in flight on this connection.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// The counter, for the connection's I/O to read.
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.lock().by_age.remove(&self.id);
    }
}

/// One request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(a: Admission) -> (Slot, usize) {
        match a {
            Admission::Admitted { slot, evicted } => (slot, evicted),
            Admission::Full => panic!("refused"),
        }
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_is_evicted() {
        let registry = Registry::new(3);
        let (oldest, _) = admitted(registry.admit());
        let (busy_older, _) = admitted(registry.admit());
        let _request = busy_older.begin_request();
        let (newer_idle, _) = admitted(registry.admit());
        // The busy one is older than `newer_idle`, but only idle connections are evicted.
        let (_fourth, evicted) = admitted(registry.admit());
        assert_eq!(evicted, 1);
        assert!(oldest.evict.is_cancelled());
        assert!(!busy_older.evict.is_cancelled());
        assert!(!newer_idle.evict.is_cancelled());
        assert_eq!(registry.len(), 3);
    }

    #[test]
    fn when_every_connection_is_busy_a_new_one_is_refused() {
        let registry = Registry::new(1);
        let (only, _) = admitted(registry.admit());
        let request = only.begin_request();
        assert!(matches!(registry.admit(), Admission::Full));
        drop(request);
        assert!(only.is_idle());
        let (_next, evicted) = admitted(registry.admit());
        assert_eq!(evicted, 1);
    }

    #[test]
    fn a_closed_connection_leaves_the_registry() {
        let registry = Registry::new(2);
        let (slot, _) = admitted(registry.admit());
        assert_eq!(registry.len(), 1);
        drop(slot);
        assert!(registry.is_empty());
    }
}
