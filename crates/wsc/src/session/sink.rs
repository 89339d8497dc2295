//! The `Sink` side of a [`Sender`]: `poll_ready` waits for room, `start_send` queues (owned
//! payloads without a copy), `poll_flush` waits until what was queued is written, `poll_close`
//! closes the session normally and waits for its outcome.

use std::pin::Pin;
use std::task::{Context, Poll};

use wsc_proto::outbox::Payload;
use wsc_proto::{CloseReason, Message, Refused};

use super::enqueue::{poll_refused, refused};
use super::sender::Sender;
use crate::error::Error;

impl futures_sink::Sink<Message> for Sender {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut out = self.shared.out();
        match out.outbox.admits_data() {
            Ok(_) => Poll::Ready(Ok(())),
            Err(Refused::Full | Refused::Busy) => {
                out.wait(cx);
                Poll::Pending
            }
            Err(r) => poll_refused(cx, r, out, &self.shared),
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        let this = self.get_mut();
        let payload = Payload::Owned(item.bytes());
        match this.shared.exts() {
            Some(mut chain) => {
                this.queue_compressed(&mut chain, item.opcode(), item.as_bytes(), None)
                    .map_err(|u| u.into_error(&this.shared))?;
            }
            None => {
                let mut out = this.shared.out();
                let r = out.outbox.send_data(item.opcode(), 0, payload, None);
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
        this.flush_target = this.shared.out().outbox.queued();
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.flush_target == 0 {
            return Poll::Ready(Ok(()));
        }
        let r = this.poll_flush_to(cx, this.flush_target);
        if r.is_ready() {
            this.flush_target = 0;
        }
        r
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.request_close(Some(CloseReason::normal()));
        self.shared.poll_outcome(cx).map(|_| Ok(()))
    }
}
