//! The one error type of the client, grouped by who is at fault.
//!
//! `Error` is `Clone` so that both halves of a split session report the same terminal cause.
//! `Display` describes only its own level; the cause is in [`std::error::Error::source`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use wsc_proto::handshake::HandshakeError;
use wsc_proto::{CloseCode, CloseReason, ProtocolError};

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

/// What wsc was doing when the network failed ([`Error::Io`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoContext {
    /// Looking up the host's addresses.
    Resolving {
        /// The host.
        host: String,
    },
    /// Opening a TCP connection (the last address tried, when there were several).
    Connecting {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// Talking to the proxy (CONNECT or SOCKS5).
    Proxy,
    /// The TLS handshake with the host.
    Tls {
        /// The host.
        host: String,
    },
    /// Sending the opening handshake or reading its response.
    Handshake,
    /// Reading from an open connection.
    Reading,
    /// Writing to an open connection.
    Writing,
    /// Something else (an `std::io::Error` converted with `?`).
    Other,
}

impl fmt::Display for IoContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoContext::Resolving { host } => write!(f, "resolving {host}"),
            IoContext::Connecting { addr } => write!(f, "connecting to {addr}"),
            IoContext::Proxy => f.write_str("talking to the proxy"),
            IoContext::Tls { host } => write!(f, "TLS handshake with {host}"),
            IoContext::Handshake => f.write_str("opening handshake"),
            IoContext::Reading => f.write_str("reading"),
            IoContext::Writing => f.write_str("writing"),
            IoContext::Other => f.write_str("I/O error"),
        }
    }
}

/// An error shown with all its causes, one after another: "a: b: c". Made by
/// [`Error::chain`]; `Chain(&e)` shows any other error so.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut shown = self.0.to_string();
        let mut next = self.0.source();
        while let Some(e) = next {
            let text = e.to_string();
            // A level that only repeats what was just said adds nothing.
            if !text.is_empty() && !shown.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            next = e.source();
        }
        Ok(())
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
    /// The network failed while wsc was doing what `context` says; the operating system's
    /// error is the source. Shown whole (see [`Error::chain`]) it reads, for example,
    /// "connecting to 127.0.0.1:9001: Connection refused (os error 111)".
    #[error("{context}")]
    Io {
        /// What wsc was doing.
        context: IoContext,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
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
    /// A queue of messages to send is full: a reconnecting session's queue for sends while
    /// disconnected, or a session's outgoing queue when its `Sink` is sent to without
    /// `poll_ready`.
    #[error("the queue of messages to send is full")]
    QueueFull,
    /// The stream or reader a message was being sent from (`send_stream`, `send_reader`)
    /// failed; the cause is its error. The message was cut off, so the session closes with 1011.
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
    pub(crate) fn io(context: IoContext, e: std::io::Error) -> Self {
        Error::Io {
            context,
            source: Arc::new(e),
        }
    }

    /// The error with all its causes, for showing to a person: `Display` of an error says
    /// only its own level (the cause is its [`source`](std::error::Error::source)), this says
    /// them all.
    ///
    /// ```
    /// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    /// let e = wsc::Error::Io {
    ///     context: wsc::IoContext::Connecting { addr: "127.0.0.1:9001".parse().unwrap() },
    ///     source: std::sync::Arc::new(refused),
    /// };
    /// assert_eq!(e.to_string(), "connecting to 127.0.0.1:9001");
    /// assert_eq!(e.chain().to_string(), "connecting to 127.0.0.1:9001: connection refused");
    /// ```
    pub fn chain(&self) -> Chain<'_> {
        Chain(self)
    }

    pub(crate) fn invalid_url(url: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidUrl {
            url: url.into(),
            reason: reason.into(),
        }
    }

    /// What a session that ended with `failure` reports; `io` is the transport's error, if
    /// that is what failed it.
    pub(crate) fn of_failure(
        failure: &wsc_proto::Failure,
        io: Option<&(IoContext, std::io::Error)>,
    ) -> Self {
        use wsc_proto::Failure;
        match failure {
            Failure::Protocol(e) => Error::protocol(e.clone()),
            Failure::PingTimeout => Error::Timeout(TimeoutKind::Ping),
            Failure::CloseTimeout => Error::Timeout(TimeoutKind::Close),
            Failure::Eof => Error::io(
                IoContext::Reading,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed without a Close frame",
                ),
            ),
            _ => match io {
                // The error is not Clone; its kind and text are what a caller can use.
                Some((context, e)) => Error::io(
                    context.clone(),
                    std::io::Error::new(e.kind(), e.to_string()),
                ),
                None => Error::io(IoContext::Writing, std::io::ErrorKind::BrokenPipe.into()),
            },
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
            Error::Io { .. } => Some(CloseCode::CLOSED_ABNORMALLY),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::io(IoContext::Other, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_says_what_it_knows_and_the_chain_says_it_all() {
        let e = Error::io(
            IoContext::Reading,
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset"),
        );
        assert_eq!(e.to_string(), "reading");
        assert_eq!(e.chain().to_string(), "reading: connection reset");
        let e = Error::protocol(ProtocolError::InvalidUtf8);
        assert!(e.to_string().starts_with("protocol violation by the peer"));
        assert_eq!(
            e.chain().to_string(),
            format!("{e}: {}", ProtocolError::InvalidUtf8)
        );
        // A cause that repeats its parent's last words is not shown twice.
        #[derive(Debug)]
        struct Twice(std::io::Error);
        impl fmt::Display for Twice {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "outer: {}", self.0)
            }
        }
        impl std::error::Error for Twice {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let t = Twice(std::io::Error::other("inner"));
        assert_eq!(Chain(&t).to_string(), "outer: inner");
    }

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
