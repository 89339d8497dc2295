//! The task that owns the socket once the handshake is done.
//!
//! It writes what senders queued, reads and decodes frames, delivers messages (default
//! sessions) or frames (raw sessions), answers pings, keeps the connection alive, and runs the
//! closing handshake. It is a hand-written poll loop, not a `select!`, so that reading,
//! writing and timers make progress together without cancelling one another, and so that a
//! whole read's worth of frames is decoded and delivered under a single lock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep, sleep_until};
use wsc_proto::{
    Assembler, CloseCode, CloseReason, Decoder, Extension, Frame, Limits, OpCode, Role,
    encode_frame,
};

use super::shared::{Item, Out, OutState, Outcome, Seg, Shared};
use crate::error::{Error, TimeoutKind};

const READ_CHUNK: usize = 64 * 1024;
/// Below this many unwritten bytes, the driver appends the senders' queue to its own.
const COALESCE: usize = 64 * 1024;
/// Large payloads are masked into the write buffer up to this many bytes ahead of the socket.
/// Smaller pieces would stay in cache (masking into a reused 256 KiB buffer cost 29 µs per MiB,
/// into a fresh 1 MiB one 66, on this project's 2-core VM), but there a 256 KiB write cost so
/// much more system time per byte than a 1 MiB one that 1 MiB messages went out 30 % slower;
/// 1 MiB pieces measured level with masking into the queue.
const WRITE_CHUNK: usize = 1024 * 1024;
/// How long a connection must be quiet before its buffers are given back.
const TRIM_AFTER: Duration = Duration::from_secs(1);
/// Frames from this size on are read header first, then payload in place.
const LARGE_FRAME: usize = 16 * 1024;
/// What a read buffer for large frames is allocated at, at least: several frames share it.
const LARGE_BUFFER: usize = 256 * 1024;
/// At most this many read buffers are set aside for reuse (see [`Driver::make_room`]); fewer
/// when the incoming queue's byte capacity is covered with fewer.
const SPARES: usize = 16;
/// Below this much free room, the read buffer is grown before reading small frames.
const MIN_READ: usize = 4096;
/// The stack buffer an idle connection reads into before it has a read buffer.
const PROBE: usize = 512;
/// Work done in one poll before yielding to the scheduler.
const BUDGET: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Messages flow both ways.
    Open,
    /// We sent a Close; waiting for the peer's.
    CloseSent,
    /// The close handshake is over (or the session failed): write what is left, then wait
    /// for the server to close TCP (RFC 6455 §7.1.1), bounded by the close timeout.
    Draining,
}

enum Keepalive {
    Off,
    Idle,
    /// A ping with this (random) payload is out.
    Awaiting([u8; 8]),
}

pub(crate) struct Driver<S> {
    io: S,
    shared: Arc<Shared>,
    raw: bool,
    rbuf: BytesMut,
    /// Read buffers used before the current one, oldest first, kept while frames arrive:
    /// once the frames cut out of one are all dropped it can take the current one's place
    /// (see [`Driver::make_room`]). Made when a read buffer first runs out; dropped with the
    /// read buffer after a quiet second.
    #[allow(clippy::box_collection)] // boxed: the driver keeps to its size (see `size`)
    spares: Option<Box<std::collections::VecDeque<BytesMut>>>,
    wbuf: BytesMut,
    /// A large payload being written (kept, empty, between large payloads until trimmed).
    sending: Option<Box<Sending>>,
    /// Bytes were written since the socket was last flushed (and `written` published).
    unflushed: bool,
    /// The last look at the outgoing queue found nothing to do (see `take_outgoing`).
    out_settled: bool,
    written: u64,
    decoder: Decoder,
    /// Made on the first message that is not part of a run (at once when extensions were
    /// negotiated): an idle session holds none.
    inbound: Option<Box<Inbound>>,
    masking: bool,
    /// Items decoded from the current read, handed over to the receiver in one go.
    batch: std::collections::VecDeque<Item>,
    batch_bytes: usize,
    batch_count: u32,
    phase: Phase,
    read_eof: bool,
    /// The settings generation last applied (its low bits: equal means unchanged).
    generation: u32,
    keepalive: Keepalive,
    ping_timer: Option<Pin<Box<Sleep>>>,
    /// Hand incoming data frames on as chunks instead of reassembling.
    streaming: bool,
    /// The last data frame was large: read the next header on its own.
    large_frames: bool,
    /// No read buffer is held (a new or quiet connection): reads probe with a stack buffer.
    /// A buffer that a frame used up to its last byte is not idle and is simply grown.
    idle: bool,
    /// Gives idle buffers back after a quiet second.
    trim_timer: Option<Pin<Box<Sleep>>>,
    /// Polls that moved bytes, and the count when the trim timer was armed.
    /// (16 bits: wrapping exactly a multiple of 65,536 polls within a quiet second would only
    /// trim buffers early, which costs a reallocation.)
    activity: u16,
    activity_at_arm: u16,
    /// What only a closing or failing session needs; made when the first of it is.
    ending: Option<Box<Ending>>,
}

/// Reassembly of incoming messages and the extensions they pass through (only messages
/// that are not part of a run need either).
struct Inbound {
    assembler: Assembler,
    extensions: Box<[Box<dyn Extension>]>,
}

