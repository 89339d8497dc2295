//! The frame decoder: bytes in, validated frames out (RFC 6455 §5).
//!
//! Owns every check that can be made on a frame by itself or on the sequence of frames:
//! opcodes, RSV bits, control-frame rules, masking direction, lengths and limits, fragment
//! sequencing, Close payloads, and UTF-8 of uncompressed text (incrementally, even inside a
//! frame that has only partly arrived, so a bad text message fails as early as possible).
//! Payloads are split off the read buffer without copying.

use bytes::{Buf, BytesMut};

use crate::close::CloseReason;
use crate::error::ProtocolError;
use crate::frame::{Frame, OpCode};
use crate::mask::apply_mask;
use crate::run::{RUN_MAX_PAYLOAD, Run};
use crate::utf8::Utf8Validator;

/// Which end of the connection this is. A client masks what it sends and refuses masked
/// frames; a server the opposite (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The connecting side.
    Client,
    /// The accepting side.
    Server,
}

/// Limits the decoder enforces, with 1009 when passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload accepted. Default 16 MiB.
    pub max_frame_size: usize,
    /// Largest message (sum of its frames' payloads, after any inflation). Default 64 MiB.
    pub max_message_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Open {
    text: bool,
    compressed: bool,
    len: u64,
}

/// The largest piece of a streamed frame (see [`Decoder::set_pieces`]).
pub const MAX_PIECE: usize = 64 * 1024;

const FEEDING: u8 = 1;
const PIECES: u8 = 2;

/// The rest of a large data frame being handed out in pieces (see [`Decoder::set_pieces`]).
#[derive(Debug, Clone, Copy)]
struct Piecewise {
    /// Payload bytes of the frame not yet handed out.
    left: u64,
    /// The piece size in force when the frame began.
    size: usize,
    key: [u8; 4],
    masked: bool,
    /// Where the next piece starts in the masking key's cycle.
    offset: u8,
    /// The frame's FIN bit, carried by its last piece.
    fin: bool,
    /// The frame's opcode and RSV bits, carried by its first piece; `None` once it went out.
    head: Option<(OpCode, u8)>,
}

/// Turns a byte stream into validated [`Frame`]s.
///
/// Call [`Decoder::decode`] with the read buffer after each read until it returns `Ok(None)`;
/// [`Decoder::wanted`] then says how many bytes the pending frame still needs, so the caller
/// can reserve exactly that and let the read land in place.
///
/// ```
/// use bytes::BytesMut;
/// use wsc_proto::{Decoder, Limits, OpCode, Role};
/// let mut d = Decoder::new(Role::Client, Limits::default());
/// let mut buf = BytesMut::from(&b"\x81\x05Hello\x89\x00"[..]);
/// let f = d.decode(&mut buf).unwrap().unwrap();
/// assert_eq!((f.opcode, &f.payload[..]), (OpCode::Text, &b"Hello"[..]));
/// assert_eq!(d.decode(&mut buf).unwrap().unwrap().opcode, OpCode::Ping);
/// assert!(d.decode(&mut buf).unwrap().is_none());
/// ```
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    limits: Limits,
    allowed_rsv: u8,
    open: Option<Open>,
    utf8: Utf8Validator,
    /// Bytes of the current, incomplete frame's payload already fed to `utf8`.
    checked: usize,
    /// Total bytes (header + payload) the pending frame needs, 0 if not yet known.
    wanted: usize,
    /// `FEEDING`: the pending frame's payload is checked for UTF-8 as it arrives, so every call
    /// looks. `PIECES`: large data frames are handed out in pieces. (One byte: every connection
    /// holds a decoder.)
    flags: u8,
    /// Out of line: every connection holds a decoder, few ever stream a large frame.
    piecewise: Option<Box<Piecewise>>,
}

impl Decoder {
    /// A decoder for `role` with `limits` and no extension (no RSV bit allowed).
    pub fn new(role: Role, limits: Limits) -> Self {
        Decoder {
            role,
            limits,
            allowed_rsv: 0,
            open: None,
            utf8: Utf8Validator::default(),
            checked: 0,
            wanted: 0,
            flags: 0,
            piecewise: None,
        }
    }

