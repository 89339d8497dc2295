//! The transmit half of a connection: what goes out, in which order, and what has been written.
//!
//! Order on the wire: a frame once begun is finished (a large payload is masked piece by piece
//! and nothing comes between its header and its end); at every frame boundary the Pong owed
//! for the latest Ping and a keepalive Ping go first; then the data the senders queued; last,
//! once every byte queued ahead of it is out, the Close (ours, the echo of the peer's, or a
//! failure's), after which nothing is sent. The connection holds at most `MAX_PONGS` Pongs,
//! one Ping and one Close of its own whatever the peer sends: a Ping that arrives while that
//! many Pongs are owed drops the oldest (RFC 6455 §5.5.3 lets an endpoint answer only the
//! latest), so a flood costs a bounded few hundred bytes while a peer that sends a handful of
//! Pings at once gets every answer (Autobahn 2.10 and 2.11 check that).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{Connection, Phase, Queue};
use crate::close::CloseReason;
use crate::frame::{OpCode, encode_frame, header_len};
use crate::outbox::{CloseRequest, Taken};

/// Below this many bytes in the caller's buffer, small queued frames are appended to it (one
/// write for both); larger entries wait for it to drain and are then swapped in whole.
const COALESCE: usize = 64 * 1024;

/// The most Pongs owed at once (each at most 125 bytes of payload).
pub(super) const MAX_PONGS: usize = 16;

/// A large payload on its way out after its header.
struct Sending {
    data: Bytes,
    key: Option<[u8; 4]>,
    /// Payload bytes already handed out.
    done: usize,
}

const NO_CLOSE: u64 = u64::MAX;

pub(super) struct Transmit {
    sending: Option<Box<Sending>>,
    /// The Pong owed for the latest Ping (boxed, as are the other rare parts: every
    /// connection holds this struct, idle or not).
    #[allow(clippy::box_collection)]
    pub(super) pong: Option<Box<VecDeque<Bytes>>>,
    /// A keepalive Ping is to be sent: the one whose Pong the keepalive awaits.
    pub(super) ping: bool,
    /// The payload of the Close to send once the queue ahead of it is drained.
    pub(super) close: Option<Box<Bytes>>,
    /// Where our Close ends on the wire, once handed out (`NO_CLOSE` before): nothing
    /// follows it.
    close_end: u64,
    /// Bytes handed out, and bytes the caller has written of them.
    handed: u64,
    written: u64,
    /// Control frames handed out and not wholly written: (wire offset, length). Data written
    /// is what was written less these.
    #[allow(clippy::box_collection)]
    control: Option<Box<VecDeque<(u64, u64)>>>,
    /// Control bytes in spans already dropped from `control`.
    control_done: u64,
    /// The last look at the queue found nothing to do.
    settled: bool,
}

impl Default for Transmit {
    fn default() -> Self {
        Transmit {
            sending: None,
            pong: None,
            ping: false,
            close: None,
            close_end: NO_CLOSE,
            handed: 0,
            written: 0,
            control: None,
            control_done: 0,
            settled: false,
        }
    }
}

impl Transmit {
    /// Our Close has been handed out.
    fn close_handed(&self) -> bool {
        self.close_end != NO_CLOSE
    }

    /// Owes a Pong for the latest Ping (dropping the oldest owed beyond `MAX_PONGS`).
    pub(super) fn owe_pong(&mut self, payload: Bytes) {
        let pongs = self.pong.get_or_insert_default();
        if pongs.len() == MAX_PONGS {
            pongs.pop_front();
        }
        pongs.push_back(payload);
    }

    /// Nothing handed out is unwritten, and no payload is half sent.
    pub(super) fn idle(&self) -> bool {
        self.written == self.handed && self.sending.is_none()
    }

    /// A Close is waiting for the queue ahead of it.
    pub(super) fn close_pending(&self) -> bool {
        self.close.is_some()
    }

    /// Queues a Close with `reason` (`None`: empty) behind the data already queued.
    pub(super) fn queue_close(&mut self, reason: Option<&CloseReason>) {
        if self.close.is_none() && !self.close_handed() {
            self.close = Some(Box::new(
                reason.map(CloseReason::to_payload).unwrap_or_default(),
            ));
        }
    }

    /// Drops what was not handed out yet (the connection is over).
    pub(super) fn drop_pending(&mut self) {
        self.sending = None;
        self.pong = None;
        self.ping = false;
        self.close = None;
    }

