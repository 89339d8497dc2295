//! Opening a connection: a transport (TCP, proxy, TLS), then the HTTP/1.1 upgrade, following
//! redirects and keeping cookies as an HTTP client does.
//!
//! Knows the handshake's I/O; the checks themselves are `wsc_proto::handshake`'s.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};
#[cfg(feature = "cookies")]
use url::Url;
use wsc_proto::handshake::{self, HandshakeError};
use wsc_proto::{Entropy, Extension, parse_extensions};

use crate::config::Config;
use crate::entropy::OsEntropy;
use crate::error::{Error, IoContext, TimeoutKind};
use crate::request::Request;
use crate::session::Call;
use crate::transport::{self, BoxIo, Target};

/// The most body bytes kept from a refused handshake.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

pub(crate) struct Upgraded {
    pub io: BoxIo,
    pub leftover: BytesMut,
    pub call: Call,
    pub extensions: Vec<Box<dyn Extension>>,
    pub extensions_in: Vec<Box<dyn Extension>>,
}

enum Step {
    Done(Box<Upgraded>),
    Redirect(String),
}

pub(crate) async fn open(config: &Config, req: &Request, raw: bool) -> Result<Upgraded, Error> {
    crate::trace::in_span!(open_in_span(config, req, raw), "wsc.connect", url = %req.url).await
}

async fn open_in_span(config: &Config, req: &Request, raw: bool) -> Result<Upgraded, Error> {
    let overall = req.timeout.map(|t| Instant::now() + t);
    let mut req = req.clone();
    let mut hops = 0;
    loop {
        let target = Target {
            host: req.host(),
            port: req.port(),
            tls: req.url.scheme() == "wss",
        };
        #[cfg(not(feature = "rustls"))]
        if target.tls {
            return Err(Error::InvalidUrl {
                url: req.url.to_string(),
                reason: transport::TLS_NEEDS_FEATURE.into(),
            });
        }
        // Every string of the request is checked before any I/O.
        let head = request_head(config, &req, raw)?;
        let connect_deadline = overall.unwrap_or_else(|| Instant::now() + config.connect_timeout);
        let io = transport::connect(&config.transport, &target, connect_deadline).await?;
        let hs_deadline = overall.unwrap_or_else(|| Instant::now() + config.handshake_timeout);
        match timeout_at(hs_deadline, upgrade(io, config, &req, head)).await {
            Err(_) => return Err(Error::Timeout(TimeoutKind::Handshake)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Step::Done(up))) => return Ok(*up),
            Ok(Ok(Step::Redirect(location))) => {
                crate::trace::debug!(location, "wsc: handshake redirected");
                hops += 1;
                if hops > config.max_redirects {
                    return Err(Error::Redirect(format!(
                        "more than {} redirects",
                        config.max_redirects
                    )));
                }
                req = redirected(&req, &location)?;
            }
        }
    }
}

/// The upgrade over a stream the caller opened (`RequestBuilder::connect_on`): the same
/// request, checks and limits as [`open`], without connecting, proxying or TLS of wsc's own;
/// a redirect cannot be followed on it and is an error.
pub(crate) async fn open_on(
    config: &Config,
    req: &Request,
    raw: bool,
    io: BoxIo,
) -> Result<Upgraded, Error> {
    let head = request_head(config, req, raw)?;
    let deadline = Instant::now() + req.timeout.unwrap_or(config.handshake_timeout);
    match timeout_at(deadline, upgrade(io, config, req, head)).await {
        Err(_) => Err(Error::Timeout(TimeoutKind::Handshake)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Step::Done(up))) => Ok(*up),
        Ok(Ok(Step::Redirect(location))) => Err(Error::Redirect(format!(
            "the server redirects to {location}, which cannot be followed on a stream opened by the caller"
        ))),
    }
}

