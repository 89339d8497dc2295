//! Sessions: the handles an application holds once the handshake is done, and the task that
//! drives the transport for them.
//!
//! A [`Session`] delivers whole [`Message`](crate::Message)s while the connection core answers pings, keeps the
//! connection alive, reassembles fragments and runs the close handshake; a [`RawSession`]
//! delivers every [`Frame`](crate::Frame) and does none of it. Both are one type, [`SessionOf`], that splits
//! into a cloneable [`Sender`] and a receiver which can live in different tasks.
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

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use wsc_proto::Extension;

pub use call::Call;
pub(crate) use config::SessionConfig;
pub(crate) use driver::Driver;
pub use receiver::{
    Delivery, Frames, IncomingMessage, Messages, RawReceiver, Receiver, ReceiverOf,
};
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
) -> SessionOf<D>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let driver = Driver::new(io, shared.clone(), leftover, D::RAW, incoming_extensions);
    tokio::spawn(driver);
    SessionOf {
        sender: Sender::new(Handle::new(&shared)),
        receiver: ReceiverOf::new(Inbox::new(Handle::new(&shared))),
    }
}

/// A session: send and receive once the handshake is done. Use it as [`Session`] (Ktor's
/// `DefaultClientWebSocketSession`) or [`RawSession`] (Ktor's `webSocketRawSession`).
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
pub struct SessionOf<D: Delivery> {
    sender: Sender,
    receiver: ReceiverOf<D>,
}

/// A default session: messages in and out; pings answered, keepalive, fragments reassembled
/// and the close handshake completed for you.
pub type Session = SessionOf<Messages>;

/// A raw session: every frame in, frames out as given; no automatic Pong, keepalive,
/// reassembly or Close reply. Frames are still checked (RFC 6455 §5), so a broken peer fails
/// the session with the right code.
pub type RawSession = SessionOf<Frames>;

impl<D: Delivery> std::fmt::Debug for SessionOf<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(std::any::type_name::<Self>())
            .field("url", &self.call().url_text())
            .finish()
    }
}

impl<D: Delivery> SessionOf<D> {
    /// The next message (or frame, raw); `None` after a normal close.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [`ReceiverOf::recv`].
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
    pub fn split(self) -> (Sender, ReceiverOf<D>) {
        (self.sender, self.receiver)
    }
    /// The receiving half, borrowed (for `StreamExt` combinators).
    pub fn receiver(&mut self) -> &mut ReceiverOf<D> {
        &mut self.receiver
    }
}

impl SessionOf<Messages> {
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

impl<D: Delivery> std::ops::Deref for SessionOf<D> {
    type Target = Sender;
    fn deref(&self) -> &Sender {
        &self.sender
    }
}

impl<D: Delivery> Stream for SessionOf<D> {
    type Item = Result<D::Item, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().receiver.poll_recv(cx)
    }
}