    fn control_span(&mut self, start: u64) {
        let len = self.handed - start;
        if len > 0 {
            self.control.get_or_insert_default().push_back((start, len));
        }
    }
}

impl<Q: Queue> Connection<Q> {
    /// Appends what is ready to go out to `buf` while it holds fewer than `max` bytes (the
    /// last piece of a large payload may take it past `max` by up to half of `max`, rather
    /// than be left for a write of its own).
    ///
    /// Returns `Some(bytes)` instead when `buf` is empty and the next thing to send is an
    /// unmasked large payload: write those bytes as they are (no copy), reporting them with
    /// [`handle_written`](Self::handle_written), before calling again.
    ///
    /// This is also where the connection looks at its queue for a close request or a
    /// termination: call it after the senders may have changed the queue, even when `buf` is
    /// full.
    pub fn poll_transmit(&mut self, buf: &mut BytesMut, max: usize) -> Option<Bytes> {
        self.look_at_queue();
        loop {
            if self.phase == Phase::Finished {
                return None;
            }
            if let Some(s) = self.tx.sending.as_deref_mut() {
                match s.key {
                    None => {
                        if !buf.is_empty() {
                            return None;
                        }
                        let rest = s.data.slice(s.done..);
                        self.tx.handed += rest.len() as u64;
                        self.tx.sending = None;
                        return Some(rest);
                    }
                    Some(key) => {
                        let room = max.saturating_sub(buf.len());
                        if room == 0 {
                            return None;
                        }
                        let rest = s.data.len() - s.done;
                        // A short last piece joins this one rather than go in a write alone.
                        let n = if rest - rest.min(room) < max / 2 {
                            rest
                        } else {
                            room
                        };
                        crate::mask::extend_masked_at(
                            buf,
                            &s.data[s.done..s.done + n],
                            key,
                            s.done,
                        );
                        s.done += n;
                        self.tx.handed += n as u64;
                        if s.done < s.data.len() {
                            return None;
                        }
                        self.tx.sending = None;
                    }
                }
            }
            if buf.len() >= max {
                return None;
            }
            // At a frame boundary: what the connection owes goes ahead of queued data.
            if self.tx.pong.is_some() || self.tx.ping {
                self.put_control(buf);
            }
            if self.tx.close_handed() {
                return None; // nothing after our Close
            }
            if self.take_data(buf, max) {
                continue;
            }
            if self.tx.close.is_some() && self.queue_drained() {
                self.put_close(buf);
                self.maybe_finish();
            }
            return None;
        }
    }

    /// The caller wrote `n` more of the bytes handed out.
    pub fn handle_written(&mut self, n: usize) {
        let tx = &mut self.tx;
        tx.written = (tx.written + n as u64).min(tx.handed);
        if let Some(control) = tx.control.as_deref_mut() {
            while let Some(&(start, len)) = control.front() {
                if start + len > tx.written {
                    break;
                }
                tx.control_done += len;
                control.pop_front();
            }
            if control.is_empty() {
                tx.control = None;
            }
        }
        self.maybe_finish();
    }

    /// Bytes of the senders' queue now written, of [`Outbox::queued`](crate::Outbox::queued)
    /// in all: a flush of everything queued before is done when this reaches what `queued`
    /// was then.
    pub fn data_written(&self) -> u64 {
        let tx = &self.tx;
        let partial = tx
            .control
            .as_deref()
            .and_then(VecDeque::front)
            .map_or(0, |&(start, len)| tx.written.saturating_sub(start).min(len));
        tx.written - tx.control_done - partial
    }

    /// Whether our Close (ours, the echo or a failure's) has been written.
    pub fn close_written(&self) -> bool {
        self.tx.close_handed() && self.tx.written >= self.tx.close_end
    }

    /// Whether our side of the close handshake is over on the wire: our Close (or echo, or a
    /// failure's) is written, or none will be (none was queued, or the connection is finished).
    pub fn close_done(&self) -> bool {
        self.close_written()
            || self.phase == Phase::Finished
            || (self.tx.close.is_none() && !self.tx.close_handed())
    }

    /// Whether the peer is owed a reply (a Pong, or the Close) that has not been handed out.
    /// A caller whose writes are blocked can stop reading while this holds: reading more
    /// could only replace the reply, and a peer that sends without reading then waits.
    pub fn owes_reply(&self) -> bool {
        self.tx.pong.is_some() || self.tx.close.is_some()
    }

