//! The send queue: what the application has sent and the connection has not yet transmitted.
//!
//! Owns the rules of sending: a message is encoded and masked as it is queued (one pass, one
//! copy), an owned payload of [`LARGE_SEND`] bytes or more is kept as it is and masked only as
//! it is transmitted, the queue is bounded (a send that finds it full is refused with
//! [`Refused::Full`] and retried), a streamed message keeps other data out until it ends, and
//! nothing is queued after a Close has been asked for.
//!
//! It decides no protocol state. A close request is a command that the
//! [`Connection`](crate::Connection) carries out (it queues the Close after the data already
//! here and starts the close timer from the request's time); only the connection stops the
//! queue. The outbox is a type of its own so that senders can queue into it while the
//! connection is busy elsewhere: the `wsc` crate shares it between a session's handles and its
//! driver under a short lock, which the rules here keep short (no copy under it is longer than
//! [`LARGE_SEND`] bytes when the caller hands larger payloads over as [`Bytes`](bytes::Bytes)).

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::close::CloseReason;
use crate::entropy::{Entropy, MaskKeys};
use crate::frame::{Frame, OpCode, encode_frame, header_len};

/// Payloads from this size on, handed over as [`Bytes`](bytes::Bytes), are queued as they are
/// (no copy) and masked piece by piece as they are transmitted.
pub const LARGE_SEND: usize = 16 * 1024;

/// Why the outbox did not take a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its capacity: retry when the connection has taken some
    /// ([`Outbox::take_notify`] turns true).
    Full,
    /// Another writer's streamed message is being sent: retry when it ends.
    Busy,
    /// Nothing more is taken: a Close was asked for, or the connection ended.
    Closed,
    /// Not a frame that may be sent: a control frame that is fragmented or carries more than
    /// 125 bytes, or a Close frame whose payload is not a valid close code and UTF-8 reason.
    Invalid,
}

/// A data message's payload as handed to [`Outbox::send_data`].
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// Borrowed: copied into the queue.
    Borrowed(&'a [u8]),
    /// Given away: from [`LARGE_SEND`] bytes on, queued without a copy.
    Owned(&'a Bytes),
}

impl Payload<'_> {
    /// Whether the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        match self {
            Payload::Borrowed(b) => b.is_empty(),
            Payload::Owned(b) => b.is_empty(),
        }
    }
}

/// A close the application asked for, not yet picked up by the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The reason to send; `None` sends an empty Close.
    pub reason: Option<CloseReason>,
    /// When it was asked for: the close timer runs from here.
    pub at: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// A Close was asked for: no more data.
    Closing,
    /// The connection ended: nothing is taken or transmitted any more.
    Stopped,
}

/// An entry of the queue ahead of its tail buffer.
pub(crate) enum Seg {
    /// Encoded frames queued before a large payload.
    Bytes(BytesMut),
    /// A whole frame whose payload is the sender's own bytes, not yet masked.
    Large(Large),
}

/// A frame, or a run of fragments, whose payload is the sender's own bytes: nothing of it is
/// copied or masked as it is queued, so queueing it is constant work whatever its size.
pub(crate) struct Large {
    /// The opcode of the next frame (`Continuation` once a fragment has been taken).
    pub opcode: OpCode,
    /// FIN of the last frame.
    pub fin: bool,
    /// RSV bits of the next frame.
    pub rsv: u8,
    /// The next frame's mask key (a new one is drawn for each fragment).
    pub key: Option<[u8; 4]>,
    pub data: Bytes,
    /// Split into fragments of this many bytes as it is taken; 0: one frame.
    pub fragment: usize,
}

impl Large {
    /// Header and payload bytes on the wire, of every frame still to go.
    pub(crate) fn wire_len(&self) -> usize {
        let (len, masked) = (self.data.len(), self.key.is_some());
        if self.fragment == 0 || len <= self.fragment {
            return header_len(len, masked) + len;
        }
        let (full, rest) = (len / self.fragment, len % self.fragment);
        let last = if rest == 0 {
            0
        } else {
            header_len(rest, masked)
        };
        full * header_len(self.fragment, masked) + last + len
    }

    /// Whether the next frame is a fragment with more after it.
    fn splits(&self) -> bool {
        self.fragment != 0 && self.data.len() > self.fragment
    }
}

#[derive(Default)]
struct Segs {
    queue: VecDeque<Seg>,
    /// Wire bytes in `queue`.
    bytes: usize,
}

