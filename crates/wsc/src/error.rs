//! The one error type of the client, grouped by who is at fault.
//!
//! `Error` is `Clone` so that both halves of a split session report the same terminal cause.
//! `Display` describes only its own level; the cause is in [`std::error::Error::source`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use wsc_proto::handshake::HandshakeError;
use wsc_proto::{CloseCode, CloseReason, OpCode, ProtocolError, ReasonTooLong};

/// The words a session's end is reported with when the connection closed without a Close
/// frame (1006): the close reason's text and [`Error::ClosedAbnormally`]'s `Display` alike.
pub(crate) const CLOSED_WITHOUT_CLOSE_FRAME: &str = "connection closed without a Close frame";

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
    /// A configuration or request setting is invalid (reported by `build()` or when a
    /// request is made, before anything is sent). Caller's fault.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A call the API does not allow at that moment or with those arguments, made on a live
    /// session or when building a value; [`Misuse`] says which. Caller's fault.
    #[error("invalid use of the API")]
    Misuse(#[source] Misuse),
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
    /// a refused client certificate, or a protocol problem. `Display` names the host and, for a
    /// certificate, what is wrong with it in plain words; rustls's error is the source
    /// (`std::error::Error::source(&e)` downcasts to `rustls::Error`). It is boxed so that this
    /// variant is the same with and without the `rustls` feature, and the box in an `Arc` so
    /// that `Error` stays `Clone` (the `Box`, which is not itself an error, makes `source()`
    /// the rustls error and not the `Arc`).
    #[error("TLS with {host} failed{}", tls_words(&***source))]
    Tls {
        /// The host.
        host: String,
        /// What rustls reported: a `rustls::Error`.
        source: Arc<Box<dyn std::error::Error + Send + Sync>>,
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
    /// The connection ended without a Close frame (1006): the server or the network dropped
    /// it, and the operating system reported no error. Network's or server's fault.
    #[error("{}", CLOSED_WITHOUT_CLOSE_FRAME)]
    ClosedAbnormally,
    /// The session is closed; the close reason, if one was exchanged. A send after the
    /// session ended normally reports this (after a failure, the failure): either side may end
    /// a session at any moment, so a send that finds it closed is not counted as [`Misuse`].
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
    /// An extension (permessage-deflate, or one of the caller's) could not encode a message to
    /// send; what it said.
    #[error("{0}")]
    Extension(String),
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

/// What an [`Error::Misuse`] was: a call the API does not allow at that moment or with those
/// arguments. Each is the caller's to fix; none says anything about the peer or the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misuse {
    /// A message was sent through the `Sink` while a streamed message
    /// ([`MessageWriter`](crate::MessageWriter), `send_stream`, `send_reader`) holds the
    /// connection: its fragments may not be interleaved with other data, so the message is
    /// refused (other sends wait instead; call `poll_ready` again to wait too).
    #[error("a streamed message holds the connection; data waits until it finishes")]
    StreamInProgress,
    /// A frame given to `send_frame` breaks RFC 6455 §5.5: a control frame that is not final
    /// or over 125 bytes, or a Close frame whose payload is not a valid close code and UTF-8
    /// reason.
    #[error(
        "control frames must be final and at most 125 bytes, and a Close frame's payload a \
         valid close code and UTF-8 reason"
    )]
    InvalidFrame,
    /// `send_fragmented` was asked for fragments of 0 bytes.
    #[error("fragment size must be at least 1 byte")]
    ZeroFragmentSize,
    /// A streamed message was started with an opcode other than Text or Binary.
    #[error("a streamed message is text or binary, not {0:?}")]
    NotDataOpcode(OpCode),
    /// A close reason's text is longer than a Close frame holds (123 bytes); made by `?` on
    /// [`CloseReason::new`].
    #[error(transparent)]
    ReasonTooLong(#[from] ReasonTooLong),
}

impl From<Misuse> for Error {
    fn from(m: Misuse) -> Self {
        Error::Misuse(m)
    }
}