    /// Whether anything is ready to hand out or half sent (a caller may skip
    /// [`poll_transmit`](Self::poll_transmit) otherwise, unless the senders touched the queue).
    pub fn has_pending_output(&self) -> bool {
        self.tx.sending.is_some()
            || self.tx.pong.is_some()
            || self.tx.ping
            || self.tx.close.is_some()
    }

    /// Picks up a close request or a termination from the queue.
    pub(super) fn look_at_queue(&mut self) {
        if self.phase == Phase::Finished || (self.tx.settled && !self.queue.touched()) {
            return;
        }
        // Locking clears the queue's mark: what it says is known again only once data has
        // been looked at too.
        self.tx.settled = false;
        let (close, terminate) = {
            let mut out = self.queue.lock();
            (out.take_close(), out.terminating())
        };
        if terminate {
            self.finish();
            return;
        }
        if let Some(req) = close {
            self.on_close_request(req);
        }
    }

    fn on_close_request(&mut self, req: CloseRequest) {
        self.tick(req.at);
        match self.phase {
            Phase::Open => {
                self.phase = Phase::Closing;
                self.keepalive.stop();
                self.tx.ping = false;
                self.tx.queue_close(req.reason.as_ref());
                let deadline = req.at.saturating_add(self.close_timeout());
                let e = self.ending();
                e.ours = Some(req.reason);
                e.deadline = Some(e.deadline.map_or(deadline, |d| d.min(deadline)));
            }
            Phase::PeerClosed => {
                // A raw connection's answer to the peer's Close.
                self.tx.queue_close(req.reason.as_ref());
                self.ending().ours = Some(req.reason);
                self.complete_handshake(req.at);
            }
            _ => {}
        }
    }

    /// Takes queued data while `buf` has room; `true` if anything was taken.
    fn take_data(&mut self, buf: &mut BytesMut, max: usize) -> bool {
        if self.tx.settled && !self.queue.touched() {
            return false;
        }
        let mut out = self.queue.lock();
        let mut took = false;
        while buf.len() < max && self.tx.sending.is_none() {
            match out.take(buf, COALESCE) {
                None => break,
                Some(Taken::Bytes(n)) => self.tx.handed += n as u64,
                Some(Taken::Large { data, key, wire }) => {
                    self.tx.handed += (wire - data.len()) as u64;
                    self.tx.sending = Some(Box::new(Sending { data, key, done: 0 }));
                }
            }
            took = true;
        }
        self.tx.settled = out.is_empty() && out.is_open() && !out.terminating();
        took
    }

    fn queue_drained(&mut self) -> bool {
        let out = self.queue.lock();
        out.is_empty() || out.is_stopped()
    }

    /// Encodes the owed Pong and the keepalive Ping.
    fn put_control(&mut self, buf: &mut BytesMut) {
        let start = self.tx.handed;
        let before = buf.len();
        let mut out = self.queue.lock();
        let masked = out.masking();
        for p in self.tx.pong.take().into_iter().flat_map(|b| *b) {
            let key = masked.then(|| out.next_key());
            encode_frame(buf, OpCode::Pong, true, 0, &p, key);
        }
        if std::mem::take(&mut self.tx.ping)
            && let Some(p) = self.keepalive.awaited()
        {
            let key = masked.then(|| out.next_key());
            encode_frame(buf, OpCode::Ping, true, 0, &p, key);
        }
        drop(out);
        self.tx.handed += (buf.len() - before) as u64;
        self.tx.control_span(start);
    }

    /// Encodes our Close: nothing goes out after it.
    fn put_close(&mut self, buf: &mut BytesMut) {
        let Some(payload) = self.tx.close.take() else {
            return;
        };
        let start = self.tx.handed;
        let key = {
            let mut out = self.queue.lock();
            let k = out.masking().then(|| out.next_key());
            out.stop_taking();
            k
        };
        buf.reserve(header_len(payload.len(), key.is_some()) + payload.len());
        let before = buf.len();
        encode_frame(buf, OpCode::Close, true, 0, &payload, key);
        self.tx.handed += (buf.len() - before) as u64;
        self.tx.control_span(start);
        self.tx.close_end = self.tx.handed;
        self.tx.pong = None;
    }
}
