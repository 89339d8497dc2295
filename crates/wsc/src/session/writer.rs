//! Writing one message in pieces (RFC 6455 §5.4) without holding it whole.

use wsc_proto::{OpCode, Utf8Validator};

use super::enqueue::Outgoing;
use super::sender::Sender;
use crate::error::Error;

/// Writes one message in pieces; made by [`Sender::message_writer`].
///
/// Each [`write`](MessageWriter::write) sends one fragment; [`finish`](MessageWriter::finish)
/// ends the message. Dropping an unfinished writer cannot leave a half message on the wire for
/// the next one to corrupt, so it closes the session with 1011. Streamed messages are never
/// compressed (RFC 7692 lets any message go uncompressed).
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

    fn next_opcode(&mut self) -> OpCode {
        if std::mem::replace(&mut self.started, true) {
            OpCode::Continuation
        } else {
            self.opcode
        }
    }

    /// Sends `chunk` as the next fragment. Text must stay UTF-8 across chunks; a chunk may end
    /// inside a character.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if let Some(v) = self.utf8.as_mut() {
            v.feed(chunk).map_err(|_| Error::InvalidUtf8)?;
        }
        let was_started = self.started;
        let opcode = self.next_opcode();
        let r = self
            .sender
            .enqueue(Outgoing::Fragment {
                id: self.id,
                opcode,
                fin: false,
                data: chunk,
            })
            .await;
        if r.is_err() {
            self.started = was_started;
        }
        r?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Ends the message. Returns the bytes written.
    pub async fn finish(mut self) -> Result<u64, Error> {
        if let Some(v) = self.utf8.as_mut() {
            v.finish().map_err(|_| Error::InvalidUtf8)?;
        }
        let opcode = self.next_opcode();
        self.sender
            .enqueue(Outgoing::Fragment {
                id: self.id,
                opcode,
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
