//! The state a session's handles share with its driver task.
//!
//! Owns the outgoing queue (senders encode and mask frames straight into it, so a send costs
//! one lock and no channel hop; large payloads the sender owns wait in it unmasked, uncopied),
//! the incoming item queue (the driver pushes a whole read's worth of messages under one lock;
//! a receiver takes them all at once), the live settings, and the session's final outcome.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use wsc_proto::{CloseReason, Extension, Frame, MaskKeys, Message, OpCode, Run, encode_frame};

use crate::config::Config;
use crate::entropy::OsEntropy;
use crate::error::Error;
use crate::session::lock::{QueueGuard, QueueLock};

/// What the driver hands to a receiver.
#[derive(Debug)]
pub(crate) enum Item {
    Message(Message),
    /// Many small whole messages from one read, cut out one by one as they are received.
    Run(Run),
    Frame(Frame),
    /// A piece of a message, for sessions that stream incoming messages.
    Chunk {
        text: bool,
        first: bool,
        fin: bool,
        data: bytes::Bytes,
    },
}

/// How the session ended.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The close reason in Ktor's sense: the peer's if it closed first, ours if we did,
    /// 1006 for a dropped connection, the failure code for a failed one.
    pub reason: CloseReason,
    /// The peer's Close, if one arrived.
    pub peer: Option<CloseReason>,
    /// `Ok` for a completed close handshake.
    pub result: Result<(), Error>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OutState {
    Open,
    /// The user queued a Close with this reason.
    Closing(Box<CloseReason>),
    /// No more sends; the error senders get.
    Closed,
}

/// Payloads from this size on, when the sender hands them over owned (`Bytes`, `Vec`,
/// `Message`, a raw `Frame`), are queued as they are and masked by the driver piece by piece
/// just before writing, instead of being copied into the queue.
pub(crate) const LARGE_SEND: usize = 16 * 1024;

/// An entry of the outgoing queue ahead of [`Out::buf`].
pub(crate) enum Seg {
    /// Encoded frames queued before a large payload.
    Bytes(BytesMut),
    /// A whole frame whose payload is the sender's own bytes, not yet masked.
    Large(Large),
}

pub(crate) struct Large {
    pub opcode: OpCode,
    pub fin: bool,
    pub rsv: u8,
    pub key: Option<[u8; 4]>,
    pub data: Bytes,
}

impl Large {
    /// Header and payload bytes on the wire.
    pub(crate) fn wire_len(&self) -> usize {
        wsc_proto::header_len(self.data.len(), self.key.is_some()) + self.data.len()
    }
}

/// Frames queued ahead of [`Out::buf`], in order.
#[derive(Default)]
pub(crate) struct Segs {
    pub queue: VecDeque<Seg>,
    /// Wire bytes in `queue`.
    pub bytes: usize,
}

pub(crate) struct Out {
    /// Made by the first large owned payload: most sessions never hold one.
    pub segs: Option<Box<Segs>>,
    /// Encoded frames at the tail of the queue.
    pub buf: BytesMut,
    pub queued: u64,
    pub written: u64,
    pub state: OutState,
    pub closed_error: Option<Box<Error>>,
    pub driver: Option<Waker>,
    pub waiters: Vec<Waker>,
    /// Made on first use: a session that never sends holds no generator (592 bytes).
    keys: Option<Box<MaskKeys<OsEntropy>>>,
    /// The session compresses (see [`Shared::exts`]): no payload is queued as it is.
    pub compressing: bool,
    pub terminate: bool,
    /// Every handle is gone.
    pub abandoned: bool,
    /// Session handles alive (senders and the receiver).
    pub handles: u32,
    /// The message writer whose fragmented message is on the wire; other data waits.
    pub stream_owner: Option<std::num::NonZeroU64>,
    pub next_stream: u64,
}

pub(crate) struct In {
    pub items: VecDeque<Item>,
    /// Payload bytes in `items`.
    pub bytes: usize,
    /// Messages (or frames) in `items`: a run counts each of its messages.
    pub count: usize,
    pub end: Option<Result<(), Box<Error>>>,
    pub receiver: Option<Waker>,
    pub driver: Option<Waker>,
}

/// Settings that can change while the session runs.
pub(crate) struct Settings {
    pub max_frame_size: AtomicUsize,
    pub max_message_size: AtomicUsize,
    pub masking: AtomicBool,
    /// Milliseconds; 0 = off.
    pub ping_interval: AtomicU64,
    /// Milliseconds; 0 = twice the interval.
    pub ping_timeout: AtomicU64,
    /// Deliver incoming messages as chunks (no reassembly in the driver).
    pub streaming: AtomicBool,
    pub generation: AtomicU64,
}

