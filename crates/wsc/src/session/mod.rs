//! Sessions: the handles an application holds once the handshake is done.
//!
//! [`Session`] (default) delivers whole [`Message`]s and runs pings, keepalive, reassembly and
//! the close handshake in its driver task; [`RawSession`] delivers every [`Frame`] and does
//! none of it. Both split into a cloneable [`Sender`] and a receiver that can live in
//! different tasks.
//!
//! Cancel safety: dropping a `recv()`, `send()` or `flush()` future loses nothing and leaves
//! the session usable — a message is queued whole within one poll or not at all, and a
//! received item is removed from the queue only when it is returned.

mod call;
mod driver;
mod lock;
mod shared;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use wsc_proto::{CloseReason, Extension, Frame, Message, OpCode};

pub use call::Call;
pub(crate) use driver::Driver;
use lock::QueueGuard;
pub(crate) use shared::Shared;
use shared::{Chain, Item, Out, OutState, Outcome, run_extensions};

use crate::error::Error;

/// A session handle's reference to the shared state (senders and the receiver hold one each):
/// the last one dropped tells the driver that every handle is gone. Counted in the shared
/// state, so a handle costs no allocation.
struct Guard(Arc<Shared>);

impl Guard {
    fn new(shared: &Arc<Shared>) -> Guard {
        shared.out().handles += 1;
        Guard(shared.clone())
    }
}

impl Clone for Guard {
    fn clone(&self) -> Guard {
        Guard::new(&self.0)
    }
}

impl std::ops::Deref for Guard {
    type Target = Arc<Shared>;
    fn deref(&self) -> &Arc<Shared> {
        &self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut out = self.0.out();
        out.handles -= 1;
        if out.handles == 0 {
            out.abandoned = true;
            drop(out);
            self.0.wake_driver();
        }
    }
}

/// The sending half of a session: cheap to clone, usable from many tasks (Ktor's `outgoing`).
///
/// Sends encode and mask the message straight into the session's outgoing queue; the driver
/// task writes it. A payload of 16 KiB or more handed over owned ([`send`](Self::send) with
/// `Bytes`, `Vec<u8>`, `String` or a [`Message`], [`send_frame`](Self::send_frame), the `Sink`)
/// is queued without a copy and masked by the driver a piece at a time as it writes. When the
/// queue holds more than the configured capacity, `send` waits (backpressure). Sending on a closed session is an [`Error::Closed`] (or the error that
/// ended the session), never a panic.
#[derive(Clone)]
pub struct Sender {
    shared: Guard,
    raw: bool,
    flush_target: Option<u64>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("raw", &self.raw).finish()
    }
}

