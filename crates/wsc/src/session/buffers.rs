//! The driver's buffers: how much to read and where, what waits to be written, and when a
//! quiet connection gives them back.
//!
//! An idle connection holds no buffer (it probes with a small one on the stack and allocates
//! only when bytes arrive). Large frames are read on frame boundaries, so that payloads land in
//! place and are handed out without a copy. Small frames are read many at a time. Frames cut
//! out of a buffer stay alive in the incoming queue or with the application, so a full buffer
//! is set aside rather than reused, and the oldest one set aside takes its place once everything
//! cut out of it is gone (see [`ReadBuf::make_room`]).
//!
//! What a buffer reserves follows the bytes that arrived, never a length a header declares: a
//! frame up to [`READ_AHEAD`] is reserved whole, a larger one grows its buffer as its bytes
//! come (doubling, so it is moved fewer bytes in all than it holds), so a peer that sends
//! headers and then nothing costs a connection about [`READ_AHEAD`] of address space.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;

/// How long a connection must be quiet before its buffers are given back.
pub(crate) const TRIM_AFTER: Duration = Duration::from_secs(1);
/// What a read of small frames asks for.
const READ_CHUNK: usize = 64 * 1024;
/// Data frames from this size on are read header first, then payload in place.
const LARGE_FRAME: usize = 16 * 1024;
/// What a read buffer for large frames is allocated at, at least: several frames share it.
const LARGE_BUFFER: usize = 256 * 1024;
/// At most this many read buffers are set aside for reuse; fewer when the incoming queue's
/// byte capacity is covered with fewer.
const SPARES: usize = 16;
/// Below this much free room, the buffer is grown before reading small frames.
const MIN_READ: usize = 4096;
/// How far a read buffer may grow beyond the bytes it holds, at least, to make room for a
/// frame still arriving: a frame up to this size lands whole in a buffer reserved for it,
/// a larger one grows its buffer by as much as it holds (never by what a header declares).
const READ_AHEAD: usize = 1024 * 1024;
/// The stack buffer an idle connection reads into before it has a read buffer.
const PROBE: usize = 512;

/// What the connection knows about the frame in progress, for sizing the next read.
pub(crate) struct Hint {
    /// Bytes the frame in progress occupies in all (header and payload), 0 if unknown.
    pub wanted: usize,
    /// The last data frame was large: read the next header on its own.
    pub large_frames: bool,
    /// The longest frame header the peer can send (masked frames from a client are longer).
    pub max_header: usize,
    /// Payload bytes the incoming queue may hold: how many spare buffers are worth keeping.
    pub queue_bytes: usize,
}

#[derive(Default)]
pub(crate) struct ReadBuf {
    pub buf: BytesMut,
    /// Buffers used before the current one, oldest first (boxed: the driver keeps to its size).
    #[allow(clippy::box_collection)]
    spares: Option<Box<VecDeque<BytesMut>>>,
    /// No buffer is held (a new or quiet connection): reads probe with a stack buffer.
    idle: bool,
}

impl ReadBuf {
    /// Starts with `leftover` (bytes that arrived with the handshake), or with nothing held.
    pub(crate) fn new(leftover: BytesMut) -> Self {
        let idle = leftover.is_empty();
        ReadBuf {
            // Nothing behind the handshake: its buffer is given back.
            buf: if idle { BytesMut::new() } else { leftover },
            spares: None,
            idle,
        }
    }

