//! Close codes and close reasons (RFC 6455 §5.5.1, §7.4).
//!
//! Owns the numbers and the rule for which of them may appear on the wire. Knows nothing of
//! frames or connections.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;

/// A close status code (RFC 6455 §7.4), a `u16` newtype with the registered codes as constants.
///
/// Any `u16` can be held; [`CloseCode::is_sendable`] tells whether it may appear in a Close
/// frame on the wire.
///
/// ```
/// # use wsc_proto::CloseCode;
/// assert_eq!(CloseCode::NORMAL.as_u16(), 1000);
/// assert!(CloseCode::from(4000).is_sendable());
/// assert!(!CloseCode::NO_STATUS.is_sendable());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: normal closure; the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: an endpoint is going away (server shutdown, browser navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept (Ktor's `CANNOT_ACCEPT`).
    pub const CANNOT_ACCEPT: CloseCode = CloseCode(1003);
    /// 1004: reserved; never on the wire.
    pub const RESERVED: CloseCode = CloseCode(1004);
    /// 1005: no status code was present (local report only; never on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection closed without a Close frame (local report only; never on the wire).
    pub const CLOSED_ABNORMALLY: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with the message type, e.g. invalid UTF-8 in a text message
    /// (Ktor's `NOT_CONSISTENT`).
    pub const NOT_CONSISTENT: CloseCode = CloseCode(1007);
    /// 1008: a message violates the endpoint's policy.
    pub const VIOLATED_POLICY: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const NO_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the endpoint met an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (temporary overload).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway or proxy got an invalid answer upstream.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: the TLS handshake failed (local report only; never on the wire).
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// The numeric value.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether the code may be carried by a Close frame (RFC 6455 §7.4.1, §7.4.2, IANA registry):
    /// 1000–1003, 1007–1014 and 3000–4999.
    pub const fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// The registered name of a code in 1000–1015, if it has one.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1000 => "NORMAL",
            1001 => "GOING_AWAY",
            1002 => "PROTOCOL_ERROR",
            1003 => "CANNOT_ACCEPT",
            1004 => "RESERVED",
            1005 => "NO_STATUS",
            1006 => "CLOSED_ABNORMALLY",
            1007 => "NOT_CONSISTENT",
            1008 => "VIOLATED_POLICY",
            1009 => "TOO_BIG",
            1010 => "NO_EXTENSION",
            1011 => "INTERNAL_ERROR",
            1012 => "SERVICE_RESTART",
            1013 => "TRY_AGAIN_LATER",
            1014 => "BAD_GATEWAY",
            1015 => "TLS_HANDSHAKE",
            _ => return None,
        })
    }
}

impl From<u16> for CloseCode {
    fn from(v: u16) -> Self {
        CloseCode(v)
    }
}

impl From<CloseCode> for u16 {
    fn from(c: CloseCode) -> u16 {
        c.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{}({n})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The largest close reason in bytes: a control frame carries at most 125 bytes, 2 of them
/// the code (RFC 6455 §5.5).
pub const MAX_REASON_LEN: usize = 123;

/// A close code with an optional UTF-8 reason of at most [`MAX_REASON_LEN`] bytes.
///
/// ```
/// # use wsc_proto::{CloseCode, CloseReason};
/// let r = CloseReason::new(CloseCode::NORMAL, "bye").unwrap();
/// assert_eq!(r.code(), CloseCode::NORMAL);
/// assert_eq!(r.reason(), "bye");
/// assert!(CloseReason::new(CloseCode::NORMAL, "x".repeat(124)).is_err());
/// // A long reason can be cut at a character boundary instead:
/// assert_eq!(CloseReason::truncated(CloseCode::INTERNAL_ERROR, &"é".repeat(100)).reason().len(), 122);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CloseReason {
    code: CloseCode,
    reason: String,
}

/// A close reason could not be made: the text is longer than [`MAX_REASON_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("close reason is {0} bytes long; at most 123 fit in a Close frame")]
pub struct ReasonTooLong(pub usize);

impl CloseReason {
    /// A reason with `code` and `reason`; fails if `reason` is over 123 bytes of UTF-8.
    pub fn new(
        code: impl Into<CloseCode>,
        reason: impl Into<String>,
    ) -> Result<Self, ReasonTooLong> {
        let reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            return Err(ReasonTooLong(reason.len()));
        }
        Ok(CloseReason {
            code: code.into(),
            reason,
        })
    }

    /// A reason with `code` and `reason` cut to at most 123 bytes at a character boundary.
    pub fn truncated(code: impl Into<CloseCode>, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        CloseReason {
            code: code.into(),
            reason: reason[..end].to_owned(),
        }
    }

    /// 1000 with no text.
    pub fn normal() -> Self {
        CloseReason {
            code: CloseCode::NORMAL,
            reason: String::new(),
        }
    }

    /// The code.
    pub fn code(&self) -> CloseCode {
        self.code
    }

    /// The text (may be empty).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Encodes the Close frame payload: the code in network order, then the text.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.code.0);
        out.put_slice(self.reason.as_bytes());
    }

    /// The Close frame payload as bytes.
    pub fn to_payload(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(2 + self.reason.len());
        self.encode(&mut b);
        b.freeze()
    }

    /// Parses a Close frame payload received from the peer (RFC 6455 §5.5.1, §7.1.5).
    ///
    /// An empty payload gives `Ok(None)` (no status). A 1-byte payload, a code that may not
    /// appear on the wire (1002) or a reason that is not UTF-8 (1007) is an error.
    pub fn parse(payload: &[u8]) -> Result<Option<CloseReason>, ProtocolError> {
        match payload.len() {
            0 => Ok(None),
            1 => Err(ProtocolError::CloseTooShort),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = simdutf8::basic::from_utf8(&payload[2..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Some(CloseReason {
                    code,
                    reason: reason.to_owned(),
                }))
            }
        }
    }
}

impl fmt::Debug for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseReason({:?}, {:?})", self.code, self.reason)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {:?}", self.code, self.reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes_match_autobahn_7_7_and_7_9() {
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(c).is_sendable(), "{c}");
        }
        for c in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(c).is_sendable(), "{c}");
        }
    }

    #[test]
    fn parse_rules() {
        assert_eq!(CloseReason::parse(&[]).unwrap(), None);
        assert_eq!(CloseReason::parse(&[3]), Err(ProtocolError::CloseTooShort));
        assert_eq!(
            CloseReason::parse(&[0x03, 0xed]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            CloseReason::parse(&[0x03, 0xe8, 0xff]),
            Err(ProtocolError::InvalidUtf8)
        );
        let r = CloseReason::parse(&[0x03, 0xe8, b'o', b'k'])
            .unwrap()
            .unwrap();
        assert_eq!((r.code(), r.reason()), (CloseCode::NORMAL, "ok"));
        assert_eq!(&r.to_payload()[..], &[0x03, 0xe8, b'o', b'k']);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let r = CloseReason::truncated(CloseCode::INTERNAL_ERROR, &"€".repeat(60));
        assert_eq!(r.reason().len(), 123);
        let r = CloseReason::truncated(CloseCode::INTERNAL_ERROR, &"é".repeat(70));
        assert_eq!(r.reason().len(), 122);
    }
}
