//! Opening a connection: TCP (every resolved address in turn) and the HTTP/1.1 upgrade.
//!
//! Knows the handshake's I/O; the checks themselves are `wsc_proto::handshake`'s.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use wsc_proto::handshake::{self, HandshakeError};
use wsc_proto::{Entropy, Extension, parse_extensions};

use crate::config::Config;
use crate::entropy::OsEntropy;
use crate::error::{Error, TimeoutKind};
use crate::request::Request;
use crate::session::Call;

/// The most body bytes kept from a refused handshake.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

pub(crate) struct Upgraded {
    pub io: TcpStream,
    pub leftover: BytesMut,
    pub call: Call,
    pub extensions: Vec<Box<dyn Extension>>,
    pub extensions_in: Vec<Box<dyn Extension>>,
}

async fn connect_tcp(req: &Request, deadline: Instant) -> Result<TcpStream, Error> {
    let host = req
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = req.port();
    let addrs: Vec<SocketAddr> =
        match timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port))).await {
            Err(_) => return Err(Error::Timeout(TimeoutKind::Connect)),
            Ok(r) => r.map_err(Error::io)?.collect(),
        };
    let mut last = None;
    for addr in addrs {
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(Error::Timeout(TimeoutKind::Connect)),
            Ok(Ok(s)) => {
                s.set_nodelay(true).map_err(Error::io)?;
                return Ok(s);
            }
            Ok(Err(e)) => last = Some(e),
        }
    }
    Err(Error::io(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} resolved to no address"),
        )
    })))
}

pub(crate) async fn open(config: &Config, req: &Request, raw: bool) -> Result<Upgraded, Error> {
    if req.url.scheme() == "wss" {
        return Err(Error::Unsupported(
            "wss:// (TLS) is not available in this build yet".into(),
        ));
    }
    let now = Instant::now();
    let (connect_deadline, overall) = match req.timeout {
        Some(t) => (now + t, Some(now + t)),
        None => (now + config.connect_timeout, None),
    };
    let mut io = connect_tcp(req, connect_deadline).await?;
    let hs_deadline = overall.unwrap_or_else(|| Instant::now() + config.handshake_timeout);
    match timeout_at(hs_deadline, upgrade(&mut io, config, req, raw)).await {
        Err(_) => Err(Error::Timeout(TimeoutKind::Handshake)),
        Ok(Err(e)) => Err(e),
        Ok(Ok((leftover, call, extensions, extensions_in))) => Ok(Upgraded {
            io,
            leftover,
            call,
            extensions,
            extensions_in,
        }),
    }
}

type UpgradeParts = (
    BytesMut,
    Call,
    Vec<Box<dyn Extension>>,
    Vec<Box<dyn Extension>>,
);

async fn upgrade(
    io: &mut TcpStream,
    config: &Config,
    req: &Request,
    raw: bool,
) -> Result<UpgradeParts, Error> {
    let mut random = [0u8; 16];
    OsEntropy::new().fill(&mut random);
    let key = handshake::generate_key(random);
    let offer: Option<String> = (!raw && !config.extensions.is_empty()).then(|| {
        config
            .extensions
            .iter()
            .map(|f| f.offer())
            .collect::<Vec<_>>()
            .join(", ")
    });
    let mut headers = req.headers.clone();
    if let Some(ua) = &config.user_agent
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
    {
        headers.push(("User-Agent".into(), ua.clone()));
    }
    let host = req.host_header();
    let target = req.target();
    let request = handshake::Request {
        host: &host,
        target: &target,
        key: &key,
        protocols: &req.protocols,
        extensions: offer.as_deref(),
        headers: &headers,
    };
    io.write_all(&request.to_bytes()).await.map_err(Error::io)?;

    let mut buf = BytesMut::with_capacity(1024);
    let (resp, head_len) = loop {
        if io.read_buf(&mut buf).await.map_err(Error::io)? == 0 {
            return Err(Error::Handshake(HandshakeError::Malformed(
                "connection closed before the response head ended".into(),
            )));
        }
        if let Some(done) = handshake::parse_response(&buf).map_err(Error::Handshake)? {
            break done;
        }
    };
    let response_headers = to_header_map(&resp.headers);
    if resp.status != 101 {
        let _ = buf.split_to(head_len);
        let want = resp
            .content_length()
            .unwrap_or(MAX_REFUSAL_BODY)
            .min(MAX_REFUSAL_BODY);
        // Read the body up to its length (or 64 KiB, or EOF); the handshake deadline bounds it.
        while buf.len() < want {
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        buf.truncate(want);
        return Err(Error::HandshakeRefused {
            status: StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY),
            headers: Box::new(response_headers),
            body: Bytes::from(buf.to_vec()),
        });
    }
    let protocol =
        handshake::check_upgrade(&resp, &key, &req.protocols).map_err(Error::Handshake)?;
    let mut items = Vec::new();
    for v in resp.headers_named("sec-websocket-extensions") {
        items.extend(
            parse_extensions(v).map_err(|e| Error::Handshake(HandshakeError::Extension(e)))?,
        );
    }
    let offered: &[std::sync::Arc<dyn wsc_proto::ExtensionFactory>] =
        if raw { &[] } else { &config.extensions };
    let extensions = wsc_proto::extension::negotiate(offered, &items)
        .map_err(|e| Error::Handshake(HandshakeError::Extension(e)))?;
    // A second instance of each for the receive direction, so sending and receiving never share a lock.
    let extensions_in = wsc_proto::extension::negotiate(offered, &items)
        .map_err(|e| Error::Handshake(HandshakeError::Extension(e)))?;
    let leftover = buf.split_off(head_len);
    let mut request_headers = HeaderMap::new();
    for (n, v) in &headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            request_headers.append(n, v);
        }
    }
    request_headers.insert(
        http::header::HOST,
        HeaderValue::from_str(&host).unwrap_or(HeaderValue::from_static("")),
    );
    request_headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    request_headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    request_headers.insert(
        http::header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    if let Ok(v) = HeaderValue::from_str(&key) {
        request_headers.insert(http::header::SEC_WEBSOCKET_KEY, v);
    }
    if !req.protocols.is_empty()
        && let Ok(v) = HeaderValue::from_str(&req.protocols.join(", "))
    {
        request_headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    if let Some(o) = &offer
        && let Ok(v) = HeaderValue::from_str(o)
    {
        request_headers.insert(http::header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    let call = Call {
        url: req.url.clone(),
        request_headers,
        status: StatusCode::SWITCHING_PROTOCOLS,
        response_headers,
        protocol,
        extensions: extensions.iter().map(|e| e.describe()).collect(),
    };
    Ok((leftover, call, extensions, extensions_in))
}

fn to_header_map(headers: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            map.append(n, v);
        }
    }
    map
}