    /// Reads once into the buffer; the number of bytes read (0: end of stream).
    pub(crate) fn poll_read<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
        hint: &Hint,
    ) -> Poll<std::io::Result<usize>> {
        if !self.idle && self.buf.is_empty() && self.buf.capacity() < MIN_READ && hint.wanted == 0 {
            // A probe's small buffer, all consumed (a Pong, a small message on a quiet
            // connection): back to probing, rather than allocate a whole read buffer for the
            // next few bytes (thousands of sessions doing that each ping round keep that
            // memory resident even after it is given back).
            self.buf = BytesMut::new();
            self.idle = true;
        }
        if self.idle && self.buf.capacity() == 0 {
            let mut probe = [0u8; PROBE];
            let mut rb = tokio::io::ReadBuf::new(&mut probe);
            return match Pin::new(io).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    self.idle = false;
                    if got.len() == PROBE {
                        self.buf.reserve(READ_CHUNK);
                    }
                    self.buf.extend_from_slice(got);
                    Poll::Ready(Ok(got.len()))
                }
            };
        }
        let len = self.buf.len();
        let large_pending = hint.wanted > len && hint.wanted >= LARGE_FRAME;
        let rest = hint.wanted.saturating_sub(len);
        // How far beyond what has arrived a frame may reserve: a step, or as much as has
        // arrived, so that a header alone never reserves the length it declares and a large
        // frame that does arrive is moved only a few times on its way in.
        let ahead = READ_AHEAD.max(len);
        let want = if large_pending && rest > ahead {
            // A frame larger than what may be reserved for it now: read into what is free,
            // growing by `ahead` once little is left (so the buffer doubles, and the bytes
            // moved across in all stay fewer than the frame's).
            if self.buf.capacity() - len < READ_AHEAD / 4 {
                self.make_room(ahead, LARGE_BUFFER, hint.queue_bytes);
            }
            (self.buf.capacity() - len).min(rest + hint.max_header)
        } else if large_pending {
            // The rest of a large frame, with the next header riding along; whole frames the
            // size of this one that fit in the room after it are read in the same call.
            if self.buf.capacity() - len < rest + hint.max_header {
                self.make_room(rest + hint.max_header, LARGE_BUFFER, hint.queue_bytes);
            }
            let room = self.buf.capacity() - len - rest - hint.max_header;
            rest + hint.max_header + room / hint.wanted * hint.wanted
        } else if hint.large_frames && len == 0 {
            if self.buf.capacity() < hint.max_header {
                self.buf.reserve(hint.max_header);
            }
            hint.max_header
        } else {
            if self.buf.capacity() - len < MIN_READ {
                self.make_room(READ_CHUNK, READ_CHUNK, hint.queue_bytes);
            }
            READ_CHUNK
        };
        let mut limited = bytes::BufMut::limit(&mut self.buf, want);
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut limited)
    }

    /// Makes room for `need` more bytes; a new buffer holds `fresh` bytes at least.
    ///
    /// The current buffer is set aside, and the oldest one set aside takes its place if
    /// everything cut out of it has been dropped by now; only the bytes of the frame in
    /// progress move across (for large frames normally just a header). Allocating a new buffer
    /// instead every few large frames, or every 64 KiB of small ones, made the allocator hand
    /// memory back and forth to the kernel. Frames too large to share a buffer keep no spares.
    fn make_room(&mut self, need: usize, fresh: usize, queue_bytes: usize) {
        let len = self.buf.len();
        // A whole buffer's worth: reclaiming asks for it too, or it would give just `need`
        // and the reads after it would be one frame each.
        let want = (len + need).max(fresh);
        if self.buf.try_reclaim(want - len) {
            return;
        }
        if len + need > LARGE_BUFFER / 2 {
            // Exactly what is asked for: `reserve` may double what the buffer holds, and what
            // a frame still arriving reserves must stay in proportion to what has arrived.
            self.spares = None;
            let mut next = BytesMut::with_capacity(want);
            next.extend_from_slice(&self.buf);
            self.buf = next;
            return;
        }
        let spares = self.spares.get_or_insert_with(Box::default);
        // The oldest, once free; a free one grown past the usual size is let go instead.
        let reused = if spares.front_mut().is_some_and(|b| b.try_reclaim(want)) {
            spares.pop_front().filter(|b| b.capacity() <= LARGE_BUFFER)
        } else {
            None
        };
        let mut next = reused.unwrap_or_else(|| BytesMut::with_capacity(want));
        next.extend_from_slice(&self.buf);
        let mut previous = std::mem::replace(&mut self.buf, next);
        previous.clear();
        // Enough buffers to cover what the incoming queue may hold, which is how far reading
        // can run ahead of the application.
        let keep = (queue_bytes / fresh).clamp(1, SPARES);
        while spares.len() >= keep {
            spares.pop_front();
        }
        spares.push_back(previous);
    }

    /// Whether the buffer holds memory with nothing in it.
    pub(crate) fn is_idle_memory(&self) -> bool {
        self.buf.is_empty() && self.buf.capacity() > 0
    }

    /// Gives the buffers back when nothing is in them (a quiet connection holds none).
    pub(crate) fn trim(&mut self) {
        self.spares = None;
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.idle = true;
        }
    }
}

