//! The connection: one owner for everything a WebSocket connection decides once the handshake
//! is done. Deterministic: bytes, commands and the time go in; events, bytes and a deadline
//! come out. Nothing here reads a clock or touches I/O.
//!
//! It owns the phase and the close handshake with its timer, keepalive and the pong deadline,
//! protocol violations found behind messages not yet delivered, the decoder, reassembly and the
//! incoming extensions. What the application sends waits in an [`Outbox`], which the
//! connection reads through a [`Queue`]: the outbox itself when the connection owns it, or a
//! lock around one that the application's senders share (the `wsc` crate's sessions).
//!
//! How to drive it is in the crate docs (`lib.rs`), where users read it.

mod receive;
#[cfg(test)]
mod tests;
mod transmit;

use std::collections::VecDeque;
use std::ops::DerefMut;
use std::time::Duration;

use bytes::Bytes;

use crate::assemble::Assembler;
use crate::close::{CloseCode, CloseReason};
use crate::decode::{Decoder, Limits, Role};
use crate::entropy::Entropy;
use crate::error::ProtocolError;
use crate::extension::Extension;
use crate::frame::Frame;
use crate::keepalive::{Keepalive, nanos};
use crate::message::Message;
use crate::outbox::Outbox;
use crate::run::Run;

use transmit::Transmit;

/// Access to the [`Outbox`] a [`Connection`] transmits from.
///
/// An `Outbox` is its own queue; the `wsc` crate implements this for a lock around one shared
/// with the application's senders.
pub trait Queue {
    /// The outbox's source of mask keys.
    type Entropy: Entropy + Default;
    /// Exclusive access to the outbox while it lives.
    type Guard<'a>: DerefMut<Target = Outbox<Self::Entropy>>
    where
        Self: 'a;
    /// The outbox.
    fn lock(&mut self) -> Self::Guard<'_>;
    /// Whether anyone may have changed the outbox since the connection last locked it. The
    /// connection skips looking while it is false and its last look found nothing to do;
    /// `true` (the default) is always correct.
    fn touched(&mut self) -> bool {
        true
    }
}

impl<E: Entropy + Default> Queue for Outbox<E> {
    type Entropy = E;
    type Guard<'a>
        = &'a mut Outbox<E>
    where
        E: 'a;
    fn lock(&mut self) -> &mut Outbox<E> {
        self
    }
}

/// How a connection behaves. [`Config::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Client (masks, refuses masked frames; waits for the server to close TCP) or server.
    pub role: Role,
    /// No automation (Ktor's raw session): every frame is delivered as it arrived, Pings are
    /// not answered, no keepalive, a peer's Close is not echoed, nothing is reassembled.
    /// Frames are still checked (RFC 6455 §5), and a violation still fails the connection.
    pub raw: bool,
    /// Frame and message size limits (1009 past them).
    pub limits: Limits,
    /// How long the close handshake may take, from the moment a close is asked for (and how
    /// long a closed connection waits for the transport to close).
    pub close_timeout: Duration,
    /// The keepalive ping interval (`None`: off).
    pub ping_interval: Option<Duration>,
    /// How long a Pong may take (`None`: twice the interval).
    pub ping_timeout: Option<Duration>,
    /// Deliver each data frame as a piece of its message ([`Event::Chunk`]) instead of
    /// reassembling; a frame over [`MAX_PIECE`](crate::decode::MAX_PIECE) or `max_frame_size`
    /// (whichever is smaller) comes in pieces of that size as it arrives, so no frame is held
    /// whole beyond that, and `max_message_size` bounds only what one compressed piece inflates
    /// to.
    pub stream_incoming: bool,
    /// Also report Pings and Pongs ([`Event::Ping`], [`Event::Pong`]) in a default connection.
    pub report_control: bool,
    /// Whether a client masks its frames. Default `true`: RFC 6455 §5.3 requires it; turn it
    /// off only to test how a server treats unmasked frames. A server never masks, whatever
    /// this says. The connection sets the outbox's masking from this and the role, and
    /// nothing else decides it.
    pub masking: bool,
}

