//! The receive half of a connection: bytes in, events out.
//!
//! Frames are decoded off the front of the caller's buffer (payloads split off, not copied);
//! runs of small whole messages are handed out as one [`Run`](crate::Run). A default
//! connection answers Pings (one Pong owed at a time, for the latest), checks Pongs against
//! the keepalive Ping, echoes the peer's Close and reassembles fragments; a raw one hands
//! every frame out. A violation fails the connection once every event decoded before it has
//! been taken (at once when there are none), so that those messages are not lost; nothing
//! after it is read.

use std::time::Duration;

use bytes::BytesMut;

use super::{Connection, Deferred, Event, Inbound, Outcome, Phase, Queue};
use crate::assemble::Assembler;
use crate::close::CloseReason;
use crate::error::ProtocolError;
use crate::frame::{Frame, OpCode};

/// Data frames from this size on are read header first, then payload in place.
const LARGE_FRAME: usize = 16 * 1024;

impl<Q: Queue> Connection<Q> {
    /// Decodes every whole frame at the front of `buf` (a partial one stays for the next
    /// read), read at `now`. After a violation or the end of the close handshake, what
    /// arrives is dropped.
    pub fn handle_read(&mut self, buf: &mut BytesMut, now: Duration) {
        self.tick(now);
        if !self.reading() {
            buf.clear();
            return;
        }
        let runs = !self.streaming;
        loop {
            if runs && let Some(run) = self.decoder.decode_run(buf) {
                self.large_frames = false;
                self.events.push(Event::Run(run));
            }
            match self.decoder.decode(buf) {
                Ok(Some(frame)) => {
                    if !frame.opcode.is_control() {
                        self.large_frames = frame.payload.len() >= LARGE_FRAME;
                    }
                    if let Err(e) = self.on_frame(frame, now) {
                        self.violation(e, now);
                        return;
                    }
                    if !self.reading() {
                        buf.clear();
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.violation(e, now);
                    return;
                }
            }
        }
    }

    /// Frames are still decoded: the connection is open or waiting for the peer's Close, and
    /// no violation is pending.
    fn reading(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Closing) && !self.failure_pending()
    }

    fn inbound(&mut self) -> &mut Inbound {
        let max = self.decoder.limits().max_message_size;
        self.inbound.get_or_insert_with(|| {
            Box::new(Inbound {
                assembler: Assembler::new(max),
                extensions: Box::default(),
            })
        })
    }

    fn on_frame(&mut self, frame: Frame, now: Duration) -> Result<(), ProtocolError> {
        match frame.opcode {
            OpCode::Close => {
                let reason = frame.close_reason()?;
                if self.raw {
                    self.events.push(Event::Frame(frame));
                }
                self.on_peer_close(reason, now);
            }
            _ if self.raw => self.events.push(Event::Frame(frame)),
            OpCode::Ping => {
                if self.phase == Phase::Open {
                    // Only the latest Ping needs an answer (RFC 6455 §5.5.3).
                    self.tx.owe_pong(frame.payload.clone());
                }
                if self.report_control {
                    self.events.push(Event::Ping(frame.payload));
                }
            }
            OpCode::Pong => {
                self.keepalive.on_pong(&frame.payload, now);
                if self.report_control {
                    self.events.push(Event::Pong(frame.payload));
                }
            }
            _ if self.streaming => {
                let i = self.inbound();
                if let Some((text, first, fin, data)) =
                    i.assembler.push_chunk(frame, &mut i.extensions)?
                {
                    self.events.push(Event::Chunk {
                        text,
                        first,
                        fin,
                        data,
                    });
                }
            }
            _ => {
                let i = self.inbound();
                if let Some(m) = i.assembler.push(frame, &mut i.extensions)? {
                    self.events.push(Event::Message(m));
                }
            }
        }
        Ok(())
    }

    fn on_peer_close(&mut self, reason: Option<CloseReason>, now: Duration) {
        self.ending().peer = Some(reason.clone());
        match self.phase {
            Phase::Open if self.raw => {
                // The application sees the Close and answers it.
                self.phase = Phase::PeerClosed;
                self.keepalive.stop();
            }
            Phase::Open => {
                // The peer closes first: what is queued goes out (a Pong owed included), then
                // the echo of its code.
                let echo = reason
                    .as_ref()
                    .map(|r| CloseReason::truncated(r.code(), r.reason()));
                self.tx.queue_close(echo.as_ref());
                self.ending().ours = Some(echo);
                self.stop_sending_data();
                self.set_outcome(Outcome {
                    reason: reason.clone().unwrap_or_else(CloseReason::normal),
                    peer: reason,
                    failure: None,
                });
                self.enter_draining(now);
            }
            Phase::Closing => self.complete_handshake(now),
            _ => {}
        }
    }

    /// The peer broke the rules: the connection fails once the events before the violation
    /// have been taken, or at the close timeout if they are not.
    fn violation(&mut self, error: ProtocolError, now: Duration) {
        if self.is_closed() {
            return;
        }
        if self.events.is_empty() {
            self.fail_protocol(error, now);
            return;
        }
        let before = self.events.len();
        let deadline = now.saturating_add(self.close_timeout());
        let e = self.ending();
        e.deferred = Some(Deferred { error, before });
        e.deadline = Some(e.deadline.map_or(deadline, |d| d.min(deadline)));
    }
}