#[derive(Clone, Copy)]
enum Outgoing<'a> {
    Data(OpCode, &'a [u8], Option<usize>),
    /// A message the caller gave away: a large payload is queued without a copy.
    Owned(&'a Message),
    Frame(&'a Frame),
    /// A piece of a streamed message from the writer `id`.
    Fragment {
        id: u64,
        opcode: OpCode,
        fin: bool,
        data: &'a [u8],
    },
}

impl Sender {
    #[inline]
    fn poll_enqueue(&self, cx: &mut Context<'_>, what: &Outgoing<'_>) -> Poll<Result<(), Error>> {
        if let Some(chain) = self.shared.exts.as_deref()
            && !matches!(what, Outgoing::Frame(_))
        {
            return self.poll_enqueue_compressing(cx, what, chain);
        }
        self.poll_enqueue_plain(cx, what)
    }

    /// Whether `what` may be queued now: an error once the session takes no more frames,
    /// `Pending` (with the task's waker kept) while the queue is full or another writer's
    /// streamed message is on the wire; otherwise whether the queue was empty.
    #[inline(always)]
    fn admit(
        &self,
        out: &mut Out,
        cx: &mut Context<'_>,
        what: &Outgoing<'_>,
    ) -> Poll<Result<bool, Error>> {
        if out.state != OutState::Open {
            return Poll::Ready(Err(out.send_error()));
        }
        // While a streamed message is on the wire, other data frames wait (control frames may
        // interleave, RFC 6455 §5.4).
        let blocked = match *what {
            Outgoing::Data(..) | Outgoing::Owned(_) => out.stream_owner.is_some(),
            Outgoing::Frame(f) => !f.opcode.is_control() && out.stream_owner.is_some(),
            Outgoing::Fragment { id, .. } => out.stream_owner.is_some_and(|o| o.get() != id),
        };
        let queued = out.len();
        if blocked || queued >= self.shared.outgoing_capacity() {
            out.waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(queued == 0))
    }

    #[inline(always)]
    fn poll_enqueue_plain(
        &self,
        cx: &mut Context<'_>,
        what: &Outgoing<'_>,
    ) -> Poll<Result<(), Error>> {
        let mut out = self.shared.out();
        let was_empty = match self.admit(&mut out, cx, what) {
            Poll::Ready(Ok(e)) => e,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let masking = self.shared.settings.masking.load(Ordering::Relaxed);
        let mut what = *what;
        if let Outgoing::Owned(m) = what {
            // Large: queued as it is. Otherwise encoded like a borrowed message (one call site
            // keeps the hot path inlined).
            let fragment = self.shared.fragment_size();
            if !out.queue_owned(m.opcode(), m.bytes(), masking, fragment) {
                what = Outgoing::Data(m.opcode(), m.as_bytes(), None);
            }
        }
        match what {
            Outgoing::Fragment {
                id,
                opcode,
                fin,
                data,
            } => {
                out.stream_owner = std::num::NonZeroU64::new(id).filter(|_| !fin);
                out.encode_fragment(opcode, fin, data, masking);
                if fin {
                    out.wake_waiters();
                }
            }
            Outgoing::Data(op, payload, frag) => {
                out.encode_message(op, payload, masking, frag.or(self.shared.fragment_size()))
            }
            Outgoing::Owned(_) => {}
            Outgoing::Frame(f) if f.opcode == OpCode::Close => {
                let reason = f
                    .close_reason()
                    .map_err(|e| Error::InvalidConfig(format!("invalid Close frame: {e}")))?
                    .unwrap_or_else(CloseReason::normal);
                out.encode_raw(f, masking);
                out.state = OutState::Closing(Box::new(reason));
            }
            Outgoing::Frame(f) => out.encode_raw(f, masking),
        }
        let driver = if was_empty { out.driver.clone() } else { None };
        drop(out);
        if let Some(w) = driver {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }

    /// A data message or a streamed piece on a compressing session. The extension chain is
    /// held from before the queue is checked until the frames are queued (see
    /// `Shared::exts`); the queue's lock is let go while the message is compressed, so the
    /// driver goes on writing meanwhile. Streamed pieces are never compressed; they only
    /// hold the chain so that no stream starts while a message is being compressed.
    #[inline(never)]
    fn poll_enqueue_compressing(
        &self,
        cx: &mut Context<'_>,
        what: &Outgoing<'_>,
        chain: &std::sync::Mutex<Chain>,
    ) -> Poll<Result<(), Error>> {
        let mut exts = chain.lock().unwrap_or_else(|p| p.into_inner());
        let (op, payload, frag) = match *what {
            Outgoing::Data(op, payload, frag) => (op, payload, frag),
            Outgoing::Owned(m) => (m.opcode(), m.as_bytes(), None),
            Outgoing::Fragment { .. } | Outgoing::Frame(_) => {
                return self.poll_enqueue_plain(cx, what);
            }
        };
        {
            let mut out = self.shared.out();
            match self.admit(&mut out, cx, what) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let frag = frag.or(self.shared.fragment_size());
        let (out, was_empty) = self.queue_compressed(&mut exts, op, payload, frag)?;
        let driver = if was_empty { out.driver.clone() } else { None };
        drop(out);
        if let Some(w) = driver {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }

    /// Compresses a message (the queue's lock not held) and queues it, unless the session
    /// stopped taking frames meanwhile; returns the queue, still locked, and whether it was
    /// empty. The caller holds the extension chain throughout (see `Shared::exts`).
    fn queue_compressed(
        &self,
        chain: &mut Chain,
        op: OpCode,
        payload: &[u8],
        fragment: Option<usize>,
    ) -> Result<(QueueGuard<'_, Out>, bool), Error> {
        let (rsv, data) = run_extensions(chain, op, payload)?;
        let mut out = self.shared.out();
        if out.state != OutState::Open {
            return Err(out.send_error());
        }
        let was_empty = out.is_empty();
        let masking = self.shared.settings.masking.load(Ordering::Relaxed);
        out.encode_compressed(op, rsv, &data, masking, fragment);
        Ok((out, was_empty))
    }

    fn enqueue<'a>(&'a self, what: Outgoing<'a>) -> impl Future<Output = Result<(), Error>> + 'a {
        poll_fn(move |cx| self.poll_enqueue(cx, &what))
    }

    /// Sends a message: `&str`, `String`, `Vec<u8>`, `Bytes` or [`Message`].
    ///
    /// A payload handed over owned (`String`, `Vec<u8>`, `Bytes`, `Message`) of 16 KiB or more
    /// is queued as it is, not copied: the driver masks it piece by piece as it writes, each
    /// piece while it is still in cache. [`send_binary`](Self::send_binary) and
    /// [`send_text`](Self::send_text) borrow, so they copy (and mask) into the queue at once.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        let m = message.into();
        self.enqueue(Outgoing::Owned(&m)).await
    }

    /// Sends a text message. The text is borrowed, so it is copied into the queue at once; for
    /// a large one, [`send`](Self::send) with an owned `String` or `Bytes` skips the copy.
    pub async fn send_text(&self, text: &str) -> Result<(), Error> {
        self.enqueue(Outgoing::Data(OpCode::Text, text.as_bytes(), None))
            .await
    }

    /// Sends a binary message. The bytes are borrowed, so they are copied (and masked) into
    /// the queue at once — the cheapest send for small messages; for a large payload,
    /// [`send`](Self::send) with an owned `Vec<u8>` or `Bytes` skips the copy.
    pub async fn send_binary(&self, data: &[u8]) -> Result<(), Error> {
        self.enqueue(Outgoing::Data(OpCode::Binary, data, None))
            .await
    }

    /// Sends a message as fragments of at most `fragment_size` bytes (RFC 6455 §5.4).
    pub async fn send_fragmented(
        &self,
        message: impl Into<Message>,
        fragment_size: usize,
    ) -> Result<(), Error> {
        if fragment_size == 0 {
            return Err(Error::InvalidConfig(
                "fragment size must be at least 1 byte".into(),
            ));
        }
        let m = message.into();
        self.enqueue(Outgoing::Data(
            m.opcode(),
            m.as_bytes(),
            Some(fragment_size),
        ))
        .await
    }

    /// Sends a frame exactly as given: no extension, no fragmentation. A Close frame starts
    /// the closing handshake. Control frames must have FIN set and at most 125 bytes.
    pub async fn send_frame(&self, frame: Frame) -> Result<(), Error> {
        if frame.opcode.is_control() && (!frame.fin || frame.payload.len() > 125) {
            return Err(Error::InvalidConfig(
                "control frames must be final and at most 125 bytes".into(),
            ));
        }
        self.enqueue(Outgoing::Frame(&frame)).await
    }

    /// Serializes `value` with the client's converter and sends it (Ktor's `sendSerialized`).
    pub async fn send_serialized<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), Error> {
        let c = self.shared.converter().ok_or(Error::NoConverter)?;
        let m = c
            .serialize(&value as &dyn erased_serde::Serialize)
            .map_err(|e| Error::Serialize(e.into()))?;
        self.send(m).await
    }

    /// The client's content converter, if one is configured.
    pub fn converter(&self) -> Option<&Arc<dyn crate::convert::Converter>> {
        self.shared.converter()
    }

    /// Starts a message to be sent in pieces (RFC 6455 §5.4): text or binary. Other data sends
    /// wait until the writer finishes; pings and pongs still go out. See [`MessageWriter`].
    pub async fn message_writer(&self, opcode: OpCode) -> Result<MessageWriter, Error> {
        if !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return Err(Error::InvalidConfig(
                "a streamed message is text or binary".into(),
            ));
        }
        let id = {
            let mut out = self.shared.out();
            out.next_stream += 1;
            out.next_stream
        };
        Ok(MessageWriter {
            sender: self.clone(),
            id,
            opcode,
            started: false,
            finished: false,
            utf8: (opcode == OpCode::Text).then(wsc_proto::Utf8Validator::default),
            written: 0,
        })
    }

    /// Sends one message whose payload comes from a [`Stream`] of chunks, each as a fragment,
    /// without holding the message whole. Returns the bytes sent. Text must be UTF-8 across
    /// chunk boundaries.
    pub async fn send_stream<S, B, E>(&self, opcode: OpCode, stream: S) -> Result<u64, Error>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut w = self.message_writer(opcode).await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
            let chunk = item.map_err(|e| Error::Serialize(Arc::from(e.into())))?;
            w.write(chunk.as_ref()).await?;
        }
        w.finish().await
    }

    /// Sends one message read from `reader` in fragments of at most `chunk_size` bytes,
    /// without holding it whole. Returns the bytes sent.
    pub async fn send_reader<R: tokio::io::AsyncRead + Unpin>(
        &self,
        opcode: OpCode,
        mut reader: R,
        chunk_size: usize,
    ) -> Result<u64, Error> {
        use tokio::io::AsyncReadExt;
        let mut w = self.message_writer(opcode).await?;
        let mut buf = vec![0u8; chunk_size.max(1)];
        loop {
            let n = reader.read(&mut buf).await.map_err(Error::io)?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).await?;
        }
        w.finish().await
    }

    /// Sends a Ping with `payload` (at most 125 bytes).
    pub async fn ping(&self, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.send_frame(Frame::ping(payload)).await
    }

    fn poll_flush_to(&self, cx: &mut Context<'_>, target: u64) -> Poll<Result<(), Error>> {
        let mut out = self.shared.out();
        if out.written >= target {
            return Poll::Ready(Ok(()));
        }
        if out.state == OutState::Closed && !self.driver_alive() {
            return Poll::Ready(Err(out.send_error()));
        }
        out.waiters.push(cx.waker().clone());
        Poll::Pending
    }

    fn driver_alive(&self) -> bool {
        !self.shared.has_ended()
    }

    /// Waits until everything sent so far has been written to the socket (Ktor's `flush()`).
    pub async fn flush(&self) -> Result<(), Error> {
        let target = self.shared.out().queued;
        poll_fn(|cx| self.poll_flush_to(cx, target)).await
    }

    /// Starts the closing handshake with `reason` and waits for it to finish: the peer's
    /// Close, or the close timeout. Returns the peer's reason (`None` if its Close was empty).
    ///
    /// Closing an already closing or closed session waits for the same outcome.
    pub async fn close(&self, reason: CloseReason) -> Result<Option<CloseReason>, Error> {
        // If a close is already under way (or the session ended) the Close is not queued
        // again; either way the outcome tells how the session ended.
        let _ = self
            .enqueue(Outgoing::Frame(&Frame::close(Some(&reason))))
            .await;
        let outcome = self.outcome().await;
        outcome.result.map(|()| outcome.peer)
    }

    /// Drops the connection at once, without a closing handshake (Ktor's `terminate()`).
    pub fn terminate(&self) {
        self.shared.out().terminate = true;
        self.shared.wake_driver();
    }

    async fn outcome(&self) -> Outcome {
        poll_fn(|cx| self.shared.poll_outcome(cx)).await
    }

    /// Waits for the session to end and returns its close reason (Ktor's `closeReason`): the
    /// peer's if it closed first (an empty Close reads as 1000), ours if we did, 1006 if the
    /// connection dropped, the failure's code (1002, 1007, 1009, 1011 …) if it failed.
    pub async fn close_reason(&self) -> CloseReason {
        self.outcome().await.reason
    }

    /// The close reason if the session has ended, without waiting.
    pub fn try_close_reason(&self) -> Option<CloseReason> {
        self.shared.outcome().map(|o| o.reason)
    }

    /// Whether the session still accepts sends.
    pub fn is_open(&self) -> bool {
        self.shared.out().state == OutState::Open
    }

    /// The largest frame accepted from the peer.
    pub fn max_frame_size(&self) -> usize {
        self.shared.settings.max_frame_size.load(Ordering::Acquire)
    }
    /// Changes the largest frame accepted from the peer, from the next frame on.
    pub fn set_max_frame_size(&self, bytes: usize) {
        self.shared
            .settings
            .max_frame_size
            .store(bytes.max(1), Ordering::Release);
        self.shared.settings_changed();
    }
    /// The largest message accepted from the peer.
    pub fn max_message_size(&self) -> usize {
        self.shared
            .settings
            .max_message_size
            .load(Ordering::Acquire)
    }
    /// Changes the largest message accepted from the peer.
    pub fn set_max_message_size(&self, bytes: usize) {
        self.shared
            .settings
            .max_message_size
            .store(bytes.max(1), Ordering::Release);
        self.shared.settings_changed();
    }
    /// Whether outgoing frames are masked.
    pub fn masking(&self) -> bool {
        self.shared.settings.masking.load(Ordering::Acquire)
    }
    /// Turns masking of outgoing frames on or off (RFC 6455 requires it of clients).
    pub fn set_masking(&self, on: bool) {
        self.shared.settings.masking.store(on, Ordering::Release);
        self.shared.settings_changed();
    }
    /// The keepalive ping interval (`None`: off).
    pub fn ping_interval(&self) -> Option<Duration> {
        self.shared.ping_interval()
    }
    /// Changes the ping interval; the schedule restarts from now.
    pub fn set_ping_interval(&self, every: Option<Duration>) {
        self.shared.set_ping(every.filter(|d| !d.is_zero()), None);
    }
    /// The ping timeout in force.
    pub fn ping_timeout(&self) -> Option<Duration> {
        self.shared.ping_timeout()
    }
    /// Changes the ping timeout (`None`: twice the interval).
    pub fn set_ping_timeout(&self, timeout: Option<Duration>) {
        self.shared.set_ping(
            self.shared.ping_interval(),
            Some(timeout.filter(|d| !d.is_zero())),
        );
    }
}