impl Config {
    /// The defaults for `role`: automation on, [`Limits::default`], a 5 s close timeout, no
    /// keepalive, messages reassembled, control frames not reported.
    pub fn new(role: Role) -> Self {
        Config {
            role,
            raw: false,
            limits: Limits::default(),
            close_timeout: Duration::from_secs(5),
            ping_interval: None,
            ping_timeout: None,
            stream_incoming: false,
            report_control: false,
            masking: true,
        }
    }
}

/// What the connection hands out, in the order the peer sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message (default connections).
    Message(Message),
    /// Several small whole messages from one read (cut out one by one; a raw reader reads
    /// them as frames).
    Run(Run),
    /// A frame as it arrived (raw connections).
    Frame(Frame),
    /// A piece of a message ([`Config::stream_incoming`]).
    Chunk {
        /// Whether the message is text.
        text: bool,
        /// Its first piece.
        first: bool,
        /// Its last piece.
        fin: bool,
        /// The piece, inflated and (for text) checked as UTF-8 so far.
        data: Bytes,
    },
    /// A Ping arrived (default connections with [`Config::report_control`]; answered already).
    Ping(Bytes),
    /// A Pong arrived (default connections with [`Config::report_control`]).
    Pong(Bytes),
    /// The connection ended: [`Connection::outcome`] says how. Nothing follows.
    Closed,
}

impl Event {
    /// Payload bytes the event holds (for a reader's byte bound).
    pub fn len(&self) -> usize {
        match self {
            Event::Message(m) => m.len(),
            Event::Run(r) => r.byte_len(),
            Event::Frame(f) => f.payload.len(),
            Event::Chunk { data, .. } | Event::Ping(data) | Event::Pong(data) => data.len(),
            Event::Closed => 0,
        }
    }

    /// Whether the event holds no payload bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages (or frames) the event holds (for a reader's count bound): a run counts each.
    pub fn count(&self) -> usize {
        match self {
            Event::Run(r) => r.len(),
            _ => 1,
        }
    }
}

/// Why a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The peer broke RFC 6455 (or a negotiated extension); a Close with its code was sent.
    Protocol(ProtocolError),
    /// No Pong echoed our Ping within the ping timeout; a Close 1011 "Ping timeout" was sent.
    PingTimeout,
    /// The peer did not answer our Close within the close timeout.
    CloseTimeout,
    /// The transport ended without a Close frame (1006).
    Eof,
    /// The transport failed (the caller knows how).
    Transport,
}

