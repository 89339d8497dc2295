//! The task that owns the transport once the handshake is done.
//!
//! It decides nothing about the protocol: it reads into the connection core, writes what the
//! core transmits, sleeps until the core's next deadline, hands the core's events to the
//! receiver and wakes whoever waits. It runs over any `AsyncRead + AsyncWrite` stream and knows
//! nothing of what the stream is. It is a hand-written poll loop, not a `select!`, so that
//! reading, writing and timers make progress together without cancelling one another, and so
//! that a whole read's worth of messages is handed over under one lock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;
use wsc_proto::{Config as ConnConfig, Connection};
use wsc_proto::{Event, Extension, Limits, Role};

use super::buffers::{Buffers, Hint, ReadBuf, Trim};
use super::shared::{Outcome, SessionQueue, Shared};
use crate::error::{Error, IoContext};

/// The most the write buffer is filled to before writing: large payloads are masked into it
/// this far ahead of the transport (large writes cost less system time per byte; see
/// bench/RESULTS.md).
const WRITE_CHUNK: usize = 1024 * 1024;
/// Work done in one poll before yielding to the scheduler.
const BUDGET: usize = 64;

pub(crate) struct Driver<S> {
    io: S,
    conn: Connection<SessionQueue>,
    /// The buffers, while bytes move: a quiet connection gives them back and holds none.
    bufs: Option<Box<Buffers>>,
    /// The one timer: the connection's next deadline or the buffer trim, whichever is first
    /// (its deadline counts while `ARMED`).
    timer: Option<Pin<Box<Sleep>>>,
    /// What failed the transport, for the error the session reports.
    io_error: Option<Box<(IoContext, Arc<std::io::Error>)>>,
    /// The settings generation last applied (its low bits: equal means unchanged).
    generation: u32,
    flags: Flags,
}

/// The driver's yes/no state, one bit each.
#[derive(Clone, Copy, Default)]
struct Flags(u16);

impl Flags {
    fn get(self, f: u16) -> bool {
        self.0 & f != 0
    }
    fn set(&mut self, f: u16, on: bool) {
        if on {
            self.0 |= f;
        } else {
            self.0 &= !f;
        }
    }
}