    /// For streamed messages: hands out every data frame larger than the piece size
    /// (`max_frame_size` or [`MAX_PIECE`], whichever is smaller) in pieces of that size, each as
    /// soon as it has arrived whole, as if the peer had fragmented the frame: the first piece
    /// keeps the frame's opcode and RSV bits, the others are continuations, and only the last
    /// carries the frame's FIN. Pieces are unmasked and text is checked as UTF-8 piece by
    /// piece, so memory stays bounded by the piece size whatever size the peer gives its
    /// frames: `max_frame_size` then bounds only the frames held whole, and no size limit
    /// refuses a data frame or message. Where pieces start does not depend on how the input
    /// arrived. Off by default; a change takes effect from the next frame.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use wsc_proto::{Decoder, Limits, OpCode, Role};
    /// let limits = Limits { max_frame_size: 4, ..Limits::default() };
    /// let mut d = Decoder::new(Role::Client, limits);
    /// d.set_pieces(true);
    /// let mut buf = BytesMut::from(&b"\x82\x0a0123456789"[..]);
    /// let pieces: Vec<_> = std::iter::from_fn(|| d.decode(&mut buf).unwrap()).collect();
    /// let view: Vec<_> = pieces.iter().map(|f| (f.opcode, f.fin, &f.payload[..])).collect();
    /// assert_eq!(view, [
    ///     (OpCode::Binary, false, &b"0123"[..]),
    ///     (OpCode::Continuation, false, &b"4567"[..]),
    ///     (OpCode::Continuation, true, &b"89"[..]),
    /// ]);
    /// ```
    pub fn set_pieces(&mut self, on: bool) {
        if on {
            self.flags |= PIECES;
        } else {
            self.flags &= !PIECES;
        }
    }

    fn piece_size(&self) -> Option<usize> {
        (self.flags & PIECES != 0).then(|| self.limits.max_frame_size.clamp(1, MAX_PIECE))
    }

