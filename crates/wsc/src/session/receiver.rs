//! The receiving half of a session: takes what the driver handed over, a whole read's worth at
//! a time under one lock, and gives it out one message (or frame) per call.
//!
//! Default and raw sessions share this code; what `recv()` yields is their [`Delivery`]. A
//! receiver only takes and waits: waking the driver when it has taken items is the one thing it
//! tells anyone, and no protocol decision depends on it.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use wsc_proto::{Event, Frame, Message, Run};

use super::Handle;
use crate::error::Error;

mod sealed {
    use super::*;

    /// What a [`Delivery`] does inside the crate. It lives in a private module, so no other
    /// crate can name it, implement [`Delivery`] or call these.
    pub trait Sealed {
        /// No automation: the connection core's raw setting.
        const RAW: bool;
        /// The next item from `inbox`.
        fn poll_next(
            inbox: &mut Inbox,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<<Self as Delivery>::Item, Error>>>
        where
            Self: Delivery;
    }
}

/// What a session's receiver hands out: whole messages in a default session ([`Messages`]),
/// every frame as it arrived in a raw one ([`Frames`]). Sealed: these two are all there is.
pub trait Delivery: sealed::Sealed + Send + 'static {
    /// What `recv()` yields.
    type Item: Send + 'static;
}

/// A default session's delivery: whole [`Message`]s; control frames are handled for you.
#[derive(Debug)]
pub struct Messages;

/// A raw session's delivery: every [`Frame`] as it arrived, pings, pongs and the Close too.
#[derive(Debug)]
pub struct Frames;

/// Where a receiver keeps what it took from the shared queue. Public only for the sealed
/// trait's signature: this module is private, so no other crate can name it.
pub struct Inbox {
    shared: Handle,
    /// The run messages are being cut from; it comes before `local`.
    run: Run,
    local: VecDeque<Event>,
    /// A streamed message `recv()` is putting together, or skipping after it passed the limit.
    assembling: Option<Box<Assembling>>,
    done: bool,
}

struct Assembling {
    text: bool,
    /// `None`: the message passed the limit and its remaining pieces are skipped.
    buf: Option<BytesMut>,
}

impl Inbox {
    pub(super) fn new(shared: Handle) -> Self {
        Inbox {
            shared,
            run: Run::default(),
            local: VecDeque::new(),
            assembling: None,
            done: false,
        }
    }

    /// The next item already taken from the shared queue; runs are cut into messages first.
    fn pop_local(&mut self) -> Option<Event> {
        loop {
            if let Some(m) = self.run.next_message() {
                return Some(Event::Message(m));
            }
            match self.local.pop_front()? {
                Event::Run(r) => self.run = r,
                other => return Some(other),
            }
        }
    }

    /// Puts back an item `poll_item` gave, so that it comes out next.
    fn unget(&mut self, item: Event) {
        let rest = std::mem::take(&mut self.run);
        if !rest.is_empty() {
            self.local.push_front(Event::Run(rest));
        }
        self.local.push_front(item);
    }

    /// The next item: one already taken, or everything the driver handed over since (which
    /// wakes the driver if it waits for room). Never a run: runs are taken apart here.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, Error>>> {
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
            let driver = std::mem::take(&mut inc.driver_waits);
            drop(inc);
            if driver {
                self.shared.wake_driver();
            }
            return Poll::Ready(self.pop_local().map(Ok));
        }
        if !inc.ended {
            inc.receiver = Some(cx.waker().clone());
            return Poll::Pending;
        }
        drop(inc);
        self.done = true;
        Poll::Ready(match self.shared.outcome() {
            Some(super::shared::Outcome { result: Err(e), .. }) => Some(Err(e)),
            _ => None,
        })
    }

    /// A message from the pieces of a streamed one (a session with `stream_incoming` read with
    /// `recv()`): put together within `max_message_size`. One that passes it is an error for
    /// that message alone (its other pieces are skipped); the session goes on.
    fn assemble(
        &mut self,
        text: bool,
        first: bool,
        fin: bool,
        data: Bytes,
    ) -> Option<Result<Message, Error>> {
        if first {
            self.assembling = Some(Box::new(Assembling {
                text,
                buf: Some(BytesMut::new()),
            }));
        }
        let a = self.assembling.as_deref_mut()?;
        let max = self
            .shared
            .settings
            .max_message_size
            .load(Ordering::Acquire);
        let result = match a.buf.as_mut() {
            None => None,
            Some(buf) if buf.len() + data.len() > max => {
                let size = (buf.len() + data.len()) as u64;
                a.buf = None;
                Some(Err(Error::MessageTooBig {
                    size,
                    max,
                    limit: crate::error::SizeLimit::Message,
                }))
            }
            Some(buf) => {
                buf.extend_from_slice(&data);
                None
            }
        };
        if fin {
            let a = self.assembling.take()?;
            if result.is_some() {
                return result;
            }
            let body = a.buf?.freeze();
            return Some(Ok(if a.text {
                // Each piece was checked as UTF-8 in order; the whole is UTF-8.
                match wsc_proto::Utf8Bytes::try_from_bytes(body) {
                    Ok(t) => Message::Text(t),
                    Err(_) => {
                        return Some(Err(Error::protocol(wsc_proto::ProtocolError::InvalidUtf8)));
                    }
                }
            } else {
                Message::Binary(body)
            }));
        }
        result
    }
}

impl Delivery for Messages {
    type Item = Message;
}

impl sealed::Sealed for Messages {
    const RAW: bool = false;