/// The request a redirect leads to: `http`/`https` become `ws`/`wss`, never `wss` to `ws`;
/// credentials (`CREDENTIAL_HEADERS`) are not carried to another origin unless opted in.
fn redirected(from: &Request, location: &str) -> Result<Request, Error> {
    let mut url = from
        .url
        .join(location)
        .map_err(|e| Error::Redirect(format!("bad Location {location:?}: {e}")))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(Error::Redirect(format!(
                "Location {location:?} has scheme {other:?}"
            )));
        }
    };
    if from.url.scheme() == "wss" && scheme == "ws" {
        return Err(Error::Redirect(format!(
            "refusing to downgrade from wss to ws ({location})"
        )));
    }
    url.set_scheme(scheme)
        .map_err(|()| Error::Redirect(format!("cannot use Location {location:?}")))?;
    url.set_fragment(None);
    let mut next = Request::from_url(url).map_err(|e| Error::Redirect(e.to_string()))?;
    let same_origin = next.url.scheme() == from.url.scheme()
        && next.url.host_str() == from.url.host_str()
        && next.port() == from.port();
    let keep = |name: &str| {
        let name = name.to_ascii_lowercase();
        same_origin
            || !crate::request::CREDENTIAL_HEADERS.contains(&name.as_str())
            || from.forward.contains(&name)
    };
    next.headers = from
        .headers
        .iter()
        .filter(|(n, _)| keep(n))
        .cloned()
        .collect();
    next.forward = from.forward.clone();
    next.protocols = from.protocols.clone();
    next.timeout = from.timeout;
    Ok(next)
}

/// The URL a cookie jar sees for a WebSocket URL.
#[cfg(feature = "cookies")]
fn cookie_url(url: &Url) -> Url {
    let mut u = url.clone();
    let _ = u.set_scheme(if url.scheme() == "wss" {
        "https"
    } else {
        "http"
    });
    u
}

/// The upgrade request of one hop, its key and extension offer: built and checked in one
/// place (everything a caller set, the client's User-Agent and the cookie jar's values).
struct Head {
    bytes: Vec<u8>,
    key: String,
    offer: Option<String>,
    host: String,
    headers: Vec<(String, String)>,
    raw: bool,
}

