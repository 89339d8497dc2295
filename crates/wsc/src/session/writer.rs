//! Writing one message in pieces (RFC 6455 §5.4) without holding it whole.

use wsc_proto::{OpCode, Utf8Validator};

use super::enqueue::Outgoing;
use super::sender::Sender;
use crate::error::Error;

/// Writes one message in pieces; made by [`Sender::message_writer`].
///
/// Each [`write`](MessageWriter::write) sends one fragment; [`finish`](MessageWriter::finish)
/// ends the message. Dropping an unfinished writer cannot leave a half message on the wire for
/// the next one to corrupt, so it closes the session with 1011 (a writer dropped before its
/// first write completed sent nothing and closes nothing). Streamed messages are never
/// compressed (RFC 7692 lets any message go uncompressed).
///
/// Both methods are cancel safe: a `write` dropped while it waits for room sent nothing and
/// may be retried with the same chunk (in a `select!` loop or under a timeout), and `finish`
/// completes in its first poll once the message has begun.
///
/// ```no_run
/// # async fn demo(s: wsc::Sender) -> Result<(), wsc::Error> {
/// let mut w = s.message_writer(wsc::OpCode::Binary).await?;
/// for chunk in [&b"big "[..], b"message"] {
///     w.write(chunk).await?;
/// }
/// w.finish().await?;
/// # Ok(()) }
/// ```
pub struct MessageWriter {
    sender: Sender,
    id: u64,
    opcode: OpCode,
    started: bool,
    finished: bool,
    utf8: Option<Utf8Validator>,
    written: u64,
}

impl std::fmt::Debug for MessageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageWriter")
            .field("opcode", &self.opcode)
            .field("written", &self.written)
            .finish()
    }
}

impl MessageWriter {
    pub(super) fn new(sender: Sender, id: u64, opcode: OpCode) -> Self {
        MessageWriter {
            sender,
            id,
            opcode,
            started: false,
            finished: false,
            utf8: (opcode == OpCode::Text).then(Utf8Validator::default),
            written: 0,
        }
    }

    /// The opcode of the next piece: the message's own for the first, then Continuation.
    fn next_opcode(&self) -> OpCode {
        if self.started {
            OpCode::Continuation
        } else {
            self.opcode
        }
    }

    /// Sends `chunk` as the next fragment. Text must stay UTF-8 across chunks; a chunk may end
    /// inside a character. Waits while the outgoing queue is full (backpressure).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The chunk is queued whole within one poll or not at all, and the writer's
    /// state (whether the message has started, the UTF-8 check across chunks, the count of
    /// bytes written) moves on only in the poll that queues it. A write dropped before it
    /// completed sent nothing: write the same chunk again, or drop the writer.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        // Checked on a copy: the check is committed with the chunk, once it is queued.
        let utf8 = match &self.utf8 {
            Some(v) => {
                let mut v = v.clone();
                v.feed(chunk).map_err(|_| Error::InvalidUtf8)?;
                Some(v)
            }
            None => None,
        };
        self.sender
            .enqueue(Outgoing::Fragment {
                id: self.id,
                opcode: self.next_opcode(),
                fin: false,
                data: chunk,
            })
            .await?;
        // Queued in the poll that got here: nothing below awaits.
        self.started = true;
        self.utf8 = utf8;
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Ends the message. Returns the bytes written.
    ///
    /// Once a piece has been written, the message's last frame (a few bytes) never waits for
    /// room in the queue, so `finish` completes in its first poll. A message with no piece
    /// written is sent whole (empty) and waits for room like any message.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe once polled. The writer moves into this future, so dropping the future
    /// before its first poll is dropping the writer (see [`MessageWriter`]). Once polled, a
    /// started message's `finish` has completed; one with nothing written that is dropped
    /// while it waits sent nothing.
    pub async fn finish(mut self) -> Result<u64, Error> {
        if let Some(v) = self.utf8.as_mut() {
            v.finish().map_err(|_| Error::InvalidUtf8)?;
        }
        self.sender
            .enqueue(Outgoing::Fragment {
                id: self.id,
                opcode: self.next_opcode(),
                fin: true,
                data: &[],
            })
            .await?;
        self.finished = true;
        Ok(self.written)
    }
}

impl Drop for MessageWriter {
    fn drop(&mut self) {
        if self.finished || !self.started {
            return;
        }
        let shared = &self.sender.shared;
        let now = shared.now();
        let asked = {
            let mut out = shared.out();
            let was_open = out.outbox.is_open();
            out.outbox.abandon_stream(self.id, now);
            was_open && !out.outbox.is_open()
        };
        if asked {
            shared.wake_driver();
        }
    }
}