impl futures_sink::Sink<Message> for Sender {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut out = self.shared.out();
        if out.state != OutState::Open {
            return Poll::Ready(Err(out.send_error()));
        }
        if out.len() >= self.shared.outgoing_capacity() || out.stream_owner.is_some() {
            out.waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        let this = self.get_mut();
        let mut exts = this.shared.exts();
        let mut out = this.shared.out();
        if out.state != OutState::Open {
            return Err(out.send_error());
        }
        let mut was_empty = out.is_empty();
        let masking = this.shared.settings.masking.load(Ordering::Relaxed);
        let fragment = this.shared.fragment_size();
        if !out.queue_owned(item.opcode(), item.bytes(), masking, fragment) {
            match exts.as_deref_mut() {
                None => out.encode_message(item.opcode(), item.as_bytes(), masking, fragment),
                Some(chain) => {
                    drop(out);
                    (out, was_empty) =
                        this.queue_compressed(chain, item.opcode(), item.as_bytes(), fragment)?;
                }
            }
        }
        let target = out.queued;
        let driver = if was_empty { out.driver.clone() } else { None };
        drop(out);
        this.flush_target = Some(target);
        if let Some(w) = driver {
            w.wake();
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        match this.flush_target {
            None => Poll::Ready(Ok(())),
            Some(t) => {
                let r = this.poll_flush_to(cx, t);
                if r.is_ready() {
                    this.flush_target = None;
                }
                r
            }
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        {
            let mut out = this.shared.out();
            if out.state == OutState::Open {
                let masking = this.shared.settings.masking.load(Ordering::Relaxed);
                let r = CloseReason::normal();
                out.encode_raw(&Frame::close(Some(&r)), masking);
                out.state = OutState::Closing(Box::new(r));
                let w = out.driver.clone();
                drop(out);
                if let Some(w) = w {
                    w.wake();
                }
            }
        }
        this.shared.poll_outcome(cx).map(|_| Ok(()))
    }
}

use std::future::Future;

/// Writes one message in pieces; made by [`Sender::message_writer`].
///
/// Each [`write`](MessageWriter::write) sends one fragment; [`finish`](MessageWriter::finish)
/// ends the message. Dropping an unfinished writer cannot leave a half message on the wire for
/// the next one to corrupt, so it closes the session with 1011. Streamed messages are never
/// compressed (RFC 7692 lets any message go uncompressed).
///
/// ```no_run
/// # async fn demo(s: wsc::Sender) -> Result<(), wsc::Error> {
/// let mut w = s.message_writer(wsc::OpCode::Binary).await?;
/// for chunk in [&b"big "[..], b"message"] {
///     w.write(chunk).await?;
/// }
/// w.finish().await?;
/// # Ok(()) }
/// ```
pub struct MessageWriter {
    sender: Sender,
    id: u64,
    opcode: OpCode,
    started: bool,
    finished: bool,
    utf8: Option<wsc_proto::Utf8Validator>,
    written: u64,
}

impl std::fmt::Debug for MessageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageWriter")
            .field("opcode", &self.opcode)
            .field("written", &self.written)
            .finish()
    }
}

