//! The sending half of a session: queues messages and frames into the session's outbox, asks
//! for the close, waits for room, for the flush and for the outcome. It decides nothing about
//! the protocol; the connection core run by the driver does.

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use wsc_proto::outbox::{LARGE_SEND, Payload};
use wsc_proto::{CloseReason, Frame, Message, OpCode, Refused};

use super::Handle;
use super::shared::{Chain, OutGuard, Outcome};
use super::writer::MessageWriter;
use crate::error::Error;

/// The sending half of a session: cheap to clone, usable from many tasks (Ktor's `outgoing`).
///
/// Sends encode and mask the message straight into the session's outgoing queue; the driver
/// task writes it. A payload of 16 KiB or more handed over owned ([`send`](Self::send) with
/// `Bytes`, `Vec<u8>`, `String` or a [`Message`], [`send_frame`](Self::send_frame), the `Sink`)
/// is queued without a copy and masked a piece at a time as it is written; a borrowed one that
/// large is copied once, outside the queue's lock. When the queue holds more than its
/// capacity, `send` waits (backpressure). Sending on a closed session is an [`Error::Closed`]
/// (or the error that ended the session), never a panic.
#[derive(Clone)]
pub struct Sender {
    pub(super) shared: Handle,
    /// What the `Sink`'s flush waits for: the queue's byte count after its last send (0:
    /// nothing sent through it yet; every send queues bytes).
    pub(super) flush_target: u64,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("open", &self.is_open())
            .finish()
    }
}