/// The session's outcome, boxed: most of a session's life it is not there yet.
#[derive(Default)]
struct Ended {
    outcome: Option<Box<Outcome>>,
    waiters: Vec<Waker>,
}

pub(crate) struct Shared {
    /// Taken once per send.
    out: QueueLock<Out>,
    /// Set whenever [`Shared::out`] locks the queue: the driver, having found nothing to do
    /// in it, skips its next look while this stays clear (see `Driver::take_outgoing`).
    out_touched: AtomicBool,
    /// The outgoing extension chain (compression), when one was negotiated. Senders of data
    /// messages and streamed pieces take this lock first and hold it until their frames are
    /// queued: messages are compressed in the order they are queued, no stream starts between
    /// a message's compression and its queueing, and the compressing itself happens outside
    /// the queue's lock, so the driver goes on writing meanwhile.
    pub exts: Option<Box<Mutex<Chain>>>,
    pub inc: Mutex<In>,
    pub settings: Settings,
    /// How the session ended, once decided, and the tasks waiting to know.
    ended: Mutex<Ended>,
    /// The client's configuration, shared by all its sessions (not copied into each).
    config: Arc<Config>,
    pub role: wsc_proto::Role,
    /// The HTTP exchange that opened the session (kept here: one allocation less per session).
    pub call: crate::session::Call,
}

/// The negotiated extensions, in the order they apply to an outgoing message.
pub(crate) type Chain = Box<[Box<dyn Extension>]>;

/// Runs `payload` through the extension chain: the RSV bits to set and the bytes to frame
/// (the last extension's output straight from its buffer, the common case of one).
pub(crate) fn run_extensions<'a>(
    exts: &'a mut [Box<dyn Extension>],
    opcode: OpCode,
    payload: &'a [u8],
) -> Result<(u8, std::borrow::Cow<'a, [u8]>), Error> {
    let mut rsv = 0u8;
    let mut owned: Option<Vec<u8>> = None;
    let last = exts.len().saturating_sub(1);
    for (i, e) in exts.iter_mut().enumerate() {
        let input = owned.as_deref().unwrap_or(payload);
        let (bits, name) = (e.rsv(), e.name());
        let encoded = e.encode(opcode, input).map_err(|err| {
            Error::InvalidConfig(format!("extension {name} failed to encode: {err}"))
        })?;
        match encoded {
            Some(out) if i == last => return Ok((rsv | bits, std::borrow::Cow::Borrowed(out))),
            Some(out) => {
                owned = Some(out.to_vec());
                rsv |= bits;
            }
            None => {}
        }
    }
    Ok(match owned {
        Some(v) => (rsv, std::borrow::Cow::Owned(v)),
        None => (rsv, std::borrow::Cow::Borrowed(payload)),
    })
}

fn millis(d: Option<Duration>) -> u64 {
    d.map(|d| (d.as_millis() as u64).max(1)).unwrap_or(0)
}

