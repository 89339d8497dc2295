//! Proxies: HTTP CONNECT (optionally to the proxy over TLS, with basic auth) and SOCKS5
//! (optionally with username/password; `socks5h` resolves the target through the proxy).
//! Settings come from the builder or, when asked, from `HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY` and `NO_PROXY`.

use base64::Engine;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TransportConfig;
use super::{BoxIo, Target, tcp, tls_connect};
use crate::error::{Error, IoContext};

/// The largest CONNECT reply head accepted, in bytes.
const MAX_CONNECT_HEAD: usize = 64 * 1024;

/// The proxy's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `http://`: CONNECT in clear.
    Http,
    /// `https://`: TLS to the proxy, then CONNECT.
    Https,
    /// `socks5://`: the target is resolved here.
    Socks5,
    /// `socks5h://`: the target is resolved by the proxy.
    Socks5h,
}

/// A proxy to tunnel through.
///
/// ```
/// let p = wsc::Proxy::parse("socks5h://user:secret@127.0.0.1:1080").unwrap();
/// assert!(wsc::Proxy::parse("ftp://proxy:1").is_err());
/// # let _ = p;
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    pub(crate) kind: Kind,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) auth: Option<(String, String)>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        write!(
            f,
            "Proxy({:?} {}:{}{})",
            self.kind,
            self.host,
            self.port,
            if self.auth.is_some() {
                " with auth"
            } else {
                ""
            }
        )
    }
}

