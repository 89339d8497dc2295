//! The application's handles: [`Reconnecting`] (the session: sends, receives, events, close)
//! and [`ReconnectingSender`] (sends only, cheap to clone). They queue and read; every
//! decision about connections is the supervisor's.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::sync::{broadcast, oneshot};
use wsc_proto::{CloseReason, Message};

use super::events::{ConnectionEvent, Events};
use super::inbox::Reader;
use super::queue::{Control, Out};
use crate::convert::Converter;
use crate::error::Error;

/// The sending side of a [`Reconnecting`] session: cheap to clone, valid across reconnects.
pub struct ReconnectingSender {
    pub(super) control: Arc<Control>,
    pub(super) converter: Option<Arc<dyn Converter>>,
}

impl std::fmt::Debug for ReconnectingSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingSender")
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Clone for ReconnectingSender {
    fn clone(&self) -> Self {
        self.control.handles.fetch_add(1, Ordering::Relaxed);
        ReconnectingSender {
            control: self.control.clone(),
            converter: self.converter.clone(),
        }
    }
}

impl Drop for ReconnectingSender {
    fn drop(&mut self) {
        if self.control.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.control.stop(None);
        }
    }
}

impl ReconnectingSender {
    /// Queues `message` for the open connection, or for the next one while disconnected
    /// (or fails with [`Error::Disconnected`], as
    /// [configured](crate::ReconnectConfig::while_disconnected)). While connected it waits
    /// while the client's
    /// [`outgoing_queue_capacity`](crate::ClientBuilder::outgoing_queue_capacity) in bytes is
    /// queued; while disconnected a message that does not fit fails with
    /// [`Error::QueueFull`]. Once the session has ended it fails with what ended it (see
    /// [`Reconnecting::recv`]).
    ///
    /// Cancel safe: if the future is dropped before it returns, the message was not queued.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.control.push(Out::Message(message.into())).await
    }

    /// Serializes `value` with the client's converter and sends it, as
    /// [`Sender::send_serialized`](crate::Sender::send_serialized) does.
    ///
    /// Cancel safe, as [`send`](Self::send).
    pub async fn send_serialized<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), Error> {
        let c = self.converter.as_ref().ok_or(Error::NoConverter)?;
        let m = c
            .serialize(&value as &dyn erased_serde::Serialize)
            .map_err(|e| Error::Serialize(e.into()))?;
        self.send(m).await
    }

    /// Waits until every message sent before this call has been written to a connection and
    /// flushed. While disconnected it waits for the next connection (with
    /// [`WhileDisconnected::Reject`](crate::WhileDisconnected::Reject) it fails at once with
    /// [`Error::Disconnected`]); it fails with what ended the session if that happens first.
    ///
    /// Cancel safe: dropping the future loses nothing (the flush it queued is answered to
    /// nobody).
    pub async fn flush(&self) -> Result<(), Error> {
        let (reply, done) = oneshot::channel();
        self.control.push(Out::Flush(reply)).await?;
        match done.await {
            Ok(r) => r,
            Err(_) => Err(self.control.end_error()),
        }
    }

    /// Whether a connection is open right now.
    pub fn is_connected(&self) -> bool {
        self.control.is_connected()
    }

    /// Stops reconnecting and closes the open connection, if any, with `reason`, after the
    /// messages already handed to it; waits for the closing handshake and returns the peer's
    /// reason, as [`Sender::close`](crate::Sender::close) does (`Ok(None)` if no connection
    /// was open). It ends within the client's
    /// [`close_timeout`](crate::ClientBuilder::close_timeout) whatever the state (connecting,
    /// waiting, a server that does not read): past it the connection is dropped and the
    /// result is [`Error::Timeout`]. Messages sent before it go out first when a connection
    /// is open and takes them in time; those queued while disconnected are dropped. Later
    /// calls return the same result.
    ///
    /// Cancel safe: the close goes on without the future (a later call waits for the same
    /// result).
    pub async fn close(&self, reason: CloseReason) -> Result<Option<CloseReason>, Error> {
        self.control.stop(Some(reason));
        let mut rx = self.control.done.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Ok(None)),
            // The task is gone without saying (its runtime shut down).
            Err(_) => Err(Error::Closed(None)),
        }
    }
}

