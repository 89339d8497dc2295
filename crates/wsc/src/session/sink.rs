//! The `Sink` side of a [`Sender`]: `poll_ready` waits for room, `start_send` queues (owned
//! payloads without a copy), `poll_flush` waits until what was queued is written, `poll_close`
//! closes the session normally and waits for its outcome.

use std::pin::Pin;
use std::task::{Context, Poll};

use wsc_proto::Payload;
use wsc_proto::{CloseReason, Message, Refused};

use super::enqueue::{poll_refused, refused};
use super::sender::Sender;
use crate::error::Error;

/// What a [`Sender`] used as a `Sink` remembers, in one word (every session holds a
/// `Sender`): the queue's byte count its flush waits for (0: nothing sent through it yet;
/// every send queues bytes), and whether `poll_ready` found room for the next `start_send`.
#[derive(Clone, Copy, Default)]
pub(super) struct SinkState(u64);

/// `poll_ready` found room and no `start_send` has used it yet.
const GRANTED: u64 = 1 << 63;

impl SinkState {
    fn flush_target(self) -> u64 {
        self.0 & !GRANTED
    }
    fn set_flush_target(&mut self, target: u64) {
        self.0 = (self.0 & GRANTED) | (target & !GRANTED);
    }
    fn grant(&mut self) {
        self.0 |= GRANTED;
    }
    fn take_grant(&mut self) -> bool {
        let granted = self.0 & GRANTED != 0;
        self.0 &= !GRANTED;
        granted
    }
}

impl futures_sink::Sink<Message> for Sender {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        let mut out = this.shared.out();
        match out.outbox.admits_data() {
            Ok(_) => {
                drop(out);
                this.sink.grant();
                Poll::Ready(Ok(()))
            }
            Err(Refused::Full | Refused::Busy) => {
                out.wait(cx);
                Poll::Pending
            }
            Err(r) => poll_refused(cx, r, out, &this.shared),
        }
    }

    /// Queues `item`. After a `poll_ready` that found room it is taken whatever others queued
    /// since (only an ended session or another task's streamed message refuses it); without
    /// one, a full queue refuses it with [`Error::QueueFull`].
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        let this = self.get_mut();
        let granted = this.sink.take_grant();
        let payload = Payload::Owned(item.bytes());
        // A compressing session whose chain another task has lent sends this message
        // uncompressed rather than block the thread (RFC 7692 lets any message go
        // uncompressed; it leaves the compressor's state alone, so the other task's message
        // still reaches the peer's decompressor in order).
        let chain = this.shared.exts.as_deref().and_then(|c| c.try_lend());
        match chain {
            Some(mut chain) => {
                this.queue_compressed(&mut chain, item.opcode(), item.as_bytes(), None, granted)
                    .map_err(|u| u.into_error(&this.shared))?;
            }
            None => {
                let mut out = this.shared.out();
                let r = match granted {
                    true => out
                        .outbox
                        .send_data_admitted(item.opcode(), 0, payload, None),
                    false => out.outbox.send_data(item.opcode(), 0, payload, None),
                };
                let driver = match r {
                    Ok(was_empty) => was_empty.then(|| out.driver.clone()).flatten(),
                    Err(r) => {
                        drop(out);
                        return Err(refused(r, &this.shared));
                    }
                };
                drop(out);
                if let Some(w) = driver {
                    w.wake();
                }
            }
        }
        let queued = this.shared.out().outbox.queued();
        this.sink.set_flush_target(queued);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        let target = this.sink.flush_target();
        if target == 0 {
            return Poll::Ready(Ok(()));
        }
        let r = this.poll_flush_to(cx, target);
        if r.is_ready() {
            this.sink.set_flush_target(0);
        }
        r
    }

    /// Closes the session normally (1000) and waits for its outcome: `Ok` once the close
    /// handshake completed (or the peer had closed normally), the session's failure otherwise.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.request_close(Some(CloseReason::normal()));
        self.shared.poll_outcome(cx).map(|o| o.result)
    }
}
