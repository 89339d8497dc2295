//! How a send reaches the session's outgoing queue: the hot path for small borrowed
//! payloads, owned large payloads queued without a copy, compression under the extension
//! chain's lock, and what a refused send reports.

use std::future::{Future, poll_fn};
use std::task::{Context, Poll};

use bytes::Bytes;
use wsc_proto::{Frame, OpCode, Refused};
use wsc_proto::{LARGE_SEND, Payload};

use super::Handle;
use super::sender::Sender;
use super::shared::{Chain, ChainLock, OutGuard};
use crate::error::{Error, Misuse};

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
    /// A piece of [`LARGE_SEND`] bytes or more, copied out of the writer's buffer before the
    /// queue's lock is taken (made by [`Sender::enqueue`] from a `Fragment`).
    LargeFragment {
        id: u64,
        opcode: OpCode,
        fin: bool,
        data: &'a Bytes,
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

/// Why a compressed message was not queued.
pub(super) enum Unqueued {
    /// The queue refused it (see [`poll_refused`] for what that reports).
    Refused(Refused),
    /// An extension failed to encode it.
    Failed(Error),
}

impl Unqueued {
    /// The error to report at once, for a caller that cannot wait for the outcome.
    pub(super) fn into_error(self, shared: &Handle) -> Error {
        match self {
            Unqueued::Refused(r) => refused(r, shared),
            Unqueued::Failed(e) => e,
        }
    }
}

pub(super) fn refused(r: Refused, shared: &Handle) -> Error {
    match r {
        // Only a Sink's send meets these (other sends wait): a full queue when it sends
        // without poll_ready, a streamed message begun since its poll_ready.
        Refused::Full => Error::QueueFull,
        Refused::Busy => Misuse::StreamInProgress.into(),
        Refused::Invalid => Misuse::InvalidFrame.into(),
        _ => shared.send_error(),
    }
}

impl Sender {
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
                    // stream between a compressing sender's admission and its queueing (its
                    // compressor has moved on by then).
                    let Poll::Ready(_chain) = chain.poll_lend(cx) else {
                        return Poll::Pending;
                    };
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
            } => (
                out.outbox
                    .send_fragment(id, opcode, fin, Payload::Borrowed(data)),
                false,
            ),
            Outgoing::LargeFragment {
                id,
                opcode,
                fin,
                data,
            } => (
                out.outbox
                    .send_fragment(id, opcode, fin, Payload::Owned(data)),
                false,
            ),
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
        chain: &ChainLock,
    ) -> Poll<Result<(), Error>> {
        let Outgoing::Data(op, payload, frag) = *what else {
            return self.poll_enqueue_plain(cx, what);
        };
        let Poll::Ready(mut exts) = chain.poll_lend(cx) else {
            return Poll::Pending;
        };
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
        // Admitted just now, with the chain held since: what control frames queue meanwhile
        // does not count against it.
        match self.queue_compressed(&mut exts, op, input, frag, true) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(Unqueued::Failed(e)) => Poll::Ready(Err(e)),
            // The connection stopped taking data while the message was compressed: report
            // what ended it, as any other refused send does (polled again, the send is refused
            // before compressing anything).
            Err(Unqueued::Refused(r)) => poll_refused(cx, r, self.shared.out(), &self.shared),
        }
    }

    /// Compresses a message (the queue's lock not held) and queues it. The caller holds the
    /// extension chain throughout. `admitted`: the caller found room already (its own check,
    /// or a `Sink`'s `poll_ready`), so only an ended queue or a streamed message refuses it.
    pub(super) fn queue_compressed(
        &self,
        chain: &mut Chain,
        op: OpCode,
        payload: &[u8],
        fragment: Option<usize>,
        admitted: bool,
    ) -> Result<(), Unqueued> {
        // Admitted before compressing: once the compressor has taken the message, the peer's
        // decompressor must get it, or every later message is garbage to it.
        {
            let out = self.shared.out();
            match admitted {
                true => out.outbox.still_admits_data(),
                false => out.outbox.admits_data().map(drop),
            }
            .map_err(Unqueued::Refused)?;
        }
        let (rsv, data) = wsc_proto::encode_message(chain, op, payload)
            .map_err(|e| Unqueued::Failed(Error::Extension(e)))?;
        let owned = owned_if_large(&data);
        let payload = match &owned {
            Some(b) => Payload::Owned(b),
            None => Payload::Borrowed(&data),
        };
        let mut out = self.shared.out();
        match out.outbox.send_data_admitted(op, rsv, payload, fragment) {
            Ok(was_empty) => {
                let driver = was_empty.then(|| out.driver.clone()).flatten();
                drop(out);
                if let Some(w) = driver {
                    w.wake();
                }
                Ok(())
            }
            Err(r) => Err(Unqueued::Refused(r)),
        }
    }

    /// Queues `what`, waiting for room. A large streamed piece is copied here, once, so
    /// that the queue's lock is never held to copy or mask it.
    pub(super) fn enqueue<'a>(
        &'a self,
        what: Outgoing<'a>,
    ) -> impl Future<Output = Result<(), Error>> + 'a {
        let owned = match what {
            Outgoing::Fragment { data, .. } => owned_if_large(data),
            _ => None,
        };
        poll_fn(move |cx| match (&owned, what) {
            (
                Some(data),
                Outgoing::Fragment {
                    id, opcode, fin, ..
                },
            ) => self.poll_enqueue(
                cx,
                &Outgoing::LargeFragment {
                    id,
                    opcode,
                    fin,
                    data,
                },
            ),
            _ => self.poll_enqueue(cx, &what),
        })
    }

    /// A borrowed payload: copied at once if small, or into `Bytes` first (outside the lock)
    /// if large.
    /// Not an `async fn`: a small send is one poll of one future, with no state machine
    /// around it (the 16-byte send is the hot path).
    #[inline]
    pub(super) fn send_borrowed<'a>(
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
}