/// A large payload on its way out: masked into the write buffer a piece at a time (or written
/// straight from the sender's bytes when unmasked). Frames the driver makes meanwhile wait in
/// `after`: nothing may come between a frame's header and the end of its payload.
#[derive(Default)]
struct Sending {
    data: Bytes,
    key: Option<[u8; 4]>,
    /// Payload bytes already masked into the write buffer (or written, when unmasked).
    done: usize,
    after: BytesMut,
}

impl Sending {
    fn active(&self) -> bool {
        !self.data.is_empty()
    }

    /// The payload is all out: what waited behind it follows.
    fn finish(&mut self, wbuf: &mut BytesMut) {
        self.data = Bytes::new();
        self.done = 0;
        wbuf.extend_from_slice(&self.after);
        self.after.clear();
    }
}

/// Where a frame the driver makes goes: the end of the write buffer, or behind the large
/// payload being written.
fn tail<'a>(wbuf: &'a mut BytesMut, sending: &'a mut Option<Box<Sending>>) -> &'a mut BytesMut {
    match sending.as_deref_mut() {
        Some(s) if s.active() => &mut s.after,
        _ => wbuf,
    }
}

/// Moves everything the senders queued to `tail` (before a Close the driver sends), masking
/// large payloads whole.
fn take_all(tail: &mut BytesMut, out: &mut Out) {
    let segs = out.segs.take().map(|s| s.queue).unwrap_or_default();
    for seg in segs {
        match seg {
            Seg::Bytes(b) => tail.extend_from_slice(&b),
            Seg::Large(l) => encode_frame(tail, l.opcode, l.fin, l.rsv, &l.data, l.key),
        }
    }
    tail.extend_from_slice(&out.buf);
    out.buf.clear();
    out.wake_waiters();
}

/// Takes queued frames into `wbuf` while it has room and no large payload waits to be masked
/// (that is [`Driver::fill`]'s work, outside the lock); `true` if it took any.
fn take_while_room(wbuf: &mut BytesMut, sending: &mut Option<Box<Sending>>, out: &mut Out) -> bool {
    let mut took = false;
    while wbuf.len() < WRITE_CHUNK
        && !sending.as_deref().is_some_and(Sending::active)
        && take_queued(wbuf, sending, out)
    {
        took = true;
    }
    took
}

/// Takes the next entry of the senders' queue into the write buffer, when ours is (nearly)
/// written: the queue they see is what bounds memory. Small queues are appended to our tail
/// (one write for both); a large one waits for ours to drain and is then swapped in whole,
/// never copied; a large payload starts being sent (its header goes in now, its payload is
/// masked in as the buffer drains). Whether anything was taken.
fn take_queued(wbuf: &mut BytesMut, sending: &mut Option<Box<Sending>>, out: &mut Out) -> bool {
    let fits = |wbuf: &BytesMut, len: usize| wbuf.len() < COALESCE && len <= COALESCE;
    if let Some(segs) = out.segs.as_deref_mut()
        && let Some(front) = segs.queue.front_mut()
    {
        match front {
            Seg::Bytes(b) => {
                let n = b.len();
                if wbuf.is_empty() {
                    std::mem::swap(wbuf, b);
                } else if fits(wbuf, n) {
                    wbuf.extend_from_slice(b);
                } else {
                    return false;
                }
                segs.bytes -= n;
            }
            Seg::Large(l) => {
                if wbuf.len() >= WRITE_CHUNK {
                    return false;
                }
                segs.bytes -= l.wire_len();
                wsc_proto::encode_header(wbuf, l.opcode, l.fin, l.rsv, l.data.len(), l.key);
                let s = sending.get_or_insert_with(Box::default);
                s.data = std::mem::take(&mut l.data);
                s.key = l.key;
                s.done = 0;
            }
        }
        segs.queue.pop_front();
        return true;
    }
    if out.buf.is_empty() {
        return false;
    }
    if wbuf.is_empty() {
        std::mem::swap(wbuf, &mut out.buf);
    } else if fits(wbuf, out.buf.len()) {
        wbuf.extend_from_slice(&out.buf);
        out.buf.clear();
    } else {
        return false;
    }
    true
}
/// The close-time state of a driver, kept out of line: a session spends most of its life
/// without any of it, and the driver task stays smaller (tokio's task cell holds the driver).
#[derive(Default)]
struct Ending {
    /// The peer's Close once it arrived (with its reason, if it gave one).
    peer_closed: Option<Option<CloseReason>>,
    close_timer: Option<Pin<Box<Sleep>>>,
    /// A peer's violation found behind messages the application has not taken yet: the
    /// session fails once it has (so its replies to them go out first), or at the close timeout.
    deferred: Option<(Error, String)>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    pub(crate) fn new(
        io: S,
        shared: Arc<Shared>,
        leftover: BytesMut,
        raw: bool,
        extensions: Vec<Box<dyn Extension>>,
    ) -> Self {
        let s = &shared.settings;
        let limits = Limits {
            max_frame_size: s.max_frame_size.load(Ordering::Acquire),
            max_message_size: s.max_message_size.load(Ordering::Acquire),
        };
        let mut decoder = Decoder::new(shared.role, limits);
        decoder.set_allowed_rsv(extensions.iter().fold(0, |a, e| a | e.rsv()));
        let masking = s.masking.load(Ordering::Acquire);
        let has_leftover = !leftover.is_empty();
        // Nothing behind the 101: give the handshake's buffer back (idle sessions hold none).
        let leftover = if has_leftover {
            leftover
        } else {
            BytesMut::new()
        };
        let mut d = Driver {
            io,
            raw,
            rbuf: leftover,
            spares: None,
            wbuf: BytesMut::new(),
            sending: None,
            unflushed: false,
            out_settled: false,
            written: 0,
            decoder,
            inbound: (!extensions.is_empty()).then(|| {
                Box::new(Inbound {
                    assembler: Assembler::new(shared.max_message_size()),
                    extensions: extensions.into_boxed_slice(),
                })
            }),
            masking,
            batch: std::collections::VecDeque::new(),
            batch_bytes: 0,
            batch_count: 0,
            phase: Phase::Open,
            read_eof: false,
            generation: u32::MAX,
            keepalive: Keepalive::Off,
            ping_timer: None,
            ending: None,
            streaming: false,
            large_frames: false,
            idle: !has_leftover,
            trim_timer: None,
            activity: 0,
            activity_at_arm: 0,
            shared,
        };
        d.sync_settings();
        if has_leftover {
            // Frames that arrived with the 101 are the stream's first bytes.
            d.decode_all();
        }
        d
    }