impl MessageWriter {
    fn next_opcode(&mut self) -> OpCode {
        if std::mem::replace(&mut self.started, true) {
            OpCode::Continuation
        } else {
            self.opcode
        }
    }

    /// Sends `chunk` as the next fragment. Text must stay UTF-8 across chunks; a chunk may end
    /// inside a character.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if let Some(v) = self.utf8.as_mut() {
            v.feed(chunk)
                .map_err(|_| Error::InvalidConfig("streamed text is not UTF-8".into()))?;
        }
        let was_started = self.started;
        let opcode = self.next_opcode();
        let r = self
            .sender
            .enqueue(Outgoing::Fragment {
                id: self.id,
                opcode,
                fin: false,
                data: chunk,
            })
            .await;
        if r.is_err() {
            self.started = was_started;
        }
        r?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Ends the message. Returns the bytes written.
    pub async fn finish(mut self) -> Result<u64, Error> {
        if let Some(v) = self.utf8.as_mut() {
            v.finish().map_err(|_| {
                Error::InvalidConfig("streamed text ends inside a character".into())
            })?;
        }
        let opcode = self.next_opcode();
        self.sender
            .enqueue(Outgoing::Fragment {
                id: self.id,
                opcode,
                fin: true,
                data: &[],
            })
            .await?;
        self.finished = true;
        Ok(self.written)
    }
}

