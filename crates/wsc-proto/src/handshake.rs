//! The opening handshake of a client (RFC 6455 §4.1, §4.2.2): the request's bytes and the
//! checks on the server's answer.
//!
//! Owns the header names the handshake itself sets, the key and its accept hash, and the
//! parsing of the response head with httparse. Reading and writing are the caller's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::extension::{ExtensionItem, parse_extensions};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest response head accepted, in bytes.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The most response header lines accepted.
pub const MAX_RESPONSE_HEADERS: usize = 128;

/// Header names the handshake owns; a caller may not set them.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "content-length",
    "transfer-encoding",
];

/// A fresh `Sec-WebSocket-Key` from 16 random bytes.
pub fn generate_key(random: [u8; 16]) -> String {
    STANDARD.encode(random)
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with.
///
/// ```
/// // RFC 6455 §1.3
/// assert_eq!(wsc_proto::handshake::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    STANDARD.encode(h.digest().bytes())
}

/// What goes into the request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The `Host` header value (`host[:port]`).
    pub host: &'a str,
    /// The request target: path and query.
    pub target: &'a str,
    /// The `Sec-WebSocket-Key`.
    pub key: &'a str,
    /// Subprotocols offered, in preference order.
    pub protocols: &'a [String],
    /// The `Sec-WebSocket-Extensions` offer, if any.
    pub extensions: Option<&'a str>,
    /// The caller's other headers.
    pub headers: &'a [(String, String)],
}

/// Whether `b` may appear in a header name (an RFC 9110 token character).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks a header line the request would carry: the name a token, the value free of control
/// characters (CR and LF above all, which would end the line and start another). Returns what
/// is wrong.
///
/// ```
/// use wsc_proto::handshake::check_header;
/// assert!(check_header("User-Agent", "wsc/1").is_ok());
/// assert!(check_header("User-Agent", "x\r\nEvil: 1").is_err());
/// assert!(check_header("Bad Name", "x").is_err());
/// ```
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(format!("invalid header name {name:?}"));
    }
    check_text(value).map_err(|why| format!("invalid value for header {name}: {why}"))
}

/// A header value or request line part: no control character but tab.
fn check_text(v: &str) -> Result<(), &'static str> {
    match v.bytes().find(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        Some(b'\r' | b'\n') => Err("contains CR or LF"),
        Some(_) => Err("contains a control character"),
        None => Ok(()),
    }
}

