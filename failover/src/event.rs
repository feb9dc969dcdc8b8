//! Events, with the original's names, as a typed stream and as a hooks trait.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use bson::Bson;

use crate::error::Error;
use crate::state::State;

/// Something that happened to a member. The names are the original's.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `synchronize(id)`: a standby learned the master's newest synchronize id
    /// (in managed mode: the key of the last finished task).
    Synchronize {
        /// The id, as the master published it.
        id: Bson,
        /// The epoch of the master that published it.
        epoch: u64,
    },
    /// `error`: a database command failed; the member retries by itself.
    Error(Error),
    /// `info('connected')`: the member reached the database for the first time.
    Connected,
    /// `info`: the master handed its lease over on shutdown (after its work stopped).
    Released {
        /// The epoch of the released lease.
        epoch: u64,
    },
    /// `panic`: something went wrong inside (a hook or a task panicked). The member
    /// keeps running.
    Panic(String),
    /// `statechange(old, new)`.
    StateChange {
        /// The state left.
        old: State,
        /// The state entered.
        new: State,
        /// The epoch of the lease this member now holds (master) or follows (slave).
        epoch: Option<u64>,
    },
    /// `master`: this member now holds the lease with this epoch, its fencing token.
    Master {
        /// The fencing token: higher than every earlier master's.
        epoch: u64,
    },
    /// `slave`: another member holds the lease.
    Slave {
        /// The epoch of the lease that member holds.
        epoch: u64,
    },
    /// Managed mode: this member became master, but its queue does not contain
    /// where the previous master stopped (it joined late, or was fed from another
    /// point): it works its queue from the head, so tasks the previous master
    /// finished may run again, and tasks that only other members hold stay with
    /// them until one of them leads.
    ResumePointUnknown {
        /// This member's epoch.
        epoch: u64,
        /// The key the previous master published last.
        last_published: Bson,
    },
    /// Managed mode: a task failed as often as `max_attempts` allows and was taken
    /// out of the queue. The task is handed over here so that nothing is lost.
    DeadLetter {
        /// The task's key.
        key: Bson,
        /// The task itself.
        task: Bson,
        /// How many times it was tried.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
}

impl Event {
    /// The event's name, as the original spells it (`dead-letter` for the addition).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Synchronize { .. } => "synchronize",
            Event::Error(_) => "error",
            Event::Connected | Event::Released { .. } => "info",
            Event::ResumePointUnknown { .. } => "resume-point-unknown",
            Event::Panic(_) => "panic",
            Event::StateChange { .. } => "statechange",
            Event::Master { .. } => "master",
            Event::Slave { .. } => "slave",
            Event::DeadLetter { .. } => "dead-letter",
        }
    }
}

/// A member's events, in order: a [`Stream`](futures_core::Stream), or one at a time
/// with [`next`](Events::next). The first call of
/// [`Member::events`](crate::Member::events) (or `Managed::events`) gets every event
/// since the member started (the first 256); later calls get the events from the
/// moment of the call. Ends (`None`) when the member has stopped.
///
/// Every subscriber gets every event, up to [`Events::CAPACITY`] waiting: a
/// subscriber that falls further behind loses the oldest waiting events, and
/// [`dropped`](Events::dropped) counts them. Memory stays bounded whatever the
/// subscriber does.
#[derive(Debug)]
#[must_use = "events are only useful when read"]
pub struct Events {
    inner: Arc<Mutex<Subscriber>>,
}

#[derive(Debug, Default)]
struct Subscriber {
    queue: VecDeque<Event>,
    waker: Option<Waker>,
    closed: bool,
    dropped: u64,
}