fn request_head(config: &Config, req: &Request, raw: bool) -> Result<Head, Error> {
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
    let has =
        |hs: &[(String, String)], name: &str| hs.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if let Some(ua) = &config.user_agent
        && !has(&headers, "user-agent")
    {
        headers.push(("User-Agent".into(), ua.clone()));
    }
    #[cfg(feature = "cookies")]
    if let Some(jar) = &config.cookies {
        let jar = jar.lock().unwrap_or_else(|p| p.into_inner());
        let cookies: Vec<String> = jar
            .get_request_values(&cookie_url(&req.url))
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        if !cookies.is_empty() && !has(&headers, "cookie") {
            headers.push(("Cookie".into(), cookies.join("; ")));
        }
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
    request.validate().map_err(Error::InvalidConfig)?;
    let bytes = request.to_bytes();
    Ok(Head {
        bytes,
        key,
        offer,
        host,
        headers,
        raw,
    })
}

async fn upgrade(mut io: BoxIo, config: &Config, req: &Request, head: Head) -> Result<Step, Error> {
    let Head {
        bytes,
        key,
        offer,
        host,
        headers,
        raw,
    } = head;
    io.write_all(&bytes)
        .await
        .map_err(|e| Error::io(IoContext::Handshake, e))?;

    let mut buf = BytesMut::with_capacity(1024);
    let mut scan = handshake::HeadScan::new(handshake::MAX_RESPONSE_HEAD);
    let (resp, head_len) = loop {
        if io
            .read_buf(&mut buf)
            .await
            .map_err(|e| Error::io(IoContext::Handshake, e))?
            == 0
        {
            return Err(Error::Handshake(HandshakeError::Malformed(
                "connection closed before the response head ended".into(),
            )));
        }
        if scan.ready(&buf)
            && let Some(done) = handshake::parse_response(&buf).map_err(Error::Handshake)?
        {
            break done;
        }
    };
    #[cfg(feature = "cookies")]
    if let Some(jar) = &config.cookies {
        let mut jar = jar.lock().unwrap_or_else(|p| p.into_inner());
        let url = cookie_url(&req.url);
        for v in resp.headers_named("set-cookie") {
            let _ = jar.parse(v, &url);
        }
    }
    if matches!(resp.status, 301 | 302 | 303 | 307 | 308)
        && config.max_redirects > 0
        && let Some(location) = resp.header("location")
    {
        return Ok(Step::Redirect(location.trim().to_owned()));
    }
    if resp.status != 101 {
        crate::trace::info!(status = resp.status, "wsc: handshake refused");
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
            headers: Box::new(to_header_map(&resp.headers)),
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
    let extensions = wsc_proto::negotiate(offered, &items)
        .map_err(|e| Error::Handshake(HandshakeError::Extension(e)))?;
    // A second instance of each for the receive direction, so sending and receiving never share a lock.
    let extensions_in = wsc_proto::negotiate(offered, &items)
        .map_err(|e| Error::Handshake(HandshakeError::Extension(e)))?;
    let leftover = buf.split_off(head_len);
    let protocols = req.protocols.join(", ");
    let mut sent: Vec<(&str, &[u8])> = Vec::with_capacity(headers.len() + 7);
    sent.push(("host", host.as_bytes()));
    sent.extend(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    sent.push(("upgrade", b"websocket"));
    sent.push(("connection", b"Upgrade"));
    sent.push(("sec-websocket-version", b"13"));
    sent.push(("sec-websocket-key", key.as_bytes()));
    if !req.protocols.is_empty() {
        sent.push(("sec-websocket-protocol", protocols.as_bytes()));
    }
    if let Some(o) = &offer {
        sent.push(("sec-websocket-extensions", o.as_bytes()));
    }
    crate::trace::debug!(
        status = resp.status,
        subprotocol = protocol.as_deref(),
        extensions = ?extensions.iter().map(|e| e.describe()).collect::<Vec<_>>(),
        "wsc: handshake done"
    );
    let call = Call::new(
        &req.url,
        sent.iter().copied(),
        resp.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        protocol,
        extensions.iter().map(|e| e.describe()).collect(),
    );
    Ok(Step::Done(Box::new(Upgraded {
        io,
        leftover,
        call,
        extensions,
        extensions_in,
    })))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_rules() {
        let from = Request::parse("wss://a.example/x")
            .unwrap()
            .header("Authorization", "Bearer t")
            .unwrap()
            .protocol("chat")
            .unwrap();
        let same = redirected(&from, "/y?z=1").unwrap();
        assert_eq!(same.url.as_str(), "wss://a.example/y?z=1");
        assert!(same.headers.iter().any(|(n, _)| n == "Authorization"));
        assert_eq!(same.protocols, ["chat"]);
        let other = redirected(&from, "https://b.example/").unwrap();
        assert_eq!(other.url.as_str(), "wss://b.example/");
        assert!(other.headers.is_empty(), "no credentials to another host");
        let many = Request::parse("wss://a.example/x")
            .unwrap()
            .header("Cookie", "s=1")
            .unwrap()
            .header("Proxy-Authorization", "Basic eA==")
            .unwrap()
            .header("authorization", "Bearer t")
            .unwrap()
            .header("X-Trace", "7")
            .unwrap()
            .forward_on_redirect("Cookie");
        let names =
            |r: &Request| -> Vec<String> { r.headers.iter().map(|(n, _)| n.clone()).collect() };
        let b = redirected(&many, "wss://b.example/").unwrap();
        assert_eq!(
            names(&b),
            ["Cookie", "X-Trace"],
            "only the opted-in credential"
        );
        let port = redirected(&many, "wss://a.example:8443/").unwrap();
        assert_eq!(
            names(&port),
            ["Cookie", "X-Trace"],
            "another port is another origin"
        );
        let onward = redirected(&b, "wss://c.example/").unwrap();
        assert_eq!(
            names(&onward),
            ["Cookie", "X-Trace"],
            "the opt-in follows the chain"
        );
        assert!(matches!(
            redirected(&from, "ws://a.example/"),
            Err(Error::Redirect(_))
        ));
        assert!(matches!(
            redirected(&from, "http://a.example/"),
            Err(Error::Redirect(_))
        ));
        assert!(matches!(
            redirected(&from, "ftp://a.example/"),
            Err(Error::Redirect(_))
        ));
        let plain = Request::parse("ws://a.example/").unwrap();
        assert_eq!(
            redirected(&plain, "https://a.example/s")
                .unwrap()
                .url
                .scheme(),
            "wss"
        );
    }
}