    /// Allows RSV bits (`0x40`, `0x20`, `0x10`) that negotiated extensions claim, on the first
    /// frame of a data message.
    pub fn set_allowed_rsv(&mut self, rsv: u8) {
        self.allowed_rsv = rsv & 0x70;
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the limits; takes effect from the next frame header.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Total bytes the pending frame occupies (header and payload) once its header has
    /// arrived, or 0. A reader should make room for at least `wanted() - buf.len()` more bytes.
    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// Splits off the front of `buf` every complete frame, up to the first that is not a small
    /// whole message (final, no RSV bit, text or binary, unmasked, payload under 16 KiB and
    /// within the limits, text valid UTF-8), as one [`Run`]; `None` if the first frame is not
    /// one. Only a client decoder between messages makes runs. Anything the run stops at,
    /// including a frame that breaks a rule, is left for [`Decoder::decode`], which reports it.
    pub fn decode_run(&mut self, buf: &mut BytesMut) -> Option<Run> {
        if self.role != Role::Client || self.open.is_some() || self.checked != 0 {
            return None;
        }
        let max = RUN_MAX_PAYLOAD
            .min(self.limits.max_frame_size)
            .min(self.limits.max_message_size);
        let s: &[u8] = buf;
        let mut pos = 0;
        let mut count = 0;
        while let Some(&[b0, b1]) = s.get(pos..pos + 2) {
            if b0.wrapping_sub(0x81) > 1 {
                break; // 0x81 and 0x82 only: FIN, no RSV, text or binary
            }
            let (header, len) = if b1 < 126 {
                (2, usize::from(b1))
            } else if b1 == 126 {
                match s.get(pos + 2..pos + 4) {
                    Some(&[h, l]) => (4, usize::from(u16::from_be_bytes([h, l]))),
                    _ => break,
                }
            } else {
                break; // a 64-bit length, or masked
            };
            let end = pos + header + len;
            if len > max || end > s.len() {
                break;
            }
            if b0 == 0x81 && simdutf8::basic::from_utf8(&s[pos + header..end]).is_err() {
                break;
            }
            pos = end;
            count += 1;
        }
        if count == 0 {
            return None;
        }
        self.wanted = 0;
        Some(Run::new(buf.split_to(pos).freeze(), count))
    }

    /// Decodes the next frame from the front of `buf`, or returns `Ok(None)` if it has not
    /// fully arrived. Frames are returned as they are on the wire (a continuation stays a
    /// continuation). After an `Err`, the connection must be failed with the error's close code.
    /// Small whole messages go faster through [`Decoder::decode_run`], called first.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if let Some(p) = self.piecewise.take() {
            return self.next_piece(buf, p);
        }
        // A frame whose header was read and whose rest has not arrived: nothing to do.
        if buf.len() < self.wanted && self.flags & FEEDING == 0 || buf.len() < 2 {
            return Ok(None);
        }
        let b0 = buf[0];
        let b1 = buf[1];
        let fin = b0 & 0x80 != 0;
        let rsv = b0 & 0x70;
        let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0f))?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7f;

        match opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                if !fin {
                    return Err(ProtocolError::FragmentedControl);
                }
                if len7 > 125 {
                    return Err(ProtocolError::ControlTooLong(u64::from(len7)));
                }
                if rsv != 0 {
                    return Err(ProtocolError::ReservedBits(rsv >> 4));
                }
            }
            OpCode::Text | OpCode::Binary => {
                if self.open.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                if rsv & !self.allowed_rsv != 0 {
                    return Err(ProtocolError::ReservedBits(rsv >> 4));
                }
            }
            OpCode::Continuation => {
                if self.open.is_none() {
                    return Err(ProtocolError::UnexpectedContinuation);
                }
                if rsv != 0 {
                    return Err(ProtocolError::ReservedBits(rsv >> 4));
                }
            }
        }
        match (self.role, masked) {
            (Role::Client, true) => {
                return Err(ProtocolError::Masking("masked frame from a server"));
            }
            (Role::Server, false) => {
                return Err(ProtocolError::Masking("unmasked frame from a client"));
            }
            _ => {}
        }

        let (len, mut header): (u64, usize) = match len7 {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                let l = u64::from_be_bytes(b);
                if l >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (l, 10)
            }
            n => (u64::from(n), 2),
        };
        let is_data = !opcode.is_control();
        let piece = self.piece_size().filter(|&p| is_data && len > p as u64);
        if len > self.limits.max_frame_size as u64 && piece.is_none() {
            return Err(ProtocolError::FrameTooBig {
                size: len,
                max: self.limits.max_frame_size,
            });
        }
        let (text, compressed, msg_len) = match (opcode, self.open) {
            (OpCode::Continuation, Some(o)) => (o.text, o.compressed, o.len + len),
            (OpCode::Text, _) => (true, rsv != 0, len),
            _ => (false, rsv != 0, len),
        };
        let streamed = self.flags & PIECES != 0;
        if is_data && !compressed && !streamed && msg_len > self.limits.max_message_size as u64 {
            return Err(ProtocolError::MessageTooBig {
                size: msg_len,
                max: self.limits.max_message_size,
            });
        }
        let mask_at = header;
        if masked {
            header += 4;
        }
        if let Some(size) = piece {
            if buf.len() < header {
                return Ok(None);
            }
            let mut key = [0; 4];
            if masked {
                key.copy_from_slice(&buf[mask_at..header]);
            }
            buf.advance(header);
            self.flags &= !FEEDING;
            self.open = Some(Open {
                text,
                compressed,
                len: msg_len,
            });
            let p = Box::new(Piecewise {
                left: len,
                size,
                key,
                masked,
                offset: 0,
                fin,
                head: Some((opcode, rsv)),
            });
            return self.next_piece(buf, p);
        }
        // `len` ≤ max_frame_size ≤ usize::MAX, so this cannot overflow except at usize::MAX.
        let total = header.saturating_add(len as usize);
        let check_utf8 = is_data && text && !compressed;
        if buf.len() < total {
            self.wanted = total;
            self.flags &= !FEEDING;
            if check_utf8 {
                self.flags |= FEEDING;
            }
            // Fail fast on invalid UTF-8 inside a frame that is still arriving. A masked
            // payload is unmasked in place as it arrives: its first `checked` bytes are plain
            // from then on and must not be unmasked again when the frame completes.
            if check_utf8 && buf.len() > header + self.checked {
                let key = mask_key(buf, mask_at, masked);
                let at = self.checked;
                let avail = &mut buf[header + at..];
                if let Some(k) = key {
                    apply_mask(avail, k, at);
                }
                self.utf8
                    .feed(avail)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                self.checked += avail.len();
            }
            return Ok(None);
        }
        self.wanted = 0;
        let key = mask_key(buf, mask_at, masked);
        buf.advance(header);
        let mut payload = buf.split_to(len as usize);
        let already = std::mem::take(&mut self.checked);
        if let Some(k) = key {
            apply_mask(&mut payload[already..], k, already);
        }
        if check_utf8 {
            self.utf8
                .feed(&payload[already..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            if fin {
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        if is_data {
            self.open = if fin {
                None
            } else {
                Some(Open {
                    text,
                    compressed,
                    len: msg_len,
                })
            };
        } else if opcode == OpCode::Close {
            CloseReason::parse(&payload)?;
        }
        Ok(Some(Frame {
            opcode,
            fin,
            rsv,
            payload: payload.freeze(),
        }))
    }

    /// The next piece of a frame handed out in pieces, once it has arrived whole.
    fn next_piece(
        &mut self,
        buf: &mut BytesMut,
        mut p: Box<Piecewise>,
    ) -> Result<Option<Frame>, ProtocolError> {
        // `p.size` fits a usize, so the minimum does too.
        let size = p.left.min(p.size as u64) as usize;
        if buf.len() < size {
            self.piecewise = Some(p);
            self.wanted = size;
            return Ok(None);
        }
        let mut payload = buf.split_to(size);
        // A frame in pieces always belongs to an open message.
        let (text, compressed) = self.open.map_or((false, false), |o| (o.text, o.compressed));
        // Bytes already checked (and unmasked) while the frame was arriving whole are neither
        // unmasked nor fed twice.
        let skip = if text && !compressed {
            self.checked.min(size)
        } else {
            0
        };
        if p.masked {
            let offset = usize::from(p.offset);
            apply_mask(&mut payload[skip..], p.key, offset + skip);
            p.offset = ((offset + size) % 4) as u8;
        }
        p.left -= size as u64;
        let last = p.left == 0;
        let fin = last && p.fin;
        if text && !compressed {
            self.checked -= skip;
            self.utf8
                .feed(&payload[skip..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            if fin {
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        let (opcode, rsv) = p.head.take().unwrap_or((OpCode::Continuation, 0));
        if last {
            self.piecewise = None;
            self.wanted = 0;
            self.checked = 0;
            if p.fin {
                self.open = None;
            }
        } else {
            self.wanted = p.left.min(p.size as u64) as usize;
            self.piecewise = Some(p);
        }
        Ok(Some(Frame {
            opcode,
            fin,
            rsv,
            payload: payload.freeze(),
        }))
    }
}

/// The masking key of the frame whose header is at the front of `buf`, if it is masked.
fn mask_key(buf: &[u8], at: usize, masked: bool) -> Option<[u8; 4]> {
    masked.then(|| [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;
    use crate::message::Message;
    use proptest::prelude::*;

    fn client() -> Decoder {
        Decoder::new(Role::Client, Limits::default())
    }

    fn one(bytes: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        client().decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn rejects_what_rfc_6455_forbids() {
        assert_eq!(one(b"\x83\x00"), Err(ProtocolError::ReservedOpcode(3)));
        assert_eq!(one(b"\x8b\x00"), Err(ProtocolError::ReservedOpcode(0xb)));
        assert_eq!(one(b"\xc1\x00"), Err(ProtocolError::ReservedBits(4)));
        assert_eq!(one(b"\x09\x00"), Err(ProtocolError::FragmentedControl));
        assert_eq!(
            one(b"\x89\x7e\x00\x7e"),
            Err(ProtocolError::ControlTooLong(126))
        );
        assert_eq!(one(b"\x80\x00"), Err(ProtocolError::UnexpectedContinuation));
        assert!(matches!(
            one(b"\x81\x80\0\0\0\0"),
            Err(ProtocolError::Masking(_))
        ));
        assert_eq!(one(b"\x88\x01\x03"), Err(ProtocolError::CloseTooShort));
        assert_eq!(
            one(b"\x88\x02\x03\xee"),
            Err(ProtocolError::InvalidCloseCode(1006))
        );
        assert_eq!(
            one(b"\x88\x03\x03\xe8\xff"),
            Err(ProtocolError::InvalidUtf8)
        );
        assert_eq!(one(b"\x81\x02\xc3\x28"), Err(ProtocolError::InvalidUtf8));
        assert_eq!(
            one(b"\x82\x7f\x80\0\0\0\0\0\0\0"),
            Err(ProtocolError::InvalidLength)
        );
        let mut d = client();
        let mut b = BytesMut::from(&b"\x01\x01a\x81\x01b"[..]);
        assert!(d.decode(&mut b).unwrap().is_some());
        assert_eq!(d.decode(&mut b), Err(ProtocolError::ExpectedContinuation));
    }

    #[test]
    fn error_codes() {
        assert_eq!(ProtocolError::InvalidUtf8.close_code().as_u16(), 1007);
        assert_eq!(
            ProtocolError::FrameTooBig { size: 1, max: 0 }
                .close_code()
                .as_u16(),
            1009
        );
        assert_eq!(ProtocolError::ReservedOpcode(3).close_code().as_u16(), 1002);
    }

    #[test]
    fn limits_give_1009() {
        let mut d = Decoder::new(
            Role::Client,
            Limits {
                max_frame_size: 10,
                max_message_size: 15,
            },
        );
        assert!(matches!(
            d.decode(&mut BytesMut::from(&b"\x82\x0b"[..])),
            Err(ProtocolError::FrameTooBig { size: 11, .. })
        ));
        let mut b = BytesMut::new();
        encode_frame(&mut b, OpCode::Binary, false, 0, &[0; 10], None);
        encode_frame(&mut b, OpCode::Continuation, true, 0, &[0; 10], None);
        assert!(d.decode(&mut b).unwrap().is_some());
        assert!(matches!(
            d.decode(&mut b),
            Err(ProtocolError::MessageTooBig { size: 20, max: 15 })
        ));
    }

    #[test]
    fn rsv_allowed_only_on_first_frame_when_negotiated() {
        let mut d = client();
        d.set_allowed_rsv(0x40);
        let mut b = BytesMut::from(&b"\x41\x01a\xc0\x01b"[..]);
        assert_eq!(d.decode(&mut b).unwrap().unwrap().rsv, 0x40);
        assert_eq!(d.decode(&mut b), Err(ProtocolError::ReservedBits(4)));
    }

    #[test]
    fn utf8_fails_inside_a_partial_frame() {
        // Autobahn 6.4.3: the frame's first part is fine, the second is already impossible.
        let mut msg = "κόσμε".as_bytes().to_vec();
        msg.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80, b'x', b'y']);
        let mut wire = BytesMut::new();
        encode_frame(&mut wire, OpCode::Text, true, 0, &msg, None);
        let mut d = client();
        let mut b = BytesMut::from(&wire[..2 + 10]);
        assert_eq!(d.decode(&mut b).unwrap(), None);
        b.extend_from_slice(&wire[12..14]);
        assert_eq!(d.decode(&mut b), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn server_role_unmasks() {
        let mut wire = BytesMut::new();
        encode_frame(
            &mut wire,
            OpCode::Text,
            true,
            0,
            b"Hello",
            Some([1, 2, 3, 4]),
        );
        let mut d = Decoder::new(Role::Server, Limits::default());
        let f = d.decode(&mut wire).unwrap().unwrap();
        assert_eq!(&f.payload[..], b"Hello");
        assert!(matches!(
            d.decode(&mut BytesMut::from(&b"\x81\x00"[..])),
            Err(ProtocolError::Masking(_))
        ));
    }

    #[test]
    fn utf8_fails_inside_a_partial_masked_frame() {
        // Autobahn 6.4.3 against a server: the masked frame's second part is already impossible.
        let mut msg = "κόσμε".as_bytes().to_vec();
        msg.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80, b'x', b'y']);
        let mut wire = BytesMut::new();
        encode_frame(
            &mut wire,
            OpCode::Text,
            true,
            0,
            &msg,
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        let mut d = Decoder::new(Role::Server, Limits::default());
        let mut b = BytesMut::from(&wire[..6 + 10]);
        assert_eq!(d.decode(&mut b).unwrap(), None);
        b.extend_from_slice(&wire[16..18]);
        assert_eq!(d.decode(&mut b), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn a_masked_frame_unmasked_while_arriving_then_cut_in_pieces() {
        // Part of the payload is unmasked in place while the frame is held whole; pieces
        // switched on before the rest arrives must not unmask those bytes a second time.
        let text = "0123456789abcdefghij";
        let mut wire = BytesMut::new();
        encode_frame(
            &mut wire,
            OpCode::Text,
            true,
            0,
            text.as_bytes(),
            Some([1, 2, 3, 4]),
        );
        let mut d = Decoder::new(Role::Server, Limits::default());
        let mut b = BytesMut::from(&wire[..6 + 7]);
        assert_eq!(d.decode(&mut b).unwrap(), None);
        d.set_limits(Limits {
            max_frame_size: 4,
            ..Limits::default()
        });
        d.set_pieces(true);
        b.extend_from_slice(&wire[13..]);
        let mut got = Vec::new();
        while let Some(f) = d.decode(&mut b).unwrap() {
            got.extend_from_slice(&f.payload);
        }
        assert_eq!(got, text.as_bytes());
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let data = (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..70_000),
        )
            .prop_map(|(text, p)| {
                if text {
                    Frame::text(String::from_utf8_lossy(&p).into_owned())
                } else {
                    Frame::binary(p)
                }
            });
        let control =
            (0u8..3, proptest::collection::vec(any::<u8>(), 0..=125)).prop_map(|(k, p)| match k {
                0 => Frame::ping(p),
                1 => Frame::pong(p),
                _ => Frame::close(Some(&CloseReason::truncated(
                    3000 + u16::from(p.first().copied().unwrap_or(0)),
                    &String::from_utf8_lossy(&p),
                ))),
            });
        prop_oneof![3 => data, 1 => control]
    }

    /// Small frames of every kind a run may or may not take, some of them broken.
    fn arb_small_frame() -> impl Strategy<Value = Frame> {
        let payload = prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..130),
            1 => proptest::collection::vec(any::<u8>(), 120..600),
        ];
        (0u8..9, payload).prop_map(|(k, p)| match k {
            0 => Frame::text(String::from_utf8_lossy(&p).into_owned()),
            1 | 2 => Frame::binary(p),
            3 => Frame::text(p), // often invalid UTF-8
            4 => Frame::ping(p.into_iter().take(125).collect::<Vec<u8>>()),
            5 => Frame::binary(p).with_fin(false),
            6 => Frame::continuation(p, true),
            7 => Frame::binary(p).with_rsv(0x40),
            _ => Frame::text(String::from_utf8_lossy(&p).into_owned()).with_fin(false),
        })
    }

    /// Messages cut into frames (text, binary, some with RSV1 as if compressed), with control
    /// frames between them.
    fn arb_fragmented() -> impl Strategy<Value = Vec<Frame>> {
        let message = (
            0u8..3,
            proptest::collection::vec(any::<u8>(), 0..3000),
            proptest::collection::vec(0usize..3000, 0..3),
        )
            .prop_map(|(k, p, cuts)| {
                let p = if k == 0 {
                    String::from_utf8_lossy(&p).into_owned().into_bytes()
                } else {
                    p
                };
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(p.len())).collect();
                cuts.sort_unstable();
                let mut frames = Vec::new();
                let mut from = 0;
                for (i, &c) in cuts.iter().chain(std::iter::once(&p.len())).enumerate() {
                    let c = c.max(from);
                    let data = p[from..c].to_vec();
                    let fin = c == p.len() && i == cuts.len();
                    frames.push(match (i, k) {
                        (0, 0) => Frame::text(data).with_fin(fin),
                        (0, 1) => Frame::binary(data).with_fin(fin),
                        (0, _) => Frame::binary(data).with_fin(fin).with_rsv(0x40),
                        _ => Frame::continuation(data, fin),
                    });
                    from = c;
                }
                frames
            });
        let item = prop_oneof![
            4 => message,
            1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(|p| vec![Frame::ping(p)]),
        ];
        proptest::collection::vec(item, 1..5).prop_map(|v| v.into_iter().flatten().collect())
    }

    /// What a receiver makes of frames: control frames, and each message's opcode, RSV bits and
    /// whole payload.
    fn messages(frames: &[Frame]) -> Vec<(OpCode, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut open: Option<(OpCode, u8, Vec<u8>)> = None;
        for f in frames {
            if f.opcode.is_control() {
                out.push((f.opcode, 0, f.payload.to_vec()));
                continue;
            }
            let m = open.get_or_insert_with(|| (f.opcode, f.rsv, Vec::new()));
            m.2.extend_from_slice(&f.payload);
            if f.fin {
                out.extend(open.take());
            }
        }
        out
    }

    #[test]
    fn a_frame_in_pieces_fails_on_bad_utf8_and_keeps_the_message_limit_off() {
        // Invalid UTF-8 in the second piece: the first piece comes out, then 1007.
        let four = Limits {
            max_frame_size: 4,
            ..Limits::default()
        };
        let mut d = Decoder::new(Role::Client, four);
        d.set_pieces(true);
        let mut b = BytesMut::from(&b"\x81\x08abcd\xff\xfeef"[..]);
        assert_eq!(&d.decode(&mut b).unwrap().unwrap().payload[..], b"abcd");
        assert_eq!(d.decode(&mut b), Err(ProtocolError::InvalidUtf8));
        // Neither max_frame_size nor max_message_size refuses a frame handed out in pieces.
        let mut d = Decoder::new(
            Role::Client,
            Limits {
                max_frame_size: 8,
                max_message_size: 10,
            },
        );
        d.set_pieces(true);
        let mut wire = BytesMut::new();
        encode_frame(&mut wire, OpCode::Binary, true, 0, &[7; 1000], None);
        let mut n = 0;
        while let Some(f) = d.decode(&mut wire).unwrap() {
            assert!(f.payload.len() <= 8);
            n += f.payload.len();
        }
        assert_eq!(n, 1000);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn frames_round_trip_split_anywhere(frames in proptest::collection::vec(arb_frame(), 1..4), masked: bool, cut_seed: u64) {
            let mut wire = BytesMut::new();
            for f in &frames {
                encode_frame(&mut wire, f.opcode, f.fin, f.rsv, &f.payload, masked.then_some([9, 8, 7, 6]));
            }
            let role = if masked { Role::Server } else { Role::Client };
            // Split at every boundary for small inputs; at a sample of boundaries for large ones.
            let step = (wire.len() / 200).max(1);
            let offset = (cut_seed as usize) % step;
            let mut cut = offset;
            while cut <= wire.len() {
                let mut d = Decoder::new(role, Limits::default());
                let mut buf = BytesMut::from(&wire[..cut]);
                let mut got = Vec::new();
                while let Some(f) = d.decode(&mut buf).unwrap() { got.push(f); }
                buf.extend_from_slice(&wire[cut..]);
                while let Some(f) = d.decode(&mut buf).unwrap() { got.push(f); }
                prop_assert_eq!(&got, &frames);
                prop_assert!(buf.is_empty());
                cut += step;
            }
        }

        #[test]
        fn pieces_make_the_same_messages_wherever_reads_end(
            frames in arb_fragmented(),
            masked: bool,
            piece in 1usize..=2000,
            cut_seed: usize,
        ) {
            let role = if masked { Role::Server } else { Role::Client };
            // Frames up to `piece` are held whole, larger ones come in pieces; a control frame
            // over `piece` would be refused, so there are none.
            let frames: Vec<Frame> = frames
                .into_iter()
                .filter(|f| !f.opcode.is_control() || f.payload.len() <= piece)
                .collect();
            let mut wire = BytesMut::new();
            for f in &frames {
                encode_frame(&mut wire, f.opcode, f.fin, f.rsv, &f.payload, masked.then_some([9, 8, 7, 6]));
            }
            let limits = Limits { max_frame_size: piece, max_message_size: 100 };
            // All at once, and in reads cut every few bytes: the same pieces.
            let mut outputs = Vec::new();
            for step in [wire.len().max(1), 1 + cut_seed % 700] {
                let mut d = Decoder::new(role, limits);
                d.set_allowed_rsv(0x40);
                d.set_pieces(true);
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for chunk in wire.chunks(step) {
                    buf.extend_from_slice(chunk);
                    while let Some(f) = d.decode(&mut buf).unwrap() {
                        prop_assert!(f.opcode.is_control() || f.payload.len() <= piece);
                        // Waiting for a piece never asks for more than a piece.
                        prop_assert!(d.wanted() <= piece + 14);
                        got.push(f);
                    }
                }
                prop_assert!(buf.is_empty());
                outputs.push(got);
            }
            prop_assert_eq!(&outputs[0], &outputs[1]);
            prop_assert_eq!(messages(&outputs[0]), messages(&frames));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), role_server: bool) {
            let role = if role_server { Role::Server } else { Role::Client };
            let mut d = Decoder::new(role, Limits { max_frame_size: 300, max_message_size: 400 });
            d.set_allowed_rsv(0x40);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
        }

        #[test]
        fn byte_at_a_time_equals_all_at_once(frames in proptest::collection::vec(arb_frame(), 1..3), masked: bool) {
            let mut wire = BytesMut::new();
            for f in &frames {
                encode_frame(&mut wire, f.opcode, f.fin, f.rsv, &f.payload, masked.then_some([9, 8, 7, 6]));
            }
            if wire.len() < 5000 {
                let role = if masked { Role::Server } else { Role::Client };
                let mut d = Decoder::new(role, Limits::default());
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for b in wire.iter() {
                    buf.extend_from_slice(&[*b]);
                    while let Some(f) = d.decode(&mut buf).unwrap() { got.push(f); }
                }
                prop_assert_eq!(got, frames);
            }
        }

        #[test]
        fn runs_decode_exactly_like_frames(
            frames in proptest::collection::vec(arb_small_frame(), 1..40),
            garbage in proptest::collection::vec(any::<u8>(), 0..16),
            cut_seed: usize,
            limit in 0usize..400,
        ) {
            let mut wire = BytesMut::new();
            for f in &frames {
                encode_frame(&mut wire, f.opcode, f.fin, f.rsv, &f.payload, None);
            }
            wire.extend_from_slice(&garbage);
            let limits = Limits { max_frame_size: 100 + limit, max_message_size: 300 };
            // The same bytes, arriving in two reads, through `decode` alone and through
            // `decode_run` first as the session driver does: the same frames, the same error.
            let cut = cut_seed % (wire.len() + 1);
            let mut outputs = Vec::new();
            for runs in [false, true] {
                let mut d = Decoder::new(Role::Client, limits);
                let mut buf = BytesMut::from(&wire[..cut]);
                let mut got = Vec::new();
                let mut err = None;
                for read in 0..2 {
                    if read == 1 {
                        buf.extend_from_slice(&wire[cut..]);
                    }
                    loop {
                        if runs && let Some(run) = d.decode_run(&mut buf) {
                            let n = run.len();
                            let mut r = run.clone();
                            let from_run: Vec<Frame> = std::iter::from_fn(|| r.next_frame()).collect();
                            prop_assert_eq!(from_run.len(), n);
                            let messages: Vec<Message> = run.collect();
                            prop_assert_eq!(messages.len(), n);
                            got.extend(from_run);
                        }
                        match d.decode(&mut buf) {
                            Ok(Some(f)) => got.push(f),
                            Ok(None) => break,
                            Err(e) => {
                                err = Some(e);
                                break;
                            }
                        }
                    }
                    if err.is_some() {
                        break;
                    }
                }
                outputs.push((got, err));
            }
            prop_assert_eq!(&outputs[0], &outputs[1]);
        }

        #[test]
        fn run_messages_match_their_frames(frames in proptest::collection::vec(arb_small_frame(), 1..20)) {
            let mut wire = BytesMut::new();
            for f in &frames {
                encode_frame(&mut wire, f.opcode, f.fin, f.rsv, &f.payload, None);
            }
            let mut d = client();
            while !wire.is_empty() {
                if let Some(run) = d.decode_run(&mut wire) {
                    let mut frames = run.clone();
                    for m in run {
                        let f = frames.next_frame().unwrap();
                        prop_assert_eq!(m.opcode(), f.opcode);
                        prop_assert_eq!(m.as_bytes(), &f.payload[..]);
                    }
                    prop_assert!(frames.is_empty());
                } else if !matches!(d.decode(&mut wire), Ok(Some(_))) {
                    break; // incomplete, or a frame that breaks a rule
                }
            }
        }
    }
}
