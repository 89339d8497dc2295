//! Frames (RFC 6455 §5.2): opcodes, the frame type, and header encoding.
//!
//! Owns the wire layout of a frame header. Validation of what arrives is in
//! [`decode`](crate::decode); nothing here touches I/O.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::close::CloseReason;

/// A frame opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation = 0x0,
    /// 0x1: the first frame of a text message.
    Text = 0x1,
    /// 0x2: the first frame of a binary message.
    Binary = 0x2,
    /// 0x8: Close (control).
    Close = 0x8,
    /// 0x9: Ping (control).
    Ping = 0x9,
    /// 0xA: Pong (control).
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a 4-bit value, or `None` for the reserved ones.
    pub const fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Close, Ping or Pong.
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// RSV1 in the first header byte's layout (`0x40`), as used by `Frame::rsv`.
pub const RSV1: u8 = 0x40;
/// RSV2 (`0x20`).
pub const RSV2: u8 = 0x20;
/// RSV3 (`0x10`).
pub const RSV3: u8 = 0x10;

/// One WebSocket frame: opcode, FIN, RSV bits and the (unmasked) payload.
///
/// Raw sessions see every frame as it arrives; default sessions see [`Message`](crate::Message)s.
///
/// ```
/// # use wsc_proto::{Frame, OpCode};
/// let f = Frame::text("hi");
/// assert_eq!(f.opcode, OpCode::Text);
/// assert!(f.fin);
/// let first = Frame::text("he").with_fin(false);
/// let last = Frame::continuation("llo", true);
/// assert!(!first.fin && last.fin);
/// ```
// `repr(C)`: the three header fields first, then the payload, so that a frame handed back
// through `Poll<Option<Result<..>>>` is written as aligned words; the default layout made that
// copy go through overlapping unaligned moves that stall store forwarding (bench/RESULTS.md).
#[derive(Clone, PartialEq, Eq)]
#[repr(C)]
pub struct Frame {
    /// The opcode.
    pub opcode: OpCode,
    /// FIN: this is the message's last frame.
    pub fin: bool,
    /// The RSV bits, in place in the first header byte (`RSV1 | RSV2 | RSV3` = `0x70`).
    pub rsv: u8,
    /// The payload, unmasked.
    pub payload: Bytes,
}

impl Frame {
    /// A frame with `opcode`, FIN set, no RSV bits.
    pub fn new(opcode: OpCode, payload: impl Into<Bytes>) -> Self {
        Frame {
            opcode,
            fin: true,
            rsv: 0,
            payload: payload.into(),
        }
    }
    /// A final text frame. The payload's UTF-8 is the caller's business for frames built from bytes.
    pub fn text(payload: impl Into<Bytes>) -> Self {
        Frame::new(OpCode::Text, payload)
    }
    /// A final binary frame.
    pub fn binary(payload: impl Into<Bytes>) -> Self {
        Frame::new(OpCode::Binary, payload)
    }
    /// A continuation frame.
    pub fn continuation(payload: impl Into<Bytes>, fin: bool) -> Self {
        Frame {
            fin,
            ..Frame::new(OpCode::Continuation, payload)
        }
    }
    /// A Ping.
    pub fn ping(payload: impl Into<Bytes>) -> Self {
        Frame::new(OpCode::Ping, payload)
    }
    /// A Pong.
    pub fn pong(payload: impl Into<Bytes>) -> Self {
        Frame::new(OpCode::Pong, payload)
    }
    /// A Close carrying `reason` (or an empty Close for `None`).
    pub fn close(reason: Option<&CloseReason>) -> Self {
        Frame::new(
            OpCode::Close,
            reason.map(CloseReason::to_payload).unwrap_or_default(),
        )
    }
    /// The same frame with FIN set to `fin`.
    pub fn with_fin(mut self, fin: bool) -> Self {
        self.fin = fin;
        self
    }
    /// The same frame with RSV bits `rsv` (`0x40` = RSV1, `0x20` = RSV2, `0x10` = RSV3).
    pub fn with_rsv(mut self, rsv: u8) -> Self {
        self.rsv = rsv & 0x70;
        self
    }
    /// For a Close frame, its parsed reason (`Ok(None)` for an empty payload).
    pub fn close_reason(&self) -> Result<Option<CloseReason>, crate::ProtocolError> {
        CloseReason::parse(&self.payload)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("opcode", &self.opcode)
            .field("fin", &self.fin)
            .field("rsv", &format_args!("{:#04x}", self.rsv))
            .field("len", &self.payload.len())
            .finish()
    }
}

