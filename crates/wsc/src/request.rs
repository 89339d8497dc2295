//! What one connection asks for: the URL, headers, query, subprotocols and timeout.
//!
//! Owns URL validation (before any I/O) and the rule that the handshake's own headers are
//! not the caller's to set.

use std::time::Duration;

use url::Url;

use crate::error::Error;

/// A WebSocket request: where to connect and what to send with the upgrade.
///
/// Build one from a URL string or [`Url`], or by parts with [`Request::ws`] / [`Request::wss`],
/// then refine it through [`Client::request`](crate::Client::request).
///
/// ```
/// let r = wsc::Request::ws("127.0.0.1", 8080, "/chat").unwrap();
/// assert_eq!(r.url().as_str(), "ws://127.0.0.1:8080/chat");
/// assert!(wsc::Request::parse("http://example.com/").is_err());
/// assert!(wsc::Request::parse("ws://example.com/#frag").is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) url: Url,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) protocols: Vec<String>,
    pub(crate) timeout: Option<Duration>,
    /// Credential headers the caller lets a redirect carry to another origin.
    pub(crate) forward: Vec<String>,
}

/// Headers a redirect to another origin (scheme, host or port) drops unless the caller opts
/// in with [`Request::forward_on_redirect`], as curl and reqwest do.
pub const CREDENTIAL_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

impl Request {
    /// Parses and validates a `ws://` or `wss://` URL.
    pub fn parse(url: &str) -> Result<Request, Error> {
        let parsed = Url::parse(url).map_err(|e| Error::invalid_url(url, e.to_string()))?;
        Request::from_url(parsed)
    }

    /// Validates a parsed URL: scheme `ws` or `wss`, a host, no fragment (RFC 6455 §3).
    pub fn from_url(url: Url) -> Result<Request, Error> {
        match url.scheme() {
            "ws" | "wss" => {}
            other => {
                return Err(Error::invalid_url(
                    url.as_str(),
                    format!("scheme {other:?} is not ws or wss"),
                ));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Error::invalid_url(url.as_str(), "no host"));
        }
        if url.fragment().is_some() {
            return Err(Error::invalid_url(
                url.as_str(),
                "WebSocket URLs may not have a fragment",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid_url(
                url.as_str(),
                "credentials in the URL are not sent; use a header",
            ));
        }
        Ok(Request {
            url,
            headers: Vec::new(),
            protocols: Vec::new(),
            timeout: None,
            forward: Vec::new(),
        })
    }

    /// A `ws://host:port/path` request (Ktor's `ws(host, port, path)`).
    pub fn ws(host: &str, port: u16, path: &str) -> Result<Request, Error> {
        Request::by_parts("ws", host, port, path)
    }

    /// A `wss://host:port/path` request (Ktor's `wss(host, port, path)`).
    pub fn wss(host: &str, port: u16, path: &str) -> Result<Request, Error> {
        Request::by_parts("wss", host, port, path)
    }

    fn by_parts(scheme: &str, host: &str, port: u16, path: &str) -> Result<Request, Error> {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Request::parse(&format!("{scheme}://{host}:{port}{path}"))
    }

    /// The URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Adds a header; the handshake's own headers (Host, Upgrade, Connection, Sec-WebSocket-*)
    /// are refused.
    pub fn header(mut self, name: &str, value: &str) -> Result<Request, Error> {
        wsc_proto::handshake::check_header(name, value).map_err(Error::InvalidConfig)?;
        if wsc_proto::handshake::RESERVED_HEADERS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name))
        {
            return Err(Error::InvalidConfig(format!(
                "header {name} is set by the handshake itself"
            )));
        }
        self.headers.push((name.to_owned(), value.to_owned()));
        Ok(self)
    }

    /// Lets a redirect to another origin carry header `name` (by default `Authorization`,
    /// `Cookie` and `Proxy-Authorization` set on the request are dropped on such a redirect;
    /// every other header survives it). Cookies from the client's jar follow the jar's rules.
    pub fn forward_on_redirect(mut self, name: &str) -> Request {
        self.forward.push(name.to_ascii_lowercase());
        self
    }

    /// Sets the `Origin` header.
    pub fn origin(self, origin: &str) -> Result<Request, Error> {
        self.header("Origin", origin)
    }

    /// Adds `Authorization: Basic …` for `user` and `password`.
    pub fn basic_auth(self, user: &str, password: &str) -> Result<Request, Error> {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("Authorization", &format!("Basic {token}"))
    }

    /// Appends a query parameter (percent-encoded).
    pub fn query(mut self, name: &str, value: &str) -> Request {
        self.url.query_pairs_mut().append_pair(name, value);
        self
    }

    /// Offers a subprotocol (`Sec-WebSocket-Protocol`), in preference order.
    pub fn protocol(mut self, name: &str) -> Result<Request, Error> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        {
            return Err(Error::InvalidConfig(format!(
                "invalid subprotocol name {name:?}"
            )));
        }
        self.protocols.push(name.to_owned());
        Ok(self)
    }

    /// Bounds connect and handshake together by `timeout` (else the client's separate
    /// connect and handshake timeouts apply).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    pub(crate) fn port(&self) -> u16 {
        self.url
            .port_or_known_default()
            .unwrap_or(if self.url.scheme() == "wss" { 443 } else { 80 })
    }

    /// The `Host` header: host, with the port unless it is the scheme's default.
    pub(crate) fn host_header(&self) -> String {
        let host = match self.url.host() {
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            _ => self.host().to_owned(),
        };
        match self.url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    /// Path and query.
    pub(crate) fn target(&self) -> String {
        match self.url.query() {
            Some(q) => format!("{}?{q}", self.url.path()),
            None => self.url.path().to_owned(),
        }
    }
}