impl Shared {
    pub(crate) fn new(
        config: Arc<Config>,
        extensions: Vec<Box<dyn Extension>>,
        role: wsc_proto::Role,
        call: crate::session::Call,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            out_touched: AtomicBool::new(true),
            out: QueueLock::new(Out {
                segs: None,
                buf: BytesMut::new(),
                queued: 0,
                written: 0,
                state: OutState::Open,
                closed_error: None,
                driver: None,
                waiters: Vec::new(),
                keys: None,
                compressing: !extensions.is_empty(),
                terminate: false,
                abandoned: false,
                handles: 0,
                stream_owner: None,
                next_stream: 0,
            }),
            inc: Mutex::new(In {
                items: VecDeque::new(),
                bytes: 0,
                count: 0,
                end: None,
                receiver: None,
                driver: None,
            }),
            settings: Settings {
                max_frame_size: AtomicUsize::new(config.max_frame_size),
                max_message_size: AtomicUsize::new(config.max_message_size),
                masking: AtomicBool::new(config.masking && role == wsc_proto::Role::Client),
                ping_interval: AtomicU64::new(millis(config.ping_interval)),
                ping_timeout: AtomicU64::new(millis(config.ping_timeout)),
                streaming: AtomicBool::new(config.stream_incoming),
                generation: AtomicU64::new(0),
            },
            exts: (!extensions.is_empty())
                .then(|| Box::new(Mutex::new(extensions.into_boxed_slice()))),
            ended: Mutex::new(Ended::default()),
            config,
            role,
            call,
        })
    }

    /// Bytes the senders may queue before `send` waits.
    pub(crate) fn outgoing_capacity(&self) -> usize {
        self.config.outgoing_capacity
    }

    /// Messages the driver may queue for the receiver before it stops reading.
    pub(crate) fn incoming_capacity(&self) -> usize {
        self.config.incoming_capacity
    }

    /// Payload bytes the driver may queue for the receiver before it stops reading.
    pub(crate) fn incoming_bytes(&self) -> usize {
        self.config.incoming_bytes
    }

    /// The size outgoing messages are fragmented at, if any.
    pub(crate) fn fragment_size(&self) -> Option<usize> {
        self.config.write_fragment_size
    }

    /// How long the close handshake and the wait for TCP to close may take.
    pub(crate) fn close_timeout(&self) -> Duration {
        self.config.close_timeout
    }

    /// The message size limit in force (settings can change it while the session runs).
    pub(crate) fn max_message_size(&self) -> usize {
        self.settings.max_message_size.load(Ordering::Acquire)
    }

    pub(crate) fn converter(&self) -> Option<&Arc<dyn crate::convert::Converter>> {
        self.config.converter.as_ref()
    }

    /// Locks the outgoing queue (see [`QueueLock`] for why it is a spin lock).
    #[inline]
    pub(crate) fn out(&self) -> QueueGuard<'_, Out> {
        let out = self.out.lock();
        // Under the lock, and before any wake that follows (a wake orders it before the
        // driver's next poll).
        self.out_touched.store(true, Ordering::Relaxed);
        out
    }

    /// Locks the outgoing queue for the driver's look at what the handles did, and clears the
    /// mark they leave: `None` when the mark is clear and `settled` says the last look found
    /// nothing left to do, so there is nothing new.
    #[inline]
    pub(crate) fn out_if_touched(&self, settled: bool) -> Option<QueueGuard<'_, Out>> {
        if settled && !self.out_touched.load(Ordering::Acquire) {
            return None;
        }
        let out = self.out.lock();
        self.out_touched.store(false, Ordering::Relaxed);
        Some(out)
    }

    /// Locks the outgoing extension chain, if the session has one.
    pub(crate) fn exts(&self) -> Option<MutexGuard<'_, Chain>> {
        self.exts
            .as_deref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn inc(&self) -> MutexGuard<'_, In> {
        self.inc.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ended(&self) -> MutexGuard<'_, Ended> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the session ended, if it has.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        self.ended().outcome.as_deref().cloned()
    }

    pub(crate) fn has_ended(&self) -> bool {
        self.ended().outcome.is_some()
    }

    /// Ready with the outcome once there is one.
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut e = self.ended();
        if let Some(o) = e.outcome.as_deref() {
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
            if e.outcome.is_some() {
                return;
            }
            e.outcome = Some(Box::new(outcome));
            std::mem::take(&mut e.waiters)
        };
        for w in waiters {
            w.wake();
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

    /// Starts the closing handshake from a handle (no waiting), unless one is under way.
    pub(crate) fn close_from_handle(&self, reason: CloseReason) {
        let mut out = self.out();
        if out.state != OutState::Open {
            return;
        }
        let masking = self.settings.masking.load(Ordering::Relaxed);
        out.encode_raw(&Frame::close(Some(&reason)), masking);
        out.state = OutState::Closing(Box::new(reason));
        out.stream_owner = None;
        out.wake_waiters();
        let w = out.driver.clone();
        drop(out);
        if let Some(w) = w {
            w.wake();
        }
    }

    pub(crate) fn ping_interval(&self) -> Option<Duration> {
        match self.settings.ping_interval.load(Ordering::Acquire) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub(crate) fn ping_timeout(&self) -> Option<Duration> {
        match self.settings.ping_timeout.load(Ordering::Acquire) {
            0 => self.ping_interval().map(|i| i * 2),
            ms => Some(Duration::from_millis(ms)),
        }
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

impl Item {
    /// Payload bytes, for the incoming queue's byte bound.
    pub(crate) fn len(&self) -> usize {
        match self {
            Item::Message(m) => m.len(),
            Item::Run(r) => r.byte_len(),
            Item::Frame(f) => f.payload.len(),
            Item::Chunk { data, .. } => data.len(),
        }
    }

    /// Messages (or frames) this item holds, for the incoming queue's count bound.
    pub(crate) fn count(&self) -> usize {
        match self {
            Item::Run(r) => r.len(),
            _ => 1,
        }
    }
}

impl Out {
    /// The session's mask-key generator, seeded from the OS on first use.
    #[inline]
    pub(crate) fn keys(&mut self) -> &mut MaskKeys<OsEntropy> {
        self.keys
            .get_or_insert_with(|| Box::new(MaskKeys::new(OsEntropy::new())))
    }

    /// The error a send gets once the session no longer accepts frames.
    pub(crate) fn send_error(&self) -> Error {
        self.closed_error
            .as_deref()
            .cloned()
            .unwrap_or(Error::Closed(None))
    }

    /// Wire bytes waiting in the queue (what the outgoing capacity bounds); 0 exactly when the
    /// queue is empty (no entry is empty).
    pub(crate) fn len(&self) -> usize {
        self.buf.len() + self.segs.as_ref().map_or(0, |s| s.bytes)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a frame whose payload is kept as it is (no copy) for the driver to mask as it
    /// writes; frames already in `buf` go ahead of it.
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

    /// Empties the queue (the session is over).
    pub(crate) fn discard(&mut self) {
        self.segs = None;
        self.buf = BytesMut::new();
    }

    /// Queues a message the sender owns without copying it, when it is large and no extension
    /// or fragmentation has to rewrite it; `false` leaves it to be encoded as usual.
    #[inline]
    pub(crate) fn queue_owned(
        &mut self,
        opcode: OpCode,
        payload: &Bytes,
        masking: bool,
        fragment: Option<usize>,
    ) -> bool {
        let whole = fragment.is_none_or(|f| payload.len() <= f);
        if payload.len() < LARGE_SEND || !whole || self.compressing {
            return false;
        }
        self.queue_large(opcode, payload, masking);
        true
    }

    #[inline(never)]
    fn queue_large(&mut self, opcode: OpCode, payload: &Bytes, masking: bool) {
        let key = masking.then(|| self.keys().next_key());
        self.push_large(Large {
            opcode,
            fin: true,
            rsv: 0,
            key,
            data: payload.clone(),
        });
    }

    /// Encodes a data message as it is (fragmented if asked) into the queue; a compressing
    /// session's messages go through [`run_extensions`] first, then [`Out::encode_compressed`].
    #[inline]
    pub(crate) fn encode_message(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        masking: bool,
        fragment: Option<usize>,
    ) {
        self.encode_data(opcode, 0, payload, masking, fragment);
    }

    /// Frames a compressed message: [`run_extensions`]'s output (kept out of line, so that
    /// the uncompressed path keeps `encode_data` inlined).
    #[inline(never)]
    pub(crate) fn encode_compressed(
        &mut self,
        opcode: OpCode,
        rsv: u8,
        data: &[u8],
        masking: bool,
        fragment: Option<usize>,
    ) {
        self.encode_data(opcode, rsv, data, masking, fragment);
    }

    #[inline]
    fn encode_data(
        &mut self,
        opcode: OpCode,
        rsv: u8,
        data: &[u8],
        masking: bool,
        fragment: Option<usize>,
    ) {
        let before = self.buf.len();
        match fragment {
            Some(size) if data.len() > size => {
                let mut chunks = data.chunks(size).peekable();
                let mut first = true;
                while let Some(c) = chunks.next() {
                    let op = if first { opcode } else { OpCode::Continuation };
                    let key = masking.then(|| self.keys().next_key());
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
                let key = masking.then(|| self.keys().next_key());
                encode_frame(&mut self.buf, opcode, true, rsv, data, key);
            }
        }
        self.queued += (self.buf.len() - before) as u64;
    }

    /// Encodes one fragment of a streamed message (never through extensions: RFC 7692 lets
    /// any message go uncompressed).
    pub(crate) fn encode_fragment(
        &mut self,
        opcode: OpCode,
        fin: bool,
        data: &[u8],
        masking: bool,
    ) {
        let before = self.buf.len();
        let key = masking.then(|| self.keys().next_key());
        encode_frame(&mut self.buf, opcode, fin, 0, data, key);
        self.queued += (self.buf.len() - before) as u64;
    }

    /// Encodes one frame as given (no extension processing); a large payload is queued
    /// without a copy.
    pub(crate) fn encode_raw(&mut self, frame: &Frame, masking: bool) {
        let key = masking.then(|| self.keys().next_key());
        if frame.payload.len() >= LARGE_SEND {
            self.push_large(Large {
                opcode: frame.opcode,
                fin: frame.fin,
                rsv: frame.rsv,
                key,
                data: frame.payload.clone(),
            });
            return;
        }
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

    pub(crate) fn wake_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}