/// The send queue of one connection: what the application sends waits here, in order and
/// within its capacity, until the [`Connection`](crate::Connection) transmits it.
///
/// ```
/// use wsc_proto::{Outbox, Refused};
/// # #[derive(Default)] struct Counter(u8);
/// # impl wsc_proto::Entropy for Counter { fn fill(&mut self, b: &mut [u8]) { for x in b { self.0 = self.0.wrapping_add(1); *x = self.0 } } }
/// let mut out: Outbox<Counter> = Outbox::new(64);
/// out.set_masking(false);
/// assert_eq!(out.send(wsc_proto::OpCode::Text, b"hi"), Ok(true)); // true: it was empty
/// assert_eq!(out.len(), 4);
/// assert_eq!(out.send(wsc_proto::OpCode::Binary, &[0; 100]), Ok(false)); // over capacity now
/// assert_eq!(out.send(wsc_proto::OpCode::Text, b"more"), Err(Refused::Full));
/// ```
pub struct Outbox<E> {
    /// Made by the first large owned payload: most connections never hold one.
    segs: Option<Box<Segs>>,
    /// Encoded frames at the tail of the queue.
    buf: BytesMut,
    queued: u64,
    capacity: usize,
    /// Fragment size for messages, 0: none (every outbox holds this struct; kept small).
    fragment: usize,
    masking: bool,
    compressing: bool,
    state: State,
    terminate: bool,
    /// A waiting sender may get on: room was freed, a stream ended, or the state changed.
    notify: bool,
    /// The connection stopped taking data on its own (the peer closed, or it failed): it has
    /// decided how it ends.
    ending: bool,
    close: Option<Box<CloseRequest>>,
    /// The streamed message on the wire; other data waits.
    stream_owner: Option<NonZeroU64>,
    next_stream: u64,
    /// Made on first use: a connection that never sends holds no generator.
    keys: Option<Box<MaskKeys<E>>>,
}

impl<E> std::fmt::Debug for Outbox<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.len())
            .field("queued", &self.queued)
            .field("state", &self.state)
            .finish()
    }
}

impl<E> Outbox<E> {
    /// Whether data is still taken (no close asked for, the connection not ended).
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the connection has ended and the queue is discarded.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Whether the connection itself stopped taking data (the peer closed, it failed, or it
    /// ended), as opposed to a close the application asked for: the connection has then
    /// decided how it ends, so the outcome a refused sender would report is known.
    pub fn is_ending(&self) -> bool {
        self.ending
    }

    /// Wire bytes ever queued: a flush waits until the connection has written this many.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Wire bytes waiting in the queue (what the capacity bounds); 0 exactly when it is empty.
    pub fn len(&self) -> usize {
        self.buf.len() + self.segs.as_ref().map_or(0, |s| s.bytes)
    }

    /// Whether nothing waits in the queue.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether outgoing frames are masked (a client must mask; RFC 6455 §5.3).
    pub fn masking(&self) -> bool {
        self.masking
    }

    /// Turns masking on or off, from the next frame queued.
    pub fn set_masking(&mut self, on: bool) {
        self.masking = on;
    }

    fn fragment_size(&self) -> Option<usize> {
        (self.fragment != 0).then_some(self.fragment)
    }

    /// Splits messages larger than `size` bytes into fragments of that size (`None`: one frame
    /// per message).
    pub fn set_fragment_size(&mut self, size: Option<usize>) {
        self.fragment = size.map_or(0, |s| s.max(1));
    }

    /// Whether messages must go through the extensions (queued with [`send_data`](Self::send_data) once encoded).
    pub fn compressing(&self) -> bool {
        self.compressing
    }

    /// Says that extensions were negotiated, so messages are transformed before queueing.
    pub fn set_compressing(&mut self, on: bool) {
        self.compressing = on;
    }

    /// Whether [`take_notify`](Self::take_notify) would return `true`.
    #[inline]
    pub fn notify_pending(&self) -> bool {
        self.notify
    }

    /// Whether a waiting sender may get on since the last call (room freed, a stream ended,
    /// the connection closing or ended), and clears it.
    pub fn take_notify(&mut self) -> bool {
        std::mem::take(&mut self.notify)
    }

    /// Gives back the queue's buffers when it is empty (an idle connection holds none).
    pub fn trim(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        if self.segs.as_ref().is_some_and(|s| s.queue.is_empty()) {
            self.segs = None;
        }
    }
}

impl<E: Entropy + Default> Outbox<E> {
    /// An empty, open outbox that takes data until it holds `capacity` bytes (a single
    /// message larger than that is still taken when it is empty). Masking is on.
    pub fn new(capacity: usize) -> Self {
        Outbox {
            segs: None,
            buf: BytesMut::new(),
            queued: 0,
            capacity: capacity.max(1),
            fragment: 0,
            masking: true,
            compressing: false,
            state: State::Open,
            terminate: false,
            notify: false,
            ending: false,
            close: None,
            stream_owner: None,
            next_stream: 0,
            keys: None,
        }
    }

    /// The next mask key, from a generator seeded on first use.
    #[inline]
    pub fn next_key(&mut self) -> [u8; 4] {
        draw(&mut self.keys)
    }

