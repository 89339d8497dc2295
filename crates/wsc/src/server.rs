//! The server role, in brief: accept an upgrade on a TCP stream you accepted and get a default
//! [`Session`] driven exactly like a client's (frames unmasked, the server closes TCP first).
//!
//! It exists for tests, tools and `wsc serve`; the one extension it negotiates is
//! permessage-deflate, when [`AcceptConfig::deflate`] enables it. Owns the server side of the
//! handshake's I/O only; the checks and the negotiation are `wsc_proto`'s.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use wsc_proto::deflate::{Accepted, Deflate, DeflateConfig};
use wsc_proto::handshake;
use wsc_proto::{Extension, Role};

use crate::error::{Error, IoContext, TimeoutKind};
use crate::session::{self, Call, Session, SessionConfig, Shared};

/// Settings for accepted sessions (the server's own: nothing here is a client setting).
///
/// Made with [`AcceptConfig::default`] and changed with its setters, each of which states its
/// default:
///
/// ```
/// use std::time::Duration;
/// let cfg = wsc::server::AcceptConfig::default()
///     .protocols(["v2.chat", "chat"])
///     .handshake_timeout(Duration::from_secs(5))
///     .max_message_size(1 << 20);
/// # let _ = cfg;
/// ```
#[derive(Debug, Clone)]
pub struct AcceptConfig {
    protocols: Vec<String>,
    handshake_timeout: Duration,
    max_message_size: usize,
    close_timeout: Duration,
    ping_interval: Option<Duration>,
    deflate: Option<DeflateConfig>,
}

impl Default for AcceptConfig {
    fn default() -> Self {
        AcceptConfig {
            protocols: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 64 << 20,
            close_timeout: Duration::from_secs(5),
            ping_interval: None,
            deflate: None,
        }
    }
}

impl AcceptConfig {
    /// Subprotocols this server speaks, in preference order; the first the client also offers
    /// is chosen. Default: none (no `Sec-WebSocket-Protocol` in the answer).
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }
    /// How long the client may take to send its request. Default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
    /// Largest message (and frame) accepted; past it the session fails with 1009. Default
    /// 64 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
    /// How long the close handshake may take once started. Default 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }
    /// Sends a Ping this often and fails the session with 1011 when no Pong comes back within
    /// the same time. Default `None`: no pings (the client keeps the connection alive).
    pub fn ping_interval(mut self, every: Option<Duration>) -> Self {
        self.ping_interval = every;
        self
    }
    /// Accepts permessage-deflate (RFC 7692) from clients that offer it: the first of their
    /// offers with valid parameters is taken and answered, honouring what the client asks
    /// (`server_no_context_takeover`, `server_max_window_bits`, …) and what `config` adds for
    /// this server (see [`DeflateConfig`]'s setters, which say what each means for a server).
    /// A client that offers nothing acceptable gets an uncompressed session. Default: off.
    ///
    /// ```
    /// use wsc::DeflateConfig;
    /// use wsc::server::AcceptConfig;
    /// let config = AcceptConfig::default().deflate(DeflateConfig::default().server_no_context_takeover(true));
    /// # let _ = config;
    /// ```
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            max_message_size: self.max_message_size,
            max_frame_size: self.max_message_size,
            masking: false,
            close_timeout: self.close_timeout,
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_interval,
            ..SessionConfig::default()
        }
    }
}