impl Drop for MessageWriter {
    fn drop(&mut self) {
        if self.finished || !self.started {
            return;
        }
        // A half-sent message cannot be taken back: fail the session rather than let the next
        // message's frames be read as its continuation.
        let owner = self.sender.shared.out().stream_owner;
        if owner.map(|o| o.get()) == Some(self.id) {
            self.sender.shared.close_from_handle(CloseReason::truncated(
                wsc_proto::CloseCode::INTERNAL_ERROR,
                "streamed message abandoned",
            ));
        }
    }
}

/// Receives items from the driver: batches them out of the shared queue under one lock.
pub(crate) struct Inbox {
    shared: Guard,
    /// The run messages are being cut from; it comes before `local`.
    run: wsc_proto::Run,
    local: VecDeque<Item>,
    /// A streamed message `recv()` is reassembling: (text, bytes so far).
    assembling: Option<Box<(bool, bytes::BytesMut)>>,
    done: bool,
}

impl Inbox {
    /// The next item already taken from the shared queue; runs give one message at a time.
    /// Never returns a run.
    fn pop_local(&mut self) -> Option<Item> {
        loop {
            if let Some(m) = self.run.next_message() {
                return Some(Item::Message(m));
            }
            match self.local.pop_front()? {
                Item::Run(r) => self.run = r,
                other => return Some(other),
            }
        }
    }