    /// Fills `dest` with random bytes from the same generator (ping payloads).
    pub fn fill_random(&mut self, dest: &mut [u8]) {
        self.next_key();
        if let Some(k) = self.keys.as_deref_mut() {
            k.source().fill(dest);
        }
    }

    #[inline]
    fn key(&mut self) -> Option<[u8; 4]> {
        if self.masking {
            Some(self.next_key())
        } else {
            None
        }
    }

    /// Whether `what` may be queued now; `Ok(true)` when the queue is empty.
    #[inline]
    fn admit(&self, data: bool, fragment_of: Option<u64>) -> Result<bool, Refused> {
        self.admit_beyond_capacity(data, fragment_of)?;
        let len = self.len();
        if len >= self.capacity {
            return Err(Refused::Full);
        }
        Ok(len == 0)
    }

    /// Everything [`admit`](Self::admit) checks but the capacity.
    fn admit_beyond_capacity(&self, data: bool, fragment_of: Option<u64>) -> Result<(), Refused> {
        if self.state != State::Open {
            return Err(Refused::Closed);
        }
        // While a streamed message is on the wire, other data waits (control frames may
        // interleave, RFC 6455 §5.4).
        let blocked = match (fragment_of, self.stream_owner) {
            (Some(id), Some(owner)) => owner.get() != id,
            (None, Some(_)) => data,
            (_, None) => false,
        };
        if blocked {
            return Err(Refused::Busy);
        }
        Ok(())
    }

    /// Whether a data message would be taken now (`Ok(true)`: the queue is empty), without
    /// queueing anything: a compressing sender checks before it compresses.
    pub fn admits_data(&self) -> Result<bool, Refused> {
        self.admit(true, None)
    }

    /// Queues a data message (text or binary), fragmented at the configured size, its
    /// payload copied and masked into the queue at once. Returns whether the queue was empty
    /// (whoever transmits may need waking).
    #[inline]
    pub fn send(&mut self, opcode: OpCode, payload: &[u8]) -> Result<bool, Refused> {
        let was_empty = self.admit(true, None)?;
        if self.fragment == 0 || payload.len() <= self.fragment {
            // One frame: the hot path of small sends, kept inline.
            let before = self.buf.len();
            let key = self.key();
            encode_frame(&mut self.buf, opcode, true, 0, payload, key);
            self.queued += (self.buf.len() - before) as u64;
        } else {
            self.encode_data(opcode, 0, payload, self.fragment_size());
        }
        Ok(was_empty)
    }

    /// Queues a data message with RSV bits `rsv` on its first frame (what the connection's
    /// extensions made of it, or 0), fragmented at `fragment` bytes (`None`: the configured
    /// size). An [`Payload::Owned`] payload of [`LARGE_SEND`] bytes or more is kept as it is
    /// (fragments are slices of it) and masked as it is transmitted; anything else is copied
    /// and masked into the queue at once.
    pub fn send_data(
        &mut self,
        opcode: OpCode,
        rsv: u8,
        payload: Payload<'_>,
        fragment: Option<usize>,
    ) -> Result<bool, Refused> {
        let was_empty = self.admit(true, None)?;
        self.queue_data(opcode, rsv, payload, fragment);
        Ok(was_empty)
    }

    /// Whether a data message that was already admitted (by [`admits_data`](Self::admits_data))
    /// would still be taken: the queue is open and no streamed message holds the wire. What
    /// was queued since the admission does not count against it.
    pub fn still_admits_data(&self) -> Result<(), Refused> {
        self.admit_beyond_capacity(true, None)
    }

    /// Queues a message that [`admits_data`](Self::admits_data) admitted earlier (before it
    /// was compressed, or in a `Sink`'s `poll_ready`), whatever was queued meanwhile: a
    /// compressor has taken it, so the peer must get it (or every later message is garbage to
    /// its decompressor), and a `Sink` promised to take it. Refused only as
    /// [`still_admits_data`](Self::still_admits_data) refuses. Each caller holds at most one
    /// admitted message, so the queue passes its capacity by at most that.
    pub fn send_data_admitted(
        &mut self,
        opcode: OpCode,
        rsv: u8,
        payload: Payload<'_>,
        fragment: Option<usize>,
    ) -> Result<bool, Refused> {
        self.still_admits_data()?;
        let was_empty = self.is_empty();
        self.queue_data(opcode, rsv, payload, fragment);
        Ok(was_empty)
    }

    fn queue_data(
        &mut self,
        opcode: OpCode,
        rsv: u8,
        payload: Payload<'_>,
        fragment: Option<usize>,
    ) {
        let fragment = fragment.map(|f| f.max(1)).or(self.fragment_size());
        match payload {
            Payload::Owned(b) if b.len() >= LARGE_SEND => {
                self.queue_owned(opcode, rsv, b, fragment)
            }
            Payload::Owned(b) => self.encode_data(opcode, rsv, b, fragment),
            Payload::Borrowed(b) => self.encode_data(opcode, rsv, b, fragment),
        }
    }