impl Request<'_> {
    /// Checks every string that goes into the request (host, target, subprotocols, the
    /// extension offer, each header), so that nothing a caller passed can add a line to it.
    /// Call before any I/O; returns what is wrong.
    ///
    /// ```
    /// let h = [("User-Agent".to_string(), "a\r\nX-Injected: 1".to_string())];
    /// let r = wsc_proto::handshake::Request {
    ///     host: "example.com", target: "/", key: "dGhlIHNhbXBsZSBub25jZQ==",
    ///     protocols: &[], extensions: None, headers: &h,
    /// };
    /// assert!(r.validate().unwrap_err().contains("CR or LF"));
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        for (what, v) in [("host", self.host), ("request target", self.target)] {
            if v.is_empty() || v.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(format!("invalid {what} {v:?}"));
            }
        }
        for p in self.protocols {
            if p.is_empty() || !p.bytes().all(is_tchar) {
                return Err(format!("invalid subprotocol name {p:?}"));
            }
        }
        if let Some(e) = self.extensions {
            check_text(e).map_err(|why| format!("invalid extension offer: {why}"))?;
        }
        for (n, v) in self.headers {
            check_header(n, v)?;
        }
        Ok(())
    }

    /// The request's bytes.
    ///
    /// ```
    /// let r = wsc_proto::handshake::Request {
    ///     host: "example.com", target: "/chat", key: "dGhlIHNhbXBsZSBub25jZQ==",
    ///     protocols: &["chat".into()], extensions: None, headers: &[],
    /// };
    /// let s = String::from_utf8(r.to_bytes()).unwrap();
    /// assert!(s.starts_with("GET /chat HTTP/1.1\r\nHost: example.com\r\n"));
    /// assert!(s.contains("Sec-WebSocket-Protocol: chat\r\n") && s.ends_with("\r\n\r\n"));
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(256);
        s.push_str("GET ");
        s.push_str(self.target);
        s.push_str(" HTTP/1.1\r\nHost: ");
        s.push_str(self.host);
        s.push_str("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
        s.push_str(self.key);
        s.push_str("\r\nSec-WebSocket-Version: 13\r\n");
        if !self.protocols.is_empty() {
            s.push_str("Sec-WebSocket-Protocol: ");
            s.push_str(&self.protocols.join(", "));
            s.push_str("\r\n");
        }
        if let Some(e) = self.extensions {
            s.push_str("Sec-WebSocket-Extensions: ");
            s.push_str(e);
            s.push_str("\r\n");
        }
        for (n, v) in self.headers {
            s.push_str(n);
            s.push_str(": ");
            s.push_str(v);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The header lines in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Response {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// All values of header `name`, as text.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body length the head announces (`Content-Length`), if any.
    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }
}

/// The server's answer was not a valid WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The response head is not valid HTTP/1.1.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// The response head is larger than [`MAX_RESPONSE_HEAD`].
    #[error("response head larger than {MAX_RESPONSE_HEAD} bytes")]
    TooLarge,
    /// A 101 without `Upgrade: websocket`.
    #[error("101 response without `Upgrade: websocket`")]
    NoUpgrade,
    /// A 101 without `Connection: Upgrade`.
    #[error("101 response without `Connection: Upgrade`")]
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Accept` missing or not the hash of our key.
    #[error("Sec-WebSocket-Accept is {0:?}, not the hash of the key sent")]
    BadAccept(Option<String>),
    /// The server chose a subprotocol that was not offered (or answered with several).
    #[error("server chose subprotocol {0:?}, which was not offered")]
    UnofferedProtocol(String),
    /// The server's extension answer is unacceptable.
    #[error("extension negotiation failed: {0}")]
    Extension(String),
}

/// Parses a response head from the front of `buf`: `Ok(None)` until the blank line has
/// arrived, then the response and the head's length (bytes after it belong to what follows).
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let resp = Response {
                status: r.code.unwrap_or(0),
                reason: r.reason.unwrap_or("").to_owned(),
                headers: r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), h.value.to_vec()))
                    .collect(),
            };
            Ok(Some((resp, n)))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            Err(HandshakeError::TooLarge)
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(HandshakeError::Malformed(e.to_string())),
    }
}

/// When a head read in pieces is worth parsing again. Parsing the whole buffer after every
/// read costs time quadratic in its length when a peer sends it a few bytes at a time; this
/// parses when the new bytes end a line of the head (so its end, or a malformed line, is
/// seen at the read that completes it), when the buffer has doubled since the last parse (a
/// line that never ends), and past `limit` (so the parser reports it too large). The parsers
/// refuse a head of more lines than they have header slots, so the parses of any head add up
/// to a bounded multiple of its length. The empty lines httparse skips in front of a head
/// count as no line: any number of them is parsed only as the buffer doubles.
///
/// ```
/// let mut scan = wsc_proto::handshake::HeadScan::new(64 * 1024);
/// let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
/// // A byte at a time: parsed at 1, 2, 4 … 32 bytes and at the end of each line.
/// let parses: Vec<usize> = (1..=head.len()).filter(|&n| scan.ready(&head[..n])).collect();
/// assert_eq!(parses, [1, 2, 4, 8, 16, 32, 34, 54, 56]);
/// ```
#[derive(Debug, Clone)]
pub struct HeadScan {
    limit: usize,
    /// The buffer's length when it was last parsed.
    parsed: usize,
    /// How far the buffer was searched.
    scanned: usize,
    /// Where the head's first line begins (`usize::MAX`: not yet seen).
    start: usize,
}

impl HeadScan {
    /// A scan for a head of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        HeadScan {
            limit,
            parsed: 0,
            scanned: 0,
            start: usize::MAX,
        }
    }

    /// Whether `buf`, the head's bytes so far (only ever appended to), should be parsed now.
    pub fn ready(&mut self, buf: &[u8]) -> bool {
        let scanned = self.scanned.min(buf.len());
        if self.start == usize::MAX
            && let Some(i) = buf[scanned..]
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
        {
            self.start = scanned + i;
        }
        let from = scanned.max(self.start);
        let line_ended = from < buf.len() && buf[from..].contains(&b'\n');
        self.scanned = buf.len();
        if line_ended || buf.len() >= 2 * self.parsed || buf.len() > self.limit {
            self.parsed = buf.len();
            return true;
        }
        false
    }
}