impl Failure {
    /// The close code the failure is reported with (and sent with, where it may be sent).
    pub fn close_code(&self) -> CloseCode {
        match self {
            Failure::Protocol(e) => e.close_code(),
            Failure::PingTimeout => CloseCode::INTERNAL_ERROR,
            Failure::CloseTimeout | Failure::Eof | Failure::Transport => {
                CloseCode::CLOSED_ABNORMALLY
            }
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The close reason in Ktor's sense: the peer's if it closed first (an empty Close reads
    /// as 1000), ours if we did, 1006 if the transport ended without a Close, the failure's
    /// code otherwise.
    pub reason: CloseReason,
    /// The peer's Close reason, if its Close arrived with one.
    pub peer: Option<CloseReason>,
    /// Why it failed; `None` after a completed close handshake (or [`Connection::terminate`]).
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Messages flow both ways.
    Open,
    /// Our Close was asked for (it goes out after the data queued before it); the peer's has
    /// not arrived.
    Closing,
    /// A raw connection got the peer's Close first: the application answers it.
    PeerClosed,
    /// The close handshake is over, or the connection failed: what is left goes out, then the
    /// transport closes (a client waits for the server to close it, RFC 6455 §7.1.1).
    Draining,
    /// Nothing more to do: close the transport.
    Finished,
}

/// Reassembly and the extensions incoming messages pass through, made on the first message
/// that needs either.
#[derive(Debug)]
struct Inbound {
    assembler: Assembler,
    extensions: Box<[Box<dyn Extension>]>,
}

/// The events not yet taken. Boxed, and given back by [`Connection::trim`]: every connection
/// holds this, and a quiet one has none.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
struct Events(Option<Box<VecDeque<Event>>>);

impl Events {
    fn push(&mut self, e: Event) {
        self.0.get_or_insert_with(Box::default).push_back(e);
    }
    fn pop(&mut self) -> Option<Event> {
        self.0.as_mut()?.pop_front()
    }
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A violation found behind events not yet taken.
#[derive(Debug)]
struct Deferred {
    error: ProtocolError,
    /// Events queued ahead of it that are still to be taken.
    before: usize,
}

/// What only a closing or failing connection needs, kept out of line.
#[derive(Debug, Default)]
struct Ending {
    /// When the close timer fires.
    deadline: Option<Duration>,
    /// Our Close once asked for (`None` inside: empty).
    ours: Option<Option<CloseReason>>,
    /// The peer's Close once it arrived (`None` inside: empty).
    peer: Option<Option<CloseReason>>,
    deferred: Option<Deferred>,
    outcome: Option<Outcome>,
    eof: bool,
}

/// One WebSocket connection's protocol state; the [crate docs](crate#driving-a-connection)
/// say how to drive it.
pub struct Connection<Q: Queue> {
    queue: Q,
    decoder: Decoder,
    keepalive: Keepalive,
    events: Events,
    inbound: Option<Box<Inbound>>,
    tx: Transmit,
    ending: Option<Box<Ending>>,
    /// Nanoseconds (as `now`: every connection holds these fields, so they are kept small).
    close_timeout: u64,
    phase: Phase,
    role: Role,
    raw: bool,
    streaming: bool,
    report_control: bool,
    input_paused: bool,
    /// The last data frame was large: its successor's header is best read on its own.
    large_frames: bool,
    /// The latest time the caller passed (for a failure that `poll_event` sets off).
    now: u64,
}

impl<Q: Queue> std::fmt::Debug for Connection<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("raw", &self.raw)
            .field("phase", &self.phase)
            .field("events", &self.events.len())
            .finish()
    }
}

impl<Q: Queue> Connection<Q> {
    /// A connection whose handshake completed at `now`, transmitting from `queue`, with the
    /// negotiated `extensions` for incoming messages (the outgoing ones belong with whoever
    /// sends; see [`crate::extension::encode_message`]).
    pub fn new(
        config: Config,
        mut queue: Q,
        extensions: Vec<Box<dyn Extension>>,
        now: Duration,
    ) -> Self {
        let mut decoder = Decoder::new(config.role, config.limits);
        decoder.set_allowed_rsv(extensions.iter().fold(0, |a, e| a | e.rsv()));
        queue
            .lock()
            .set_masking(config.role == Role::Client && config.masking);
        let mut c = Connection {
            queue,
            decoder,
            keepalive: Keepalive::off(),
            events: Events::default(),
            inbound: (!extensions.is_empty()).then(|| {
                Box::new(Inbound {
                    assembler: Assembler::new(config.limits.max_message_size),
                    extensions: extensions.into_boxed_slice(),
                })
            }),
            tx: Transmit::default(),
            ending: None,
            close_timeout: nanos(config.close_timeout),
            phase: Phase::Open,
            role: config.role,
            raw: config.raw,
            streaming: config.stream_incoming && !config.raw,
            report_control: config.report_control,
            input_paused: false,
            large_frames: false,
            now: nanos(now),
        };
        c.set_limits(config.limits);
        c.set_keepalive(config.ping_interval, config.ping_timeout, now);
        c
    }

    /// The queue the connection transmits from.
    pub fn queue(&mut self) -> &mut Q {
        &mut self.queue
    }

    // ---- settings ----

    /// Changes the size limits, from the next frame on.
    pub fn set_limits(&mut self, limits: Limits) {
        // A streamed message is never held whole, nor is a large frame of it: it is handed out
        // piece by piece as it arrives.
        self.decoder.set_limits(limits);
        self.decoder.set_pieces(self.streaming);
        if let Some(i) = self.inbound.as_mut() {
            i.assembler.set_max_message_size(limits.max_message_size);
        }
    }

    /// Changes the keepalive: the schedule restarts from `now` (a raw connection never pings).
    pub fn set_keepalive(
        &mut self,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        now: Duration,
    ) {
        self.keepalive = if self.raw || self.phase != Phase::Open {
            Keepalive::off()
        } else {
            Keepalive::new(interval, timeout, now)
        };
    }

    /// Changes the close timeout, for timers started from now on.
    pub fn set_close_timeout(&mut self, timeout: Duration) {
        self.close_timeout = nanos(timeout);
    }

    /// Says that the caller stopped reading the transport at `now` (its reader is slow): a
    /// Pong may then be waiting unread, so a ping deadline that passes starts over.
    pub fn pause_input(&mut self) {
        self.input_paused = true;
    }

    /// Says that the caller reads the transport again.
    pub fn resume_input(&mut self) {
        self.input_paused = false;
    }

    // ---- commands ----

    /// Queues a data message (compressing connections transform it first; see
    /// [`crate::extension::encode_message`]).
    pub fn send(&mut self, message: &Message) -> Result<(), crate::outbox::Refused> {
        let payload = crate::outbox::Payload::Owned(message.bytes());
        self.queue
            .lock()
            .send_data(message.opcode(), 0, payload, None)
            .map(drop)
    }

    /// Queues a frame exactly as given; a Close frame starts the closing handshake.
    pub fn send_frame(
        &mut self,
        frame: &Frame,
        now: Duration,
    ) -> Result<(), crate::outbox::Refused> {
        let r = self.queue.lock().send_frame(frame, now).map(drop);
        self.tick(now);
        self.look_at_queue();
        r
    }

    /// Queues a Ping with `payload` (at most 125 bytes).
    pub fn ping(
        &mut self,
        payload: impl Into<Bytes>,
        now: Duration,
    ) -> Result<(), crate::outbox::Refused> {
        self.send_frame(&Frame::ping(payload), now)
    }

    /// Starts the closing handshake with `reason` (`None`: an empty Close): the Close goes out
    /// after the data already queued, and the peer has until `now` plus the close timeout to
    /// answer. Does nothing if a close is under way or the connection ended.
    pub fn close(&mut self, reason: Option<CloseReason>, now: Duration) {
        self.queue.lock().request_close(reason, now);
        self.tick(now);
        self.look_at_queue();
    }

    /// Drops the connection at once, without a closing handshake.
    pub fn terminate(&mut self) {
        self.queue.lock().terminate();
        self.look_at_queue();
    }

    // ---- state ----

    /// Whether the caller should read the transport (and feed it to
    /// [`handle_read`](Self::handle_read)): not after a violation (nothing after it is worth
    /// reading), and not once finished.
    pub fn wants_read(&self) -> bool {
        self.phase != Phase::Finished && self.ending.as_ref().is_none_or(|e| e.deferred.is_none())
    }

    /// Bytes the frame in progress still needs beyond `buffered` (what the read buffer holds),
    /// at least 1 while a frame is incomplete; 0 when the next frame has not begun. Reading
    /// exactly that much lets a large payload land in place.
    pub fn read_hint(&self) -> usize {
        self.decoder.wanted()
    }

    /// Whether the last data frame was large: the next header is best read on its own, so
    /// that the next payload lands in place too.
    pub fn large_frames(&self) -> bool {
        self.large_frames
    }

    /// Whether the connection is over and the transport should be closed.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Whether the close handshake has ended or the connection failed (the outcome is known);
    /// the transport may still be draining.
    pub fn is_closed(&self) -> bool {
        self.outcome().is_some()
    }

    /// How the connection ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.ending.as_ref()?.outcome.as_ref()
    }

    /// Whether [`poll_event`](Self::poll_event) has something to give (an event, or a pending
    /// violation's failure).
    pub fn has_events(&self) -> bool {
        !self.events.is_empty() || self.failure_pending()
    }

    /// Whether a violation is waiting behind events not yet taken: the first
    /// [`poll_event`](Self::poll_event) call after they have all been taken fails the
    /// connection (and so does the close timeout, counted from when the violation arrived). A
    /// caller that hands events on to an application can hold that call until the application
    /// has taken them, so that its replies to them go out ahead of the Close.
    pub fn failure_pending(&self) -> bool {
        self.ending.as_ref().is_some_and(|e| e.deferred.is_some())
    }

    /// Gives back memory a quiet connection does not need (the event queue, once empty);
    /// call it when the connection has been quiet a while. Nothing else changes.
    pub fn trim(&mut self) {
        if self.events.is_empty() {
            self.events = Events::default();
        }
    }

    // ---- events ----

    /// The next event, in the order the peer sent it.
    ///
    /// A violation found behind other events fails the connection on the first call after
    /// those events have been taken (see [`failure_pending`](Self::failure_pending)).
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(d) = self.ending.as_mut().and_then(|e| e.deferred.as_mut()) {
            if d.before == 0 {
                self.fail_deferred();
            } else {
                d.before -= 1;
            }
        }
        self.events.pop()
    }