    /// Queues a frame exactly as given (no extension, no fragmentation). A Close frame is a
    /// close request (see [`request_close`](Self::request_close)) carrying its payload's
    /// reason, and like one never waits for room.
    pub fn send_frame(&mut self, frame: &Frame, now: Duration) -> Result<bool, Refused> {
        if frame.opcode.is_control() && (!frame.fin || frame.payload.len() > 125) {
            return Err(Refused::Invalid);
        }
        if frame.opcode == OpCode::Close {
            let reason = frame.close_reason().map_err(|_| Refused::Invalid)?;
            let was_empty = self.is_empty();
            return match self.request_close(reason, now) {
                true => Ok(was_empty),
                false => Err(Refused::Closed),
            };
        }
        let was_empty = self.admit(!frame.opcode.is_control(), None)?;
        let key = self.key();
        if frame.payload.len() >= LARGE_SEND {
            self.push_large(Large {
                opcode: frame.opcode,
                fin: frame.fin,
                rsv: frame.rsv,
                key,
                data: frame.payload.clone(),
                fragment: 0,
            });
        } else {
            let before = self.buf.len();
            encode_frame(
                &mut self.buf,
                frame.opcode,
                frame.fin,
                frame.rsv,
                &frame.payload,
                key,
            );
            self.queued += (self.buf.len() - before) as u64;
        }
        Ok(was_empty)
    }

    /// A new streamed-message writer's id (see [`send_fragment`](Self::send_fragment)).
    pub fn new_stream(&mut self) -> u64 {
        self.next_stream += 1;
        self.next_stream
    }

    /// Queues a piece of the streamed message of writer `id` (never through extensions:
    /// RFC 7692 lets any message go uncompressed). The first piece makes `id` the owner of the
    /// wire until its final piece (`fin`): other data waits meanwhile. An
    /// [`Payload::Owned`] piece of [`LARGE_SEND`] bytes or more is kept as it is and masked as
    /// it is transmitted; anything else is copied and masked into the queue at once. An empty
    /// final piece of a message already on the wire never waits for room (it is a few bytes, as
    /// a Close is), so ending a streamed message cannot be left half done by a caller that
    /// stops waiting.
    pub fn send_fragment(
        &mut self,
        id: u64,
        opcode: OpCode,
        fin: bool,
        data: Payload<'_>,
    ) -> Result<bool, Refused> {
        let was_empty =
            if fin && data.is_empty() && self.stream_owner.map(NonZeroU64::get) == Some(id) {
                self.admit_beyond_capacity(true, Some(id))?;
                self.is_empty()
            } else {
                self.admit(true, Some(id))?
            };
        self.stream_owner = NonZeroU64::new(id).filter(|_| !fin);
        let key = self.key();
        match data {
            Payload::Owned(b) if b.len() >= LARGE_SEND => self.push_large(Large {
                opcode,
                fin,
                rsv: 0,
                key,
                data: b.clone(),
                fragment: 0,
            }),
            Payload::Owned(b) => self.encode_frame(opcode, fin, b, key),
            Payload::Borrowed(b) => self.encode_frame(opcode, fin, b, key),
        }
        if fin {
            self.notify = true;
        }
        Ok(was_empty)
    }

    /// The writer `id` was dropped in the middle of its message: a half message cannot be
    /// taken back, so the connection is closed with 1011 rather than let the next message's
    /// frames be read as its continuation.
    pub fn abandon_stream(&mut self, id: u64, now: Duration) {
        if self.stream_owner.map(NonZeroU64::get) == Some(id) {
            self.stream_owner = None;
            self.request_close(
                Some(CloseReason::truncated(
                    crate::CloseCode::INTERNAL_ERROR,
                    "streamed message abandoned",
                )),
                now,
            );
        }
    }

    /// Asks the connection to close with `reason` (`None`: an empty Close). Nothing more is
    /// taken; the Close goes out after what is already queued, never waiting for room, and
    /// the close timer runs from `now`. `false` if a close was already asked for or the
    /// connection ended.
    pub fn request_close(&mut self, reason: Option<CloseReason>, now: Duration) -> bool {
        if self.state != State::Open {
            return false;
        }
        self.state = State::Closing;
        self.stream_owner = None;
        self.close = Some(Box::new(CloseRequest { reason, at: now }));
        self.notify = true;
        true
    }

    /// Asks the connection to drop at once, without a closing handshake.
    pub fn terminate(&mut self) {
        self.terminate = true;
        self.notify = true;
    }

    // ---- for the connection ----

    /// The pending close request, if any (taken once).
    pub(crate) fn take_close(&mut self) -> Option<CloseRequest> {
        self.close.take().map(|b| *b)
    }

