//! The state a session's handles share with its driver task.
//!
//! Owns the meeting points, not the protocol: the outbox (the core's send queue) under the
//! queue lock with the wakers of senders waiting for room, the incoming queue the driver fills
//! and the receiver empties, the settings a handle changes for the driver to apply, and how the
//! session ended once the connection has decided it. Handles queue frames and ask for a close;
//! the connection core, run by the driver, decides what that means.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wsc_proto::Queue;
use wsc_proto::{CloseReason, Event, Extension, Outbox, Role};

use super::call::Call;
use super::config::SessionConfig;
use super::lock::{QueueGuard, QueueLock};
use crate::entropy::OsEntropy;
use crate::error::Error;

/// How the session ended.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The close reason in Ktor's sense (see `wsc_proto::Outcome::reason`).
    pub reason: CloseReason,
    /// The peer's Close reason, if one arrived with one.
    pub peer: Option<CloseReason>,
    /// `Ok` for a completed close handshake.
    pub result: Result<(), Error>,
}

/// The sending side's meeting point: the outbox and who waits on it.
pub(crate) struct Out {
    pub outbox: Outbox<OsEntropy>,
    /// Tasks waiting for room, a stream's end or the session's end, one entry per task.
    waiters: Vec<Waker>,
    pub driver: Option<Waker>,
    /// Bytes of the queue written to the transport (compared with `outbox.queued()`).
    pub written: u64,
    /// Session handles alive (senders and the receiver).
    pub handles: u32,
}

impl Out {
    /// Waits for the outbox to change: `cx`'s task is woken when it does. A task polling in a
    /// loop (a `select!`, a `timeout`) keeps one entry, not one per poll.
    pub(crate) fn wait(&mut self, cx: &Context<'_>) {
        if !self.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            self.waiters.push(cx.waker().clone());
        }
    }

    /// Takes the waiting tasks, to wake once the lock is let go.
    pub(crate) fn take_waiters(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.waiters)
    }

    /// How many tasks wait (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

/// The outgoing queue, locked. When the lock is let go after the outbox said that waiting
/// senders may get on, a handle's guard wakes them at once; the connection's guard leaves that
/// to the driver (`deferred`), which first publishes how the session ended, so that a woken
/// sender refused for good reports why.
pub(crate) struct OutGuard<'a> {
    guard: Option<QueueGuard<'a, Out>>,
    deferred: Option<&'a AtomicBool>,
}

impl Deref for OutGuard<'_> {
    type Target = Out;
    fn deref(&self) -> &Out {
        self.guard.as_deref().expect("held until dropped")
    }
}

impl DerefMut for OutGuard<'_> {
    fn deref_mut(&mut self) -> &mut Out {
        self.guard.as_deref_mut().expect("held until dropped")
    }
}

impl Drop for OutGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // The common case: nothing for waiting senders; the lock goes with the guard.
        if self
            .guard
            .as_ref()
            .is_some_and(|g| g.outbox.notify_pending())
        {
            self.notify();
        }
    }
}

impl OutGuard<'_> {
    #[cold]
    #[inline(never)]
    fn notify(&mut self) {
        let Some(mut g) = self.guard.take() else {
            return;
        };
        g.outbox.take_notify();
        if let Some(flag) = self.deferred {
            flag.store(true, Ordering::Release);
            return;
        }
        let waiters = std::mem::take(&mut g.waiters);
        drop(g);
        for w in waiters {
            w.wake();
        }
    }
}

/// What the incoming queue holds and who waits on it.
pub(crate) struct In {
    pub items: VecDeque<Event>,
    /// Payload bytes in `items`.
    pub bytes: usize,
    /// Messages (or frames) in `items`: a run counts each of its messages.
    pub count: usize,
    /// How the stream of items ends, once the close handshake is over on the wire.
    /// (The error, if it ended with one, is the outcome's.)
    pub ended: bool,
    pub receiver: Option<Waker>,
    /// The driver waits for the receiver to take items (it is woken through `Out::driver`).
    pub driver_waits: bool,
}

/// Settings a handle changes while the session runs, for the driver to apply.
pub(crate) struct Settings {
    pub max_frame_size: AtomicUsize,
    pub max_message_size: AtomicUsize,
    /// Milliseconds (at most 49 days); 0 = off.
    pub ping_interval: AtomicU32,
    /// Milliseconds; 0 = twice the interval.
    pub ping_timeout: AtomicU32,
    pub generation: AtomicU64,
}

/// The session's outcome and who waits for it, boxed: most of a session's life neither is
/// there yet.
#[derive(Default)]
struct Ended {
    outcome: Option<Outcome>,
    waiters: Vec<Waker>,
}

/// The negotiated extensions, in the order they apply to an outgoing message.
pub(crate) type Chain = Box<[Box<dyn Extension>]>;

/// The outgoing extension chain, lent to one sender at a time. A sender that finds it lent
/// out does not block its thread: it leaves its waker and returns `Pending`, and is woken
/// when the chain comes back. The std `Mutex` inside is held only to move the chain in or out
/// and to note a waker, never while a message is compressed.
pub(crate) struct ChainLock(Mutex<ChainSlot>);

