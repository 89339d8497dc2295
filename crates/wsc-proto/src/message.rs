//! Messages as a default session delivers them: whole, reassembled, text known to be UTF-8.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use crate::frame::OpCode;

/// Bytes that are valid UTF-8: a `str` that shares its buffer like [`Bytes`](bytes::Bytes).
///
/// ```
/// # use wsc_proto::Utf8Bytes;
/// let t = Utf8Bytes::from("hello");
/// assert_eq!(&*t, "hello");
/// assert_eq!(t.as_bytes(), b"hello");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Checks `bytes` and wraps them.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }

    /// Wraps bytes the caller has already validated (crate-internal: keeps the invariant).
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Utf8Bytes(bytes)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // The invariant of the type: every constructor checked the bytes (or they came from
        // a `str`). `from_utf8` on the hot path would validate twice; simdutf8 makes this cheap
        // enough, and it keeps the crate free of `unsafe`.
        simdutf8::basic::from_utf8(&self.0).unwrap_or_default()
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying [`Bytes`](bytes::Bytes).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The underlying [`Bytes`](bytes::Bytes), borrowed (cloning it copies nothing).
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::Text(Utf8Bytes::from(s))
    }
}

impl From<&[u8]> for Message {
    fn from(b: &[u8]) -> Self {
        Message::Binary(Bytes::copy_from_slice(b))
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s.into())
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Message::Binary(v.into())
    }
}

impl From<Bytes> for Message {
    fn from(v: Bytes) -> Self {
        Message::Binary(v)
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A whole data message.
///
/// ```
/// # use wsc_proto::Message;
/// let m = Message::from("hi");
/// assert_eq!(m.as_text(), Some("hi"));
/// assert_eq!(m.len(), 2);
/// assert!(Message::from(vec![1u8, 2]).is_binary());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message from anything string-like.
    pub fn text(s: impl Into<String>) -> Self {
        Message::Text(s.into().into())
    }
    /// A binary message.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Message::Binary(b.into())
    }
    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            Message::Binary(_) => None,
        }
    }
    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        matches!(self, Message::Binary(_))
    }
    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }
    /// The payload as shared [`Bytes`](bytes::Bytes), borrowed: a sender can keep it without
    /// copying.
    ///
    /// ```
    /// # use wsc_proto::Message;
    /// let m = Message::binary(vec![1, 2, 3]);
    /// let kept = m.bytes().clone(); // a reference count, not a copy
    /// assert_eq!(kept.as_ptr(), m.as_bytes().as_ptr());
    /// ```
    pub fn bytes(&self) -> &Bytes {
        match self {
            Message::Text(t) => t.bytes(),
            Message::Binary(b) => b,
        }
    }
    /// The payload as [`Bytes`](bytes::Bytes).
    pub fn into_bytes(self) -> Bytes {
        match self {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) => b,
        }
    }
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }
    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The data opcode this message travels with.
    pub fn opcode(&self) -> OpCode {
        match self {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Text(t) if t.len() <= 256 => write!(f, "Text({t:?})"),
            Message::Text(t) => write!(f, "Text({} bytes)", t.len()),
            Message::Binary(b) => write!(f, "Binary({} bytes)", b.len()),
        }
    }
}
