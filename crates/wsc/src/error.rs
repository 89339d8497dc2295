//! The one error type of the client, grouped by who is at fault.
//!
//! `Error` is `Clone` so that both halves of a split session report the same terminal cause.
//! `Display` describes only its own level; the cause is in [`std::error::Error::source`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use wsc_proto::{CloseCode, CloseReason, HandshakeError, ProtocolError};

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// Opening the TCP connection.
    Connect,
    /// The opening handshake (request sent, 101 not yet complete).
    Handshake,
    /// No Pong echoing our Ping within the ping timeout.
    Ping,
    /// The peer did not complete the closing handshake within the close timeout.
    Close,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::Handshake => "handshake",
            TimeoutKind::Ping => "ping",
            TimeoutKind::Close => "close",
        })
    }
}

/// Everything that can go wrong, as one enum a caller can match.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL cannot be used (wrong scheme, no host, a fragment, unparsable). Caller's fault.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration or request setting is invalid. Caller's fault.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The server answered the upgrade with something other than 101.
    #[error("handshake refused with status {status}")]
    HandshakeRefused {
        /// The status.
        status: StatusCode,
        /// The response headers.
        headers: Box<HeaderMap>,
        /// Up to 64 KiB of the response body.
        body: Bytes,
    },
    /// The server answered 101 but the upgrade is invalid (bad accept hash, unoffered
    /// subprotocol or extension, malformed response). Server's fault.
    #[error("invalid handshake response")]
    Handshake(#[source] HandshakeError),
    /// The TLS handshake with `host` failed: an untrusted, expired or mismatched certificate,
    /// a refused client certificate, or a protocol problem.
    #[error("TLS with {host} failed: {reason}")]
    Tls {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The proxy refused the tunnel (status and reason of its answer to CONNECT) or failed.
    #[error("proxy refused: {}{reason}", .status.map(|s| format!("{s} ")).unwrap_or_default())]
    Proxy {
        /// The HTTP status of a CONNECT refusal.
        status: Option<u16>,
        /// The reason phrase or failure.
        reason: String,
    },
    /// A redirect could not be followed: too many, a downgrade from wss to ws, or a bad Location.
    #[error("redirect not followed: {0}")]
    Redirect(String),
    /// A deadline passed.
    #[error("{0} timed out")]
    Timeout(TimeoutKind),
    /// The network failed.
    #[error("I/O error")]
    Io(#[source] Arc<std::io::Error>),
    /// The peer broke the protocol; the session was failed with `code`.
    #[error("protocol violation by the peer (closed with {code})")]
    Protocol {
        /// The close code sent.
        code: CloseCode,
        /// What the peer did.
        #[source]
        error: ProtocolError,
    },
    /// A message or frame passed a size limit (sent 1009 if it came from the peer); `limit`
    /// says which one, so that the right setting gets raised.
    #[error("{} too big: {size} bytes, over {limit} ({max})", limit.what())]
    MessageTooBig {
        /// Its size (or the size seen when the limit was passed).
        size: u64,
        /// The limit.
        max: usize,
        /// Which limit it passed.
        limit: SizeLimit,
    },
    /// The session is closed; the close reason, if one was exchanged.
    #[error("session closed{}", .0.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Closed(Option<CloseReason>),
    /// No content converter is configured on the client (Ktor's
    /// `WebsocketConverterNotFoundException`).
    #[error("no content converter configured")]
    NoConverter,
    /// A reconnecting session is between connections and rejects sends
    /// ([`WhileDisconnected::Reject`](crate::WhileDisconnected::Reject)).
    #[error("disconnected; reconnecting")]
    Disconnected,
    /// A reconnecting session's queue for sends while disconnected is full.
    #[error("the queue of messages waiting for a connection is full")]
    QueueFull,
    /// The stream a message was being sent from (`send_stream`) yielded an error; the cause is
    /// the stream's error. The message was cut off, so the session closes with 1011.
    #[error("the stream being sent failed")]
    Source(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// Text to send is not valid UTF-8 (a streamed text message, checked across chunks).
    #[error("text to send is not valid UTF-8")]
    InvalidUtf8,
    /// The converter could not serialize a value.
    #[error("could not serialize the value")]
    Serialize(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// A received message could not be read as the requested type, or is of a kind the
    /// converter does not read (Ktor's `WebsocketDeserializeException`). The message is kept,
    /// so nothing is lost.
    #[error("could not deserialize a {} message of {} bytes", if .message.is_text() { "text" } else { "binary" }, .message.len())]
    Deserialize {
        /// The message as received.
        message: Box<wsc_proto::Message>,
        /// Why it did not convert.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

/// The size limit an [`Error::MessageTooBig`] passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SizeLimit {
    /// `max_frame_size`: one frame's payload (raise it with
    /// [`ClientBuilder::max_frame_size`](crate::ClientBuilder::max_frame_size)).
    Frame,
    /// `max_message_size`: a whole message, inflated size included.
    Message,
}

impl SizeLimit {
    fn what(self) -> &'static str {
        match self {
            SizeLimit::Frame => "frame",
            SizeLimit::Message => "message",
        }
    }
}

impl std::fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SizeLimit::Frame => "max_frame_size",
            SizeLimit::Message => "max_message_size",
        })
    }
}

impl Error {
    pub(crate) fn io(e: std::io::Error) -> Self {
        Error::Io(Arc::new(e))
    }

    pub(crate) fn invalid_url(url: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidUrl {
            url: url.into(),
            reason: reason.into(),
        }
    }

    /// From a protocol violation: size limits become [`Error::MessageTooBig`].
    pub(crate) fn protocol(e: ProtocolError) -> Self {
        match e {
            ProtocolError::FrameTooBig { size, max } => Error::MessageTooBig {
                size,
                max,
                limit: SizeLimit::Frame,
            },
            ProtocolError::MessageTooBig { size, max } => Error::MessageTooBig {
                size,
                max,
                limit: SizeLimit::Message,
            },
            error => Error::Protocol {
                code: error.close_code(),
                error,
            },
        }
    }

    /// The close code this error maps to on the wire or in a close reason, where one applies.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Error::Protocol { code, .. } => Some(*code),
            Error::MessageTooBig { .. } => Some(CloseCode::TOO_BIG),
            Error::Timeout(TimeoutKind::Ping) => Some(CloseCode::INTERNAL_ERROR),
            Error::Closed(r) => r.as_ref().map(CloseReason::code),
            Error::Io(_) => Some(CloseCode::CLOSED_ABNORMALLY),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_error_names_the_limit_it_passed() {
        let e = Error::protocol(ProtocolError::FrameTooBig { size: 70, max: 64 });
        assert!(matches!(
            e,
            Error::MessageTooBig {
                limit: SizeLimit::Frame,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "frame too big: 70 bytes, over max_frame_size (64)"
        );
        let e = Error::protocol(ProtocolError::MessageTooBig { size: 70, max: 64 });
        assert_eq!(
            e.to_string(),
            "message too big: 70 bytes, over max_message_size (64)"
        );
    }
}