/// What only a connection that is moving bytes holds. Every session holds a driver, idle or
/// not, so these live out of line and go away when the connection has been quiet a while.
#[derive(Default)]
pub(crate) struct Buffers {
    pub rbuf: ReadBuf,
    pub wbuf: BytesMut,
    /// An unmasked large payload being written straight from the sender's bytes.
    pub direct: Option<Bytes>,
    /// When the buffers are given back, once armed: milliseconds since the session's epoch
    /// (0: not armed).
    trim_at: u64,
    /// Something moved since the trim timer was armed.
    active: bool,
}

/// What the trim timer found when it fired.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Trim {
    /// Not due, or bytes moved meanwhile (it is set again).
    NotDue,
    /// Empty buffers were given back; bytes still wait in the others.
    Some,
    /// Nothing is held: the whole box can go.
    All,
}

impl Buffers {
    /// Buffers made because bytes arrived in `rbuf`.
    pub(crate) fn reading(rbuf: ReadBuf) -> Box<Self> {
        Box::new(Buffers {
            rbuf,
            ..Buffers::default()
        })
    }

    /// Buffers made because there is something to write.
    pub(crate) fn writing(wbuf: BytesMut, direct: Option<Bytes>) -> Box<Self> {
        Box::new(Buffers {
            wbuf,
            direct,
            ..Buffers::default()
        })
    }

    pub(crate) fn all_written(&self) -> bool {
        self.wbuf.is_empty() && self.direct.is_none()
    }

    /// Bytes moved: the trim waits for another quiet spell.
    pub(crate) fn moved(&mut self) {
        self.active = true;
    }

    /// Whether the trim would give something back: the whole box, or empty buffers in it.
    fn trimmable(&self) -> bool {
        self.rbuf.buf.is_empty() && self.all_written()
            || self.rbuf.is_idle_memory()
            || (self.wbuf.is_empty() && self.wbuf.capacity() > 0)
    }

    /// When the trim is due (time since the session's epoch), arming it if `may_arm` and
    /// there is something to give back; `now` is read only when it is armed.
    pub(crate) fn trim_deadline(
        &mut self,
        may_arm: bool,
        now: impl FnOnce() -> Duration,
    ) -> Option<Duration> {
        if self.trim_at == 0 && may_arm && self.trimmable() {
            self.active = false;
            self.trim_at = (now() + TRIM_AFTER).as_millis() as u64;
        }
        (self.trim_at != 0).then(|| Duration::from_millis(self.trim_at))
    }

