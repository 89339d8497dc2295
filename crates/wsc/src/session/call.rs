//! The HTTP exchange that opened a session, kept compact: every session holds one for its
//! whole life, and most never look at it.

use std::sync::OnceLock;

use http::{HeaderMap, Method, StatusCode};
use url::Url;

/// Ends a section of [`Call::raw`]. Never part of a URL's serialization, a header name or a
/// header value (all three exclude control bytes other than tab), a subprotocol token or an
/// extension's parameters.
const SECTION: u8 = 0x1e;

/// Header lines that nearly every upgrade carries, stored as one byte (the entry's index + 1,
/// a control byte no header name can start with). An entry with a value stands for that exact
/// line; one without stands for the name, and the value follows as usual.
const COMMON: [(&str, Option<&[u8]>); 12] = [
    ("host", None),
    ("upgrade", Some(b"websocket")),
    ("connection", Some(b"Upgrade")),
    ("sec-websocket-version", Some(b"13")),
    ("sec-websocket-key", None),
    ("sec-websocket-accept", None),
    ("sec-websocket-protocol", None),
    ("sec-websocket-extensions", None),
    ("upgrade", None),
    ("connection", None),
    ("date", None),
    ("server", None),
];

/// Lines whose value follows from the rest of the exchange, stored as one byte after the
/// [`COMMON`] entries': a Host that is the URL's host and port, and a Sec-WebSocket-Accept that
/// is the one the request's key calls for (as it always is once the handshake succeeded).
const HOST_FROM_URL: u8 = COMMON.len() as u8 + 1;
const ACCEPT_FROM_KEY: u8 = COMMON.len() as u8 + 2;

/// The values [`HOST_FROM_URL`] and [`ACCEPT_FROM_KEY`] stand for (empty: none).
#[derive(Default)]
struct Derived {
    host: String,
    accept: String,
}

impl Derived {
    fn new(url: &Url, key: Option<&[u8]>) -> Derived {
        let host = url.host_str().unwrap_or_default();
        Derived {
            host: match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            },
            accept: key
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(wsc_proto::handshake::accept_key)
                .unwrap_or_default(),
        }
    }

    fn byte_for(&self, name: &str, value: &[u8]) -> Option<u8> {
        let is = |d: &str| !d.is_empty() && d.as_bytes() == value;
        if name.eq_ignore_ascii_case("host") && is(&self.host) {
            Some(HOST_FROM_URL)
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") && is(&self.accept) {
            Some(ACCEPT_FROM_KEY)
        } else {
            None
        }
    }
}

/// Appends header lines: each is `name\0value\0`, a [`COMMON`] entry's byte (followed by
/// `value\0` when the entry has no value), or a [`Derived`] line's byte.
fn push_headers<'a>(
    raw: &mut Vec<u8>,
    pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    derived: &Derived,
) {
    for (name, value) in pairs {
        if let Some(b) = derived.byte_for(name, value) {
            raw.push(b);
            continue;
        }
        let common = COMMON
            .iter()
            .position(|(n, v)| n.eq_ignore_ascii_case(name) && v.is_none_or(|v| v == value));
        match common {
            Some(i) => {
                raw.push(i as u8 + 1);
                if COMMON[i].1.is_none() {
                    raw.extend_from_slice(value);
                    raw.push(0);
                }
            }
            None => {
                raw.extend_from_slice(name.as_bytes());
                raw.push(0);
                raw.extend_from_slice(value);
                raw.push(0);
            }
        }
    }
    raw.push(SECTION);
}

/// The bytes up to the next `\0` (or the end), and the rest after it.
fn field<'a>(raw: &mut &'a [u8]) -> &'a [u8] {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    let (field, rest) = raw.split_at(end);
    *raw = rest.get(1..).unwrap_or_default();
    field
}