    pub(crate) fn terminating(&self) -> bool {
        self.terminate
    }

    /// The connection stops taking data (the peer closed, or the session is failing): what
    /// is queued still goes out ahead of the Close.
    pub(crate) fn stop_taking(&mut self) {
        if self.state == State::Open {
            self.state = State::Closing;
            self.stream_owner = None;
            self.notify = true;
        }
    }

    /// The connection stopped taking data on its own and has decided how it ends (not a
    /// close the application asked for).
    pub(crate) fn mark_ending(&mut self) {
        self.ending = true;
    }

    /// The connection ended: nothing is taken or transmitted any more.
    pub(crate) fn stop(&mut self) {
        self.ending = true;
        self.state = State::Stopped;
        self.stream_owner = None;
        self.close = None;
        self.segs = None;
        self.buf = BytesMut::new();
        self.notify = true;
    }

    /// Takes the next entry of the queue into `buf` while it holds under `coalesce` bytes:
    /// the whole tail buffer is swapped in when `buf` is empty (never copied), a small one is
    /// appended; a large payload is returned for the caller to send piece by piece (its
    /// header is appended to `buf` first). `None` when nothing was taken.
    pub(crate) fn take(&mut self, buf: &mut BytesMut, coalesce: usize) -> Option<Taken> {
        let fits = |buf: &BytesMut, len: usize| buf.len() < coalesce && len <= coalesce;
        if let Some(segs) = self.segs.as_deref_mut()
            && let Some(front) = segs.queue.front_mut()
        {
            let taken = match front {
                Seg::Large(l) if l.splits() => {
                    // A fragment: the rest stays in front.
                    let t = take_fragments(l, buf, coalesce, &mut self.keys)?;
                    segs.bytes -= t.wire();
                    self.notify = true;
                    return Some(t);
                }
                Seg::Bytes(b) => {
                    let n = b.len();
                    if buf.is_empty() {
                        std::mem::swap(buf, b);
                    } else if fits(buf, n) {
                        buf.extend_from_slice(b);
                    } else {
                        return None;
                    }
                    segs.bytes -= n;
                    Taken::Bytes(n)
                }
                Seg::Large(l) => {
                    let n = l.wire_len();
                    segs.bytes -= n;
                    crate::frame::encode_header(buf, l.opcode, l.fin, l.rsv, l.data.len(), l.key);
                    Taken::Large {
                        data: std::mem::take(&mut l.data),
                        key: l.key,
                        wire: n,
                    }
                }
            };
            segs.queue.pop_front();
            self.notify = true;
            return Some(taken);
        }
        if self.buf.is_empty() {
            return None;
        }
        let n = self.buf.len();
        if buf.is_empty() {
            std::mem::swap(buf, &mut self.buf);
        } else if fits(buf, n) {
            buf.extend_from_slice(&self.buf);
            self.buf.clear();
        } else {
            return None;
        }
        self.notify = true;
        Some(Taken::Bytes(n))
    }

    // ---- encoding ----

    /// Queues a frame whose payload is kept as it is; frames already in the tail buffer go
    /// ahead of it.
    fn push_large(&mut self, large: Large) {
        let segs = self.segs.get_or_insert_with(Box::default);
        if !self.buf.is_empty() {
            let ahead = std::mem::take(&mut self.buf);
            segs.bytes += ahead.len();
            segs.queue.push_back(Seg::Bytes(ahead));
        }
        let n = large.wire_len();
        segs.bytes += n;
        segs.queue.push_back(Seg::Large(large));
        self.queued += n as u64;
    }

    /// An owned payload of [`LARGE_SEND`] bytes or more, fragmented if asked: queued whole
    /// (constant work), its fragments cut from it as they are taken.
    fn queue_owned(&mut self, opcode: OpCode, rsv: u8, payload: &Bytes, fragment: Option<usize>) {
        let key = self.key();
        self.push_large(Large {
            opcode,
            fin: true,
            rsv,
            key,
            data: payload.clone(),
            fragment: fragment.map_or(0, |f| f.max(1)),
        });
    }

    /// One unfragmented frame copied and masked into the tail buffer.
    fn encode_frame(&mut self, opcode: OpCode, fin: bool, data: &[u8], key: Option<[u8; 4]>) {
        let before = self.buf.len();
        encode_frame(&mut self.buf, opcode, fin, 0, data, key);
        self.queued += (self.buf.len() - before) as u64;
    }