    /// At `now`: once the trim is due, gives back what holds nothing, unless bytes moved
    /// since it was armed (then it is set again, a quiet spell later).
    pub(crate) fn trim_if_due(&mut self, now: Duration) -> Trim {
        let now_ms = now.as_millis() as u64;
        if self.trim_at == 0 || self.trim_at > now_ms {
            return Trim::NotDue;
        }
        if self.active {
            self.active = false;
            self.trim_at = now_ms + TRIM_AFTER.as_millis() as u64;
            return Trim::NotDue;
        }
        self.trim_at = 0;
        if self.rbuf.buf.is_empty() && self.all_written() {
            return Trim::All;
        }
        self.rbuf.trim();
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        Trim::Some
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;

    use super::{Buffers, Hint, READ_AHEAD, ReadBuf, TRIM_AFTER, Trim};

    const fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// The trim runs only after a whole quiet spell: bytes moving meanwhile put it off, and
    /// what still holds bytes is kept.
    #[test]
    fn the_trim_waits_for_a_quiet_spell_and_keeps_what_holds_bytes() {
        let mut b = Buffers::writing(BytesMut::from(&b"unsent"[..]), None);
        assert_eq!(
            b.trim_deadline(false, || s(0)),
            None,
            "not armed while closing"
        );
        // Unsent bytes and no empty buffer: nothing to give back, nothing armed.
        assert_eq!(b.trim_deadline(true, || s(0)), None);
        b.wbuf.clear();
        assert_eq!(b.trim_deadline(true, || s(10)), Some(s(10) + TRIM_AFTER));
        assert_eq!(
            b.trim_deadline(true, || unreachable!()),
            Some(s(10) + TRIM_AFTER)
        );
        assert_eq!(b.trim_if_due(s(10)), Trim::NotDue);
        b.moved();
        assert_eq!(b.trim_if_due(s(11)), Trim::NotDue, "bytes moved: put off");
        assert_eq!(
            b.trim_deadline(true, || unreachable!()),
            Some(s(11) + TRIM_AFTER)
        );
        assert_eq!(b.trim_if_due(s(12)), Trim::All);
        assert_eq!(b.trim_deadline(false, || unreachable!()), None, "disarmed");

        // Bytes of a frame in progress stay; the empty write buffer's memory goes.
        let mut b = Buffers::reading(ReadBuf::new(BytesMut::from(&b"\x81\x05he"[..])));
        b.wbuf.reserve(4096);
        assert!(b.trim_deadline(true, || s(0)).is_some());
        assert_eq!(b.trim_if_due(s(1)), Trim::Some);
        assert_eq!(&b.rbuf.buf[..], b"\x81\x05he");
        assert_eq!(b.wbuf.capacity(), 0);
    }

    /// A frame larger than the read-ahead step: the buffer grows with the bytes that arrived
    /// (never to the declared length while they have not), and the frame ends up whole and
    /// contiguous; growing copies fewer bytes in all than the frame holds.
    #[test]
    fn a_large_frame_reserves_as_its_bytes_arrive() {
        let declared = 5 * READ_AHEAD + 123;
        let mut frame = vec![0x82, 127];
        frame.extend_from_slice(&(declared as u64).to_be_bytes());
        let header = frame.len();
        frame.extend((0..declared).map(|i| i as u8));
        let hint = Hint {
            wanted: frame.len(),
            large_frames: true,
            max_header: 14,
            queue_bytes: 1 << 20,
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut rb = ReadBuf::new(BytesMut::from(&frame[..header]));
        let mut src = &frame[header..];
        let mut copied = 0;
        while rb.buf.len() < frame.len() {
            let at = rb.buf.as_ptr();
            // At most 64 KiB per read, as a socket hands them out.
            let mut io = &src[..src.len().min(64 << 10)];
            let n = match rb.poll_read(&mut io, &mut cx, &hint) {
                std::task::Poll::Ready(Ok(n)) => n,
                other => panic!("{other:?}"),
            };
            assert!(n > 0);
            src = &src[n..];
            let before = rb.buf.len() - n;
            if rb.buf.as_ptr() != at {
                copied += before;
            }
            assert!(
                rb.buf.capacity() <= before + before.max(READ_AHEAD),
                "{} reserved holding {before}",
                rb.buf.capacity()
            );
        }
        assert_eq!(&rb.buf[..], &frame[..]);
        assert!(copied < frame.len(), "copied {copied} bytes");
    }
}
