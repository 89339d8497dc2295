//! Errors of the protocol core: what the peer did wrong, each knowing its close code.

use crate::close::CloseCode;

/// The peer broke RFC 6455 (or a negotiated extension); the connection must fail with
/// [`ProtocolError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An opcode RFC 6455 reserves (3–7, 11–15).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// RSV bits set that no negotiated extension claims.
    #[error("reserved bits {0:#05b} set without a negotiated extension")]
    ReservedBits(u8),
    /// A control frame with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame of {0} bytes (at most 125)")]
    ControlTooLong(u64),
    /// A continuation frame with no fragmented message open.
    #[error("continuation frame with no message to continue")]
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is still open.
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A masked frame from a server, or an unmasked one from a client.
    #[error("{0}")]
    Masking(&'static str),
    /// A 64-bit payload length with the most significant bit set.
    #[error("payload length has its most significant bit set")]
    InvalidLength,
    /// A Close frame with a 1-byte payload.
    #[error("close frame with a 1-byte payload")]
    CloseTooShort,
    /// A Close frame carrying a code that may not appear on the wire.
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// Invalid UTF-8 in a text message or a close reason.
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A frame larger than the configured maximum frame size.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooBig {
        /// The frame's payload length.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A message larger than the configured maximum message size (after inflation).
    #[error("message of more than {max} bytes (at least {size})")]
    MessageTooBig {
        /// How many bytes had arrived when the limit was passed.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A negotiated extension could not decode a message (e.g. corrupt deflate data).
    #[error("extension {name} failed: {detail}")]
    Extension {
        /// The extension's name.
        name: &'static str,
        /// What went wrong.
        detail: String,
    },
}

impl ProtocolError {
    /// The close code to fail the connection with: 1009 for size limits, 1007 for invalid
    /// UTF-8, 1002 for everything else.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::FrameTooBig { .. } | ProtocolError::MessageTooBig { .. } => {
                CloseCode::TOO_BIG
            }
            ProtocolError::InvalidUtf8 => CloseCode::NOT_CONSISTENT,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}