impl Proxy {
    /// Parses `http://[user:pass@]host:port`, `https://…`, `socks5://…` or `socks5h://…`.
    pub fn parse(url: &str) -> Result<Proxy, Error> {
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let u = url::Url::parse(&with_scheme)
            .map_err(|e| Error::InvalidConfig(format!("bad proxy URL {url:?}: {e}")))?;
        let kind = match u.scheme() {
            "http" => Kind::Http,
            "https" => Kind::Https,
            "socks5" => Kind::Socks5,
            "socks5h" => Kind::Socks5h,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "proxy scheme {other:?} is not http, https, socks5 or socks5h"
                )));
            }
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::InvalidConfig(format!("proxy URL {url:?} has no host")))?
            .to_owned();
        let port = u.port().unwrap_or(match kind {
            Kind::Http => 80,
            Kind::Https => 443,
            Kind::Socks5 | Kind::Socks5h => 1080,
        });
        let decode = |s: &str| percent_decode(s);
        let auth = (!u.username().is_empty())
            .then(|| (decode(u.username()), decode(u.password().unwrap_or(""))));
        Ok(Proxy {
            kind,
            host,
            port,
            auth,
        })
    }

    /// Opens a tunnel to `target` through this proxy.
    pub(crate) async fn connect(
        &self,
        config: &TransportConfig,
        target: &Target<'_>,
    ) -> Result<BoxIo, Error> {
        match self.kind {
            Kind::Http | Kind::Https => {
                let tcp = tcp::connect(&self.host, self.port, config.bind).await?;
                let mut io: BoxIo = Box::new(tcp);
                if self.kind == Kind::Https {
                    io = tls_connect(config, &self.host, io).await?;
                }
                self.http_connect(io, target).await
            }
            Kind::Socks5 | Kind::Socks5h => self.socks5(config, target).await,
        }
    }

    async fn http_connect(&self, mut io: BoxIo, target: &Target<'_>) -> Result<BoxIo, Error> {
        let authority = if target.host.contains(':') && !target.host.starts_with('[') {
            format!("[{}]:{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some((u, p)) = &self.auth {
            req.push_str(&format!(
                "Proxy-Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            ));
        }
        req.push_str("\r\n");
        io.write_all(req.as_bytes())
            .await
            .map_err(|e| Error::io(IoContext::Proxy, e))?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut scan = wsc_proto::handshake::HeadScan::new(MAX_CONNECT_HEAD);
        loop {
            if io
                .read_buf(&mut buf)
                .await
                .map_err(|e| Error::io(IoContext::Proxy, e))?
                == 0
            {
                return Err(Error::Proxy {
                    status: None,
                    reason: "the proxy closed the connection during CONNECT".into(),
                });
            }
            if !scan.ready(&buf) {
                continue;
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    if !(200..300).contains(&status) {
                        return Err(Error::Proxy {
                            status: Some(status),
                            reason: resp.reason.unwrap_or("").to_owned(),
                        });
                    }
                    if buf.len() > n {
                        return Err(Error::Proxy {
                            status: Some(status),
                            reason: "the proxy sent data before the tunnel was used".into(),
                        });
                    }
                    return Ok(io);
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_CONNECT_HEAD => {
                    return Err(Error::Proxy {
                        status: None,
                        reason: "CONNECT response head too large".into(),
                    });
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(Error::Proxy {
                        status: None,
                        reason: format!("malformed CONNECT response: {e}"),
                    });
                }
            }
        }
    }

    async fn socks5(&self, config: &TransportConfig, target: &Target<'_>) -> Result<BoxIo, Error> {
        use tokio_socks::tcp::Socks5Stream;
        let proxy = tcp::connect(&self.host, self.port, config.bind).await?;
        let host = target.host.trim_start_matches('[').trim_end_matches(']');
        let resolving = || IoContext::Resolving {
            host: host.to_owned(),
        };
        let dest: tokio_socks::TargetAddr<'_> = if self.kind == Kind::Socks5 {
            let addr = tokio::net::lookup_host((host, target.port))
                .await
                .map_err(|e| Error::io(resolving(), e))?
                .next()
                .ok_or_else(|| {
                    Error::io(
                        resolving(),
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
                    )
                })?;
            tokio_socks::TargetAddr::Ip(addr)
        } else {
            tokio_socks::TargetAddr::Domain(host.to_owned().into(), target.port)
        };
        let r = match &self.auth {
            Some((u, p)) => Socks5Stream::connect_with_password_and_socket(proxy, dest, u, p).await,
            None => Socks5Stream::connect_with_socket(proxy, dest).await,
        };
        match r {
            Ok(s) => Ok(Box::new(s)),
            Err(tokio_socks::Error::Io(e)) => Err(Error::io(IoContext::Proxy, e)),
            Err(e) => Err(Error::Proxy {
                status: None,
                reason: format!("SOCKS5: {e}"),
            }),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The proxy settings of the environment, read when the client is built.
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvProxies {
    pub http: Option<Proxy>,
    pub https: Option<Proxy>,
    pub no_proxy: Vec<String>,
}

impl EnvProxies {
    pub(crate) fn read(get: impl Fn(&str) -> Option<String>) -> Result<EnvProxies, Error> {
        let var = |name: &str| {
            get(name)
                .or_else(|| get(&name.to_lowercase()))
                .filter(|v| !v.trim().is_empty())
        };
        let all = var("ALL_PROXY").map(|v| Proxy::parse(&v)).transpose()?;
        let http = var("HTTP_PROXY")
            .map(|v| Proxy::parse(&v))
            .transpose()?
            .or_else(|| all.clone());
        let https = var("HTTPS_PROXY")
            .map(|v| Proxy::parse(&v))
            .transpose()?
            .or(all);
        let no_proxy = var("NO_PROXY")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(EnvProxies {
            http,
            https,
            no_proxy,
        })
    }

    /// The proxy for a target: `HTTPS_PROXY` for wss, `HTTP_PROXY` for ws, `ALL_PROXY` for
    /// either, none for hosts `NO_PROXY` names (exact, a domain suffix, or `*`).
    pub(crate) fn for_target(&self, host: &str, tls: bool) -> Option<&Proxy> {
        let h = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let excluded = self.no_proxy.iter().any(|n| {
            let n = n.trim_start_matches('*').trim_start_matches('.');
            n.is_empty() || h == n || h.ends_with(&format!(".{n}"))
        });
        if excluded {
            return None;
        }
        if tls {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls() {
        let p = Proxy::parse("http://u%40x:p%3Aw@proxy.example:3128").unwrap();
        assert_eq!(
            (p.kind, p.host.as_str(), p.port),
            (Kind::Http, "proxy.example", 3128)
        );
        assert_eq!(p.auth, Some(("u@x".into(), "p:w".into())));
        assert_eq!(Proxy::parse("proxy:8080").unwrap().kind, Kind::Http);
        assert_eq!(Proxy::parse("socks5h://h").unwrap().port, 1080);
        assert!(!format!("{:?}", p).contains("p:w"));
        assert!(Proxy::parse("gopher://h:1").is_err());
    }

    #[test]
    fn environment_rules() {
        let env = |k: &str| match k {
            "HTTPS_PROXY" => Some("http://secure:1".to_owned()),
            "all_proxy" => Some("socks5://all:2".to_owned()),
            "NO_PROXY" => Some("localhost, .internal.example,10.0.0.1".to_owned()),
            _ => None,
        };
        let e = EnvProxies::read(env).unwrap();
        assert_eq!(e.for_target("example.com", true).unwrap().host, "secure");
        assert_eq!(e.for_target("example.com", false).unwrap().host, "all");
        assert!(e.for_target("localhost", true).is_none());
        assert!(e.for_target("a.internal.example", true).is_none());
        assert!(e.for_target("internal.example", false).is_none());
        assert!(e.for_target("10.0.0.1", false).is_none());
        let star = EnvProxies::read(|k| {
            (k == "NO_PROXY")
                .then(|| "*".to_owned())
                .or_else(|| (k == "HTTP_PROXY").then(|| "h:1".to_owned()))
        })
        .unwrap();
        assert!(star.for_target("anything", false).is_none());
    }
}