    /// Puts back an item `pop_local` gave, so that it comes out next.
    fn unget(&mut self, item: Item) {
        let rest = std::mem::take(&mut self.run);
        if !rest.is_empty() {
            self.local.push_front(Item::Run(rest));
        }
        self.local.push_front(item);
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item, Error>>> {
        if let Some(i) = self.pop_local() {
            return Poll::Ready(Some(Ok(i)));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let mut inc = self.shared.inc();
        if !inc.items.is_empty() {
            std::mem::swap(&mut self.local, &mut inc.items);
            inc.bytes = 0;
            inc.count = 0;
            let driver = inc.driver.take();
            drop(inc);
            if let Some(w) = driver {
                w.wake();
            }
            return Poll::Ready(self.pop_local().map(Ok));
        }
        match &inc.end {
            Some(Ok(())) => {
                self.done = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                self.done = true;
                Poll::Ready(Some(Err(Error::clone(e))))
            }
            None => {
                inc.receiver = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The receiving half of a default session (Ktor's `incoming`): whole messages, control frames
/// handled. A [`Stream`] of `Result<Message, Error>`; ends (`None`) after a normal close, or
/// yields the error that failed the session once and then ends.
pub struct Receiver {
    inbox: Inbox,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receiver")
    }
}

impl Receiver {
    /// The next message; `None` after a normal close. Cancel safe.
    pub fn recv(&mut self) -> impl Future<Output = Option<Result<Message, Error>>> + Send + '_ {
        poll_fn(|cx| self.poll_recv(cx))
    }

    /// Receives the next message and reads it as a `T` with the client's converter (Ktor's
    /// `receiveDeserialized`). Consumes exactly one message even when it does not convert; the
    /// error then holds it. After a normal close: [`Error::Closed`] with the close reason.
    pub async fn receive_deserialized<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Result<T, Error> {
        let converter = self
            .inbox
            .shared
            .converter()
            .cloned()
            .ok_or(Error::NoConverter)?;
        match self.recv().await {
            None => Err(Error::Closed(self.inbox.shared.outcome().map(|o| o.reason))),
            Some(Err(e)) => Err(e),
            Some(Ok(m)) => {
                crate::convert::deserialize::<T>(&*converter, &m).map_err(|e| Error::Deserialize {
                    message: Box::new(m),
                    source: e.into(),
                })
            }
        }
    }

    /// The next message as a stream of chunks, for messages too large to hold: with
    /// [`ClientBuilder::stream_incoming`](crate::ClientBuilder::stream_incoming) each chunk is a
    /// frame's payload as it arrived (text still checked as UTF-8 across chunks); otherwise the
    /// whole message is one chunk. Dropping the stream early skips the rest of that message.
    ///
    /// ```no_run
    /// # async fn demo(mut rx: wsc::Receiver) -> Result<(), wsc::Error> {
    /// while let Some(msg) = rx.recv_stream().await {
    ///     let mut msg = msg?;
    ///     let mut total = 0;
    ///     while let Some(chunk) = msg.next_chunk().await {
    ///         total += chunk?.len();
    ///     }
    ///     println!("a {total}-byte message");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn recv_stream(&mut self) -> Option<Result<IncomingMessage<'_>, Error>> {
        loop {
            match poll_fn(|cx| self.inbox.poll_item(cx)).await? {
                Err(e) => return Some(Err(e)),
                Ok(Item::Message(m)) => {
                    return Some(Ok(IncomingMessage {
                        text: m.is_text(),
                        pending: Some(m.into_bytes()),
                        done: true,
                        inbox: &mut self.inbox,
                    }));
                }
                Ok(Item::Chunk {
                    text,
                    first: true,
                    fin,
                    data,
                }) => {
                    return Some(Ok(IncomingMessage {
                        text,
                        pending: Some(data),
                        done: fin,
                        inbox: &mut self.inbox,
                    }));
                }
                Ok(run @ Item::Run(_)) => self.inbox.unget(run),
                // The rest of a message whose stream was dropped.
                Ok(_) => continue,
            }
        }
    }

    /// Small enough to inline into the caller's future, so a message taken from a run goes
    /// straight into the caller's frame.
    #[inline]
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if let Some(m) = self.inbox.run.next_message() {
            return Poll::Ready(Some(Ok(m)));
        }
        self.poll_recv_slow(cx)
    }

    #[inline(never)]
    fn poll_recv_slow(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if let Some(Item::Message(_)) = self.inbox.local.front()
            && let Some(Item::Message(m)) = self.inbox.local.pop_front()
        {
            return Poll::Ready(Some(Ok(m)));
        }
        loop {
            return match self.inbox.poll_item(cx) {
                Poll::Ready(Some(Ok(Item::Message(m)))) => Poll::Ready(Some(Ok(m))),
                Poll::Ready(Some(Ok(Item::Frame(_)))) => continue,
                // `poll_item` hands runs out message by message; put one back if it ever comes.
                Poll::Ready(Some(Ok(run @ Item::Run(_)))) => {
                    self.inbox.unget(run);
                    continue;
                }
                Poll::Ready(Some(Ok(Item::Chunk {
                    text,
                    first,
                    fin,
                    data,
                }))) => {
                    if first {
                        self.inbox.assembling = Some(Box::new((text, bytes::BytesMut::new())));
                    }
                    let Some((_, buf)) = self.inbox.assembling.as_deref_mut() else {
                        continue;
                    };
                    let max = self
                        .inbox
                        .shared
                        .settings
                        .max_message_size
                        .load(Ordering::Acquire);
                    let size = buf.len() + data.len();
                    if size > max {
                        self.inbox.assembling = None;
                        self.inbox.shared.close_from_handle(CloseReason::truncated(
                            wsc_proto::CloseCode::TOO_BIG,
                            "message too big",
                        ));
                        return Poll::Ready(Some(Err(Error::MessageTooBig {
                            size: size as u64,
                            max,
                        })));
                    }
                    buf.extend_from_slice(&data);
                    if !fin {
                        continue;
                    }
                    let Some((text, buf)) = self.inbox.assembling.take().map(|b| *b) else {
                        continue;
                    };
                    let body = buf.freeze();
                    Poll::Ready(Some(Ok(if text {
                        match wsc_proto::Utf8Bytes::try_from_bytes(body) {
                            Ok(t) => Message::Text(t),
                            Err(_) => {
                                return Poll::Ready(Some(Err(Error::protocol(
                                    wsc_proto::ProtocolError::InvalidUtf8,
                                ))));
                            }
                        }
                    } else {
                        Message::Binary(body)
                    })))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

impl Stream for Receiver {
    type Item = Result<Message, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

/// One incoming message read as chunks; made by [`Receiver::recv_stream`]. Also a [`Stream`]
/// of `Result<Bytes, Error>`.
pub struct IncomingMessage<'a> {
    inbox: &'a mut Inbox,
    text: bool,
    pending: Option<Bytes>,
    done: bool,
}

impl std::fmt::Debug for IncomingMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingMessage")
            .field("text", &self.text)
            .field("done", &self.done)
            .finish()
    }
}

impl IncomingMessage<'_> {
    /// Whether this is a text message (its chunks together are UTF-8).
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The next chunk; `None` after the message's last one.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, Error>> {
        poll_fn(|cx| self.poll_chunk(cx)).await
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        if let Some(p) = self.pending.take() {
            return Poll::Ready(Some(Ok(p)));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.inbox.poll_item(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(Item::Chunk {
                first: false,
                fin,
                data,
                ..
            }))) => {
                self.done = fin;
                Poll::Ready(Some(Ok(data)))
            }
            Poll::Ready(Some(Ok(other))) => {
                // Not a continuation of this message: leave it for the next receive.
                self.inbox.unget(other);
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(Error::Closed(None))))
            }
        }
    }
}

impl Stream for IncomingMessage<'_> {
    type Item = Result<Bytes, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}

