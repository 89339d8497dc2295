//! Runs: many small messages decoded from one read without touching each of them twice.
//!
//! The common receive load is a read buffer full of small, final, unmasked text and binary
//! frames. [`Decoder::decode_run`](crate::Decoder::decode_run) checks a whole stretch of them
//! at once (every RFC 6455 rule a frame on its own can break, the limits, UTF-8 of text) and
//! splits the stretch off the buffer as one [`Run`]; messages are then cut from it one by one
//! only when the caller asks for them. Handing on one run instead of many frames saves a
//! queue entry and a buffer split per message.

use bytes::Bytes;

use crate::frame::{Frame, OpCode};
use crate::message::{Message, Utf8Bytes};

/// Frames larger than this are left to the frame-by-frame path (which reads them in place).
pub(crate) const RUN_MAX_PAYLOAD: usize = 16 * 1024 - 1;

/// Back-to-back complete data frames, already validated, each a whole message: `FIN` set, no
/// RSV bit, text or binary, unmasked, payload under 16 KiB, text valid UTF-8.
///
/// Only the [`Decoder`](crate::Decoder) makes runs, so the frames in one are known to be good.
///
/// ```
/// use bytes::BytesMut;
/// use wsc_proto::{Decoder, Limits, Message, Role};
/// let mut d = Decoder::new(Role::Client, Limits::default());
/// let mut buf = BytesMut::from(&b"\x81\x02hi\x82\x01\x07\x89\x00"[..]);
/// let mut run = d.decode_run(&mut buf).unwrap();
/// assert_eq!(run.len(), 2);
/// assert_eq!(run.next_message(), Some(Message::from("hi")));
/// assert_eq!(run.next_message(), Some(Message::from(vec![7u8])));
/// assert_eq!(run.next_message(), None);
/// assert_eq!(&buf[..], b"\x89\x00"); // the Ping is left for `Decoder::decode`
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    bytes: Bytes,
    /// Where the next frame starts in `bytes`.
    pos: usize,
    count: usize,
}

impl Run {
    pub(crate) fn new(bytes: Bytes, count: usize) -> Self {
        Run {
            bytes,
            pos: 0,
            count,
        }
    }

    /// Messages left in the run.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether every message has been taken.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes left in the run, frame headers included.
    pub fn byte_len(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Steps over the next frame: `(is_text, payload start, payload end)`. Plain integers, so
    /// that the payload is sliced straight into the value handed out.
    #[inline(always)]
    fn next_range(&mut self) -> Option<(bool, usize, usize)> {
        if self.count == 0 {
            return None;
        }
        let at = self.pos;
        let (b0, b1) = match self.bytes.get(at..at + 2) {
            Some(&[b0, b1]) => (b0, b1),
            _ => return None,
        };
        let (start, len) = if b1 < 126 {
            (at + 2, usize::from(b1))
        } else {
            let b = self.bytes.get(at + 2..at + 4)?;
            (at + 4, usize::from(u16::from_be_bytes([b[0], b[1]])))
        };
        let end = start + len;
        if end > self.bytes.len() {
            return None; // cannot happen: the decoder measured every frame
        }
        self.pos = end;
        self.count -= 1;
        Some((b0 == 0x81, start, end))
    }

    /// The next message, without a copy.
    #[inline(always)]
    pub fn next_message(&mut self) -> Option<Message> {
        let (text, start, end) = self.next_range()?;
        Some(if text {
            // The decoder validated the text when it made the run.
            Message::Text(Utf8Bytes::from_validated(self.bytes.slice(start..end)))
        } else {
            Message::Binary(self.bytes.slice(start..end))
        })
    }

    /// The next frame as it was on the wire.
    #[inline(always)]
    pub fn next_frame(&mut self) -> Option<Frame> {
        let (text, start, end) = self.next_range()?;
        Some(Frame {
            opcode: if text { OpCode::Text } else { OpCode::Binary },
            fin: true,
            rsv: 0,
            payload: self.bytes.slice(start..end),
        })
    }
}

impl Iterator for Run {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        self.next_message()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.count, Some(self.count))
    }
}
