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
#[derive(Debug, Clone)]
pub struct AcceptConfig {
    /// Subprotocols this server speaks, in preference order; the first the client also offers is chosen.
    pub protocols: Vec<String>,
    /// How long the client may take to send its request. Default 10 s.
    pub handshake_timeout: Duration,
    /// Largest message (and frame) accepted. Default 64 MiB.
    pub max_message_size: usize,
    /// How long the close handshake may take once started. Default 5 s.
    pub close_timeout: Duration,
    /// Sends a Ping this often and fails the session with 1011 when no Pong comes back within
    /// the same time. Default `None` (the client keeps the connection alive).
    pub ping_interval: Option<Duration>,
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

    #[tokio::test]
    async fn client_and_server_roles_talk() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/room?x=1", l.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let cfg = AcceptConfig {
                protocols: vec!["chat".into()],
                ..Default::default()
            };
            let mut session = accept(s, &cfg).await.unwrap();
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
