//! The open connections: which are busy with a request, which are idle, and which to shed when the cap is
//! reached (those that have not sent a request yet, then the longest idle keep-alive ones).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

/// One open connection, as the registry and the connection's own task see it.
#[derive(Debug)]
pub struct ConnState {
    accepted: Instant,
    /// Requests received so far (0: the client has not finished a request head yet).
    requests: AtomicU64,
    /// 0 or 1 on HTTP/1 (no pipelining in hyper's server): a request is being answered.
    in_flight: AtomicUsize,
    /// When the last response finished; meaningful while `in_flight` is 0 and `requests` > 0.
    idle_since: Mutex<Instant>,
    /// Chosen to be shed: no longer counted against the cap, closes as soon as its task sees `shed`.
    shedding: AtomicBool,
    pub shed: Notify,
}

impl ConnState {
    fn new() -> Self {
        let now = Instant::now();
        ConnState {
            accepted: now,
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(now),
            shedding: AtomicBool::new(false),
            shed: Notify::new(),
        }
    }

    /// No request is being answered (the connection may still be reading one's head).
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// When an idle keep-alive connection should be closed, or `None` while it is busy or has not spoken
    /// (the header read timeout covers that).
    pub fn keep_alive_deadline(&self, keep_alive: std::time::Duration) -> Option<Instant> {
        if !self.is_idle() || self.requests.load(Ordering::Acquire) == 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap_or_else(PoisonError::into_inner) + keep_alive)
    }

    /// Marks a request as received; the mark ends when the returned guard drops (response written).
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Shedding order: never spoke (oldest first), then idle keep-alive (longest idle first).
    fn shed_rank(&self) -> (bool, Instant) {
        if self.requests.load(Ordering::Acquire) == 0 {
            (false, self.accepted)
        } else {
            (true, *self.idle_since.lock().unwrap_or_else(PoisonError::into_inner))
        }
    }
}

/// A request in progress on its connection.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every open connection, with the cap on how many are kept.
#[derive(Debug)]
pub struct Registry {
    max: usize,
    next_id: AtomicU64,
    conns: Mutex<Conns>,
}

/// The open connections and how many of them are already being shed (no longer counted against the cap).
#[derive(Debug, Default)]
struct Conns {
    open: HashMap<u64, Arc<ConnState>>,
    shedding: usize,
}

impl Conns {
    /// Marks the idle connection first in line to be shed; false when all are busy.
    fn shed_one(&mut self) -> bool {
        let victim = self
            .open
            .values()
            .filter(|c| c.is_idle() && !c.shedding.load(Ordering::Acquire))
            .min_by_key(|c| c.shed_rank());
        let Some(c) = victim else { return false };
        c.shedding.store(true, Ordering::Release);
        c.shed.notify_one();
        self.shedding += 1;
        true
    }
}

/// What to do with a newly accepted connection.
pub enum Admission {
    /// Serve it; `Registered` removes it from the registry when dropped.
    Serve(Registered),
    /// Every connection is busy with a request: refuse this one.
    Full,
}

/// A connection's place in the registry, released when its task ends.
pub struct Registered {
    pub state: Arc<ConnState>,
    id: u64,
    registry: Arc<Registry>,
}

impl Registered {
    /// Takes back a shed notice that came too late (a request arrived first): the connection counts against the
    /// cap again and may be shed later. Without this the cap would be overshot for the connection's lifetime.
    pub fn keep(&self) {
        let mut conns = self.registry.lock();
        if self.state.shedding.swap(false, Ordering::AcqRel) {
            conns.shedding -= 1;
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut conns = self.registry.lock();
        conns.open.remove(&self.id);
        if self.state.shedding.load(Ordering::Acquire) {
            conns.shedding -= 1;
        }
    }
}

impl Registry {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Registry { max: max.max(1), next_id: AtomicU64::new(0), conns: Mutex::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection, shedding an idle one first when the cap is reached.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut conns = self.lock();
        let live = conns.open.len() - conns.shedding;
        if live >= self.max && !conns.shed_one() {
            return Admission::Full;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new());
        conns.open.insert(id, state.clone());
        Admission::Serve(Registered { state, id, registry: self.clone() })
    }

    /// Sheds the idle connection first in line (to free a descriptor); false when all are busy.
    pub fn shed_one(&self) -> bool {
        self.lock().shed_one()
    }

    pub fn len(&self) -> usize {
        self.lock().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sheds_the_silent_then_the_longest_idle_and_never_the_busy() {
        let registry = Registry::new(3);
        let Admission::Serve(busy) = registry.admit() else { panic!("room") };
        let _req = busy.state.begin_request();
        let Admission::Serve(kept_alive) = registry.admit() else { panic!("room") };
        drop(kept_alive.state.begin_request());
        let Admission::Serve(silent) = registry.admit() else { panic!("room") };
        let Admission::Serve(fourth) = registry.admit() else { panic!("sheds one") };
        assert!(silent.state.shedding.load(Ordering::Acquire), "the one that never spoke goes first");
        std::thread::sleep(std::time::Duration::from_millis(2));
        drop(fourth.state.begin_request());
        let Admission::Serve(_fifth) = registry.admit() else { panic!("sheds one") };
        assert!(kept_alive.state.shedding.load(Ordering::Acquire), "then the longest idle keep-alive one");
        assert!(!fourth.state.shedding.load(Ordering::Acquire));
        assert!(!busy.state.shedding.load(Ordering::Acquire));
    }

    /// A connection told to go that got a request first stays, and counts against the cap again: a newcomer is
    /// refused while it is busy (without `keep` the registry would think there was room).
    #[tokio::test]
    async fn a_late_shed_notice_is_taken_back() {
        let registry = Registry::new(1);
        let Admission::Serve(first) = registry.admit() else { panic!("room") };
        let Admission::Serve(second) = registry.admit() else { panic!("sheds the first") };
        assert!(first.state.shedding.load(Ordering::Acquire));
        let _req = first.state.begin_request();
        first.keep();
        let _req2 = second.state.begin_request();
        assert!(matches!(registry.admit(), Admission::Full), "two live connections, cap 1: no room");
        drop(second);
        assert!(matches!(registry.admit(), Admission::Full), "the first is busy and counted");
    }

    #[tokio::test]
    async fn refuses_when_every_connection_is_busy() {
        let registry = Registry::new(1);
        let Admission::Serve(busy) = registry.admit() else { panic!("room") };
        let _req = busy.state.begin_request();
        assert!(matches!(registry.admit(), Admission::Full));
        drop(busy);
        assert_eq!(registry.len(), 0);
    }
}