struct ChainSlot {
    /// `None` while lent out.
    chain: Option<Chain>,
    waiters: Vec<Waker>,
}

/// The chain, lent out until dropped.
pub(crate) struct ChainGuard<'a> {
    chain: Option<Chain>,
    lock: &'a ChainLock,
}

impl ChainLock {
    fn new(chain: Chain) -> Self {
        ChainLock(Mutex::new(ChainSlot {
            chain: Some(chain),
            waiters: Vec::new(),
        }))
    }

    fn slot(&self) -> MutexGuard<'_, ChainSlot> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chain if no one has it; `None` otherwise (nothing is waited for).
    pub(crate) fn try_lend(&self) -> Option<ChainGuard<'_>> {
        let chain = self.slot().chain.take()?;
        Some(ChainGuard {
            chain: Some(chain),
            lock: self,
        })
    }

    /// The chain, or `Pending` with `cx`'s task woken when it comes back.
    pub(crate) fn poll_lend(&self, cx: &Context<'_>) -> Poll<ChainGuard<'_>> {
        let mut slot = self.slot();
        match slot.chain.take() {
            Some(chain) => Poll::Ready(ChainGuard {
                chain: Some(chain),
                lock: self,
            }),
            None => {
                if !slot.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    slot.waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Deref for ChainGuard<'_> {
    type Target = Chain;
    fn deref(&self) -> &Chain {
        self.chain.as_ref().expect("held until dropped")
    }
}

impl DerefMut for ChainGuard<'_> {
    fn deref_mut(&mut self) -> &mut Chain {
        self.chain.as_mut().expect("held until dropped")
    }
}

impl Drop for ChainGuard<'_> {
    fn drop(&mut self) {
        let waiters = {
            let mut slot = self.lock.slot();
            slot.chain = self.chain.take();
            std::mem::take(&mut slot.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }
}

pub(crate) struct Shared {
    out: QueueLock<Out>,
    /// Set whenever a handle locks the queue: the connection, having found nothing to do in
    /// it, skips its next look while this stays clear.
    out_touched: AtomicBool,
    /// The connection changed the outbox in a way waiting senders must hear of; the driver
    /// wakes them once it has published what happened.
    senders_to_wake: AtomicBool,
    /// The outgoing extension chain (compression), when one was negotiated. Senders of data
    /// messages borrow it first and keep it until their frames are queued: messages are
    /// compressed in the order they are queued, and the compressing happens outside the
    /// queue's lock. A sender that finds it lent out waits as a task, not as a thread.
    pub exts: Option<Box<ChainLock>>,
    pub inc: Mutex<In>,
    pub settings: Settings,
    ended: Mutex<Option<Box<Ended>>>,
    config: Arc<SessionConfig>,
    /// The session's time zero, taken on the runtime that drives it: the connection core's
    /// time is measured from here. Per session, not per client: tokio clocks of different
    /// runtimes (paused ones in tests) do not compare.
    epoch: tokio::time::Instant,
    pub role: Role,
    /// The HTTP exchange that opened the session.
    pub call: Call,
}

fn millis(d: Option<Duration>) -> u32 {
    d.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1))
        .unwrap_or(0)
}

impl Shared {
    pub(crate) fn new(
        config: Arc<SessionConfig>,
        outgoing_extensions: Vec<Box<dyn Extension>>,
        role: Role,
        call: Call,
    ) -> Arc<Shared> {
        let mut outbox = Outbox::new(config.outgoing_capacity);
        outbox.set_fragment_size(config.write_fragment_size);
        outbox.set_compressing(!outgoing_extensions.is_empty());
        Arc::new(Shared {
            out: QueueLock::new(Out {
                outbox,
                waiters: Vec::new(),
                driver: None,
                written: 0,
                handles: 0,
            }),
            out_touched: AtomicBool::new(true),
            senders_to_wake: AtomicBool::new(false),
            exts: (!outgoing_extensions.is_empty())
                .then(|| Box::new(ChainLock::new(outgoing_extensions.into_boxed_slice()))),
            inc: Mutex::new(In {
                items: VecDeque::new(),
                bytes: 0,
                count: 0,
                ended: false,
                receiver: None,
                driver_waits: false,
            }),
            settings: Settings {
                max_frame_size: AtomicUsize::new(config.max_frame_size),
                max_message_size: AtomicUsize::new(config.max_message_size),
                ping_interval: AtomicU32::new(millis(config.ping_interval)),
                ping_timeout: AtomicU32::new(millis(config.ping_timeout)),
                generation: AtomicU64::new(0),
            },
            ended: Mutex::new(None),
            config,
            epoch: tokio::time::Instant::now(),
            role,
            call,
        })
    }

    pub(crate) fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The session's time, as the connection core counts it.
    pub(crate) fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The session's time zero.
    pub(crate) fn epoch(&self) -> tokio::time::Instant {
        self.epoch
    }

    /// Locks the outgoing queue for a handle (see [`QueueLock`] for what it costs).
    #[inline]
    pub(crate) fn out(&self) -> OutGuard<'_> {
        let out = self.out.lock();
        // Under the lock, and before any wake that follows (a wake orders it before the
        // driver's next poll).
        self.out_touched.store(true, Ordering::Relaxed);
        OutGuard {
            guard: Some(out),
            deferred: None,
        }
    }

    /// Locks the outgoing queue for the connection, clearing the mark handles leave.
    fn out_for_connection(&self) -> OutGuard<'_> {
        let out = self.out.lock();
        self.out_touched.store(false, Ordering::Relaxed);
        OutGuard {
            guard: Some(out),
            deferred: Some(&self.senders_to_wake),
        }
    }

    /// Wakes the senders the connection's changes concern (after the driver has published the
    /// outcome, if there is one).
    pub(crate) fn wake_senders(&self) {
        if !self.senders_to_wake.swap(false, Ordering::AcqRel) {
            return;
        }
        let waiters = std::mem::take(&mut self.out().waiters);
        for w in waiters {
            w.wake();
        }
    }

    pub(crate) fn inc(&self) -> MutexGuard<'_, In> {
        self.inc.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ended(&self) -> MutexGuard<'_, Option<Box<Ended>>> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the session ended, if it has.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        self.ended().as_ref()?.outcome.clone()
    }

    /// Ready with the outcome once there is one.
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut e = self.ended();
        let e = e.get_or_insert_default();
        if let Some(o) = e.outcome.as_ref() {
            return Poll::Ready(o.clone());
        }
        if !e.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            e.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Records the outcome (the first one counts) and wakes whoever waits for it.
    pub(crate) fn publish_outcome(&self, outcome: Outcome) {
        let waiters = {
            let mut e = self.ended();
            let e = e.get_or_insert_default();
            if e.outcome.is_some() {
                return;
            }
            e.outcome = Some(outcome);
            std::mem::take(&mut e.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }

    /// The error a send gets once the session takes no more frames: the failure that ended
    /// it, or `Closed` with the close reason (none yet while the close handshake runs).
    pub(crate) fn send_error(&self) -> Error {
        match self.outcome() {
            Some(Outcome { result: Err(e), .. }) => e,
            Some(o) => Error::Closed(Some(o.reason)),
            None => Error::Closed(None),
        }
    }

    /// Tells the driver that something changed.
    pub(crate) fn wake_driver(&self) {
        let w = self.out().driver.clone();
        if let Some(w) = w {
            w.wake();
        }
    }

    pub(crate) fn settings_changed(&self) {
        self.settings.generation.fetch_add(1, Ordering::Release);
        self.wake_driver();
    }

    /// Asks the connection to close with `reason`, from a handle (no waiting).
    pub(crate) fn request_close(&self, reason: Option<CloseReason>) {
        let now = self.now();
        let mut out = self.out();
        if out.outbox.request_close(reason, now) {
            let w = out.driver.clone();
            drop(out);
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    pub(crate) fn ping_interval(&self) -> Option<Duration> {
        match self.settings.ping_interval.load(Ordering::Acquire) {
            0 => None,
            ms => Some(Duration::from_millis(ms.into())),
        }
    }

    /// The ping timeout in force (the core's rule, `wsc_proto::ping_timeout`).
    pub(crate) fn ping_timeout(&self) -> Option<Duration> {
        let set = match self.settings.ping_timeout.load(Ordering::Acquire) {
            0 => None,
            ms => Some(Duration::from_millis(ms.into())),
        };
        wsc_proto::ping_timeout(self.ping_interval(), set)
    }

    pub(crate) fn set_ping(&self, interval: Option<Duration>, timeout: Option<Option<Duration>>) {
        self.settings
            .ping_interval
            .store(millis(interval), Ordering::Release);
        if let Some(t) = timeout {
            self.settings
                .ping_timeout
                .store(millis(t), Ordering::Release);
        }
        self.settings_changed();
    }
}

/// The connection core's view of the session's outbox: locked, and leaving the mark handles
/// look for cleared.
pub(crate) struct SessionQueue(pub Arc<Shared>);

/// The outbox, locked for the connection.
pub(crate) struct OutboxGuard<'a>(OutGuard<'a>);

impl Deref for OutboxGuard<'_> {
    type Target = Outbox<OsEntropy>;
    fn deref(&self) -> &Outbox<OsEntropy> {
        &self.0.outbox
    }
}

impl DerefMut for OutboxGuard<'_> {
    fn deref_mut(&mut self) -> &mut Outbox<OsEntropy> {
        &mut self.0.outbox
    }
}

impl Queue for SessionQueue {
    type Entropy = OsEntropy;
    type Guard<'a> = OutboxGuard<'a>;
    fn lock(&mut self) -> OutboxGuard<'_> {
        OutboxGuard(self.0.out_for_connection())
    }
    fn touched(&mut self) -> bool {
        self.0.out_touched.load(Ordering::Acquire)
    }
}