/// The length of a frame header for `payload_len` bytes, masked or not.
#[inline]
pub const fn header_len(payload_len: usize, masked: bool) -> usize {
    let base = if payload_len < 126 {
        2
    } else if payload_len <= 0xffff {
        4
    } else {
        10
    };
    if masked { base + 4 } else { base }
}

/// Appends a frame header to `out`.
#[inline]
pub fn encode_header(
    out: &mut BytesMut,
    opcode: OpCode,
    fin: bool,
    rsv: u8,
    len: usize,
    mask: Option<[u8; 4]>,
) {
    let b0 = (u8::from(fin) << 7) | (rsv & 0x70) | opcode as u8;
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.put_slice(&[b0, m | len as u8]);
    } else if len <= 0xffff {
        out.put_slice(&[b0, m | 126]);
        out.put_u16(len as u16);
    } else {
        out.put_slice(&[b0, m | 127]);
        out.put_u64(len as u64);
    }
    if let Some(k) = mask {
        out.put_slice(&k);
    }
}

/// Appends a whole frame to `out`, masking the payload with `mask` when given (a client must;
/// RFC 6455 §5.3). The payload is copied and masked in `out`; the caller's bytes are untouched.
///
/// ```
/// use bytes::BytesMut;
/// use wsc_proto::{encode_frame, OpCode};
/// let mut out = BytesMut::new();
/// encode_frame(&mut out, OpCode::Text, true, 0, b"Hello", None);
/// assert_eq!(&out[..], b"\x81\x05Hello"); // RFC 6455 §5.7
/// ```
#[inline(always)]
pub fn encode_frame(
    out: &mut BytesMut,
    opcode: OpCode,
    fin: bool,
    rsv: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    match mask {
        Some(k) if payload.len() < 126 => encode_small_masked(out, opcode, fin, rsv, payload, k),
        _ => encode_any(out, opcode, fin, rsv, payload, mask),
    }
}

#[inline(never)]
fn encode_any(
    out: &mut BytesMut,
    opcode: OpCode,
    fin: bool,
    rsv: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    out.reserve(header_len(payload.len(), mask.is_some()) + payload.len());
    encode_header(out, opcode, fin, rsv, payload.len(), mask);
    match mask {
        Some(k) => crate::mask::extend_masked(out, payload, k),
        None => out.extend_from_slice(payload),
    }
}

/// A masked frame under 126 bytes, the common client message: written straight into `out`
/// (the payload masked sixteen bytes per XOR).
#[inline(always)]
fn encode_small_masked(
    out: &mut BytesMut,
    opcode: OpCode,
    fin: bool,
    rsv: u8,
    payload: &[u8],
    key: [u8; 4],
) {
    let b0 = (u8::from(fin) << 7) | (rsv & 0x70) | opcode as u8;
    crate::mask::extend_small_frame(out, [b0, 0x80 | payload.len() as u8], key, payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_5_7_examples() {
        let mut out = BytesMut::new();
        encode_frame(
            &mut out,
            OpCode::Text,
            true,
            0,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(
            &out[..],
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        out.clear();
        encode_frame(&mut out, OpCode::Text, false, 0, b"Hel", None);
        encode_frame(&mut out, OpCode::Continuation, true, 0, b"lo", None);
        assert_eq!(
            &out[..],
            &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]
        );
        out.clear();
        encode_frame(&mut out, OpCode::Binary, true, 0, &[0u8; 256], None);
        assert_eq!(&out[..4], &[0x82, 0x7e, 0x01, 0x00]);
        out.clear();
        encode_frame(&mut out, OpCode::Binary, true, 0, &vec![0u8; 65536], None);
        assert_eq!(&out[..10], &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn header_lengths() {
        assert_eq!(header_len(125, false), 2);
        assert_eq!(header_len(126, true), 8);
        assert_eq!(header_len(65535, false), 4);
        assert_eq!(header_len(65536, true), 14);
    }

    #[test]
    fn masked_frames_of_every_small_size_equal_the_scalar_encoding() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..300usize {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut out = BytesMut::from(&b"x"[..]);
            encode_frame(
                &mut out,
                OpCode::Binary,
                len % 3 != 0,
                0x40,
                &payload,
                Some(key),
            );
            let mut want = BytesMut::from(&b"x"[..]);
            encode_header(
                &mut want,
                OpCode::Binary,
                len % 3 != 0,
                0x40,
                len,
                Some(key),
            );
            want.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            assert_eq!(out, want, "length {len}");
        }
    }
}