/// Anything that names a WebSocket endpoint: `&str`, `String`, [`Url`], [`Request`].
pub trait IntoRequest {
    /// Validates and converts.
    fn into_request(self) -> Result<Request, Error>;
}

impl IntoRequest for &str {
    fn into_request(self) -> Result<Request, Error> {
        Request::parse(self)
    }
}
impl IntoRequest for String {
    fn into_request(self) -> Result<Request, Error> {
        Request::parse(&self)
    }
}
impl IntoRequest for &String {
    fn into_request(self) -> Result<Request, Error> {
        Request::parse(self)
    }
}
impl IntoRequest for Url {
    fn into_request(self) -> Result<Request, Error> {
        Request::from_url(self)
    }
}
impl IntoRequest for &Url {
    fn into_request(self) -> Result<Request, Error> {
        Request::from_url(self.clone())
    }
}
impl IntoRequest for Request {
    fn into_request(self) -> Result<Request, Error> {
        Ok(self)
    }
}
impl IntoRequest for Result<Request, Error> {
    fn into_request(self) -> Result<Request, Error> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(Request::parse("ws://h/").is_ok());
        assert!(matches!(
            Request::parse("ftp://h/"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Request::parse("ws://:80/"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Request::parse("not a url"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Request::parse("ws://u:p@h/"),
            Err(Error::InvalidUrl { .. })
        ));
        let r = Request::parse("ws://h").unwrap();
        assert!(r.clone().header("Sec-WebSocket-Key", "x").is_err());
        assert!(r.clone().header("bad name", "x").is_err());
        assert!(r.clone().header("X-Ok", "bad\nvalue").is_err());
        assert!(r.clone().protocol("a b").is_err());
    }

    #[test]
    fn parts_and_host_header() {
        let r = Request::ws("::1", 9000, "x").unwrap().query("a", "b c");
        assert_eq!(r.url().as_str(), "ws://[::1]:9000/x?a=b+c");
        assert_eq!(r.host_header(), "[::1]:9000");
        assert_eq!(r.target(), "/x?a=b+c");
        let r = Request::parse("wss://example.com/p").unwrap();
        assert_eq!((r.port(), r.host_header()), (443, "example.com".to_owned()));
        assert_eq!(
            Request::parse("ws://example.com:80").unwrap().host_header(),
            "example.com"
        );
    }
}