    fn sync_settings(&mut self) {
        let s = &self.shared.settings;
        let g = s.generation.load(Ordering::Acquire) as u32;
        if g == self.generation {
            return;
        }
        self.generation = g;
        self.streaming = s.streaming.load(Ordering::Acquire) && !self.raw;
        let limits = Limits {
            max_frame_size: s.max_frame_size.load(Ordering::Acquire),
            max_message_size: s.max_message_size.load(Ordering::Acquire),
        };
        // A streamed message is never held whole: only frames (and inflated pieces) are bounded.
        let wire_message_limit = if self.streaming {
            usize::MAX
        } else {
            limits.max_message_size
        };
        self.decoder.set_limits(Limits {
            max_message_size: wire_message_limit,
            ..limits
        });
        if let Some(i) = self.inbound.as_mut() {
            i.assembler.set_max_message_size(limits.max_message_size);
        }
        self.masking = s.masking.load(Ordering::Acquire);
        match (self.raw, self.shared.ping_interval()) {
            (false, Some(every)) => {
                self.keepalive = Keepalive::Idle;
                self.arm_ping(Instant::now() + every);
            }
            _ => {
                self.keepalive = Keepalive::Off;
                self.ping_timer = None;
            }
        }
    }

    fn arm_ping(&mut self, at: Instant) {
        match self.ping_timer.as_mut() {
            Some(t) => t.as_mut().reset(at),
            None => self.ping_timer = Some(Box::pin(sleep_until(at))),
        }
    }

    fn arm_close(&mut self) {
        let at = Instant::now() + self.shared.close_timeout();
        let ending = self.ending();
        match ending.close_timer.as_mut() {
            Some(t) => t.as_mut().reset(at),
            None => ending.close_timer = Some(Box::pin(sleep_until(at))),
        }
    }

    /// A mask key from the session's generator (control frames are rare: a lock is fine).
    fn key(&mut self) -> Option<[u8; 4]> {
        self.masking.then(|| self.shared.out().keys().next_key())
    }

    fn control(&mut self, opcode: OpCode, payload: &[u8]) {
        let key = self.key();
        encode_frame(self.tail(), opcode, true, 0, payload, key);
    }

    /// Where a frame the driver makes goes: the end of the write buffer, or behind the large
    /// payload being written.
    fn tail(&mut self) -> &mut BytesMut {
        tail(&mut self.wbuf, &mut self.sending)
    }

    /// Whether anything is left to write.
    fn unwritten(&self) -> bool {
        !self.wbuf.is_empty() || self.sending.as_deref().is_some_and(Sending::active)
    }

    /// Gives up on writing what is left (the peer will not read it).
    fn drop_unwritten(&mut self) {
        self.wbuf.clear();
        self.sending = None;
    }

    /// Fills the write buffer up to `WRITE_CHUNK`: masks more of the large payload being sent,
    /// and, with `take` or once that payload is done, takes what the senders queued (not once
    /// the session is draining). `take_outgoing` has just taken when a poll starts, so the
    /// first fill of a poll leaves the senders' lock alone.
    fn fill(&mut self, mut take: bool) {
        loop {
            if let Some(s) = self.sending.as_deref_mut()
                && s.active()
            {
                // Unmasked payloads are written straight from the sender's bytes.
                let Some(key) = s.key else { return };
                let room = WRITE_CHUNK.saturating_sub(self.wbuf.len());
                if room == 0 {
                    return;
                }
                // A short last piece joins this one rather than being written on its own.
                let rest = s.data.len() - s.done;
                let n = if rest - rest.min(room) < WRITE_CHUNK / 2 {
                    rest
                } else {
                    room
                };
                wsc_proto::mask::extend_masked_at(
                    &mut self.wbuf,
                    &s.data[s.done..s.done + n],
                    key,
                    s.done,
                );
                s.done += n;
                if s.done < s.data.len() {
                    return;
                }
                s.finish(&mut self.wbuf);
                take = true;
            }
            if !take || self.wbuf.len() >= WRITE_CHUNK || self.phase == Phase::Draining {
                return;
            }
            let mut out = self.shared.out();
            if !take_while_room(&mut self.wbuf, &mut self.sending, &mut out) {
                return;
            }
            out.wake_waiters();
        }
    }

