//! Sessions: the handles an application holds once the handshake is done, and the task that
//! drives the transport for them.
//!
//! A [`Session`] delivers whole [`Message`](crate::Message)s while the connection core answers pings, keeps the
//! connection alive, reassembles fragments and runs the close handshake; a [`RawSession`]
//! delivers every [`Frame`](crate::Frame) and does none of it. Both are one type, [`Session`]
//! (`RawSession` is `Session<Frames>`), that splits into a cloneable [`Sender`] and a
//! [`Receiver`] which can live in different tasks.
//!
//! Files: `driver` moves bytes between the transport and `wsc_proto::Connection` (with
//! `buffers` sizing its reads and giving memory back when quiet); `shared` is where the handles and the driver meet; `sender`,
//! `writer` and `receiver` are the handles, `enqueue` how a send reaches the outgoing queue.
//!
//! Cancel safety: each public async method says in its docs whether dropping its future
//! loses or corrupts anything. Sends, receives, `flush`, `close` and the [`MessageWriter`]'s
//! `write` are cancel safe: a message (or a writer's chunk, with the writer's state) is
//! queued whole within one poll or not at all, and a received item is removed from the
//! queue only in the poll that returns it. `send_stream` and `send_reader` are not (a message
//! cut off once begun closes the session with 1011). `tests/cancellation.rs` drops each
//! future at random points against a real server and checks the wire.

mod buffers;
mod call;
pub(crate) mod config;
mod driver;
mod enqueue;
mod lock;
mod receiver;
mod sender;
mod shared;
mod sink;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use wsc_proto::Extension;

pub use call::Call;
pub(crate) use config::SessionConfig;
pub(crate) use driver::Driver;
pub use receiver::{Delivery, Frames, IncomingMessage, Messages, RawReceiver, Receiver};
pub use sender::Sender;
pub(crate) use shared::Shared;
pub use writer::MessageWriter;

use crate::error::Error;
use receiver::Inbox;

/// A session handle's reference to the shared state (senders and the receiver hold one each):
/// when the last one goes, the session is closed normally. Counted in the shared state, so a
/// handle costs no allocation.
pub(crate) struct Handle(Arc<Shared>);

impl Handle {
    fn new(shared: &Arc<Shared>) -> Handle {
        shared.out().handles += 1;
        Handle(shared.clone())
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        Handle::new(&self.0)
    }
}

impl std::ops::Deref for Handle {
    type Target = Arc<Shared>;
    fn deref(&self) -> &Arc<Shared> {
        &self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let last = {
            let mut out = self.0.out();
            out.handles -= 1;
            out.handles == 0
        };
        if last {
            // Every handle is gone without a close: close normally.
            self.0.request_close(Some(wsc_proto::CloseReason::normal()));
        }
    }
}

/// Starts the driver of a session whose handshake completed over `io` and returns its
/// handles.
pub(crate) fn start<S, D: Delivery>(
    io: S,
    shared: Arc<Shared>,
    leftover: bytes::BytesMut,
    incoming_extensions: Vec<Box<dyn Extension>>,
) -> Session<D>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let driver = Driver::new(io, shared.clone(), leftover, D::RAW, incoming_extensions);
    tokio::spawn(driver);
    Session {
        sender: Sender::new(Handle::new(&shared)),
        receiver: Receiver::new(Inbox::new(Handle::new(&shared))),
    }
}

/// A session: send and receive once the handshake is done (Ktor's
/// `DefaultClientWebSocketSession`). `Session` delivers whole messages; [`RawSession`]
/// (`Session<Frames>`, Ktor's `webSocketRawSession`) delivers every frame.
///
/// Sending goes through the session's own methods (`session.send(..)`, `session.close(..)`,
/// `session.set_ping_interval(..)` …), each the same as [`Sender`]'s of that name; for another
/// task, take a [`sender`](Self::sender) or [`split`](Self::split) the session.
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
pub struct Session<D: Delivery = Messages> {
    sender: Sender,
    receiver: Receiver<D>,
}