/// Written since the transport was last flushed.
const UNFLUSHED: u16 = 1;
/// The last write found the transport full.
const WRITE_BLOCKED: u16 = 1 << 1;
/// The transport's read side is done (end of stream, an error, or given up on).
const READ_DONE: u16 = 1 << 2;
/// The connection said it ended (its `Closed` event was taken).
const CLOSED: u16 = 1 << 3;
const OUTCOME_PUBLISHED: u16 = 1 << 4;
const END_PUBLISHED: u16 = 1 << 5;
/// Handles know how to wake this task.
const REGISTERED: u16 = 1 << 6;
/// The timer's deadline counts.
const ARMED: u16 = 1 << 7;

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    /// A driver for a session whose handshake just completed over `io`; `leftover` holds the
    /// bytes that arrived behind the handshake, `extensions` the negotiated ones for incoming
    /// messages.
    pub(crate) fn new(
        io: S,
        shared: Arc<Shared>,
        leftover: BytesMut,
        raw: bool,
        extensions: Vec<Box<dyn Extension>>,
    ) -> Self {
        let cfg = shared.config();
        let mut config = ConnConfig::new(shared.role);
        config.raw = raw;
        config.limits = Limits {
            max_frame_size: cfg.max_frame_size,
            max_message_size: cfg.max_message_size,
        };
        config.close_timeout = cfg.close_timeout;
        config.ping_interval = cfg.ping_interval;
        config.ping_timeout = cfg.ping_timeout;
        config.stream_incoming = cfg.stream_incoming;
        config.masking = cfg.masking;
        let now = shared.now();
        let generation = shared.settings.generation.load(Ordering::Acquire) as u32;
        let mut conn = Connection::new(config, SessionQueue(shared), extensions, now);
        let bufs = (!leftover.is_empty()).then(|| {
            let mut b = Buffers::reading(ReadBuf::new(leftover));
            // Frames that arrived with the 101 are the stream's first bytes.
            conn.handle_read(&mut b.rbuf.buf, now);
            b
        });
        Driver {
            io,
            conn,
            bufs,
            timer: None,
            io_error: None,
            generation,
            flags: Flags::default(),
        }
    }

    /// Applies settings a handle changed.
    fn sync_settings(&mut self) {
        let g = self.shared().settings.generation.load(Ordering::Acquire) as u32;
        if g == self.generation {
            return;
        }
        self.generation = g;
        let shared = self.shared().clone();
        let s = &shared.settings;
        let now = shared.now();
        self.conn.set_limits(Limits {
            max_frame_size: s.max_frame_size.load(Ordering::Acquire),
            max_message_size: s.max_message_size.load(Ordering::Acquire),
        });
        self.conn
            .set_keepalive(shared.ping_interval(), shared.ping_timeout(), now);
    }

    /// Writes what the connection transmits until the transport is full or nothing is left.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        let mut wrote = false;
        let mut failed = None;
        self.flags.set(WRITE_BLOCKED, false);
        loop {
            let bufs = match self.bufs.as_deref_mut() {
                Some(b) => b,
                None => {
                    // Nothing held: buffers only once there is something to write.
                    let mut wbuf = BytesMut::new();
                    let direct = self.conn.poll_transmit(&mut wbuf, WRITE_CHUNK);
                    if wbuf.is_empty() && direct.is_none() {
                        break;
                    }
                    self.bufs.insert(Buffers::writing(wbuf, direct))
                }
            };
            if bufs.direct.is_none() {
                bufs.direct = self.conn.poll_transmit(&mut bufs.wbuf, WRITE_CHUNK);
            } else {
                // Still lets the connection look at its queue (a close request, say).
                self.conn.poll_transmit(&mut bufs.wbuf, 0);
            }
            let from_wbuf = !bufs.wbuf.is_empty();
            let buf: &[u8] = if from_wbuf {
                &bufs.wbuf
            } else if let Some(d) = bufs.direct.as_ref() {
                d
            } else {
                break;
            };
            if self.conn.is_finished() && !from_wbuf {
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, buf) {
                Poll::Ready(Ok(0)) => {
                    failed = Some(std::io::ErrorKind::WriteZero.into());
                    break;
                }
                Poll::Ready(Ok(n)) => {
                    wrote = true;
                    if from_wbuf {
                        bufs.wbuf.advance(n);
                    } else if let Some(d) = bufs.direct.as_mut() {
                        d.advance(n);
                        if d.is_empty() {
                            bufs.direct = None;
                        }
                    }
                    self.conn.handle_written(n);
                }
                Poll::Ready(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Poll::Pending => {
                    self.flags.set(WRITE_BLOCKED, true);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            self.transport_failed(IoContext::Writing, e);
        }
        if wrote {
            self.flags.set(UNFLUSHED, true);
        }
        let all_written = self.bufs.as_deref().is_none_or(Buffers::all_written);
        let mut publish = wrote;
        if all_written && self.flags.get(UNFLUSHED) && self.io_error.is_none() {
            // A flushed transport: tell flush() waiters.
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Err(e)) => self.transport_failed(IoContext::Writing, e),
                Poll::Pending => publish = false,
                Poll::Ready(Ok(())) => {
                    self.flags.set(UNFLUSHED, false);
                    publish = true;
                }
            }
        }
        if publish {
            let data = self.conn.data_written();
            let mut out = self.shared().out();
            if out.written != data {
                out.written = data;
                let waiters = out.take_waiters();
                drop(out);
                for w in waiters {
                    w.wake();
                }
            }
        }
        wrote
    }

    fn transport_failed(&mut self, context: IoContext, e: std::io::Error) {
        if self.io_error.is_none() {
            self.io_error = Some(Box::new((context, Arc::new(e))));
        }
        if let Some(b) = self.bufs.as_deref_mut() {
            b.wbuf.clear();
            b.direct = None;
        }
        self.flags.set(READ_DONE, true);
        self.conn.handle_transport_error();
    }

    /// Whether the receiver has room for what the next read may bring; if not, the driver
    /// waits for it to take some.
    fn room_to_read(&mut self) -> bool {
        if self.conn.is_closed() {
            return true; // only the end of the stream is read now
        }
        let shared = self.shared().clone();
        let cfg = shared.config();
        let mut inc = shared.inc();
        if inc.count >= cfg.incoming_capacity || inc.bytes >= cfg.incoming_bytes {
            inc.driver_waits = true;
            false
        } else {
            true
        }
    }

    /// Reads once and hands the bytes to the connection; whether anything happened.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        let hint = Hint {
            wanted: self.conn.read_hint(),
            large_frames: self.conn.large_frames(),
            max_header: wsc_proto::header_len(usize::MAX, self.shared().role == Role::Server),
            queue_bytes: self.shared().config().incoming_bytes,
        };
        // A quiet connection probes with a read buffer that holds nothing, and keeps it (with
        // the rest of the buffers) only once bytes arrive.
        let mut fresh = ReadBuf::new(BytesMut::new());
        let rbuf = match self.bufs.as_deref_mut() {
            Some(b) => &mut b.rbuf,
            None => &mut fresh,
        };
        let read = rbuf.poll_read(&mut self.io, cx, &hint);
        if matches!(read, Poll::Ready(Ok(n)) if n > 0) && self.bufs.is_none() {
            self.bufs = Some(Buffers::reading(fresh));
        }
        match read {
            Poll::Pending => false,
            Poll::Ready(Err(e)) => {
                self.transport_failed(IoContext::Reading, e);
                true
            }
            Poll::Ready(Ok(0)) => {
                self.flags.set(READ_DONE, true);
                let now = self.shared().now();
                self.conn.handle_eof(now);
                true
            }
            Poll::Ready(Ok(_)) => {
                let now = self.shared().now();
                if let Some(b) = self.bufs.as_deref_mut() {
                    self.conn.handle_read(&mut b.rbuf.buf, now);
                }
                true
            }
        }
    }

    /// Hands the connection's events to the receiver, under one lock. While a violation waits
    /// behind messages, they are handed over and the driver waits for the receiver to take
    /// them before it lets the connection fail, so the application's replies to them go out
    /// ahead of the Close.
    fn deliver(&mut self) -> bool {
        if !self.conn.has_events() {
            return false;
        }
        let shared = self.shared().clone();
        let mut inc = shared.inc();
        let mut pushed = false;
        let mut taken = false;
        loop {
            if self.conn.failure_pending() && !inc.items.is_empty() {
                inc.driver_waits = true;
                break;
            }
            let event = self.conn.poll_event();
            taken |= event.is_some();
            match event {
                None => break,
                Some(Event::Closed) => self.flags.set(CLOSED, true),
                Some(Event::Ping(_) | Event::Pong(_)) => {}
                Some(e) => {
                    inc.bytes += e.len();
                    inc.count += e.count();
                    inc.items.push_back(e);
                    pushed = true;
                }
            }
        }
        let w = if pushed { inc.receiver.take() } else { None };
        drop(inc);
        if let Some(w) = w {
            w.wake();
        }
        taken
    }

    /// Runs the timer: the connection's deadline, then the buffer trim.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        // A fired timer stays elapsed until re-armed.
        let Some(t) = self.timer.as_mut().filter(|_| self.flags.get(ARMED)) else {
            return false;
        };
        // Polled when armed with this task's waker, which never changes (the driver is its
        // own task): it needs polling again only once it has fired.
        if !t.is_elapsed() || t.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.flags.set(ARMED, false);
        let shared = self.shared().clone();
        let since = shared.now();
        if self.conn.poll_timeout().is_some_and(|d| d <= since) {
            self.conn.handle_timeout(since);
        }
        let trim = match self.bufs.as_deref_mut() {
            Some(b) => b.trim_if_due(since),
            None => Trim::NotDue,
        };
        if trim != Trim::NotDue {
            if trim == Trim::All {
                self.bufs = None;
            }
            self.conn.trim();
            shared.out().outbox.trim();
        }
        true
    }

    /// Sets the timer for the earliest of the connection's deadline and the trim.
    fn arm_timer(&mut self, cx: &mut Context<'_>) {
        let epoch = self.shared().epoch();
        let closed = self.conn.is_closed();
        let trim = self
            .bufs
            .as_deref_mut()
            .and_then(|b| b.trim_deadline(!closed, || epoch.elapsed()));
        let want = match (self.conn.poll_timeout(), trim) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|d| epoch + d);
        let armed = self.flags.get(ARMED);
        let current = self.timer.as_ref().filter(|_| armed).map(|t| t.deadline());
        let Some(at) = want else {
            // Nothing to wait for (a raw session gone quiet): the timer is given back too.
            self.flags.set(ARMED, false);
            self.timer = None;
            return;
        };
        if want == current {
            return;
        }
        self.flags.set(ARMED, true);
        let t = match self.timer.as_mut() {
            Some(t) => {
                t.as_mut().reset(at);
                t
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        // Registered now, so that it wakes this task.
        if t.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.flags.get(REGISTERED) {
            // The driver is its own task: its waker stays valid for its whole life.
            self.flags.set(REGISTERED, true);
            self.shared().out().driver = Some(cx.waker().clone());
        }
        for _ in 0..BUDGET {
            self.sync_settings();
            let mut progress = self.poll_timer(cx);
            progress |= self.poll_write(cx);
            // While writes are blocked and the peer is owed a reply, its input waits: reading
            // more could only replace the reply, and a peer that sends without reading stalls.
            if !self.flags.get(READ_DONE)
                && self.conn.wants_read()
                && !(self.flags.get(WRITE_BLOCKED) && self.conn.owes_reply())
            {
                if self.room_to_read() {
                    self.conn.resume_input();
                    progress |= self.poll_read(cx);
                } else {
                    self.conn.pause_input();
                }
            }
            progress |= self.deliver();
            self.publish();
            if self.conn.is_finished() && self.bufs.as_deref().is_none_or(Buffers::all_written) {
                return Poll::Ready(());
            }
            if !progress {
                self.arm_timer(cx);
                return Poll::Pending;
            }
            if let Some(b) = self.bufs.as_deref_mut() {
                b.moved();
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S> Driver<S> {
    fn shared(&mut self) -> &Arc<Shared> {
        &self.conn.queue().0
    }

    /// Publishes how the session ended as soon as the connection knows (before anyone hears
    /// of it), and ends the receiver's stream once our Close is on the wire (or never will
    /// be), so that a program that exits when `recv()` ends loses nothing.
    fn publish(&mut self) {
        if !self.flags.get(OUTCOME_PUBLISHED)
            && let Some(o) = self.conn.outcome()
        {
            let outcome = Outcome {
                reason: o.reason.clone(),
                peer: o.peer.clone(),
                result: match &o.failure {
                    None => Ok(()),
                    Some(f) => Err(Error::of_failure(f, self.io_error.as_deref())),
                },
            };
            self.flags.set(OUTCOME_PUBLISHED, true);
            #[cfg(feature = "tracing")]
            crate::trace::session_ended(&outcome.reason, outcome.peer.as_ref(), &outcome.result);
            self.shared().publish_outcome(outcome);
        }
        self.shared().wake_senders();
        if !self.flags.get(END_PUBLISHED) && self.flags.get(CLOSED) && self.conn.close_done() {
            self.flags.set(END_PUBLISHED, true);
            let shared = self.shared().clone();
            let mut inc = shared.inc();
            inc.ended = true;
            let w = inc.receiver.take();
            drop(inc);
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    /// Settles the session when the driver goes away (its runtime shut down, say): the
    /// connection is dropped, so that nothing waits forever for an outcome or for the end of
    /// the incoming stream.
    fn settle(&mut self) {
        self.conn.terminate();
        self.flags.set(CLOSED, true);
        self.publish();
        // The task is gone: nothing may hold it alive through the session's state.
        self.shared().out().driver = None;
    }
}

impl<S> Drop for Driver<S> {
    fn drop(&mut self) {
        self.settle();
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Driver<S> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_run(cx)
    }
}

#[cfg(test)]
mod tests;