    /// Fails the session: sends a Close with the error's code when it is a protocol matter,
    /// then drains.
    fn fail(&mut self, error: Error, reason_text: &str) {
        if self.decided() && self.phase == Phase::Draining {
            return;
        }
        let code = error.close_code().unwrap_or(CloseCode::INTERNAL_ERROR);
        let reason = CloseReason::truncated(code, reason_text);
        let sendable = code.is_sendable() && !matches!(error, Error::Io(_));
        let already_sent_close = self.phase != Phase::Open;
        if sendable && !already_sent_close {
            self.control(OpCode::Close, &reason.to_payload());
        }
        self.close_out(error.clone());
        self.set_outcome(Outcome {
            reason,
            peer: self.peer_closed().cloned().flatten(),
            result: Err(error),
        });
        self.enter_draining();
    }

    fn enter_draining(&mut self) {
        if self.phase != Phase::Draining {
            self.phase = Phase::Draining;
            self.ping_timer = None;
            self.arm_close();
        }
    }

    /// Stops senders: further sends fail with `error`; what they queued is dropped unless it
    /// is already being written.
    fn close_out(&mut self, error: Error) {
        let mut out = self.shared.out();
        out.state = OutState::Closed;
        if out.closed_error.is_none() {
            out.closed_error = Some(Box::new(error));
        }
        out.wake_waiters();
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), Error> {
        if self.phase == Phase::Draining {
            return Ok(()); // after the close handshake nothing more is delivered
        }
        match frame.opcode {
            OpCode::Close => {
                let reason = frame.close_reason().map_err(Error::protocol)?;
                self.ending().peer_closed = Some(reason.clone());
                if self.raw {
                    self.push_item(Item::Frame(frame));
                }
                self.on_peer_close(reason);
            }
            _ if self.raw => self.push_item(Item::Frame(frame)),
            OpCode::Ping => {
                if self.phase == Phase::Open {
                    self.control(OpCode::Pong, &frame.payload);
                }
            }
            OpCode::Pong => {
                if let Keepalive::Awaiting(p) = self.keepalive
                    && frame.payload[..] == p[..]
                {
                    self.keepalive = Keepalive::Idle;
                    if let Some(every) = self.shared.ping_interval() {
                        self.arm_ping(Instant::now() + every);
                    }
                }
            }
            _ if self.streaming => {
                let i = self.inbound();
                let piece = i
                    .assembler
                    .push_chunk(frame, &mut i.extensions)
                    .map_err(Error::protocol)?;
                if let Some((text, first, fin, data)) = piece {
                    self.push_item(Item::Chunk {
                        text,
                        first,
                        fin,
                        data,
                    });
                }
            }
            _ => {
                let i = self.inbound();
                if let Some(m) = i
                    .assembler
                    .push(frame, &mut i.extensions)
                    .map_err(Error::protocol)?
                {
                    self.push_item(Item::Message(m));
                }
            }
        }
        Ok(())
    }

    fn on_peer_close(&mut self, reason: Option<CloseReason>) {
        match self.phase {
            Phase::Open if self.raw => {
                // A raw session replies to nothing: the caller sees the Close and answers it.
                let mut out = self.shared.out();
                if let OutState::Closing(ours) = out.state.clone() {
                    out.state = OutState::Closed;
                    drop(out);
                    self.finish_handshake(*ours, reason);
                }
            }
            Phase::Open => {
                // The peer closes first: send what is queued, then echo its code.
                let mut out = self.shared.out();
                take_all(tail(&mut self.wbuf, &mut self.sending), &mut out);
                let ours = match std::mem::replace(&mut out.state, OutState::Closed) {
                    OutState::Closing(r) => Some(r),
                    _ => None,
                };
                let shown = reason.clone().unwrap_or_else(CloseReason::normal);
                out.closed_error = Some(Box::new(Error::Closed(Some(shown.clone()))));
                out.wake_waiters();
                drop(out);
                match ours {
                    // Our own Close was queued already: it is the reply.
                    Some(r) => self.finish_handshake(*r, reason),
                    None => {
                        let echo = reason
                            .as_ref()
                            .map(|r| CloseReason::truncated(r.code(), r.reason()));
                        let payload = echo.map(|r| r.to_payload()).unwrap_or_default();
                        self.control(OpCode::Close, &payload);
                        self.set_outcome(Outcome {
                            reason: shown,
                            peer: reason,
                            result: Ok(()),
                        });
                        self.enter_draining();
                    }
                }
            }
            Phase::CloseSent => {
                let ours = match self.shared.out().state.clone() {
                    OutState::Closing(r) => *r,
                    _ => CloseReason::normal(),
                };
                self.finish_handshake(ours, reason);
            }
            Phase::Draining => {}
        }
    }