/// Checks a 101 response against the request: `Upgrade`, `Connection`, `Sec-WebSocket-Accept`
/// and the chosen subprotocol, which is returned. Extensions are checked by
/// [`negotiate`](crate::extension::negotiate).
pub fn check_upgrade(
    resp: &Response,
    key: &str,
    offered: &[String],
) -> Result<Option<String>, HandshakeError> {
    let has_token = |name: &str, token: &str| {
        resp.headers_named(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", "websocket") {
        return Err(HandshakeError::NoUpgrade);
    }
    if !has_token("connection", "upgrade") {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    let accept = resp.header("sec-websocket-accept").map(str::trim);
    if accept != Some(accept_key(key).as_str()) {
        return Err(HandshakeError::BadAccept(accept.map(str::to_owned)));
    }
    let chosen: Vec<&str> = resp
        .headers_named("sec-websocket-protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    match chosen.as_slice() {
        [] => Ok(None),
        [p] if offered.iter().any(|o| o == p) => Ok(Some((*p).to_owned())),
        _ => Err(HandshakeError::UnofferedProtocol(chosen.join(", "))),
    }
}

fn named<'a>(
    headers: &'a [(String, Vec<u8>)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
}

/// A client's upgrade request, as a server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// The request target (path and query).
    pub target: String,
    /// The `Sec-WebSocket-Key`.
    pub key: String,
    /// Subprotocols offered, in order.
    pub protocols: Vec<String>,
    /// Extensions offered (every `Sec-WebSocket-Extensions` line), in order.
    pub extensions: Vec<ExtensionItem>,
    /// All header lines, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Parses and checks a client's upgrade request from the front of `buf` (server role,
/// RFC 6455 §4.2.1): `Ok(None)` until its head has arrived, then the request and its length.
/// A `Sec-WebSocket-Extensions` header that does not parse (RFC 6455 §9.1) makes the request
/// invalid.
pub fn parse_request(buf: &[u8]) -> Result<Option<(ClientRequest, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(HandshakeError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    if r.method != Some("GET") {
        return Err(HandshakeError::Malformed(
            "the upgrade request must be a GET".into(),
        ));
    }
    let hs: Vec<(String, Vec<u8>)> = r
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    let get = |name: &'static str| named(&hs, name);
    let has_token = |name: &'static str, token: &str| {
        get(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", "websocket") {
        return Err(HandshakeError::NoUpgrade);
    }
    if !has_token("connection", "upgrade") {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    if get("sec-websocket-version").next().map(str::trim) != Some("13") {
        return Err(HandshakeError::Malformed(
            "Sec-WebSocket-Version must be 13".into(),
        ));
    }
    let key = get("sec-websocket-key")
        .next()
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    if base64::engine::general_purpose::STANDARD
        .decode(&key)
        .map(|k| k.len())
        != Ok(16)
    {
        return Err(HandshakeError::Malformed(
            "Sec-WebSocket-Key must be 16 bytes in base64".into(),
        ));
    }
    let protocols = get("sec-websocket-protocol")
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let mut extensions = Vec::new();
    for v in get("sec-websocket-extensions") {
        extensions
            .extend(parse_extensions(v).map_err(|e| {
                HandshakeError::Malformed(format!("Sec-WebSocket-Extensions: {e}"))
            })?);
    }
    let target = r.path.unwrap_or("/").to_owned();
    Ok(Some((
        ClientRequest {
            target,
            key,
            protocols,
            extensions,
            headers: hs,
        },
        n,
    )))
}

/// The 101 a server answers `key` with, choosing `protocol` and accepting `extensions` (a
/// `Sec-WebSocket-Extensions` value, such as [`Accepted::response`](crate::deflate::Accepted::response)).
pub fn switching_protocols(key: &str, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
    let mut s = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if let Some(p) = protocol {
        s.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    if let Some(e) = extensions {
        s.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_request_round_trip() {
        let r = Request {
            host: "h",
            target: "/x?y",
            key: "dGhlIHNhbXBsZSBub25jZQ==",
            protocols: &["a".into(), "b".into()],
            extensions: None,
            headers: &[],
        };
        let bytes = r.to_bytes();
        let (req, n) = parse_request(&bytes).unwrap().unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(
            (req.target.as_str(), req.key.as_str()),
            ("/x?y", "dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(req.protocols, ["a", "b"]);
        assert!(req.extensions.is_empty());
        let resp = switching_protocols(&req.key, Some("a"), Some("permessage-deflate"));
        let (resp, _) = parse_response(&resp).unwrap().unwrap();
        assert_eq!(
            check_upgrade(&resp, &req.key, &["a".into()]),
            Ok(Some("a".into()))
        );
        assert_eq!(
            resp.header("sec-websocket-extensions"),
            Some("permessage-deflate")
        );
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").is_err());
        // Offers from every Sec-WebSocket-Extensions line, in order; a malformed one refuses.
        let with = Request {
            extensions: Some("permessage-deflate; client_max_window_bits, x-a"),
            headers: &[("Sec-WebSocket-Extensions".into(), "x-b; p=\"1\"".into())],
            ..r
        };
        let (req, _) = parse_request(&with.to_bytes()).unwrap().unwrap();
        let names: Vec<&str> = req.extensions.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["permessage-deflate", "x-a", "x-b"]);
        let bad = Request {
            extensions: Some("permessage-deflate; =1"),
            ..r
        };
        assert!(matches!(
            parse_request(&bad.to_bytes()),
            Err(HandshakeError::Malformed(_))
        ));
    }

    fn resp(extra: &str) -> Response {
        let raw = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
        );
        parse_response(raw.as_bytes()).unwrap().unwrap().0
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn accepts_a_good_101_and_checks_protocols() {
        let ok = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
        assert_eq!(check_upgrade(&resp(ok), KEY, &[]), Ok(None));
        let with = format!("{ok}Sec-WebSocket-Protocol: chat\r\n");
        assert_eq!(
            check_upgrade(&resp(&with), KEY, &["x".into(), "chat".into()]),
            Ok(Some("chat".into()))
        );
        assert!(matches!(
            check_upgrade(&resp(&with), KEY, &[]),
            Err(HandshakeError::UnofferedProtocol(_))
        ));
        assert!(matches!(
            check_upgrade(&resp("Sec-WebSocket-Accept: nope\r\n"), KEY, &[]),
            Err(HandshakeError::BadAccept(_))
        ));
        assert!(matches!(
            check_upgrade(&resp(""), KEY, &[]),
            Err(HandshakeError::BadAccept(None))
        ));
    }

    #[test]
    fn partial_and_leftover() {
        let raw = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
        assert_eq!(parse_response(&raw[..20]).unwrap(), None);
        let (r, n) = parse_response(raw).unwrap().unwrap();
        assert_eq!(r.status, 101);
        assert_eq!(&raw[n..], b"\x81\x02hi");
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(matches!(
            parse_response(&[b'a'; 100]),
            Err(HandshakeError::Malformed(_))
        ));
        let mut long = b"HTTP/1.1 101 OK\r\nX: ".to_vec();
        long.resize(70_000, b'a');
        assert_eq!(parse_response(&long), Err(HandshakeError::TooLarge));
    }

    /// A head arriving a byte at a time is parsed a logarithmic number of times, and always
    /// once its blank line has arrived, wherever the read boundaries fall.
    #[test]
    fn a_trickled_head_is_parsed_rarely_and_always_at_its_end() {
        // As many lines as the parser has header slots, of 500 bytes each.
        let mut head = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        for i in 0..MAX_RESPONSE_HEADERS {
            head.extend_from_slice(format!("X-Padding-{i:03}: {}\r\n", "a".repeat(482)).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert!(head.len() <= MAX_RESPONSE_HEAD);
        let mut scan = HeadScan::new(MAX_RESPONSE_HEAD);
        let parses: Vec<usize> = (1..=head.len())
            .filter(|&n| scan.ready(&head[..n]))
            .collect();
        // Once per line and per doubling, not once per byte (about 64,000).
        let lines = MAX_RESPONSE_HEADERS + 2;
        assert!(parses.len() <= lines + 17, "{} parses", parses.len());
        assert_eq!(parses.last(), Some(&head.len()), "parsed at the end");
        // A malformed line is seen at the read that ends it.
        let mut scan = HeadScan::new(MAX_RESPONSE_HEAD);
        assert!(scan.ready(b"GET / HTTP/1.1\r\n"));
        assert!(!scan.ready(b"GET / HTTP/1.1\r\nBad Hea"));
        assert!(scan.ready(b"GET / HTTP/1.1\r\nBad Header\r\n"));
        assert!(parse_request(b"GET / HTTP/1.1\r\nBad Header\r\n").is_err());
        for end in [&b"\n\n"[..], b"\n\r\n", b"\r\n\r\n"] {
            let mut h = b"HTTP/1.1 101 OK\r\nA: b".to_vec();
            h.extend_from_slice(end);
            for cut in 1..h.len() {
                let mut scan = HeadScan::new(MAX_RESPONSE_HEAD);
                // Parsed early on (the doubling), then not again until the end arrives.
                scan.ready(&h[..1]);
                scan.ready(&h[..cut]);
                assert!(scan.ready(&h), "{end:?} cut at {cut}");
            }
        }
        // Empty lines in front of the head (httparse skips them) are no end: a peer sending
        // nothing else is parsed as its buffer doubles, not at every line.
        let mut scan = HeadScan::new(MAX_RESPONSE_HEAD);
        let mut buf = Vec::new();
        let mut parses = 0;
        for i in 0..10_000 {
            buf.extend_from_slice(if i % 2 == 0 { b"\n" } else { b"\r\n" });
            parses += usize::from(scan.ready(&buf));
        }
        assert!(parses <= 20, "{parses} parses");
        buf.extend_from_slice(b"HTTP/1.1 101 OK\r\n");
        scan.ready(&buf);
        buf.extend_from_slice(b"\r\n");
        assert!(
            scan.ready(&buf),
            "the blank line after the first line ends it"
        );
        // Garbage without an end is looked at again as it doubles, and past the limit.
        let mut scan = HeadScan::new(100);
        assert!(scan.ready(&[b'Y'; 60]), "the first read is always parsed");
        assert!(!scan.ready(&[b'Y'; 100]));
        assert!(scan.ready(&[b'Y'; 101]), "past the limit");
    }

    /// Pieces a head is made of, line endings of every kind among them.
    fn arb_head() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(&b"\r\n"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"HTTP/1.1 101 OK"[..]),
            Just(&b"GET / HTTP/1.1"[..]),
            Just(&b"A: b"[..]),
            Just(&b" "[..]),
            Just(&b"x"[..]),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Parsing only when HeadScan says so finds the end of a head at the same read as
        /// parsing after every read, however the head is cut, and never gets another answer.
        #[test]
        fn a_scanned_head_ends_at_the_same_read(
            head in arb_head(),
            cuts in proptest::collection::vec(1usize..8, 1..40),
        ) {
            for parse in [
                |b: &[u8]| parse_response(b).map(|r| r.map(|(_, n)| n)),
                |b: &[u8]| parse_request(b).map(|r| r.map(|(_, n)| n)),
            ] {
                let mut scan = HeadScan::new(MAX_RESPONSE_HEAD);
                let mut end = 0;
                for cut in cuts.iter().cycle() {
                    if end == head.len() {
                        break;
                    }
                    end = (end + cut).min(head.len());
                    let buf = &head[..end];
                    let every_read = parse(buf);
                    let gated = scan.ready(buf).then(|| parse(buf));
                    match every_read {
                        Ok(Some(n)) => {
                            proptest::prop_assert_eq!(gated, Some(Ok(Some(n))));
                            break;
                        }
                        Ok(None) => proptest::prop_assert!(gated.is_none_or(|g| g == Ok(None))),
                        // The error may be seen at a later read (the buffer doubling).
                        Err(_) => break,
                    }
                }
            }
        }
    }
}
