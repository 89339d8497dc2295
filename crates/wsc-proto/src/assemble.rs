//! Fragment reassembly for default sessions: data frames in, whole [`Message`]s out.
//!
//! Owns the message size limit after extensions (inflation is bounded by it) and UTF-8 of
//! messages an extension transformed (the decoder checks the others). A message that arrives
//! in one uncompressed frame is handed on without a copy.

use bytes::{Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::extension::{DecodeError, Extension};
use crate::frame::{Frame, OpCode};
use crate::message::{Message, Utf8Bytes};
use crate::utf8::Utf8Validator;

#[derive(Debug)]
enum Open {
    Plain { text: bool },
    Transformed { text: bool, rsv: u8, checked: usize },
}

/// Reassembles data frames (already validated by the [`Decoder`](crate::Decoder)) into messages.
///
/// ```
/// use wsc_proto::{Assembler, Frame, Message};
/// let mut a = Assembler::new(1 << 20);
/// assert_eq!(a.push(Frame::text("he").with_fin(false), &mut []).unwrap(), None);
/// assert_eq!(a.push(Frame::continuation("llo", true), &mut []).unwrap(), Some(Message::from("hello")));
/// ```
#[derive(Debug)]
pub struct Assembler {
    max_message_size: usize,
    open: Option<Open>,
    plain: BytesMut,
    inflated: Vec<u8>,
    stage: Vec<u8>,
    utf8: Utf8Validator,
}

impl Assembler {
    /// An assembler enforcing `max_message_size` (after extensions).
    pub fn new(max_message_size: usize) -> Self {
        Assembler {
            max_message_size,
            open: None,
            plain: BytesMut::new(),
            inflated: Vec::new(),
            stage: Vec::new(),
            utf8: Utf8Validator::default(),
        }
    }

    /// Changes the limit; applies from the next fragment.
    pub fn set_max_message_size(&mut self, max: usize) {
        self.max_message_size = max;
    }

    /// Takes the next data frame (Text, Binary or Continuation; the caller routes control
    /// frames elsewhere) and returns a message when `frame` completes one. `extensions` are
    /// the negotiated ones, applied in reverse order to messages that carry their RSV bits.
    pub fn push(
        &mut self,
        frame: Frame,
        extensions: &mut [Box<dyn Extension>],
    ) -> Result<Option<Message>, ProtocolError> {
        let text = match (frame.opcode, &self.open) {
            (OpCode::Text, None) => true,
            (OpCode::Binary, None) => false,
            (OpCode::Continuation, Some(Open::Plain { text } | Open::Transformed { text, .. })) => {
                *text
            }
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            _ => return Ok(None),
        };
        if self.open.is_none() {
            if frame.rsv == 0 {
                if frame.fin {
                    return Ok(Some(finish(text, frame.payload)));
                }
                self.open = Some(Open::Plain { text });
            } else {
                self.open = Some(Open::Transformed {
                    text,
                    rsv: frame.rsv,
                    checked: 0,
                });
            }
        }
        match self.open.as_mut() {
            Some(Open::Plain { .. }) => {
                if self.plain.len() + frame.payload.len() > self.max_message_size {
                    return Err(ProtocolError::MessageTooBig {
                        size: (self.plain.len() + frame.payload.len()) as u64,
                        max: self.max_message_size,
                    });
                }
                self.plain.extend_from_slice(&frame.payload);
                if frame.fin {
                    self.open = None;
                    return Ok(Some(finish(text, self.plain.split().freeze())));
                }
                Ok(None)
            }
            Some(Open::Transformed { rsv, checked, .. }) => {
                let (rsv, from) = (*rsv, *checked);
                self.decode(rsv, &frame.payload, frame.fin, extensions)?;
                if let Some(Open::Transformed { checked, .. }) = self.open.as_mut() {
                    *checked = self.inflated.len();
                }
                if text {
                    self.utf8
                        .feed(&self.inflated[from..])
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                    if frame.fin {
                        self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                    }
                }
                if frame.fin {
                    self.open = None;
                    let body = Bytes::from(std::mem::take(&mut self.inflated));
                    return Ok(Some(finish(text, body)));
                }
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Like [`push`](Assembler::push), but hands each data frame on as a piece of its message
    /// at once (inflated and UTF-8-checked as needed) instead of reassembling: `(text, first,
    /// fin, data)`. Memory stays bounded by a frame; `max_message_size` bounds each piece.
    pub fn push_chunk(
        &mut self,
        frame: Frame,
        extensions: &mut [Box<dyn Extension>],
    ) -> Result<Option<(bool, bool, bool, Bytes)>, ProtocolError> {
        let (text, first) = match (frame.opcode, &self.open) {
            (OpCode::Text, None) => (true, true),
            (OpCode::Binary, None) => (false, true),
            (OpCode::Continuation, Some(Open::Plain { text } | Open::Transformed { text, .. })) => {
                (*text, false)
            }
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            _ => return Ok(None),
        };
        if first {
            self.open = Some(if frame.rsv == 0 {
                Open::Plain { text }
            } else {
                Open::Transformed {
                    text,
                    rsv: frame.rsv,
                    checked: 0,
                }
            });
        }
        let data = match self.open {
            Some(Open::Transformed { rsv, .. }) => {
                self.inflated.clear();
                self.decode(rsv, &frame.payload, frame.fin, extensions)?;
                if text {
                    self.utf8
                        .feed(&self.inflated)
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                    if frame.fin {
                        self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                    }
                }
                Bytes::from(std::mem::take(&mut self.inflated))
            }
            // The decoder has checked uncompressed text, across frames too.
            _ => frame.payload,
        };
        if frame.fin {
            self.open = None;
        }
        Ok(Some((text, first, frame.fin, data)))
    }

    fn decode(
        &mut self,
        rsv: u8,
        input: &[u8],
        fin: bool,
        extensions: &mut [Box<dyn Extension>],
    ) -> Result<(), ProtocolError> {
        let limit = self.max_message_size;
        let mut applying = extensions
            .iter_mut()
            .rev()
            .filter(|e| e.rsv() & rsv != 0)
            .peekable();
        let Some(first) = applying.next() else {
            return Err(ProtocolError::ReservedBits(rsv >> 4));
        };
        let map = |name: &'static str, e: DecodeError, had: usize| match e {
            DecodeError::TooBig { size } => ProtocolError::MessageTooBig {
                size: size.max(had as u64),
                max: limit,
            },
            DecodeError::Corrupt(detail) => ProtocolError::Extension { name, detail },
        };
        if applying.peek().is_none() {
            let had = self.inflated.len();
            return first
                .decode(input, fin, &mut self.inflated, limit)
                .map_err(|e| map(first.name(), e, had));
        }
        // Several extensions on one message: each stage's output is the next one's input,
        // and every stage is bounded by what is left of the message's budget.
        let budget = limit.saturating_sub(self.inflated.len());
        let had = self.inflated.len();
        self.stage.clear();
        first
            .decode(input, fin, &mut self.stage, budget)
            .map_err(|e| map(first.name(), e, had))?;
        let mut cur = std::mem::take(&mut self.stage);
        for ext in applying {
            let mut next = Vec::new();
            ext.decode(&cur, fin, &mut next, budget)
                .map_err(|e| map(ext.name(), e, had))?;
            cur = next;
        }
        if self.inflated.len() + cur.len() > limit {
            return Err(ProtocolError::MessageTooBig {
                size: (self.inflated.len() + cur.len()) as u64,
                max: limit,
            });
        }
        self.inflated.extend_from_slice(&cur);
        cur.clear();
        self.stage = cur;
        Ok(())
    }
}

fn finish(text: bool, body: Bytes) -> Message {
    if text {
        // The decoder validated uncompressed text; `push` validated transformed text.
        Message::Text(Utf8Bytes::from_validated(body))
    } else {
        Message::Binary(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::DeflateConfig;
    use crate::extension::ExtensionFactory;

    /// A second extension (RSV2) that hands its input on unchanged, within the limit, and
    /// records the largest input the stage before it handed it.
    #[derive(Debug, Default)]
    struct Passthrough(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl Extension for Passthrough {
        fn name(&self) -> &'static str {
            "passthrough"
        }
        fn rsv(&self) -> u8 {
            0x20
        }
        fn describe(&self) -> String {
            "passthrough".into()
        }
        fn encode(&mut self, _: OpCode, _: &[u8]) -> Result<Option<&[u8]>, String> {
            Ok(None)
        }
        fn decode(
            &mut self,
            input: &[u8],
            _fin: bool,
            out: &mut Vec<u8>,
            limit: usize,
        ) -> Result<(), crate::extension::DecodeError> {
            self.0
                .fetch_max(input.len(), std::sync::atomic::Ordering::Relaxed);
            if out.len() + input.len() > limit {
                return Err(crate::extension::DecodeError::TooBig {
                    size: (out.len() + input.len()) as u64,
                });
            }
            out.extend_from_slice(input);
            Ok(())
        }
    }

    /// Defect 7: with two extensions on one message, the first stage (here the inflater) is
    /// bounded by the message's budget too, so a bomb never inflates past the limit.
    #[test]
    fn every_stage_of_two_extensions_is_bounded_by_the_limit() {
        let f = DeflateConfig::default();
        let mut tx = f.accept(&[]).unwrap();
        let bomb = tx
            .encode(OpCode::Binary, &vec![0u8; 32 << 20])
            .unwrap()
            .unwrap()
            .to_vec();
        assert!(bomb.len() < 64 * 1024, "a bomb: {} bytes", bomb.len());
        // Decoded last extension first: the inflater runs first.
        let second = Passthrough::default();
        let seen = second.0.clone();
        let mut exts: Vec<Box<dyn Extension>> = vec![Box::new(second), f.accept(&[]).unwrap()];
        let limit = 1 << 20;
        let mut a = Assembler::new(limit);
        let r = a.push(Frame::binary(bomb).with_rsv(0x60), &mut exts);
        assert!(
            matches!(r, Err(ProtocolError::MessageTooBig { max, .. }) if max == limit),
            "{r:?}"
        );
        let seen = seen.load(std::sync::atomic::Ordering::Relaxed);
        assert!(seen <= limit, "the inflater handed on {seen} bytes");
    }

    #[test]
    fn plain_fragments_and_limit() {
        let mut a = Assembler::new(5);
        assert_eq!(
            a.push(Frame::binary(vec![1, 2]).with_fin(false), &mut [])
                .unwrap(),
            None
        );
        assert_eq!(
            a.push(Frame::continuation(vec![3], false), &mut [])
                .unwrap(),
            None
        );
        assert_eq!(
            a.push(Frame::continuation(vec![4], true), &mut []).unwrap(),
            Some(Message::binary(vec![1, 2, 3, 4]))
        );
        a.push(Frame::binary(vec![1, 2, 3]).with_fin(false), &mut [])
            .unwrap();
        assert!(matches!(
            a.push(Frame::continuation(vec![4, 5, 6], true), &mut []),
            Err(ProtocolError::MessageTooBig { size: 6, max: 5 })
        ));
    }

    #[test]
    fn chunks_are_handed_on_without_reassembly() {
        let mut a = Assembler::new(4);
        let got = a
            .push_chunk(Frame::text("abc").with_fin(false), &mut [])
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.0, got.1, got.2, &got.3[..]),
            (true, true, false, &b"abc"[..])
        );
        // The message may pass max_message_size in total; only pieces are bounded.
        let got = a
            .push_chunk(Frame::continuation("defg", true), &mut [])
            .unwrap()
            .unwrap();
        assert_eq!((got.1, got.2, &got.3[..]), (false, true, &b"defg"[..]));
        assert!(
            a.push_chunk(Frame::continuation("x", true), &mut [])
                .is_err()
        );
    }

    #[test]
    fn compressed_text_validated_after_inflate() {
        let f = DeflateConfig::default();
        let mut exts = vec![f.accept(&[]).unwrap()];
        let mut tx = f.accept(&[]).unwrap();
        let good = tx
            .encode(OpCode::Text, "héllo wörld".as_bytes())
            .unwrap()
            .unwrap()
            .to_vec();
        let mut a = Assembler::new(1 << 20);
        let (x, y) = good.split_at(3);
        assert_eq!(
            a.push(
                Frame::text(x.to_vec()).with_fin(false).with_rsv(0x40),
                &mut exts
            )
            .unwrap(),
            None
        );
        assert_eq!(
            a.push(Frame::continuation(y.to_vec(), true), &mut exts)
                .unwrap(),
            Some(Message::text("héllo wörld"))
        );
        let bad = tx
            .encode(OpCode::Text, &[0x61, 0xff, 0x62])
            .unwrap()
            .unwrap()
            .to_vec();
        assert_eq!(
            a.push(Frame::text(bad).with_rsv(0x40), &mut exts),
            Err(ProtocolError::InvalidUtf8)
        );
    }
}