    fn finish_handshake(&mut self, ours: CloseReason, peer: Option<CloseReason>) {
        // Our Close may still be queued (behind what was sent before it): it goes out, though
        // the session now drains and takes nothing more.
        take_all(
            tail(&mut self.wbuf, &mut self.sending),
            &mut self.shared.out(),
        );
        self.close_out(Error::Closed(Some(ours.clone())));
        self.set_outcome(Outcome {
            reason: ours,
            peer,
            result: Ok(()),
        });
        self.enter_draining();
    }

    /// Registers the driver with the senders, takes what they queued as far as the write
    /// buffer has room (a large payload's masking is left to [`Self::fill`], outside the lock),
    /// and notices close, terminate and abandonment.
    fn take_outgoing(&mut self, cx: &mut Context<'_>) -> Option<bool> {
        // Nothing was left at the last look and no handle has locked the queue since: skip
        // the lock (callgrind: about 100 instructions per poll of a session that only
        // receives).
        let Some(mut out) = self.shared.out_if_touched(self.out_settled) else {
            return Some(false);
        };
        self.out_settled = false;
        // Senders wake this task; store the waker only when it changed.
        if !out.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            out.driver = Some(cx.waker().clone());
        }
        if out.terminate {
            return None;
        }
        let mut progress = false;
        if out.abandoned && out.state == OutState::Open && self.phase == Phase::Open {
            // Every handle is gone without a close: close normally.
            let r = CloseReason::normal();
            let key = self.masking.then(|| out.keys().next_key());
            let before = out.buf.len();
            encode_frame(&mut out.buf, OpCode::Close, true, 0, &r.to_payload(), key);
            out.queued += (out.buf.len() - before) as u64;
            out.state = OutState::Closing(Box::new(r));
        }
        if self.phase != Phase::Draining
            && take_while_room(&mut self.wbuf, &mut self.sending, &mut out)
        {
            out.wake_waiters();
            progress = true;
        }
        // Only the plain case settles: an open queue with nothing in it and nobody waiting.
        // Anything else is looked at again on every poll, as before. (The waker stored above
        // stays right while the look is skipped: the driver is always its own spawned task.)
        self.out_settled = out.is_empty()
            && out.state == OutState::Open
            && !out.abandoned
            && out.waiters.is_empty();
        if let OutState::Closing(ours) = out.state.clone()
            && self.phase == Phase::Open
        {
            self.phase = Phase::CloseSent;
            drop(out);
            if self.peer_closed().is_some() {
                // Raw session answering the peer's Close.
                let peer = self.peer_closed().cloned().flatten();
                self.finish_handshake(*ours, peer);
            } else {
                self.ping_timer = None;
                self.arm_close();
            }
            progress = true;
        }
        Some(progress)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let start = self.written;
        let mut take = false;
        loop {
            self.fill(take);
            take = true;
            // The write buffer first; once it is empty, an unmasked large payload straight
            // from the sender's bytes.
            let direct = self.wbuf.is_empty();
            let buf: &[u8] = if !direct {
                &self.wbuf
            } else if let Some(s) = self.sending.as_deref().filter(|s| s.active()) {
                &s.data[s.done..]
            } else {
                break;
            };
            match Pin::new(&mut self.io).poll_write(cx, buf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(Error::io(std::io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => {
                    self.written += n as u64;
                    if !direct {
                        self.wbuf.advance(n);
                    } else if let Some(s) = self.sending.as_deref_mut() {
                        s.done += n;
                        if s.done == s.data.len() {
                            s.finish(&mut self.wbuf);
                        }
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::io(e))),
                Poll::Pending => break,
            }
        }
        let mut publish = self.written != start;
        self.unflushed |= publish;
        let all_written = !self.unwritten();
        if all_written && self.unflushed {
            // A flushed socket: tell flush() waiters.
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::io(e))),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => self.unflushed = false,
            }
            publish = true;
        }
        // Nothing written and nothing to flush: the senders' lock is left alone.
        if publish {
            let mut out = self.shared.out();
            if out.written != self.written {
                out.written = self.written;
                out.wake_waiters();
            }
        }
        if all_written {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn room_to_read(&self, cx: &mut Context<'_>) -> bool {
        if self.has_deferred() {
            return false; // nothing after a violation is worth reading
        }
        if self.phase == Phase::Draining {
            return true;
        }
        let mut inc = self.shared.inc();
        if inc.count >= self.shared.incoming_capacity() || inc.bytes >= self.shared.incoming_bytes()
        {
            inc.driver = Some(cx.waker().clone());
            false
        } else {
            true
        }
    }

    /// Reads once and handles every complete frame. `Ready(true)` if bytes arrived.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let read = if self.idle && self.rbuf.capacity() == 0 {
            // No buffer while idle: probe with a small stack buffer and allocate only when
            // bytes arrive (an idle connection then costs no read buffer at all).
            let mut probe = [0u8; PROBE];
            let mut rb = tokio::io::ReadBuf::new(&mut probe);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    self.idle = false;
                    if got.len() == PROBE {
                        self.rbuf.reserve(READ_CHUNK);
                    }
                    self.rbuf.extend_from_slice(got);
                    Poll::Ready(Ok(got.len()))
                }
            }
        } else {
            // Reads of large frames end on frame boundaries as far as the sizes allow, so that
            // payloads land in place and are handed out without a copy (a read running into a
            // frame that does not fit would have its bytes copied when the buffer is
            // re-reserved). Small frames are read many at a time (reading just the rest of one
            // would make the next reads small too).
            let wanted = self.decoder.wanted();
            let len = self.rbuf.len();
            let large_pending = wanted > len && wanted >= LARGE_FRAME;
            // The next header rides along with the rest of a large frame, so that a stream of
            // large frames needs no separate header reads.
            let header = wsc_proto::header_len(usize::MAX, self.shared.role == Role::Server);
            let want = if large_pending {
                let rest = wanted - len;
                if self.rbuf.capacity() - len < rest + header {
                    self.make_room(rest + header, LARGE_BUFFER);
                }
                // Whole frames the size of this one that fit in the room after it are read
                // in the same call; if the next ones differ, at most one partial frame is
                // copied when the buffer runs out.
                let room = self.rbuf.capacity() - len - rest - header;
                rest + header + room / wanted * wanted
            } else if self.large_frames && len == 0 {
                if self.rbuf.capacity() < header {
                    self.rbuf.reserve(header);
                }
                header
            } else {
                // Reserve only when too little is left for a useful read (an idle connection
                // holds no buffer at all: see the probe above).
                if self.rbuf.capacity() - len < MIN_READ {
                    self.make_room(READ_CHUNK, READ_CHUNK);
                }
                READ_CHUNK
            };
            let mut limited = bytes::BufMut::limit(&mut self.rbuf, want);
            tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut limited)
        };
        let n = match read {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => {
                self.read_eof = true;
                if !self.decided() {
                    self.fail(Error::io(e), "");
                }
                return Poll::Ready(true);
            }
            Poll::Ready(Ok(n)) => n,
        };
        if n == 0 {
            self.read_eof = true;
            if !self.decided() {
                let e = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed without a Close frame",
                );
                self.close_out(Error::io(e));
                self.set_outcome(Outcome {
                    reason: CloseReason::truncated(
                        CloseCode::CLOSED_ABNORMALLY,
                        "Connection was closed without close frame",
                    ),
                    peer: None,
                    result: Err(Error::io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed without a Close frame",
                    ))),
                });
                self.enter_draining();
            }
            return Poll::Ready(true);
        }
        if self.phase == Phase::Draining {
            self.rbuf.clear();
            return Poll::Ready(true);
        }
        self.decode_all();
        Poll::Ready(true)
    }

    /// Makes room for `need` more bytes in the read buffer; a new buffer holds `fresh` bytes
    /// at least.
    ///
    /// The frames already cut out of the buffer are usually still alive (in the incoming
    /// queue, or held by the application), so it cannot simply be reused, and growing it
    /// meant a new allocation every few large frames or every 64 KiB of small ones: with
    /// glibc handing such blocks back and forth to the kernel, a run receiving 1 KiB messages
    /// took up to 45,000 minor page faults per 2 GiB. Instead a few buffers take turns: the
    /// current one is set aside, and the oldest one set aside takes its place if everything
    /// cut out of it has been dropped by now. Only the bytes of the frame in progress move
    /// across (for large frames normally just a header, as their reads end on frame
    /// boundaries). A buffer for large frames holds several: fewer allocations, and the
    /// frames after this one are read together when they are the same size. Frames too large
    /// to share a buffer keep no spares (their allocation is cheap beside their bytes, and
    /// spares would multiply what the session holds).
    fn make_room(&mut self, need: usize, fresh: usize) {
        let len = self.rbuf.len();
        // A whole buffer's worth: reclaiming asks for it too, or it would give just `need`
        // and the reads after it would be one frame each.
        let want = (len + need).max(fresh);
        if self.rbuf.try_reclaim(want - len) {
            return;
        }
        if len + need > LARGE_BUFFER / 2 {
            self.spares = None;
            self.rbuf.reserve(want - len);
            return;
        }
        let spares = self.spares.get_or_insert_with(Box::default);
        // The oldest, once free; a free one grown past the usual size is let go instead.
        let reused = if spares.front_mut().is_some_and(|b| b.try_reclaim(want)) {
            spares.pop_front().filter(|b| b.capacity() <= LARGE_BUFFER)
        } else {
            None
        };
        let mut next = reused.unwrap_or_else(|| BytesMut::with_capacity(want));
        next.extend_from_slice(&self.rbuf);
        let mut previous = std::mem::replace(&mut self.rbuf, next);
        previous.clear();
        // Enough buffers to cover what the incoming queue may hold, which is how far reading
        // can run ahead of the application.
        let keep = (self.shared.incoming_bytes() / fresh).clamp(1, SPARES);
        while spares.len() >= keep {
            spares.pop_front();
        }
        spares.push_back(previous);
    }

    /// Handles every complete frame in the read buffer.
    fn decode_all(&mut self) {
        // Runs of small whole messages skip the frame-by-frame path (and reassembly, which
        // they do not need); streamed sessions deliver frames as chunks instead.
        let runs = !self.streaming;
        loop {
            if runs && let Some(run) = self.decoder.decode_run(&mut self.rbuf) {
                self.large_frames = false;
                self.push_item(Item::Run(run));
            }
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(frame)) => {
                    if !frame.opcode.is_control() {
                        self.large_frames = frame.payload.len() >= LARGE_FRAME;
                    }
                    if let Err(e) = self.on_frame(frame) {
                        let text = match &e {
                            Error::Protocol { error, .. } => error.to_string(),
                            e => e.to_string(),
                        };
                        self.defer(e, text);
                        break;
                    }
                    if self.phase == Phase::Draining {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let text = e.to_string();
                    self.defer(Error::protocol(e), text);
                    break;
                }
            }
        }
        self.deliver();
    }

    fn defer(&mut self, error: Error, text: String) {
        self.ending().deferred = Some((error, text));
        self.arm_close();
    }

    /// Fails a deferred violation once the application has taken every message delivered
    /// before it and is waiting for more.
    fn settle_deferred(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.has_deferred() {
            return false;
        }
        let caught_up = {
            let inc = self.shared.inc();
            inc.items.is_empty() && inc.receiver.is_some()
        } && self.batch.is_empty();
        if caught_up {
            self.fail_deferred(cx);
        }
        caught_up
    }

    fn fail_deferred(&mut self, cx: &mut Context<'_>) {
        if let Some((e, text)) = self.ending.as_mut().and_then(|e| e.deferred.take()) {
            // What the application sent in reply goes out before the Close.
            let _ = self.take_outgoing(cx);
            let mut out = self.shared.out();
            take_all(tail(&mut self.wbuf, &mut self.sending), &mut out);
            drop(out);
            self.fail(e, &text);
        }
    }

    fn inbound(&mut self) -> &mut Inbound {
        let max = self.shared.max_message_size();
        self.inbound.get_or_insert_with(|| {
            Box::new(Inbound {
                assembler: Assembler::new(max),
                extensions: Box::default(),
            })
        })
    }

    fn push_item(&mut self, item: Item) {
        self.batch_bytes += item.len();
        self.batch_count += item.count() as u32;
        self.batch.push_back(item);
    }

    fn deliver(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut inc = self.shared.inc();
        inc.bytes += std::mem::take(&mut self.batch_bytes);
        inc.count += std::mem::take(&mut self.batch_count) as usize;
        if inc.items.is_empty() {
            // The receiver took everything: hand the batch over whole, no copying.
            std::mem::swap(&mut inc.items, &mut self.batch);
        } else {
            inc.items.extend(self.batch.drain(..));
        }
        if let Some(w) = inc.receiver.take() {
            drop(inc);
            w.wake();
        }
    }

    fn poll_timers(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        if let Some(e) = self.ending.as_mut()
            && let Some(t) = e.close_timer.as_mut()
            && t.as_mut().poll(cx).is_ready()
        {
            e.close_timer = None;
            progress = true;
            if self.has_deferred() {
                self.fail_deferred(cx);
                return progress;
            }
            match self.phase {
                Phase::CloseSent => {
                    // The peer never answered our Close.
                    let ours = match self.shared.out().state.clone() {
                        OutState::Closing(r) => *r,
                        _ => CloseReason::normal(),
                    };
                    self.close_out(Error::Timeout(TimeoutKind::Close));
                    self.set_outcome(Outcome {
                        reason: ours,
                        peer: None,
                        result: Err(Error::Timeout(TimeoutKind::Close)),
                    });
                    self.phase = Phase::Draining;
                    // Give up on the TCP close, and on bytes the peer will not read.
                    self.read_eof = true;
                    self.drop_unwritten();
                }
                _ => {
                    self.read_eof = true;
                    self.drop_unwritten();
                }
            }
        }
        if let Some(t) = self.ping_timer.as_mut()
            && t.as_mut().poll(cx).is_ready()
        {
            progress = true;
            match self.keepalive {
                Keepalive::Off => self.ping_timer = None,
                Keepalive::Idle => {
                    let mut p = [0u8; 8];
                    wsc_proto::Entropy::fill(self.shared.out().keys().source(), &mut p);
                    self.control(OpCode::Ping, &p);
                    self.keepalive = Keepalive::Awaiting(p);
                    let timeout = self
                        .shared
                        .ping_timeout()
                        .unwrap_or(Duration::from_secs(30));
                    self.arm_ping(Instant::now() + timeout);
                }
                Keepalive::Awaiting(_) => {
                    let paused = self.shared.inc().count >= self.shared.incoming_capacity();
                    if paused {
                        // We stopped reading because the application is slow; the pong
                        // may be sitting unread. Wait another round.
                        let timeout = self
                            .shared
                            .ping_timeout()
                            .unwrap_or(Duration::from_secs(30));
                        self.arm_ping(Instant::now() + timeout);
                    } else {
                        self.fail(Error::Timeout(TimeoutKind::Ping), "Ping timeout");
                    }
                }
            }
        }
        progress
    }

    /// Arms the trim timer if buffers hold memory while nothing is in them.
    fn maybe_arm_trim(&mut self, cx: &mut Context<'_>) {
        let idle_buffers = (self.rbuf.is_empty() && self.rbuf.capacity() > 0)
            || (self.wbuf.is_empty() && self.wbuf.capacity() > 0)
            || self.sending.as_deref().is_some_and(|s| !s.active());
        if idle_buffers && self.trim_timer.is_none() && self.phase != Phase::Draining {
            self.activity_at_arm = self.activity;
            let t = self
                .trim_timer
                .insert(Box::pin(tokio::time::sleep(TRIM_AFTER)));
            // Registered now, so that it wakes this task; see `poll_trim`.
            let _ = t.as_mut().poll(cx);
        }
    }

    /// After a quiet `TRIM_AFTER`, frees the empty read and write buffers (the senders' too).
    fn poll_trim(&mut self, cx: &mut Context<'_>) {
        let Some(t) = self.trim_timer.as_mut() else {
            return;
        };
        // The timer was polled when it was armed (or reset), with this task's waker, which
        // never changes (the driver is always a spawned task): it needs polling again only once
        // it has fired. Polling it on every quiet return cost about 55 instructions per 64 KiB
        // message received (callgrind).
        if !t.is_elapsed() || t.as_mut().poll(cx).is_pending() {
            return;
        }
        if self.activity != self.activity_at_arm {
            self.activity_at_arm = self.activity;
            t.as_mut().reset(Instant::now() + TRIM_AFTER);
            let _ = t.as_mut().poll(cx);
            return;
        }
        self.trim_timer = None;
        self.spares = None;
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
            self.idle = true;
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        if self.sending.as_deref().is_some_and(|s| !s.active()) {
            self.sending = None;
        }
        let mut out = self.shared.out();
        if out.buf.is_empty() {
            out.buf = BytesMut::new();
        }
        if out.segs.as_ref().is_some_and(|s| s.queue.is_empty()) {
            out.segs = None;
        }
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..BUDGET {
            self.sync_settings();
            let Some(mut progress) = self.take_outgoing(cx) else {
                // terminate(): drop the connection at once.
                self.publish();
                return Poll::Ready(());
            };
            progress |= self.settle_deferred(cx);
            let written_before = self.written;
            let wrote = self.poll_write(cx);
            // Bytes written are progress: senders may have queued more meanwhile without
            // waking us (they wake the driver only when their queue was empty).
            progress |= self.written != written_before;
            match wrote {
                Poll::Ready(Err(e)) => {
                    self.drop_unwritten();
                    self.read_eof = true;
                    if !self.decided() {
                        self.fail(e, "");
                    }
                    progress = true;
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
            if !self.read_eof
                && self.room_to_read(cx)
                && let Poll::Ready(true) = self.poll_read(cx)
            {
                progress = true;
            }
            progress |= self.poll_timers(cx);
            // A client waits for the server to close TCP (RFC 6455 §7.1.1); a server closes it.
            if self.phase == Phase::Draining
                && !self.unwritten()
                && (self.read_eof || self.shared.role == Role::Server)
            {
                self.publish();
                return Poll::Ready(());
            }
            if !progress {
                self.poll_trim(cx);
                self.maybe_arm_trim(cx);
                return Poll::Pending;
            }
            self.activity = self.activity.wrapping_add(1);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S> Driver<S> {
    fn ending(&mut self) -> &mut Ending {
        self.ending.get_or_insert_with(Box::default)
    }

    /// Whether the session's outcome is decided (the driver alone decides it).
    fn decided(&self) -> bool {
        self.shared.has_ended()
    }

    fn peer_closed(&self) -> Option<&Option<CloseReason>> {
        self.ending.as_ref()?.peer_closed.as_ref()
    }

    fn has_deferred(&self) -> bool {
        self.ending.as_ref().is_some_and(|e| e.deferred.is_some())
    }

    /// Decides how the session ended and tells the handles at once; the driver may still
    /// drain the connection afterwards. Only the first decision counts.
    fn set_outcome(&mut self, outcome: Outcome) {
        if self.decided() {
            return;
        }
        {
            let mut inc = self.shared.inc();
            inc.end = Some(outcome.result.clone().map_err(Box::new));
            if let Some(w) = inc.receiver.take() {
                w.wake();
            }
        }
        self.shared.publish_outcome(outcome);
    }

    fn publish(&mut self) {
        if !self.decided() {
            self.set_outcome(Outcome {
                reason: CloseReason::truncated(CloseCode::CLOSED_ABNORMALLY, "terminated"),
                peer: None,
                result: Ok(()),
            });
        }
        let reason = self.shared.outcome().map(|o| o.reason);
        {
            let mut out = self.shared.out();
            out.state = OutState::Closed;
            if out.closed_error.is_none() {
                out.closed_error = Some(Box::new(Error::Closed(reason)));
            }
            out.discard();
            out.wake_waiters();
        }
    }
}

/// A driver dropped before the session ended (its runtime shut down, say) still settles it, so
/// that nothing waits forever for an outcome.
impl<S> Drop for Driver<S> {
    fn drop(&mut self) {
        self.publish();
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Driver<S> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        ready!(this.poll_run(cx));
        Poll::Ready(())
    }
}

#[cfg(test)]
mod size {
    /// Every session holds these; growing them grows each idle connection. The driver is
    /// what tokio's task cell holds: at 280 bytes or less the cell is 384 bytes, not 512.
    #[test]
    fn per_session_state_stays_small() {
        use std::mem::size_of;
        assert!(size_of::<super::Driver<crate::transport::BoxIo>>() <= 280);
        assert!(size_of::<super::Shared>() <= 416);
        assert!(size_of::<super::super::Call>() <= 32);
        assert!(size_of::<super::super::Session>() <= 136);
    }
}