/// The receiving half of a raw session: every frame as it arrived.
pub struct RawReceiver {
    inbox: Inbox,
}

impl std::fmt::Debug for RawReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawReceiver")
    }
}

impl RawReceiver {
    /// The next frame; `None` once the connection is closed cleanly. Cancel safe.
    pub fn recv(&mut self) -> impl Future<Output = Option<Result<Frame, Error>>> + Send + '_ {
        poll_fn(|cx| self.poll_recv(cx))
    }

    #[inline]
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, Error>>> {
        if let Some(f) = self.inbox.run.next_frame() {
            return Poll::Ready(Some(Ok(f)));
        }
        self.poll_recv_slow(cx)
    }

    #[inline(never)]
    fn poll_recv_slow(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, Error>>> {
        match self.inbox.poll_item(cx) {
            Poll::Ready(Some(Ok(Item::Frame(f)))) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(Some(Ok(run @ Item::Run(_)))) => {
                self.inbox.unget(run);
                self.poll_recv_slow(cx)
            }
            Poll::Ready(Some(Ok(Item::Message(m)))) => {
                Poll::Ready(Some(Ok(Frame::new(m.opcode(), m.into_bytes()))))
            }
            Poll::Ready(Some(Ok(Item::Chunk {
                text,
                first,
                fin,
                data,
            }))) => {
                let opcode = match (first, text) {
                    (false, _) => OpCode::Continuation,
                    (true, true) => OpCode::Text,
                    (true, false) => OpCode::Binary,
                };
                Poll::Ready(Some(Ok(Frame::new(opcode, data).with_fin(fin))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Stream for RawReceiver {
    type Item = Result<Frame, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

pub(crate) fn start<S>(
    io: S,
    shared: Arc<Shared>,
    leftover: bytes::BytesMut,
    raw: bool,
    incoming_extensions: Vec<Box<dyn Extension>>,
) -> (Sender, Inbox)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let driver = Driver::new(io, shared.clone(), leftover, raw, incoming_extensions);
    tokio::spawn(driver);
    let sender = Sender {
        shared: Guard::new(&shared),
        raw,
        flush_target: None,
    };
    (
        sender,
        Inbox {
            shared: Guard::new(&shared),
            run: wsc_proto::Run::default(),
            local: VecDeque::new(),
            assembling: None,
            done: false,
        },
    )
}

/// A default session (Ktor's `DefaultClientWebSocketSession`): send and receive messages;
/// pings answered, keepalive, fragments reassembled, close handshake completed for you.
///
/// Derefs to its [`Sender`], so `session.send(..)`, `session.close(..)`,
/// `session.set_ping_interval(..)` and the rest work directly.
///
/// ```no_run
/// # async fn demo() -> Result<(), wsc::Error> {
/// let client = wsc::Client::new();
/// let mut session = client.connect("ws://127.0.0.1:9001/echo").await?;
/// session.send("hello").await?;
/// if let Some(Ok(reply)) = session.recv().await {
///     println!("{reply:?}");
/// }
/// session.close(wsc::CloseReason::normal()).await?;
/// # Ok(()) }
/// ```
pub struct Session {
    sender: Sender,
    receiver: Receiver,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.call().url_text())
            .finish()
    }
}

impl Session {
    pub(crate) fn new(sender: Sender, inbox: Inbox) -> Self {
        Session {
            sender,
            receiver: Receiver { inbox },
        }
    }
    /// The next message; `None` after a normal close. Cancel safe.
    pub fn recv(&mut self) -> impl Future<Output = Option<Result<Message, Error>>> + Send + '_ {
        self.receiver.recv()
    }
    /// Receives the next message as a `T`; see [`Receiver::receive_deserialized`].
    pub async fn receive_deserialized<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Result<T, Error> {
        self.receiver.receive_deserialized().await
    }
    /// The HTTP exchange that opened the session.
    pub fn call(&self) -> &Call {
        &self.sender.shared.call
    }
    /// The subprotocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.call().protocol()
    }
    /// A sender for other tasks (the session keeps its own).
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }
    /// Splits into a sender and a receiver that can live in different tasks.
    pub fn split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }
    /// The receiving half, borrowed (for `StreamExt` combinators).
    pub fn receiver(&mut self) -> &mut Receiver {
        &mut self.receiver
    }
}