/// The header lines `push_headers` wrote (without the section end), in order.
fn header_lines<'a>(
    mut raw: &'a [u8],
    derived: &'a Derived,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    std::iter::from_fn(move || {
        let first = *raw.first()?;
        if first == HOST_FROM_URL || first == ACCEPT_FROM_KEY {
            raw = &raw[1..];
            return Some(if first == HOST_FROM_URL {
                (&b"host"[..], derived.host.as_bytes())
            } else {
                (&b"sec-websocket-accept"[..], derived.accept.as_bytes())
            });
        }
        let common = (first as usize).checked_sub(1).and_then(|i| COMMON.get(i));
        Some(match common {
            Some((name, Some(value))) => {
                raw = &raw[1..];
                (name.as_bytes(), *value)
            }
            Some((name, None)) => {
                raw = &raw[1..];
                (name.as_bytes(), field(&mut raw))
            }
            None => (field(&mut raw), field(&mut raw)),
        })
    })
}

fn header_map(raw: &[u8], derived: &Derived) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in header_lines(raw, derived) {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n),
            http::HeaderValue::from_bytes(v),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// The HTTP exchange that opened a session (Ktor's `call`).
///
/// Kept compact, because every session holds one: the URL, both header blocks, the
/// subprotocol and the extensions live in one byte buffer (the header lines every upgrade
/// carries as one byte each), and the parsed [`Url`](url::Url) and
/// [`HeaderMap`](http::HeaderMap)s are made on first use (most sessions never look at them; a
/// map per direction would cost kilobytes per connection).
///
/// ```no_run
/// # async fn demo() -> Result<(), wsc::Error> {
/// let session = wsc::Client::new().connect("ws://127.0.0.1:9001/chat").await?;
/// let call = session.call();
/// println!("{} -> {}", call.url(), call.status());
/// for (name, value) in call.response_headers() {
///     println!("{name}: {value:?}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Call {
    /// Sections, each ended by [`SECTION`]: the URL, the request's header lines, the
    /// response's, the subprotocol, then the extensions (each ended by `\0`).
    raw: Box<[u8]>,
    parsed: OnceLock<Box<Parsed>>,
}

#[derive(Clone)]
struct Parsed {
    url: Url,
    request_headers: HeaderMap,
    response_headers: HeaderMap,
    extensions: Vec<String>,
}

impl Call {
    /// A 101 exchange: `url`, the header lines of the request and of the response, the chosen
    /// subprotocol and the negotiated extensions (each as its parameters in force).
    pub(crate) fn new<'a, 'b>(
        url: &Url,
        request: impl IntoIterator<Item = (&'a str, &'a [u8]), IntoIter: Clone>,
        response: impl IntoIterator<Item = (&'b str, &'b [u8])>,
        protocol: Option<String>,
        extensions: Vec<String>,
    ) -> Call {
        // Put together in a per-thread scratch buffer and copied out once, at its exact size:
        // growing a fresh buffer step by step leaves freed blocks of every size between the
        // allocations a session keeps, which costs idle memory per connection.
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let request = request.into_iter();
        let key = request
            .clone()
            .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
            .map(|(_, v)| v);
        let derived = Derived::new(url, key);
        SCRATCH.with(|scratch| {
            let mut raw = scratch.take();
            raw.clear();
            raw.extend_from_slice(url.as_str().as_bytes());
            raw.push(SECTION);
            push_headers(&mut raw, request, &derived);
            push_headers(&mut raw, response, &derived);
            raw.extend_from_slice(protocol.as_deref().unwrap_or_default().as_bytes());
            raw.push(SECTION);
            for e in &extensions {
                raw.extend_from_slice(e.as_bytes());
                raw.push(0);
            }
            let call = Call {
                raw: Box::from(&raw[..]),
                parsed: OnceLock::new(),
            };
            // An unusually large exchange does not stay resident in the scratch buffer.
            if raw.capacity() <= 4096 {
                scratch.replace(raw);
            }
            call
        })
    }

    /// Section `i` of `raw` (0 URL, 1 request, 2 response, 3 subprotocol, 4 extensions).
    fn section(&self, i: usize) -> &[u8] {
        self.raw.split(|b| *b == SECTION).nth(i).unwrap_or_default()
    }