    #[inline]
    fn encode_data(&mut self, opcode: OpCode, rsv: u8, data: &[u8], fragment: Option<usize>) {
        let before = self.buf.len();
        match fragment {
            Some(size) if data.len() > size => {
                let mut chunks = data.chunks(size).peekable();
                let mut first = true;
                while let Some(c) = chunks.next() {
                    let op = if first { opcode } else { OpCode::Continuation };
                    let key = self.key();
                    encode_frame(
                        &mut self.buf,
                        op,
                        chunks.peek().is_none(),
                        if first { rsv } else { 0 },
                        c,
                        key,
                    );
                    first = false;
                }
            }
            _ => {
                let key = self.key();
                encode_frame(&mut self.buf, opcode, true, rsv, data, key);
            }
        }
        self.queued += (self.buf.len() - before) as u64;
    }
}

/// The next mask key from `keys`, seeded on first use.
fn draw<E: Entropy + Default>(keys: &mut Option<Box<MaskKeys<E>>>) -> [u8; 4] {
    keys.get_or_insert_with(|| Box::new(MaskKeys::new(E::default())))
        .next_key()
}

/// Takes the next fragment of `l` (which [`splits`](Large::splits)): a fragment of
/// [`LARGE_SEND`] bytes or more is handed out as a slice, smaller ones are copied and masked
/// into `buf` while it holds under `coalesce` bytes (so the work is bounded by `coalesce`
/// whatever the payload's size). `None` when `buf` has no room.
fn take_fragments<E: Entropy + Default>(
    l: &mut Large,
    buf: &mut BytesMut,
    coalesce: usize,
    keys: &mut Option<Box<MaskKeys<E>>>,
) -> Option<Taken> {
    let size = l.fragment;
    let masked = l.key.is_some();
    let mut next = |l: &mut Large| {
        l.opcode = OpCode::Continuation;
        l.rsv = 0;
        l.key = masked.then(|| draw(keys));
    };
    if size >= LARGE_SEND {
        let data = l.data.split_to(size);
        let key = l.key;
        crate::frame::encode_header(buf, l.opcode, false, l.rsv, size, key);
        next(l);
        return Some(Taken::Large {
            data,
            key,
            wire: header_len(size, masked) + size,
        });
    }
    if buf.len() >= coalesce && !buf.is_empty() {
        return None;
    }
    let before = buf.len();
    loop {
        let piece = l.data.split_to(size);
        encode_frame(buf, l.opcode, false, l.rsv, &piece, l.key);
        next(l);
        if !l.splits() || buf.len() >= coalesce {
            break;
        }
    }
    Some(Taken::Bytes(buf.len() - before))
}

/// What [`Outbox::take`] moved out.
pub(crate) enum Taken {
    /// This many bytes of encoded frames went into the buffer.
    Bytes(usize),
    /// A large frame: its header went into the buffer; its payload is to be sent after it.
    Large {
        data: Bytes,
        key: Option<[u8; 4]>,
        /// Header and payload bytes on the wire.
        wire: usize,
    },
}

impl Taken {
    /// Bytes on the wire it stands for.
    fn wire(&self) -> usize {
        match *self {
            Taken::Bytes(n) => n,
            Taken::Large { wire, .. } => wire,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, Limits, Role};

    #[derive(Default)]
    struct Counter(u8);
    impl Entropy for Counter {
        fn fill(&mut self, b: &mut [u8]) {
            for x in b {
                self.0 = self.0.wrapping_add(1);
                *x = self.0;
            }
        }
    }

    /// Everything queued, as a server reads it.
    fn drain(out: &mut Outbox<Counter>) -> Vec<Frame> {
        drain_after(out, BytesMut::new())
    }

    /// Everything queued, after the wire bytes already taken.
    fn drain_after(out: &mut Outbox<Counter>, mut wire: BytesMut) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        while let Some(t) = out.take(&mut buf, usize::MAX) {
            if let Taken::Large { data, key, .. } = t {
                let mut payload = BytesMut::from(&data[..]);
                if let Some(k) = key {
                    crate::mask::apply_mask(&mut payload, k, 0);
                }
                buf.extend_from_slice(&payload);
            }
            wire.extend_from_slice(&buf);
            buf.clear();
        }
        let mut d = Decoder::new(Role::Server, Limits::default());
        let mut frames = Vec::new();
        while let Some(f) = d.decode(&mut wire).unwrap() {
            frames.push(f);
        }
        assert!(wire.is_empty());
        frames
    }

