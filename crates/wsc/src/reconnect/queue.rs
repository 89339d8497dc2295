//! The outgoing queue between the handles and the supervisor, bounded in bytes, and the
//! session's lifecycle flags. Handles push; the supervisor alone pops and ends it. Nothing
//! here waits on the application or the network.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tokio::sync::{Notify, oneshot, watch};
use wsc_proto::{CloseReason, Message};

use super::config::WhileDisconnected;
use crate::error::Error;

/// What goes to the supervisor, in order.
pub(super) enum Out {
    Message(Message),
    /// Answered once everything before it is written to a connection.
    Flush(oneshot::Sender<Result<(), Error>>),
}

impl Out {
    fn bytes(&self) -> usize {
        match self {
            Out::Message(m) => m.len(),
            Out::Flush(_) => 0,
        }
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Out>,
    bytes: usize,
    /// No more pushes: the session has ended.
    closed: bool,
}

/// Why a push was not taken now.
enum Refused {
    /// Wait for room (connected).
    Wait(Out),
    Err(Error),
}

/// The state shared by every handle and the supervisor.
pub(super) struct Control {
    queue: Mutex<Queue>,
    /// Room in the queue, or a change of state that decides a waiting send (connected,
    /// disconnected, ended).
    room: Notify,
    /// An item for the supervisor.
    work: Notify,
    /// A stop request for the supervisor.
    stop: Notify,
    connected: AtomicBool,
    stopped: AtomicBool,
    /// Handles alive (senders, the session's own included): the supervisor ends with the
    /// last one, whatever it is doing.
    pub handles: AtomicUsize,
    /// The reason the caller closed with (the first close wins).
    close_with: Mutex<Option<CloseReason>>,
    /// What sends fail with once the session has ended.
    end: OnceLock<Error>,
    /// How the session ended, once the supervisor is done: the peer's answer to our Close
    /// (`None` when no connection was open), or why closing failed.
    pub done: watch::Sender<Option<Result<Option<CloseReason>, Error>>>,
    policy: WhileDisconnected,
    /// The byte bound while connected: the client's `outgoing_queue_capacity`.
    connected_capacity: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control {
    pub fn new(policy: WhileDisconnected, connected_capacity: usize) -> Self {
        Control {
            queue: Mutex::default(),
            room: Notify::new(),
            work: Notify::new(),
            stop: Notify::new(),
            connected: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            handles: AtomicUsize::new(1),
            close_with: Mutex::new(None),
            end: OnceLock::new(),
            done: watch::Sender::new(None),
            policy,
            connected_capacity: connected_capacity.max(1),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn set_connected(&self, on: bool) {
        self.connected.store(on, Ordering::Release);
        // A waiting send's rule changes with the state.
        self.room.notify_waiters();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Asks the supervisor to stop (closing with `reason`, if one is given first).
    pub fn stop(&self, reason: Option<CloseReason>) {
        if let Some(r) = reason {
            lock(&self.close_with).get_or_insert(r);
        }
        self.stopped.store(true, Ordering::Release);
        self.stop.notify_waiters();
    }

    /// The reason the caller closed with, if it did.
    pub fn close_with(&self) -> Option<CloseReason> {
        lock(&self.close_with).clone()
    }

    /// What a send fails with after the end.
    pub fn end_error(&self) -> Error {
        self.end.get().cloned().unwrap_or(Error::Closed(None))
    }

    /// Ends the queue with `error` for later sends: queued flushes get it, queued messages
    /// are dropped, waiting sends wake and fail.
    pub fn end(&self, error: Error) {
        let _ = self.end.set(error);
        self.stopped.store(true, Ordering::Release);
        self.connected.store(false, Ordering::Release);
        let items = {
            let mut q = lock(&self.queue);
            q.closed = true;
            q.bytes = 0;
            std::mem::take(&mut q.items)
        };
        for out in items {
            if let Out::Flush(reply) = out {
                let _ = reply.send(Err(self.end_error()));
            }
        }
        self.room.notify_waiters();
    }

    fn try_push(&self, out: Out) -> Result<(), Refused> {
        let mut q = lock(&self.queue);
        if q.closed || self.is_stopped() {
            return Err(Refused::Err(self.end_error()));
        }
        let connected = self.is_connected();
        let cap = match (connected, self.policy) {
            (true, _) => self.connected_capacity,
            (false, WhileDisconnected::Queue(n)) => n,
            (false, WhileDisconnected::Reject) => return Err(Refused::Err(Error::Disconnected)),
        };
        let n = out.bytes();
        // As a session's queue: a message over the bound still goes when the queue is empty.
        if q.bytes != 0 && q.bytes.saturating_add(n) > cap {
            return Err(if connected {
                Refused::Wait(out)
            } else {
                Refused::Err(Error::QueueFull)
            });
        }
        q.bytes += n;
        q.items.push_back(out);
        drop(q);
        self.work.notify_one();
        Ok(())
    }

    /// Queues `out`: at once if there is room; while connected it waits for room; while
    /// disconnected it is queued or refused as configured. Cancel safe: a dropped call has
    /// queued nothing.
    pub async fn push(&self, mut out: Out) -> Result<(), Error> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(out) {
                Ok(()) => return Ok(()),
                Err(Refused::Err(e)) => return Err(e),
                Err(Refused::Wait(back)) => out = back,
            }
            room.await;
        }
    }

    /// The next item for the supervisor, without waiting.
    pub fn pop(&self) -> Option<Out> {
        let mut q = lock(&self.queue);
        let out = q.items.pop_front()?;
        q.bytes -= out.bytes();
        drop(q);
        self.room.notify_waiters();
        Some(out)
    }

    /// Waits for the next item. Cancel safe: an item is taken only when it is returned.
    pub async fn next(&self) -> Out {
        loop {
            if let Some(out) = self.pop() {
                return out;
            }
            self.work.notified().await;
        }
    }

    /// Waits for a stop request.
    pub async fn stopping(&self) {
        loop {
            let n = self.stop.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            n.await;
        }
    }

    /// Bytes queued, for tests.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        lock(&self.queue).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn msg(n: usize) -> Out {
        Out::Message(Message::binary(vec![0u8; n]))
    }

    #[tokio::test]
    async fn disconnected_bound_is_in_bytes_and_refuses_beyond_it() {
        let c = Control::new(WhileDisconnected::Queue(1000), 64);
        // One message over the bound passes when the queue is empty.
        c.push(msg(5000)).await.unwrap();
        assert!(matches!(c.push(msg(1)).await, Err(Error::QueueFull)));
        assert!(c.pop().is_some());
        c.push(msg(600)).await.unwrap();
        c.push(msg(400)).await.unwrap();
        assert!(matches!(c.push(msg(1)).await, Err(Error::QueueFull)));
        assert_eq!(c.queued_bytes(), 1000);
        // Flushes take no room.
        let (tx, _rx) = oneshot::channel();
        c.push(Out::Flush(tx)).await.unwrap();
        let r = Control::new(WhileDisconnected::Reject, 64);
        assert!(matches!(r.push(msg(1)).await, Err(Error::Disconnected)));
    }

    #[tokio::test(start_paused = true)]
    async fn connected_sends_wait_for_room_and_fail_with_the_end() {
        let c = std::sync::Arc::new(Control::new(WhileDisconnected::Queue(10), 100));
        c.set_connected(true);
        c.push(msg(60)).await.unwrap();
        c.push(msg(40)).await.unwrap();
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.push(msg(50)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "waits while 100 bytes are queued");
        assert!(c.pop().is_some());
        waiting.await.unwrap().unwrap();
        assert_eq!(c.queued_bytes(), 90);

        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.push(msg(50)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (reply, answer) = oneshot::channel();
        c.push(Out::Flush(reply)).await.unwrap();
        c.end(Error::Closed(Some(CloseReason::normal())));
        assert!(matches!(
            waiting.await.unwrap(),
            Err(Error::Closed(Some(_)))
        ));
        assert!(matches!(answer.await.unwrap(), Err(Error::Closed(Some(_)))));
        assert!(matches!(c.push(msg(1)).await, Err(Error::Closed(Some(_)))));
        assert_eq!(c.queued_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_waiting_for_room_follows_a_disconnect() {
        let c = std::sync::Arc::new(Control::new(WhileDisconnected::Reject, 10));
        c.set_connected(true);
        c.push(msg(10)).await.unwrap();
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.push(msg(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.set_connected(false);
        assert!(matches!(waiting.await.unwrap(), Err(Error::Disconnected)));
    }
}