    fn parsed(&self) -> &Parsed {
        self.parsed.get_or_init(|| {
            let text = String::from_utf8_lossy(self.section(4));
            // The text is a parsed URL's own serialization, which always parses back to it.
            let url = Url::parse(&self.url_text()).expect("a URL's serialization parses");
            let request = self.section(1);
            let none = Derived::default();
            let key = header_lines(request, &none)
                .find(|(n, _)| n.eq_ignore_ascii_case(b"sec-websocket-key"))
                .map(|(_, v)| v);
            let derived = Derived::new(&url, key);
            Box::new(Parsed {
                request_headers: header_map(request, &derived),
                response_headers: header_map(self.section(2), &derived),
                url,
                extensions: text.split_terminator('\0').map(str::to_owned).collect(),
            })
        })
    }

    /// The request URL.
    pub fn url(&self) -> &Url {
        &self.parsed().url
    }

    pub(crate) fn url_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.section(0))
    }
    /// The request method (always GET for an HTTP/1.1 upgrade).
    pub fn method(&self) -> Method {
        Method::GET
    }
    /// The request headers as sent.
    pub fn request_headers(&self) -> &HeaderMap {
        &self.parsed().request_headers
    }
    /// The response status (101).
    pub fn status(&self) -> StatusCode {
        StatusCode::SWITCHING_PROTOCOLS
    }
    /// The response headers.
    pub fn response_headers(&self) -> &HeaderMap {
        &self.parsed().response_headers
    }
    /// The subprotocol the server chose, if any.
    pub fn protocol(&self) -> Option<&str> {
        std::str::from_utf8(self.section(3))
            .ok()
            .filter(|p| !p.is_empty())
    }
    /// The negotiated extensions, each as its parameters in force.
    pub fn extensions(&self) -> &[String] {
        &self.parsed().extensions
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("url", &self.url_text())
            .field("request_headers", self.request_headers())
            .field("status", &self.status())
            .field("response_headers", self.response_headers())
            .field("protocol", &self.protocol())
            .field("extensions", &self.extensions())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines<'a>(pairs: &[(&'a str, &'a [u8])]) -> Vec<(String, Vec<u8>)> {
        let mut raw = Vec::new();
        let none = Derived::default();
        push_headers(&mut raw, pairs.iter().copied(), &none);
        assert_eq!(raw.pop(), Some(SECTION));
        assert!(!raw.contains(&SECTION));
        header_lines(&raw, &none)
            .map(|(n, v)| (String::from_utf8(n.to_vec()).unwrap(), v.to_vec()))
            .collect()
    }

    #[test]
    fn header_lines_come_back_as_written() {
        let pairs: &[(&str, &[u8])] = &[
            ("Host", b"127.0.0.1:9001"),
            ("upgrade", b"websocket"),
            ("Upgrade", b"WebSocket"),
            ("connection", b"Upgrade"),
            ("Connection", b"keep-alive, Upgrade"),
            ("sec-websocket-version", b"13"),
            ("sec-websocket-version", b"8"),
            ("sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            ("x-empty", b""),
            ("date", b""),
            ("x-latin", b"caf\xe9\tx"),
            ("Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ];
        let got = lines(pairs);
        assert_eq!(got.len(), pairs.len());
        for ((n, v), (gn, gv)) in pairs.iter().zip(&got) {
            assert!(n.eq_ignore_ascii_case(gn), "{n} came back as {gn}");
            assert_eq!(v, gv, "{n}");
        }
        assert!(lines(&[]).is_empty());
    }

    #[test]
    fn common_lines_take_one_byte() {
        let mut raw = Vec::new();
        push_headers(
            &mut raw,
            [
                ("upgrade", &b"websocket"[..]),
                ("connection", b"Upgrade"),
                ("sec-websocket-version", b"13"),
            ],
            &Derived::default(),
        );
        assert_eq!(raw, [2, 3, 4, SECTION]);
        for (i, (name, _)) in COMMON.iter().enumerate() {
            assert!(i + 1 < 0x20 && i + 1 != SECTION as usize);
            assert_eq!(name.to_ascii_lowercase(), *name);
        }
        for b in [HOST_FROM_URL, ACCEPT_FROM_KEY] {
            assert!(b > COMMON.len() as u8 && b < 0x20 && b != SECTION);
        }
    }

    #[test]
    fn a_call_keeps_every_part() {
        let url = Url::parse("wss://example.com:8443/chat?room=a").unwrap();
        let call = Call::new(
            &url,
            [
                ("host", &b"example.com:8443"[..]),
                ("x-trace", b"abc"),
                ("sec-websocket-protocol", b"chat, superchat"),
            ],
            [
                ("upgrade", &b"websocket"[..]),
                ("sec-websocket-protocol", b"chat"),
                ("server", b"test"),
            ],
            Some("chat".into()),
            vec!["permessage-deflate".into(), "x-other; a=1".into()],
        );
        assert_eq!(call.url(), &url);
        assert_eq!(call.request_headers()["host"], "example.com:8443");
        assert_eq!(call.request_headers()["x-trace"], "abc");
        assert_eq!(call.request_headers().len(), 3);
        assert_eq!(call.response_headers()["sec-websocket-protocol"], "chat");
        assert_eq!(call.response_headers()["server"], "test");
        assert_eq!(call.response_headers().len(), 3);
        assert_eq!(call.protocol(), Some("chat"));
        assert_eq!(call.extensions(), ["permessage-deflate", "x-other; a=1"]);
        assert_eq!(call.status(), StatusCode::SWITCHING_PROTOCOLS);
        let bare = Call::new(&url, [], [], None, Vec::new());
        assert_eq!(bare.protocol(), None);
        assert!(bare.extensions().is_empty());
        assert!(bare.request_headers().is_empty() && bare.response_headers().is_empty());
        assert_eq!(bare.url().as_str(), url.as_str());
        let copy = call.clone();
        assert_eq!(copy.extensions().len(), 2);
        assert!(format!("{copy:?}").contains("x-trace"));
    }

    /// A typical client upgrade (the one `wsc` sends and a minimal server's answer) fits in
    /// a small buffer.
    #[test]
    fn a_plain_upgrade_is_stored_small() {
        let url = Url::parse("ws://127.0.0.1:9001/").unwrap();
        let call = Call::new(
            &url,
            [
                ("host", &b"127.0.0.1:9001"[..]),
                ("upgrade", b"websocket"),
                ("connection", b"Upgrade"),
                ("sec-websocket-version", b"13"),
                ("sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            [
                ("upgrade", &b"websocket"[..]),
                ("connection", b"Upgrade"),
                ("sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ],
            None,
            Vec::new(),
        );
        // The Host and the Accept take a byte each: they follow from the URL and the key.
        assert!(call.raw.len() <= 80, "{}", call.raw.len());
        assert_eq!(call.request_headers()["connection"], "Upgrade");
        assert_eq!(call.request_headers()["host"], "127.0.0.1:9001");
        assert_eq!(
            call.response_headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(call.response_headers().len(), 3);
    }

    /// Only lines that really are what the URL and the key call for are stored as a byte;
    /// any other value (a Host set by hand, a wrong Accept, a default port) comes back as sent.
    #[test]
    fn lines_that_only_look_derived_come_back_as_sent() {
        let key: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";
        let cases: [(&str, &[u8], &[u8]); 4] = [
            (
                "ws://example.com/",
                b"example.com",
                b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            ),
            ("ws://example.com:8080/", b"example.com", b"wrong"),
            (
                "ws://[::1]:9001/x",
                b"[::1]:9001",
                b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            ),
            ("wss://example.com/", b"other.example:443", b""),
        ];
        for (url, host, accept) in cases {
            let url = Url::parse(url).unwrap();
            let call = Call::new(
                &url,
                [("host", host), ("sec-websocket-key", key), ("x-host", host)],
                [("sec-websocket-accept", accept), ("host", host)],
                None,
                Vec::new(),
            );
            let req = call.request_headers();
            assert_eq!(req["host"].as_bytes(), host, "{url}");
            assert_eq!(req["x-host"].as_bytes(), host);
            assert_eq!(req["sec-websocket-key"].as_bytes(), key);
            let resp = call.response_headers();
            assert_eq!(resp["sec-websocket-accept"].as_bytes(), accept, "{url}");
            assert_eq!(resp["host"].as_bytes(), host);
            assert_eq!((req.len(), resp.len()), (3, 2));
        }
    }
}