impl Subscriber {
    fn push(&mut self, event: Event) {
        if self.queue.len() == Events::CAPACITY {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(event);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl Events {
    /// How many events wait for a subscriber at most; older ones are dropped.
    pub const CAPACITY: usize = 1024;

    fn new() -> Events {
        Events {
            inner: Arc::new(Mutex::new(Subscriber::default())),
        }
    }

    /// The next event, or `None` once the member has stopped.
    ///
    /// Cancel-safe: an event is only taken when the future completes.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        lock(&self.inner).queue.pop_front()
    }

    /// How many events this subscriber lost because it fell more than
    /// [`Events::CAPACITY`] behind.
    pub fn dropped(&self) -> u64 {
        lock(&self.inner).dropped
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let mut inner = lock(&self.inner);
        if let Some(event) = inner.queue.pop_front() {
            return Poll::Ready(Some(event));
        }
        if inner.closed {
            return Poll::Ready(None);
        }
        inner.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl futures_core::Stream for Events {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

/// How many events a member keeps for the application's first subscriber.
const BACKLOG: usize = 256;

/// Fans events out to every subscriber.
pub(crate) struct EventSink {
    inner: Mutex<Fanout>,
}

struct Fanout {
    subscribers: Vec<Weak<Mutex<Subscriber>>>,
    /// The first events, kept until the application subscribes for the first time
    /// (a member starts working before `start` returns, so its first events would
    /// otherwise be lost to a subscriber that could not exist yet).
    backlog: Option<Vec<Event>>,
    closed: bool,
}

impl Default for EventSink {
    fn default() -> Self {
        EventSink {
            inner: Mutex::new(Fanout {
                subscribers: Vec::new(),
                backlog: Some(Vec::new()),
                closed: false,
            }),
        }
    }
}

impl EventSink {
    /// A subscriber for the application: the first one also gets the events
    /// from the start (at most [`BACKLOG`] of them).
    pub(crate) fn subscribe(&self) -> Events {
        let mut inner = lock(&self.inner);
        let events = Events::new();
        {
            let mut sub = lock(&events.inner);
            for event in inner.backlog.take().unwrap_or_default() {
                sub.push(event);
            }
            sub.closed = inner.closed;
        }
        if !inner.closed {
            inner.subscribers.push(Arc::downgrade(&events.inner));
        }
        events
    }

    /// A subscriber from now on, for the crate's own use (the hooks).
    pub(crate) fn subscribe_internal(&self) -> Events {
        let events = Events::new();
        let mut inner = lock(&self.inner);
        lock(&events.inner).closed = inner.closed;
        inner.subscribers.push(Arc::downgrade(&events.inner));
        events
    }

    pub(crate) fn emit(&self, event: Event) {
        let mut inner = lock(&self.inner);
        if let Some(backlog) = inner.backlog.as_mut().filter(|b| b.len() < BACKLOG) {
            backlog.push(event.clone());
        }
        inner.subscribers.retain(|s| match s.upgrade() {
            Some(sub) => {
                lock(&sub).push(event.clone());
                true
            }
            None => false,
        });
    }

    /// Ends every stream (after the events already sent).
    pub(crate) fn close(&self) {
        let mut inner = lock(&self.inner);
        for sub in inner.subscribers.drain(..).filter_map(|s| s.upgrade()) {
            let mut sub = lock(&sub);
            sub.closed = true;
            if let Some(w) = sub.waker.take() {
                w.wake();
            }
        }
        inner.closed = true;
    }
}

/// Locks a mutex, ignoring poisoning: every critical section in this crate leaves
/// its data consistent, and a panic elsewhere must not take the member down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hooks called on a member's events; every method has a default that does nothing.
///
/// Hooks run one at a time, in event order, on a task of their own: a slow hook
/// delays later hooks, never a lease renewal (keep them non-blocking: they share
/// the runtime with the election). A hook that panics is reported as an
/// [`Event::Panic`] and the member goes on. At most [`Events::CAPACITY`] events wait
/// for the hooks; a hook so slow that more pile up loses the oldest (logged). The
/// worker of a managed member waits for `on_master` before the first task of the
/// epoch (at most one lease). On shutdown the hooks get the events still queued, for
/// at most 5 s.
///
/// ```
/// use failover::{Hooks, State};
///
/// struct Log;
///
/// impl Hooks for Log {
///     async fn on_master(&self, epoch: u64) {
///         println!("leading with fencing token {epoch}");
///     }
///     async fn on_state_change(&self, old: State, new: State) {
///         println!("{old} -> {new}");
///     }
/// }
/// ```
pub trait Hooks: Send + Sync + 'static {
    /// This member became master; `epoch` is its fencing token.
    fn on_master(&self, epoch: u64) -> impl Future<Output = ()> + Send {
        let _ = epoch;
        async {}
    }

    /// This member became a standby of the master holding `epoch`.
    fn on_slave(&self, epoch: u64) -> impl Future<Output = ()> + Send {
        let _ = epoch;
        async {}
    }

    /// A standby received the master's synchronize id.
    fn on_synchronize(&self, id: Bson) -> impl Future<Output = ()> + Send {
        let _ = id;
        async {}
    }

    /// The member moved from `old` to `new`.
    fn on_state_change(&self, old: State, new: State) -> impl Future<Output = ()> + Send {
        let _ = (old, new);
        async {}
    }

    /// A database command failed (the member retries by itself).
    fn on_error(&self, error: Error) -> impl Future<Output = ()> + Send {
        let _ = error;
        async {}
    }
}

/// No hooks.
impl Hooks for () {}

/// Runs `hooks` on every event of `events`, one at a time, until the stream ends.
/// Panics in hooks are caught and reported through `sink`.
/// `on_master_done(epoch)` is called when the `on_master` hook of `epoch` has
/// returned (or panicked). Returns the hooks' task.
pub(crate) fn spawn_hooks<H: Hooks>(
    hooks: Arc<H>,
    mut events: Events,
    sink: Weak<EventSink>,
    on_master_done: impl Fn(u64) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let h = hooks.clone();
            let place = event.name();
            let master = match event {
                Event::Master { epoch } => Some(epoch),
                _ => None,
            };
            let call = tokio::spawn(async move {
                match event {
                    Event::Master { epoch } => h.on_master(epoch).await,
                    Event::Slave { epoch } => h.on_slave(epoch).await,
                    Event::Synchronize { id, .. } => h.on_synchronize(id).await,
                    Event::StateChange { old, new, .. } => h.on_state_change(old, new).await,
                    Event::Error(e) => h.on_error(e).await,
                    _ => {}
                }
            });
            let result = call.await;
            if let Some(epoch) = master {
                on_master_done(epoch);
            }
            if let Err(e) = result {
                if e.is_panic() {
                    let message = panic_message(e.into_panic());
                    tracing::error!(target: "failover", hook = place, %message, "hook panicked");
                    if let Some(sink) = sink.upgrade() {
                        sink.emit(Event::Panic(format!(
                            "hook for `{place}` panicked: {message}"
                        )));
                    }
                }
            }
        }
        let dropped = events.dropped();
        if dropped > 0 {
            tracing::warn!(target: "failover", dropped, "the hooks fell behind by more than {} events; that many were not delivered to them", Events::CAPACITY);
        }
    })
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_subscriber_keeps_the_newest_events_and_counts_the_rest() {
        let sink = EventSink::default();
        let mut events = sink.subscribe();
        for epoch in 0..(Events::CAPACITY as u64 + 76) {
            sink.emit(Event::Master { epoch });
        }
        assert_eq!(events.dropped(), 76);
        assert_eq!(events.try_next(), Some(Event::Master { epoch: 76 }));
        sink.close();
        let mut rest = 1;
        while events.next().await.is_some() {
            rest += 1;
        }
        assert_eq!(rest, Events::CAPACITY);
    }

    #[tokio::test]
    async fn the_first_subscriber_gets_the_events_since_the_start() {
        let sink = EventSink::default();
        sink.emit(Event::Connected);
        let mut first = sink.subscribe();
        let mut second = sink.subscribe();
        sink.emit(Event::Released { epoch: 3 });
        assert_eq!(first.try_next(), Some(Event::Connected));
        assert_eq!(first.try_next(), Some(Event::Released { epoch: 3 }));
        assert_eq!(second.try_next(), Some(Event::Released { epoch: 3 }));
        assert_eq!(second.try_next(), None);
    }
}
