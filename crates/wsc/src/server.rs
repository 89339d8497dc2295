//! The server role, in brief: accept an upgrade on a TCP stream you accepted and get a default
//! [`Session`] driven exactly like a client's (frames unmasked, the server closes TCP first).
//!
//! It exists for tests, tools and `wsc serve`; it negotiates no extensions. Owns the server
//! side of the handshake's I/O only; the checks are `wsc_proto::handshake`'s.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wsc_proto::Role;
use wsc_proto::handshake;

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
}

impl Default for AcceptConfig {
    fn default() -> Self {
        AcceptConfig {
            protocols: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 64 << 20,
            close_timeout: Duration::from_secs(5),
            ping_interval: None,
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
pub async fn accept<S>(mut stream: S, config: &AcceptConfig) -> Result<Session, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(1024);
    let mut scan = handshake::HeadScan::new(handshake::MAX_RESPONSE_HEAD);
    let read = async {
        loop {
            if stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| Error::io(IoContext::Handshake, e))?
                == 0
            {
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
    let (req, head_len) = match tokio::time::timeout(config.handshake_timeout, read).await {
        Err(_) => return Err(Error::Timeout(TimeoutKind::Handshake)),
        Ok(r) => r?,
    };
    let protocol = config
        .protocols
        .iter()
        .find(|p| req.protocols.contains(p))
        .cloned();
    stream
        .write_all(&handshake::switching_protocols(
            &req.key,
            protocol.as_deref(),
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
    let call = Call::new(
        &url,
        req.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        [],
        protocol,
        Vec::new(),
    );
    let shared = Shared::new(
        Arc::new(config.session_config()),
        Vec::new(),
        Role::Server,
        call,
    );
    Ok(session::start(stream, shared, leftover, Vec::new()))
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