/// Reads a client's upgrade request from `stream`, answers 101, and returns the session.
///
/// A request that is not a valid upgrade is answered, as RFC 6455 §4.2.1 and §4.4 ask: 426
/// Upgrade Required with `Sec-WebSocket-Version: 13` for another protocol version, else 400
/// Bad Request (431 for a head over the size limit), the reason in the body; the error is
/// returned and the connection closed. When the session ends, the connection is closed
/// gracefully: writing is shut down and what the client still sends is read and discarded
/// (for up to 2 s and 1 MiB) before the socket closes, so that a client that sends after its
/// Close gets the server's Close and a clean end of stream, not a reset.
///
/// `stream` is any byte stream: a `TcpStream` (set `TCP_NODELAY` on it yourself), a TLS stream,
/// a Unix socket, an in-memory duplex.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (stream, _) = listener.accept().await?;
/// stream.set_nodelay(true)?;
/// let mut session = wsc::server::accept(stream, &Default::default()).await?;
/// while let Some(Ok(m)) = session.recv().await {
///     session.send(m).await?; // echo
/// }
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// Dropping the future abandons the handshake and drops `stream` with it (it was moved in),
/// before any session exists; the request bytes already read are lost with it, so the stream
/// is not reusable. (`handshake_timeout` already bounds a client that never finishes its
/// request.)
pub async fn accept<S>(mut stream: S, config: &AcceptConfig) -> Result<Session, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(1024);
    let mut scan = handshake::HeadScan::new(handshake::MAX_RESPONSE_HEAD);
    let mut ended = false;
    let read = async {
        loop {
            if stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| Error::io(IoContext::Handshake, e))?
                == 0
            {
                ended = true;
                return Err(Error::Handshake(handshake::HandshakeError::Malformed(
                    "connection closed before the request ended".into(),
                )));
            }
            if scan.ready(&buf)
                && let Some(done) = handshake::parse_request(&buf).map_err(Error::Handshake)?
            {
                return Ok(done);
            }
        }
    };
    let got = tokio::time::timeout(config.handshake_timeout, read).await;
    let (req, head_len) = match got {
        Err(_) => return Err(Error::Timeout(TimeoutKind::Handshake)),
        Ok(Err(Error::Handshake(e))) if !ended => {
            // RFC 6455 §4.2.1: a request that is not a valid upgrade gets an HTTP answer.
            let answer = refusal(&buf, &e);
            tokio::spawn(async move {
                let wrote = tokio::time::timeout(LINGER_TIME, stream.write_all(&answer)).await;
                if matches!(wrote, Ok(Ok(()))) {
                    linger(stream).await;
                }
            });
            return Err(Error::Handshake(e));
        }
        Ok(r) => r?,
    };
    let protocol = config
        .protocols
        .iter()
        .find(|p| req.protocols.contains(p))
        .cloned();
    let deflate = config
        .deflate
        .as_ref()
        .and_then(|d| d.accept_offers(&req.extensions).map(|a| (d, a)));
    stream
        .write_all(&handshake::switching_protocols(
            &req.key,
            protocol.as_deref(),
            deflate.as_ref().map(|(_, a)| a.response()),
        ))
        .await
        .map_err(|e| Error::io(IoContext::Handshake, e))?;
    let leftover = buf.split_off(head_len);
    let host = req
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .unwrap_or("localhost")
        .to_owned();
    let url = url::Url::parse(&format!("ws://{host}{}", req.target))
        .or_else(|_| url::Url::parse("ws://localhost/"))
        .map_err(|e| Error::InvalidConfig(e.to_string()))?;
    // One codec per direction, so that sending and receiving never share a lock.
    let codec = |d: &DeflateConfig, a: &Accepted| -> Vec<Box<dyn Extension>> {
        vec![Box::new(Deflate::new_server(d.clone(), a.params()))]
    };
    let (outgoing, incoming) = match &deflate {
        Some((d, a)) => (codec(d, a), codec(d, a)),
        None => (Vec::new(), Vec::new()),
    };
    let call = Call::new(
        &url,
        req.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        [],
        protocol,
        outgoing.iter().map(|e| e.describe()).collect(),
    );
    let shared = Shared::new(
        Arc::new(config.session_config()),
        outgoing,
        Role::Server,
        call,
    );
    Ok(session::start(
        Linger(Some(stream)),
        shared,
        leftover,
        incoming,
    ))
}

/// How long a closing connection is drained for, at most.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How many bytes a closing connection is drained of, at most.
const LINGER_BYTES: usize = 1 << 20;