    /// Small enough to inline into the caller's future, so a message taken from a run goes
    /// straight into the caller's frame.
    #[inline]
    fn poll_next(inbox: &mut Inbox, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if let Some(m) = inbox.run.next_message() {
            return Poll::Ready(Some(Ok(m)));
        }
        poll_message_slow(inbox, cx)
    }
}

#[inline(never)]
fn poll_message_slow(
    inbox: &mut Inbox,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Message, Error>>> {
    loop {
        return match inbox.poll_item(cx) {
            Poll::Ready(Some(Ok(Event::Message(m)))) => Poll::Ready(Some(Ok(m))),
            Poll::Ready(Some(Ok(Event::Chunk {
                text,
                first,
                fin,
                data,
            }))) => match inbox.assemble(text, first, fin, data) {
                Some(r) => Poll::Ready(Some(r)),
                None => continue,
            },
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        };
    }
}

impl Delivery for Frames {
    type Item = Frame;
}

impl sealed::Sealed for Frames {
    const RAW: bool = true;

    #[inline]
    fn poll_next(inbox: &mut Inbox, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, Error>>> {
        if let Some(f) = inbox.run.next_frame() {
            return Poll::Ready(Some(Ok(f)));
        }
        poll_frame_slow(inbox, cx)
    }
}

#[inline(never)]
fn poll_frame_slow(inbox: &mut Inbox, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, Error>>> {
    loop {
        return match inbox.poll_item(cx) {
            Poll::Ready(Some(Ok(Event::Frame(f)))) => Poll::Ready(Some(Ok(f))),
            // `poll_item` cuts runs into messages; a raw reader reads them as the frames they were.
            Poll::Ready(Some(Ok(Event::Message(m)))) => {
                Poll::Ready(Some(Ok(Frame::new(m.opcode(), m.into_bytes()))))
            }
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        };
    }
}

/// The receiving half of a session (Ktor's `incoming`): a [`Stream`](futures_core::Stream) of
/// messages, or of frames for a raw session. Ends (`None`) after a normal close, or yields the
/// error that failed the session once and then ends. Either way it ends only once the
/// session's own Close is written (or cannot be), so a program may exit as soon as it does.
///
/// `Receiver` yields whole messages; [`RawReceiver`] (`Receiver<Frames>`) every frame.
pub struct Receiver<D: Delivery = Messages> {
    inbox: Inbox,
    _delivery: PhantomData<fn() -> D>,
}

/// The receiving half of a raw session: every frame as it arrived.
pub type RawReceiver = Receiver<Frames>;

impl<D: Delivery> std::fmt::Debug for Receiver<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if D::RAW { "RawReceiver" } else { "Receiver" })
    }
}

impl<D: Delivery> Receiver<D> {
    pub(super) fn new(inbox: Inbox) -> Self {
        Receiver {
            inbox,
            _delivery: PhantomData,
        }
    }

    /// The next message (or frame); `None` after a normal close.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A message is taken from the queue only in the poll that returns it (the
    /// pieces of one being put together are kept by the receiver, not the future), so a
    /// future dropped before it completed lost nothing: the next `recv` returns it.
    pub fn recv(&mut self) -> impl Future<Output = Option<Result<D::Item, Error>>> + Send + '_ {
        poll_fn(|cx| D::poll_next(&mut self.inbox, cx))
    }

    pub(super) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<D::Item, Error>>> {
        D::poll_next(&mut self.inbox, cx)
    }
}

impl Receiver<Messages> {
    /// Receives the next message and reads it as a `T` with the client's converter (Ktor's
    /// `receiveDeserialized`). Consumes exactly one message even when it does not convert; the
    /// error then holds it. After a normal close: [`Error::Closed`] with the close reason.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Self::recv): the message is taken and converted in the poll
    /// that returns it, so a future dropped before it completed lost nothing.
    pub async fn receive_deserialized<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Result<T, Error> {
        let converter = self
            .inbox
            .shared
            .config()
            .converter
            .clone()
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
    /// frame's payload, or a piece of at most 64 KiB of a larger frame, handed over as soon as
    /// it arrived (text still checked as UTF-8 across chunks); otherwise the whole message is
    /// one chunk. Dropping the stream early skips the rest of that message.
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The message's first chunk is taken only in the poll that returns the
    /// [`IncomingMessage`], so a future dropped before it completed lost nothing. (Dropping
    /// the `IncomingMessage` itself is what skips the rest of its message.)
    pub async fn recv_stream(&mut self) -> Option<Result<IncomingMessage<'_>, Error>> {
        loop {
            match poll_fn(|cx| self.inbox.poll_item(cx)).await? {
                Err(e) => return Some(Err(e)),
                Ok(Event::Message(m)) => {
                    return Some(Ok(IncomingMessage {
                        text: m.is_text(),
                        pending: Some(m.into_bytes()),
                        done: true,
                        inbox: &mut self.inbox,
                    }));
                }
                Ok(Event::Chunk {
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
                // The rest of a message whose stream was dropped, or nothing for this reader.
                Ok(_) => continue,
            }
        }
    }
}

impl<D: Delivery> Stream for Receiver<D> {
    type Item = Result<D::Item, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

/// One incoming message read as chunks; made by [`Receiver::recv_stream`]. Also a
/// [`Stream`](futures_core::Stream) of `Result<Bytes, Error>`.
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A chunk is taken only in the poll that returns it, so a future dropped
    /// before it completed lost nothing: the next `next_chunk` returns it.
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
            Poll::Ready(Some(Ok(Event::Chunk {
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
