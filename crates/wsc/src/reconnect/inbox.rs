//! Where received messages wait: the receivers of the session's connections, handed over
//! whole, in order. The application reads each connection's [`Receiver`] directly, so a
//! reader that stops reading gets the connection's own backpressure (its incoming queue
//! bounds what is read from the server, as for a plain session); the supervisor
//! never waits on the application to take a message.
//!
//! What this must keep bounded: at most one connection whose messages are still unread
//! besides the one the application is reading. The supervisor does not open the next
//! connection until the earlier ones are read ([`Inbox::poll_drained`]); a connection that
//! ended with nothing unread but its error leaves only that error (the newest one, if
//! several in a row were never read).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use wsc_proto::Message;

use crate::error::Error;
use crate::session::Receiver;

type Item = Result<Message, Error>;

enum Entry {
    /// A connection's receiver, nothing taken from it yet.
    Receiver(Receiver),
    /// A connection's receiver whose first unread item the supervisor took to look.
    Peeked(Item, Receiver),
    /// What ended a connection whose messages were all read.
    Error(Error),
}

#[derive(Default)]
struct State {
    entries: VecDeque<Entry>,
    /// The application's handle is gone: nothing is kept for it.
    reader_gone: bool,
    /// The session has ended; the error to hand out last, if not yet handed out.
    end: Option<Option<Error>>,
    /// The application, waiting for an entry.
    reader: Option<Waker>,
    /// The supervisor, waiting for the entries to be read.
    supervisor: Option<Waker>,
}

/// Shared by the supervisor (which pushes) and the reading handle.
#[derive(Default)]
pub(super) struct Inbox {
    state: Mutex<State>,
}

impl State {
    /// Reduces ended connections with nothing unread to their error, keeping only the
    /// newest of errors in a row; whether any connection still has unread messages.
    fn compact(&mut self, cx: &mut Context<'_>) -> bool {
        let mut kept = VecDeque::with_capacity(self.entries.len());
        let mut unread = false;
        for entry in std::mem::take(&mut self.entries) {
            let entry = match entry {
                Entry::Receiver(mut rx) => match std::pin::Pin::new(&mut rx).poll_next(cx) {
                    Poll::Ready(None) => continue,
                    Poll::Ready(Some(Err(e))) => Entry::Error(e),
                    Poll::Ready(Some(Ok(m))) => Entry::Peeked(Ok(m), rx),
                    Poll::Pending => Entry::Receiver(rx),
                },
                e => e,
            };
            match entry {
                Entry::Error(e) => {
                    if let Some(Entry::Error(_)) = kept.back() {
                        kept.pop_back();
                    }
                    kept.push_back(Entry::Error(e));
                }
                e => {
                    unread = true;
                    kept.push_back(e);
                }
            }
        }
        self.entries = kept;
        unread
    }
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a new connection's receiver to the reader; gives it back if the reader is gone.
    pub fn push(&self, rx: Receiver) -> Option<Receiver> {
        let mut s = self.lock();
        if s.reader_gone {
            return Some(rx);
        }
        s.entries.push_back(Entry::Receiver(rx));
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        None
    }

    /// The session has ended: after what is queued, the reader gets `error` (if any), then
    /// the end.
    pub fn finish(&self, error: Option<Error>) {
        let mut s = self.lock();
        // The last connection has ended too: its error alone is kept as the others' are.
        s.compact(&mut Context::from_waker(std::task::Waker::noop()));
        s.end = Some(error);
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// Ready once no connection but the one being read has unread messages, so that the
    /// next connection may open. Connections that ended with nothing unread are reduced to
    /// their error, and of errors in a row only the newest is kept.
    pub fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.compact(cx) {
            s.supervisor = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// The next entry for the reader: a receiver to read (with an item already taken from
    /// it, maybe), an item, or the end.
    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Taken> {
        let mut s = self.lock();
        let taken = match s.entries.pop_front() {
            Some(Entry::Receiver(rx)) => Taken::Receiver(None, rx),
            Some(Entry::Peeked(item, rx)) => Taken::Receiver(Some(item), rx),
            Some(Entry::Error(e)) => Taken::Item(Err(e)),
            None => match &mut s.end {
                None => {
                    s.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Some(end) => match end.take() {
                    Some(e) => Taken::Item(Err(e)),
                    None => Taken::End,
                },
            },
        };
        if let Some(w) = s.supervisor.take() {
            w.wake();
        }
        Poll::Ready(taken)
    }

    /// The reading handle is gone: the receivers it would have read are returned.
    fn reader_gone(&self) -> Vec<Receiver> {
        let entries = {
            let mut s = self.lock();
            s.reader_gone = true;
            if let Some(w) = s.supervisor.take() {
                w.wake();
            }
            std::mem::take(&mut s.entries)
        };
        entries
            .into_iter()
            .filter_map(|e| match e {
                Entry::Receiver(rx) | Entry::Peeked(_, rx) => Some(rx),
                Entry::Error(_) => None,
            })
            .collect()
    }
}

/// Reads `rx` to its end and drops what it reads: a connection whose reader is gone goes on
/// reading from the server (answering pings) while senders still use it.
pub(super) fn drain(mut rx: Receiver) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move { while rx.recv().await.is_some() {} });
    }
}

enum Taken {
    Receiver(Option<Item>, Receiver),
    Item(Item),
    End,
}

/// The reading side: the connection being read, then the inbox.
pub(super) struct Reader {
    current: Option<Receiver>,
    inbox: std::sync::Arc<Inbox>,
}

impl Reader {
    pub fn new(inbox: std::sync::Arc<Inbox>) -> Self {
        Reader {
            current: None,
            inbox,
        }
    }

    /// Cancel safe: an item is taken from a receiver only when it is returned.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        loop {
            if let Some(rx) = &mut self.current {
                match std::pin::Pin::new(rx).poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(m))) => return Poll::Ready(Some(Ok(m))),
                    // The error that ended a connection is its last item.
                    Poll::Ready(Some(Err(e))) => {
                        self.current = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Poll::Ready(None) => self.current = None,
                }
            }
            match std::task::ready!(self.inbox.poll_take(cx)) {
                Taken::Receiver(item, rx) => {
                    self.current = Some(rx);
                    if let Some(item) = item {
                        if item.is_err() {
                            self.current = None;
                        }
                        return Poll::Ready(Some(item));
                    }
                }
                Taken::Item(item) => return Poll::Ready(Some(item)),
                Taken::End => return Poll::Ready(None),
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let rest = self.inbox.reader_gone();
        for rx in self.current.take().into_iter().chain(rest) {
            drain(rx);
        }
    }
}