/// The HTTP answer to a request that is not a valid upgrade: 426 with the version this server
/// speaks when the client asked for another (RFC 6455 §4.4), 431 for a head too large, else 400
/// (§4.2.1). The body says what was wrong.
fn refusal(buf: &[u8], e: &handshake::HandshakeError) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(buf).is_ok();
    let other_version = parsed
        && req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("sec-websocket-version")
                && std::str::from_utf8(h.value).map(str::trim) != Ok("13")
        });
    let (status, extra) = if other_version {
        (
            "426 Upgrade Required",
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        )
    } else if matches!(e, handshake::HandshakeError::TooLarge) {
        ("431 Request Header Fields Too Large", "")
    } else {
        ("400 Bad Request", "")
    };
    let body = format!("{e}\n");
    format!(
        "HTTP/1.1 {status}\r\n{extra}Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Closes a connection without losing what was written to it: shuts down writing, then reads
/// and discards what the peer still sends (bounded in time and bytes) before dropping it.
/// Closing a socket with unread data makes the kernel reset the connection, and a reset can
/// destroy the last bytes written (a Close frame, an HTTP answer) before the peer reads them.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let drain = async {
        if stream.shutdown().await.is_err() {
            return;
        }
        let mut scratch = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// An accepted connection that, when the session is done with it, closes with [`linger`] in
/// a task of its own (without a runtime, it simply closes).
struct Linger<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(Option<S>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Linger<S> {
    fn drop(&mut self) {
        if let (Some(stream), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(linger(stream));
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Linger<S> {
    fn io(&mut self) -> Pin<&mut S> {
        Pin::new(self.0.as_mut().expect("present until dropped"))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Linger<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Linger<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Client, CloseReason, Message};

    #[test]
    fn accept_config_setters_reach_the_session() {
        let c = AcceptConfig::default().session_config();
        assert_eq!(c.max_message_size, 64 << 20);
        assert_eq!(c.close_timeout, Duration::from_secs(5));
        assert_eq!(c.ping_interval, None);
        let cfg = AcceptConfig::default()
            .protocols(["a", "b"])
            .handshake_timeout(Duration::from_millis(300))
            .max_message_size(1000)
            .close_timeout(Duration::from_secs(2))
            .ping_interval(Some(Duration::from_secs(7)));
        assert_eq!(cfg.protocols, ["a", "b"]);
        assert_eq!(cfg.handshake_timeout, Duration::from_millis(300));
        let c = cfg.session_config();
        assert_eq!((c.max_message_size, c.max_frame_size), (1000, 1000));
        assert_eq!(c.close_timeout, Duration::from_secs(2));
        assert_eq!(c.ping_interval, Some(Duration::from_secs(7)));
        assert!(!c.masking);
    }

    #[tokio::test]
    async fn a_client_slower_than_the_handshake_timeout_is_refused() {
        let (_client, server) = tokio::io::duplex(1024);
        let cfg = AcceptConfig::default().handshake_timeout(Duration::from_millis(50));
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), accept(server, &cfg))
            .await
            .expect("accept returns within the handshake timeout");
        assert!(
            matches!(r, Err(Error::Timeout(TimeoutKind::Handshake))),
            "{r:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn client_and_server_roles_talk() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/room?x=1", l.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let cfg = AcceptConfig::default().protocols(["chat"]);
            let mut session = accept(s, &cfg).await.unwrap();
            // Named as users name it, not by its generic parameter or module path.
            assert!(
                format!("{session:?}").starts_with("Session {"),
                "{session:?}"
            );
            assert_eq!(format!("{:?}", session.receiver()), "Receiver");
            assert_eq!(session.call().url().path(), "/room");
            while let Some(Ok(m)) = session.recv().await {
                session.send(m).await.unwrap();
            }
            session.close_reason().await
        });
        let mut c = Client::new()
            .request(url)
            .protocol("chat")
            .connect()
            .await
            .unwrap();
        assert_eq!(c.protocol(), Some("chat"));
        c.send("over the wire").await.unwrap();
        c.send_fragmented(Message::binary(vec![9u8; 100]), 7)
            .await
            .unwrap();
        assert_eq!(
            c.recv().await.unwrap().unwrap(),
            Message::text("over the wire")
        );
        assert_eq!(
            c.recv().await.unwrap().unwrap(),
            Message::binary(vec![9u8; 100])
        );
        c.close(CloseReason::new(4000, "done").unwrap())
            .await
            .unwrap();
        assert_eq!(server.await.unwrap().code().as_u16(), 4000);
    }
}