/// A raw session: every frame in, frames out as given; no automatic Pong, keepalive,
/// reassembly or Close reply. Frames are still checked (RFC 6455 §5), so a broken peer fails
/// the session with the right code.
pub type RawSession = Session<Frames>;

impl<D: Delivery> std::fmt::Debug for Session<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(if D::RAW { "RawSession" } else { "Session" })
            .field("url", &self.call().url_text())
            .finish()
    }
}

impl<D: Delivery> Session<D> {
    /// The next message (or frame, raw); `None` after a normal close.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [`Receiver::recv`].
    pub fn recv(
        &mut self,
    ) -> impl std::future::Future<Output = Option<Result<D::Item, Error>>> + Send + '_ {
        self.receiver.recv()
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
    pub fn split(self) -> (Sender, Receiver<D>) {
        (self.sender, self.receiver)
    }
    /// The receiving half, borrowed (for `StreamExt` combinators).
    pub fn receiver(&mut self) -> &mut Receiver<D> {
        &mut self.receiver
    }

    // The sending side: each method hands the call to the session's `Sender` (the returned
    // futures are the sender's own, so a session's send costs what a sender's does).
    // Each is exactly as cancel safe as the `Sender` method it names.

    /// Sends a message: `&str`, `String`, `Vec<u8>`, `Bytes` or [`Message`](crate::Message).
    /// See [`Sender::send`].
    pub fn send(
        &self,
        message: impl Into<wsc_proto::Message>,
    ) -> impl Future<Output = Result<(), Error>> {
        self.sender.send(message)
    }
    /// Sends a borrowed text message (copied). See [`Sender::send_text`].
    pub fn send_text<'a>(
        &'a self,
        text: &'a str,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        self.sender.send_text(text)
    }
    /// Sends a borrowed binary message (copied). See [`Sender::send_binary`].
    pub fn send_binary<'a>(
        &'a self,
        data: &'a [u8],
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        self.sender.send_binary(data)
    }
    /// Sends a message as fragments of at most `fragment_size` bytes. See
    /// [`Sender::send_fragmented`].
    pub fn send_fragmented(
        &self,
        message: impl Into<wsc_proto::Message>,
        fragment_size: usize,
    ) -> impl Future<Output = Result<(), Error>> {
        self.sender.send_fragmented(message, fragment_size)
    }
    /// Sends a frame exactly as given. See [`Sender::send_frame`].
    pub fn send_frame(&self, frame: wsc_proto::Frame) -> impl Future<Output = Result<(), Error>> {
        self.sender.send_frame(frame)
    }
    /// Serializes `value` with the client's converter and sends it (Ktor's `sendSerialized`).
    /// See [`Sender::send_serialized`].
    pub fn send_serialized<'a, T: serde::Serialize + ?Sized>(
        &'a self,
        value: &'a T,
    ) -> impl Future<Output = Result<(), Error>> + 'a {
        self.sender.send_serialized(value)
    }
    /// The client's content converter, if one is configured.
    pub fn converter(&self) -> Option<&Arc<dyn crate::convert::Converter>> {
        self.sender.converter()
    }
    /// Starts a message to be sent in pieces. See [`Sender::message_writer`].
    pub fn message_writer(
        &self,
        opcode: wsc_proto::OpCode,
    ) -> impl Future<Output = Result<MessageWriter, Error>> {
        self.sender.message_writer(opcode)
    }
    /// Sends one message whose payload comes from a [`Stream`](futures_core::Stream) of
    /// chunks. Returns the bytes sent. See [`Sender::send_stream`].
    pub fn send_stream<S, B, E>(
        &self,
        opcode: wsc_proto::OpCode,
        stream: S,
    ) -> impl Future<Output = Result<u64, Error>>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.sender.send_stream(opcode, stream)
    }
    /// Sends one message read from `reader` in fragments of at most `chunk_size` bytes.
    /// Returns the bytes sent. See [`Sender::send_reader`].
    pub fn send_reader<R: AsyncRead + Unpin>(
        &self,
        opcode: wsc_proto::OpCode,
        reader: R,
        chunk_size: usize,
    ) -> impl Future<Output = Result<u64, Error>> {
        self.sender.send_reader(opcode, reader, chunk_size)
    }
    /// Sends a Ping with `payload` (at most 125 bytes). See [`Sender::ping`].
    pub fn ping(
        &self,
        payload: impl Into<bytes::Bytes>,
    ) -> impl Future<Output = Result<(), Error>> {
        self.sender.ping(payload)
    }
    /// Waits until everything sent so far has been written to the transport (Ktor's
    /// `flush()`). See [`Sender::flush`].
    pub fn flush(&self) -> impl Future<Output = Result<(), Error>> {
        self.sender.flush()
    }
    /// Closes with `reason`, waits for the peer's Close (or the close timeout) and returns the
    /// peer's reason. See [`Sender::close`].
    pub fn close(
        &self,
        reason: wsc_proto::CloseReason,
    ) -> impl Future<Output = Result<Option<wsc_proto::CloseReason>, Error>> {
        self.sender.close(reason)
    }
    /// Drops the connection at once, without a closing handshake (Ktor's `terminate()`).
    pub fn terminate(&self) {
        self.sender.terminate()
    }
    /// Waits for the session to end and returns its close reason (Ktor's `closeReason`). See
    /// [`Sender::close_reason`].
    pub fn close_reason(&self) -> impl Future<Output = wsc_proto::CloseReason> {
        self.sender.close_reason()
    }
    /// The close reason if the session has ended, without waiting.
    pub fn try_close_reason(&self) -> Option<wsc_proto::CloseReason> {
        self.sender.try_close_reason()
    }
    /// Whether the session still accepts sends.
    pub fn is_open(&self) -> bool {
        self.sender.is_open()
    }
    /// The largest frame accepted from the peer.
    pub fn max_frame_size(&self) -> usize {
        self.sender.max_frame_size()
    }
    /// Changes the largest frame accepted from the peer, from the next frame on.
    pub fn set_max_frame_size(&self, bytes: usize) {
        self.sender.set_max_frame_size(bytes)
    }
    /// The largest message accepted from the peer.
    pub fn max_message_size(&self) -> usize {
        self.sender.max_message_size()
    }
    /// Changes the largest message accepted from the peer.
    pub fn set_max_message_size(&self, bytes: usize) {
        self.sender.set_max_message_size(bytes)
    }
    /// Whether outgoing frames are masked.
    pub fn masking(&self) -> bool {
        self.sender.masking()
    }
    /// Turns masking of outgoing frames on or off. See [`Sender::set_masking`].
    pub fn set_masking(&self, on: bool) {
        self.sender.set_masking(on)
    }
    /// The keepalive ping interval (`None`: off).
    pub fn ping_interval(&self) -> Option<Duration> {
        self.sender.ping_interval()
    }
    /// Changes the ping interval; the schedule restarts from now. See
    /// [`Sender::set_ping_interval`].
    pub fn set_ping_interval(&self, every: Option<Duration>) {
        self.sender.set_ping_interval(every)
    }
    /// How long a Ping's Pong may take (`None`: pinging is off, so nothing times out).
    pub fn ping_timeout(&self) -> Option<Duration> {
        self.sender.ping_timeout()
    }
    /// Changes the ping timeout; it applies while pinging is on. See
    /// [`Sender::set_ping_timeout`].
    pub fn set_ping_timeout(&self, timeout: Duration) {
        self.sender.set_ping_timeout(timeout)
    }
}

impl Session<Messages> {
    /// Receives the next message as a `T`; see [`Receiver::receive_deserialized`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [`Receiver::receive_deserialized`].
    pub async fn receive_deserialized<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Result<T, Error> {
        self.receiver.receive_deserialized().await
    }
    /// The next message as a stream of chunks; see [`Receiver::recv_stream`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [`Receiver::recv_stream`].
    pub async fn recv_stream(&mut self) -> Option<Result<IncomingMessage<'_>, Error>> {
        self.receiver.recv_stream().await
    }
}

impl<D: Delivery> Stream for Session<D> {
    type Item = Result<D::Item, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().receiver.poll_recv(cx)
    }
}