    #[test]
    fn queues_in_order_and_bounds_what_it_holds() {
        let mut out: Outbox<Counter> = Outbox::new(100);
        assert_eq!(out.send(OpCode::Text, b"a"), Ok(true));
        let big = Bytes::from(vec![7u8; LARGE_SEND]);
        assert_eq!(
            out.send_data(OpCode::Binary, 0, Payload::Owned(&big), None),
            Ok(false)
        );
        assert_eq!(out.send(OpCode::Binary, b"b"), Err(Refused::Full));
        let frames = drain(&mut out);
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0].payload[..], b"a");
        assert_eq!(frames[1].payload, big);
        assert!(out.take_notify());
        assert_eq!(out.send(OpCode::Binary, b"b"), Ok(true));
        assert_eq!(out.queued(), 7 + (8 + LARGE_SEND as u64) + 7);
    }

    /// A message admitted before it was compressed goes in over the capacity control frames
    /// filled meanwhile, and in order; only an ended queue refuses it.
    #[test]
    fn an_admitted_message_is_queued_over_the_capacity() {
        let mut out: Outbox<Counter> = Outbox::new(20);
        out.send(OpCode::Binary, &[1; 10]).unwrap();
        assert_eq!(out.admits_data(), Ok(false));
        out.send_frame(&Frame::ping(vec![2; 20]), Duration::ZERO)
            .unwrap();
        assert_eq!(out.admits_data(), Err(Refused::Full));
        assert_eq!(
            out.send_data_admitted(OpCode::Binary, 0, Payload::Borrowed(&[3; 5]), None),
            Ok(false)
        );
        let frames = drain(&mut out);
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[2].payload[..], &[3u8; 5][..]);
        out.request_close(None, Duration::ZERO);
        assert_eq!(
            out.send_data_admitted(OpCode::Binary, 0, Payload::Borrowed(b"x"), None),
            Err(Refused::Closed)
        );
    }

    #[test]
    fn owned_payloads_are_fragmented_as_slices() {
        let mut out: Outbox<Counter> = Outbox::new(1 << 20);
        out.set_fragment_size(Some(LARGE_SEND));
        let data = Bytes::from(
            (0..2 * LARGE_SEND + 10)
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        out.send_data(OpCode::Binary, 0, Payload::Owned(&data), None)
            .unwrap();
        let frames = drain(&mut out);
        let ops: Vec<(OpCode, bool, usize)> = frames
            .iter()
            .map(|f| (f.opcode, f.fin, f.payload.len()))
            .collect();
        assert_eq!(
            ops,
            [
                (OpCode::Binary, false, LARGE_SEND),
                (OpCode::Continuation, false, LARGE_SEND),
                (OpCode::Continuation, true, 10)
            ]
        );
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.payload.to_vec()).collect();
        assert_eq!(joined, data);
    }

    #[test]
    fn a_large_owned_payload_is_queued_without_copy_and_cut_as_taken() {
        // Small fragments of a large payload: queueing copies nothing, and each take copies
        // and masks at most what fills the caller's buffer to the coalescing bound.
        let mut out: Outbox<Counter> = Outbox::new(1 << 20);
        let data = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<_>>());
        out.send_data(OpCode::Binary, 0, Payload::Owned(&data), Some(100))
            .unwrap();
        assert!(out.buf.is_empty(), "nothing was copied into the queue");
        let wire = 2000 * (6 + 100);
        assert_eq!((out.len(), out.queued()), (wire, wire as u64));
        let mut buf = BytesMut::new();
        let Some(Taken::Bytes(n)) = out.take(&mut buf, 4096) else {
            panic!("small fragments are copied");
        };
        assert!((4096..4096 + 106).contains(&n), "{n}");
        assert_eq!(out.len(), wire - n);
        // Every fragment has a key of its own.
        let keys: std::collections::HashSet<&[u8]> = buf.chunks(106).map(|f| &f[2..6]).collect();
        assert_eq!(keys.len(), n / 106);
        let first = drain_after(&mut out, buf.split());
        assert_eq!(first.len(), 2000);
        assert_eq!(first[0].opcode, OpCode::Binary);
        assert!(first[1..].iter().all(|f| f.opcode == OpCode::Continuation));
        assert!(first[..1999].iter().all(|f| !f.fin) && first[1999].fin);
        let joined: Vec<u8> = first.iter().flat_map(|f| f.payload.to_vec()).collect();
        assert_eq!(joined, data);
        assert!(out.is_empty());
    }

    #[test]
    fn a_large_owned_stream_piece_is_queued_without_copy() {
        let mut out: Outbox<Counter> = Outbox::new(1 << 20);
        let id = out.new_stream();
        let big = Bytes::from(vec![5u8; LARGE_SEND]);
        out.send_fragment(id, OpCode::Binary, false, Payload::Owned(&big))
            .unwrap();
        assert!(out.buf.is_empty(), "nothing was copied into the queue");
        out.send_fragment(id, OpCode::Continuation, true, Payload::Borrowed(b"z"))
            .unwrap();
        let frames = drain(&mut out);
        let ops: Vec<(OpCode, bool, usize)> = frames
            .iter()
            .map(|f| (f.opcode, f.fin, f.payload.len()))
            .collect();
        assert_eq!(
            ops,
            [
                (OpCode::Binary, false, LARGE_SEND),
                (OpCode::Continuation, true, 1)
            ]
        );
        assert_eq!(frames[0].payload, big);
    }

    #[test]
    fn a_stream_keeps_other_data_out_until_it_ends() {
        let mut out: Outbox<Counter> = Outbox::new(1 << 20);
        let a = out.new_stream();
        let b = out.new_stream();
        out.send_fragment(a, OpCode::Text, false, Payload::Borrowed(b"he"))
            .unwrap();
        assert_eq!(out.send(OpCode::Text, b"x"), Err(Refused::Busy));
        assert_eq!(
            out.send_fragment(b, OpCode::Text, false, Payload::Borrowed(b"y")),
            Err(Refused::Busy)
        );
        // Control frames may interleave.
        out.send_frame(&Frame::ping("p"), Duration::ZERO).unwrap();
        out.take_notify();
        out.send_fragment(a, OpCode::Continuation, true, Payload::Borrowed(b"llo"))
            .unwrap();
        assert!(out.take_notify(), "the end of a stream lets waiters on");
        out.send(OpCode::Text, b"x").unwrap();
        let ops: Vec<OpCode> = drain(&mut out).iter().map(|f| f.opcode).collect();
        assert_eq!(
            ops,
            [
                OpCode::Text,
                OpCode::Ping,
                OpCode::Continuation,
                OpCode::Text
            ]
        );
    }

    #[test]
    fn the_end_of_a_started_stream_never_waits_for_room() {
        let mut out: Outbox<Counter> = Outbox::new(10);
        let a = out.new_stream();
        out.send_fragment(a, OpCode::Text, false, Payload::Borrowed(&[b'a'; 50]))
            .unwrap();
        assert_eq!(
            out.send_fragment(a, OpCode::Continuation, false, Payload::Borrowed(b"b")),
            Err(Refused::Full),
            "a piece with data waits for room"
        );
        // Another writer's empty message is a whole message: it waits (for the stream, here).
        let b = out.new_stream();
        assert_eq!(
            out.send_fragment(b, OpCode::Text, true, Payload::Borrowed(b"")),
            Err(Refused::Busy)
        );
        assert_eq!(
            out.send_fragment(a, OpCode::Continuation, true, Payload::Borrowed(b"")),
            Ok(false)
        );
        // Not a started stream's end any more: a new empty message waits for room.
        assert_eq!(
            out.send_fragment(b, OpCode::Text, true, Payload::Borrowed(b"")),
            Err(Refused::Full)
        );
        let ops: Vec<(OpCode, bool)> = drain(&mut out).iter().map(|f| (f.opcode, f.fin)).collect();
        assert_eq!(ops, [(OpCode::Text, false), (OpCode::Continuation, true)]);
    }

    #[test]
    fn a_close_request_never_waits_for_room_and_ends_admission() {
        let mut out: Outbox<Counter> = Outbox::new(10);
        out.send(OpCode::Binary, &[0; 50]).unwrap();
        assert_eq!(out.send(OpCode::Binary, b"x"), Err(Refused::Full));
        assert!(out.request_close(None, Duration::from_secs(3)));
        assert!(!out.request_close(None, Duration::from_secs(4)));
        assert_eq!(out.send(OpCode::Binary, b"x"), Err(Refused::Closed));
        assert_eq!(
            out.take_close(),
            Some(CloseRequest {
                reason: None,
                at: Duration::from_secs(3)
            })
        );
        // What was queued before the request still goes out.
        assert_eq!(drain(&mut out).len(), 1);
    }

    #[test]
    fn a_dropped_stream_asks_for_1011() {
        let mut out: Outbox<Counter> = Outbox::new(1 << 20);
        let a = out.new_stream();
        out.abandon_stream(a, Duration::ZERO); // nothing sent yet: nothing to do
        assert!(out.is_open());
        out.send_fragment(a, OpCode::Binary, false, Payload::Borrowed(b"x"))
            .unwrap();
        out.abandon_stream(a, Duration::from_millis(5));
        let req = out.take_close().unwrap();
        assert_eq!(req.reason.unwrap().code(), crate::CloseCode::INTERNAL_ERROR);
        assert_eq!(req.at, Duration::from_millis(5));
    }

    #[test]
    fn close_frames_sent_raw_are_close_requests() {
        let mut out: Outbox<Counter> = Outbox::new(1 << 20);
        assert_eq!(
            out.send_frame(&Frame::new(OpCode::Close, &b"\x03"[..]), Duration::ZERO),
            Err(Refused::Invalid)
        );
        assert_eq!(
            out.send_frame(&Frame::ping(vec![0u8; 126]), Duration::ZERO),
            Err(Refused::Invalid)
        );
        assert!(out.is_open());
        let r = CloseReason::new(4000u16, "bye").unwrap();
        out.send_frame(&Frame::close(Some(&r)), Duration::from_secs(1))
            .unwrap();
        assert_eq!(out.take_close().unwrap().reason, Some(r));
        assert!(
            drain(&mut out).is_empty(),
            "the connection encodes the Close"
        );
    }
}