    // ---- timers ----

    /// When [`handle_timeout`](Self::handle_timeout) is next due, if anything is scheduled.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let close = self.ending.as_ref().and_then(|e| e.deadline);
        let ping = if self.phase == Phase::Open {
            self.keepalive.deadline()
        } else {
            None
        };
        match (close, ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`: keepalive pings and the ping timeout, the close timeout,
    /// a violation that waited long enough for the events before it to be taken.
    pub fn handle_timeout(&mut self, now: Duration) {
        if let Some(deadline) = self.ending.as_ref().and_then(|e| e.deadline)
            && now >= deadline
        {
            self.on_close_timer(now);
        }
        if self.phase == Phase::Open {
            match self.keepalive.on_timeout(now, self.input_paused) {
                crate::keepalive::Due::Nothing => {}
                crate::keepalive::Due::Ping => {
                    let mut payload = [0u8; 8];
                    self.queue.lock().fill_random(&mut payload);
                    self.tx.ping = true;
                    self.keepalive.sent(payload, now);
                }
                crate::keepalive::Due::TimedOut => {
                    self.fail(Failure::PingTimeout, "Ping timeout", now);
                }
            }
        }
    }

    fn on_close_timer(&mut self, now: Duration) {
        let Some(e) = self.ending.as_mut() else {
            return;
        };
        e.deadline = None;
        if let Some(d) = e.deferred.take()
            && e.outcome.is_none()
        {
            // The application did not take what came before the violation in time.
            self.fail_protocol(d.error, now);
            return;
        }
        match self.phase {
            Phase::Closing => {
                // The peer never answered our Close: give up on it and on what it will not
                // read.
                let ours = e.ours.clone().flatten().unwrap_or_else(CloseReason::normal);
                let peer = e.peer.clone().flatten();
                self.set_outcome(Outcome {
                    reason: ours,
                    peer,
                    failure: Some(Failure::CloseTimeout),
                });
                self.finish();
            }
            Phase::Draining => self.finish(),
            _ => {}
        }
    }

    // ---- transport ----

    /// The transport's read side ended.
    pub fn handle_eof(&mut self, now: Duration) {
        self.ending().eof = true;
        if let Some(d) = self.ending.as_mut().and_then(|e| e.deferred.take()) {
            self.fail_protocol(d.error, now);
        }
        if !self.is_closed() {
            self.set_outcome(Outcome {
                reason: CloseReason::truncated(
                    CloseCode::CLOSED_ABNORMALLY,
                    "connection closed without a Close frame",
                ),
                peer: None,
                failure: Some(Failure::Eof),
            });
            self.stop_sending_data();
            self.enter_draining(now);
        }
        self.maybe_finish();
    }

    /// The transport failed: nothing more can be sent or received.
    pub fn handle_transport_error(&mut self) {
        if !self.is_closed() {
            self.set_outcome(Outcome {
                reason: CloseReason::truncated(CloseCode::CLOSED_ABNORMALLY, ""),
                peer: self.ending.as_ref().and_then(|e| e.peer.clone().flatten()),
                failure: Some(Failure::Transport),
            });
        }
        self.finish();
    }

    // ---- internals shared by the halves ----

    fn ending(&mut self) -> &mut Ending {
        self.ending.get_or_insert_with(Box::default)
    }

    /// Decides how the connection ended and says so in the events. Only the first decision
    /// counts; the outcome is set before the event that announces it.
    fn set_outcome(&mut self, outcome: Outcome) {
        if self.is_closed() {
            return;
        }
        self.ending().outcome = Some(outcome);
        self.keepalive.stop();
        self.tx.ping = false;
        self.events.push(Event::Closed);
    }

    fn enter_draining(&mut self, now: Duration) {
        if matches!(self.phase, Phase::Draining | Phase::Finished) {
            return;
        }
        self.phase = Phase::Draining;
        self.keepalive.stop();
        let at = now.saturating_add(self.close_timeout());
        self.ending().deadline = Some(at);
    }

    /// Nothing more is taken from the senders (what they queued still goes out): the
    /// connection stops on its own (the peer closed, or it fails), and decides its outcome in
    /// the same call.
    fn stop_sending_data(&mut self) {
        let mut q = self.queue.lock();
        q.stop_taking();
        q.mark_ending();
    }

    /// The connection is over: the outbox is discarded, output not yet handed out dropped.
    fn finish(&mut self) {
        if self.phase == Phase::Finished {
            return;
        }
        self.phase = Phase::Finished;
        self.keepalive.stop();
        self.tx.drop_pending();
        if let Some(e) = self.ending.as_mut() {
            e.deadline = None;
            e.deferred = None;
        }
        self.queue.lock().stop();
        if !self.is_closed() {
            self.set_outcome(Outcome {
                reason: CloseReason::truncated(CloseCode::CLOSED_ABNORMALLY, "terminated"),
                peer: None,
                failure: None,
            });
        }
    }

    /// A draining connection finishes once everything is written and the transport is done:
    /// a server closes it at once; a client waits for the server to (RFC 6455 §7.1.1).
    fn maybe_finish(&mut self) {
        if self.phase == Phase::Draining
            && self.tx.idle()
            && !self.tx.close_pending()
            && (self.role == Role::Server || self.ending.as_ref().is_some_and(|e| e.eof))
        {
            let drained = {
                let out = self.queue.lock();
                out.is_empty() || out.is_stopped()
            };
            if drained {
                self.finish();
            }
        }
    }

    /// Fails the connection: a Close with the failure's code goes out after the data queued
    /// before it (unless a Close is already on its way), and the outcome says why.
    fn fail(&mut self, failure: Failure, text: &str, now: Duration) {
        if self.is_closed() {
            return;
        }
        // The first failure decides; a violation still waiting is moot now.
        if let Some(e) = self.ending.as_mut() {
            e.deferred = None;
        }
        let code = failure.close_code();
        let reason = CloseReason::truncated(code, text);
        if code.is_sendable() {
            let e = self.ending();
            if e.ours.is_none() {
                e.ours = Some(Some(reason.clone()));
                self.tx.queue_close(Some(&reason));
            }
        }
        self.stop_sending_data();
        let peer = self.ending.as_ref().and_then(|e| e.peer.clone().flatten());
        self.set_outcome(Outcome {
            reason,
            peer,
            failure: Some(failure),
        });
        self.enter_draining(now);
    }

    fn fail_protocol(&mut self, error: ProtocolError, now: Duration) {
        let text = error.to_string();
        self.fail(Failure::Protocol(error), &text, now);
    }

    /// A violation at the head of the events: the connection fails now.
    fn fail_deferred(&mut self) {
        if let Some(d) = self.ending.as_mut().and_then(|e| e.deferred.take()) {
            self.fail_protocol(d.error, Duration::from_nanos(self.now));
        }
    }

    /// Records the caller's time (it never goes back).
    fn close_timeout(&self) -> Duration {
        Duration::from_nanos(self.close_timeout)
    }

    fn tick(&mut self, now: Duration) {
        self.now = self.now.max(nanos(now));
    }

    /// The close handshake is over (both Close frames, ours going out after what was queued
    /// before it): the outcome is ours.
    fn complete_handshake(&mut self, now: Duration) {
        let e = self.ending();
        let ours = e.ours.clone().flatten().unwrap_or_else(CloseReason::normal);
        let peer = e.peer.clone().flatten();
        self.set_outcome(Outcome {
            reason: ours,
            peer,
            failure: None,
        });
        self.enter_draining(now);
    }
}

impl<E: Entropy + Default> Connection<Outbox<E>> {
    /// The outbox, for senders of a connection that owns it.
    pub fn outbox(&mut self) -> &mut Outbox<E> {
        &mut self.queue
    }
}