/// What a send hands to the queue.
#[derive(Clone, Copy)]
pub(super) enum Outgoing<'a> {
    /// A message, fragmented at the given size (`None`: the configured one).
    Data(OpCode, Payload<'a>, Option<usize>),
    Frame(&'a Frame),
    /// A piece of a streamed message from the writer `id`.
    Fragment {
        id: u64,
        opcode: OpCode,
        fin: bool,
        data: &'a [u8],
    },
}

/// A borrowed payload too large to copy under the queue's lock is copied before it.
fn owned_if_large(data: &[u8]) -> Option<Bytes> {
    (data.len() >= LARGE_SEND).then(|| Bytes::copy_from_slice(data))
}

/// What a send refused with `r` reports, once it can say; `out` is the queue's lock the
/// refusal came under (let go here). When the connection has already decided how it ends, the
/// driver publishes that outcome in the same poll, and the send waits for it rather than
/// report a bare `Closed(None)` for what was a failure.
pub(super) fn poll_refused(
    cx: &mut Context<'_>,
    r: Refused,
    out: OutGuard<'_>,
    shared: &Handle,
) -> Poll<Result<(), Error>> {
    let ending = out.outbox.is_ending();
    drop(out);
    if matches!(r, Refused::Closed) && ending && shared.poll_outcome(cx).is_pending() {
        return Poll::Pending;
    }
    Poll::Ready(Err(refused(r, shared)))
}

pub(super) fn refused(r: Refused, shared: &Handle) -> Error {
    match r {
        Refused::Invalid => Error::InvalidConfig(
            "control frames must be final and at most 125 bytes, and a Close frame's payload a \
             valid close code and UTF-8 reason"
                .into(),
        ),
        _ => shared.send_error(),
    }
}

impl Sender {
    pub(super) fn new(shared: Handle) -> Self {
        Sender {
            shared,
            flush_target: 0,
        }
    }

    #[inline]
    pub(super) fn poll_enqueue(
        &self,
        cx: &mut Context<'_>,
        what: &Outgoing<'_>,
    ) -> Poll<Result<(), Error>> {
        if let Some(chain) = self.shared.exts.as_deref() {
            match what {
                Outgoing::Data(..) => return self.poll_enqueue_compressing(cx, what, chain),
                Outgoing::Frame(f) if f.opcode.is_control() => {}
                _ => {
                    // Data frames and streamed pieces take the chain too: nothing may start a
                    // stream or fill the queue between a compressing sender's admission and
                    // its queueing (its compressor has moved on by then).
                    let _chain = chain.lock().unwrap_or_else(|p| p.into_inner());
                    return self.poll_enqueue_plain(cx, what);
                }
            }
        }
        self.poll_enqueue_plain(cx, what)
    }

    #[inline(always)]
    fn poll_enqueue_plain(
        &self,
        cx: &mut Context<'_>,
        what: &Outgoing<'_>,
    ) -> Poll<Result<(), Error>> {
        let mut out = self.shared.out();
        let (r, wake) = match *what {
            Outgoing::Data(op, Payload::Borrowed(p), None) => (out.outbox.send(op, p), false),
            Outgoing::Data(op, payload, frag) => {
                (out.outbox.send_data(op, 0, payload, frag), false)
            }
            Outgoing::Frame(f) => {
                let now = self.shared.now();
                (out.outbox.send_frame(f, now), f.opcode == OpCode::Close)
            }
            Outgoing::Fragment {
                id,
                opcode,
                fin,
                data,
            } => (out.outbox.send_fragment(id, opcode, fin, data), false),
        };
        match r {
            Ok(was_empty) => {
                let driver = if was_empty || wake {
                    out.driver.clone()
                } else {
                    None
                };
                drop(out);
                if let Some(w) = driver {
                    w.wake();
                }
                Poll::Ready(Ok(()))
            }
            Err(Refused::Full | Refused::Busy) => {
                out.wait(cx);
                Poll::Pending
            }
            Err(r) => poll_refused(cx, r, out, &self.shared),
        }
    }

    /// A data message on a compressing session. The extension chain is held from before the
    /// queue is checked until the frames are queued (see `Shared::exts`); the queue's lock is
    /// let go while the message is compressed, so the driver goes on writing meanwhile.
    #[inline(never)]
    fn poll_enqueue_compressing(
        &self,
        cx: &mut Context<'_>,
        what: &Outgoing<'_>,
        chain: &std::sync::Mutex<Chain>,
    ) -> Poll<Result<(), Error>> {
        let Outgoing::Data(op, payload, frag) = *what else {
            return self.poll_enqueue_plain(cx, what);
        };
        let mut exts = chain.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut out = self.shared.out();
            match out.outbox.admits_data() {
                Ok(_) => {}
                Err(Refused::Full | Refused::Busy) => {
                    out.wait(cx);
                    return Poll::Pending;
                }
                Err(r) => {
                    return poll_refused(cx, r, out, &self.shared);
                }
            }
        }
        let input = match payload {
            Payload::Borrowed(b) => b,
            Payload::Owned(b) => &b[..],
        };
        Poll::Ready(self.queue_compressed(&mut exts, op, input, frag))
    }

    /// Compresses a message (the queue's lock not held) and queues it. The caller holds the
    /// extension chain throughout.
    pub(super) fn queue_compressed(
        &self,
        chain: &mut Chain,
        op: OpCode,
        payload: &[u8],
        fragment: Option<usize>,
    ) -> Result<(), Error> {
        // Admitted before compressing: once the compressor has taken the message, the peer's
        // decompressor must get it, or every later message is garbage to it.
        if let Err(r) = self.shared.out().outbox.admits_data() {
            return Err(refused(r, &self.shared));
        }
        let (rsv, data) = wsc_proto::extension::encode_message(chain, op, payload)
            .map_err(Error::InvalidConfig)?;
        let owned = owned_if_large(&data);
        let payload = match &owned {
            Some(b) => Payload::Owned(b),
            None => Payload::Borrowed(&data),
        };
        let mut out = self.shared.out();
        match out.outbox.send_data(op, rsv, payload, fragment) {
            Ok(was_empty) => {
                let driver = was_empty.then(|| out.driver.clone()).flatten();
                drop(out);
                if let Some(w) = driver {
                    w.wake();
                }
                Ok(())
            }
            Err(r) => {
                drop(out);
                Err(refused(r, &self.shared))
            }
        }
    }

    pub(super) fn enqueue<'a>(
        &'a self,
        what: Outgoing<'a>,
    ) -> impl Future<Output = Result<(), Error>> + 'a {
        poll_fn(move |cx| self.poll_enqueue(cx, &what))
    }

    /// A borrowed payload: copied at once if small, or into `Bytes` first (outside the lock)
    /// if large.
    /// Not an `async fn`: a small send is one poll of one future, with no state machine
    /// around it (the 16-byte send is the hot path).
    #[inline]
    fn send_borrowed<'a>(
        &'a self,
        op: OpCode,
        data: &'a [u8],
        fragment: Option<usize>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        let owned = owned_if_large(data);
        poll_fn(move |cx| match &owned {
            None if fragment.is_none() && self.shared.exts.is_none() => {
                self.poll_send_small(cx, op, data)
            }
            Some(b) => self.poll_enqueue(cx, &Outgoing::Data(op, Payload::Owned(b), fragment)),
            None => self.poll_enqueue(cx, &Outgoing::Data(op, Payload::Borrowed(data), fragment)),
        })
    }

    /// The hot path: a borrowed payload under `LARGE_SEND`, no extension, no fragmenting.
    #[inline(always)]
    fn poll_send_small(
        &self,
        cx: &mut Context<'_>,
        op: OpCode,
        data: &[u8],
    ) -> Poll<Result<(), Error>> {
        let mut out = self.shared.out();
        match out.outbox.send(op, data) {
            Ok(false) => Poll::Ready(Ok(())),
            Ok(true) => {
                let driver = out.driver.clone();
                drop(out);
                if let Some(w) = driver {
                    w.wake();
                }
                Poll::Ready(Ok(()))
            }
            Err(Refused::Full | Refused::Busy) => {
                out.wait(cx);
                Poll::Pending
            }
            Err(r) => poll_refused(cx, r, out, &self.shared),
        }
    }

    /// Sends a message: `&str`, `String`, `Vec<u8>`, `Bytes` or [`Message`].
    ///
    /// A payload handed over owned (`String`, `Vec<u8>`, `Bytes`, `Message`) of 16 KiB or more
    /// is queued as it is, not copied: it is masked piece by piece as it is written, each piece
    /// while it is still in cache.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        let m = message.into();
        let payload = if m.len() >= LARGE_SEND {
            Payload::Owned(m.bytes())
        } else {
            Payload::Borrowed(m.as_bytes())
        };
        self.enqueue(Outgoing::Data(m.opcode(), payload, None))
            .await
    }

    /// Sends a text message. The text is borrowed, so it is copied; for a large one,
    /// [`send`](Self::send) with an owned `String` or `Bytes` skips the copy.
    pub fn send_text<'a>(
        &'a self,
        text: &'a str,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        self.send_borrowed(OpCode::Text, text.as_bytes(), None)
    }

    /// Sends a binary message. The bytes are borrowed, so they are copied (and masked) into
    /// the queue at once — the cheapest send for small messages; for a large payload,
    /// [`send`](Self::send) with an owned `Vec<u8>` or `Bytes` skips the copy.
    pub fn send_binary<'a>(
        &'a self,
        data: &'a [u8],
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        self.send_borrowed(OpCode::Binary, data, None)
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
            Payload::Owned(m.bytes()),
            Some(fragment_size),
        ))
        .await
    }

    /// Sends a frame exactly as given: no extension, no fragmentation. A Close frame starts
    /// the closing handshake. Control frames must have FIN set and at most 125 bytes.
    pub async fn send_frame(&self, frame: Frame) -> Result<(), Error> {
        self.enqueue(Outgoing::Frame(&frame)).await
    }

    /// Serializes `value` with the client's converter and sends it (Ktor's `sendSerialized`).
    pub async fn send_serialized<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), Error> {
        let c = self.converter().ok_or(Error::NoConverter)?;
        let m = c
            .serialize(&value as &dyn erased_serde::Serialize)
            .map_err(|e| Error::Serialize(e.into()))?;
        self.send(m).await
    }

    /// The client's content converter, if one is configured.
    pub fn converter(&self) -> Option<&Arc<dyn crate::convert::Converter>> {
        self.shared.config().converter.as_ref()
    }

    /// Starts a message to be sent in pieces (RFC 6455 §5.4): text or binary. Other data sends
    /// wait until the writer finishes; pings and pongs still go out. See [`MessageWriter`].
    pub async fn message_writer(&self, opcode: OpCode) -> Result<MessageWriter, Error> {
        if !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return Err(Error::InvalidConfig(
                "a streamed message is text or binary".into(),
            ));
        }
        let id = self.shared.out().outbox.new_stream();
        Ok(MessageWriter::new(self.clone(), id, opcode))
    }

    /// Sends one message whose payload comes from a [`Stream`] of chunks, each as a fragment,
    /// without holding the message whole. Returns the bytes sent. Text must be UTF-8 across
    /// chunk boundaries ([`Error::InvalidUtf8`] otherwise); an error from `stream` is
    /// [`Error::Source`] and, the message being cut off, closes the session with 1011.
    pub async fn send_stream<S, B, E>(&self, opcode: OpCode, stream: S) -> Result<u64, Error>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut w = self.message_writer(opcode).await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
            let chunk = item.map_err(|e| Error::Source(Arc::from(e.into())))?;
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
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| Error::Source(std::sync::Arc::new(e)))?;
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

    pub(super) fn poll_flush_to(
        &self,
        cx: &mut Context<'_>,
        target: u64,
    ) -> Poll<Result<(), Error>> {
        let mut out = self.shared.out();
        if out.written >= target {
            return Poll::Ready(Ok(()));
        }
        if out.outbox.is_stopped() {
            drop(out);
            return Poll::Ready(Err(self.shared.send_error()));
        }
        out.wait(cx);
        Poll::Pending
    }

    /// Waits until everything sent so far has been written to the transport (Ktor's
    /// `flush()`).
    pub async fn flush(&self) -> Result<(), Error> {
        let target = self.shared.out().outbox.queued();
        poll_fn(|cx| self.poll_flush_to(cx, target)).await
    }

    /// Starts the closing handshake with `reason` and waits for it to finish: the peer's
    /// Close, or the close timeout, which runs from this call (the Close never waits for room
    /// in a full queue; what was queued before it still goes out first). Returns the peer's
    /// reason (`None` if its Close was empty).
    ///
    /// Closing an already closing or closed session waits for the same outcome.
    pub async fn close(&self, reason: CloseReason) -> Result<Option<CloseReason>, Error> {
        self.shared.request_close(Some(reason));
        let outcome = self.outcome().await;
        outcome.result.map(|()| outcome.peer)
    }

    /// Drops the connection at once, without a closing handshake (Ktor's `terminate()`).
    pub fn terminate(&self) {
        self.shared.out().outbox.terminate();
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
        self.shared.out().outbox.is_open()
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
        self.shared.out().outbox.masking()
    }
    /// Turns masking of outgoing frames on or off (RFC 6455 requires it of clients).
    pub fn set_masking(&self, on: bool) {
        self.shared.out().outbox.set_masking(on);
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll};

    use tokio::io::AsyncWriteExt;

    use crate::server::{AcceptConfig, accept};

    /// A send blocked on a full queue, polled again and again with the same waker (a
    /// `select!` or `timeout()` loop), waits as one entry, not one per poll.
    #[tokio::test]
    async fn a_blocked_send_polled_in_a_loop_waits_once() {
        let (mut peer, io) = tokio::io::duplex(64 * 1024);
        peer.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        // The peer never reads: the duplex fills, then the session's queue.
        let session = accept(io, &AcceptConfig::default()).await.unwrap();
        let big = vec![0u8; 256 * 1024];
        let mut sends = 0;
        let mut blocked = loop {
            let mut f = Box::pin(session.send_binary(&big));
            let waker = std::task::Waker::noop();
            match f.as_mut().poll(&mut Context::from_waker(waker)) {
                Poll::Ready(r) => r.unwrap(),
                Poll::Pending => break f,
            }
            sends += 1;
            assert!(sends < 100, "the queue never filled");
            tokio::task::yield_now().await;
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..100_000 {
            assert!(blocked.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(session.shared.out().waiting(), 1);
        drop(peer);
    }

    /// A send refused because the connection just failed reports the failure, not a bare
    /// `Closed(None)`, even when it runs between the connection's decision and the driver
    /// publishing it: it waits for the outcome, which the driver publishes in the same poll.
    #[test]
    fn a_send_refused_as_the_connection_fails_names_the_cause() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;

        use bytes::BytesMut;
        use wsc_proto::Role;
        use wsc_proto::connection::{Config, Connection};

        use super::super::shared::{Outcome, SessionQueue, Shared};
        use super::super::{Call, Handle};
        use crate::error::Error;

        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }

        // A session's shared state, a sender on it and a connection driven by hand (no
        // driver: the test plays its part).
        let session = || {
            let url = url::Url::parse("ws://127.0.0.1:1/").unwrap();
            let call = Call::new(&url, [], [], None, Vec::new());
            let shared = Shared::new(Arc::default(), Vec::new(), Role::Client, call);
            let sender = super::Sender::new(Handle::new(&shared));
            let conn = Connection::new(
                Config::new(Role::Client),
                SessionQueue(shared.clone()),
                Vec::new(),
                Duration::ZERO,
            );
            (shared, sender, conn)
        };
        let (shared, sender, mut conn) = session();
        // A masked frame from the server: the connection fails (1002) and stops taking data.
        conn.handle_read(
            &mut BytesMut::from(&b"\x81\x81\0\0\0\0x"[..]),
            Duration::ZERO,
        );
        let decided = conn.outcome().cloned().expect("the connection failed");
        assert!(shared.outcome().is_none(), "not published yet");

        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = std::task::Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut send = Box::pin(sender.send_text("late"));
        assert!(send.as_mut().poll(&mut cx).is_pending(), "no Closed(None)");
        // What the driver does in the poll that saw the failure.
        let Some(wsc_proto::Failure::Protocol(e)) = decided.failure else {
            panic!("a protocol failure")
        };
        shared.publish_outcome(Outcome {
            reason: decided.reason,
            peer: decided.peer,
            result: Err(Error::protocol(e)),
        });
        assert!(
            flag.0.load(Ordering::SeqCst),
            "woken when the outcome is published"
        );
        match send.as_mut().poll(&mut cx) {
            Poll::Ready(Err(Error::Protocol { .. })) => {}
            other => panic!("{other:?}"),
        }
        // A close the application asked for is refused at once, while its handshake runs.
        let (shared2, sender2, mut conn2) = session();
        shared2.request_close(None);
        for handed_out in [false, true] {
            if handed_out {
                // Our Close goes out: the handshake runs, the outcome is still open.
                let mut wire = BytesMut::new();
                conn2.poll_transmit(&mut wire, 1 << 16);
                assert_eq!(wire.first(), Some(&0x88));
                assert!(conn2.outcome().is_none());
            }
            let mut send2 = Box::pin(sender2.send_text("after close"));
            assert!(
                matches!(
                    send2.as_mut().poll(&mut cx),
                    Poll::Ready(Err(Error::Closed(None)))
                ),
                "refused at once (Close handed out: {handed_out})"
            );
        }
    }
}