/// A close reason that is too long is the caller's mistake, so `?` on [`CloseReason::new`]
/// works in a function that returns [`Error`]:
///
/// ```
/// use wsc::{CloseCode, CloseReason, Error, Misuse};
///
/// fn goodbye(why: &str) -> Result<CloseReason, Error> {
///     Ok(CloseReason::new(CloseCode::NORMAL, why)?)
/// }
///
/// assert!(goodbye("done").is_ok());
/// let e = goodbye(&"x".repeat(124)).unwrap_err();
/// assert!(matches!(e, Error::Misuse(Misuse::ReasonTooLong(_))));
/// assert_eq!(
///     e.chain().to_string(),
///     "invalid use of the API: close reason is 124 bytes long; at most 123 fit in a Close frame"
/// );
/// ```
impl From<ReasonTooLong> for Error {
    fn from(e: ReasonTooLong) -> Self {
        Error::Misuse(Misuse::ReasonTooLong(e))
    }
}

/// Without rustls no TLS error is ever made; the variant stays for a stable `Error`.
#[cfg(not(feature = "rustls"))]
fn tls_words(_: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    String::new()
}

/// What [`Error::Tls`] says after the host: for a certificate rustls refused, what is wrong
/// with it in plain words (the details stay in the source).
#[cfg(feature = "rustls")]
fn tls_words(e: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    use rustls::CertificateError as C;
    let Some(rustls::Error::InvalidCertificate(c)) = e.downcast_ref::<rustls::Error>() else {
        return String::new();
    };
    let words = match c {
        C::UnknownIssuer => "signed by an unknown authority",
        C::Expired | C::ExpiredContext { .. } => "expired",
        C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet",
        C::NotValidForName | C::NotValidForNameContext { .. } => "not valid for this host name",
        C::Revoked => "revoked",
        C::BadSignature | C::UnsupportedSignatureAlgorithmContext { .. } => "badly signed",
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => "not meant for a TLS server",
        C::BadEncoding => "malformed",
        _ => "refused",
    };
    format!(": the certificate is {words}")
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
    /// that is what failed it. The error is shared, never rebuilt: every handle that reports
    /// it reports the operating system's own.
    pub(crate) fn of_failure(
        failure: &wsc_proto::Failure,
        io: Option<&(IoContext, Arc<std::io::Error>)>,
    ) -> Self {
        use wsc_proto::Failure;
        match (failure, io) {
            (Failure::Protocol(e), _) => Error::protocol(e.clone()),
            (Failure::PingTimeout, _) => Error::Timeout(TimeoutKind::Ping),
            (Failure::CloseTimeout, _) => Error::Timeout(TimeoutKind::Close),
            (Failure::Eof, _) | (_, None) => Error::ClosedAbnormally,
            (_, Some((context, e))) => Error::Io {
                context: context.clone(),
                source: e.clone(),
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
            Error::Io { .. } | Error::ClosedAbnormally => Some(CloseCode::CLOSED_ABNORMALLY),
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

    /// Display and chain of `e`, for the table below.
    fn shown(e: &Error) -> (String, String) {
        (e.to_string(), e.chain().to_string())
    }

    #[test]
    fn every_variant_says_its_level_and_the_chain_adds_the_causes() {
        let boxed = |text: &str| -> Arc<dyn std::error::Error + Send + Sync> {
            Arc::new(std::io::Error::other(text.to_owned()))
        };
        let handshake_chain = format!("invalid handshake response: {}", HandshakeError::NoUpgrade);
        let protocol_chain = format!(
            "protocol violation by the peer (closed with 1007(NOT_CONSISTENT)): {}",
            ProtocolError::InvalidUtf8
        );
        let cases: Vec<(Error, &str, &str)> = vec![
            (
                Error::invalid_url("ftp://h/", "scheme must be ws or wss"),
                "invalid URL \"ftp://h/\": scheme must be ws or wss",
                "invalid URL \"ftp://h/\": scheme must be ws or wss",
            ),
            (
                Error::InvalidConfig("queue capacities must be at least 1".into()),
                "invalid configuration: queue capacities must be at least 1",
                "invalid configuration: queue capacities must be at least 1",
            ),
            (
                Error::HandshakeRefused {
                    status: StatusCode::FORBIDDEN,
                    headers: Box::default(),
                    body: Bytes::from_static(b"no"),
                },
                "handshake refused with status 403 Forbidden",
                "handshake refused with status 403 Forbidden",
            ),
            (
                Error::Handshake(HandshakeError::NoUpgrade),
                "invalid handshake response",
                &handshake_chain,
            ),
            (
                Error::Proxy {
                    status: Some(407),
                    reason: "Proxy Authentication Required".into(),
                },
                "proxy refused: 407 Proxy Authentication Required",
                "proxy refused: 407 Proxy Authentication Required",
            ),
            (
                Error::Redirect("too many redirects (10)".into()),
                "redirect not followed: too many redirects (10)",
                "redirect not followed: too many redirects (10)",
            ),
            (
                Error::Timeout(TimeoutKind::Ping),
                "ping timed out",
                "ping timed out",
            ),
            (
                Error::io(
                    IoContext::Connecting {
                        addr: "127.0.0.1:9".parse().unwrap(),
                    },
                    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
                ),
                "connecting to 127.0.0.1:9",
                "connecting to 127.0.0.1:9: refused",
            ),
            (
                Error::protocol(ProtocolError::InvalidUtf8),
                "protocol violation by the peer (closed with 1007(NOT_CONSISTENT))",
                &protocol_chain,
            ),
            (
                Error::protocol(ProtocolError::MessageTooBig { size: 9, max: 8 }),
                "message too big: 9 bytes, over max_message_size (8)",
                "message too big: 9 bytes, over max_message_size (8)",
            ),
            (
                Error::ClosedAbnormally,
                "connection closed without a Close frame",
                "connection closed without a Close frame",
            ),
            (
                Error::Closed(Some(CloseReason::normal())),
                "session closed (1000(NORMAL))",
                "session closed (1000(NORMAL))",
            ),
            (Error::Closed(None), "session closed", "session closed"),
            (
                Error::NoConverter,
                "no content converter configured",
                "no content converter configured",
            ),
            (
                Error::Disconnected,
                "disconnected; reconnecting",
                "disconnected; reconnecting",
            ),
            (
                Error::QueueFull,
                "the queue of messages to send is full",
                "the queue of messages to send is full",
            ),
            (
                Error::Source(boxed("disk gone")),
                "the stream being sent failed",
                "the stream being sent failed: disk gone",
            ),
            (
                Error::InvalidUtf8,
                "text to send is not valid UTF-8",
                "text to send is not valid UTF-8",
            ),
            (
                Error::Extension("extension x failed to encode: out of memory".into()),
                "extension x failed to encode: out of memory",
                "extension x failed to encode: out of memory",
            ),
            (
                Error::Serialize(boxed("key must be a string")),
                "could not serialize the value",
                "could not serialize the value: key must be a string",
            ),
            (
                Error::Deserialize {
                    message: Box::new(wsc_proto::Message::text("{")),
                    source: boxed("EOF while parsing"),
                },
                "could not deserialize a text message of 1 bytes",
                "could not deserialize a text message of 1 bytes: EOF while parsing",
            ),
            (
                Misuse::StreamInProgress.into(),
                "invalid use of the API",
                "invalid use of the API: a streamed message holds the connection; data waits \
                 until it finishes",
            ),
            (
                Misuse::InvalidFrame.into(),
                "invalid use of the API",
                "invalid use of the API: control frames must be final and at most 125 bytes, \
                 and a Close frame's payload a valid close code and UTF-8 reason",
            ),
            (
                Misuse::ZeroFragmentSize.into(),
                "invalid use of the API",
                "invalid use of the API: fragment size must be at least 1 byte",
            ),
            (
                Misuse::NotDataOpcode(OpCode::Ping).into(),
                "invalid use of the API",
                "invalid use of the API: a streamed message is text or binary, not Ping",
            ),
            (
                ReasonTooLong(200).into(),
                "invalid use of the API",
                "invalid use of the API: close reason is 200 bytes long; at most 123 fit in a \
                 Close frame",
            ),
        ];
        for (e, display, chain) in &cases {
            assert_eq!(shown(e), (display.to_string(), chain.to_string()), "{e:?}");
        }
    }

    #[cfg(feature = "rustls")]
    #[test]
    fn a_tls_error_says_what_is_wrong_with_the_certificate_and_keeps_rustls_error() {
        let cert = |c| -> Arc<Box<dyn std::error::Error + Send + Sync>> {
            Arc::new(Box::new(rustls::Error::InvalidCertificate(c)))
        };
        let cases: Vec<(Error, &str, &str)> = vec![
            (
                Error::Tls {
                    host: "example.com".into(),
                    source: cert(rustls::CertificateError::UnknownIssuer),
                },
                "TLS with example.com failed: the certificate is signed by an unknown authority",
                "TLS with example.com failed: the certificate is signed by an unknown authority: \
                 invalid peer certificate: UnknownIssuer",
            ),
            (
                Error::Tls {
                    host: "example.com".into(),
                    source: cert(rustls::CertificateError::Expired),
                },
                "TLS with example.com failed: the certificate is expired",
                "TLS with example.com failed: the certificate is expired: invalid peer \
                 certificate: Expired",
            ),
            (
                Error::Tls {
                    host: "example.com".into(),
                    source: cert(rustls::CertificateError::NotValidForName),
                },
                "TLS with example.com failed: the certificate is not valid for this host name",
                "TLS with example.com failed: the certificate is not valid for this host name: \
                 invalid peer certificate: NotValidForName",
            ),
            (
                Error::Tls {
                    host: "example.com".into(),
                    source: Arc::new(Box::new(rustls::Error::AlertReceived(
                        rustls::AlertDescription::HandshakeFailure,
                    ))),
                },
                "TLS with example.com failed",
                "TLS with example.com failed: received fatal alert: HandshakeFailure",
            ),
        ];
        for (e, display, chain) in &cases {
            assert_eq!(shown(e), (display.to_string(), chain.to_string()), "{e:?}");
            let source = std::error::Error::source(e).expect("a source");
            assert!(source.downcast_ref::<rustls::Error>().is_some(), "{e:?}");
        }
    }

    #[test]
    fn a_transport_failure_reports_the_operating_systems_own_error() {
        let os = Arc::new(std::io::Error::from_raw_os_error(104));
        let kept = (IoContext::Reading, os.clone());
        let e = Error::of_failure(&wsc_proto::Failure::Transport, Some(&kept));
        let Error::Io { context, source } = &e else {
            panic!("{e:?}");
        };
        // The same error, shared, not one rebuilt from its kind and text.
        assert_eq!(*context, IoContext::Reading);
        assert!(Arc::ptr_eq(source, &os));
        assert_eq!(source.raw_os_error(), Some(104));
        // Every handle's copy is the one error.
        let Error::Io { source: again, .. } = e.clone() else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(&again, &os));
    }

    #[test]
    fn a_drop_without_a_close_frame_makes_up_no_io_error() {
        for (failure, io) in [
            (wsc_proto::Failure::Eof, None),
            (wsc_proto::Failure::Transport, None),
        ] {
            let e = Error::of_failure(&failure, io);
            assert!(matches!(e, Error::ClosedAbnormally), "{e:?}");
            assert!(std::error::Error::source(&e).is_none());
            assert_eq!(e.close_code(), Some(CloseCode::CLOSED_ABNORMALLY));
        }
    }

    #[test]
    fn a_too_long_close_reason_converts_with_the_question_mark() {
        fn reason(text: &str) -> Result<CloseReason, Error> {
            Ok(CloseReason::new(CloseCode::NORMAL, text)?)
        }
        assert!(reason("bye").is_ok());
        let e = reason(&"x".repeat(124)).unwrap_err();
        assert!(
            matches!(e, Error::Misuse(Misuse::ReasonTooLong(ReasonTooLong(124)))),
            "{e:?}"
        );
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
