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
use wsc_proto::{CloseReason, Frame, Message, OpCode};
use wsc_proto::{LARGE_SEND, Payload};

use super::Handle;
use super::enqueue::Outgoing;
use super::shared::Outcome;
use super::sink::SinkState;
use super::writer::MessageWriter;
use crate::error::{Error, Misuse};

/// The sending half of a session: cheap to clone, usable from many tasks (Ktor's `outgoing`).
///
/// Sends encode and mask the message straight into the session's outgoing queue; the driver
/// task writes it. A payload of 16 KiB or more handed over owned ([`send`](Self::send) with
/// `Bytes`, `Vec<u8>`, `String` or a [`Message`], [`send_frame`](Self::send_frame), the `Sink`)
/// is queued without a copy and masked a piece at a time as it is written; a borrowed one that
/// large is copied once, outside the queue's lock. When the queue holds more than its
/// capacity, `send` waits (backpressure). Sending on a closed session is an [`Error::Closed`]
/// (or the error that ended the session), never a panic.
pub struct Sender {
    pub(super) shared: Handle,
    /// What the `Sink` side remembers (a clone starts afresh: it has sent nothing, and the
    /// room a `poll_ready` found is its original's to use).
    pub(super) sink: SinkState,
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        Sender::new(self.shared.clone())
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("open", &self.is_open())
            .finish()
    }
}

impl Sender {
    pub(super) fn new(shared: Handle) -> Self {
        Sender {
            shared,
            sink: SinkState::default(),
        }
    }

    /// Sends a message: `&str`, `String`, `Vec<u8>`, `Bytes` or [`Message`].
    ///
    /// A payload handed over owned (`String`, `Vec<u8>`, `Bytes`, `Message`) of 16 KiB or more
    /// is queued as it is, not copied: it is masked piece by piece as it is written, each piece
    /// while it is still in cache.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The message is queued whole within one poll or not at all, so a future
    /// dropped before it completed sent nothing of it, and the session stays usable. The
    /// message moved into the future is dropped with it; to retry, keep a cheap clone (a
    /// `Bytes` or a [`Message`]).
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The message is queued whole within one poll or not at all, so a future
    /// dropped before it completed sent nothing of it, and the session stays usable.
    pub fn send_text<'a>(
        &'a self,
        text: &'a str,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        self.send_borrowed(OpCode::Text, text.as_bytes(), None)
    }

    /// Sends a binary message. The bytes are borrowed, so they are copied (and masked) into
    /// the queue at once — the cheapest send for small messages; for a large payload,
    /// [`send`](Self::send) with an owned `Vec<u8>` or `Bytes` skips the copy.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The message is queued whole within one poll or not at all, so a future
    /// dropped before it completed sent nothing of it, and the session stays usable.
    pub fn send_binary<'a>(
        &'a self,
        data: &'a [u8],
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        self.send_borrowed(OpCode::Binary, data, None)
    }

    /// Sends a message as fragments of at most `fragment_size` bytes (RFC 6455 §5.4).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. All the fragments are queued within one poll or none is, so a future
    /// dropped before it completed sent nothing of the message (which is dropped with it).
    pub async fn send_fragmented(
        &self,
        message: impl Into<Message>,
        fragment_size: usize,
    ) -> Result<(), Error> {
        if fragment_size == 0 {
            return Err(Misuse::ZeroFragmentSize.into());
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The frame is queued within one poll or not at all, so a future dropped
    /// before it completed sent nothing (the frame is dropped with it).
    pub async fn send_frame(&self, frame: Frame) -> Result<(), Error> {
        self.enqueue(Outgoing::Frame(&frame)).await
    }

    /// Serializes `value` with the client's converter and sends it (Ktor's `sendSerialized`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`send`](Self::send): a future dropped before it completed sent
    /// nothing of the value (it is serialized again by the next call).
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it completes in its first poll, and nothing goes on the wire until the
    /// writer's first [`write`](MessageWriter::write).
    pub async fn message_writer(&self, opcode: OpCode) -> Result<MessageWriter, Error> {
        if !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return Err(Misuse::NotDataOpcode(opcode).into());
        }
        let id = self.shared.out().outbox.new_stream();
        Ok(MessageWriter::new(self.clone(), id, opcode))
    }

    /// Sends one message whose payload comes from a [`Stream`](futures_core::Stream) of chunks,
    /// each as a fragment, without holding the message whole. Returns the bytes sent. Text
    /// must be UTF-8 across chunk boundaries ([`Error::InvalidUtf8`] otherwise); an error from
    /// `stream` is [`Error::Source`] and, the message being cut off, closes the session with
    /// 1011.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe. Dropping the future once a chunk has been sent drops the message
    /// half sent, which closes the session with 1011 (as dropping a [`MessageWriter`] does);
    /// a chunk taken from `stream` but not yet queued is lost. Dropped before any chunk was
    /// queued, it sent nothing. To send with a timeout or in `select!`, drive a
    /// [`MessageWriter`] yourself: its [`write`](MessageWriter::write) is cancel safe.
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
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, for the reasons [`send_stream`](Self::send_stream) gives: a message
    /// cut off once begun closes the session with 1011, and bytes read from `reader` but not
    /// yet queued are lost.
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`send_frame`](Self::send_frame).
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. It only waits: what was sent still goes out whether or not the future is
    /// dropped, and a later `flush` waits for it (and anything sent since).
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The close is asked for in the first poll and then only waited for:
    /// dropping the future does not stop the closing handshake (nor the close timeout), and
    /// `close` again (its reason is then ignored) or [`close_reason`](Self::close_reason)
    /// waits for the same outcome. A future dropped before its first poll asked for nothing.
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
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
    /// A knob for testing a peer, not for applications: turns masking of outgoing frames on
    /// or off from the next frame queued, overriding what the connection decided from its role
    /// and [`ClientBuilder::masking`](crate::ClientBuilder::masking) (RFC 6455 §5.3 requires a
    /// client to mask and a server not to; a peer may close on either mistake).
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
    /// How long a Ping's Pong may take (`None`: pinging is off, so nothing times out).
    pub fn ping_timeout(&self) -> Option<Duration> {
        self.shared.ping_interval().and(self.shared.ping_timeout())
    }
    /// Changes the ping timeout (at least 1 ms); it applies while pinging is on. The schedule
    /// restarts from now.
    pub fn set_ping_timeout(&self, timeout: Duration) {
        self.shared
            .set_ping(self.shared.ping_interval(), Some(Some(timeout)));
    }
}

#[cfg(test)]
mod tests;