impl std::ops::Deref for Session {
    type Target = Sender;
    fn deref(&self) -> &Sender {
        &self.sender
    }
}

impl Stream for Session {
    type Item = Result<Message, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().receiver.poll_recv(cx)
    }
}

/// A raw session (Ktor's `webSocketRawSession`): every frame in, frames out as given; no
/// automatic Pong, keepalive, reassembly or Close reply. Frames are still validated (RFC 6455
/// §5), so a broken peer fails the session with the right code.
pub struct RawSession {
    sender: Sender,
    receiver: RawReceiver,
}

impl std::fmt::Debug for RawSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSession")
            .field("url", &self.call().url_text())
            .finish()
    }
}

impl RawSession {
    pub(crate) fn new(sender: Sender, inbox: Inbox) -> Self {
        RawSession {
            sender,
            receiver: RawReceiver { inbox },
        }
    }
    /// The next frame. Cancel safe.
    pub fn recv(&mut self) -> impl Future<Output = Option<Result<Frame, Error>>> + Send + '_ {
        self.receiver.recv()
    }
    /// The HTTP exchange that opened the session.
    pub fn call(&self) -> &Call {
        &self.sender.shared.call
    }
    /// Splits into a sender and a receiver.
    pub fn split(self) -> (Sender, RawReceiver) {
        (self.sender, self.receiver)
    }
}

impl std::ops::Deref for RawSession {
    type Target = Sender;
    fn deref(&self) -> &Sender {
        &self.sender
    }
}

impl Stream for RawSession {
    type Item = Result<Frame, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().receiver.poll_recv(cx)
    }
}