/// A session that reconnects by itself. Made by [`Client::reconnecting`](crate::Client::reconnecting).
///
/// It has a session's API across connections: [`send`](Self::send),
/// [`send_serialized`](Self::send_serialized), [`flush`](Self::flush),
/// [`recv`](Self::recv) (also a [`Stream`](futures_core::Stream)),
/// [`receive_deserialized`](Self::receive_deserialized) and [`close`](Self::close); what
/// happens to the connections is in [`events`](Self::events).
///
/// ```no_run
/// # async fn demo() -> Result<(), wsc::Error> {
/// let client = wsc::Client::new();
/// let mut rc = client.reconnecting("ws://127.0.0.1:9001/feed", wsc::ReconnectConfig::default())?;
/// let mut events = rc.events();
/// tokio::spawn(async move {
///     while let Some(e) = events.recv().await {
///         eprintln!("connection: {e}");
///     }
/// });
/// rc.send("hello").await?;
/// while let Some(m) = rc.recv().await {
///     match m {
///         Ok(m) => println!("{m:?}"),
///         // What ended a connection (the next one follows), or, last, why the session
///         // gave up.
///         Err(e) => eprintln!("{}", e.chain()),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Reconnecting {
    pub(super) sender: ReconnectingSender,
    pub(super) reader: Reader,
    /// Kept only to subscribe from: it ends with the supervisor, and so do the subscriptions.
    pub(super) events: broadcast::Receiver<ConnectionEvent>,
}

impl std::fmt::Debug for Reconnecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconnecting")
            .field("connected", &self.sender.is_connected())
            .finish()
    }
}

impl Reconnecting {
    /// The next message from whichever connection is open, or the error that ended a
    /// connection (a protocol violation, a message over a limit, a ping timeout, the
    /// network: the session goes on with the next connection).
    ///
    /// When the session gives up (the [retry policy](crate::ReconnectConfig::retry_policy)
    /// says stop, or [`max_attempts`](crate::ReconnectConfig::max_attempts) is reached), the
    /// last item is the error that made it give up; sends then fail with it. `None` after
    /// that, or once the session was closed by the caller or every sender was dropped.
    /// Attempts that could not open show only in the [`events`](Self::events), unless one
    /// ends the session.
    ///
    /// Each connection's messages are read from that connection's own receiving queue:
    /// while the application does not read, the connection reads no further than its
    /// incoming bounds, as a [`Session`](crate::Session) does, and the next connection opens
    /// only once the messages of the last one are read (a connection that ended with only
    /// its error unread does not hold the next one back; of such errors in a row only the
    /// newest is kept).
    ///
    /// Cancel safe: dropping the future loses no message.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        std::future::poll_fn(|cx| self.reader.poll_recv(cx)).await
    }

    /// The next message read as `T` with the client's converter, as
    /// [`Receiver::receive_deserialized`](crate::Receiver::receive_deserialized) does: a
    /// message that does not convert is [`Error::Deserialize`] (it carries the message); an
    /// ended session is [`Error::Closed`].
    ///
    /// Cancel safe: a message is taken only when the future returns.
    pub async fn receive_deserialized<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Result<T, Error> {
        let converter = self.sender.converter.clone().ok_or(Error::NoConverter)?;
        match self.recv().await {
            None => Err(Error::Closed(None)),
            Some(Err(e)) => Err(e),
            Some(Ok(m)) => {
                crate::convert::deserialize::<T>(&*converter, &m).map_err(|e| Error::Deserialize {
                    message: Box::new(m),
                    source: e.into(),
                })
            }
        }
    }

    /// A subscription to state changes, from now on; see [`Events`].
    pub fn events(&self) -> Events {
        Events::new(self.events.resubscribe())
    }
    /// A sender for other tasks.
    pub fn sender(&self) -> ReconnectingSender {
        self.sender.clone()
    }
    /// Sends; see [`ReconnectingSender::send`]. Cancel safe.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.sender.send(message).await
    }
    /// Sends a value; see [`ReconnectingSender::send_serialized`]. Cancel safe.
    pub async fn send_serialized<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), Error> {
        self.sender.send_serialized(value).await
    }
    /// Waits for what was sent to be written; see [`ReconnectingSender::flush`]. Cancel
    /// safe.
    pub async fn flush(&self) -> Result<(), Error> {
        self.sender.flush().await
    }
    /// Closes with `reason` and stops reconnecting, within the close timeout; see
    /// [`ReconnectingSender::close`]. Cancel safe.
    pub async fn close(&self, reason: CloseReason) -> Result<Option<CloseReason>, Error> {
        self.sender.close(reason).await
    }
}

impl futures_core::Stream for Reconnecting {
    type Item = Result<Message, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().reader.poll_recv(cx)
    }
}
